"""A middleware hook that raises while reporting a step's failure (a progress printer whose
pipe closed, say) must still let the run end. Found while making the CLI survive
``| head -1``; the CLI's printers no longer raise, but any user middleware could."""

from __future__ import annotations

import asyncio

import pytest

import reactorpy as rp
from reactorpy._events import Event
from reactorpy.testing import run_virtual


class RaisingHook:
    """Raises at every step_complete and step_error, as a print to a closed pipe would."""

    def on_event(self, event: Event) -> None:
        if event.kind in ("step_complete", "step_error"):
            raise OSError("the hook's stream is closed")


def test_a_hook_raising_at_every_step_end_still_ends_the_run() -> None:
    """The run ends with RunFailed (the hook's error as the step's), instead of hanging."""
    many = rp.Reactor("many")
    for k in range(20):

        async def quick(k: int = k) -> int:
            await asyncio.sleep(0)
            return k

        many.step(quick, name=f"s{k}")

    async def main() -> None:
        # On the virtual clock a stuck run reaches this timeout at once.
        await asyncio.wait_for(many.run(middleware=[RaisingHook()]), 60)

    with pytest.raises(rp.RunFailed):
        run_virtual(main())


class Endings:
    """Middleware that keeps each run ending it hears of; `wait_in` names the hook that
    waits for the test (the run is cancelled there)."""

    def __init__(self, name: str, log: list[tuple[str, str]], wait_in: str = "") -> None:
        self.name, self.log, self.wait_in = name, log, wait_in
        self.entered, self.gate = asyncio.Event(), asyncio.Event()

    async def _hook(self, kind: str) -> None:
        if kind == self.wait_in:
            self.entered.set()
            await self.gate.wait()
        self.log.append((self.name, kind))

    async def on_run_start(self, info: rp.RunInfo) -> None:
        await self._hook("start")

    async def on_run_complete(self, info: rp.RunInfo, result: object) -> None:
        await self._hook("complete")

    async def on_run_halt(self, info: rp.RunInfo, checkpoint: rp.Checkpoint) -> None:
        await self._hook("halt")

    async def on_run_error(self, info: rp.RunInfo, error: BaseException) -> None:
        self.log.append((self.name, type(error).__name__))


@pytest.mark.parametrize("where", ["start", "complete", "halt"])
async def test_a_run_cancelled_while_middleware_hears_of_it_ends_once_for_each(
    where: str,
) -> None:
    """Cancelled while an async hook hears of the run's start, completion or halt: what
    completed is undone (the caller gets neither result nor checkpoint), and every
    middleware that heard of the start hears of exactly one ending: those told of the
    completion or halt keep it, the others get the cancellation."""
    log: list[tuple[str, str]] = []
    undone: list[str] = []
    r = rp.Reactor("r", returns="book")

    @r.step
    async def book() -> str:
        if where == "halt":
            raise rp.Halt("later", result="booking")
        return "booking"

    @book.undo
    async def cancel(value: str) -> None:
        undone.append(value)

    before, slow, after = (
        Endings("before", log),
        Endings("slow", log, where),
        Endings("after", log),
    )
    task = asyncio.ensure_future(r.run(middleware=[before, slow, after]))
    async with asyncio.timeout(10):
        await slow.entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    endings = [(n, k) for n, k in log if k != "start"]
    if where == "start":  # no step ran; those reached by on_run_start hear of the end
        assert undone == []
        assert endings == [("before", "CancelledError"), ("slow", "CancelledError")]
    else:
        assert undone == ["booking"]
        assert endings == [
            ("before", where),
            ("slow", "CancelledError"),
            ("after", "CancelledError"),
        ]
