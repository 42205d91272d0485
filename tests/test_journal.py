"""The journals' contract, run for real against both backends: an SQLite file in tmp_path and
a PostgreSQL server (``REACTORPY_TEST_POSTGRES_DSN``; ``.ci/run`` starts one). Other processes
are real processes (``tests/journal_child.py``), killed with SIGKILL or stopped with SIGSTOP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reactorpy as rp
from reactorpy._journal import Entry, owner_alive, process_owner

ROOT = Path(__file__).resolve().parents[1]
DSN_VARIABLE = "REACTORPY_TEST_POSTGRES_DSN"


# --------------------------------------------------------------------------- backends


class Backend:
    """One database for one test, and how to reach it from this and other processes."""

    kind = ""

    def open(self, **options: Any) -> rp.Journal:
        raise NotImplementedError

    def spec(self, **options: Any) -> str:
        """The JSON a child process opens the same journal with."""
        raise NotImplementedError

    def hold_writes(self, run_id: str) -> contextlib.AbstractAsyncContextManager[None]:
        """While inside, the journal's writer cannot commit writes to ``run_id``."""
        raise NotImplementedError


class SQLiteBackend(Backend):
    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path

    def open(self, **options: Any) -> rp.Journal:
        return rp.SQLiteJournal(self.path, **options)

    def spec(self, **options: Any) -> str:
        return json.dumps({"kind": "sqlite", "path": str(self.path), **options})

    @contextlib.asynccontextmanager
    async def hold_writes(self, run_id: str) -> AsyncIterator[None]:
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")  # the file's write lock
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()


class PostgresBackend(Backend):
    kind = "postgres"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.schema = f"test_{uuid.uuid4().hex[:12]}"

    def open(self, **options: Any) -> rp.Journal:
        return rp.PostgresJournal(self.dsn, schema=self.schema, **options)

    def spec(self, **options: Any) -> str:
        spec = {"kind": "postgres", "dsn": self.dsn, "schema": self.schema, **options}
        return json.dumps(spec)

    @contextlib.asynccontextmanager
    async def hold_writes(self, run_id: str) -> AsyncIterator[None]:
        import asyncpg

        conn = await asyncpg.connect(self.dsn)
        try:
            async with conn.transaction():  # the writer's FOR SHARE waits for this lock
                await conn.execute(
                    f'SELECT 1 FROM "{self.schema}".reactorpy_runs WHERE run_id = $1 FOR UPDATE',
                    run_id,
                )
                yield
        finally:
            await conn.close()

    def drop(self) -> None:
        import asyncpg

        async def drop() -> None:
            conn = await asyncpg.connect(self.dsn)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            finally:
                await conn.close()

        asyncio.run(drop())


def postgres_dsn() -> str:
    dsn = os.environ.get(DSN_VARIABLE)
    if not dsn:
        if os.environ.get("CI"):
            pytest.fail(
                f"CI is set but {DSN_VARIABLE} is not: .ci/run starts PostgreSQL and sets it "
                "(see .ci/postgres.sh)"
            )
        pytest.skip(
            f"{DSN_VARIABLE} is unset, so there is no PostgreSQL server to test against; "
            "run the suite under `bash .ci/postgres.sh python -m pytest` to include them"
        )
    return dsn


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield SQLiteBackend(tmp_path / "runs.db")
        return
    pg = PostgresBackend(postgres_dsn())
    try:
        yield pg
    finally:
        pg.drop()


Opener = Callable[..., rp.Journal]


@pytest.fixture
async def open_journal(backend: Backend) -> AsyncIterator[Opener]:
    """Opens journals on the test's database; closes them all after the test."""
    opened: list[rp.Journal] = []

    def open_(**options: Any) -> rp.Journal:
        journal = backend.open(**options)
        opened.append(journal)
        return journal

    yield open_
    for journal in opened:
        await journal.aclose()


@pytest.fixture
def reactor() -> str:
    return f"r{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------- children


class Child:
    """A process of tests/journal_child.py."""

    def __init__(self, backend: Backend, command: str, *args: str, **options: Any) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.journal_child", backend.spec(**options), command, *args],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    async def line(self) -> Any:
        assert self.proc.stdout is not None
        loop = asyncio.get_running_loop()
        text = await asyncio.wait_for(loop.run_in_executor(None, self.proc.stdout.readline), 60)
        assert text, f"the child exited with {self.proc.wait()} before answering"
        return json.loads(text)

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        """SIGKILL, and reap it (a zombie's pid would still exist)."""
        self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def children() -> Iterator[Callable[..., Child]]:
    started: list[Child] = []

    def start(backend: Backend, command: str, *args: str, **options: Any) -> Child:
        child = Child(backend, command, *args, **options)
        started.append(child)
        return child

    yield start
    for child in started:
        child.close()


async def dead_owner_runs(
    start: Callable[..., Child], backend: Backend, reactor: str, n: int
) -> list[str]:
    """``n`` runs of ``reactor`` created by a process that was then killed with SIGKILL."""
    child = start(backend, "create", reactor, str(n))
    runs: list[str] = (await child.line())["runs"]
    child.kill()
    return runs


async def eventually(check: Callable[[], Any], *, within: float = 10.0) -> Any:
    """Poll ``check()`` (a coroutine function) until it returns something truthy."""
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


# --------------------------------------------------------------------------- creating


async def test_create_records_a_running_run_owned_by_this_process(open_journal: Opener) -> None:
    """create_run records the run as running, owned by this process; the record says so."""
    journal = open_journal()
    assert await journal.create_run("r1", "payment", "fp1", b"in", b"wiring") is None
    record = await journal.get("r1")
    assert (record.run_id, record.reactor, record.fingerprint) == ("r1", "payment", "fp1")
    assert rp.RunStatus.RUNNING == record.status
    assert "running" == record.status
    assert process_owner() == record.owner == journal.owner
    assert (record.result, record.error, record.ended, record.undo_requested) == (
        None,
        None,
        None,
        False,
    )
    assert record.created <= record.updated <= time.time() + 1
    stored = await journal.load("r1")
    assert (stored.inputs, stored.structure, stored.checkpoint) == (b"in", b"wiring", None)
    assert ((), frozenset()) == (stored.entries, stored.undone)


async def test_create_with_a_taken_id_returns_the_existing_record(open_journal: Opener) -> None:
    """A taken id is not overwritten: create_run returns the existing run's record."""
    journal = open_journal()
    await journal.create_run("r1", "payment", "fp1", b"in")
    await journal.finish("r1", "completed", result=journal.serializer.dumps(42))
    existing = await journal.create_run("r1", "other", "fp2", b"other")
    assert existing is not None
    assert ("completed", 42, "payment") == (existing.status, existing.result, existing.reactor)
    assert b"in" == (await journal.load("r1")).inputs


# --------------------------------------------------------------------------- entries


async def test_entries_load_in_seq_order_and_a_key_recorded_again_is_replaced(
    open_journal: Opener,
) -> None:
    """load returns the entries ordered by seq whatever order they were appended in; a key
    appended again replaces its entry."""
    journal = open_journal()
    await journal.create_run("r1", "payment", "fp", b"in")
    await journal.append("r1", [Entry("c", 3, b"3", b"undo-c"), Entry("a", 1, b"1", None)])
    await journal.append("r1", [Entry("items.[3].square", 2, None, b"undo-sq")])
    await journal.append("r1", [Entry("sub.book", 5, b"5")])
    await journal.append("r1", [Entry("c", 4, b"3 again", b"undo-c2")])
    stored = await journal.load("r1")
    assert [
        Entry("a", 1, b"1", None),
        Entry("items.[3].square", 2, None, b"undo-sq"),
        Entry("c", 4, b"3 again", b"undo-c2"),
        Entry("sub.book", 5, b"5", None),
    ] == list(stored.entries)


async def test_appends_queued_during_a_commit_share_the_next_transaction(
    backend: Backend, open_journal: Opener
) -> None:
    """Group commit: 100 appends issued while the writer waits to commit go in at most two
    transactions (the one in flight and the next), and every future resolves once durable."""
    journal = open_journal()
    await journal.create_run("r1", "payment", "fp", b"in")
    before = journal.commits
    async with backend.hold_writes("r1"):
        futures = [journal.append("r1", [Entry(f"s{i}", i, b"x")]) for i in range(100)]
        await asyncio.sleep(0.05)
        assert not any(f.done() for f in futures)
    await asyncio.gather(*futures)
    assert 1 <= journal.commits - before <= 2
    assert 100 == len((await journal.load("r1")).entries)


async def test_appends_awaited_one_by_one_commit_one_by_one(open_journal: Opener) -> None:
    """A chain (each append awaited before the next) commits once per append."""
    journal = open_journal()
    await journal.create_run("r1", "payment", "fp", b"in")
    before = journal.commits
    for i in range(10):
        await journal.append("r1", [Entry(f"s{i}", i, b"x")])
    assert 10 == journal.commits - before


async def test_a_request_the_database_refuses_fails_alone(open_journal: Opener) -> None:
    """A batch with one bad append (a value the database cannot store) commits the others;
    only the bad one's future fails."""
    journal = open_journal()
    await journal.create_run("r1", "payment", "fp", b"in")
    bad: Any = object()
    futures = [
        journal.append("r1", [Entry("a", 1, b"1")]),
        journal.append("r1", [Entry("b", 2, bad)]),
        journal.append("r1", [Entry("c", 3, b"3")]),
    ]
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    assert outcomes[0] is None
    assert isinstance(outcomes[1], Exception)
    assert outcomes[2] is None
    assert ["a", "c"] == [e.key for e in (await journal.load("r1")).entries]


async def test_appends_to_an_unknown_or_ended_run_fail(open_journal: Opener) -> None:
    """Writes are fenced: appending to a run that does not exist is a LookupError, to an
    ended run an OwnershipError; other runs in the same batch are written."""
    journal = open_journal()
    await journal.create_run("r1", "payment", "fp", b"in")
    await journal.create_run("r2", "payment", "fp", b"in")
    await journal.finish("r2", "completed")
    futures = [
        journal.append("nope", [Entry("a", 1)]),
        journal.append("r2", [Entry("a", 1)]),
        journal.append("r1", [Entry("a", 1)]),
        journal.mark_undone("r2", "a"),
    ]
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    assert isinstance(outcomes[0], LookupError)
    assert isinstance(outcomes[1], rp.OwnershipError)
    assert ("r2", "completed", "append to") == (
        outcomes[1].run_id,
        outcomes[1].status,
        outcomes[1].action,
    )
    assert "has ended as 'completed'" in str(outcomes[1])
    assert outcomes[2] is None
    assert isinstance(outcomes[3], rp.OwnershipError)
    assert 1 == len((await journal.load("r1")).entries)


async def test_an_append_can_be_the_first_call(open_journal: Opener) -> None:
    """A journal's first request may be a plain-def append (PostgreSQL connects for it)."""
    journal = open_journal()
    with pytest.raises(LookupError):
        await journal.append("nope", [Entry("a", 1)])


# --------------------------------------------------------------------------- undo


async def test_mark_undone_records_the_keys_whose_undo_is_done(open_journal: Opener) -> None:
    """mark_undone adds the key to StoredRun.undone (once, however often it is marked)."""
    journal = open_journal()
    await journal.create_run("r1", "payment", "fp", b"in")
    await journal.append("r1", [Entry("a", 1, b"1", b"u"), Entry("b", 2, b"2", b"u")])
    await asyncio.gather(journal.mark_undone("r1", "b"), journal.mark_undone("r1", "b"))
    await journal.mark_undone("r1", "a")
    assert frozenset({"a", "b"}) == (await journal.load("r1")).undone


async def test_a_key_appended_as_redone_is_no_longer_undone(open_journal: Opener) -> None:
    """A step completed again after its undo (a composite's child run again) is appended
    with ``redone``: its mark goes in the same write, whether the append is alone, in a
    batch, or queued in the same group commit after the mark; a mark queued after the
    append stays; a key appended again without ``redone`` keeps its mark."""
    journal = open_journal()
    await journal.create_run("r1", "payment", "fp", b"in")
    await journal.append("r1", [Entry("a", 1, b"1", b"u"), Entry("b", 2, b"2", b"u")])
    await asyncio.gather(*(journal.mark_undone("r1", k) for k in "ab"))
    await journal.append("r1", [Entry("a", 3, b"1 again", b"u")], redone=["a"])
    await journal.append("r1", [Entry("b", 4, b"2 again", b"u"), Entry("c", 5, b"3", b"u")])
    assert frozenset({"b"}) == (await journal.load("r1")).undone
    await journal.append("r1", [Entry("b", 6, b"2 again", b"u")], redone=["b"])
    assert frozenset() == (await journal.load("r1")).undone
    await asyncio.gather(
        journal.mark_undone("r1", "a"),
        journal.append("r1", [Entry("a", 7, b"1 once more", b"u")], redone=["a"]),
        journal.append("r1", [Entry("c", 8, b"3 again", b"u")]),
        journal.mark_undone("r1", "c"),
    )
    stored = await journal.load("r1")
    assert frozenset({"c"}) == stored.undone
    assert [("b", 6), ("a", 7), ("c", 8)] == [(e.key, e.seq) for e in stored.entries]


async def test_request_undo_is_recorded(open_journal: Opener) -> None:
    """request_undo sets undo_requested, durably, before any undo; the run stays running."""
    journal = open_journal()
    await journal.create_run("r1", "payment", "fp", b"in")
    await journal.request_undo("r1")
    record = await journal.get("r1")
    assert (True, "running", None) == (record.undo_requested, record.status, record.error)


async def test_an_undo_after_a_failure_ends_failed_even_when_finished_as_undone(
    open_journal: Opener,
) -> None:
    """request_undo with the failure keeps it; finishing the undo (as a recovery would, with
    'undone') ends the run 'failed' with that error."""
    journal = open_journal()
    await journal.create_run("r1", "payment", "fp", b"in")
    await journal.request_undo("r1", error=journal.serializer.dumps_error(ValueError("declined")))
    record = await journal.get("r1")
    assert isinstance(record.error, ValueError)
    await journal.finish("r1", "undone")
    record = await journal.get("r1")
    assert "failed" == record.status
    assert isinstance(record.error, ValueError)
    assert ("declined",) == record.error.args


async def test_request_undo_of_a_run_not_ours_is_refused(open_journal: Opener) -> None:
    """request_undo of an unknown run is a LookupError, of an ended one an OwnershipError."""
    journal = open_journal()
    await journal.create_run("r1", "payment", "fp", b"in")
    await journal.finish("r1", "completed")
    with pytest.raises(LookupError):
        await journal.request_undo("nope")
    with pytest.raises(rp.OwnershipError, match="has ended as 'completed'"):
        await journal.request_undo("r1")


# --------------------------------------------------------------------------- finishing


async def test_finish_records_the_ending(open_journal: Opener) -> None:
    """finish records the status, the result (completed), the error (failed) or the
    checkpoint (halted), and when it ended."""
    journal = open_journal()
    s = journal.serializer
    for run_id in ("done", "broke", "paused", "reverted"):
        await journal.create_run(run_id, "payment", "fp", b"in")
    await journal.finish("done", rp.RunStatus.COMPLETED, result=s.dumps({"total": 3}))
    await journal.finish("broke", "failed", error=s.dumps_error(KeyError("card")))
    await journal.finish("paused", "halted", checkpoint=b"checkpoint bytes")
    await journal.finish("reverted", "undone")
    done, broke, paused, reverted = [
        await journal.get(r) for r in ("done", "broke", "paused", "reverted")
    ]
    assert ("completed", {"total": 3}, None) == (done.status, done.result, done.error)
    assert "failed" == broke.status
    assert isinstance(broke.error, KeyError)
    assert "halted" == paused.status
    assert b"checkpoint bytes" == (await journal.load("paused")).checkpoint
    assert "undone" == reverted.status
    assert all(r.ended is not None and r.ended >= r.created for r in (done, broke, paused))


async def test_a_failed_run_stays_failed(open_journal: Opener) -> None:
    """Finishing a failed run again (completed, undone) leaves it failed with its error."""
    journal = open_journal()
    await journal.create_run("r1", "payment", "fp", b"in")
    await journal.finish("r1", "failed", error=journal.serializer.dumps_error(OSError("disk")))
    await journal.finish("r1", "undone")
    await journal.finish("r1", "completed", result=journal.serializer.dumps(1))
    record = await journal.get("r1")
    assert ("failed", None) == (record.status, record.result)
    assert isinstance(record.error, OSError)


async def test_finish_refuses_what_is_not_an_ending(open_journal: Opener) -> None:
    """finish takes only an ending status, of a known run that has not ended."""
    journal = open_journal()
    await journal.create_run("r1", "payment", "fp", b"in")
    with pytest.raises(ValueError, match="not 'running'"):
        await journal.finish("r1", "running")
    with pytest.raises(ValueError, match="not 'done'"):
        await journal.finish("r1", "done")
    with pytest.raises(LookupError):
        await journal.finish("nope", "completed")
    await journal.finish("r1", "completed")
    with pytest.raises(rp.OwnershipError):
        await journal.finish("r1", "halted")


async def test_reopen_takes_an_ended_run_back(open_journal: Opener) -> None:
    """reopen: a halted run back to running (resume), a completed one only for undo (with
    the undo requested); running, failed and undone runs are refused."""
    journal = open_journal()
    for run_id in ("paused", "done", "broke", "live"):
        await journal.create_run(run_id, "payment", "fp", b"in")
    await journal.finish("paused", "halted", checkpoint=b"cp")
    await journal.finish("done", "completed")
    await journal.finish("broke", "failed")
    record = await journal.reopen("paused")
    assert ("running", False, None) == (record.status, record.undo_requested, record.ended)
    assert b"cp" == (await journal.load("paused")).checkpoint
    await journal.append("paused", [Entry("next", 2)])
    with pytest.raises(rp.OwnershipError, match="resume run 'done': it has ended as 'completed'"):
        await journal.reopen("done")
    record = await journal.reopen("done", undo=True)
    assert ("running", True) == (record.status, record.undo_requested)
    with pytest.raises(rp.OwnershipError, match="still running"):
        await journal.reopen("live", undo=True)
    with pytest.raises(rp.OwnershipError, match="'failed'"):
        await journal.reopen("broke", undo=True)
    with pytest.raises(LookupError):
        await journal.reopen("nope")


# --------------------------------------------------------------------------- queries


async def test_get_and_load_of_an_unknown_run_raise_lookup_error(open_journal: Opener) -> None:
    """get() and load() of an id the journal does not hold raise LookupError."""
    journal = open_journal()
    with pytest.raises(LookupError, match="No run 'ghost'"):
        await journal.get("ghost")
    with pytest.raises(LookupError):
        await journal.load("ghost")


async def test_runs_lists_newest_first_with_filters(open_journal: Opener) -> None:
    """runs() lists records newest first, filtered by reactor and status, up to a limit."""
    journal = open_journal()
    for i, (run_id, reactor_name) in enumerate(
        [("a", "payment"), ("b", "shipping"), ("c", "payment"), ("d", "payment")]
    ):
        await journal.create_run(run_id, reactor_name, "fp", b"in")
        if i % 2:
            await journal.finish(run_id, "completed")
    assert ["d", "c", "b", "a"] == [r.run_id for r in await journal.runs()]
    assert ["d", "c", "a"] == [r.run_id for r in await journal.runs(reactor="payment")]
    assert ["b", "d"] == sorted(r.run_id for r in await journal.runs(status="completed"))
    assert ["c", "a"] == [
        r.run_id for r in await journal.runs(reactor="payment", status=rp.RunStatus.RUNNING)
    ]
    assert ["d", "c"] == [r.run_id for r in await journal.runs(limit=2)]
    with pytest.raises(ValueError, match="Unknown run status 'finished'"):
        await journal.runs(status="finished")


# --------------------------------------------------------------------------- claims


async def test_a_dead_owner_on_this_host_is_claimed_at_once(
    backend: Backend, open_journal: Opener, children: Callable[..., Child], reactor: str
) -> None:
    """The runs of a process killed with SIGKILL are claimed at once (no lease to wait for),
    oldest first, with what it had recorded; a second claim finds nothing."""
    runs = await dead_owner_runs(children, backend, reactor, 3)
    journal = open_journal()
    assert runs == await journal.claim(reactor)
    stored = await journal.load(runs[0])
    assert journal.owner == stored.record.owner
    assert [Entry("first", 1, b"result", b"undo")] == list(stored.entries)
    assert [] == await journal.claim(reactor)
    await journal.append(runs[0], [Entry("second", 2)])  # it is ours now


async def test_claim_takes_only_the_reactor_asked_for_and_up_to_limit(
    backend: Backend, open_journal: Opener, children: Callable[..., Child], reactor: str
) -> None:
    """claim takes the runs of one reactor, and at most ``limit`` of them per call."""
    runs = await dead_owner_runs(children, backend, reactor, 3)
    journal = open_journal()
    assert [] == await journal.claim(reactor + "-other")
    assert runs[:2] == await journal.claim(reactor, limit=2)
    assert runs[2:] == await journal.claim(reactor, limit=2)


async def test_claim_can_take_one_run_by_id(
    backend: Backend, open_journal: Opener, children: Callable[..., Child], reactor: str
) -> None:
    """claim(run_id=...) takes that run only (a run started again under its id, whose
    create_run found it unfinished with a dead owner)."""
    runs = await dead_owner_runs(children, backend, reactor, 3)
    journal = open_journal()
    existing = await journal.create_run(runs[1], reactor, "fp", b"in")
    assert existing is not None
    assert not owner_alive(existing.owner)
    assert [runs[1]] == await journal.claim(reactor, run_id=runs[1])
    assert [] == await journal.claim(reactor, run_id=runs[1])
    assert [] == await journal.claim(reactor, run_id="ghost")
    assert [runs[0], runs[2]] == await journal.claim(reactor)


async def test_a_live_owner_is_never_claimed(
    backend: Backend, open_journal: Opener, children: Callable[..., Child], reactor: str
) -> None:
    """A live process's runs are not claimed, even past its lease (it renews it); once it is
    killed they are."""
    child = children(backend, "create", reactor, "1", lease=0.3)
    runs = (await child.line())["runs"]
    journal = open_journal()
    assert [] == await journal.claim(reactor)
    await asyncio.sleep(1.0)  # more than three leases
    assert [] == await journal.claim(reactor)
    child.kill()
    assert runs == await journal.claim(reactor)


async def test_this_processs_own_runs_are_not_claimed(open_journal: Opener, reactor: str) -> None:
    """Another journal in this same (live) process does not take runs an open journal owns;
    once that journal is closed (its leases released) it does."""
    first = open_journal()
    await first.create_run("r1", reactor, "fp", b"in")
    second = open_journal()
    assert [] == await second.claim(reactor)
    await first.aclose()
    assert ["r1"] == await second.claim(reactor)


async def test_an_expired_lease_on_another_host_is_claimed(
    backend: Backend, open_journal: Opener, children: Callable[..., Child], reactor: str
) -> None:
    """A dead owner on another host cannot be seen: its runs are claimed once its lease has
    expired, not before."""
    child = children(backend, "create", reactor, "2", lease=1.5, host="elsewhere.example")
    line = await child.line()
    assert line["owner"].startswith("elsewhere.example:")
    child.kill()
    journal = open_journal()
    assert [] == await journal.claim(reactor)
    claimed: list[str] = []

    async def claim_all() -> bool:
        claimed.extend(await journal.claim(reactor))  # the leases expire one after the other
        return len(claimed) >= 2

    assert await eventually(claim_all)
    assert line["runs"] == claimed


async def test_a_live_owner_on_another_host_keeps_its_runs_by_renewing(
    open_journal: Opener, reactor: str
) -> None:
    """An owner on another host that renews its lease keeps its runs past the lease."""
    remote = open_journal(lease=0.3, host="elsewhere.example")
    await remote.create_run("r1", reactor, "fp", b"in")
    journal = open_journal()
    await asyncio.sleep(1.0)
    assert [] == await journal.claim(reactor)
    await remote.append("r1", [Entry("a", 1)])


async def test_a_stalled_owner_loses_its_run_and_its_late_writes_are_refused(
    backend: Backend, open_journal: Opener, children: Callable[..., Child], reactor: str
) -> None:
    """A process stopped (SIGSTOP) past its lease is alive but lost: its run is claimed, and
    when it wakes up its append fails with OwnershipError instead of writing into it."""
    child = children(backend, "stalled", reactor, lease=0.5)
    (run_id,) = (await child.line())["runs"]
    os.kill(child.proc.pid, signal.SIGSTOP)
    try:
        journal = open_journal()
        assert [] == await journal.claim(reactor) or pytest.skip("stopped too slowly")
        assert [run_id] == await eventually(lambda: journal.claim(reactor))
    finally:
        os.kill(child.proc.pid, signal.SIGCONT)
    child.send("go")
    error = (await child.line())["error"]
    assert error is not None
    assert "OwnershipError" in error
    assert "not by this process" in error
    assert [] == list((await journal.load(run_id)).entries)


async def test_two_processes_claiming_at_once_never_get_the_same_run(
    backend: Backend, open_journal: Opener, children: Callable[..., Child], reactor: str
) -> None:
    """Two processes claiming the same dead owner's runs at once split them: every run is
    taken exactly once."""
    runs = await dead_owner_runs(children, backend, reactor, 60)
    claimers = [children(backend, "claim", reactor, "3") for _ in range(2)]
    first, second = [await c.line() for c in claimers]
    assert set(first).isdisjoint(second)
    assert sorted(runs) == sorted(first + second)


async def test_two_journals_in_threads_claiming_at_once_never_get_the_same_run(
    backend: Backend, children: Callable[..., Child], reactor: str
) -> None:
    """The same with two journals in two threads of this process, each on its own loop."""
    runs = await dead_owner_runs(children, backend, reactor, 40)
    start, done = threading.Barrier(2), threading.Barrier(2)
    results: list[list[str]] = [[], []]

    async def claim_all(i: int) -> None:
        async with backend.open() as journal:
            start.wait()
            for _ in range(len(runs)):  # bounded: a broken claim must fail, not spin
                if not (batch := await journal.claim(reactor, limit=2)):
                    break
                results[i] += batch
            done.wait()  # closing releases what it holds: the other could take it then

    threads = [threading.Thread(target=asyncio.run, args=(claim_all(i),)) for i in range(2)]
    for t in threads:
        t.start()
    await asyncio.get_running_loop().run_in_executor(None, lambda: [t.join() for t in threads])
    assert set(results[0]).isdisjoint(results[1])
    assert sorted(runs) == sorted(results[0] + results[1])


async def test_unfinished_runs_only_are_claimed(
    backend: Backend, open_journal: Opener, children: Callable[..., Child], reactor: str
) -> None:
    """Runs that ended (completed, failed, halted, undone) are never claimed."""
    journal = open_journal(lease=0.2)
    for status in ("completed", "failed", "halted", "undone"):
        await journal.create_run(status, reactor, "fp", b"in")
        await journal.finish(status, status)
    await journal.aclose()
    assert [] == await open_journal().claim(reactor)


# --------------------------------------------------------------------------- owners


def test_owner_identity_is_host_pid_and_start_time() -> None:
    """process_owner() is host:pid:start; this process is alive, as seen from this host."""
    owner = process_owner()
    _, pid, start = owner.rsplit(":", 2)
    assert int(pid) == os.getpid()
    assert start  # Linux: boot id and start time from /proc
    assert owner_alive(owner)
    assert process_owner("box-7").startswith("box-7:")


def stat_fields(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat from the third (the state) on."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def test_owner_alive_sees_dead_reused_and_zombie_processes() -> None:
    """A killed process is dead; so is one that is killed but not yet reaped (a zombie); a
    pid with another start time (reused) is not the owner; other hosts are alive (their
    lease decides); an unreadable owner is left to its lease."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pid = proc.pid
        _, _, start = process_owner().rsplit(":", 2)
        boot = start.split(".")[0]
        ticks = stat_fields(pid)[19]
        host = process_owner().rsplit(":", 2)[0]
        live = f"{host}:{pid}:{boot}.{ticks}"
        assert owner_alive(live)
        assert not owner_alive(f"{host}:{pid}:{boot}.{int(ticks) + 1}")  # pid reused
        assert not owner_alive(f"{host}:{pid}:other.{ticks}")  # another boot
        proc.kill()
        deadline = time.monotonic() + 10
        while "Z" != stat_fields(pid)[0]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert not owner_alive(live)  # a zombie
        proc.wait()
        assert not owner_alive(live)  # gone
        assert owner_alive(f"elsewhere.example:{pid}:x.1")
        assert owner_alive("not an owner")
    finally:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------- serializers


def test_pickle_serializer_round_trips_and_names_what_it_cannot_pickle() -> None:
    """PickleSerializer round-trips picklable values; an unpicklable one is a TypeError
    naming the value's type."""
    s = rp.PickleSerializer()
    assert {"a": (1, 2.5, None)} == s.loads(s.dumps({"a": (1, 2.5, None)}))
    with pytest.raises(TypeError, match=r"type 'dict' cannot be serialized with pickle.*lock"):
        s.dumps({"lock": threading.Lock()})
    with pytest.raises(TypeError, match="'generator'"):
        s.dumps(x for x in ())


def test_json_serializer_round_trips_and_names_what_it_cannot_encode() -> None:
    """JsonSerializer encodes JSON types (tuples come back as lists); anything else is a
    TypeError naming the value's type."""
    s = rp.JsonSerializer()
    assert {"a": [1, 2.5, None, "é"]} == s.loads(s.dumps({"a": (1, 2.5, None, "é")}))
    with pytest.raises(TypeError, match="type 'set' cannot be serialized with JSON"):
        s.dumps({1, 2})
    with pytest.raises(TypeError, match=r"'tests\.test_journal\.Card'"):
        s.dumps(Card())
    circular: list[Any] = []
    circular.append(circular)
    with pytest.raises(TypeError, match="'list'"):
        s.dumps(circular)


class Card:
    pass


class NeedsTwoArgs(Exception):
    """Cannot be pickled: it holds a lock (and its __init__ does not take its message)."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(f"{code}: {why}")
        self.lock = threading.Lock()


@pytest.mark.parametrize("serializer", [rp.PickleSerializer(), rp.JsonSerializer()])
def test_errors_round_trip_or_come_back_as_recorded_errors(serializer: Any) -> None:
    """dumps_error/loads_error: builtin errors come back as themselves (notes included),
    RunFailed as a RunFailed of its members; an error that cannot be rebuilt (a pickle that
    does not unpickle, any non-builtin in JSON) as a RecordedError naming its type."""
    error = ValueError("bad card")
    error.add_note("step 'charge'")
    back = serializer.loads_error(serializer.dumps_error(error))
    assert (ValueError, ("bad card",), ["step 'charge'"]) == (
        type(back),
        back.args,
        back.__notes__,
    )
    failed = rp.RunFailed("run failed", [KeyError("k"), ValueError("v")], reactor="pay")
    back = serializer.loads_error(serializer.dumps_error(failed))
    assert isinstance(back, rp.RunFailed)
    assert ("pay", [KeyError, ValueError]) == (back.reactor, [type(e) for e in back.exceptions])
    back = serializer.loads_error(serializer.dumps_error(NeedsTwoArgs(402, "declined")))
    assert isinstance(back, rp.RecordedError)
    assert "tests.test_journal.NeedsTwoArgs" == back.type_name
    assert "402: declined" == back.message
    assert "tests.test_journal.NeedsTwoArgs: 402: declined" == str(back)
    assert back.message == pickle.loads(pickle.dumps(back)).message
    unreadable = serializer.loads_error(b"\x00not what dumps_error made")
    assert isinstance(unreadable, rp.RecordedError)


async def test_a_json_journal_records_json(open_journal: Opener) -> None:
    """With JsonSerializer, results and errors round-trip through JSON; a run recorded with
    pickle is still listed (its record decoded with pickle), but load() refuses to continue
    it with another serializer."""
    pickled = open_journal()
    await pickled.create_run("p1", "payment", "fp", pickled.serializer.dumps({}))
    await pickled.finish("p1", "completed", result=pickled.serializer.dumps((1, 2)))
    journal = open_journal(serializer=rp.JsonSerializer())
    s = journal.serializer
    await journal.create_run("j1", "payment", "fp", s.dumps({"order": 42}))
    await journal.append("j1", [Entry("charge", 1, s.dumps({"id": "ch_1"}))])
    await journal.finish("j1", "failed", error=s.dumps_error(ValueError("declined")))
    record = await journal.get("j1")
    assert isinstance(record.error, ValueError)
    stored = await journal.load("j1")
    assert {"order": 42} == s.loads(stored.inputs)
    assert ("json", {"id": "ch_1"}) == (stored.serializer, s.loads(stored.entries[0].result))
    assert (1, 2) == (await journal.get("p1")).result
    with pytest.raises(ValueError, match="recorded with the 'pickle' serializer"):
        await journal.load("p1")


# --------------------------------------------------------------------------- lifecycle


async def test_a_closed_journal_refuses_requests(open_journal: Opener) -> None:
    """After aclose() (twice is fine) requests raise RuntimeError; async with closes."""
    journal = open_journal()
    async with journal as same:
        assert same is journal
        await journal.create_run("r1", "payment", "fp", b"in")
    assert journal.closed
    await journal.aclose()
    with pytest.raises(RuntimeError, match="is closed"):
        journal.append("r1", [Entry("a", 1)])
    with pytest.raises(RuntimeError, match="is closed"):
        journal.mark_undone("r1", "a")
    with pytest.raises(RuntimeError, match="is closed"):
        await journal.get("r1")
    assert "closed" in repr(journal)


async def test_aclose_commits_what_was_queued(open_journal: Opener) -> None:
    """Appends queued before aclose() are committed, and their futures resolved."""
    journal = open_journal()
    await journal.create_run("r1", "payment", "fp", b"in")
    futures = [journal.append("r1", [Entry(f"s{i}", i)]) for i in range(20)]
    await journal.aclose()
    await asyncio.gather(*futures)
    assert 20 == len((await open_journal().load("r1")).entries)


async def test_reopening_the_database_keeps_everything(open_journal: Opener) -> None:
    """A journal opened again on the same database finds every run as it was left."""
    async with open_journal() as journal:
        await journal.create_run("r1", "payment", "fp", b"in", b"wiring")
        await journal.append("r1", [Entry("a", 1, b"1", b"u"), Entry("b", 2, b"2")])
        await journal.request_undo("r1")
        await journal.mark_undone("r1", "a")
        await journal.create_run("r2", "payment", "fp", b"in")
        await journal.finish("r2", "halted", checkpoint=b"cp")
        before = [await journal.load(r) for r in ("r1", "r2")]
    async with open_journal() as again:
        after = [await again.load(r) for r in ("r1", "r2")]
    assert before == after


# --------------------------------------------------------------------------- backend-specific


def test_sqlite_refuses_memory_and_unknown_options(tmp_path: Path) -> None:
    """An in-memory database cannot be shared between connections; synchronous is NORMAL or
    FULL; a lease is positive."""
    with pytest.raises(ValueError, match="needs a file"):
        rp.SQLiteJournal(":memory:")
    with pytest.raises(ValueError, match="'NORMAL' or 'FULL'"):
        rp.SQLiteJournal(tmp_path / "a.db", synchronous="OFF")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lease must be a positive"):
        rp.SQLiteJournal(tmp_path / "a.db", lease=0)


async def test_sqlite_full_synchronous_works(tmp_path: Path) -> None:
    """synchronous='FULL' is set on the connection and records as NORMAL does."""
    async with rp.SQLiteJournal(tmp_path / "full.db", synchronous="FULL") as journal:
        await journal.create_run("r1", "payment", "fp", b"in")
        await journal.append("r1", [Entry("a", 1)])
        assert 1 == len((await journal.load("r1")).entries)
    assert (
        "wal" == sqlite3.connect(tmp_path / "full.db").execute("PRAGMA journal_mode").fetchone()[0]
    )


async def test_sqlite_refuses_a_newer_schema(tmp_path: Path) -> None:
    """A file written by a newer schema version is refused with a message saying so."""
    path = tmp_path / "runs.db"
    await rp.SQLiteJournal(path).aclose()
    with sqlite3.connect(path) as conn:
        assert 1 == conn.execute("PRAGMA user_version").fetchone()[0]
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(ValueError, match="schema version 99"):
        rp.SQLiteJournal(path)


async def test_sqlite_single_requests_refused_on_the_loops_connection_fail_as_usual(
    tmp_path: Path,
) -> None:
    """A turn's one request (committed by the event loop itself when the writer is idle)
    that the fence or the job refuses fails as it would in the writer: an append (of one
    entry or several) to an ended or unknown run, a finish of an ended run; nothing is
    written."""
    async with rp.SQLiteJournal(tmp_path / "runs.db") as journal:
        await journal.create_run("r1", "payment", "fp", b"in")
        await journal.finish("r1", "completed")
        with pytest.raises(rp.OwnershipError, match="has ended as 'completed'"):
            await journal.append("r1", [Entry("a", 1)])
        with pytest.raises(rp.OwnershipError, match="has ended as 'completed'"):
            await journal.append("r1", [Entry("a", 1), Entry("b", 2), Entry("c", 3)])
        with pytest.raises(LookupError):
            await journal.append("nope", [Entry("a", 1)])
        with pytest.raises(rp.OwnershipError):
            await journal.finish("r1", "failed")
        assert [] == list((await journal.load("r1")).entries)
        assert "completed" == (await journal.get("r1")).status


async def test_sqlite_single_requests_wait_for_a_lock_another_process_holds(
    tmp_path: Path,
) -> None:
    """While another connection holds the file's write lock, a turn's one append is not
    committed by the event loop (which never waits for it) but by the writer, once the
    lock is free."""
    path = tmp_path / "runs.db"
    async with rp.SQLiteJournal(path) as journal:
        await journal.create_run("r1", "payment", "fp", b"in")
        async with SQLiteBackend(path).hold_writes("r1"):
            future = journal.append("r1", [Entry("a", 1)])
            await asyncio.sleep(0.05)
            assert not future.done()
        await future
        assert ["a"] == [e.key for e in (await journal.load("r1")).entries]


def wal_size(path: Path) -> int:
    return Path(f"{path}-wal").stat().st_size


async def test_sqlite_the_wal_is_checkpointed_when_the_loop_commits(tmp_path: Path) -> None:
    """3,000 appends awaited one by one (each committed by the event loop, whose connection
    never checkpoints): the writer checkpoints the WAL, which stays under 12 MB (about 22
    without)."""
    path = tmp_path / "runs.db"
    async with rp.SQLiteJournal(path) as journal:
        await journal.create_run("r1", "payment", "fp", b"in")
        for i in range(3000):
            await journal.append("r1", [Entry(f"s{i}", i, b"x" * 100)])
        assert 3001 == journal.commits  # (the run's record, and one commit per append)
        assert wal_size(path) < 12 * 2**20


ENDINGS = ("completed", "failed", "halted", "undone")
# One request at a time, as the event loop would commit it: (op, run, key(s)).
REQUESTS = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.sampled_from("rs"), st.just(())),
        st.tuples(
            st.just("append"),
            st.sampled_from("rsx"),
            st.lists(st.sampled_from("abc"), min_size=1, max_size=3, unique=True),
        ),
        st.tuples(st.just("redo"), st.sampled_from("rs"), st.tuples(st.sampled_from("abc"))),
        st.tuples(st.just("mark"), st.sampled_from("rs"), st.tuples(st.sampled_from("abc"))),
        st.tuples(st.just("finish"), st.sampled_from("rs"), st.tuples(st.sampled_from(ENDINGS))),
    ),
    max_size=12,
)


async def _requests_one_by_one(journal: rp.Journal, requests: list[Any]) -> list[Any]:
    """Make each request alone (awaited before the next); return what each gave, then
    what the journal holds."""
    seen: list[Any] = []
    for n, (op, run_id, keys) in enumerate(requests):
        try:
            if op == "create":
                out: Any = await journal.create_run(run_id, "payment", "fp", b"in")
                out = None if out is None else out.status
            elif op in ("append", "redo"):
                entries = [Entry(k, n, b"%d" % n, b"u") for k in keys]
                out = await journal.append(run_id, entries, redone=keys if op == "redo" else ())
            elif op == "mark":
                out = await journal.mark_undone(run_id, keys[0])
            else:
                out = await journal.finish(run_id, keys[0])
        except Exception as exc:
            out = (type(exc).__name__, str(exc))
        seen.append(out)
    for run_id in "rs":
        try:
            stored = await journal.load(run_id)
        except LookupError:
            continue
        entries = [(e.key, e.seq, e.result) for e in stored.entries]
        seen.append((run_id, stored.record.status, entries, sorted(stored.undone)))
    return seen


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(requests=REQUESTS)
def test_sqlite_the_loops_commits_equal_the_writers(tmp_path: Path, requests: list[Any]) -> None:
    """`SQLiteJournal._commit_here` (a lone request committed by the event loop itself) is
    equivalent to the writer thread committing it: the same requests one at a time give the
    same results, errors and journal, with the loop's path on and off."""

    async def run(path: Path, loop_commits: bool) -> list[Any]:
        async with rp.SQLiteJournal(path) as journal:
            before = journal.commits
            if not loop_commits:
                journal._commit_here = lambda request: False  # type: ignore[method-assign]
            seen = await _requests_one_by_one(journal, requests)
            seen.append(journal.commits - before)
            return seen

    name = uuid.uuid4().hex
    here = asyncio.run(run(tmp_path / f"{name}-loop.db", True))
    writer = asyncio.run(run(tmp_path / f"{name}-writer.db", False))
    assert writer == here


async def test_postgres_refuses_a_newer_schema() -> None:
    """A schema whose journal is of a newer version is refused with a message saying so."""
    import asyncpg

    backend = PostgresBackend(postgres_dsn())
    try:
        async with backend.open():  # connects, and creates the schema
            pass
        conn = await asyncpg.connect(backend.dsn)
        meta = f'"{backend.schema}".reactorpy_meta'
        await conn.execute(f"UPDATE {meta} SET value = '99' WHERE name = 'schema_version'")
        await conn.close()
        journal = backend.open()
        with pytest.raises(ValueError, match="schema version 99"):
            await journal.get("x")
        await journal.aclose()
    finally:
        await asyncio.get_running_loop().run_in_executor(None, backend.drop)


async def test_postgres_writer_reconnects_after_losing_its_connection() -> None:
    """When the server ends the writer's connection mid-statement (a restart, a failover),
    that batch fails with the connection's error and the next one reconnects and commits;
    a connection ended while idle is replaced before the next batch, which nobody notices."""
    import asyncpg

    backend = PostgresBackend(postgres_dsn())
    admin = await asyncpg.connect(backend.dsn)

    async def terminate(pid: int, *, waiting: bool) -> None:
        state = "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1"
        if waiting:  # in a statement, blocked on the row lock hold_writes holds
            assert await eventually(lambda: admin.fetchval(state, pid))
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
        gone = "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $1"
        assert await eventually(lambda: admin.fetchval(gone, pid))

    try:
        async with backend.open() as journal:
            await journal.create_run("r1", "payment", "fp", b"in")
            # The writer's own connection (private: there is no public handle on it).
            writer = journal._conn  # type: ignore[attr-defined]
            async with backend.hold_writes("r1"):
                lost = journal.append("r1", [Entry("lost", 1)])
                await terminate(writer.get_server_pid(), waiting=True)
                with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
                    await lost
            await journal.append("r1", [Entry("kept", 2)])
            writer = journal._conn  # type: ignore[attr-defined]
            await terminate(writer.get_server_pid(), waiting=False)

            async def closed() -> bool:  # the client has seen the socket close
                return bool(writer.is_closed())

            assert await eventually(closed)
            await journal.append("r1", [Entry("also kept", 3)])
            assert ["kept", "also kept"] == [e.key for e in (await journal.load("r1")).entries]
    finally:
        await admin.close()
        await asyncio.get_running_loop().run_in_executor(None, backend.drop)


async def test_postgres_unreachable_fails_the_waiting_requests_and_retries() -> None:
    """A server that cannot be reached fails the calls and the appends waiting for the
    connection with the connection's error; the next call tries again."""
    journal = rp.PostgresJournal("postgresql://nobody@127.0.0.1:1/nothing")
    queued = journal.append("r1", [Entry("a", 1)])
    with pytest.raises(ConnectionRefusedError):
        await journal.create_run("r1", "payment", "fp", b"in")
    with pytest.raises(ConnectionRefusedError):
        await queued
    with pytest.raises(ConnectionRefusedError):
        await journal.get("r1")
    await journal.aclose()


def test_postgres_journal_names_the_extra_when_asyncpg_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without asyncpg, making a PostgresJournal says which extra to install."""
    monkeypatch.setitem(sys.modules, "asyncpg", None)
    with pytest.raises(ImportError, match=r"pip install 'reactorpy\[postgres\]'"):
        rp.PostgresJournal("postgresql://localhost/x")


def test_importing_reactorpy_imports_no_database_driver() -> None:
    """``import reactorpy`` imports neither sqlite3 nor asyncpg; the journals load on first
    use, and only a PostgresJournal imports asyncpg."""
    code = (
        "import sys, reactorpy as rp\n"
        "assert 'sqlite3' not in sys.modules and 'asyncpg' not in sys.modules\n"
        "rp.SQLiteJournal, rp.PostgresJournal, rp.RunRecord\n"
        "assert 'sqlite3' in sys.modules and 'asyncpg' not in sys.modules\n"
        "print(rp.RunRecord.__module__, rp.RunStatus('failed') == 'failed')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert "reactorpy True" == out.stdout.strip()


async def test_sqlite_without_poll_uses_a_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where select.poll is missing (Windows) the writer's inbox is a queue.SimpleQueue; the
    journal works the same, group commit included."""
    import select

    monkeypatch.delattr(select, "poll")
    async with rp.SQLiteJournal(tmp_path / "runs.db") as journal:
        await journal.create_run("r1", "payment", "fp", b"in")
        await journal.append("r1", [Entry("a", 1)])
        await asyncio.gather(*[journal.append("r1", [Entry(f"s{i}", i + 2)]) for i in range(50)])
        assert 51 == len((await journal.load("r1")).entries)
