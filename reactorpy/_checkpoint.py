"""Checkpoints: the picklable, JSON-exportable state of a halted (or finished) run.

Owns: `Checkpoint` and `UndoRecord`, their JSON form, and the check that a checkpoint fits
the reactor that resumes it.
Must not import: the executor.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from ._errors import ResumeError

__all__ = ["Checkpoint", "UndoRecord"]

_FORMAT = 1
_PROTOCOL = pickle.HIGHEST_PROTOCOL


@attrs.frozen
class UndoRecord:
    """A completed step that can be undone: its result and the arguments it was given.

    Attributes:
        step: the step's name.
        value: the step's result (the undo callback's first argument).
        arguments: the step's arguments by parameter name.
        undo: a callback to use instead of the step's own (composed reactors).
        route: for a step of a composed reactor, where it is: the composite step's name,
            the child's key in its ``children``, (again for each level), then the step's
            name. Undo finds the callback along it once ``undo`` is lost (a checkpoint
            loaded from JSON). None for direct steps and for new steps (`NewSteps`).
    """

    step: str
    value: Any
    arguments: dict[str, Any]
    undo: Any = attrs.field(default=None, eq=False, repr=False)
    route: tuple[str, ...] | None = attrs.field(default=None, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        state = _state(self)
        if self.route is not None:  # found again along the route: it need not pickle
            state["undo"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        _set_state(self, state)


@attrs.frozen
class Checkpoint:
    """Everything needed to continue a halted run, or to undo a run, in this or another
    process.

    Pickle it, or use `to_json`/`from_json` when every value is JSON-serialisable.

    Attributes:
        reactor: the reactor's name.
        fingerprint: a hash of the reactor's graph; resume checks it.
        structure: each step's dependencies, to say what changed if the fingerprint differs.
        inputs: the run's inputs.
        completed: the steps that completed, in plan order.
        results: the results still needed (by pending steps or as the return value).
        undo_stack: completed undoable steps, oldest first.
        attempts: attempts made so far, per step.
        reason: the halt reason.
        halted_step: the step that halted, or None for a run timeout.
        inner: checkpoints of composed reactors that halted inside, by step name (for a
            switch, the chosen branch's index and its checkpoint).
        finished: the run completed (`Reactor.run_reversible`): it can be undone, not
            resumed.
        inner_marks: for each entry of `inner`, how many records of `undo_stack` were
            there when that child halted (those after it completed later: undo goes
            newest first across the levels).
    """

    reactor: str
    fingerprint: str
    structure: dict[str, tuple[str, ...]]
    inputs: dict[str, Any]
    completed: tuple[str, ...]
    results: dict[str, Any]
    undo_stack: tuple[UndoRecord, ...]
    attempts: dict[str, int]
    reason: Any = None
    halted_step: str | None = None
    inner: dict[str, Any] = attrs.field(factory=dict)
    finished: bool = False
    inner_marks: dict[str, int] = attrs.field(factory=dict)

    def __getstate__(self) -> dict[str, Any]:
        state = _state(self)
        try:
            # The values a run put here, pickled once: what the pickler is about to do. When
            # it fails, say which value it was and where such things belong.
            pickle.dumps((self.inputs, self.results, self.undo_stack, self.reason), _PROTOCOL)
        except Exception as exc:
            label, value, error = self._culprit(lambda v: pickle.dumps(v, _PROTOCOL), exc)
            raise TypeError(_unsaveable(self.reactor, label, value, error, "pickled")) from error
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        _set_state(self, state)

    def _values(self) -> Iterator[tuple[str, Any]]:
        """Every value a run stored in this checkpoint, with a label saying which it is."""
        for name, value in self.inputs.items():
            yield f"input {name!r}", value
        for name, value in self.results.items():
            yield f"the result of step {name!r}", value
        for record in self.undo_stack:
            yield f"the result of step {record.step!r} (kept for its undo)", record.value
            for param, value in record.arguments.items():
                yield f"argument {param!r} of step {record.step!r} (kept for its undo)", value
        yield "the halt reason", self.reason

    def _culprit(
        self, save: Callable[[Any], object], failure: BaseException
    ) -> tuple[str, Any, BaseException]:
        """The first value that `save` fails on, its label and its error (else `failure`)."""
        for label, value in self._values():
            try:
                save(value)
            except Exception as exc:
                return label, value, exc
        return "a value", None, failure

    def check(self, reactor: str, fingerprint: str, structure: dict[str, tuple[str, ...]]) -> None:
        """Raise `ResumeError` unless this checkpoint belongs to a reactor of this shape."""
        if self.fingerprint == fingerprint and self.reactor == reactor:
            return
        differences = []
        if self.reactor != reactor:
            differences.append(f"it is of reactor {self.reactor!r}, not {reactor!r}")
        old, new = self.structure, structure
        added = sorted(new.keys() - old.keys())
        removed = sorted(old.keys() - new.keys())
        changed = sorted(k for k in old.keys() & new.keys() if tuple(old[k]) != tuple(new[k]))
        if added:
            differences.append(f"steps added since: {', '.join(map(repr, added))}")
        if removed:
            differences.append(f"steps removed since: {', '.join(map(repr, removed))}")
        if changed:
            differences.append("dependencies changed for: " + ", ".join(map(repr, changed)))
        if not differences:
            differences.append("its inputs changed")
        raise ResumeError(
            "This checkpoint does not fit the reactor: " + "; ".join(differences) + "."
        )

    def to_json(self) -> str:
        """The checkpoint as JSON (raises TypeError if a value is not JSON-serialisable).

        Undo records of new steps (`NewSteps`) hold callbacks, not a route to them, and
        cannot be exported.
        """
        if any(r.undo is not None and r.route is None for r in self.undo_stack):
            raise TypeError(
                "a checkpoint with undo records of new steps (rp.NewSteps) cannot be exported "
                "to JSON: their undo callbacks exist only in the run; pickle it instead"
            )
        try:
            return self._json()
        except (TypeError, ValueError) as exc:
            label, value, error = self._culprit(json.dumps, exc)
            raise TypeError(_unsaveable(self.reactor, label, value, error, "JSON")) from error

    def _json(self) -> str:
        return json.dumps(
            {
                "format": _FORMAT,
                "reactor": self.reactor,
                "fingerprint": self.fingerprint,
                "structure": {k: list(v) for k, v in self.structure.items()},
                "inputs": self.inputs,
                "completed": list(self.completed),
                "results": self.results,
                "undo_stack": [
                    [r.step, r.value, r.arguments, *([list(r.route)] if r.route else [])]
                    for r in self.undo_stack
                ],
                "attempts": self.attempts,
                "reason": self.reason,
                "halted_step": self.halted_step,
                "inner": {k: _inner_to_json(v) for k, v in self.inner.items()},
                "finished": self.finished,
                "inner_marks": self.inner_marks,
            }
        )

    @classmethod
    def from_json(cls, text: str | dict[str, Any]) -> Checkpoint:
        """Load a checkpoint written by `to_json`."""
        data = json.loads(text) if isinstance(text, str) else text
        if data.get("format") != _FORMAT:
            raise ResumeError(f"Unknown checkpoint format {data.get('format')!r}.")
        return cls(
            reactor=data["reactor"],
            fingerprint=data["fingerprint"],
            structure={k: tuple(v) for k, v in data["structure"].items()},
            inputs=data["inputs"],
            completed=tuple(data["completed"]),
            results=data["results"],
            undo_stack=tuple(
                UndoRecord(s, v, a, route=tuple(route[0]) if route else None)
                for s, v, a, *route in data["undo_stack"]
            ),
            attempts=data["attempts"],
            reason=data["reason"],
            halted_step=data["halted_step"],
            inner={k: _inner_from_json(v) for k, v in data["inner"].items()},
            finished=data.get("finished", False),
            inner_marks=data.get("inner_marks", {}),
        )


def _unsaveable(reactor: str, label: str, value: Any, error: BaseException, how: str) -> str:
    kind = type(value).__name__
    return (
        f"A checkpoint of {reactor!r} cannot be {'exported to JSON' if how == 'JSON' else how}: "
        f"{label} ({_a(kind)}) cannot be saved ({type(error).__name__}: {error}). "
        "Clients, sessions, connections and pools do not belong in inputs or results: pass "
        "them with run(context={...}) (steps read rp.Context.data; checkpoints never hold "
        "it, so give it again to resume() and undo()), or keep only what recreates them."
    )


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _inner_to_json(value: Any) -> Any:
    """A composed child's checkpoint, or a switch's (branch index, checkpoint)."""
    if isinstance(value, tuple):
        index, checkpoint = value
        return {"branch": index, "checkpoint": json.loads(checkpoint.to_json())}
    return json.loads(value.to_json())


def _inner_from_json(data: dict[str, Any]) -> Any:
    if "branch" in data:
        return (data["branch"], Checkpoint.from_json(data["checkpoint"]))
    return Checkpoint.from_json(data)


def _state(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in attrs.fields(type(obj))}


def _set_state(obj: Any, state: dict[str, Any]) -> None:
    """What unpickling does: fields a pickle made by an earlier version lacks get their
    defaults, so a run halted before an upgrade still resumes after it."""
    for f in attrs.fields(type(obj)):
        default: Any = f.default
        if f.name in state:
            value = state[f.name]
        elif isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            value = default.factory()
        else:
            value = default
        object.__setattr__(obj, f.name, value)
