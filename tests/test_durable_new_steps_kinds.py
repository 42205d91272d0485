"""New steps (`rp.NewSteps`) of every kind undone from the journal as their run undoes them
in its process (every completed undoable step once, newest first), with real SIGKILLs
(tests/new_steps_child.py): new steps that return new steps, a step replacing itself
round after round, new steps inside a composed reactor and inside map elements whose
failure is compensated after a recovery, crashes in an undo, a step completed beside new
steps, new steps resumed by id, a step whose new steps failed run again. (Most written by
helpers trying to break them: the step's own undo was not journaled, the journal's order
put a step after the new steps it returned, a recovered child run left out their records,
and a seq reserved for a completion that never came went to the next one.)"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import reactorpy as rp

from .composite_child import fresh_ledger
from .killing import lines
from .new_steps_child import REACTORS, crash, journal_at


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("CHILD_MODE", raising=False)
    return fresh_ledger(tmp_path, monkeypatch)


def undos(ledger: Path) -> list[str]:
    return [ln.split()[1] for ln in lines(ledger) if ln.startswith("undo ")]


def run_in_process(db: Path, reactor: str, run_id: str, json_: bool = False) -> Any:
    async def main() -> Any:
        async with journal_at(db, json_) as journal:
            try:
                return await REACTORS[reactor].run({}, journal=journal, run_id=run_id)
            except rp.RunFailed as failed:
                return failed

    return asyncio.run(main())


def recover(db: Path, reactor: str, undo: bool, json_: bool = False) -> list[rp.RunRecord]:
    async def main() -> list[rp.RunRecord]:
        async with journal_at(db, json_) as journal:
            return await REACTORS[reactor].recover(journal, undo=undo)

    return asyncio.run(main())


def undo_by_id(db: Path, reactor: str, run_id: str, json_: bool = False) -> None:
    async def main() -> None:
        async with journal_at(db, json_) as journal:
            await REACTORS[reactor].undo(run_id, journal=journal)

    asyncio.run(main())


NESTED = ["unm2", "unm1", "unspawn"]  # newest first, as the run undoes them in its process


# --- 1. nested new steps (a new step that returns new steps), the step's own undo ---------


@pytest.mark.parametrize("json_", [False, True], ids=["pickle", "json"])
def test_nested_in_process_failure_baseline(
    tmp_path: Path, ledger: Path, monkeypatch: pytest.MonkeyPatch, json_: bool
) -> None:
    """No crash: ``tail`` fails; the run undoes m2, m1, spawn, newest first (holds)."""
    monkeypatch.setenv("CHILD_FAIL", "tail")
    failed = run_in_process(tmp_path / "runs.db", "nested", "n-0", json_)
    assert isinstance(failed, rp.RunFailed)
    assert undos(ledger) == NESTED


@pytest.mark.parametrize("json_", [False, True], ids=["pickle", "json"])
def test_nested_undone_by_id(tmp_path: Path, ledger: Path, json_: bool) -> None:
    """The run completes; undone by its id, every undoable step is undone once, newest
    first: m1 (a new step, its undo a module function) and spawn included."""
    db = tmp_path / "runs.db"
    assert run_in_process(db, "nested", "n-1", json_) == "spawned"

    undo_by_id(db, "nested", "n-1", json_)
    assert undos(ledger) == NESTED


def test_nested_crash_then_recover_undo(tmp_path: Path, ledger: Path) -> None:
    """SIGKILL in ``tail`` (spawn, m1, m2 completed); ``recover(undo=True)``."""
    db = tmp_path / "runs.db"
    crash(db, ledger, "nested", "n-2", HANG="tail")
    (record,) = recover(db, "nested", undo=True)
    assert record.status == "undone"
    assert undos(ledger) == NESTED


def test_nested_crash_then_recover_forward_and_fail(
    tmp_path: Path, ledger: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL in ``tail``; recovered forward, ``tail`` fails: the recovered run undoes
    what was completed before the crash."""
    db = tmp_path / "runs.db"
    crash(db, ledger, "nested", "n-3", HANG="tail")
    monkeypatch.setenv("CHILD_FAIL", "tail")
    (record,) = recover(db, "nested", undo=False)
    assert record.status == "failed"
    assert undos(ledger) == NESTED


# --- 2. a step replacing itself with an undoable module-level step (countdown) -----------

COUNTDOWN_IN_PROCESS = ["untick0", "untick1", "untick2"]


def test_countdown_in_process_failure_baseline(
    tmp_path: Path, ledger: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHILD_FAIL", "after")
    assert isinstance(run_in_process(tmp_path / "runs.db", "countdown", "c-0"), rp.RunFailed)
    assert undos(ledger) == COUNTDOWN_IN_PROCESS


def test_countdown_undone_by_id_same_order(tmp_path: Path, ledger: Path) -> None:
    db = tmp_path / "runs.db"
    assert run_in_process(db, "countdown", "c-1") == "liftoff"

    undo_by_id(db, "countdown", "c-1")
    assert undos(ledger) == COUNTDOWN_IN_PROCESS


def test_countdown_crash_then_recover_undo(tmp_path: Path, ledger: Path) -> None:
    db = tmp_path / "runs.db"
    crash(db, ledger, "countdown", "c-2", HANG="after")
    (record,) = recover(db, "countdown", undo=True)
    assert record.status == "undone"
    assert undos(ledger) == COUNTDOWN_IN_PROCESS


def test_countdown_crash_then_forward_fail(
    tmp_path: Path, ledger: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "runs.db"
    crash(db, ledger, "countdown", "c-3", HANG="after")
    monkeypatch.setenv("CHILD_FAIL", "after")
    (record,) = recover(db, "countdown", undo=False)
    assert record.status == "failed"
    assert undos(ledger) == COUNTDOWN_IN_PROCESS


def test_countdown_crash_mid_rounds_forward(tmp_path: Path, ledger: Path) -> None:
    """SIGKILL in round n=0 (nothing of the loop recorded): forward recovery runs the
    loop again and completes; undone by id, each round undone once (holds if once)."""
    db = tmp_path / "runs.db"
    crash(db, ledger, "countdown", "c-4", HANG="count0")
    (record,) = recover(db, "countdown", undo=False)
    assert record.status == "completed"

    undo_by_id(db, "countdown", "c-4")
    assert sorted(undos(ledger)) == sorted(COUNTDOWN_IN_PROCESS)


# --- 3. a composite whose child holds new steps fails after a recovery, compensated ------


def test_composed_in_process_failure_compensated_baseline(
    tmp_path: Path, ledger: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No crash: ``check`` fails inside ``sub``; the child undoes n1; ``sub`` is
    compensated and the run completes (holds)."""
    monkeypatch.setenv("CHILD_FAIL", "check")
    assert run_in_process(tmp_path / "runs.db", "composed", "k-0") == "fallback"
    assert undos(ledger) == ["undn1"]


def test_composed_crash_then_forward_failure_compensated(
    tmp_path: Path, ledger: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL in ``check`` (n1 completed); recovered forward, ``check`` fails: the child
    of ``sub`` fails and should undo n1 as it does in process; ``sub`` is compensated."""
    db = tmp_path / "runs.db"
    crash(db, ledger, "composed", "k-1", HANG="check")
    monkeypatch.setenv("CHILD_FAIL", "check")
    (record,) = recover(db, "composed", undo=False)
    assert (record.status, record.result) == ("completed", "fallback")
    assert undos(ledger) == ["undn1"]


def test_mapped_in_process_failure_compensated_baseline(
    tmp_path: Path, ledger: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHILD_FAIL", "look3")
    assert run_in_process(tmp_path / "runs.db", "mapped", "m-0") == "fallback"
    assert sorted(undos(ledger)) == ["une1", "une2", "une3"]


def test_mapped_crash_then_forward_failure_compensated(
    tmp_path: Path, ledger: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL in ``look3``; recovered forward, ``look3`` fails: every element's ``e``
    should be undone (the map undoes what its elements completed), as in process."""
    db = tmp_path / "runs.db"
    crash(db, ledger, "mapped", "m-1", HANG="look3")
    monkeypatch.setenv("CHILD_FAIL", "look3")
    (record,) = recover(db, "mapped", undo=False)
    assert (record.status, record.result) == ("completed", "fallback")
    assert sorted(undos(ledger)) == ["une1", "une2", "une3"]


def test_mapped_crash_then_recover_undo(tmp_path: Path, ledger: Path) -> None:
    db = tmp_path / "runs.db"
    crash(db, ledger, "mapped", "m-2", HANG="look3")
    (record,) = recover(db, "mapped", undo=True)
    assert record.status == "undone"
    assert sorted(undos(ledger)) == ["une1", "une2", "une3"]


# --- 4. crashes during undo -----------------------------------------------------------------


def test_countdown_crash_in_undo_then_recover(
    tmp_path: Path, ledger: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``after`` fails in the child process; its undo hangs in untick1 (untick0 done):
    SIGKILL. Recovered: untick1 again (at least once), untick2 once, untick0 not again."""
    db = tmp_path / "runs.db"
    crash(db, ledger, "countdown", "u-1", FAIL="after", HANG="untick1")
    assert undos(ledger) == ["untick0", "untick1"]
    (record,) = recover(db, "countdown", undo=False)
    assert record.status == "failed"
    assert undos(ledger) == ["untick0", "untick1", "untick1", "untick2"]


def test_recover_undo_killed_then_recovered_again(
    tmp_path: Path, ledger: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL in ``done`` of ``mapped``; ``recover(undo=True)`` in another process is
    killed in the undo of e of element 2; recovered again with ``undo=True``."""
    db = tmp_path / "runs.db"
    crash(db, ledger, "mapped", "u-2", HANG="done")
    monkeypatch.setenv("CHILD_MODE", "recover-undo")
    crash(db, ledger, "mapped", "unused", HANG="une2")
    monkeypatch.delenv("CHILD_MODE")
    first = undos(ledger)
    assert first[-1] == "une2"
    (record,) = recover(db, "mapped", undo=True)
    assert record.status == "undone"
    after = undos(ledger)
    assert sorted(after) == sorted(["une1", "une2", "une2", "une3"])
    assert after.count("une3") == 1
    assert after.count("une1") == 1


# --- 5. a step beside one whose new steps run; a halt resumed by id ------------------------


@pytest.mark.parametrize("how", ["in-process", "by-id", "recover-undo"])
def test_a_step_completed_while_new_steps_ran_is_undone_in_completion_order(
    tmp_path: Path, ledger: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """``lead`` returns ``c``; ``x`` completes after ``lead`` returned, before ``c``. The
    run undoes ``c``, ``x``, ``lead``; so does an undo from the journal: ``lead``'s entry,
    written when ``c`` ends, takes its place when ``lead`` returned."""
    db = tmp_path / "runs.db"
    if how == "in-process":
        monkeypatch.setenv("CHILD_FAIL", "join")
        assert isinstance(run_in_process(db, "interleaved", "i-1"), rp.RunFailed)
    elif how == "by-id":
        assert run_in_process(db, "interleaved", "i-1") == "lead+x"

        undo_by_id(db, "interleaved", "i-1")
    else:
        crash(db, ledger, "interleaved", "i-1", HANG="join")
        (record,) = recover(db, "interleaved", undo=True)
        assert record.status == "undone"
    assert undos(ledger) == ["unc", "unx", "unlead"]


def test_new_steps_resumed_by_id_are_undone_before_the_step_that_returned_them(
    tmp_path: Path, ledger: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``split``'s new step ``h2`` halts (``h1`` completed); resumed by its id in another
    run of the process, they continue and the run completes. Undone by its id, ``split``
    comes after both, though its entry was written after ``h1``'s."""
    db = tmp_path / "runs.db"
    monkeypatch.setenv("CHILD_HALT", "h2")

    async def main() -> None:
        async with journal_at(db) as journal:
            with pytest.raises(rp.Halted):
                await REACTORS["halting"].run({}, journal=journal, run_id="h-1")
        monkeypatch.delenv("CHILD_HALT")
        async with journal_at(db) as journal:
            assert "split" == await REACTORS["halting"].resume("h-1", journal=journal)
            await REACTORS["halting"].undo("h-1", journal=journal)

    asyncio.run(main())
    assert undos(ledger) == ["unh2", "unh1", "unsplit"]


# --- 6. a reservation for a completion that never came -------------------------------------


@pytest.mark.parametrize(("reactor", "hang"), [("retried", "h"), ("deeper", "hh")])
def test_a_step_whose_new_steps_failed_keeps_its_completion_after_the_rollback(
    tmp_path: Path, ledger: Path, reactor: str, hang: str
) -> None:
    """``g`` returns new steps that fail: ``sub`` rolls back (its mark in the journal) and
    runs again, ``g`` completing plainly after the mark. The crash comes after ``sub``'s
    child completed ``g`` (in ``h``), or after ``sub`` (in ``hh``, one composite up).
    Recovered, ``g`` is neither undone nor run again: its completion is no rolled-back
    one (the seq ``g`` took for the completion that never came is not used by the next)."""
    db = tmp_path / "runs.db"
    crash(db, ledger, reactor, "r-1", HANG=hang)
    before = len(lines(ledger))
    (record,) = recover(db, reactor, undo=False)
    assert record.status == "completed"
    after = lines(ledger)[before:]
    assert "undo g" not in after
    assert "do g" not in after


# --- 7. a crash while a step's new steps run: its own undo is in the journal -----------------


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("recover-undo", ["unm1", "unspawn"]),  # m2 never completed
        ("forward-fails", ["unm1", "unspawn"]),  # spawn fails when it runs again
        ("forward-then-by-id", NESTED),  # the completions replace what they returned
    ],
)
def test_a_crash_while_new_steps_run_leaves_the_steps_own_undo_in_the_journal(
    tmp_path: Path, ledger: Path, monkeypatch: pytest.MonkeyPatch, how: str, expected: list[str]
) -> None:
    """The crash comes in ``m2``, the new step of ``m1``, itself the new step of ``spawn``:
    neither ``spawn`` nor ``m1`` has completed, both did their work and returned. Undone
    from the journal, each is undone once, newest first; run again and completed, each
    is undone once too (its completion replaced what it recorded when it returned)."""
    db = tmp_path / "runs.db"
    crash(db, ledger, "nested", "n-9", HANG="m2")
    if how == "recover-undo":
        (record,) = recover(db, "nested", undo=True)
        assert record.status == "undone"
    elif how == "forward-fails":
        monkeypatch.setenv("CHILD_FAIL", "spawn")
        (record,) = recover(db, "nested", undo=False)
        assert record.status == "failed"
    else:
        (record,) = recover(db, "nested", undo=False)
        assert record.status == "completed"

        undo_by_id(db, "nested", "n-9")
    assert undos(ledger) == expected


def test_a_step_that_only_returned_new_steps_may_be_rewired_before_a_recovery(
    tmp_path: Path, ledger: Path
) -> None:
    """The crash comes in ``spawn``'s new steps: ``spawn`` returned, its undo is in the
    journal, but it did not complete. A reactor whose ``spawn`` is rewired since (it reads
    a new step ``pre``) still recovers the run: ``spawn`` runs again, as before (only the
    wiring of completed steps must stay)."""
    db = tmp_path / "runs.db"
    crash(db, ledger, "nested", "n-10", HANG="m2")
    rewired: rp.Reactor[str] = rp.Reactor("nested", returns="spawn")

    @rewired.step
    async def pre() -> int:
        return 1

    @rewired.step
    async def spawn(pre: int) -> str:
        return "ran again"

    async def recover_rewired() -> list[rp.RunRecord]:
        async with journal_at(db) as journal:
            return await rewired.recover(journal)

    (record,) = asyncio.run(recover_rewired())
    assert (record.status, record.result) == ("completed", "ran again")
