"""Steps added at run time: what a step's `rp.NewSteps` runs.

Owns: `run_new_steps`, which plans the new steps as a child run (with the results and
inputs the step may use as its inputs), runs it, and loops while a replacing step returns
more. What every round completed is kept together: undone if a later round fails or halts,
joined to the run's undo stack when the step completes. On a halt the step runs again on
resume (its new steps exist in no definition), so what they completed is undone at the
halt, and so is the step's own work (`scheduler.settle_later`).
Must not import: the executor's state, the reactor module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._arguments import Input, Result, Value, dig
from .._checkpoint import UndoRecord
from .._errors import DefinitionError, Halted, UnknownReferenceError
from .._executor.scope import MISSING
from .._step import NewSteps, Step
from .repeat import undo_then_raise

if TYPE_CHECKING:
    from .._executor.scope import ChildScope

__all__ = ["run_new_steps"]


class _Done:
    """What the rounds of new steps completed (for `undo_then_raise`)."""

    def __init__(self) -> None:
        self.records: list[UndoRecord] = []


async def run_new_steps(scope: ChildScope, new: NewSteps) -> Any:
    """Run the steps a step returned; loop while the replacement returns more.

    A step that replaces itself with a plain step (no options, callbacks or ``wait_for``)
    loops in place (`_replace_in_place`); anything else runs as a child run per round.
    """
    own = scope.name
    if _in_place(new, own):
        value = await _replace_in_place(scope, new)
        if type(value) is not NewSteps:
            return value
        new = value  # a round that is more than a replacement: the general way on
    done = _Done()
    try:
        while True:
            reactor, inputs, replace = _reactor_for(scope, own, new)
            child = await scope.run_child(reactor, inputs, "")
            done.records.extend(child.records)
            if child.halted is not None:
                raise child.halted
            if not replace:
                value = new.value
                break
            if type(child.value) is not NewSteps:
                value = child.value
                break
            new = child.value
    except BaseException as exc:
        if isinstance(exc, Halted) or done.records:
            await undo_then_raise(scope, done, exc)
        raise
    scope.keep(done.records)
    return value


def _reactor_for(scope: ChildScope, own: str, new: NewSteps) -> tuple[Any, dict[str, Any], bool]:
    """The reactor of one round of new steps, its inputs, and whether a step replaces
    the one that returned them."""
    for s in new.steps:
        if not isinstance(s, Step):
            raise DefinitionError(f"NewSteps from {own!r}: {s!r} is not a Step.")
    available = scope.available()
    names = {s.name for s in new.steps}
    inputs = {k: v for k, v in available.items() if k not in names}
    replace = own in names
    reactor = scope.new_reactor(
        f"{scope.reactor_name}.{own}", inputs=list(inputs), returns=own if replace else None
    )
    for s in new.steps:
        # Results of the running reactor reach the new steps as inputs of their own.
        outer = {
            p: Input(src.step, *src.path, transform=src.transform)
            for p, src in s.args.items()
            if isinstance(src, Result) and src.step not in names
        }
        reactor.add(s.evolve(args=outer) if outer else s)
    return reactor, inputs, replace


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


async def _replace_in_place(scope: ChildScope, new: NewSteps) -> Any:
    """A step that replaces itself, in a loop, each replacement a call in this task.

    Equivalent to the general way (a child run per round whose one step is the
    replacement, its result the step's) for a plain replacement, which has nothing a child
    run would add: no undo to keep, no options, no other steps to wait for. Each round's
    arguments come from its own ``args=``, then by name from the previous round's
    arguments, the run's inputs and the results it still holds. Returns the value, or
    new steps that are more than a replacement (the caller runs those the general way).
    Under a limiter, an ``async def`` replacement holds one slot while it loops.
    """
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
