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
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

from ._events import Event, RunInfo
from ._fakes import Fake, override, raises, returns

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
