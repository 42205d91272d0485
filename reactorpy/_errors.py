"""The exception hierarchy of reactorpy, and the control-flow signals steps raise.

Owns: every exception class users catch, each building its message from fields code can read.
Must not import: anything else in the package.

    ReactorError                      base of everything reactorpy raises
    ├── DefinitionError (TypeError)   a reactor or step is defined wrongly
    │   ├── CycleError                .cycle: ["a", "b", "a"]
    │   ├── UnknownReferenceError     .step, .reference, .available
    │   ├── DuplicateStepError        .name, .reactor
    │   └── TypeMismatchError         .step, .parameter, .expected, .producer, .produced
    ├── InputError (ValueError)       .missing, .unexpected, .step/.argument/.path
    ├── ResumeError (ValueError)      a checkpoint does not fit the reactor
    ├── PathError (LookupError)       a path into a result does not exist (_arguments.py)
    ├── OffloadError (TypeError)      a step or argument cannot go to a process (_offload.py)
    ├── OwnershipError (RuntimeError) .run_id, .status, .owner: a journal may not write to the
    │                                 run (another process owns it, or it ended) (_journal)
    ├── RecordedError                 .type_name, .message: an error a journal could not
    │                                 rebuild as its own class (_journal)
    ├── RunFailed (ExceptionGroup)    the standing step errors plus any undo errors
    └── Halted                        .reason, .checkpoint: the run paused and can resume

Signals a step raises (not errors): `Retry`, `Halt`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for annotations only: at run time this module imports nothing of ours
    from ._checkpoint import Checkpoint

__all__ = [
    "CycleError",
    "DefinitionError",
    "DuplicateStepError",
    "Halt",
    "Halted",
    "InputError",
    "ReactorError",
    "ResumeError",
    "Retry",
    "RunFailed",
    "TypeMismatchError",
    "UnknownReferenceError",
]

_UNSET: Any = type("_Unset", (), {"__repr__": lambda self: "<unset>"})()


def did_you_mean(name: str, available: Iterable[str]) -> str:
    """Return ' Did you mean 'x'?' for the closest available name, or ''."""
    close = difflib.get_close_matches(name, list(available), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def annotate(error: BaseException, note: str) -> None:
    """Add `note` to `error` (``add_note``), never raising, never piling up.

    A note reactorpy added to the same exception before (an instance raised again by a
    later run, say a module-level ``NOT_FOUND = LookupError(...)``) is replaced by this one:
    notes of the same kind (the text before the first quote) are one per exception. An
    exception that refuses notes (a frozen dataclass) is left as it is.
    """
    kind = note.split("'", 1)[0]
    try:
        notes = error.__dict__.get("__notes__") if hasattr(error, "__dict__") else None
        if isinstance(notes, list):
            notes[:] = [n for n in notes if not (isinstance(n, str) and n.startswith(kind))]
        error.add_note(note)
    except Exception:
        pass


def _listing(names: Iterable[str]) -> str:
    names = sorted(names)
    return ", ".join(repr(n) for n in names) if names else "(none)"


class ReactorError(Exception):
    """Base class of every error reactorpy raises itself."""


class DefinitionError(ReactorError, TypeError):
    """A reactor or one of its steps is defined wrongly; raised before any step runs."""


class CycleError(DefinitionError):
    """The steps depend on each other in a circle.

    Attributes:
        cycle: the step names along the cycle, the first repeated at the end.
    """

    def __init__(self, cycle: Sequence[str], reactor: str = "") -> None:
        self.cycle = list(cycle)
        self.reactor = reactor
        where = f" in reactor {reactor!r}" if reactor else ""
        super().__init__(
            f"Steps depend on each other in a cycle{where}: {' -> '.join(self.cycle)}. "
            "Remove one of these dependencies (an argument or a wait_for)."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.cycle, self.reactor))


class UnknownReferenceError(DefinitionError):
    """A step (or `returns`) names an input or step that does not exist.

    Attributes:
        step: the step that holds the reference (or "returns").
        reference: the unknown name.
        available: the names that do exist.
    """

    def __init__(
        self, step: str, reference: str, available: Iterable[str], *, what: str = "step"
    ) -> None:
        self.step = step
        self.reference = reference
        self.available = sorted(available)
        self.what = what
        super().__init__(
            f"{step!r} refers to an unknown {what} {reference!r}."
            f"{did_you_mean(reference, self.available)} Available: {_listing(self.available)}."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_unknown, (self.step, self.reference, self.available, self.what))


def _rebuild_unknown(
    step: str, reference: str, available: list[str], what: str
) -> UnknownReferenceError:
    return UnknownReferenceError(step, reference, available, what=what)


class DuplicateStepError(DefinitionError):
    """Two steps (or a step and an input) share one name.

    Attributes:
        name: the name used twice.
        reactor: the reactor's name.
    """

    def __init__(self, name: str, reactor: str, *, clashes_with: str = "step") -> None:
        self.name = name
        self.reactor = reactor
        self.clashes_with = clashes_with
        super().__init__(
            f"Reactor {reactor!r} already has {'an input' if clashes_with == 'input' else 'a step'}"
            f" named {name!r}; give the new step another name with name=..."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_duplicate, (self.name, self.reactor, self.clashes_with))


def _rebuild_duplicate(name: str, reactor: str, clashes_with: str) -> DuplicateStepError:
    return DuplicateStepError(name, reactor, clashes_with=clashes_with)


class TypeMismatchError(DefinitionError):
    """A step's result feeds a parameter whose annotation it cannot meet (``-> int`` into a
    parameter annotated ``str``); raised by ``plan()``.

    Attributes:
        step: the step that takes the argument.
        parameter: its parameter.
        expected: the parameter's annotation, as text.
        producer: the step whose result feeds it.
        produced: the producer's return annotation, as text.
    """

    def __init__(
        self, step: str, parameter: str, expected: str, producer: str, produced: str
    ) -> None:
        self.step = step
        self.parameter = parameter
        self.expected = expected
        self.producer = producer
        self.produced = produced
        super().__init__(
            f"Step {step!r}: parameter {parameter!r} is annotated {expected}, but step "
            f"{producer!r}, which feeds it, returns {produced}. Fix one of the annotations, "
            f"or convert the value: args={{{parameter!r}: "
            f"rp.Result({producer!r}, transform=...)}}."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            type(self),
            (self.step, self.parameter, self.expected, self.producer, self.produced),
        )


class InputError(ReactorError, ValueError):
    """The inputs of a run are wrong, or a path into a value does not exist.

    Attributes:
        missing: declared inputs that were not given.
        unexpected: given inputs that were not declared.
        available: the declared inputs.
        step, argument, path: for a path that does not resolve, where it was used.
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        reactor: str = "",
        missing: Iterable[str] = (),
        unexpected: Iterable[str] = (),
        available: Iterable[str] = (),
        step: str | None = None,
        argument: str | None = None,
        path: Sequence[Any] = (),
    ) -> None:
        self.reactor = reactor
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        self.available = sorted(available)
        self.step = step
        self.argument = argument
        self.path = tuple(path)
        if message is None:
            parts = []
            if self.missing:
                parts.append(f"missing input(s) {_listing(self.missing)}")
            if self.unexpected:
                parts.append(f"unexpected input(s) {_listing(self.unexpected)}")
            hints = "".join(did_you_mean(u, self.available) for u in self.unexpected)
            message = (
                f"Reactor {reactor!r} was run with {' and '.join(parts)}.{hints}"
                f" Declared inputs: {_listing(self.available)}."
            )
        self._message = message
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_input_error, (self._message, self.__dict__.copy()))


def _rebuild_input_error(message: str, state: dict[str, Any]) -> InputError:
    err = InputError(message)
    err.__dict__.update(state)
    return err


class ResumeError(ReactorError, ValueError):
    """A checkpoint cannot be resumed by this reactor (its graph changed, or it is not one)."""


class RunFailed(ReactorError, ExceptionGroup):
    """A run failed: the standing step errors, then any undo errors, as an ExceptionGroup.

    Each member carries notes (``add_note``) naming its step and attempt, so
    ``except* ValueError`` reaches the original exceptions.

    Attributes:
        reactor: the reactor's name.
        abandoned: steps in threads or processes that could not be stopped.
        undo_failed: steps whose undo failed (their effects may be left): a composite
            step whose child run failed so is never retried.
    """

    reactor: str
    abandoned: list[str]
    undo_failed: list[str]

    def __new__(cls, message: str, exceptions: Sequence[Exception], **kwargs: Any) -> RunFailed:
        self = super().__new__(cls, message, exceptions)
        self.reactor = kwargs.get("reactor", "")
        self.abandoned = list(kwargs.get("abandoned", ()))
        self.undo_failed = list(kwargs.get("undo_failed", ()))
        return self

    def __init__(self, message: str, exceptions: Sequence[Exception], **kwargs: Any) -> None:
        super().__init__(message, exceptions)

    def derive(self, excs: Sequence[Exception]) -> RunFailed:  # type: ignore[override]
        return RunFailed(
            self.message,
            excs,
            reactor=self.reactor,
            abandoned=self.abandoned,
            undo_failed=self.undo_failed,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_run_failed,
            (self.message, list(self.exceptions), self.reactor, self.abandoned, self.undo_failed),
        )


def _rebuild_run_failed(
    message: str,
    excs: list[Exception],
    reactor: str,
    abandoned: list[str],
    undo_failed: list[str] = [],  # noqa: B006 - read, never changed
) -> RunFailed:
    return RunFailed(message, excs, reactor=reactor, abandoned=abandoned, undo_failed=undo_failed)


class Halted(ReactorError):
    """The run paused; `await reactor.resume(err.checkpoint)` continues it.

    Attributes:
        reason: what the halting step (or the run's timeout) gave as the reason.
        step: the step that halted, or None for a run timeout.
        checkpoint: a picklable `Checkpoint` of the run so far.
    """

    def __init__(self, reason: Any, checkpoint: Checkpoint, step: str | None = None) -> None:
        self.reason = reason
        self.checkpoint: Checkpoint = checkpoint
        self.step = step
        who = f"step {step!r}" if step else "its timeout"
        super().__init__(f"Run halted by {who}: {reason!r}. Resume it with reactor.resume().")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason, self.checkpoint, self.step))


class Retry(Exception):
    """Raised by a step (or its compensate/undo) to ask for another attempt.

    Args:
        reason: why; when attempts run out the reason (or this Retry's ``__cause__``)
            becomes the standing error.
        delay: seconds to wait before the next attempt, overriding the step's backoff.
    """

    def __init__(self, reason: Any = None, *, delay: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_retry, (self.reason, self.delay))


def _rebuild_retry(reason: Any, delay: float | None) -> Retry:
    return Retry(reason, delay=delay)


class Halt(Exception):
    """Raised by a step to pause the run; `run()` then raises `Halted`.

    Args:
        reason: any value saying why (kept in the checkpoint).
        result: when given, the halting step counts as completed with this value and its
            dependents receive it on resume; otherwise the step runs again on resume.
    """

    # The arguments the halting attempt resolved, by name (set by the run, for the undo
    # record of a step that halts with a result: transforms are not run again).
    _arguments: dict[str, Any] | None = None

    def __init__(self, reason: Any = None, *, result: Any = _UNSET) -> None:
        super().__init__(reason)
        self.reason = reason
        self.result = result

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_halt, (self.reason, self.result))


def _rebuild_halt(reason: Any, result: Any) -> Halt:
    return Halt(reason, result=result)
