"""Steps added at run time: what a step's `rp.NewSteps` runs.

Owns: `run_new_steps`, which plans the new steps as a child run (with the results and
inputs the step may use as its inputs), runs it, and loops while a replacing step returns
more. What every round completed is kept together: undone if a later round fails or halts,
joined to the run's undo stack when the step completes. On a halt the step runs again on
resume (its new steps exist in no definition).
Must not import: the executor's state, the reactor module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._arguments import Input, Result
from .._checkpoint import UndoRecord
from .._errors import DefinitionError, Halted
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
    """Run the steps a step returned; loop while the replacement returns more."""
    own = scope.name
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
