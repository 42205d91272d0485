"""A journaled run's writes (`reactorpy/_executor/durable.py`), against a real SQLite journal
(and PostgreSQL for the chain): a completion is committed before the steps it made ready
start, siblings share commits, and a write that waits when the run stops or that the
journal refuses ends the run as it should; what `recover()` returns.

What is committed is read with a connection of the test's own; the file's write lock, taken
by the test (``BEGIN IMMEDIATE``), holds the journal's writer back deterministically.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import reactorpy as rp


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "runs.db"


@pytest.fixture
def reader(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, isolation_level=None)
    yield conn
    conn.close()


def committed(reader: sqlite3.Connection, run_id: str) -> set[str]:
    """The keys of the run's entries other connections can read (committed)."""
    rows = reader.execute("SELECT key FROM entries WHERE run_id = ?", (run_id,))
    return {key for (key,) in rows}


class WriteLock:
    """The journal file's write lock, taken from the event loop's thread."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)

    def take(self) -> None:
        if not self.conn.in_transaction:
            self.conn.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def close(self) -> None:
        self.release()
        self.conn.close()


async def test_each_step_of_a_chain_starts_after_its_predecessor_is_committed(
    path: Path, reader: sqlite3.Connection
) -> None:
    """Chain of 30: when step i starts, step i - 1's entry is committed, and the run
    returns the last value."""
    seen: list[bool] = []
    r = rp.Reactor("chain", returns="s29")

    @r.step(name="s0")
    async def s0() -> int:
        return 0

    def follower(i: int) -> Any:
        async def step(x: int) -> int:
            seen.append(f"s{i - 1}" in committed(reader, "c1"))
            return x + 1

        return step

    for i in range(1, 30):
        r.step(follower(i), name=f"s{i}", args={"x": rp.Result(f"s{i - 1}")})
    async with rp.SQLiteJournal(path) as journal:
        assert 29 == await r.run({}, journal=journal, run_id="c1")
    assert [True] * 29 == seen
    assert {f"s{i}" for i in range(30)} == committed(reader, "c1")


async def test_siblings_share_commits_and_their_dependent_waits_for_all(
    path: Path, reader: sqlite3.Connection
) -> None:
    """50 independent steps complete while the writer is held back: their entries go in at
    most two commits, and the step depending on all of them starts once all are committed."""
    lock = WriteLock(path)
    loop = asyncio.get_running_loop()
    seen: list[set[str]] = []
    r = rp.Reactor("fan", returns="sink")

    async def leaf() -> int:
        if not lock.conn.in_transaction:  # the first leaf: hold the writer for a while
            lock.take()
            loop.call_later(0.05, lock.release)
        return 1

    for i in range(50):
        r.step(leaf, name=f"l{i}")

    async def sink(**leaves: int) -> int:
        seen.append(committed(reader, "f1"))
        return sum(leaves.values())

    r.step(sink, name="sink", args={f"l{i}": rp.Result(f"l{i}") for i in range(50)})
    try:
        async with rp.SQLiteJournal(path) as journal:
            before = journal.commits
            assert 50 == await r.run({}, journal=journal, run_id="f1")
            # create_run, the leaves (the commit in flight and the next), the sink, finish
            assert journal.commits - before <= 5
    finally:
        lock.close()
    assert [{f"l{i}" for i in range(50)}] == seen


async def test_the_dependents_of_siblings_written_together_start_once_committed(
    path: Path, reader: sqlite3.Connection
) -> None:
    """20 pairs ``a{i} -> b{i}``, each ``a`` completing in a worker of its own while the
    writer is held back: their completions queue behind the append in flight and go
    together (no worker waits for such a shared write), and each ``b`` starts, once its
    ``a`` is committed."""
    lock = WriteLock(path)
    loop = asyncio.get_running_loop()
    seen: list[bool] = []
    r = rp.Reactor("pairs")

    def first(i: int) -> Any:
        async def a() -> int:
            await asyncio.sleep(0)
            if not lock.conn.in_transaction:  # the first `a`: hold the writer for a while
                lock.take()
                loop.call_later(0.05, lock.release)
            return i

        return a

    def then(i: int) -> Any:
        async def b(x: int) -> int:
            seen.append(f"a{i}" in committed(reader, "q1"))
            return x

        return b

    for i in range(20):
        r.step(first(i), name=f"a{i}")
        r.step(then(i), name=f"b{i}", args={"x": rp.Result(f"a{i}")})
    try:
        async with rp.SQLiteJournal(path) as journal:
            before = journal.commits
            result = await r.run({}, journal=journal, run_id="q1")
            assert journal.commits - before < 20
    finally:
        lock.close()
    assert [True] * 20 == seen
    assert {f"b{i}": i for i in range(20)} == {k: v for k, v in result.items() if k[0] == "b"}


async def test_a_run_halted_while_a_worker_waits_for_a_write_halts(
    path: Path, reader: sqlite3.Connection
) -> None:
    """The timeout passes while `a`'s write is held back and the worker waiting for it is
    cancelled (grace=0): the run halts (the cancelled wait is not a journal failure), `b`
    never starts, and `a`'s entry lands all the same."""
    lock = WriteLock(path)
    loop = asyncio.get_running_loop()
    started: list[str] = []
    r = rp.Reactor("halting", returns="b")

    @r.step(name="a")
    async def a() -> int:
        lock.take()
        loop.call_later(0.3, lock.release)
        return 1

    @r.step(name="b", args={"x": rp.Result("a")})
    async def b(x: int) -> int:
        started.append("b")
        return x

    try:
        async with rp.SQLiteJournal(path) as journal:
            with pytest.raises(rp.Halted) as halted:
                await r.run({}, journal=journal, run_id="h1", timeout=0.05, grace=0)
            assert "timeout" == halted.value.reason
            assert "halted" == (await journal.get("h1")).status
    finally:
        lock.close()
    assert [] == started
    assert {"a"} == committed(reader, "h1")


class Refusing(rp.SQLiteJournal):
    """A journal whose append of step ``b`` fails (as a database error would)."""

    def append(self, run_id: str, entries: Any, *, redone: Any = ()) -> asyncio.Future[None]:
        if any(e.key == "b" for e in entries):
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.set_exception(sqlite3.OperationalError("disk I/O error"))
            return future
        return super().append(run_id, entries, redone=redone)


async def test_a_write_the_journal_refuses_fails_the_run_before_what_it_made_ready(
    path: Path,
) -> None:
    """`b`'s entry cannot be written: `c` never starts, the run fails with the journal's
    error (noted), and is recorded as failed."""
    started: list[str] = []
    r = rp.Reactor("refused", returns="c")

    @r.step(name="a")
    async def a() -> int:
        return 1

    @r.step(name="b", args={"x": rp.Result("a")})
    async def b(x: int) -> int:
        return x

    @r.step(name="c", args={"x": rp.Result("b")})
    async def c(x: int) -> int:
        started.append("c")
        return x

    async with Refusing(path) as journal:
        with pytest.raises(rp.RunFailed) as failed:
            await r.run({}, journal=journal, run_id="x1")
        assert "failed" == (await journal.get("x1")).status
    assert [] == started
    [error] = failed.value.exceptions
    assert isinstance(error, sqlite3.OperationalError)
    assert any("could not be recorded in the journal" in n for n in error.__notes__)


class Unhashable(rp.PickleSerializer):
    """A serializer that cannot be a dict key (it compares by value, with no hash)."""

    __hash__ = None  # type: ignore[assignment]


@pytest.mark.parametrize("serializer", [rp.PickleSerializer(), rp.JsonSerializer(), Unhashable()])
async def test_each_run_records_the_wiring_of_its_reactor(path: Path, serializer: Any) -> None:
    """Every run records its reactor's wiring (what a recovery compares), the same for two
    runs of one plan, whatever the serializer."""
    r = rp.Reactor("wired", returns="c")
    r.step(lambda: 1, name="a")
    r.step(lambda: 2, name="b")
    r.step(lambda x, y: x + y, name="c", args={"x": rp.Result("a"), "y": rp.Result("b")})
    async with rp.SQLiteJournal(path, serializer=serializer) as journal:
        for run_id in ("w1", "w2"):
            assert 3 == await r.run({}, journal=journal, run_id=run_id)
            stored = await journal.load(run_id)
            assert stored.structure is not None
            wiring = serializer.loads(stored.structure)
            assert {"a": [], "b": [], "c": ["a", "b"]} == wiring


async def test_recover_finishes_abandoned_runs_and_returns_their_records_in_claim_order(
    path: Path,
) -> None:
    """Runs whose owner released them with `a` recorded are finished by `recover()` from
    `b` on (`a` does not run again), and their records come back oldest first."""
    from reactorpy._journal import Entry

    calls: list[str] = []
    r = rp.Reactor("abandoned", inputs=["order"], returns="c")

    @r.step(name="a", args={"order": rp.Input("order")})
    async def a(order: int) -> int:
        calls.append("a")
        return order

    @r.step(name="b", args={"x": rp.Result("a")})
    async def b(x: int) -> int:
        calls.append("b")
        return x + 1

    @r.step(name="c", args={"x": rp.Result("b")})
    async def c(x: int) -> int:
        return x + 1

    plan = r.plan()
    wiring = {k: list(v) for k, v in plan.structure.items()}
    ids = [f"order-{i}" for i in (3, 1, 2)]
    async with rp.SQLiteJournal(path, host="gone.example") as gone:  # its leases end on close
        dumps = gone.serializer.dumps
        for i, run_id in enumerate(ids):
            inputs = dumps({"order": 10 * i})
            await gone.create_run(run_id, r.name, plan.fingerprint, inputs, dumps(wiring))
            await gone.append(run_id, [Entry("a", 1, dumps(10 * i))])
    async with rp.SQLiteJournal(path) as journal:
        records = await r.recover(journal)
    assert ids == [record.run_id for record in records]
    assert [("completed", 10 * i + 2) for i in range(3)] == [(x.status, x.result) for x in records]
    assert ["b", "b", "b"] == calls


async def test_the_completions_of_one_worker_pass_go_in_one_request(path: Path) -> None:
    """40 independent steps that never wait run one after another in one worker: their
    completions are one request, one commit (with the run's record and its end: 3)."""
    r = rp.Reactor("pass")
    calls = 0

    async def one() -> int:
        nonlocal calls
        calls += 1
        return 1

    for i in range(40):
        r.step(one, name=f"s{i}")
    async with rp.SQLiteJournal(path) as journal:
        before = journal.commits
        result = await r.run({}, journal=journal, run_id="p1")
        assert 3 == journal.commits - before
        assert 40 == len((await journal.load("p1")).entries)
    assert {f"s{i}": 1 for i in range(40)} == result
    assert 40 == calls


async def test_a_journal_closed_during_the_run_fails_it(path: Path) -> None:
    """A step closes the journal: its completion cannot be appended, so what it made
    ready never starts and the run fails with the journal's error."""
    started: list[str] = []
    journal = rp.SQLiteJournal(path)
    r = rp.Reactor("closing", returns="b")

    @r.step(name="a")
    async def a() -> int:
        await journal.aclose()
        return 1

    @r.step(name="b", args={"x": rp.Result("a")})
    async def b(x: int) -> int:
        started.append("b")
        return x

    with pytest.raises(rp.RunFailed) as failed:
        await r.run({}, journal=journal, run_id="k1")
    assert [] == started
    [error] = failed.value.exceptions
    assert isinstance(error, RuntimeError)
    assert "closed" in str(error)


async def test_on_postgres_each_step_of_a_chain_starts_after_its_predecessor_is_committed() -> None:
    """The chain's promise on PostgreSQL: when step i starts, step i - 1's entry is
    committed (read from a connection of the test's own)."""
    import asyncpg

    from tests.test_journal import PostgresBackend, postgres_dsn

    backend = PostgresBackend(postgres_dsn())
    conn = await asyncpg.connect(backend.dsn)
    seen: list[bool] = []
    r = rp.Reactor("chain", returns="s9")

    @r.step(name="s0")
    async def s0() -> int:
        return 0

    def follower(i: int) -> Any:
        async def step(x: int) -> int:
            rows = await conn.fetch(
                f'SELECT key FROM "{backend.schema}".reactorpy_entries WHERE run_id = $1', "p1"
            )
            seen.append(f"s{i - 1}" in {row[0] for row in rows})
            return x + 1

        return step

    for i in range(1, 10):
        r.step(follower(i), name=f"s{i}", args={"x": rp.Result(f"s{i - 1}")})
    try:
        async with backend.open() as journal:
            assert 9 == await r.run({}, journal=journal, run_id="p1")
            assert "completed" == (await journal.get("p1")).status
    finally:
        await conn.close()
        await asyncio.get_running_loop().run_in_executor(None, backend.drop)
    assert [True] * 9 == seen


async def test_a_worker_whose_write_lands_after_the_run_halted_starts_nothing(
    path: Path, reader: sqlite3.Connection
) -> None:
    """The timeout passes while `a`'s write is held back, and the worker waiting for it is
    given the grace to finish: once the write lands it starts nothing (`b` never runs) and
    the run halts."""
    lock = WriteLock(path)
    loop = asyncio.get_running_loop()
    started: list[str] = []
    r = rp.Reactor("stopping", returns="b")

    @r.step(name="a")
    async def a() -> int:
        lock.take()
        loop.call_later(0.2, lock.release)
        return 1

    @r.step(name="b", args={"x": rp.Result("a")})
    async def b(x: int) -> int:
        started.append("b")
        return x

    try:
        async with rp.SQLiteJournal(path) as journal:
            with pytest.raises(rp.Halted):
                await r.run({}, journal=journal, run_id="s1", timeout=0.05, grace=5)
            assert "halted" == (await journal.get("s1")).status
    finally:
        lock.close()
    assert [] == started
    assert {"a"} == committed(reader, "s1")


async def test_an_append_queued_just_before_aclose_is_committed(path: Path) -> None:
    """A lone append (held for the end of its event loop turn) queued right before
    `aclose()` is committed before the journal closes."""
    from reactorpy._journal import Entry

    journal = rp.SQLiteJournal(path)
    await journal.create_run("r1", "payment", "fp", b"in")
    future = journal.append("r1", [Entry("a", 1)])
    await journal.aclose()
    await future
    async with rp.SQLiteJournal(path) as again:
        assert ["a"] == [e.key for e in (await again.load("r1")).entries]


class Logged(rp.SQLiteJournal):
    """A journal that logs the requests it is given, in order, and holds each append's
    answer back until `opened` (appends still go to the database at once)."""

    def __init__(self, path: Path, refuse: str | None = None) -> None:
        super().__init__(path)
        self.refuse = refuse  # a step whose append's answer is an error
        self.log: list[tuple[str, Any]] = []
        self.opened = asyncio.Event()
        self.appended = asyncio.Event()

    def append(self, run_id: str, entries: Any, *, redone: Any = ()) -> asyncio.Future[None]:
        self.log.append(("append", tuple(e.key for e in entries)))
        self.appended.set()
        inner = super().append(run_id, entries, redone=redone)

        async def answer() -> None:
            await self.opened.wait()
            await inner
            if any(e.key == self.refuse for e in entries):
                raise sqlite3.OperationalError("disk I/O error")

        return asyncio.ensure_future(answer())

    def mark_undone(self, run_id: str, key: str) -> asyncio.Future[None]:
        self.log.append(("mark_undone", key))
        return super().mark_undone(run_id, key)

    async def request_undo(self, run_id: str, *, error: bytes | None = None) -> None:
        self.log.append(("request_undo", None))
        await super().request_undo(run_id, error=error)

    async def finish(self, run_id: str, status: Any, **data: Any) -> None:
        self.log.append(("finish", str(status)))
        await super().finish(run_id, status, **data)


def saga(journal: Logged, both: asyncio.Event, ending: str) -> rp.Reactor:
    """`a` and `b` complete (`b`'s write queued behind `a`'s, which the journal holds
    back); then `c` fails or halts the run."""
    r = rp.Reactor("queued")
    undone: list[str] = []

    for name in ("a", "b"):

        async def run(name: str = name) -> str:
            if name == "b":
                await journal.appended.wait()  # `a`'s write is sent
                both.set()
            return name

        async def undo(value: str) -> None:
            undone.append(value)

        r.step(name=name)(run).undo(undo)

    @r.step(name="c")
    async def c() -> None:
        await both.wait()
        for _ in range(5):  # `b`'s completion is queued meanwhile
            await asyncio.sleep(0)
        if ending == "fail":
            raise RuntimeError("declined")
        raise rp.Halt("paused")

    r.undone = undone  # type: ignore[attr-defined]
    return r


@pytest.mark.parametrize("ending", ["fail", "halt"])
async def test_a_run_ends_only_once_every_queued_completion_is_in_the_journal(
    path: Path, reader: sqlite3.Connection, ending: str
) -> None:
    """A run that fails or halts while completions are still queued for the journal
    waits for them: each is appended before the undo is requested and the end recorded,
    so a crash can never leave a completed step out (nor an undo mark before its
    completion)."""
    both = asyncio.Event()
    async with Logged(path) as journal:
        r = saga(journal, both, ending)
        asyncio.get_running_loop().call_later(0.05, journal.opened.set)
        expected = rp.RunFailed if ending == "fail" else rp.Halted
        with pytest.raises(expected):
            await r.run({}, journal=journal, run_id="q1")
        record = await journal.get("q1")
    assert {"a", "b"} <= committed(reader, "q1")
    appended = [i for i, (kind, _) in enumerate(journal.log) if kind == "append"]
    later = [i for i, (kind, _) in enumerate(journal.log) if kind != "append"]
    assert max(appended) < min(later), journal.log
    if ending == "fail":
        assert ["b", "a"] == r.undone  # type: ignore[attr-defined]
        assert "failed" == record.status
    else:
        assert [] == r.undone  # type: ignore[attr-defined]
        assert "halted" == record.status


async def test_a_completion_the_journal_refuses_while_the_run_undoes_is_reported(
    path: Path,
) -> None:
    """`b`'s write, queued when `c` fails, is refused: the run's error names the journal's
    error too (the undo still undoes `b`)."""
    both = asyncio.Event()
    async with Logged(path, refuse="b") as journal:
        r = saga(journal, both, "fail")
        asyncio.get_running_loop().call_later(0.05, journal.opened.set)
        with pytest.raises(rp.RunFailed) as failed:
            await r.run({}, journal=journal, run_id="q2")
    assert ["b", "a"] == r.undone  # type: ignore[attr-defined]
    kinds = {type(e) for e in failed.value.exceptions}
    assert {RuntimeError, sqlite3.OperationalError} == kinds
    assert "(the journal)" in str(failed.value)


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
