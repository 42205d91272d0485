"""Composite steps: compose, map, switch, and steps added at run time (`NewSteps`).

Owns: `CompositeStep` and how a child run is started from a parent run: it shares the
parent's limiter, middleware and context, its steps' events are named ``parent.child``, and
on success its undo records join the parent's undo stack as one contiguous unit, so a later
failure of the parent undoes the child's steps newest first. A composite step holds no limiter
slot while its children run, so nesting cannot deadlock.
Must not import: the CLI.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from ._arguments import Input, NameRef, Result, Source
from ._checkpoint import Checkpoint, UndoRecord
from ._errors import DefinitionError, Halt, Halted
from ._executor import _YIELD_EVERY, _InContext
from ._step import NewSteps, Step, check_options, is_async_callable

if TYPE_CHECKING:
    from ._executor import Run
    from ._reactor import Reactor

__all__ = ["CompositeStep", "make_compose", "make_map", "make_switch", "run_new_steps"]

_ITEMS = "_items"
_ON = "_on"


def _signature_fn(name: str, params: Sequence[str]) -> Callable[..., Any]:
    """A placeholder function whose signature names the composite's wired parameters."""

    async def composite(**kwargs: Any) -> Any:  # pragma: no cover - never called directly
        raise TypeError(f"composite step {name!r} runs only inside a reactor")

    composite.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in params]
    )
    composite.__name__ = name
    composite.__qualname__ = name
    return composite


class CompositeStep(Step[..., Any]):
    """A step that runs other steps or reactors (made by compose, map and switch)."""

    composite = True

    def __init__(
        self,
        name: str,
        params: Sequence[str],
        call: Callable[[Run, int, dict[str, Any]], Any],
        children: dict[str, Reactor],
        args: Mapping[str, Source] | None = None,
        **options: Any,
    ) -> None:
        check_options(options, f"Composite step {name!r}")
        for bad in ("executor", "async_"):
            if bad in options:
                raise DefinitionError(f"Composite step {name!r} does not take {bad}=.")
        super().__init__(_signature_fn(name, params), name=name, args=args, **options)
        self.call = call
        self.children = children
        # For a child that halted inside this step (its entry in `Checkpoint.inner`): the
        # child reactor, its checkpoint and the label its steps are named with.
        self.halted_child: Callable[[Any], tuple[Reactor, Checkpoint, str]] = _no_inner

    @property
    def has_features(self) -> bool:
        return True


def _no_inner(inner: Any) -> tuple[Reactor, Checkpoint, str]:  # pragma: no cover
    raise AssertionError("only compose and switch keep a halted child")


def child_reactor(unit: Step[..., Any] | Reactor) -> Reactor:
    """The reactor to run for `unit`: itself, or a one-step reactor around a step.

    A step's parameters wired by name become the child's inputs, in order. So do the
    inputs and results its own ``args=`` name (``rp.Result("outer", "id")``): the child gets
    an input of that name, which the composite wires from this reactor by name, and the
    path and transform stay on the step (`outer_sources` lists those inputs).
    """
    from ._reactor import Reactor

    if isinstance(unit, Reactor):
        return unit
    if not isinstance(unit, Step):
        raise DefinitionError(f"Expected a Step or a Reactor, got {unit!r}.")
    cached = getattr(unit, "_as_reactor", None)
    if cached is not None and cached[0] == unit.version:
        return cached[1]  # type: ignore[no-any-return]
    wired = [p.name for p in unit.params if not p.is_context and p.name not in unit.args]
    args: dict[str, Source] = {p: Input(p) for p in wired}
    extra: list[str] = []
    for param, source in unit.args.items():
        if isinstance(source, Result):
            outer, path = source.step, source.path
        elif isinstance(source, Input):
            outer, path = source.name, source.path
        else:
            continue
        if outer not in wired and outer not in extra:
            extra.append(outer)
        args[param] = Input(outer, *path, transform=source.transform)
    r = Reactor(unit.name, inputs=[*wired, *extra], returns=unit.name)
    r.add(unit.evolve(args=args)._replace(wait_for=()))
    r.outer_sources = tuple(extra)  # type: ignore[attr-defined]
    r.outer_wait_for = unit.wait_for  # type: ignore[attr-defined]
    unit.__dict__["_as_reactor"] = (unit.version, r)
    return r


def _outer(child: Reactor, attribute: str) -> tuple[str, ...]:
    """What `child_reactor` noted on a step's one-step reactor (nothing for a reactor)."""
    return tuple(getattr(child, attribute, ()))


def _with_wait_for(options: dict[str, Any], children: Iterable[Reactor | None]) -> dict[str, Any]:
    """The composite's options with the ``wait_for`` of the steps it runs added: a step in
    a branch or a map element waits for steps of this reactor through its composite."""
    extra = [w for c in children if c is not None for w in _outer(c, "outer_wait_for")]
    if not extra:
        return options
    own = options.get("wait_for", ())
    own = (own,) if isinstance(own, str) else tuple(own)
    return {**options, "wait_for": (*own, *(w for w in extra if w not in own))}


async def run_child(
    run: Run,
    i: int,
    reactor: Reactor,
    inputs: dict[str, Any],
    label: str,
    *,
    checkpoint: Any = None,
) -> tuple[Any, list[UndoRecord]]:
    """Run `reactor` as a child of step i of `run`; returns its result and undo records."""
    from ._executor import Run as RunType

    plan = reactor.plan()
    child = RunType(
        reactor,
        plan,
        inputs,
        context=run.data,
        async_=run.async_,
        # One step at a time: the child gets its own one slot, under the caller's limiter.
        limiter=run.limiter if run.async_ else run.outer_limiter,
        timeout=None,
        grace=run.grace,
        middleware=run.mw,
        prefix=f"{run.names[i]}.{label}" if label else f"{run.names[i]}.",
        parent=run.run_id,
        checkpoint=checkpoint,
        executor=run.default_executor,
    )
    try:
        value = await child.execute()
    except Halted as halted:
        # What the halted child completed, for composites that cannot resume inside it
        # (map, NewSteps): they undo it, and run it again on resume.
        records = _parent_records(run, i, plan, child, label, halted=True)
        halted.undo_records = records  # type: ignore[attr-defined]
        raise
    return value, _parent_records(run, i, plan, child, label)


def _parent_records(
    run: Run, i: int, plan: Any, child: Run, label: str, halted: bool = False
) -> list[UndoRecord]:
    """The child's undo records, named and called as records of the parent run, with the
    route to each step from the parent's reactor (for a checkpoint loaded from JSON); for a
    child that `halted`, those of its own children that halted inside it too."""
    composite = run.plan.order[i]
    key = _child_key(run.plan.steps[i], child.reactor)
    records = []
    for rec in child.undo_records(halted):
        undo, inner = rec.undo, rec.route
        if undo is None:  # a step of the child itself
            undo, inner = plan.steps[plan.index[rec.step]].undo_callback, (rec.step,)
        route = None if key is None or inner is None else (composite, key, *inner)
        step_name = f"{composite}.{label}{rec.step}"
        records.append(UndoRecord(step_name, rec.value, rec.arguments, undo, route))
    return records


def _child_key(step: Step[..., Any], reactor: Reactor) -> str | None:
    """The key of `reactor` among the children of composite `step` (None: a reactor the
    step made while running, from `NewSteps`)."""
    for key, child in getattr(step, "children", {}).items():
        if child is reactor:
            return str(key)
    return None


def _wiring_for(reactor: Reactor, args: Mapping[str, Source] | None) -> dict[str, Source]:
    args = dict(args or {})
    unknown = set(args) - set(reactor.inputs)
    if unknown:
        raise DefinitionError(
            f"args names {sorted(unknown)!r}, which are not inputs of reactor "
            f"{reactor.name!r}; its inputs: {list(reactor.inputs)!r}."
        )
    return args


def make_compose(
    name: str, child: Reactor, args: Mapping[str, Source] | None, options: dict[str, Any]
) -> CompositeStep:
    """The step behind ``reactor.compose``."""
    from ._reactor import Reactor

    if not isinstance(child, Reactor):
        raise DefinitionError(f"compose({name!r}, ...) takes a Reactor, got {child!r}.")
    wiring = _wiring_for(child, args)

    async def call(run: Run, i: int, arguments: dict[str, Any]) -> Any:
        inner = run.inner.pop(name, None)
        try:
            value, records = await run_child(
                run, i, child, {k: arguments[k] for k in child.inputs}, "", checkpoint=inner
            )
        except Halted as halted:
            run.child_halted(i, name, halted.checkpoint, halted.undo_records)  # type: ignore[attr-defined]
            raise Halt(halted.reason) from None
        run.extra_undo[i] = records
        return value

    step = CompositeStep(name, list(child.inputs), call, {name: child}, args=wiring, **options)
    step.halted_child = lambda inner: (child, inner, "")
    return step


class _ChildRuns:
    """The child runs one composite step makes (recurse, around): their undo records are
    kept together, and undone together, newest first, if the step fails or halts. Such a
    step cannot be resumed inside a child: on resume it runs again. Child runs still going
    when the step's body ends (an around wrapper that gathered two, one of which failed)
    are cancelled: none outlives the step."""

    def __init__(self, run: Run, i: int) -> None:
        self.run = run
        self.i = i
        self.records: list[UndoRecord] = []
        self.count = 0
        self.running: set[asyncio.Task[Any]] = set()  # tasks inside run_child

    async def run_child(self, reactor: Reactor, inputs: dict[str, Any], label: str) -> Any:
        task = asyncio.current_task()
        assert task is not None
        self.running.add(task)
        try:
            value, records = await run_child(self.run, self.i, reactor, inputs, label)
        except Halted as halted:
            self.records.extend(halted.undo_records)  # type: ignore[attr-defined]
            raise
        finally:
            self.running.discard(task)
        self.count += 1
        self.records.extend(records)
        return value

    async def _stop_stragglers(self) -> None:
        """Cancel child runs the body left going; each undoes what it completed."""
        me = asyncio.current_task()
        others = [t for t in self.running if t is not me and not t.done()]
        for task in others:
            task.cancel()
        if others:
            await asyncio.wait(others)

    async def settle(self, body: Awaitable[Any]) -> Any:
        """Await the step's `body`; keep the records if it succeeds, else undo them."""
        run = self.run
        try:
            value = await body
        except Halted as halted:
            await run._shielded(self._stop_stragglers())
            await run._shielded(_undo_records(run, self.records))
            raise Halt(halted.reason) from None
        except BaseException as exc:
            await run._shielded(self._stop_stragglers())
            await _undo_and_reraise(run, self.records, exc)
        await run._shielded(self._stop_stragglers())
        run.extra_undo.setdefault(self.i, []).extend(self.records)
        return value


def make_recurse(
    name: str,
    child: Reactor,
    args: Mapping[str, Source] | None,
    until: Callable[[Any], Any] | None,
    max_iterations: int | None,
    options: dict[str, Any],
) -> CompositeStep:
    """The step behind ``reactor.recurse``."""
    from ._reactor import Reactor

    if not isinstance(child, Reactor):
        raise DefinitionError(f"recurse({name!r}, ...) takes a Reactor, got {child!r}.")
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
    wiring = _wiring_for(child, args)
    needs = list(child.inputs)

    async def loop(children: _ChildRuns, inputs: dict[str, Any]) -> Any:
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
                raise TypeError(
                    f"recurse {name!r}: iteration {children.count - 1} of {child.name!r} "
                    f"returned {type(value).__name__}; to go on it must return a mapping with "
                    f"the child's inputs {needs!r}"
                    + (
                        f" (missing {sorted(set(needs) - value.keys())!r})."
                        if isinstance(value, Mapping)
                        else "."
                    )
                )
            inputs = {k: value[k] for k in needs}

    async def call(run: Run, i: int, arguments: dict[str, Any]) -> Any:
        children = _ChildRuns(run, i)
        return await children.settle(loop(children, {k: arguments[k] for k in needs}))

    return CompositeStep(name, needs, call, {"repeated": child}, args=wiring, **options)


def make_around(
    name: str,
    child: Reactor,
    wrapper: Callable[..., Awaitable[Any]],
    args: Mapping[str, Source] | None,
    options: dict[str, Any],
) -> CompositeStep:
    """The step behind ``reactor.around``."""
    from ._reactor import Reactor

    if not isinstance(child, Reactor):
        raise DefinitionError(f"around({name!r}, ...) takes a Reactor, got {child!r}.")
    if not callable(wrapper) or not is_async_callable(wrapper):
        raise DefinitionError(
            f"around {name!r}: the wrapper must be an async function "
            f"(async def wrapper(run_child, inputs): ...), got {wrapper!r}."
        )
    wiring = _wiring_for(child, args)
    needs = list(child.inputs)

    async def call(run: Run, i: int, arguments: dict[str, Any]) -> Any:
        children = _ChildRuns(run, i)

        async def run_inner(inputs: Mapping[str, Any] | None = None) -> Any:
            if inputs is None:
                given = {k: arguments[k] for k in needs}
            else:  # the wrapper's own: missing or unknown ones are an InputError
                given = child._inputs(child.plan(), inputs)
            return await children.run_child(child, given, "")

        async def body() -> Any:
            out = wrapper(run_inner, {k: arguments[k] for k in needs})
            if not inspect.isawaitable(out):
                raise TypeError(
                    f"around {name!r}: the wrapper must be an async function (it returned "
                    f"{type(out).__name__})."
                )
            return await out

        return await children.settle(body())

    return CompositeStep(name, needs, call, {"wrapped": child}, args=wiring, **options)


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


def make_map(
    name: str,
    over: Source | str,
    unit: Step[..., Any] | Reactor,
    as_: str | None,
    batch_size: int,
    options: dict[str, Any],
) -> CompositeStep:
    """The step behind ``reactor.map``."""
    child = child_reactor(unit)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise DefinitionError(f"map {name!r}: batch_size must be an int >= 1.")
    if as_ is None:
        by_name = [p for p in child.inputs if p not in _outer(child, "outer_sources")]
        if len(by_name) != 1:
            raise DefinitionError(
                f"map {name!r}: {child.name!r} takes {by_name!r}; "
                "say which one receives the element with as_=..."
            )
        as_ = by_name[0]
    elif as_ not in child.inputs:
        raise DefinitionError(
            f"map {name!r}: as_={as_!r} is not a parameter of {child.name!r}; "
            f"choose one of {list(child.inputs)!r}."
        )
    element = as_
    others = [p for p in child.inputs if p != element]
    source = over if not isinstance(over, str) else _by_name(over)
    args: dict[str, Source] = {_ITEMS: source}
    args.update(options.pop("args", None) or {})

    async def call(run: Run, i: int, arguments: dict[str, Any]) -> Any:
        shared = {k: arguments[k] for k in others}
        plain = _plain_step(unit)  # at run time: callbacks may have been added since
        if plain is not None and (plain.is_async or run.default_executor is None) and not run.emit:
            return await _map_plain(run, plain, element, shared, arguments[_ITEMS], batch_size)
        results: list[Any] = []
        records: list[UndoRecord] = []
        index = 0
        try:
            async for batch in _batches(arguments[_ITEMS], batch_size):
                outcomes = await _run_batch(run, i, child, element, shared, batch, index)
                for value, recs in outcomes:
                    results.append(value)
                    records.extend(recs)
                index += len(batch)
        except BaseException as exc:
            await _undo_and_reraise(run, records, exc)  # the batches before this one
        run.extra_undo[i] = records
        return results

    options = _with_wait_for(options, [child])
    return CompositeStep(name, [_ITEMS, *others], call, {name: child}, args=args, **options)


def _plain_step(unit: Step[..., Any] | Reactor) -> Step[..., Any] | None:
    """The step map may call directly: a plain step, or the one plain step of a reactor
    that only passes its inputs to it by name and returns its result."""
    if isinstance(unit, Step):
        return unit if _is_plain(unit) and not unit.args else None  # args: wired by a child
    steps = list(unit.steps.values())
    if len(steps) != 1 or unit.middleware or unit.executor is not None or unit.input_transforms:
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


async def _map_plain(
    run: Run,
    unit: Step[..., Any],
    element: str,
    shared: dict[str, Any],
    items: Any,
    batch_size: int,
) -> list[Any]:
    """map's fast path: call a plain step per element: inline in `_EagerBatch` helpers
    with no limiter, else one task each, under the limiter."""
    fn = unit.fn
    # One step at a time (async_=False): elements one after another; the run's own
    # one-slot limiter is held by the map step itself, the caller's is honoured.
    limiter = run.limiter if run.async_ else run.outer_limiter
    key = unit.concurrency_key
    loop = asyncio.get_running_loop()
    results: list[Any] = []

    if not unit.is_async:
        async for batch in _batches(items, batch_size):
            for item in batch:
                results.append(run.base_ctx.copy().run(fn, **shared, **{element: item}))
        return results

    if limiter is None and run.async_:
        async for batch in _batches(items, batch_size):
            results.extend(await _EagerBatch(run, fn, element, shared, batch).gather())
        return results

    async def one(item: Any) -> Any:
        if limiter is None:
            return await fn(**shared, **{element: item})
        await limiter.acquire(key)
        try:
            return await fn(**shared, **{element: item})
        finally:
            limiter.release_and_wake(key)

    if not run.async_:
        async for batch in _batches(items, batch_size):
            for item in batch:
                results.append(await loop.create_task(one(item), context=run.base_ctx.copy()))
        return results

    async for batch in _batches(items, batch_size):
        tasks = [loop.create_task(one(item), context=run.base_ctx.copy()) for item in batch]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            # On an element's error (or our cancellation) the rest of the batch is cancelled;
            # either way no element task outlives the map.
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks)
        for t in tasks:
            if not t.cancelled() and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
        results.extend(t.result() for t in tasks)
    return results


class _EagerBatch:
    """One batch of map's fast path with no limiter: elements started inline, one task
    between them while they finish without suspending (as `Run._work_batch` does for steps).

    A helper task starts the elements one after another, each in a fresh copy of the
    caller's context. When one suspends, that helper keeps driving it (so
    ``asyncio.current_task()`` and ``asyncio.timeout`` inside it see the task that started
    it) and a new helper takes the rest. The first error cancels every helper, and so the
    elements they drive; the map then raises it. Results keep the elements' order.
    """

    __slots__ = ("done", "element", "error", "fn", "helpers", "items", "left", "results", "run")

    def __init__(
        self,
        run: Run,
        fn: Callable[..., Any],
        element: str,
        shared: dict[str, Any],
        items: list[Any],
    ) -> None:
        self.run = run
        self.fn = fn if not shared else functools.partial(fn, **shared)
        self.element = element
        self.items = items
        self.results: list[Any] = [None] * len(items)
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
            await self._stop()
            raise
        if self.error is not None:
            await self._stop()
            raise self.error
        return self.results

    def _start(self, k: int) -> None:
        self.helpers[k] = asyncio.get_running_loop().create_task(
            self._helper(k), context=self.run.base_ctx.copy()
        )

    async def _stop(self) -> None:
        """Cancel the helpers still running and wait for them (no element outlives the map)."""
        helpers = [t for t in self.helpers.values() if t is not asyncio.current_task()]
        for t in helpers:
            t.cancel()
        if helpers:
            await asyncio.wait(helpers)

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
            if not self.done.done():
                self.done.set_result(None)

    def _finished(self, k: int, value: Any) -> None:
        self.results[k] = value
        self.left -= 1
        if self.left == 0 and not self.done.done():
            self.done.set_result(None)

    async def _helper(self, k: int) -> None:
        key, n, items, base = k, len(self.items), self.items, self.run.base_ctx
        fn, element = self.fn, self.element
        try:
            while k < n and self.error is None:
                ctx = base.copy()
                try:
                    coro = fn(**{element: items[k]})
                    yielded = ctx.run(coro.send, None)
                except StopIteration as stop:
                    self._finished(k, stop.value)
                except BaseException as exc:
                    self._fail(exc)
                    return
                else:  # it waits: this helper drives it, a new one takes the rest
                    if k + 1 < n:
                        self._start(k + 1)
                    try:
                        value = await _InContext(coro, ctx, yielded)
                    except BaseException as exc:
                        self._fail(exc)
                        return
                    self._finished(k, value)
                    return
                k += 1
                if (k - key) % _YIELD_EVERY == 0 and k < n:
                    await asyncio.sleep(0)  # a long batch still lets others run
        except asyncio.CancelledError:
            self._fail(asyncio.CancelledError())  # (only cancelled by _stop, after an error)
        finally:
            del self.helpers[key]


async def _run_batch(
    run: Run,
    i: int,
    child: Reactor,
    element: str,
    shared: dict[str, Any],
    batch: list[Any],
    start: int,
) -> list[tuple[Any, list[UndoRecord]]]:
    if not run.async_:  # one step at a time: one element after another
        done: list[tuple[Any, list[UndoRecord]]] = []
        for k, item in enumerate(batch):
            try:
                done.append(
                    await run_child(run, i, child, {**shared, element: item}, f"[{start + k}].")
                )
            except BaseException as exc:
                records = [r for _, recs in done for r in recs]
                records.extend(getattr(exc, "undo_records", ()))
                await run._shielded(_undo_records(run, records))
                if isinstance(exc, Halted):
                    raise Halt(exc.reason) from None
                raise
        return done
    tasks = [
        asyncio.ensure_future(
            run_child(run, i, child, {**shared, element: item}, f"[{start + k}].")
        )
        for k, item in enumerate(batch)
    ]
    cancelled = False
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except asyncio.CancelledError:
        cancelled = True
    if not cancelled and all(t.done() and t.exception() is None for t in tasks):
        return [t.result() for t in tasks]
    # An element failed or halted, or the map was cancelled: stop the rest of the batch, then
    # undo every element that completed (a halted element's completed steps too).
    for t in tasks:
        t.cancel()
    while not all(t.done() for t in tasks):
        try:
            await asyncio.wait(tasks)
        except asyncio.CancelledError:
            cancelled = True
    errors = [e for t in tasks if not t.cancelled() and (e := t.exception()) is not None]
    records = [
        r for t in tasks if not t.cancelled() and t.exception() is None for r in t.result()[1]
    ]
    for e in errors:
        if isinstance(e, Halted):
            records.extend(getattr(e, "undo_records", ()))
    await run._shielded(_undo_records(run, records))
    if cancelled:
        raise asyncio.CancelledError
    failures = [e for e in errors if not isinstance(e, Halted)]
    if not failures:
        raise Halt(errors[0].reason)  # type: ignore[attr-defined]
    first = failures[0]
    for other in failures[1:]:
        first.add_note(f"reactorpy: another element of the map failed too: {other!r}")
    raise first


async def _undo_and_reraise(run: Run, records: list[UndoRecord], error: BaseException) -> NoReturn:
    """Undo what a composite's children completed, then raise the `error` that stopped
    it; if undoing fails too, both are raised, in one group (the step's error stays)."""
    try:
        await run._shielded(_undo_records(run, records))
    except ExceptionGroup as undo_failed:
        if not isinstance(error, Exception):  # a cancellation: it must go on as it is
            for e in undo_failed.exceptions:
                error.add_note(f"reactorpy: undo inside a composite step failed too: {e!r}")
            raise error from None
        raise ExceptionGroup(
            "a composite step failed, and undoing its children failed too",
            [error, *undo_failed.exceptions],
        ) from None
    raise error


async def _undo_records(run: Run, records: list[UndoRecord]) -> None:
    """Undo records a composite collected before it failed (newest first)."""
    errors: list[Exception] = []
    for record in reversed(records):
        err = await run._undo_one(record)
        if err is not None:
            errors.append(err if isinstance(err, Exception) else RuntimeError(repr(err)))
    if errors:
        raise ExceptionGroup("undo failed inside a composite step", errors)


def _by_name(name: str) -> Source:
    return NameRef(name)


def make_switch(
    name: str,
    on: Source | str,
    cases: Iterable[tuple[Callable[[Any], Any], Step[..., Any] | Reactor]],
    default: Step[..., Any] | Reactor | None,
    options: dict[str, Any],
) -> CompositeStep:
    """The step behind ``reactor.switch``."""
    branches = []
    for case in cases:
        if not isinstance(case, tuple | list) or len(case) != 2 or not callable(case[0]):
            raise DefinitionError(
                f"switch {name!r}: each case is a (predicate, step_or_reactor) pair, got "
                f"{case!r}; write cases=[(lambda v: v > 0, positive_step), ...]."
            )
        branches.append((case[0], child_reactor(case[1])))
    fallback = child_reactor(default) if default is not None else None
    params: list[str] = []
    for child in [b for _, b in branches] + ([fallback] if fallback else []):
        for p in child.inputs:
            if p not in params:
                params.append(p)
    args: dict[str, Source] = {_ON: on if not isinstance(on, str) else _by_name(on)}
    args.update(options.pop("args", None) or {})

    candidates = [b for _, b in branches] + [fallback]

    async def call(run: Run, i: int, arguments: dict[str, Any]) -> Any:
        inner = run.inner.pop(name, None)
        if inner is not None:  # resuming: continue inside the branch that halted
            index, checkpoint = inner
        else:
            value = arguments[_ON]
            index = next((k for k, (pred, _) in enumerate(branches) if pred(value)), len(branches))
            checkpoint = None
        chosen = candidates[index]
        if chosen is None:
            return None
        try:
            result, records = await run_child(
                run,
                i,
                chosen,
                {k: arguments[k] for k in chosen.inputs},
                f"{chosen.name}.",
                checkpoint=checkpoint,
            )
        except Halted as halted:
            records = halted.undo_records  # type: ignore[attr-defined]
            run.child_halted(i, name, (index, halted.checkpoint), records)
            raise Halt(halted.reason) from None
        run.extra_undo[i] = records
        return result

    children = {f"{k}: {b.name}": b for k, (_, b) in enumerate(branches)}
    if fallback is not None:
        children[f"default: {fallback.name}"] = fallback

    def halted_child(inner: tuple[int, Checkpoint]) -> tuple[Reactor, Checkpoint, str]:
        index, checkpoint = inner
        chosen = candidates[index]
        assert chosen is not None  # a branch that halted ran
        return chosen, checkpoint, f"{chosen.name}."

    options = _with_wait_for(options, candidates)
    step = CompositeStep(name, [_ON, *params], call, children, args=args, **options)
    step.halted_child = halted_child
    return step


async def run_new_steps(run: Run, i: int, new: NewSteps) -> Any:
    """Plan and run the steps a step returned; loops while the replacement returns more."""
    from ._reactor import Reactor

    own = run.plan.order[i]
    while True:
        for s in new.steps:
            if not isinstance(s, Step):
                raise DefinitionError(f"NewSteps from {own!r}: {s!r} is not a Step.")
        available = run.available_values(i)
        names = {s.name for s in new.steps}
        inputs = {k: v for k, v in available.items() if k not in names}
        replace = own in names
        r = Reactor(
            f"{run.plan.reactor}.{own}", inputs=list(inputs), returns=own if replace else None
        )
        for s in new.steps:
            # Results of the running reactor reach the new steps as inputs of their own.
            outer = {
                p: Input(src.step, *src.path, transform=src.transform)
                for p, src in s.args.items()
                if isinstance(src, Result) and src.step not in names
            }
            r.add(s.evolve(args=outer) if outer else s)
        try:
            value, records = await run_child(run, i, r, inputs, "")
        except Halted as halted:
            # New steps cannot be resumed inside (they are made by the running step): undo
            # what they completed; on resume the step runs again and adds them again.
            await run._shielded(_undo_records(run, halted.undo_records))  # type: ignore[attr-defined]
            raise Halt(halted.reason) from None
        run.extra_undo.setdefault(i, []).extend(records)
        if not replace:
            return new.value
        if type(value) is not NewSteps:
            return value
        new = value
