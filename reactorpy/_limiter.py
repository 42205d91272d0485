"""The concurrency budget: a cap on running steps, overall and per `concurrency_key`.

Owns: `Limiter`, the slot counts and the queue of steps waiting for a slot, ordered by
priority (longest remaining chain first), then by arrival. One limiter may be shared by several
runs and by every reactor composed into a run; a slot freed by one run may go to another.
Must not import: the executor (waiters are opaque objects with a ``wake`` method).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["Limiter"]


class Waiter(Protocol):
    """What the limiter hands a slot to: a run's pending step."""

    @property
    def dead(self) -> bool:  # pragma: no cover - protocol
        """Whether the waiter went away while queued (it is then skipped)."""

    def wake(self, key: str | None) -> None:  # pragma: no cover - protocol
        """Start the step; its slot (and its key's slot) is already taken for it."""


class _FutureWaiter:
    __slots__ = ("future",)
    run = None

    def __init__(self) -> None:
        import asyncio

        self.future: Any = asyncio.get_running_loop().create_future()

    @property
    def dead(self) -> bool:
        """Cancelled while queued (it removes itself from the queue when it next runs)."""
        return bool(self.future.done())

    def wake(self, key: str | None) -> None:
        self.future.set_result(None)


class Limiter:
    """A concurrency budget that runs can share.

    Args:
        max_concurrency: how many steps may run at once; None for no overall cap.
        limits: caps per ``concurrency_key``, e.g. ``{"db": 2}``.

    Pass it as ``max_concurrency=`` to several runs to give them one budget.

    >>> shared = Limiter(8, limits={"db": 2})
    >>> shared
    Limiter(8, limits={'db': 2}, running=0, waiting=0)
    """

    __slots__ = ("_counter", "_heap", "_keyed", "_running", "limits", "max_concurrency")

    def __init__(
        self, max_concurrency: int | None = None, *, limits: Mapping[str, int] | None = None
    ) -> None:
        if max_concurrency is not None and (
            not isinstance(max_concurrency, int) or max_concurrency < 1
        ):
            raise ValueError(
                f"max_concurrency must be an int >= 1 or None, got {max_concurrency!r}"
            )
        for key, cap in (limits or {}).items():
            if not isinstance(cap, int) or cap < 1:
                raise ValueError(f"limits[{key!r}] must be an int >= 1, got {cap!r}")
        self.max_concurrency = max_concurrency
        self.limits: dict[str, int] = dict(limits or {})
        self._running = 0
        self._keyed: dict[str, int] = {}  # running steps per concurrency_key
        # (-priority, seq, key, waiter): the best waiting step first.
        self._heap: list[tuple[int, int, str | None, Any]] = []
        self._counter = itertools.count()

    def __repr__(self) -> str:
        return (
            f"Limiter({self.max_concurrency!r}, limits={self.limits!r}, "
            f"running={self._running}, waiting={len(self._heap)})"
        )

    @property
    def running(self) -> int:
        """How many slots are taken now."""
        return self._running

    def check_limits(self, limits: Mapping[str, int], where: str) -> None:
        """Refuse `limits` this limiter does not already have (a run's ``limits=`` next
        to a shared limiter): a run never changes a limiter other runs share.

        Raises:
            ValueError: a key it does not cap, or caps otherwise; the fix is to give the
                caps to the limiter where it is made.
        """
        differ = {k: v for k, v in limits.items() if self.limits.get(k) != v}
        if differ:
            raise ValueError(
                f"{where}: limits={differ!r} would change the shared {self!r} for every run "
                f"that uses it; give the caps to the limiter where it is made: "
                f"rp.Limiter({self.max_concurrency!r}, limits={ {**self.limits, **differ}!r})."
            )

    def _free(self, key: str | None) -> bool:
        if self.max_concurrency is not None and self._running >= self.max_concurrency:
            return False
        if key is not None and key in self.limits:
            return self._keyed.get(key, 0) < self.limits[key]
        return True

    def try_acquire(self, key: str | None) -> bool:
        """Take a slot now if one is free.

        Waiting steps never lose to a newcomer: each release hands its slot to the best
        waiter that fits, so a slot that is free now is one that no waiter can use.
        """
        if not self._free(key):
            return False
        self._take(key)
        return True

    def _take(self, key: str | None) -> None:
        self._running += 1
        if key is not None:
            # Counted even without a cap: a run sharing this limiter may add one later.
            self._keyed[key] = self._keyed.get(key, 0) + 1

    def outranks(self, priority: int) -> bool:
        """Whether a waiting step has a higher priority than `priority`."""
        return bool(self._heap) and -self._heap[0][0] > priority

    def enqueue(self, priority: int, key: str | None, waiter: Waiter) -> None:
        """Queue `waiter` until a slot for `key` is free."""
        heapq.heappush(self._heap, (-priority, next(self._counter), key, waiter))

    def release(self, key: str | None) -> Waiter | None:
        """Give back a slot; returns the waiter the slot went to, for the caller to wake.

        The caller may run the returned waiter's step itself (the slot is taken for it).
        """
        self._running -= 1
        if key is not None:
            self._keyed[key] -= 1
        return self._pop()

    def _pop(self) -> Waiter | None:
        heap = self._heap
        if not heap:
            return None
        # The best waiter that fits: with per-key caps the best one may be blocked by its key.
        skipped = []
        found = None
        while heap:
            entry = heapq.heappop(heap)
            if entry[3].dead:
                continue  # an acquirer cancelled while queued: it gets no slot
            if self._free(entry[2]):
                found = entry
                break
            skipped.append(entry)
            if not self.limits or (
                self.max_concurrency is not None and self._running >= self.max_concurrency
            ):
                break
        for entry in skipped:
            heapq.heappush(heap, entry)
        if found is None:
            return None
        self._take(found[2])
        return found[3]  # type: ignore[no-any-return]

    async def acquire(self, key: str | None = None, priority: int = 0) -> None:
        """Wait for a slot (for work outside a run's scheduler, such as map elements)."""
        if self.try_acquire(key):
            return
        waiter = _FutureWaiter()
        self.enqueue(priority, key, waiter)
        try:
            await waiter.future
        except BaseException:
            if waiter.future.done() and not waiter.future.cancelled():
                self.release_and_wake(key)  # the slot came just as we were cancelled
            else:
                self._heap = [e for e in self._heap if e[3] is not waiter]
                heapq.heapify(self._heap)
            raise

    def release_and_wake(self, key: str | None = None) -> None:
        """Give back a slot taken with `acquire`, waking whoever it goes to."""
        waiter = self.release(key)
        if waiter is not None:
            waiter.wake(key)

    def discard(self, run: Any) -> int:
        """Forget every queued step of `run` (the run is stopping); return how many."""
        kept = [e for e in self._heap if getattr(e[3], "run", None) is not run]
        gone = len(self._heap) - len(kept)
        if gone:
            self._heap = kept
            heapq.heapify(self._heap)
        return gone
