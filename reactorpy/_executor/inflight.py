"""New steps in flight when a run halted: what its checkpoint keeps of them.

Owns: `NewStepsHalted` (the entry of `Checkpoint.inner` for a step whose new steps, from
`rp.NewSteps`, halted: the steps, their child run's checkpoint, what earlier rounds
completed), its pickling (the steps whole: `saved_step`, `loaded_step`), and
`new_steps_reactor`, the reactor new steps run as (when they start, and again on resume or
undo from a checkpoint, so that their undo callbacks are found).
Must not import: the rest of the executor, the composites.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import attrs

from .._arguments import Input, Result
from .._step import NewSteps, Step

if TYPE_CHECKING:
    from .._checkpoint import Checkpoint, UndoRecord
    from .._reactor import Reactor

__all__ = ["NewStepsHalted", "loaded_step", "new_steps_reactor", "saved_step"]


@attrs.frozen
class NewStepsHalted:
    """New steps (`rp.NewSteps`) that halted while the step that returned them waited for
    them: its entry in `Checkpoint.inner`. On resume the step is not called again: it
    continues them, then completes as if it had not halted.

    Pickled with its steps whole (their functions and callbacks by reference: defined at
    module level); never JSON (`Checkpoint.to_json` says so).

    Attributes:
        step: the name of the step that returned them.
        new: the `NewSteps` in flight (for a step that replaces itself round after round,
            the round's that halted).
        checkpoint: the checkpoint of their child run; None if it had not started (the
            run halted first), or for a plain replacement called in place.
        done: what the rounds before it completed, as records of the step's run, oldest
            first.
        arguments: for a plain replacement called in place: the arguments its round builds
            on (the previous round's); None otherwise.
    """

    step: str
    new: NewSteps
    checkpoint: Checkpoint | None = None
    done: tuple[UndoRecord, ...] = ()
    arguments: dict[str, Any] | None = None

    def child(self, factory: Callable[..., Any]) -> Reactor:
        """The reactor of the child run that halted (made by `factory`, a reactor class)."""
        assert self.checkpoint is not None
        steps, inputs = self.new.steps, list(self.checkpoint.inputs)
        return new_steps_reactor(factory, self.checkpoint.reactor, self.step, steps, inputs)

    def __reduce__(self) -> tuple[Any, ...]:
        states = []
        parts: list[tuple[str, Any]] = [(f"new step {s.name!r}", s) for s in self.new.steps]
        parts += [
            ("the value of its NewSteps", self.new.value),
            ("the arguments of its replacement", self.arguments),
        ]
        for label, part in parts:
            try:
                state = saved_step(part) if isinstance(part, Step) else part
                pickle.dumps(state, pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                _cannot_pickle(self.step, label, exc)
            if isinstance(part, Step):
                states.append(state)
        return (
            _new_steps_halted,
            (self.step, self.new.value, states, self.checkpoint, self.done, self.arguments),
        )


def _cannot_pickle(step: str, label: str, error: Exception) -> NoReturn:
    raise TypeError(
        f"A checkpoint cannot be pickled: step {step!r} halted while the new steps it "
        "returned (rp.NewSteps) ran, which the checkpoint keeps to continue them on resume, "
        f"and {label} cannot be saved ({type(error).__name__}: {error}). Define new steps' "
        "functions and callbacks at module level (a lambda or a nested function cannot be "
        "pickled)."
    ) from error


def _new_steps_halted(
    step: str,
    value: Any,
    states: list[tuple[Any, ...]],
    checkpoint: Checkpoint | None,
    done: tuple[UndoRecord, ...],
    arguments: dict[str, Any] | None,
) -> NewStepsHalted:
    """A `NewStepsHalted` unpickled."""
    new = NewSteps(value, [loaded_step(state) for state in states])
    return NewStepsHalted(step, new, checkpoint, done, arguments)


def saved_step(step: Step[..., Any]) -> tuple[Any, ...]:
    """`step` as data that pickles whole: its function and callbacks by reference, its
    options by value (`loaded_step` makes it again). A `Step` itself pickles as the module
    attribute its function is, and steps made at run time are none.

    Raises:
        TypeError: `step` is a composite (only its reactor makes one).
    """
    if type(step) is not Step:
        raise TypeError(f"step {step.name!r} is a {type(step).__name__}, not a plain Step")
    options = {
        "name": step.name,
        "args": step.args,
        "wait_for": step.wait_for,
        "async_": step.async_,
        "retries": step.retries,
        "retry_on": step.retry_on,
        "backoff": step.backoff,
        "timeout": step.timeout,
        "executor": step.executor,
        "concurrency_key": step.concurrency_key,
        "when": step.when.fn if step.when is not None else None,
        "description": step.description,
    }
    undo, compensate = step.undo_callback, step.compensate_callback
    return (
        step.fn,
        options,
        None if undo is None else undo.fn,
        None if compensate is None else compensate.fn,
    )


def loaded_step(state: tuple[Any, ...]) -> Step[..., Any]:
    """The step `saved_step` saved."""
    fn, options, undo, compensate = state
    made: Step[..., Any] = Step(fn, **options)
    if undo is not None:
        made.undo(undo)
    if compensate is not None:
        made.compensate(compensate)
    return made


def new_steps_reactor(
    factory: Callable[..., Any],
    name: str,
    own: str,
    steps: Sequence[Step[..., Any]],
    inputs: list[str],
) -> Reactor:
    """The reactor new steps run as, made by `factory` (a reactor class): `steps` (those
    step `own` returned), with `inputs`; one named `own` replaces that step (its result is
    the reactor's). A result of the running reactor that a new step names reaches it as an
    input of the same name."""
    names = {s.name for s in steps}
    reactor = factory(name, inputs=inputs, returns=own if own in names else None)
    for s in steps:
        outer = {
            p: Input(src.step, *src.path, transform=src.transform)
            for p, src in s.args.items()
            if isinstance(src, Result) and src.step not in names
        }
        reactor.add(s.evolve(args=outer) if outer else s)
    return reactor  # type: ignore[no-any-return]
