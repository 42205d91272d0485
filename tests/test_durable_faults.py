"""Durable runs when things go wrong around them: cancellation while the journal records the
run's start, undo request or end; a journal that cannot record an undo; a resumed run
given another run's checkpoint; a serializer that raises what it was not expected to; and
options that a journal does not go with. Found by review; each would lose an undo, hang,
or record a wrong ending."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import reactorpy as rp


class Gated(rp.SQLiteJournal):
    """A journal whose `request_undo`, `create_run` or `mark_undone` waits for the test:
    entered says it was called, release lets it go on; `fail_marks` makes marking an undo
    done fail."""

    def __init__(self, path: Path, gate: str = "", fail_marks: bool = False) -> None:
        super().__init__(path)
        self.gate, self.fail_marks = gate, fail_marks
        self.entered, self.release = asyncio.Event(), asyncio.Event()

    async def _wait(self, what: str) -> None:
        if what == self.gate:
            self.entered.set()
            await self.release.wait()

    async def request_undo(self, run_id: str, *, error: bytes | None = None) -> None:
        await self._wait("request_undo")
        await super().request_undo(run_id, error=error)

    async def create_run(self, *args: Any, **kwargs: Any) -> Any:
        await self._wait("create_run")
        return await super().create_run(*args, **kwargs)

    def mark_undone(self, run_id: str, key: str) -> asyncio.Future[None]:
        if self.fail_marks:
            future = asyncio.get_running_loop().create_future()
            future.set_exception(OSError("disk full"))
            return future
        return super().mark_undone(run_id, key)


def saga(log: list[str]) -> rp.Reactor[Any]:
    r: rp.Reactor[Any] = rp.Reactor("saga", inputs=["x"], returns="ship")

    @r.step
    async def hold(x: int) -> str:
        log.append("hold")
        return "h"

    @hold.undo
    async def unhold(value: str) -> None:
        log.append("unhold")

    @r.step
    async def charge(hold: str) -> str:
        log.append("charge")
        return "c"

    @charge.undo
    async def refund(value: str) -> None:
        log.append("refund")

    @r.step
    async def ship(charge: str) -> str:
        raise RuntimeError("carrier down")

    return r


async def test_cancelled_while_the_undo_request_is_recorded_still_undoes(tmp_path: Path) -> None:
    log: list[str] = []
    async with Gated(tmp_path / "runs.db", gate="request_undo") as journal:
        task = asyncio.ensure_future(saga(log).run({"x": 1}, journal=journal, run_id="r"))
        async with asyncio.timeout(10):
            await journal.entered.wait()
        task.cancel()
        journal.release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert sorted(log) == ["charge", "hold", "refund", "unhold"]
        record = await journal.get("r")
        assert record.status == "failed"
        assert record.undo_requested


async def test_a_journal_that_cannot_record_an_undo_lets_the_others_run(tmp_path: Path) -> None:
    log: list[str] = []
    async with Gated(tmp_path / "runs.db", fail_marks=True) as journal:
        with pytest.raises(rp.RunFailed) as caught:
            await saga(log).run({"x": 1}, journal=journal, run_id="r")
    assert log == ["hold", "charge", "refund", "unhold"]
    assert "disk full" in repr(caught.value.exceptions)


async def test_cancelled_while_the_run_is_recorded_runs_nothing_ever(tmp_path: Path) -> None:
    log: list[str] = []
    async with Gated(tmp_path / "runs.db", gate="create_run") as journal:
        task = asyncio.ensure_future(saga(log).run({"x": 1}, journal=journal, run_id="r"))
        async with asyncio.timeout(10):
            await journal.entered.wait()
        task.cancel()
        journal.release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await journal.get("r")).status == "failed"
        assert await saga(log).recover(journal) == []
    assert log == []


async def test_a_run_resumes_only_with_its_own_checkpoint(tmp_path: Path) -> None:
    first: rp.Reactor[str] = rp.Reactor("first", returns="wait")
    second: rp.Reactor[str] = rp.Reactor("second", returns="wait")
    for r in (first, second):

        @r.step
        async def wait() -> str:
            raise rp.Halt("later")

    async with rp.SQLiteJournal(tmp_path / "runs.db") as journal:
        with pytest.raises(rp.Halted):
            await first.run(journal=journal, run_id="one")
        with pytest.raises(rp.Halted) as other:
            await second.run(journal=journal, run_id="two")
        with pytest.raises(rp.ResumeError, match="its own checkpoint"):
            await second.resume(other.value.checkpoint, journal=journal, run_id="one")
        assert (await journal.get("one")).status == "halted"


async def test_a_value_the_serializer_chokes_on_fails_its_step(tmp_path: Path) -> None:
    """JSON raises RecursionError on a deeply nested value (not TypeError): the step fails,
    naming it, and the run ends (it hung)."""
    r: rp.Reactor[Any] = rp.Reactor("deep", returns="b")

    @r.step
    async def a() -> int:
        return 1

    @r.step
    async def b(a: int) -> Any:
        nested: Any = []
        for _ in range(100_000):
            nested = [nested]
        return nested

    async with rp.SQLiteJournal(tmp_path / "runs.db", serializer=rp.JsonSerializer()) as journal:
        async with asyncio.timeout(30):
            with pytest.raises(rp.RunFailed) as caught:
                await r.run(journal=journal, run_id="deep")
    assert "step 'b'" in repr(caught.value.exceptions)


async def test_options_a_journal_does_not_go_with_are_refused(tmp_path: Path) -> None:
    log: list[str] = []
    async with rp.SQLiteJournal(tmp_path / "runs.db") as journal:
        with pytest.raises(TypeError, match="undo\\(i, journal=j\\)"):
            await saga(log).run_reversible({"x": 1}, journal=journal, run_id="r")
        with pytest.raises(TypeError, match="run it again by its id"):
            await saga(log).recover(journal, run_id="r")
    assert log == []


async def test_a_run_whose_lease_was_taken_undoes_nothing_here(tmp_path: Path) -> None:
    """The run passed to another process (its lease expired and it was claimed) when a
    step fails: this process undoes nothing (the new owner finishes the run) and raises
    OwnershipError; middleware hears of it."""
    import sqlite3

    log: list[str] = []
    heard: list[str] = []
    path = tmp_path / "runs.db"
    r: rp.Reactor[str] = rp.Reactor("lease", returns="b")

    @r.step
    async def a() -> str:
        log.append("a")
        return "a"

    @a.undo
    async def undo_a(value: str) -> None:
        log.append("undo a")

    @r.step
    async def b(a: str) -> str:
        claim = sqlite3.connect(path, isolation_level=None)  # another process took the run
        claim.execute("UPDATE runs SET owner = 'elsewhere:1:1' WHERE run_id = 'r'")
        claim.close()
        raise RuntimeError("b failed")

    class Hears:
        def on_run_error(self, info: rp.RunInfo, error: BaseException) -> None:
            heard.append(type(error).__name__)

    async with rp.SQLiteJournal(path) as journal:
        with pytest.raises(rp.OwnershipError):
            await r.run(journal=journal, run_id="r", middleware=[Hears()])
    assert log == ["a"]
    assert heard == ["OwnershipError"]
