"""compose and switch: one child run in a step, resumable inside it.

Owns: the steps behind ``reactor.compose`` and ``reactor.switch``. The child shares the
parent's limiter, middleware and context; on success its undo records join the parent's as
one unit; a halt inside it halts the parent, and resume continues inside the child.
Must not import: the executor's state, the reactor module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .._arguments import Source
from .._errors import DefinitionError, Halt
from .base import (
    CompositeStep,
    ReactorLike,
    by_name,
    check_reactor,
    child_reactor,
    wiring_for,
    with_wait_for,
)

if TYPE_CHECKING:
    from .._checkpoint import Checkpoint
    from .._executor.scope import ChildScope
    from .._step import Step

__all__ = ["make_compose", "make_switch"]

_ON = "_on"


def make_compose(
    name: str, child: ReactorLike, args: Mapping[str, Source] | None, options: dict[str, Any]
) -> CompositeStep:
    """The step behind ``reactor.compose``."""
    check_reactor("compose", name, child)
    wiring = wiring_for(child, args)
    serial = options.pop("async_", True) is False  # the child one step at a time

    async def call(scope: ChildScope, arguments: dict[str, Any]) -> Any:
        inner = scope.resumed()
        done = await scope.run_child(
            child, {k: arguments[k] for k in child.inputs}, "", checkpoint=inner, serial=serial
        )
        if done.halted is not None:
            scope.halted_inside(done.halted.checkpoint, done.records)
            raise Halt(done.halted.reason)
        scope.keep(done.records)
        return done.value

    step = CompositeStep(name, list(child.inputs), call, {name: child}, args=wiring, **options)
    step.halted_child = lambda inner: (child, inner, "")
    return step


def make_switch(
    name: str,
    on: Source | str,
    cases: Iterable[tuple[Callable[[Any], Any], Step[..., Any] | ReactorLike]],
    default: Step[..., Any] | ReactorLike | None,
    options: dict[str, Any],
    factory: Callable[..., Any],
) -> CompositeStep:
    """The step behind ``reactor.switch``; `factory` makes the one-step reactors."""
    branches = []
    for case in cases:
        if not isinstance(case, tuple | list) or len(case) != 2 or not callable(case[0]):
            raise DefinitionError(
                f"switch {name!r}: each case is a (predicate, step_or_reactor) pair, got "
                f"{case!r}; write cases=[(lambda v: v > 0, positive_step), ...]."
            )
        branches.append((case[0], child_reactor(case[1], factory)))
    fallback = child_reactor(default, factory) if default is not None else None
    candidates = [b for _, b in branches] + [fallback]
    params: list[str] = []
    for child in candidates:
        for p in child.inputs if child is not None else ():
            if p not in params:
                params.append(p)
    args: dict[str, Source] = {_ON: on if not isinstance(on, str) else by_name(on)}
    args.update(options.pop("args", None) or {})

    async def call(scope: ChildScope, arguments: dict[str, Any]) -> Any:
        inner = scope.resumed()
        if inner is not None:  # resuming: continue inside the branch that halted
            index, checkpoint = inner
        else:
            value = arguments[_ON]
            index = next((k for k, (pred, _) in enumerate(branches) if pred(value)), len(branches))
            checkpoint = None
        chosen = candidates[index]
        if chosen is None:
            return None
        done = await scope.run_child(
            chosen,
            {k: arguments[k] for k in chosen.inputs},
            f"{chosen.name}.",
            checkpoint=checkpoint,
        )
        if done.halted is not None:
            scope.halted_inside((index, done.halted.checkpoint), done.records)
            raise Halt(done.halted.reason)
        scope.keep(done.records)
        return done.value

    children = {f"{k}: {b.name}": b for k, (_, b) in enumerate(branches)}
    if fallback is not None:
        children[f"default: {fallback.name}"] = fallback

    def halted_child(inner: tuple[int, Checkpoint]) -> tuple[ReactorLike, Checkpoint, str]:
        index, checkpoint = inner
        chosen = candidates[index]
        assert chosen is not None  # a branch that halted ran
        return chosen, checkpoint, f"{chosen.name}."

    options = with_wait_for(options, candidates)
    step = CompositeStep(name, [_ON, *params], call, children, args=args, **options)
    step.halted_child = halted_child
    return step
