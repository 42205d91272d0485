"""Helpers for testing reactors (and code that uses them) without sleeping.

Owns: `VirtualClockLoop` / `run_virtual` (an event loop whose clock jumps ahead whenever
everything is waiting on a timer), the event `Recorder` middleware with its partial-order
assertions, `override` (a copy of a reactor with some steps swapped for fakes), and the
ready-made fakes `returns` and `raises`.
Must not import: the executor's internals.

A test in three moves: swap the slow or external steps for fakes, record the run's events,
and assert on their order rather than on wall time::

    from reactorpy.testing import Recorder, override, returns, run_virtual

    def test_fetches_overlap():
        fast = override(user_data, {"fetch_profile": returns({"id": 1, "name": "x"})})
        rec = Recorder()
        run_virtual(fast.run({"user_id": 1}, middleware=[rec]))
        rec.assert_overlap("fetch_preferences", "fetch_activity")
        rec.assert_before("fetch_activity", "aggregate_data")

With pytest-asyncio 1.4 or newer (the version that added the hook; older versions stop with
``PluginValidationError: unknown hook``), run ``async def`` tests on the virtual clock by
returning it from the ``pytest_asyncio_loop_factories`` hook in ``conftest.py``; every
``asyncio.sleep``, ``timeout``, ``backoff`` and ``run(timeout=...)`` then takes no real time
and ``asyncio.get_running_loop().time()`` reads exact virtual seconds::

    import reactorpy.testing

    def pytest_asyncio_loop_factories(config, item):
        return {"virtual": reactorpy.testing.VirtualClockLoop}

Every ``async def`` test then runs once per factory returned (here, once). Without
pytest-asyncio, or on an older one, call ``run_virtual(coro)`` from a plain test function.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, Protocol, TypeVar, cast

from ._arguments import Result
from ._errors import UnknownReferenceError
from ._events import Event, RunInfo
from ._plan import wire
from ._reactor import Reactor
from ._step import Step, _Hooks

__all__ = [
    "Fake",
    "Recorder",
    "VirtualClockLoop",
    "override",
    "raises",
    "returns",
    "run_virtual",
]

T = TypeVar("T")
V = TypeVar("V")
T_co = TypeVar("T_co", covariant=True)


class Fake(Protocol[T_co]):
    """The type of the fakes `returns` and `raises` make: an ``async def`` step function
    that takes any arguments by name, and records them.

    Attributes:
        calls: the keyword arguments of each call, in order.
    """

    calls: list[dict[str, Any]]

    def __call__(self, **kwargs: Any) -> Coroutine[Any, Any, T_co]: ...


class _JumpingSelector(selectors.DefaultSelector):
    """A selector that, instead of blocking until a timer is due, advances the loop's clock."""

    def __init__(self, loop: VirtualClockLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        ready: list[tuple[Any, int]] = super().select(0)
        if ready or timeout is None or timeout <= 0:
            if not ready and timeout is None:
                # Nothing scheduled at all: wait for real I/O (threads calling back, signals).
                ready = super().select(None)
            return ready
        self._loop._now += timeout
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop on a virtual clock: ``loop.time()`` starts at 0 and jumps forward to the
    next timer whenever nothing else is ready, so ``asyncio.sleep(60)`` returns at once while
    the loop's time advances by exactly 60 seconds.

    Work in threads or processes is not waited for before the clock jumps: keep tests on a
    virtual clock to the event loop.

    Anything that reads time through the loop (``asyncio.sleep``, ``asyncio.timeout``,
    ``loop.call_later``, reactorpy's backoff, timeouts and halts) sees the virtual clock.
    """

    def __init__(self) -> None:
        self._now = 0.0
        super().__init__(_JumpingSelector(self))

    def time(self) -> float:
        return self._now


def run_virtual(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion on a fresh `VirtualClockLoop` (like ``asyncio.run``).

    >>> async def nap():
    ...     loop = asyncio.get_running_loop()
    ...     await asyncio.sleep(3600)
    ...     return loop.time()
    >>> run_virtual(nap())
    3600.0
    """
    with asyncio.Runner(loop_factory=VirtualClockLoop) as runner:
        return runner.run(main)


# ---------------------------------------------------------------------------------- Recorder
_ENDS = frozenset({"step_complete", "step_error", "step_halt", "compensate_continue", "guard_skip"})


class Recorder:
    """Middleware that records every event of the runs it is given to, in order.

    Assertions compare positions in that order, never times, so they hold on any machine
    and on the virtual clock alike.

    Attributes:
        events: every `Event`, in the order they happened.
        runs: the `RunInfo` of each run that started (composed child runs included).
        results: the result of each run that completed.
        errors: the error of each run that failed.
        checkpoints: the checkpoint of each run that halted.

    >>> import reactorpy as rp
    >>> r = rp.Reactor("pair", returns="b")
    >>> @r.step
    ... def a():
    ...     return 1
    >>> @r.step
    ... def b(a):
    ...     return a + 1
    >>> rec = Recorder()
    >>> run_virtual(r.run(middleware=[rec]))
    2
    >>> rec.order()
    ['a', 'b']
    >>> rec.kinds("b")
    ['step_start', 'step_complete']
    >>> rec.assert_before("a", "b")
    """

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.runs: list[RunInfo] = []
        self.results: list[Any] = []
        self.errors: list[BaseException] = []
        self.checkpoints: list[Any] = []

    def __repr__(self) -> str:
        return f"<Recorder: {len(self.events)} events from {len(self.runs)} runs>"

    # -- middleware hooks ------------------------------------------------------------------
    def on_run_start(self, run: RunInfo) -> None:
        """Record the start of a run."""
        self.runs.append(run)

    def on_event(self, event: Event) -> None:
        """Record a step event."""
        self.events.append(event)

    def on_run_complete(self, run: RunInfo, result: Any) -> None:
        """Record a run's result (returning None leaves it unchanged)."""
        self.results.append(result)

    def on_run_error(self, run: RunInfo, error: BaseException) -> None:
        """Record a run's error."""
        self.errors.append(error)

    def on_run_halt(self, run: RunInfo, checkpoint: Any) -> None:
        """Record a halted run's checkpoint."""
        self.checkpoints.append(checkpoint)

    # -- queries ---------------------------------------------------------------------------
    def clear(self) -> None:
        """Forget everything recorded so far."""
        self.events.clear()
        self.runs.clear()
        self.results.clear()
        self.errors.clear()
        self.checkpoints.clear()

    def of(self, step: str | None = None, kind: str | None = None) -> list[Event]:
        """The events of `step` and/or of `kind`, in order."""
        return [
            e
            for e in self.events
            if (step is None or e.step == step) and (kind is None or e.kind == kind)
        ]

    def kinds(self, step: str) -> list[str]:
        """The kinds of `step`'s events, in order (``['step_start', 'step_complete']``)."""
        return [e.kind for e in self.events if e.step == step]

    def order(self, kind: str = "step_start") -> list[str]:
        """The steps in the order of their first event of `kind` (default: when they started).

        ``order("step_complete")`` is the completion order, ``order("undo_start")`` the order
        undo began in.
        """
        seen: dict[str, None] = {}
        for e in self.events:
            if e.kind == kind:
                seen.setdefault(e.step)
        return list(seen)

    @property
    def started(self) -> list[str]:
        """The steps that started, in order."""
        return self.order("step_start")

    @property
    def completed(self) -> list[str]:
        """The steps that completed, in order."""
        return self.order("step_complete")

    @property
    def undone(self) -> list[str]:
        """The steps whose undo began, in order."""
        return self.order("undo_start")

    @property
    def peak_concurrency(self) -> int:
        """The most steps that were running at once, as the events reported it."""
        return max((e.concurrency for e in self.events), default=0)

    def timeline(self) -> str:
        """The events, one per line: position, kind, step and attempt (for failure messages)."""
        return "\n".join(
            f"{k:4d} {e.kind:<20} {e.step} (attempt {e.attempt})" for k, e in enumerate(self.events)
        )

    # -- assertions ------------------------------------------------------------------------
    def _fail(self, message: str) -> AssertionError:
        return AssertionError(f"{message}\nEvents:\n{self.timeline() or '(none)'}")

    def _index(self, step: str, kinds: Iterable[str], *, last: bool = False) -> int:
        wanted = frozenset(kinds)
        found = [k for k, e in enumerate(self.events) if e.step == step and e.kind in wanted]
        if not found:
            known = sorted({e.step for e in self.events})
            raise self._fail(
                f"Step {step!r} has no {' or '.join(sorted(wanted))} event. "
                f"Steps with events: {', '.join(map(repr, known)) or '(none)'}."
            )
        return found[-1] if last else found[0]

    def assert_before(self, first: str, then: str) -> None:
        """Assert that `first` finished before `then` started.

        "Finished" is its last ``step_complete`` (or the event that ended it: an error,
        halt, guard skip or compensate continue); "started" is its first ``step_start``.

        Raises:
            AssertionError: either event is missing, or they happened the other way round.
        """
        end = self._index(first, _ENDS, last=True)
        start = self._index(then, ("step_start",))
        if not end < start:
            raise self._fail(f"Expected {first!r} to finish before {then!r} started.")

    def assert_overlap(self, a: str, b: str) -> None:
        """Assert that `a` and `b` ran at the same time: each started before the other ended.

        Raises:
            AssertionError: an event is missing, or one finished before the other started.
        """
        a_start, b_start = self._index(a, ("step_start",)), self._index(b, ("step_start",))
        a_end, b_end = self._index(a, _ENDS, last=True), self._index(b, _ENDS, last=True)
        if not (a_start < b_end and b_start < a_end):
            raise self._fail(f"Expected {a!r} and {b!r} to overlap; they ran one after the other.")

    def assert_undone_in_order(self, steps: Iterable[str]) -> None:
        """Assert that exactly `steps` were undone, in this order, each once and successfully.

        Raises:
            AssertionError: another set or order of steps was undone, a step's undo started
                twice, or an undo did not complete.
        """
        expected = list(steps)
        starts = [e.step for e in self.events if e.kind == "undo_start"]
        if starts != expected:
            raise self._fail(f"Expected the undo order {expected!r}, got {starts!r}.")
        done = [e.step for e in self.events if e.kind == "undo_complete"]
        missing = [s for s in expected if s not in done]
        if missing:
            raise self._fail(f"The undo of {missing!r} did not complete.")

    def assert_not_started(self, *steps: str) -> None:
        """Assert that none of `steps` started.

        Raises:
            AssertionError: one of them has a ``step_start`` event.
        """
        ran = [s for s in steps if s in set(self.started)]
        if ran:
            raise self._fail(f"Expected {ran!r} not to start.")


# ---------------------------------------------------------------------------------- override
def _rebuild(
    step: Step[..., Any],
    fn: Callable[..., Any],
    *,
    args: Mapping[str, Any],
    wait_for: Iterable[str],
    executor: Any,
    hooks: _Hooks,
) -> Step[..., Any]:
    return step._replace(
        fn=fn, args=args, wait_for=tuple(wait_for), executor=executor, _hooks=hooks
    )


def _copy_hooks(step: Step[..., Any]) -> _Hooks:
    hooks = _Hooks()
    hooks.undo = step.undo_callback
    hooks.compensate = step.compensate_callback
    return hooks


def _fake(
    original: Step[..., Any],
    fake: Callable[..., Any],
    inputs: Iterable[str],
    steps: Iterable[str],
    *,
    keep_callbacks: bool,
) -> Step[..., Any]:
    """`original` with `fake` as its function: same name, wiring and options; its undo and
    compensate callbacks when `keep_callbacks`."""
    probe = Step(fake, name=original.name)  # reads the fake's signature, once
    accepted = {p.name for p in probe.params}
    args: dict[str, Any] = {}
    wait_for = list(original.wait_for)
    # The planner's own wiring of the original: explicit args, then inputs and steps by name.
    for param, source in wire(original, set(inputs), set(steps)).items():
        if source is None:  # the run Context: the fake gets it through its own annotation
            continue
        if param in accepted or probe.takes_kwargs:
            args[param] = source
        elif isinstance(source, Result) and source.step not in wait_for:
            # The fake does not take this argument; keep the dependency, so order is kept.
            wait_for.append(source.step)
    # An async fake cannot be sent to a thread or process; it runs on the loop instead.
    executor = None if probe.is_async else original.executor
    return _rebuild(
        original,
        fake,
        args=args,
        wait_for=wait_for,
        executor=executor,
        hooks=_copy_hooks(original) if keep_callbacks else _Hooks(),
    )


StepKey = str | Step[..., Any]


def _step_name(reactor: Reactor[Any], key: StepKey) -> str:
    """The name, in `reactor`, of the step `key` names or is."""
    if isinstance(key, Step):
        registered = reactor.steps
        for name, step in registered.items():
            if step is key:
                return name
        # `reactor.add(s, name=...)` registers a copy: find it by its function.
        same_fn = [name for name, step in registered.items() if step.fn is key.fn]
        key = same_fn[0] if len(same_fn) == 1 else key.name
    if key not in reactor.steps:
        raise UnknownReferenceError("override", key, list(reactor.steps), what="step")
    return key


def _by_name(reactor: Reactor[Any], mapping: Mapping[Any, V] | None) -> dict[str, V]:
    return {_step_name(reactor, key): value for key, value in (mapping or {}).items()}


def override(
    reactor: Reactor[T],
    fakes: Mapping[str, Callable[..., Any]]
    | Mapping[Step[..., Any], Callable[..., Any]]
    | Mapping[StepKey, Callable[..., Any]],
    *,
    undo: Mapping[str, Callable[..., Any] | None]
    | Mapping[Step[..., Any], Callable[..., Any] | None]
    | Mapping[StepKey, Callable[..., Any] | None]
    | None = None,
    compensate: Mapping[str, Callable[..., Any] | None]
    | Mapping[Step[..., Any], Callable[..., Any] | None]
    | Mapping[StepKey, Callable[..., Any] | None]
    | None = None,
    keep_callbacks: bool = True,
) -> Reactor[T]:
    """A new `Reactor` like `reactor` with some steps' functions replaced by fakes.

    The copy has the same name, inputs, ``returns``, options and middleware, and a copy of
    every step. A faked step keeps the original's name, wiring (explicit ``args`` and the
    parameters the planner wires by name), and options (retries, timeout, guard, ...); the
    fake receives the original's arguments that its own signature names (all of them if it
    takes ``**kwargs``), and still waits for the steps whose results it does not take. An
    ``async def`` fake of a step with ``executor=`` runs on the event loop. `reactor` itself
    is left untouched, and callbacks registered on the copy's steps do not reach it.

    **Undo and compensate.** By default a faked step keeps the original's *real* undo and
    compensate callbacks: if a later step fails, the real undo is called with the fake's
    result. Fake them in the same call with ``undo={"charge": fake_refund}`` (None drops
    one), or pass ``keep_callbacks=False`` to drop the callbacks of every faked step (the
    steps that are not faked keep theirs). ``undo=`` and ``compensate=`` also work on steps
    that are not faked.

    Args:
        reactor: the reactor to copy.
        fakes: the steps to fake (by name, or the `Step` objects themselves) and their fake
            functions (sync or async).
        undo: steps (names or `Step` objects) to a replacement undo callback, or None to
            drop the step's undo.
        compensate: steps to a replacement compensate callback, or None to drop it.
        keep_callbacks: False drops the real undo and compensate of every faked step
            (before ``undo=`` and ``compensate=`` are applied).

    Returns:
        The new reactor.

    Raises:
        UnknownReferenceError: a name is not a step of `reactor` (with a "Did you mean").

    >>> import reactorpy as rp
    >>> r = rp.Reactor("r", inputs=["x"], returns="slow")
    >>> @r.step
    ... async def slow(x):
    ...     raise RuntimeError("no network in tests")
    >>> fast = override(r, {slow: lambda x: x * 10})
    >>> run_virtual(fast.run({"x": 4}))
    40
    >>> fast is not r and r.steps["slow"].fn is slow.fn
    True
    """
    names = list(reactor.steps)
    fake_fns = _by_name(reactor, fakes)
    undos = _by_name(reactor, undo)
    compensates = _by_name(reactor, compensate)
    copy = cast(
        "Reactor[T]",
        Reactor(
            reactor.name,
            inputs={name: reactor.input_transforms.get(name) for name in reactor.inputs},
            returns=reactor.returns,
            max_concurrency=reactor.max_concurrency,
            limits=reactor.limits,
            middleware=reactor.middleware,
            executor=reactor.executor,
        ),
    )
    for name, step in reactor.steps.items():
        if name in fake_fns:
            new = _fake(step, fake_fns[name], reactor.inputs, names, keep_callbacks=keep_callbacks)
        elif type(step) is Step:
            new = _rebuild(
                step,
                step.fn,
                args=step.args,
                wait_for=step.wait_for,
                executor=step.executor,
                hooks=_copy_hooks(step),
            )
        else:  # a composite step (compose, map, switch): shared, it holds no test state
            new = step
        copy.add(new)
        _replace_callback(new, "undo", undos, name)
        _replace_callback(new, "compensate", compensates, name)
    return copy


def _replace_callback(
    step: Step[..., Any], which: str, given: Mapping[str, Any], name: str
) -> None:
    """Give `step` the undo or compensate (`which`) that `given` has for it: a callback,
    or None to drop it; a step `given` does not name keeps its own."""
    if name not in given:
        return
    if given[name] is None:
        setattr(step._hooks, which, None)
    else:
        getattr(step, which)(given[name])


# ---------------------------------------------------------------------------------- fakes
def returns(value: T, *, delay: float = 0.0) -> Fake[T]:
    """A fake step function that returns `value` whatever its arguments.

    Args:
        value: what the step returns.
        delay: seconds to ``asyncio.sleep`` first (free on the virtual clock), to shape
            the run's timeline.

    The fake keeps the arguments of each call in ``fake.calls`` (a list of dicts).
    """
    calls: list[dict[str, Any]] = []

    async def fake(**kwargs: Any) -> T:
        calls.append(kwargs)
        if delay:
            await asyncio.sleep(delay)
        return value

    fake.__name__ = fake.__qualname__ = f"returns({value!r})"
    fake.calls = calls  # type: ignore[attr-defined]
    return cast("Fake[T]", fake)


def raises(
    error: BaseException | type[BaseException],
    *,
    times: int | None = None,
    then: Any = None,
    delay: float = 0.0,
) -> Fake[Any]:
    """A fake step function that raises `error`: always, or its first `times` calls.

    Args:
        error: the exception (instance or class) to raise.
        times: raise only on the first `times` calls, then return `then` (to test retries).
        then: the value returned once `times` calls have raised.
        delay: seconds to ``asyncio.sleep`` before each call's outcome.

    The fake keeps the arguments of each call in ``fake.calls`` (a list of dicts).
    """
    calls: list[dict[str, Any]] = []

    async def fake(**kwargs: Any) -> Any:
        calls.append(kwargs)
        if delay:
            await asyncio.sleep(delay)
        if times is None or len(calls) <= times:
            raise error
        return then

    fake.__name__ = fake.__qualname__ = f"raises({error!r})"
    fake.calls = calls  # type: ignore[attr-defined]
    return cast("Fake[Any]", fake)
