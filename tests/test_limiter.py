"""The limiter: caps on running steps, shared between runs, and never a deadlock."""

from __future__ import annotations

import asyncio

import pytest

import reactorpy as rp
from reactorpy.testing import run_virtual


def nested(shared: rp.Limiter, depth: int) -> rp.Reactor:
    """A reactor whose step awaits another reactor's run() with the same limiter,
    `depth` levels down."""
    r = rp.Reactor(f"level{depth}", returns="work")
    if depth == 0:

        @r.step
        async def work():
            await asyncio.sleep(0.1)
            return 0

        return r
    inner = nested(shared, depth - 1)

    @r.step
    async def work():
        return 1 + await inner.run(max_concurrency=shared)

    return r


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_a_run_awaited_by_a_step_borrows_its_slot_of_a_shared_limiter(depth: int):
    """A step awaiting another reactor's run() with the same Limiter(1) lends it its slot
    (at any depth): no deadlock, the cap holds, and the limiter ends empty."""
    shared = rp.Limiter(1)
    assert depth == run_virtual(
        asyncio.wait_for(nested(shared, depth).run(max_concurrency=shared), 5)
    )
    assert 0 == shared.running


def test_borrowing_keeps_the_cap_for_other_runs():
    """While a nested run borrows a slot, other runs of the shared limiter still never
    exceed its cap."""
    shared = rp.Limiter(2)
    running = peak = 0

    async def busy():
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.1)
        running -= 1

    inner = rp.Reactor("inner")
    for k in range(3):
        inner.add(rp.step(busy), name=f"i{k}")
    outer = rp.Reactor("outer")

    @outer.step
    async def call_inner():
        await inner.run(max_concurrency=shared)

    others = rp.Reactor("others")
    for k in range(4):
        others.add(rp.step(busy), name=f"o{k}")

    async def main():
        await asyncio.gather(outer.run(max_concurrency=shared), others.run(max_concurrency=shared))

    run_virtual(asyncio.wait_for(main(), 5))
    assert peak <= 2
    assert 0 == shared.running


def test_new_steps_one_at_a_time_under_a_cap_of_one_do_not_deadlock():
    """A step returning rp.NewSteps under run(async_=False, max_concurrency=1) gives its
    slot back before its new steps run."""

    @rp.step
    def count(n):
        if n == 0:
            return "liftoff"
        return rp.NewSteps(steps=[count.evolve(args={"n": rp.Value(n - 1)})])

    countdown = rp.Reactor("countdown", inputs=["n"], returns="count")
    countdown.add(count)
    for async_ in (False, True):
        run = countdown.run({"n": 3}, async_=async_, max_concurrency=1)
        assert "liftoff" == run_virtual(asyncio.wait_for(run, 5))


def test_a_shared_limiter_ends_empty_after_failures_halts_and_cancellation():
    """Runs that fail, halt or are cancelled give every slot back."""
    shared = rp.Limiter(2)
    r = rp.Reactor("mixed", inputs=["how"])

    @r.step
    async def a(how):
        await asyncio.sleep(0.1)
        if how == "fail":
            raise ValueError("boom")
        if how == "halt":
            raise rp.Halt("later")

    @r.step
    async def b(how):
        await asyncio.sleep(1)

    async def main():
        for how in ("fail", "halt"):
            with pytest.raises((rp.RunFailed, rp.Halted)):
                await r.run({"how": how}, max_concurrency=shared, grace=0.5)
        task = asyncio.ensure_future(r.run({"how": "ok"}, max_concurrency=shared))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run_virtual(main())
    assert "running=0, waiting=0" in repr(shared)


@pytest.mark.parametrize("ask", ["retry", "retry_on"])
def test_one_at_a_time_runs_hold_the_callers_slot_through_a_steps_retries(ask: str):
    """Under run(async_=False) with a shared Limiter(1), a step's retries run inside the
    caller's slot, as its first attempt does: runs sharing the limiter never overlap."""
    shared = rp.Limiter(1)
    running = peak = 0
    tries: dict[int, int] = {}
    r = rp.Reactor("retrying", inputs=["k"])

    @r.step(retries=1, retry_on=ConnectionError)
    async def work(k):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            tries[k] = tries.get(k, 0) + 1
            await asyncio.sleep(1)
            if tries[k] == 1:
                raise rp.Retry("again") if ask == "retry" else ConnectionError("flaky")
        finally:
            running -= 1

    async def main():
        runs = (r.run({"k": k}, max_concurrency=shared, async_=False) for k in range(3))
        await asyncio.gather(*runs)
        return asyncio.get_running_loop().time()

    assert 6.0 == run_virtual(asyncio.wait_for(main(), 60))
    assert 1 == peak
    assert {0: 2, 1: 2, 2: 2} == tries
    assert "running=0, waiting=0" in repr(shared)


async def test_one_at_a_time_new_steps_run_alone() -> None:
    """Under ``async_=False`` the new steps of a step run while nothing else of the run
    does (they ran beside the run's next step: two at once)."""
    running, peak = [0], [0]

    async def busy() -> None:
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        for _ in range(3):
            await asyncio.sleep(0)
        running[0] -= 1

    @rp.step
    async def added() -> str:
        await busy()
        return "added"

    r = rp.Reactor("serial")

    @r.step
    def spawn() -> rp.NewSteps:
        return rp.NewSteps("spawned", steps=[added])

    @r.step
    async def other() -> str:
        await busy()
        return "other"

    async with asyncio.timeout(10):
        results = await r.run(async_=False)
    assert results == {"spawn": "spawned", "other": "other"}
    assert peak[0] == 1


async def test_a_step_running_alone_gets_a_slot_for_its_new_steps() -> None:
    """Under a limiter of one, the steps an ``async_=False`` step holds back give their slot
    up while they wait: its new steps need it (they waited for each other: a hang)."""

    @rp.step
    async def added() -> str:
        await asyncio.sleep(0)
        return "added"

    r = rp.Reactor("alone")

    @r.step
    async def first() -> int:
        await asyncio.sleep(0)
        return 1

    @r.step
    async def other() -> int:
        await asyncio.sleep(0)
        return 2

    @r.step(async_=False)
    def spawn(first: int) -> rp.NewSteps:
        return rp.NewSteps("spawned", steps=[added])

    @spawn.compensate  # (the step goes through its attempts in a worker of its own)
    def keep_going(error: Exception) -> rp.Continue:
        return rp.Continue("compensated")

    async with asyncio.timeout(10):
        results = await r.run(max_concurrency=rp.Limiter(1))
    assert results == {"first": 1, "other": 2, "spawn": "spawned"}


async def test_one_at_a_time_new_steps_continued_on_resume_run_alone() -> None:
    """A serial run resumed inside a step's new steps: they continue while nothing else of
    the run runs (the continued step took no slot: two ran at once)."""
    running, peak = [0], [0]
    approved = {"now": False}

    async def busy() -> None:
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        for _ in range(3):
            await asyncio.sleep(0)
        running[0] -= 1

    @rp.step
    async def approve() -> str:
        await busy()
        if not approved["now"]:
            raise rp.Halt("approval")
        return "approved"

    r = rp.Reactor("serial")

    @r.step
    def spawn() -> rp.NewSteps:
        return rp.NewSteps("spawned", steps=[approve])

    @r.step
    async def other() -> str:
        await busy()
        return "other"

    async with asyncio.timeout(10):
        with pytest.raises(rp.Halted) as halted:
            await r.run(async_=False)
        approved["now"] = True
        peak[0] = 0
        results = await r.resume(halted.value.checkpoint, async_=False)
    assert results["spawn"] == "spawned"
    assert peak[0] == 1
