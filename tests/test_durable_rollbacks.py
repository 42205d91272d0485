"""A child run's rollback when the recovered run fails at once (what the crash cut short is
undone, and what a composite in flight had completed), and names that would share a
child's keys, refused: crashes with a real SIGKILL (``tests/composite_child.py``), on
SQLite. (Found by the first review of the rollback marks.)"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import reactorpy as rp

from .composite_child import FailsToStart, crash, fresh_ledger, rolled
from .killing import calls


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return fresh_ledger(tmp_path, monkeypatch)


def test_a_rollback_cut_short_is_finished_when_the_recovered_run_fails_at_once(
    tmp_path: Path, ledger: Path
) -> None:
    """The crash comes in the child's rollback: ``sub.b`` failed, the rollback mark of
    ``sub.`` is in the journal, ``unda`` (the undo of ``sub.a``) started and never ended.
    Running the run id again continues it; it fails before any step starts (its
    on_run_start raises). The failed run must undo what the journal holds as completed
    and not undone: ``sub.a``. It does not: the root's undo stack holds only done steps
    and the children of done composites; the cut-short rollback is finished only by the
    child's ``restore_recovered``, which never runs (``sub`` never starts again)."""
    db = tmp_path / "runs.db"
    crash(db, ledger, "rolled", "r-1", FAIL="b", HANG="unda")
    assert (calls(ledger, "do", "a"), calls(ledger, "undo", "unda")) == (1, 1)

    async def again() -> tuple[BaseException, rp.StoredRun]:
        async with rp.SQLiteJournal(db) as journal:
            with pytest.raises(rp.RunFailed) as failed:
                await rolled.run({}, journal=journal, run_id="r-1", middleware=[FailsToStart()])
            return failed.value, await journal.load("r-1")

    error, stored = asyncio.run(again())
    assert "on_run_start refused" in repr(error.exceptions)
    assert stored.record.status == "failed"
    # sub.a completed and its undo never ended: it must be undone now (at least once more).
    assert calls(ledger, "undo", "unda") == 2
    assert "sub.a" in stored.undone


def test_a_completion_inside_an_unfinished_composite_is_undone_when_the_recovered_run_fails(
    tmp_path: Path, ledger: Path
) -> None:
    """The same without a rollback: the crash comes in ``sub.b`` (``sub.a`` completed,
    ``sub`` in flight). The continued run fails at once (on_run_start): ``sub.a`` is never
    undone, though the journal holds it as completed (the root's undo stack leaves out
    what in-flight composites completed)."""
    db = tmp_path / "runs.db"
    crash(db, ledger, "rolled", "r-2", HANG="b")

    async def again() -> rp.StoredRun:
        async with rp.SQLiteJournal(db) as journal:
            with pytest.raises(rp.RunFailed):
                await rolled.run({}, journal=journal, run_id="r-2", middleware=[FailsToStart()])
            return await journal.load("r-2")

    stored = asyncio.run(again())
    assert stored.record.status == "failed"
    assert calls(ledger, "undo", "unda") == 1
    assert "sub.a" in stored.undone


def test_a_step_named_after_another_and_a_dot_is_refused() -> None:
    """A root step named ``sub.x`` beside a composite ``sub`` would share its key with the
    child's step ``x`` (in events and the journal), and the child's rollback mark (of
    ``sub.``) would void it: `plan()` refuses the pair, naming both; a dotted name alone
    is fine."""
    r: rp.Reactor[str] = rp.Reactor("dotted", returns="sub")

    async def x() -> str:
        return "x"

    r.add(rp.step(x, name="sub.x"))
    r.compose("sub", rolled)
    with pytest.raises(rp.DefinitionError, match=r"step 'sub\.x' is named after step 'sub'"):
        r.plan()
    for names in (["items", "items.[3].y"], ["a", "a.b.c"], ["a.b", "a.b.c"]):
        deep: rp.Reactor[Any] = rp.Reactor("deep")
        for name in names:
            deep.add(rp.step(x, name=name))
        with pytest.raises(rp.DefinitionError, match="is named after step"):
            deep.plan()
    alone: rp.Reactor[str] = rp.Reactor("alone", returns="a.b")
    alone.add(rp.step(x, name="a.b"))
    assert "x" == alone.run_sync()
