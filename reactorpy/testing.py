"""Helpers for testing reactors (and code that uses them) without sleeping.

Owns: `VirtualClockLoop` / `run_virtual` (an event loop whose clock jumps ahead whenever
everything is waiting on a timer), the event `Recorder`, and `override`.
Must not import: the executor's internals.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["VirtualClockLoop", "run_virtual"]

T = TypeVar("T")


class _JumpingSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
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
