"""New steps (`rp.NewSteps`) of a journaled run are undone from the journal when their undo
callback is a function of a module (the journal names it by where it is defined, and a
process that imported the module finds it again): after a crash with a real SIGKILL
(``tests/composite_child.py``, SQLite), by ``recover(undo=True)``, and in a completed run
undone by its id. An undo that is a closure is not found: the undo says so, naming the
step, and undoes the others."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import reactorpy as rp
from reactorpy._checkpoint import BY_REFERENCE, by_reference, reference_route

from . import composite_child
from .composite_child import TupleJson, crash, fresh_ledger, spawning
from .killing import calls, lines


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return fresh_ledger(tmp_path, monkeypatch)


def journal_at(db: Path, tuples: bool) -> rp.SQLiteJournal:
    return rp.SQLiteJournal(db, serializer=TupleJson()) if tuples else rp.SQLiteJournal(db)


@pytest.mark.parametrize("tuples", [False, True], ids=["pickle", "json-tuples"])
def test_new_steps_completed_before_a_crash_are_undone_by_a_recovery(
    tmp_path: Path, ledger: Path, tuples: bool
) -> None:
    """The crash comes in ``n2``: ``spawn`` is in flight (its new steps have not ended)
    and ``n1`` completed. Recovered with ``undo=True`` in another process, ``n1`` is
    undone once, by ``undn1``, found by its module and name (arrays loaded as tuples
    too)."""
    db = tmp_path / "runs.db"
    crash(db, ledger, "spawning", "s-1", HANG="n2", **({"TUPLES": "1"} if tuples else {}))
    assert (calls(ledger, "do", "n1"), calls(ledger, "undo", "undn1")) == (1, 0)

    async def recover() -> tuple[list[rp.RunRecord], rp.StoredRun]:
        async with journal_at(db, tuples) as journal:
            records = await spawning.recover(journal, undo=True)
            return records, await journal.load("s-1")

    (record,), stored = asyncio.run(recover())
    assert record.status == "undone"
    assert calls(ledger, "undo", "undn1") == 1
    assert "spawn.n1" in stored.undone
    assert calls(ledger, "do", "n2") == 1  # undone, not run again


@pytest.mark.parametrize("tuples", [False, True], ids=["pickle", "json-tuples"])
def test_a_completed_run_is_undone_by_id_with_its_new_steps(
    tmp_path: Path, ledger: Path, tuples: bool
) -> None:
    """A run whose step added new steps completes; undone by its id, from the journal
    alone, its new step ``n1`` is undone too, once."""

    async def main() -> rp.StoredRun:
        async with journal_at(tmp_path / "runs.db", tuples) as journal:
            assert "spawned" == await spawning.run({}, journal=journal, run_id="s-2")
            await spawning.undo("s-2", journal=journal)
            return await journal.load("s-2")

    stored = asyncio.run(main())
    assert stored.record.status == "undone"
    assert (calls(ledger, "do", "n1"), calls(ledger, "undo", "undn1")) == (1, 1)


def test_a_new_steps_undo_that_is_a_closure_is_not_found_and_the_others_are_undone(
    tmp_path: Path, ledger: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``n3``'s undo is a closure made by ``spawn``: no journal names it. Undone by its
    id, the run's undo fails naming ``spawn.n3``; ``n1`` is undone all the same."""
    monkeypatch.setenv("CHILD_CLOSURE", "1")

    async def main() -> BaseException:
        async with rp.SQLiteJournal(tmp_path / "runs.db") as journal:
            await spawning.run({}, journal=journal, run_id="s-3")
            with pytest.raises(rp.RunFailed) as failed:
                await spawning.undo("s-3", journal=journal)
            return failed.value

    error = asyncio.run(main())
    assert "spawn.n3" in str(error.exceptions)
    assert "no undo callback found" in str(error.exceptions)
    assert (calls(ledger, "do", "n3"), calls(ledger, "undo", "undn3")) == (1, 0)
    assert calls(ledger, "undo", "undn1") == 1


class Holder:
    @staticmethod
    def method_undo(value: Any) -> None:
        return None

    def bound_undo(self, value: Any) -> None:
        return None


rp.step(composite_child.n1).undo(Holder.method_undo)  # registered as undos
rp.step(composite_child.n1).undo(Holder().bound_undo)


def _unregistered(value: Any) -> None:
    return None


def test_a_reference_names_only_an_undo_callback_an_imported_module_holds() -> None:
    """`reference_route` names a function registered as an undo and defined at the top of
    a module (or as a static method there); `by_reference` finds it again only if it is
    that, in a module imported already, by the namespaces alone: not a function that is
    no undo (whatever the route says), nor one of ``__main__``, nor a closure."""
    route = reference_route(composite_child.undn1)
    assert route == (BY_REFERENCE, "tests.composite_child", "undn1")
    assert by_reference(route) is composite_child.undn1
    assert by_reference(reference_route(Holder.method_undo)) is Holder.method_undo  # type: ignore[arg-type]

    def closure(value: Any) -> None:
        return None

    rp.step(composite_child.n2).undo(closure)
    for fn in (
        closure,
        _unregistered,
        lambda value: None,
        Holder().bound_undo,
        rp.step(_unregistered),
    ):
        assert reference_route(fn) is None
    here = __name__
    for forged in (
        (BY_REFERENCE, here, "_unregistered"),  # a function that is no undo
        (BY_REFERENCE, "os", "getcwd"),  # nor is a builtin
        (BY_REFERENCE, "shutil", "rmtree"),
        (BY_REFERENCE, "__main__", "undn1"),
        (BY_REFERENCE, "not_imported_module_xyz", "f"),
        (BY_REFERENCE, "tests.composite_child", "no_such_name"),
        (BY_REFERENCE, "tests.composite_child", "REACTORS"),
        (BY_REFERENCE, "tests.composite_child", "undn1", "extra"),
        ("spawn", "n1"),
    ):
        assert by_reference(forged) is None, forged


async def test_a_journal_naming_a_function_that_is_no_undo_runs_nothing(
    tmp_path: Path, ledger: Path
) -> None:
    """A JSON journal whose undo record (of a step defined up front) was rewritten to name
    a function of an imported module that is not an undo callback: the undo of the run by
    its id fails for that step, naming it, and the function is never called."""
    db = tmp_path / "runs.db"
    r: rp.Reactor[int] = rp.Reactor("forged", returns="a")

    @r.step
    def a() -> int:
        return 1

    @a.undo
    def undo_a(value: int) -> None:
        composite_child.write("undo a")

    async with rp.SQLiteJournal(db, serializer=rp.JsonSerializer()) as journal:
        await r.run({}, journal=journal, run_id="x")
    forged = ["forged line", {}, [BY_REFERENCE, "tests.composite_child", "write"]]
    with sqlite3.connect(db) as conn:
        assert (
            1
            == conn.execute("UPDATE entries SET undo = ?", (json.dumps(forged).encode(),)).rowcount
        )
    async with rp.SQLiteJournal(db, serializer=rp.JsonSerializer()) as journal:
        with pytest.raises(rp.RunFailed) as failed:
            await r.undo("x", journal=journal)
    assert "undo of step 'a': no undo callback found" in str(failed.value.exceptions)
    assert [] == lines(ledger)


@pytest.mark.parametrize(
    ("reactor", "hang", "failing"),
    [
        ("deep_spawning", "tail", "tail"),
        ("deep_spawning", "tail", "last"),
        ("deeper_spawning", "last", "last"),
        ("deeper_spawning", "last", "final"),
    ],
)
def test_new_steps_of_composed_children_completed_before_a_crash_are_undone_once(
    tmp_path: Path,
    ledger: Path,
    monkeypatch: pytest.MonkeyPatch,
    reactor: str,
    hang: str,
    failing: str,
) -> None:
    """``spawning`` composed as ``sub`` (``deep_spawning``), that composed as ``outer``
    (``deeper_spawning``): the crash comes in the step after the composite whose child
    completed ``spawn`` and its new steps. Recovered forward, the composite in flight
    runs again from what its child completed (``n1`` restored, with the route of its
    undo, not run again); then a step fails: inside the child (which undoes what it
    restored; two composites deep, its records' routes were cut to the child's depth),
    or after the composite (the parent undoes what the composite gave it, routes
    prefixed with the composite's). Either way ``n1`` is undone once."""
    db = tmp_path / "runs.db"
    crash(db, ledger, reactor, "d-1", HANG=hang)
    monkeypatch.setenv("CHILD_FAIL", failing)

    async def recover() -> list[rp.RunRecord]:
        async with rp.SQLiteJournal(db) as journal:
            return await composite_child.REACTORS[reactor].recover(journal)

    (record,) = asyncio.run(recover())
    assert record.status == "failed"
    assert f"{failing} failed" in repr(record.error)
    assert (calls(ledger, "do", "n1"), calls(ledger, "undo", "undn1")) == (1, 1)
    assert calls(ledger, "do", "spawn") == 1
