"""map: a step or reactor per element of a collection, batch by batch.

Owns: the step behind ``reactor.map``. Elements run at most ``batch_size`` at a time under
the run's limiter; results come back in input order. When an element fails or halts, the
rest of its batch is cancelled and every completed element is undone; on resume the map
runs again. A plain step (no options, no callbacks) is called directly per element (the
fast path, started like a worker's batch: one task between elements that never wait),
unless middleware wants step events; anything else runs as a child run per element (whose
steps report their events, as every step does).
Must not import: the executor's state, the reactor module.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from .._arguments import Source
from .._checkpoint import UndoRecord
from .._errors import DefinitionError, Halt, Halted
from .._executor.attempts import as_halt, shielded
from .._executor.inline import SUSPENDED, InContext, start
from .._step import NewSteps, Step
from .base import CompositeStep, ReactorLike, by_name, child_reactor, outer, with_wait_for
from .repeat import undo_then_raise

if TYPE_CHECKING:
    from .._executor.scope import ChildScope

__all__ = ["make_map"]

_ITEMS = "_items"
_YIELD_EVERY = 64  # elements started back to back before the loop gets a turn


def not_iterable(value: Any) -> str | None:
    """What is wrong with `value` as what a map runs over, or None."""
    if isinstance(value, Iterable | AsyncIterable) and not isinstance(value, str | bytes):
        return None
    return (
        f"is {value!r:.40} ({type(value).__name__}), which map cannot run over; give it a "
        "list, or any iterable or async iterable of elements."
    )


def make_map(
    name: str,
    over: Source | str,
    unit: Step[..., Any] | ReactorLike,
    as_: str | None,
    batch_size: int,
    options: dict[str, Any],
    factory: Callable[..., Any],
    ordered: bool = True,
) -> CompositeStep:
    """The step behind ``reactor.map``; `factory` makes a step's one-step reactor;
    `ordered`: results in input order (else in the order elements finish)."""
    child = child_reactor(unit, factory)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise DefinitionError(f"map {name!r}: batch_size must be an int >= 1, got {batch_size!r}.")
    if as_ is None:
        by_names = [p for p in child.inputs if p not in outer(child, "outer_sources")]
        if len(by_names) != 1:
            raise DefinitionError(
                f"map {name!r}: {child.name!r} takes {by_names!r}; "
                "say which one receives the element with as_=..."
            )
        as_ = by_names[0]
    elif as_ not in child.inputs:
        raise DefinitionError(
            f"map {name!r}: as_={as_!r} is not a parameter of {child.name!r}; "
            f"choose one of {list(child.inputs)!r}."
        )
    element = as_
    others = [p for p in child.inputs if p != element]
    source = over if not isinstance(over, str) else by_name(over)
    args: dict[str, Source] = {_ITEMS: source}
    args.update(options.pop("args", None) or {})

    async def call(scope: ChildScope, arguments: dict[str, Any]) -> Any:
        items = arguments[_ITEMS]
        problem = not_iterable(items)
        if problem:
            raise TypeError(f"map {name!r}: what it maps over {problem}")
        shared = {k: arguments[k] for k in others}
        plain = _plain_step(unit)  # at run time: callbacks may have been added since
        if plain is None or scope.observed or not (plain.is_async or scope.executor is None):
            return await _map_children(scope, child, element, shared, items, batch_size, ordered)
        done = _Records()
        fn = _with_new_steps(scope, plain, element, shared, done, factory)
        try:
            results = await _map_plain(scope, plain, fn, element, items, batch_size, ordered)
        except BaseException as exc:
            halt = as_halt(exc) if isinstance(exc, Exception) else None
            await undo_then_raise(scope, done, Halt(halt.reason) if halt else exc)
        scope.keep(done.records)
        return results

    options = with_wait_for(options, [child])
    step = CompositeStep(name, [_ITEMS, *others], call, {name: child}, args=args, **options)
    step.input_checks = {_ITEMS: not_iterable}
    return step


def _plain_step(unit: Step[..., Any] | ReactorLike) -> Step[..., Any] | None:
    """The step map may call directly: a plain step, or the one plain step of a reactor
    that only passes its inputs to it by name and returns its result."""
    if isinstance(unit, Step):
        return unit if _is_plain(unit) and not unit.args else None  # args: wired by a child
    steps = list(unit.steps.values())
    if (
        len(steps) != 1
        or getattr(unit, "middleware", None)
        or getattr(unit, "executor", None) is not None
        or unit.input_transforms
    ):
        return None
    only = steps[0]
    wired = {p.name for p in only.params}
    if unit.returns != only.name or only.args or only.wait_for or wired != set(unit.inputs):
        return None
    return only if _is_plain(only) else None


def _is_plain(unit: Step[..., Any]) -> bool:
    """A step with no options or callbacks: map may call it directly, without a child run."""
    return (
        not unit.has_features
        and unit.undo_callback is None
        and unit.async_
        and not any(p.is_context for p in unit.params)
    )


async def _batches(items: Any, size: int) -> Any:
    """Yield lists of at most `size` elements of a sync or async iterable."""
    batch: list[Any] = []
    if isinstance(items, AsyncIterable):
        async for item in items:
            batch.append(item)
            if len(batch) >= size:
                yield batch
                batch = []
    else:
        for item in items:
            batch.append(item)
            if len(batch) >= size:
                yield batch
                batch = []
    if batch:
        yield batch


# ---------------------------------------------------------------------- child runs
async def _map_children(
    scope: ChildScope,
    child: ReactorLike,
    element: str,
    shared: dict[str, Any],
    items: Any,
    batch_size: int,
    ordered: bool,
) -> list[Any]:
    """Each element as a child run; a batch's elements concurrently (one after another
    when the run goes one step at a time)."""
    results: list[Any] = []
    done = _Records()
    index = 0
    try:
        async for batch in _batches(items, batch_size):
            labels = [f"[{index + k}]." for k in range(len(batch))]
            inputs = [{**shared, element: item} for item in batch]
            if scope.async_:
                outcomes = await _batch(scope, child, inputs, labels, done, ordered)
            else:
                outcomes = []
                for one, label in zip(inputs, labels, strict=True):
                    outcomes.append(await _one(scope, child, one, label, done))
            results.extend(outcomes)
            index += len(batch)
    except BaseException as exc:
        await undo_then_raise(scope, done, exc)  # every element completed so far
    scope.keep(done.records)
    return results


class _Records:
    """What the elements completed so far (for `undo_then_raise`)."""

    def __init__(self) -> None:
        self.records: list[UndoRecord] = []


async def _one(
    scope: ChildScope, child: ReactorLike, inputs: dict[str, Any], label: str, done: _Records
) -> Any:
    """One element's child run; a halt inside it is raised as `Halted` (records kept)."""
    ran = await scope.run_child(child, inputs, label)
    done.records.extend(ran.records)
    if ran.halted is not None:
        raise ran.halted
    return ran.value


async def _batch(
    scope: ChildScope,
    child: ReactorLike,
    inputs: list[dict[str, Any]],
    labels: list[str],
    done: _Records,
    ordered: bool,
) -> list[Any]:
    """A batch's elements at once: the first to fail or halt cancels the rest (each
    cancelled element undoes itself); the caller undoes the completed ones."""
    tasks = [
        asyncio.ensure_future(_one(scope, child, one, label, done))
        for one, label in zip(inputs, labels, strict=True)
    ]
    finished = _finish_order(tasks, ordered)
    await _settle(tasks)
    errors = [e for t in tasks if not t.cancelled() and (e := t.exception()) is not None]
    failures = [e for e in errors if not isinstance(e, Halted)]
    if failures:
        first = failures[0]
        for other in failures[1:]:
            first.add_note(f"reactorpy: another element of the map failed too: {other!r}")
        raise first
    if errors:
        raise errors[0]
    return [t.result() for t in finished]


async def _settle(tasks: list[asyncio.Task[Any]]) -> None:
    """Wait for a batch's element tasks until the first error, then cancel the rest.

    However it ends, every element task has ended when it does (waited for even if the
    map is cancelled meanwhile, again and again), and each one's error is retrieved: the
    caller raises the first, but a cancelled map raises none of them. (The map's task may
    be cancelled after its elements failed and before it woke up to look at them.)
    """
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        stopping = [t for t in tasks if not t.done()]
        for t in stopping:
            t.cancel()
        cancelled = False
        if stopping:
            _, cancelled = await shielded(asyncio.wait(stopping))
        for t in tasks:
            if not t.cancelled():
                t.exception()  # marks it retrieved
    if cancelled:
        raise asyncio.CancelledError


def _finish_order(tasks: list[asyncio.Task[Any]], ordered: bool) -> list[asyncio.Task[Any]]:
    """`tasks` in input order, or (`ordered` False) a list that fills in as they finish."""
    if ordered:
        return tasks
    finished: list[asyncio.Task[Any]] = []
    for t in tasks:
        t.add_done_callback(finished.append)
    return finished


# ---------------------------------------------------------------------- the fast path
def _with_new_steps(
    scope: ChildScope,
    unit: Step[..., Any],
    element: str,
    shared: dict[str, Any],
    done: _Records,
    factory: Callable[..., Any],
) -> Callable[..., Any]:
    """The function the fast path calls per element: the plain step's own (its other
    arguments bound), wrapped so that an element returning `rp.NewSteps` gets its new
    steps run, as a child run of the step would (what they complete goes to `done`)."""
    fn = unit.fn if not shared else functools.partial(unit.fn, **shared)

    async def new_steps(item: Any, new: NewSteps) -> Any:
        returned = unit._replace(fn=functools.partial(_returning, new), _inspected=_same(unit))
        ran = await scope.run_child(
            child_reactor(returned, factory), {**shared, element: item}, f"[{item!r}]."
        )
        done.records.extend(ran.records)
        if ran.halted is not None:
            raise ran.halted
        return ran.value

    if unit.is_async:

        async def element_async(**kwargs: Any) -> Any:
            value = await fn(**kwargs)
            if type(value) is NewSteps:
                value = await new_steps(kwargs[element], value)
            return value

        return element_async

    def element_sync(**kwargs: Any) -> Any:
        value = fn(**kwargs)
        if type(value) is NewSteps:
            return new_steps(kwargs[element], value)  # a coroutine, awaited by the caller
        return value

    return element_sync


def _returning(new: NewSteps, *_: Any, **__: Any) -> NewSteps:
    """A stand-in for a step that already returned `new` (whatever it is called with)."""
    return new


def _same(unit: Step[..., Any]) -> tuple[list[Any], bool, Any]:
    """What a step's signature inspection found, for a copy with another function."""
    return (list(unit.params), True, unit.result_type)


async def _map_plain(
    scope: ChildScope,
    unit: Step[..., Any],
    fn: Callable[..., Any],
    element: str,
    items: Any,
    batch_size: int,
    ordered: bool,
) -> list[Any]:
    """map's fast path: call a plain step per element (`fn`): with no limiter, started
    inline like a worker's batch (`_Eager`); else one task each under the limiter; one
    after another when the run goes one step at a time."""
    limiter = scope.limiter
    key = unit.concurrency_key
    results: list[Any] = []
    if not unit.is_async:
        async for batch in _batches(items, batch_size):
            for item in batch:
                value = scope.fresh_context().run(fn, **{element: item})
                results.append(await value if inspect.iscoroutine(value) else value)
        return results

    async def one(item: Any) -> Any:
        if limiter is None:
            return await fn(**{element: item})
        await limiter.acquire(key)
        try:
            return await fn(**{element: item})
        finally:
            limiter.release_and_wake(key)

    loop = asyncio.get_running_loop()
    async for batch in _batches(items, batch_size):
        if limiter is None and scope.async_:
            results.extend(await _Eager(scope, fn, element, batch, ordered).gather())
        elif not scope.async_:
            for item in batch:
                task = loop.create_task(one(item), context=scope.fresh_context())
                await _settle([task])
                results.append(task.result())
        else:
            tasks = [loop.create_task(one(item), context=scope.fresh_context()) for item in batch]
            finished = _finish_order(tasks, ordered)
            await _settle(tasks)
            for t in tasks:
                if not t.cancelled() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
            results.extend(t.result() for t in finished)
    return results


class _Eager:
    """One batch of the fast path with no limiter: elements started by helper tasks one
    after another, each in a fresh context (`inline.start`, as a scheduler worker starts
    a batch of steps). One that suspends keeps its helper (`inline.InContext`), and a new
    helper takes the rest. The first error cancels every helper; the map raises it."""

    __slots__ = (
        "done",
        "element",
        "error",
        "fn",
        "helpers",
        "items",
        "left",
        "ordered",
        "results",
        "scope",
    )

    def __init__(
        self,
        scope: ChildScope,
        fn: Callable[..., Any],
        element: str,
        items: list[Any],
        ordered: bool,
    ) -> None:
        self.scope = scope
        self.fn = fn
        self.element = element
        self.items = items
        self.ordered = ordered
        self.results: list[Any] = [None] * len(items) if ordered else []
        self.left = len(items)
        self.error: BaseException | None = None
        self.helpers: dict[int, asyncio.Task[None]] = {}
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def gather(self) -> list[Any]:
        """Run the batch; return its results in order, or raise its first error."""
        self._start(0)
        try:
            await self.done
        except asyncio.CancelledError:
            await asyncio.shield(self._stop())
            raise
        if self.error is not None:
            await self._stop()
            raise self.error
        return self.results

    def _start(self, k: int) -> None:
        self.helpers[k] = asyncio.get_running_loop().create_task(
            self._helper(k), context=self.scope.fresh_context()
        )

    async def _stop(self) -> None:
        """Cancel the helpers still running and wait for them (no element outlives it)."""
        helpers = [t for t in self.helpers.values() if t is not asyncio.current_task()]
        for t in helpers:
            t.cancel()
        if helpers:
            await asyncio.wait(helpers)

    def _ended(self, k: int, value: Any, error: BaseException | None) -> None:
        if error is not None:
            if self.error is None:
                self.error = error
        else:
            if self.ordered:
                self.results[k] = value
            else:
                self.results.append(value)
            self.left -= 1
        if (error is not None or not self.left) and not self.done.done():
            self.done.set_result(None)

    async def _helper(self, k: int) -> None:
        first, n, items = k, len(self.items), self.items
        fn, element = self.fn, self.element
        try:
            while k < n and self.error is None:
                ctx = self.scope.fresh_context()
                try:
                    coro = fn(**{element: items[k]})
                    out = start(coro, ctx)
                    if type(out) is SUSPENDED:  # it waits: a new helper takes the rest
                        if k + 1 < n:
                            self._start(k + 1)
                        out = await InContext(coro, ctx, out.yielded)
                        self._ended(k, out, None)
                        return
                except BaseException as exc:
                    self._ended(k, None, exc)
                    return
                self._ended(k, out, None)
                k += 1
                if (k - first) % _YIELD_EVERY == 0 and k < n:
                    await asyncio.sleep(0)  # a long batch still lets others run
        except asyncio.CancelledError:  # only cancelled by _stop, after an error
            self._ended(k, None, asyncio.CancelledError())
        finally:
            del self.helpers[first]
