"""Regressions found by the crash trials (``tests/crashing.py``), each reduced to the
smallest run that showed it (a journal left as a dead process leaves it, or the trials'
saga killed at a scripted moment)."""

from __future__ import annotations

import asyncio
import pickle
import threading
from pathlib import Path
from typing import Any

import pytest

import reactorpy as rp

from .crashing import Ledger, Process, snapshot


def context_saga(seen: list[Any], *, fails: bool = True) -> rp.Reactor[Any]:
    r = rp.Reactor("ctx_saga", inputs=["x"], returns="charge")

    @r.step
    async def charge(x: int, ctx: rp.Context) -> int:
        seen.append(("charge", ctx.idempotency_key))
        return x

    @charge.undo
    async def refund(result: int, x: int, ctx: rp.Context) -> None:
        seen.append(("refund", result, x, ctx.idempotency_key, ctx.data))

    if fails:

        @r.step
        async def fail(charge: int) -> None:
            raise RuntimeError("no")

    return r


@pytest.mark.parametrize("serializer", [rp.PickleSerializer(), rp.JsonSerializer()])
async def test_a_step_taking_the_context_is_journaled_without_it(
    tmp_path: Path, serializer: rp.Serializer
) -> None:
    """A step with an undo that takes `rp.Context` records its arguments without the
    context (whose data may be a client): its undo gets a fresh one, same key."""
    seen: list[Any] = []
    lock = threading.Lock()
    async with rp.SQLiteJournal(tmp_path / "runs.db", serializer=serializer) as journal:
        with pytest.raises(rp.RunFailed) as failed:
            await context_saga(seen).run(
                {"x": 1}, journal=journal, run_id="r", context={"client": lock}
            )
        assert not failed.value.subgroup(TypeError)
        assert (await journal.get("r")).status == "failed"
    assert [("charge", "r:charge"), ("refund", 1, 1, "r:charge", {"client": lock})] == seen


async def test_a_checkpoint_never_holds_the_context() -> None:
    """A finished run's checkpoint keeps a context-taking step's arguments, not the
    context: it pickles even when the context's data does not."""
    seen: list[Any] = []
    rev = await context_saga(seen, fails=False).run_reversible(
        {"x": 1}, context={"client": threading.Lock()}
    )
    assert [{"x": 1}] == [u.arguments for u in rev.checkpoint.undo_stack]
    pickle.dumps(rev.checkpoint)
    rev.checkpoint.to_json()


# --------------------------------------------------------------------------- crashed runs


def composed_saga(log: list[str]) -> rp.Reactor[Any]:
    """charge (undo), then a child reactor: book (undo) -> confirm (fails if asked)."""
    child = rp.Reactor("booking", inputs=["fail"], returns="confirm")

    @child.step
    async def book() -> str:
        log.append("book")
        return "booked"

    @book.undo
    async def unbook(result: str) -> None:
        log.append("unbook")

    @child.step
    async def confirm(book: str, fail: bool) -> str:
        log.append("confirm")
        if fail:
            raise RuntimeError("cannot confirm")
        return book

    r = rp.Reactor("composed", inputs=["fail"], returns="sub")

    @r.step
    async def charge() -> int:
        log.append("charge")
        return 1

    @charge.undo
    async def refund(result: int) -> None:
        log.append("refund")

    r.compose("sub", child, wait_for=["charge"])
    return r


def mapped_saga(log: list[str]) -> rp.Reactor[Any]:
    """A map of `pack` (undo) over the items; a negative item fails."""

    @rp.step
    async def pack(item: int) -> int:
        log.append(f"pack {item}")
        if item < 0:
            raise RuntimeError("negative")
        return item

    @pack.undo
    async def unpack(result: int) -> None:
        log.append(f"unpack {result}")

    r = rp.Reactor("mapped", inputs=["items"], returns="packed")
    r.map("packed", rp.Input("items"), pack)
    return r


async def crashed(
    path: Path,
    reactor: rp.Reactor[Any],
    inputs: dict[str, Any],
    *,
    like: dict[str, Any],
    keys: list[str],
    undone: tuple[str, ...] = (),
) -> None:
    """Leave run ``"x"`` of `reactor` in the journal as a process that died would have:
    running, with the entries of `keys` (taken from a run with the inputs `like`, for
    their real encoding), `undone` marked, and its owner gone."""
    async with rp.SQLiteJournal(path) as journal:
        await reactor.run(like, journal=journal, run_id="source")
        source = await journal.load("source")
    entries = {e.key: e for e in source.entries}
    # Another host's journal, closed: its lease is released, so a recovery claims at once.
    async with rp.SQLiteJournal(path, host="elsewhere") as journal:
        await journal.create_run(
            "x", reactor.name, source.record.fingerprint, journal.serializer.dumps(inputs)
        )
        await journal.append("x", [entries[k] for k in keys])
        for key in undone:
            await journal.mark_undone("x", key)


async def test_a_composed_child_that_fails_after_recovery_undoes_what_it_restored(
    tmp_path: Path,
) -> None:
    """A run recovered while its composed child ran: the child restores ``book`` from the
    journal, fails in ``confirm``, and undoes ``book`` by its own name (it looked for
    ``sub.sub.book`` and found no undo callback)."""
    log: list[str] = []
    saga = composed_saga(log)
    path = tmp_path / "runs.db"
    await crashed(path, saga, {"fail": True}, like={"fail": False}, keys=["charge", "sub.book"])
    log.clear()
    async with rp.SQLiteJournal(path) as journal:
        [record] = await saga.recover(journal)
        stored = await journal.load("x")
    assert ["confirm", "unbook", "refund"] == log
    assert ("failed", frozenset({"charge", "sub.book"})) == (record.status, stored.undone)
    assert not record.error.subgroup(LookupError)  # type: ignore[union-attr]


async def test_a_map_that_fails_after_recovery_undoes_the_elements_it_restored(
    tmp_path: Path,
) -> None:
    """A run recovered while its map ran: element [2] is restored from the journal and
    undone when element [1] fails again (it was left done)."""
    log: list[str] = []
    saga = mapped_saga(log)
    path = tmp_path / "runs.db"
    items = {"items": [0, -1, 2]}
    await crashed(path, saga, items, like={"items": [0, 1, 2]}, keys=["packed.[2].pack"])
    log.clear()
    async with rp.SQLiteJournal(path) as journal:
        [record] = await saga.recover(journal)
        stored = await journal.load("x")
    assert "failed" == record.status
    assert ["pack 0", "pack -1", "unpack 0", "unpack 2"] == log
    assert frozenset({"packed.[0].pack", "packed.[2].pack"}) == stored.undone


async def test_a_step_completed_again_after_its_undo_is_undone_again(tmp_path: Path) -> None:
    """A run recovered after its composed child failed and undid ``book``: the child runs
    again and ``book`` completes again, so it is no longer marked undone, and undoing the
    run later undoes it (its stale mark made undo skip it, leaving its effect)."""
    log: list[str] = []
    saga = composed_saga(log)
    path = tmp_path / "runs.db"
    await crashed(
        path,
        saga,
        {"fail": False},
        like={"fail": False},
        keys=["charge", "sub.book"],
        undone=("sub.book",),
    )
    log.clear()
    async with rp.SQLiteJournal(path) as journal:
        [record] = await saga.recover(journal)
        assert ("completed", frozenset()) == (record.status, (await journal.load("x")).undone)
        await saga.undo("x", journal=journal)
    assert ["book", "confirm", "unbook", "refund"] == log


def test_an_undo_interrupted_inside_a_composite_is_not_taken_for_a_completion(
    tmp_path: Path,
) -> None:
    """The crash trials' saga, one flaky run: ``sub.confirm`` fails its first execution,
    so the child undoes ``sub.book`` (its effect deleted) and the composing step runs the
    child again; the process dies before that undo is marked done. The child's rollback
    was recorded before its undo began: forward recovery finishes the undo (again) and
    books again, so the run completes with the effect (it completed without it when a
    recovery took ``sub.book`` for completed)."""
    ledger_path = tmp_path / "ledger.db"
    Ledger(ledger_path).close()
    inputs = {"order": "r", "items": [["r", 0]], "fail": None, "flaky": True}
    run = {"run_id": "r", "inputs": inputs}
    spec = {
        "backend": "sqlite",
        "journal": str(tmp_path / "journal.db"),
        "seed": 0,
        "serializer": "pickle",
        "runs": [run],
    }
    worker = Process("work", spec, "worker", ledger_path, CRASH_HANG_AFTER_UNDO="sub.book")
    try:
        assert worker.wait_ready()
        assert worker.wait_ready("hanging")
        worker.kill()
    finally:
        worker.close()
    recovery = Process("recover", {**spec, "undo": False}, "recovery-1", ledger_path)
    try:
        assert 0 == recovery.finish()[0]
    finally:
        recovery.close()
    ledger = Ledger(ledger_path)
    effects = ledger.effects()["r"]
    ledger.close()
    assert "completed" == asyncio.run(snapshot(spec, ["r"]))["r"].status
    assert "sub.book" in effects
