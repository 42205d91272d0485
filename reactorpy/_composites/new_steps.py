"""Steps added at run time: what a step's `rp.NewSteps` runs.

Owns: `run_new_steps`, which plans the new steps as a child run (with the results and
inputs the step may use as its inputs), runs it, and loops while a replacing step returns
more. What every round completed is kept together: undone if a later round fails, joined
to the run's undo stack when the step completes. When the run halts, the child run halts
with it (a halt inside it halts the run): what it completed is kept, with the new steps
and the child's checkpoint (`NewStepsHalted`), and on resume the step continues them
instead of being called again (`scheduler.resume_inside`); a replacing loop continues from
the round in flight, and a round that failed or was cut short as the run halted runs
again.
Must not import: the executor's state, the reactor module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .._arguments import Context, Result, Value, dig
from .._checkpoint import UndoRecord
from .._errors import _UNSET, DefinitionError, Halt, UnknownReferenceError
from .._executor.attempts import as_halt
from .._executor.inflight import NewStepsHalted, new_steps_reactor
from .._executor.scope import MISSING
from .._step import NewSteps, Step
from .repeat import undo_then_raise

if TYPE_CHECKING:
    from .._checkpoint import Checkpoint
    from .._executor.scope import ChildScope

__all__ = ["run_new_steps"]


class _Done:
    """What the rounds of new steps completed (for `undo_then_raise`), and whether they
    were kept inside the step as the run halted (then nothing is undone)."""

    def __init__(self, records: Iterable[UndoRecord] = ()) -> None:
        self.records: list[UndoRecord] = list(records)
        self.kept = False


async def run_new_steps(scope: ChildScope, new: NewSteps) -> Any:
    """Run the steps a step returned; loop while the replacement returns more. Resumed
    (its new steps halted), continue them where they halted.

    A step that replaces itself with a plain step (no options, callbacks or ``wait_for``)
    loops in place (`_replace_in_place`); anything else runs as a child run per round.
    """
    own = scope.name
    inside: NewStepsHalted | None = scope.resumed()
    previous = inside.arguments if inside is not None else None
    if previous is not None or (inside is None and _in_place(new, own)):
        value = await _replace_in_place(scope, new, previous)
        if type(value) is not NewSteps:
            return value
        new, inside = value, None  # a round that is more than a replacement: the general way
    done = _Done(inside.done if inside is not None else ())
    checkpoint = inside.checkpoint if inside is not None else None
    try:
        value = await _rounds(scope, new, checkpoint, done)
    except BaseException as exc:
        if done.records and not done.kept:
            await undo_then_raise(scope, done, exc)
        raise
    scope.keep(done.records)
    return value


async def _rounds(
    scope: ChildScope, new: NewSteps, checkpoint: Checkpoint | None, done: _Done
) -> Any:
    """Run `new` as a child run (from `checkpoint`, resumed), and the rounds of the
    replacements it returns, their records added to `done`; return the step's value.

    When the run halts they are kept inside the step, to continue on resume (`_keep`):
    halted with what they completed, or, if they fail or are cut short meanwhile (having
    undone what they completed), to run this round again. Under a journal that writes JSON
    they are undone instead, and the step runs again (`scheduler._runs_again`).
    """
    own = scope.name
    keeps = scope.keeps_new_steps
    while True:
        if checkpoint is None and scope.halting:  # nothing new starts: this round, on resume
            if keeps:
                _keep(scope, done, new, None, [])
            raise Halt("the run halted before the new steps started")
        if checkpoint is None:
            reactor, inputs = _reactor_for(scope, own, new)
        else:  # resumed: the round that halted, from its checkpoint
            reactor = NewStepsHalted(own, new, checkpoint).child(scope.new_reactor)
            inputs = dict(checkpoint.inputs)
        try:
            child = await scope.run_child(reactor, inputs, "", checkpoint=checkpoint, linked=True)
        except (Exception, asyncio.CancelledError):
            if keeps and scope.halting:
                _keep(scope, done, new, None, [])
            raise
        checkpoint = None
        if child.halted is not None:
            if keeps:
                _keep(scope, done, new, child.halted.checkpoint, child.records)
            else:
                done.records.extend(child.records)
            raise Halt(child.halted.reason)
        done.records.extend(child.records)
        if not any(s.name == own for s in new.steps):
            return new.value
        if type(child.value) is not NewSteps:
            return child.value
        new = child.value


def _keep(
    scope: ChildScope,
    done: _Done,
    new: NewSteps,
    checkpoint: Checkpoint | None,
    records: list[UndoRecord],
) -> None:
    """The round `new` is kept inside the step as the run halts: from `checkpoint` (its
    child's, with `records` completed), or afresh (None); with the rounds before it."""
    done.kept = True
    kept = NewStepsHalted(scope.name, new, checkpoint, tuple(done.records))
    scope.halted_inside(kept, [*done.records, *records])


def _reactor_for(scope: ChildScope, own: str, new: NewSteps) -> tuple[Any, dict[str, Any]]:
    """The reactor of one round of new steps, and its inputs (the results and inputs of
    the run the step may use, and its arguments)."""
    for s in new.steps:
        if not isinstance(s, Step):
            raise DefinitionError(f"NewSteps from {own!r}: {s!r} is not a Step.")
    available = scope.available()
    names = {s.name for s in new.steps}
    inputs = {k: v for k, v in available.items() if k not in names}
    name = f"{scope.reactor_name}.{own}"
    return new_steps_reactor(scope.new_reactor, name, own, new.steps, list(inputs)), inputs


def _in_place(new: NewSteps, own: str) -> bool:
    """Whether `new` only replaces step `own` with a plain step: a function (no options, no
    undo or compensate, no ``wait_for``, no positional-only parameter), not a composite."""
    if len(new.steps) != 1:
        return False
    s = new.steps[0]
    code = getattr(s.fn, "__code__", None)
    return (
        type(s) is Step
        and s.name == own
        and code is not None
        and not code.co_posonlyargcount
        and not s.has_features
        and s.undo_callback is None
        and not s.wait_for
        and s.async_
    )


async def _replace_in_place(
    scope: ChildScope, new: NewSteps, previous: dict[str, Any] | None
) -> Any:
    """A step that replaces itself, in a loop, each replacement a call in this task.

    Equivalent to the general way (a child run per round whose one step is the
    replacement, its result the step's) for a plain replacement, which has nothing a child
    run would add: no undo to keep, no options, no other steps to wait for. Each round's
    arguments come from its own ``args=``, then by name from the previous round's
    arguments (`previous`; the step's own for the first round), the run's inputs and the
    results it still holds. Returns the value, or new steps that are more than a
    replacement (the caller runs those the general way). Under a limiter, an ``async def``
    replacement holds one slot while it loops. A round that halts, or is cancelled as the
    run halts, is kept to be called again on resume (`NewStepsHalted.arguments`).
    """
    if previous is None:
        previous = scope.arguments()
    limiter = scope.limiter
    slot: Any = _NO_SLOT  # the key of the slot held, once an async replacement took one
    try:
        while True:
            step = new.steps[0]
            kwargs = _arguments(scope, step, previous)
            if step.is_async:
                if limiter is not None and slot is _NO_SLOT:
                    await limiter.acquire(step.concurrency_key)
                    slot = step.concurrency_key
                value = await step.fn(**kwargs)
            else:
                value = step.fn(**kwargs)
            if type(value) is not NewSteps or not _in_place(value, new.steps[0].name):
                return value
            new, previous = value, kwargs
    except BaseException as exc:
        # This round is called again on resume if it halted, or if it failed or was cut
        # short as the run halts (a halt with a result completes the step as it is).
        halt = as_halt(exc)
        if scope.keeps_new_steps and (
            (halt is not None and halt.result is _UNSET)
            or (
                halt is None
                and isinstance(exc, Exception | asyncio.CancelledError)
                and scope.halting
            )
        ):
            # Not a Context: the round gets its own again, and a checkpoint never holds one.
            arguments = {k: v for k, v in previous.items() if type(v) is not Context}
            scope.halted_inside(NewStepsHalted(scope.name, new, arguments=arguments), [])
        raise
    finally:
        if limiter is not None and slot is not _NO_SLOT:
            limiter.release_and_wake(slot)


_NO_SLOT: Any = object()


def _arguments(scope: ChildScope, step: Step[..., Any], previous: dict[str, Any]) -> dict[str, Any]:
    """A replacement's arguments (see `_replace_in_place`)."""
    kwargs: dict[str, Any] = {}
    for p in step.params:
        source = step.args.get(p.name)
        if source is None:
            if p.is_context:
                kwargs[p.name] = scope.context()
                continue
            value = previous.get(p.name, MISSING)
            if value is MISSING:
                value = scope.lookup(p.name)
            if value is MISSING:
                if p.has_default:
                    continue
                raise DefinitionError(
                    f"New step {step.name!r}: parameter {p.name!r} matches no input, result "
                    f"or argument of {scope.name!r}; wire it with args={{{p.name!r}: ...}}."
                )
            kwargs[p.name] = value
        elif isinstance(source, Value):
            kwargs[p.name] = source.value
        else:
            name = source.step if isinstance(source, Result) else source.name
            value = previous.get(name, MISSING)
            if value is MISSING:
                value = scope.lookup(name)
            if value is MISSING:
                raise UnknownReferenceError(step.name, name, [*previous, *scope.names()])
            if source.path:
                value = dig(value, source.path, step.name, p.name, source)
            if source.transform is not None:
                value = source.transform(value)
            kwargs[p.name] = value
    return kwargs
