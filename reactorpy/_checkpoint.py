"""Checkpoints: the picklable, JSON-exportable state of a halted (or finished) run.

Owns: `Checkpoint` and `UndoRecord`, their JSON form, and the check that a checkpoint fits
the reactor that resumes it.
Must not import: the executor.
"""

from __future__ import annotations

import json
import pickle
import sys
from collections.abc import Callable, Iterator
from typing import Any, Final

import attrs

from ._arguments import Context
from ._errors import ResumeError
from ._signature import is_undo

__all__ = ["BY_REFERENCE", "Checkpoint", "UndoRecord", "by_reference", "reference_route"]

_FORMAT = 1
_PROTOCOL = pickle.HIGHEST_PROTOCOL


def _without_context(arguments: dict[str, Any]) -> dict[str, Any]:
    if any(type(v) is Context for v in arguments.values()):
        return {k: v for k, v in arguments.items() if type(v) is not Context}
    return arguments


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
            loaded from JSON). None for direct steps and for new steps (`NewSteps`); in
            the journal, a new step's is ``(BY_REFERENCE, module, qualname)`` when its
            undo callback is a function found there (`reference_route`).
    """

    step: str
    value: Any
    # A step's `Context` is not kept: the undo gets its own (it holds run(context=...)).
    arguments: dict[str, Any] = attrs.field(converter=_without_context)
    undo: Any = attrs.field(default=None, eq=False, repr=False)
    route: tuple[str, ...] | None = attrs.field(default=None, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        state = _state(self)
        if self.route is not None:  # found again along the route: it need not pickle
            state["undo"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        _set_state(self, state)


# The first item of a route that names an undo callback by where it is defined rather than
# by the steps that lead to it (`reference_route`): no step name starts with it (they are
# printable), nor does the rollback mark of the journal (``"\x1f"``).
BY_REFERENCE: Final = "\x1e"


def reference_route(fn: Any) -> tuple[str, str, str] | None:
    """``(BY_REFERENCE, module, qualname)`` for an undo callback that `by_reference` finds
    again in another process: a function registered as an undo (`Step.undo`) and
    defined at the top level of a module other than ``__main__`` (or as a static method
    of a class there); the route of a new step's undo in the journal, which no step of a
    reactor leads to. None for anything else (a closure, a lambda, a method, a partial,
    a function of the script run as ``__main__``, which another script may define too)."""
    if not is_undo(fn) or fn.__module__ == "__main__":
        return None
    module, qualname = fn.__module__, fn.__qualname__
    return (BY_REFERENCE, module, qualname) if _defined(module, qualname) is fn else None


def by_reference(route: tuple[str, ...]) -> Any:
    """The undo callback a route made by `reference_route` names, or None: a function
    of that name in a module this process has imported, registered as an undo callback
    here (a journal cannot make anything else an undo: the module of a step defined at
    module level with its ``@step.undo`` registers it when imported). Looks names up in
    the module's and classes' namespaces only: nothing is imported, no ``__getattr__``
    runs."""
    if len(route) != 3 or route[0] != BY_REFERENCE or route[1] == "__main__":
        return None
    module, qualname = route[1], route[2]
    found = _defined(module, qualname)
    if not is_undo(found) or (found.__module__, found.__qualname__) != (module, qualname):
        return None
    return found


def _defined(module: str, qualname: str) -> Any:
    found: Any = sys.modules.get(module)
    for part in qualname.split("."):
        if found is None or part == "<locals>":
            return None
        try:
            found = vars(found).get(part)
        except TypeError:  # an object without a namespace of its own
            return None
        if isinstance(found, staticmethod):
            found = found.__func__
    return found


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
            switch, the chosen branch's index and its checkpoint; for a step whose new
            steps, from `rp.NewSteps`, halted, those steps and their checkpoint: such a
            checkpoint pickles, but cannot be exported to JSON).
        finished: the run completed (`Reactor.run_reversible`): it can be undone, not
            resumed.
        inner_marks: for each entry of `inner`, how many records of `undo_stack` were
            there when that child halted (those after it completed later: undo goes
            newest first across the levels).
        run_id: the id of the run (its root's) that made it: a resumed or undone run keeps
            it for `rp.Context.idempotency_key`, so keys stay the same across a resume.
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
    run_id: str | None = None

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
            named = {*self.completed, *self.results, *self.attempts, *self.inner}
            named.update(r.step for r in self.undo_stack if r.undo is None and r.route is None)
            unknown = sorted(named - structure.keys())
            if unknown:
                raise ResumeError(
                    f"This checkpoint names steps that reactor {reactor!r} does not have: "
                    f"{', '.join(map(repr, unknown))}; it was edited or belongs elsewhere."
                )
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

        New steps (`NewSteps`) exist in no definition, and cannot be exported: the undo
        records of those that completed hold their callbacks, not a route to them, and a
        run that halted while new steps ran keeps them, to continue them on resume.
        """
        refused = _new_steps_inside(self, "")
        if refused is not None:
            raise TypeError(
                f"A checkpoint of {self.reactor!r} cannot be exported to JSON: step "
                f"{refused!r} halted while the new steps it returned (rp.NewSteps) ran, and "
                "the checkpoint keeps those steps (functions) to continue them on resume, "
                "which JSON cannot hold; pickle it instead."
            )
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
                "run_id": self.run_id,
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes | dict[str, Any]) -> Checkpoint:
        """Load a checkpoint written by `to_json`.

        Raises:
            ResumeError: the text is not JSON, or not a checkpoint (a field is missing or
                of the wrong type); the message names the field.
        """
        if isinstance(text, str | bytes):
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise ResumeError(
                    f"This is not a checkpoint: it is not valid JSON ({exc})."
                ) from None
        else:
            data = text
        return _checkpoint_from(data, "checkpoint")


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


def _new_steps_inside(checkpoint: Checkpoint, prefix: str) -> str | None:
    """The name of a step, at any depth, whose new steps halted inside it, or None. An
    entry of ``inner`` is a checkpoint (compose), a (branch, checkpoint) pair (switch), or
    else what new steps left (`NewStepsHalted`, made by the executor)."""
    for name, value in checkpoint.inner.items():
        child = value[1] if isinstance(value, tuple) else value
        if not isinstance(child, Checkpoint):
            return prefix + name
        found = _new_steps_inside(child, f"{prefix}{name}.")
        if found is not None:
            return found
    return None


def _inner_to_json(value: Any) -> Any:
    """A composed child's checkpoint, or a switch's (branch index, checkpoint)."""
    if isinstance(value, tuple):
        index, checkpoint = value
        return {"branch": index, "checkpoint": json.loads(checkpoint.to_json())}
    return json.loads(value.to_json())


def _inner_from_json(data: Any, where: str) -> Any:
    if isinstance(data, dict) and "branch" in data:
        index = _field(data, "branch", int, where)
        return (index, _checkpoint_from(data.get("checkpoint"), f"{where}.checkpoint"))
    return _checkpoint_from(data, where)


_MISSING: Any = object()


def _field(data: dict[str, Any], key: str, kind: Any, where: str, default: Any = _MISSING) -> Any:
    """`data[key]`, checked to be a `kind`; a `ResumeError` naming it otherwise."""
    value = data.get(key, default)
    if value is _MISSING:
        raise ResumeError(f"This is not a checkpoint: {where} has no field {key!r}.")
    if (kind is not None and not isinstance(value, kind)) or (
        isinstance(value, bool) and kind is int
    ):
        raise ResumeError(
            f"This is not a checkpoint: {where}.{key} should be "
            f"{getattr(kind, '__name__', kind)}, got {type(value).__name__} {value!r:.60}."
        )
    return value


def _strings(values: Any, where: str) -> tuple[str, ...]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ResumeError(f"This is not a checkpoint: {where} should be a list of step names.")
    return tuple(values)


def _record_from(item: Any, where: str) -> UndoRecord:
    if (
        not isinstance(item, list)
        or len(item) not in (3, 4)
        or not isinstance(item[0], str)
        or not isinstance(item[2], dict)
    ):
        raise ResumeError(
            f"This is not a checkpoint: {where} should be [step, value, arguments(, route)], "
            f"got {item!r:.80}."
        )
    route = _strings(item[3], f"{where} route") if len(item) == 4 else None
    return UndoRecord(item[0], item[1], item[2], route=route)


def _checkpoint_from(data: Any, where: str) -> Checkpoint:
    """A `Checkpoint` from parsed JSON, every field checked (`ResumeError` names the first
    that is missing or of the wrong type)."""
    if not isinstance(data, dict):
        raise ResumeError(
            f"This is not a checkpoint: {where} should be a JSON object, got "
            f"{type(data).__name__} {data!r:.60}."
        )
    if data.get("format") != _FORMAT:
        raise ResumeError(f"Unknown checkpoint format {data.get('format')!r} in {where}.")
    structure = _field(data, "structure", dict, where)
    attempts = _field(data, "attempts", dict, where)
    inner = _field(data, "inner", dict, where, {})
    marks = _field(data, "inner_marks", dict, where, {})
    for name, value in [*attempts.items(), *marks.items()]:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ResumeError(f"This is not a checkpoint: {where} counts {name!r} as {value!r}.")
    return Checkpoint(
        reactor=_field(data, "reactor", str, where),
        fingerprint=_field(data, "fingerprint", str, where),
        structure={k: _strings(v, f"{where}.structure[{k!r}]") for k, v in structure.items()},
        inputs=_field(data, "inputs", dict, where),
        completed=_strings(_field(data, "completed", list, where), f"{where}.completed"),
        results=_field(data, "results", dict, where),
        undo_stack=tuple(
            _record_from(item, f"{where}.undo_stack[{k}]")
            for k, item in enumerate(_field(data, "undo_stack", list, where))
        ),
        attempts=attempts,
        reason=_field(data, "reason", None, where, None),
        halted_step=_field(data, "halted_step", (str, type(None)), where, None),
        inner={k: _inner_from_json(v, f"{where}.inner[{k!r}]") for k, v in inner.items()},
        finished=_field(data, "finished", bool, where, False),
        inner_marks=marks,
        run_id=_field(data, "run_id", (str, type(None)), where, None),
    )


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
