"""Third review of the second review's fixes (to_undo, RunState.left, _composed):
failing tests, each showing one bug."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import reactorpy as rp
from reactorpy.testing import run_virtual

from .killing import calls, crash_child, lines
from .review3_child import halting


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "ledger.txt"
    monkeypatch.setenv("REACTORPY_TEST_LEDGER", str(path))
    for name in ("REVIEW3_HANG", "REVIEW3_SLOW", "REVIEW3_HALT"):
        monkeypatch.delenv(name, raising=False)
    return path


def crash(db: Path, ledger: Path, reactor: str, run_id: str, **env: str) -> None:
    crash_child("tests.review3_child", db, ledger, reactor, run_id, "REVIEW3_", **env)


def test_a_recovered_run_that_halts_keeps_what_a_composite_in_flight_completed(
    tmp_path: Path, ledger: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crash comes in ``sub.b``: ``sub.a`` is completed in the journal, ``sub`` in
    flight. Continued one step at a time, ``h`` (first: the longer chain) halts before
    ``sub`` runs again: the run halts. Its checkpoint is built from the undo stack,
    which never held ``sub.a`` (only `to_undo` merges the journal's leftovers, and only
    when the run fails): resumed from it (``Durable(recovering=False)``: no entries),
    ``sub``'s child starts afresh and does ``a`` a second time; the first ``a`` is never
    undone nor taken as done."""
    db = tmp_path / "runs.db"
    crash(db, ledger, "halting", "h-1", HANG="b", SLOW="h")
    assert calls(ledger, "do", "a") == 1
    monkeypatch.setenv("REVIEW3_HALT", "h")

    async def again() -> None:
        async with rp.SQLiteJournal(db) as journal:
            with pytest.raises(rp.Halted):
                await halting.run({}, journal=journal, run_id="h-1", max_concurrency=1)
            assert calls(ledger, "do", "a") == 1, lines(ledger)
            monkeypatch.delenv("REVIEW3_HALT")
            await halting.resume("h-1", journal=journal)

    asyncio.run(again())
    # ``a``'s effect is there once: restored (done once), or its first run undone.
    assert calls(ledger, "do", "a") - calls(ledger, "undo", "unda") == 1, lines(ledger)


def _composite_whose_undo_fails(calls: list[str]) -> rp.Reactor[str]:
    child: rp.Reactor[str] = rp.Reactor("child3", returns="b")

    @child.step
    async def a() -> str:
        calls.append("do a")
        return "a"

    @a.undo
    async def unda(value: str) -> None:
        calls.append("undo a")
        raise RuntimeError("unda failed")

    @child.step
    async def b(a: str) -> str:
        await asyncio.sleep(100)
        return "b"

    root: rp.Reactor[str] = rp.Reactor("root3", returns="sub")
    root.compose("sub", child)
    return root


def test_a_composite_whose_child_undo_failed_as_the_run_halted_is_not_run_again_on_resume() -> (
    None
):
    """The run's timeout halts it while ``sub``'s child waits in ``b``; at the end of the
    grace the child is cancelled and undoes ``a``, whose undo fails. ``sub`` stays pending
    in the checkpoint (`RunState.left` is not kept in it), so the resume runs ``sub``
    again: ``a`` a second time, over what its failed undo left (the rule of
    RunState.left: never again over a failed undo)."""
    calls: list[str] = []
    root = _composite_whose_undo_fails(calls)

    async def go() -> Any:
        try:
            await root.run({}, timeout=1, grace=0)
        except rp.Halted as halted:
            checkpoint = halted.checkpoint
        else:  # pragma: no cover
            raise AssertionError("the run did not halt")
        assert calls == ["do a", "undo a"], calls
        try:
            await root.resume(checkpoint)
        except (rp.RunFailed, rp.ResumeError, rp.Halted):
            pass

    run_virtual(go())
    assert calls.count("do a") == 1, calls
