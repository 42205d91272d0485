"""recurse and around: steps that make child runs as they go, restarted on resume.

Owns: the steps behind ``reactor.recurse`` (a child run again and again, each result the
next inputs) and ``reactor.around`` (a child run inside an async wrapper), and `ChildRuns`,
the child runs one such step makes: their records are kept together and undone together,
newest first, if the step fails or halts; child runs the step's body left going are
cancelled when it ends. Such a step cannot be resumed inside a child: it runs again.
Must not import: the executor's state, the reactor module.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

from .._arguments import Source
from .._checkpoint import UndoRecord
from .._errors import DefinitionError, Halt, Halted
from .._executor.attempts import shielded
from .._signature import is_async_callable
from .base import CompositeStep, ReactorLike, check_reactor, wiring_for

if TYPE_CHECKING:
    from .._executor.scope import ChildScope

__all__ = ["ChildRuns", "make_around", "make_recurse", "undo_then_raise"]


class ChildRuns:
    """The child runs one composite step makes, and what they completed."""

    def __init__(self, scope: ChildScope) -> None:
        self.scope = scope
        self.records: list[UndoRecord] = []
        self.count = 0
        self.running: set[asyncio.Task[Any]] = set()  # tasks inside `run_child`

    async def run_child(self, reactor: ReactorLike, inputs: dict[str, Any], label: str) -> Any:
        """Run `reactor`; return its result. A child that halts raises `rp.Halted` (so a
        wrapper sees it go by), with what it completed kept for undo."""
        task = asyncio.current_task()
        assert task is not None
        self.running.add(task)
        try:
            done = await self.scope.run_child(reactor, inputs, label)
        finally:
            self.running.discard(task)
        self.records.extend(done.records)
        if done.halted is not None:
            raise done.halted
        self.count += 1
        return done.value

    async def _stop_stragglers(self) -> None:
        """Cancel child runs the body left going; each undoes what it completed."""
        me = asyncio.current_task()
        others = [t for t in self.running if t is not me and not t.done()]
        for task in others:
            task.cancel()
        if others:
            await asyncio.wait(others)

    async def settle(self, body: Awaitable[Any]) -> Any:
        """Await the step's `body`: on success keep the records; on an error, a halt or a
        cancellation, stop the stragglers and undo the records (one shielded unit, so a
        cancellation that lands meanwhile loses nothing), then raise."""
        try:
            value = await body
        except BaseException as exc:
            await undo_then_raise(self.scope, self, exc)
        _, cancelled = await shielded(self._stop_stragglers())
        if cancelled:
            # Cancelled as the body ended (the run stops: a halt, a timeout): the step
            # stays pending and runs again on resume, so what its children did is undone
            # now, as for a cancellation during the body (kept, it would be done twice).
            await undo_then_raise(self.scope, self, asyncio.CancelledError())
        self.scope.keep(self.records)
        return value


async def undo_then_raise(scope: ChildScope, children: Any, error: BaseException) -> NoReturn:
    """Stop `children`'s stragglers (a `ChildRuns`, or None), undo what they completed
    (``children.records``), then raise `error` (a child's `rp.Halted` as `rp.Halt`, so the
    step halts; a cancellation as it is). If undoing fails too, the step's error and the
    undo errors are raised in one group."""

    async def wind_down() -> list[BaseException]:
        stop = getattr(children, "_stop_stragglers", None)
        if stop is not None:
            await stop()
        return await scope.undo(children.records)

    undo_errors, cancelled = await shielded(wind_down())
    if isinstance(error, Halted):
        error = Halt(error.reason)
    if cancelled and not isinstance(error, asyncio.CancelledError):
        error = asyncio.CancelledError()
    if undo_errors:
        if not isinstance(error, Exception):  # a cancellation: it must go on as it is
            for e in undo_errors:
                error.add_note(f"reactorpy: undo inside a composite step failed too: {e!r}")
            raise error
        excs = [e if isinstance(e, Exception) else RuntimeError(repr(e)) for e in undo_errors]
        raise ExceptionGroup(
            "a composite step failed, and undoing its children failed too", [error, *excs]
        ) from None
    raise error


def make_recurse(
    name: str,
    child: ReactorLike,
    args: Mapping[str, Source] | None,
    until: Callable[[Any], Any] | None,
    max_iterations: int | None,
    options: dict[str, Any],
) -> CompositeStep:
    """The step behind ``reactor.recurse``."""
    check_reactor("recurse", name, child)
    if until is None and max_iterations is None:
        raise DefinitionError(
            f"recurse {name!r}: give until= (a predicate on each result), max_iterations=, "
            "or both, so that it ends."
        )
    if until is not None and not callable(until):
        raise DefinitionError(f"recurse {name!r}: until= must be callable, got {until!r}.")
    if max_iterations is not None and (
        not isinstance(max_iterations, int)
        or isinstance(max_iterations, bool)
        or max_iterations < 1
    ):
        raise DefinitionError(
            f"recurse {name!r}: max_iterations must be an int >= 1, got {max_iterations!r}."
        )
    wiring = wiring_for(child, args)
    needs = list(child.inputs)

    async def loop(children: ChildRuns, inputs: dict[str, Any]) -> Any:
        while True:
            value = await children.run_child(child, inputs, f"[{children.count}].")
            if until is not None:
                done = until(value)
                if inspect.isawaitable(done):
                    done = await done
                if done:
                    return value
            if max_iterations is not None and children.count >= max_iterations:
                return value
            if not isinstance(value, Mapping) or not set(needs) <= value.keys():
                missing = (
                    f" (missing {sorted(set(needs) - value.keys())!r})."
                    if isinstance(value, Mapping)
                    else "."
                )
                raise TypeError(
                    f"recurse {name!r}: iteration {children.count - 1} of {child.name!r} "
                    f"returned {type(value).__name__}; to go on it must return a mapping with "
                    f"the child's inputs {needs!r}{missing}"
                )
            inputs = {k: value[k] for k in needs}

    async def call(scope: ChildScope, arguments: dict[str, Any]) -> Any:
        children = ChildRuns(scope)
        return await children.settle(loop(children, {k: arguments[k] for k in needs}))

    return CompositeStep(name, needs, call, {"repeated": child}, args=wiring, **options)


def make_around(
    name: str,
    child: ReactorLike,
    wrapper: Callable[..., Awaitable[Any]],
    args: Mapping[str, Source] | None,
    options: dict[str, Any],
) -> CompositeStep:
    """The step behind ``reactor.around``."""
    check_reactor("around", name, child)
    if not callable(wrapper) or not is_async_callable(wrapper):
        raise DefinitionError(
            f"around {name!r}: the wrapper must be an async function "
            f"(async def wrapper(run_child, inputs): ...), got {wrapper!r}."
        )
    wiring = wiring_for(child, args)
    needs = list(child.inputs)

    async def call(scope: ChildScope, arguments: dict[str, Any]) -> Any:
        children = ChildRuns(scope)

        async def run_inner(inputs: Mapping[str, Any] | None = None) -> Any:
            if inputs is None:
                given = {k: arguments[k] for k in needs}
            else:  # the wrapper's own: missing or unknown ones are an InputError
                given = child._inputs(child.plan(), inputs)
            return await children.run_child(child, given, "")

        return await children.settle(wrapper(run_inner, {k: arguments[k] for k in needs}))

    return CompositeStep(name, needs, call, {"wrapped": child}, args=wiring, **options)
