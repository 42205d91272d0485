"""Review of 4087159 (a journaled run waits for its queued completions before it undoes):
a worker waiting for its write (`Durable.wait_for_write`) is cancelled as the run stops;
its cancelled wait counts the write as done."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import reactorpy as rp


class LateRefusal(rp.SQLiteJournal):
    """A journal whose append of step ``a`` is refused, once `release` is set (as a
    database error after a slow commit would be)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent = asyncio.Event()
        self.release = asyncio.Event()
        self.settled_at: list[str] = []

    def append(self, run_id: str, entries: Any, *, redone: Any = ()) -> asyncio.Future[None]:
        if not any(e.key == "a" for e in entries):
            return super().append(run_id, entries, redone=redone)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def later() -> None:
            await self.release.wait()
            self.settled_at.append("refused")
            if not future.done():
                future.set_exception(sqlite3.OperationalError("disk I/O error"))

        self.task = asyncio.ensure_future(later())
        self.sent.set()
        return future


async def test_a_cancelled_run_undoes_only_once_its_completions_are_recorded(
    tmp_path: Path,
) -> None:
    """``a`` completes and its worker waits for its write (``b`` follows it); ``run()`` is
    cancelled meanwhile: `_cancelled` cancels the worker (`stop_workers`), which cancels
    the write's future; `_written` counts the write as done with no error, `recorded`
    returns, and ``a`` is undone while its completion is still in flight. The journal's
    refusal, which comes after, is lost (nothing of it reaches the caller)."""
    undone: list[str] = []
    r: rp.Reactor[Any] = rp.Reactor("late", returns="b")

    @r.step
    async def a() -> int:
        return 1

    @a.undo
    async def unda(value: int) -> None:
        undone.append("after the refusal" if journal.settled_at else "in flight")

    @r.step
    async def b(a: int) -> int:
        return a

    async with LateRefusal(tmp_path / "runs.db") as journal:
        run = asyncio.ensure_future(r.run({}, journal=journal, run_id="l1"))
        await journal.sent.wait()
        await asyncio.sleep(0)  # (the worker of `a` waits for its write)
        run.cancel()
        for _ in range(300):  # bounded: a run that waits for the write never undoes here
            if undone or run.done():
                break
            await asyncio.sleep(0.01)
        journal.release.set()
        with pytest.raises(asyncio.CancelledError) as cancelled:
            await run
        await journal.task
    # `a`'s completion was not settled when it was undone (4087159 waits for it) ...
    assert undone == ["after the refusal"]
    # ... and the journal's refusal reaches the caller (a note on the cancellation).
    notes = getattr(cancelled.value, "__notes__", [])
    assert any("disk I/O error" in n for n in notes), notes
