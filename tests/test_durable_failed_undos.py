"""What a journaled run undoes when it fails after a recovery (its stack merged with what
the journal holds besides, the undo request first, a failed undo not run again), a
composite never retried over a failed undo, and the composed reactors' fingerprints under
any serializer: crashes with a real SIGKILL (``tests/composite_child.py``) on SQLite,
and in-process runs. (Found by the second review of this work.)"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import reactorpy as rp
from reactorpy.testing import run_virtual

from .composite_child import (
    FailsToStart,
    TupleJson,
    chained,
    crash,
    fresh_ledger,
    solo,
    undo_fails,
)
from .killing import calls, lines


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return fresh_ledger(tmp_path, monkeypatch)


def undos(ledger: Path) -> list[str]:
    return [line.split()[1] for line in lines(ledger) if line.startswith("undo ")]


# ------------------------------------------------------------ undo_left (47f065b)
def test_undo_left_keeps_newest_first_across_the_stack_and_the_journal(
    tmp_path: Path, ledger: Path
) -> None:
    """The crash comes in ``sub.b``: ``r1`` (seq 1), ``gate``, ``sub.a`` (made from
    ``r1``'s result, newer) are completed. The continued run fails at once (on_run_start):
    its undo stack holds ``r1``; ``undo_left`` then undoes ``sub.a``, which is newer
    and built on ``r1``. Undo must go newest first across both: ``unda`` then ``undr1``.
    It goes ``undr1`` then ``unda`` (run.py: the stack, then undo_left after it)."""
    db = tmp_path / "runs.db"
    crash(db, ledger, "chained", "c-1", HANG="b")
    assert (calls(ledger, "do", "r1"), calls(ledger, "do", "a")) == (1, 1)

    async def again() -> rp.StoredRun:
        async with rp.SQLiteJournal(db) as journal:
            with pytest.raises(rp.RunFailed):
                await chained.run({}, journal=journal, run_id="c-1", middleware=[FailsToStart()])
            return await journal.load("c-1")

    stored = asyncio.run(again())
    assert {"r1", "sub.a"} <= set(stored.undone)
    assert undos(ledger) == ["unda", "undr1"]


def test_undo_left_records_the_undo_request_before_it_undoes(tmp_path: Path, ledger: Path) -> None:
    """``solo``: ``r1`` has no undo, so the continued run's undo stack is empty when it
    fails at once (on_run_start); ``undo_requested`` returns at an empty ledger without
    recording the undo request, and ``undo_left`` undoes ``sub.a`` all the same. A crash
    in that undo (``unda`` ran, not yet marked) leaves a run the journal holds as running
    forward: a recovery restores ``sub.a`` as completed and finishes the run, returning
    a result whose ``a`` was undone (never a wrong value: it must finish the undo, or do
    ``a`` again)."""
    db = tmp_path / "runs.db"
    crash(db, ledger, "solo", "s-1", HANG="b")
    crash(db, ledger, "solo", "s-1", FAILSTART="1", HANG="unda")
    assert (calls(ledger, "do", "a"), calls(ledger, "undo", "unda")) == (1, 1)

    async def recover() -> rp.StoredRun:
        async with rp.SQLiteJournal(db) as journal:
            await solo.recover(journal)
            return await journal.load("s-1")

    stored = asyncio.run(recover())
    # The undo request was recorded before the undo: the recovery finishes the undo (``unda``
    # again, as undo is at least once after a crash) and the run stays failed.
    assert stored.record.status == "failed"
    assert stored.record.undo_requested
    assert "sub.a" in stored.undone
    assert calls(ledger, "undo", "unda") == 2


def test_undo_left_does_not_undo_again_what_a_child_failed_to_undo(
    tmp_path: Path, ledger: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crash comes in ``gate``. Continued, ``sub`` runs: ``a`` completes, ``b``
    fails, the child's rollback runs ``unda``, which fails (RunFailed.undo_failed names
    ``sub.a``). The root fails; ``undo_left`` skips only the root undoer's own failures
    (``run.undoer.failed``), not the child's, so it runs ``unda`` a second time on what
    its first, failed, run left (the rule of 77a7c82: never again over a failed undo)."""
    db = tmp_path / "runs.db"
    crash(db, ledger, "chained", "c-2", HANG="gate")
    monkeypatch.setenv("CHILD_FAIL", "b,unda")

    async def again() -> rp.RunFailed:
        async with rp.SQLiteJournal(db) as journal:
            with pytest.raises(rp.RunFailed) as failed:
                await chained.run({}, journal=journal, run_id="c-2")
            return failed.value

    asyncio.run(again())
    assert calls(ledger, "do", "a") == 1
    assert calls(ledger, "undo", "unda") == 1


# -------------------------------------------- composites never retried over a failed undo
def _failing_undo_child(calls: list[tuple[str, int]]) -> rp.Reactor[dict[str, int]]:
    """A child whose step ``x`` fails for n == 2, and whose undo always fails."""
    inner: rp.Reactor[dict[str, int]] = rp.Reactor("inner", inputs=["n"], returns="x")

    @inner.step
    async def x(n: int) -> dict[str, int]:
        calls.append(("do", n))
        if n == 2:
            raise RuntimeError("x fails for 2")
        return {"n": n + 1}  # (recurse: the next iteration's inputs)

    @x.undo
    async def ux(value: dict[str, int]) -> None:
        calls.append(("undo", value["n"] - 1))
        raise RuntimeError("undo of x failed")

    return inner


@pytest.mark.parametrize("kind", ["map", "recurse", "around"])
async def test_a_composite_whose_own_undo_of_its_children_failed_is_not_retried(
    kind: str,
) -> None:
    """The first child run (element 1, iteration 0, the wrapper's first call) completes
    ``x(1)``; the second fails with nothing to undo (its RunFailed has no undo_failed).
    The composite then undoes the first child's records itself (`undo_then_raise`, with
    the parent's undoer): that undo fails, and it raises
    ``ExceptionGroup([RunFailed(undo_failed=[]), RuntimeError('undo of x failed')])``.
    The step (retries=1) must not run again over what the failed undo left (it did when
    the rule read the error, where no RunFailed says so): ``x(1)`` done once."""
    calls: list[tuple[str, int]] = []
    inner = _failing_undo_child(calls)
    r: rp.Reactor[Any] = rp.Reactor("outer", inputs=["items"], returns="c")
    options: dict[str, Any] = {"retries": 1, "retry_on": Exception}
    if kind == "map":
        r.map("c", "items", inner, as_="n", batch_size=1, **options)
    elif kind == "recurse":

        async def first(items: list[int]) -> int:
            return items[0]

        r.add(rp.step(first, name="n"))
        r.recurse("c", inner, max_iterations=3, **options)
    else:

        async def wrapper(run_child: Any, inputs: dict[str, Any]) -> Any:
            await run_child({"n": 1})
            return await run_child({"n": 2})

        async def one(items: list[int]) -> int:
            return 1

        r.add(rp.step(one, name="n"))
        r.around("c", inner, wrapper, **options)
    with pytest.raises(rp.RunFailed):
        await r.run({"items": [1, 2]})
    assert calls.count(("do", 1)) == 1, calls


# ------------------------------------------------------ composed fingerprints (e342560)
def test_recovery_with_a_serializer_that_loads_sequences_as_tuples(
    tmp_path: Path, ledger: Path
) -> None:
    """The crash comes in ``sub.b`` (``sub.a`` completed inside ``sub``); nothing changed
    since. The journal's serializer gives arrays back as tuples (any serializer may: the
    wiring check reads ``list(then[k])`` for that reason). `_check_versions` compares the
    composed fingerprints as loaded, ``{"sub": {"composed": ("fp", {})}}``, with
    `_composed`'s lists: they differ, and with a step completed inside ``sub`` the run
    cannot be recovered (ResumeError: "the reactors composed in 'sub' changed")."""
    db = tmp_path / "runs.db"
    crash(db, ledger, "chained", "t-1", HANG="b", TUPLES="1")
    assert calls(ledger, "do", "a") == 1

    async def recover() -> rp.StoredRun:
        async with rp.SQLiteJournal(db, serializer=TupleJson()) as journal:
            await chained.recover(journal)
            return await journal.load("t-1")

    stored = asyncio.run(recover())
    assert stored.record.status == "completed"
    assert (calls(ledger, "do", "a"), calls(ledger, "do", "b")) == (1, 2)


@pytest.mark.parametrize("how", ["retry_on", "compensate"])
def test_a_composite_cut_by_its_timeout_whose_child_undo_failed_is_not_retried(
    how: str,
) -> None:
    """The composite's timeout cancels its child run after ``a`` completed; the child's
    rollback runs ``unda``, which fails: the undo error can travel only as a note on the
    CancelledError, and the step fails with a plain TimeoutError. It must not be retried
    (by ``retry_on``, or by its compensate's ``rp.Retry``), ``a`` again over what the
    failed undo left (it was when the rule read the error, which says nothing of it)."""
    calls: list[str] = []
    r: rp.Reactor[Any] = rp.Reactor("outer", returns="c")
    if how == "retry_on":
        r.compose("c", undo_fails(calls), timeout=0.05, retries=1, retry_on=TimeoutError)
    else:
        c = r.compose("c", undo_fails(calls), timeout=0.05, retries=1)

        @c.compensate
        def again(error: BaseException) -> None:
            raise rp.Retry()

    with pytest.raises(rp.RunFailed):
        run_virtual(r.run())  # (the timeout on the virtual clock: `a` is done before it)
    assert calls.count("do a") == 1, calls
