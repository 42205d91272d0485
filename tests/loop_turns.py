"""A helper for tests that check a long run still lets other tasks have the event loop."""

from __future__ import annotations

import asyncio
from types import TracebackType


class LoopTurns:
    """Counts the turns another task got on the event loop while the ``async with`` block ran.

    >>> async def main():
    ...     async with LoopTurns() as turns:
    ...         for _ in range(3):
    ...             await asyncio.sleep(0)
    ...     return turns.during
    >>> asyncio.run(main()) >= 2
    True
    """

    def __init__(self) -> None:
        self.ticks = 0
        self.during = 0
        self._before = 0
        self._stop = False
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while not self._stop:
            self.ticks += 1
            await asyncio.sleep(0)

    async def __aenter__(self) -> LoopTurns:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)  # the ticker is running
        self._before = self.ticks
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.during = self.ticks - self._before
        self._stop = True
        assert self._task is not None
        await self._task
