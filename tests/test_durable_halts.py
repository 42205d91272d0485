"""Halts and failed undos: a recovered run that halts keeps what a composite in flight
at the crash completed (a resume by id restores it from the journal), a run that halts
over a composite whose children's undo failed fails instead, and a hook failing on an undo
that succeeded does not count as a failed undo. (Found by the third review of this
work.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import reactorpy as rp
from reactorpy.testing import run_virtual

from .composite_child import crash, fresh_ledger, halting, undo_fails
from .killing import calls, lines


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return fresh_ledger(tmp_path, monkeypatch)


def test_a_recovered_run_that_halts_keeps_what_a_composite_in_flight_completed(
    tmp_path: Path, ledger: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crash comes in ``sub.b``: ``sub.a`` is completed in the journal, ``sub`` in
    flight. Continued one step at a time, ``h`` (first: the longer chain) halts before
    ``sub`` runs again: the run halts. Its checkpoint is built from the undo stack, which
    never held ``sub.a``; resumed by id, ``sub``'s child restores it from the journal
    (it used to start afresh, doing ``a`` a second time, the first never undone)."""
    db = tmp_path / "runs.db"
    crash(db, ledger, "halting", "h-1", HANG="b", SLOW="h")
    assert calls(ledger, "do", "a") == 1
    monkeypatch.setenv("CHILD_HALT", "h")

    async def again() -> None:
        async with rp.SQLiteJournal(db) as journal:
            with pytest.raises(rp.Halted):
                await halting.run({}, journal=journal, run_id="h-1", max_concurrency=1)
            assert calls(ledger, "do", "a") == 1, lines(ledger)
            monkeypatch.delenv("CHILD_HALT")
            await halting.resume("h-1", journal=journal)

    asyncio.run(again())
    # ``a``'s effect is there once: restored (done once), or its first run undone.
    assert calls(ledger, "do", "a") - calls(ledger, "undo", "unda") == 1, lines(ledger)


def _composite_whose_undo_fails(calls: list[str]) -> rp.Reactor[str]:
    root: rp.Reactor[str] = rp.Reactor("root3", returns="sub")
    root.compose("sub", undo_fails(calls, "child3"))
    return root


def test_a_composite_whose_child_undo_failed_as_the_run_halted_is_not_run_again_on_resume() -> None:
    """The run's timeout halts it while ``sub``'s child waits in ``b``; at the end of the
    grace the child is cancelled and undoes ``a``, whose undo fails. Resumed, the run would
    run ``sub`` again, ``a`` over what its failed undo left (the rule of `RunState.left`:
    never again over a failed undo): the run fails instead of halting, saying so."""
    calls: list[str] = []
    root = _composite_whose_undo_fails(calls)

    async def go() -> BaseException:
        try:
            await root.run({}, timeout=1, grace=0)
        except rp.RunFailed as failed:
            return failed
        raise AssertionError("the run did not fail")  # pragma: no cover

    failed = run_virtual(go())
    assert calls == ["do a", "undo a"], calls
    assert "cannot run again on resume" in repr(failed.exceptions)


class _UndoWatcherFails:
    """Middleware whose on_event hook fails on each undo_complete (the undo itself ran)."""

    event_kinds = frozenset({"undo_complete"})

    def on_event(self, event: rp.Event) -> None:
        raise RuntimeError("the watcher failed")


def test_a_map_whose_undo_succeeded_but_a_hook_failed_is_still_retried() -> None:
    """Element ``[1]`` fails once; the map undoes element ``[0]``: the undo runs and
    succeeds, only a middleware hook watching it fails. `ChildScope.undo` takes every
    error `undo_all` returns (hook errors too) for a failed undo and adds the step to
    `RunState.left`: the compensate's ``rp.Retry`` is refused, and the run fails though
    nothing was left behind."""
    calls: list[str] = []
    element: rp.Reactor[int] = rp.Reactor("element3", inputs=["n"], returns="x")

    @element.step
    async def x(n: int) -> int:
        calls.append(f"do {n}")
        if n == 1 and calls.count("do 1") == 1:
            await asyncio.sleep(1)
            raise RuntimeError("first try of element 1")
        return n

    @x.undo
    async def undx(value: int) -> None:
        calls.append(f"undo {value}")

    root: rp.Reactor[list[int]] = rp.Reactor("maps3", returns="m")
    m = root.map("m", rp.Value([0, 1]), element, retries=1)

    @m.compensate
    def again(error: BaseException) -> None:
        raise rp.Retry()

    result = run_virtual(root.run({}, middleware=[_UndoWatcherFails()]))
    assert result == [0, 1], calls
