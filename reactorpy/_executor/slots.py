"""Slots a step holds, lent to the runs it waits for.

Owns: `SLOT`, the context variable through which a step that holds a limiter slot offers it,
and the two holders (`StepSlot`, a slot the scheduler gave a step; `HeldSlot`, the slot of
the caller's limiter a one-step-at-a-time run takes around a step). A step that awaits
another reactor's ``run()`` with the same limiter would otherwise hold its slot while the
nested run's steps wait for one, and a one-slot limiter would never free up: the nested run
borrows the slot (gives it back to the limiter) for as long as it runs, and the step takes
a slot again before it goes on (Elixir's Reactor runs such nested work inline instead).
Must not import: the rest of the executor, but `state` through the run it is given.
"""

from __future__ import annotations

import contextvars
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .._limiter import Limiter
    from .run import Run

__all__ = ["SLOT", "HeldSlot", "Loan", "StepSlot", "outer_slot"]


class Loan(Protocol):
    """A slot a nested run may borrow."""

    def borrow(self, limiter: Limiter) -> bool:  # pragma: no cover - protocol
        """Give the slot back to `limiter` for the nested run, if it is of that limiter."""

    async def give_back(self) -> None:  # pragma: no cover - protocol
        """The nested run ended: take a slot again for the step (if it is still running)."""


SLOT: contextvars.ContextVar[Loan | None] = contextvars.ContextVar("reactorpy_slot", default=None)


class StepSlot:
    """The slot the scheduler gave step `i` of `run` (``run.st.holding[i]``).

    While nested runs borrow it, ``run.st.lent[i]`` counts them, and ending the step does
    not release it again (it is not held). While the step takes a slot again, the count
    stays at 1, for the same reason.
    """

    __slots__ = ("i", "run")

    def __init__(self, run: Run, i: int) -> None:
        self.run = run
        self.i = i

    def borrow(self, limiter: Limiter) -> bool:
        run, i = self.run, self.i
        st = run.st
        if limiter is not run.limiter or not st.holding[i]:
            return False
        if not st.lent[i]:
            waiter = limiter.release(run.plan.steps[i].concurrency_key)
            if waiter is not None:
                waiter.wake(None)
        st.lent[i] += 1
        return True

    async def give_back(self) -> None:
        run, i = self.run, self.i
        st = run.st
        st.lent[i] -= 1
        if st.lent[i] or not st.holding[i]:
            return
        limiter = run.limiter
        assert limiter is not None
        key = run.plan.steps[i].concurrency_key
        st.lent[i] = 1  # taking a slot again: ending the step must not release one
        try:
            await limiter.acquire(key, run.priority[i])
        except BaseException:
            st.lent[i] -= 1
            st.holding[i] = 0  # it goes on, or ends, without a slot
            raise
        st.lent[i] -= 1
        if st.lent[i] or not st.holding[i]:  # lent again meanwhile, or the step ended
            limiter.release_and_wake(key)


class HeldSlot:
    """A slot of `limiter` for `key`, taken around one step (see `Run.outer_slot`)."""

    __slots__ = ("held", "key", "lent", "limiter", "priority")

    def __init__(self, limiter: Limiter, key: str | None, priority: int) -> None:
        self.limiter = limiter
        self.key = key
        self.priority = priority
        self.held = False
        self.lent = 0

    async def take(self) -> None:
        await self.limiter.acquire(self.key, self.priority)
        self.held = True

    def release(self) -> None:
        """The step ended: give the slot back, unless a nested run has it."""
        if self.held and not self.lent:
            self.limiter.release_and_wake(self.key)
        self.held = False

    def borrow(self, limiter: Limiter) -> bool:
        if limiter is not self.limiter or not self.held:
            return False
        if not self.lent:
            self.limiter.release_and_wake(self.key)
        self.lent += 1
        return True

    async def give_back(self) -> None:
        self.lent -= 1
        if self.lent or not self.held:
            return
        self.lent = 1
        try:
            await self.limiter.acquire(self.key, self.priority)
        except BaseException:
            self.lent -= 1
            self.held = False
            raise
        self.lent -= 1
        if self.lent or not self.held:
            self.limiter.release_and_wake(self.key)


def offered() -> Any:
    """The slot offered by the step running in this context, if any."""
    return SLOT.get()


async def outer_slot(run: Run, i: int, coro: Coroutine[Any, Any, Any]) -> Any:
    """Run `coro` (step `i` of `run`) holding a slot of the caller's limiter (one step at
    a time, under a cap or a shared limiter). Given back before new steps run."""
    assert run.outer_limiter is not None
    key = run.plan.steps[i].concurrency_key
    slot = HeldSlot(run.outer_limiter, key, run.priority[i])
    try:
        await slot.take()
    except BaseException:
        coro.close()
        raise
    token = SLOT.set(slot)
    try:
        return await coro
    finally:
        slot.release()
        SLOT.reset(token)
