"""The SQLite journal: one file that many processes share, one writer thread per journal.

Owns: `SQLiteJournal`, its schema (versioned by ``PRAGMA user_version``), its writer thread
and its reader thread.
Must not import: the executor, the reactor, the CLI.

The writer thread, which alone writes through its connection:

1. Take every request waiting in its inbox, sleeping on a pipe while there is none
   (``append``/``mark_undone`` put theirs from the event loop without waiting; the async
   calls put a job and await its future): that is one batch, one transaction (group commit).
2. ``BEGIN IMMEDIATE`` (the file's write lock; other processes wait up to ``busy_timeout``).
3. In queue order: each stretch of appends and undo marks is fenced (a ``SELECT`` per run:
   written only if this process owns it and it is running) and written with one
   ``executemany``; every other request runs its job. (A batch of one append of one entry,
   a chain's, is one fenced ``INSERT`` in autocommit instead: no ``BEGIN``, no ``COMMIT``.)
4. ``COMMIT``; then one ``call_soon_threadsafe`` per event loop resolves every future of
   the batch. A job may refuse its own request (`Refused`): its future fails, the rest
   commits. A batch the database fails is rolled back and retried one request per
   transaction, so a bad request fails only its own future.
5. Every ``lease / 3`` seconds, between batches, renew the leases of the runs this journal
   owns (the event loop may be busy: the thread is not).

Reads (``get``, ``load``, ``runs``) go through a second connection in a reader thread: in
WAL mode they never wait for the writer.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import queue
import select
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from .batches import Outcome, Refused, settle
from .journal import Journal
from .records import RECORD_COLUMNS, Entry, RunRecord, RunStatus, StoredRun
from .serializers import Serializer

__all__ = ["SQLiteJournal"]

_log = logging.getLogger("reactorpy.journal")

SCHEMA_VERSION = 1
_SCHEMA = (
    """CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        reactor TEXT NOT NULL,
        status TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        owner TEXT NOT NULL,
        lease_expires REAL NOT NULL,
        undo_requested INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        ended REAL,
        serializer TEXT NOT NULL,
        inputs BLOB NOT NULL,
        structure BLOB,
        result BLOB,
        error BLOB,
        checkpoint BLOB
    )""",
    "CREATE INDEX runs_by_reactor ON runs (reactor, status)",
    "CREATE INDEX runs_by_status ON runs (status, created)",
    # Entries and undo marks cluster by run (WITHOUT ROWID): a run's rows are read together.
    """CREATE TABLE entries (
        run_id TEXT NOT NULL,
        key TEXT NOT NULL,
        seq INTEGER NOT NULL,
        result BLOB,
        undo BLOB,
        PRIMARY KEY (run_id, key)
    ) WITHOUT ROWID""",
    """CREATE TABLE undone (
        run_id TEXT NOT NULL,
        key TEXT NOT NULL,
        PRIMARY KEY (run_id, key)
    ) WITHOUT ROWID""",
)

_INSERT_RUN = (
    "INSERT INTO runs (run_id, reactor, status, fingerprint, owner, lease_expires, created, "
    "updated, serializer, inputs, structure) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (run_id) DO NOTHING"
)
_SELECT_RECORD = f"SELECT {RECORD_COLUMNS} FROM runs WHERE run_id = ?"
_SELECT_STATE = "SELECT status, owner FROM runs WHERE run_id = ?"
# The fence: a run's rows are written only while this process owns it and it runs. A read,
# not an update: the run's row stays out of the commit (a page less to write per commit).
_FENCE = "SELECT 1 FROM runs WHERE run_id = ? AND owner = ? AND status = 'running'"
_UPSERT_ENTRY = (
    "INSERT INTO entries (run_id, key, seq, result, undo) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (run_id, key) DO UPDATE SET seq = excluded.seq, result = excluded.result, "
    "undo = excluded.undo"
)
# A chain's append (one request, one entry) as one statement in autocommit: fence and write
# in one call, with no BEGIN and COMMIT calls (each a round trip through the GIL).
_FENCED_ENTRY = (
    "INSERT INTO entries (run_id, key, seq, result, undo) SELECT ?, ?, ?, ?, ? "
    "WHERE EXISTS (SELECT 1 FROM runs WHERE run_id = ? AND owner = ? AND status = 'running') "
    "ON CONFLICT (run_id, key) DO UPDATE SET seq = excluded.seq, result = excluded.result, "
    "undo = excluded.undo"
)
_INSERT_UNDONE = "INSERT INTO undone (run_id, key) VALUES (?, ?) ON CONFLICT DO NOTHING"
_RENEW = "UPDATE runs SET lease_expires = ? WHERE run_id = ? AND owner = ? AND status = 'running'"

Job = Callable[[sqlite3.Connection], Any]


class _Append:
    __slots__ = ("entries", "future", "loop", "run_id")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[None],
        run_id: str,
        entries: Sequence[Entry],
    ) -> None:
        self.loop, self.future, self.run_id, self.entries = loop, future, run_id, entries


class _Undone:
    __slots__ = ("future", "key", "loop", "run_id")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None], run_id: str, key: str
    ) -> None:
        self.loop, self.future, self.run_id, self.key = loop, future, run_id, key


class _Call:
    __slots__ = ("effect", "future", "job", "loop")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
        job: Job,
        effect: Callable[[Any], None] | None,
    ) -> None:
        self.loop, self.future, self.job, self.effect = loop, future, job, effect


_Request = _Append | _Undone | _Call
_STOP = object()


class _Inbox:
    """The writer's queue: requests in a deque, and a pipe the writer sleeps on while it is
    empty (POSIX). A put writes to the pipe only when the writer sleeps.

    A pipe wakes the writer ~10 µs sooner than a ``queue.SimpleQueue`` or a
    ``threading.Condition`` here (``benchmarks/bench_journal.py --only handoff``): the
    journal's round trip is mostly such hand-offs and one commit.
    """

    def __init__(self) -> None:
        self._items: collections.deque[Any] = collections.deque()
        self._sleeping = False
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self._poll = select.poll()
        self._poll.register(self._r, select.POLLIN)

    def put(self, item: Any) -> None:
        self._items.append(item)
        if self._sleeping:
            self._sleeping = False  # one byte wakes it; later puts need not write
            try:
                os.write(self._w, b"\0")
            except BlockingIOError:  # the pipe is full of wake-ups already
                pass

    def take(self, timeout: float) -> list[Any]:
        """Everything waiting; if nothing is, wait up to ``timeout`` seconds for something."""
        items = self._items
        if not items:
            self._sleeping = True
            if not items:  # (a put in between has written a byte: poll returns at once)
                self._poll.poll(timeout * 1000)
            self._sleeping = False
            try:
                os.read(self._r, 4096)
            except BlockingIOError:
                pass
        batch = []
        while items:
            batch.append(items.popleft())
        return batch

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)


class _PortableInbox:
    """`_Inbox` where there is no ``select.poll`` (Windows): a ``queue.SimpleQueue``."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.put = self._queue.put

    def take(self, timeout: float) -> list[Any]:
        try:
            batch = [self._queue.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                return batch

    def close(self) -> None:
        pass


class SQLiteJournal(Journal):
    """A journal in one SQLite file (WAL), shared by any number of processes on this host.

    Args:
        path: the file (created with its schema if missing).
        synchronous: ``"NORMAL"`` (default): a commit survives the process being killed,
            and the last commits before a power cut may be lost; ``"FULL"``: a commit
            survives a power cut too (an fsync per commit).
        serializer: how values and errors become bytes (`PickleSerializer` by default).
        lease: seconds a run stays owned without a renewal (renewed every ``lease / 3``).
        busy_timeout: seconds to wait for another process's write lock.
        host: the host name in this process's owner identity.

    Raises:
        ValueError: ``path`` is ``":memory:"``, ``synchronous`` or ``lease`` is invalid, or
            the file holds a journal of a newer schema.
        sqlite3.Error: the file cannot be opened as a database.

    >>> import asyncio, tempfile, os
    >>> async def demo(path):
    ...     async with SQLiteJournal(path) as journal:
    ...         dumps = journal.serializer.dumps
    ...         await journal.create_run("order-42", "payment", "fp", dumps({"order": 42}))
    ...         await journal.finish("order-42", "completed", result=dumps(7))
    ...         return await journal.get("order-42")
    >>> with tempfile.TemporaryDirectory() as d:
    ...     record = asyncio.run(demo(os.path.join(d, "runs.db")))
    >>> record.status, record.result
    (<RunStatus.COMPLETED: 'completed'>, 7)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        serializer: Serializer | None = None,
        lease: float = 30.0,
        busy_timeout: float = 10.0,
        host: str | None = None,
    ) -> None:
        super().__init__(serializer=serializer, lease=lease, host=host)
        self.path = os.fspath(path)
        if self.path == ":memory:" or self.path.startswith("file::memory:"):
            raise ValueError(
                "A journal needs a file: ':memory:' is not shared between connections."
            )
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', not {synchronous!r}")
        self.synchronous = synchronous
        writer = _connect(self.path, synchronous, busy_timeout)
        try:
            _ensure_schema(writer, self.path)
            self._reader_conn = _connect(self.path, synchronous, busy_timeout)
        except BaseException:
            writer.close()
            raise
        self._reader_conn.execute("PRAGMA query_only = ON")
        self._inbox = _Inbox() if hasattr(select, "poll") else _PortableInbox()
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="reactorpy-journal-reader")
        self._writer = threading.Thread(
            target=self._write_loop, args=(writer,), name="reactorpy-journal-writer", daemon=True
        )
        self._writer.start()

    def _where(self) -> str:
        return repr(self.path)

    # ----------------------------------------------------------------- the executor's API

    async def create_run(
        self,
        run_id: str,
        reactor: str,
        fingerprint: str,
        inputs: bytes,
        structure: bytes | None = None,
    ) -> RunRecord | None:
        name = self.serializer.name

        def job(conn: sqlite3.Connection) -> Any:
            now = time.time()
            row = (run_id, reactor, fingerprint, self.owner, now + self.lease, now, now, name)
            if conn.execute(_INSERT_RUN, (*row, inputs, structure)).rowcount == 1:
                return None
            return conn.execute(_SELECT_RECORD, (run_id,)).fetchone()

        def effect(existing: Any) -> None:
            if existing is None:
                self._owned.add(run_id)

        existing = await self._call(job, effect)
        return None if existing is None else self._record(existing)

    def append(self, run_id: str, entries: Sequence[Entry]) -> asyncio.Future[None]:
        if self._closed:
            self._check_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._inbox.put(_Append(loop, future, run_id, entries))
        return future

    def mark_undone(self, run_id: str, key: str) -> asyncio.Future[None]:
        self._check_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._inbox.put(_Undone(loop, future, run_id, key))
        return future

    async def request_undo(self, run_id: str, *, error: bytes | None = None) -> None:
        def job(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "UPDATE runs SET undo_requested = 1, error = coalesce(?, error), updated = ? "
                "WHERE run_id = ? AND owner = ? AND status = 'running'",
                (error, time.time(), run_id, self.owner),
            )
            if cur.rowcount != 1:
                found = conn.execute(_SELECT_STATE, (run_id,)).fetchone()
                raise self._refusal(run_id, found, "request the undo of")

        await self._call(job)

    async def finish(
        self,
        run_id: str,
        status: RunStatus | str,
        *,
        result: bytes | None = None,
        error: bytes | None = None,
        checkpoint: bytes | None = None,
    ) -> None:
        ending = self._ending(status)

        def job(conn: sqlite3.Connection) -> None:
            found = conn.execute(
                "SELECT status, owner, error IS NOT NULL FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            final = self._final_status(run_id, found, ending)
            if final is None:
                return  # a failed run stays failed
            now = time.time()
            conn.execute(
                "UPDATE runs SET status = ?, result = ?, error = coalesce(?, error), "
                "checkpoint = ?, ended = ?, updated = ? WHERE run_id = ?",
                (final.value, result, error, checkpoint, now, now, run_id),
            )

        await self._call(job, lambda _: self._owned.discard(run_id))

    async def reopen(self, run_id: str, *, undo: bool = False) -> RunRecord:
        def job(conn: sqlite3.Connection) -> Any:
            self._check_reopen(run_id, conn.execute(_SELECT_STATE, (run_id,)).fetchone(), undo)
            now = time.time()
            conn.execute(
                "UPDATE runs SET status = 'running', owner = ?, lease_expires = ?, ended = NULL, "
                "undo_requested = ?, updated = ? WHERE run_id = ?",
                (self.owner, now + self.lease, int(undo), now, run_id),
            )
            return conn.execute(_SELECT_RECORD, (run_id,)).fetchone()

        row = await self._call(job, lambda _: self._owned.add(run_id))
        return self._record(row)

    async def claim(
        self, reactor: str, *, limit: int | None = None, run_id: str | None = None
    ) -> list[str]:
        def job(conn: sqlite3.Connection) -> list[str]:
            now = time.time()
            candidates = conn.execute(
                "SELECT run_id, owner, lease_expires < ? FROM runs "
                "WHERE reactor = ? AND status = 'running' AND (? IS NULL OR run_id = ?) "
                # candidates only: expired leases, or owners on this host (pids are checked)
                "AND (lease_expires < ? OR substr(owner, 1, length(?) + 1) = ? || ':') "
                "ORDER BY created, run_id",
                (now, reactor, run_id, run_id, now, self.host, self.host),
            ).fetchall()
            claimed = []
            for candidate, owner in self._claimable(candidates, limit):
                # Compare-and-set on the owner read above: the run is taken from it only.
                cur = conn.execute(
                    "UPDATE runs SET owner = ?, lease_expires = ?, updated = ? "
                    "WHERE run_id = ? AND owner = ? AND status = 'running'",
                    (self.owner, now + self.lease, now, candidate, owner),
                )
                if cur.rowcount == 1:
                    claimed.append(candidate)
            return claimed

        claimed: list[str] = await self._call(job, self._owned.update)
        return claimed

    # ----------------------------------------------------------------- queries

    async def load(self, run_id: str) -> StoredRun:
        found = await self._read(self._read_run, run_id)
        if found is None:
            raise LookupError(f"No run {run_id!r} in this journal.")
        row, entries, undone = found
        return self._stored(row[:12], row[12], row[13], row[14], entries, undone)

    async def get(self, run_id: str) -> RunRecord:
        row = await self._read(self._read_record, run_id)
        if row is None:
            raise LookupError(f"No run {run_id!r} in this journal.")
        return self._record(row)

    async def runs(
        self,
        *,
        reactor: str | None = None,
        status: RunStatus | str | None = None,
        limit: int | None = None,
    ) -> list[RunRecord]:
        status_value = self._status_filter(status)
        rows = await self._read(self._read_runs, reactor, status_value, limit)
        return [self._record(row) for row in rows]

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._inbox.put(_STOP)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._writer.join)
        await loop.run_in_executor(None, self._reader.shutdown)
        self._reader_conn.close()

    # ----------------------------------------------------------------- the reader thread

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        self._check_open()
        return await asyncio.get_running_loop().run_in_executor(self._reader, fn, *args)

    def _read_record(self, run_id: str) -> Any:
        return self._reader_conn.execute(_SELECT_RECORD, (run_id,)).fetchone()

    def _read_run(self, run_id: str) -> Any:
        conn = self._reader_conn
        conn.execute("BEGIN")  # one snapshot for the run and its entries
        try:
            row = conn.execute(
                f"SELECT {RECORD_COLUMNS}, inputs, checkpoint, structure FROM runs "
                "WHERE run_id = ?",
                (run_id,),
            ).fetchone()
            if row is None:
                return None
            entries = conn.execute(
                "SELECT key, seq, result, undo FROM entries WHERE run_id = ? ORDER BY seq, key",
                (run_id,),
            ).fetchall()
            undone = [
                k for (k,) in conn.execute("SELECT key FROM undone WHERE run_id = ?", (run_id,))
            ]
        finally:
            conn.execute("COMMIT")
        return row, entries, undone

    def _read_runs(self, reactor: str | None, status: str | None, limit: int | None) -> Any:
        where: list[str] = []
        params: list[Any] = []
        if reactor is not None:
            where.append("reactor = ?")
            params.append(reactor)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        sql = f"SELECT {RECORD_COLUMNS} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created DESC, run_id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return self._reader_conn.execute(sql, params).fetchall()

    # ----------------------------------------------------------------- the writer thread

    def _call(self, job: Job, effect: Callable[[Any], None] | None = None) -> asyncio.Future[Any]:
        self._check_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._inbox.put(_Call(loop, future, job, effect))
        return future

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        take = self._inbox.take
        interval = self.lease / 3
        renew_at = time.monotonic() + interval
        stopping = False
        try:
            while not stopping:
                # Everything waiting is one batch: one transaction (group commit).
                batch = take(max(0.0, renew_at - time.monotonic()))
                if _STOP in batch:
                    stopping = True
                    batch.remove(_STOP)
                if batch:
                    self._commit(conn, batch)
                if time.monotonic() >= renew_at:
                    self._renew(conn, time.time() + self.lease)
                    renew_at = time.monotonic() + interval
        finally:
            # Closing: what this journal still owns can be claimed at once.
            self._renew(conn, 0.0)
            conn.close()
            self._inbox.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[_Request]) -> None:
        if len(batch) == 1 and type(batch[0]) is _Append and len(batch[0].entries) == 1:
            self._commit_one(conn, batch[0])
            return
        outcomes: list[tuple[asyncio.AbstractEventLoop, Outcome]] = []
        effects: list[tuple[Callable[[Any], None], Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
        except Exception as exc:  # the lock was not had within busy_timeout: nothing began
            self._deliver([(r.loop, (r.future, None, exc)) for r in batch])
            return
        try:
            self._apply(conn, batch, outcomes, effects)
            conn.execute("COMMIT")
        except Exception as exc:
            _rollback(conn)
            if len(batch) == 1:
                self._deliver([(batch[0].loop, (batch[0].future, None, exc))])
            else:  # find the request the database refused: one transaction each
                for request in batch:
                    self._commit(conn, [request])
            return
        self._commits += 1
        for effect, result in effects:
            effect(result)
        self._deliver(outcomes)

    def _commit_one(self, conn: sqlite3.Connection, request: _Append) -> None:
        """The fast path of `_commit` for a batch of one append of one entry (a chain)."""
        run_id, entry = request.run_id, request.entries[0]
        row = (run_id, entry.key, entry.seq, entry.result, entry.undo, run_id, self.owner)
        error: BaseException | None = None
        try:
            if conn.execute(_FENCED_ENTRY, row).rowcount == 1:
                self._commits += 1
            else:  # nothing was written: say why
                found = conn.execute(_SELECT_STATE, (run_id,)).fetchone()
                error = self._refusal(run_id, found, "append to").error
        except Exception as exc:
            error = exc
        self._deliver([(request.loop, (request.future, None, error))])

    def _apply(
        self,
        conn: sqlite3.Connection,
        batch: list[_Request],
        outcomes: list[tuple[asyncio.AbstractEventLoop, Outcome]],
        effects: list[tuple[Callable[[Any], None], Any]],
    ) -> None:
        stretch: list[_Append | _Undone] = []
        for request in batch:
            if type(request) is not _Call:
                stretch.append(request)  # type: ignore[arg-type]
                continue
            if stretch:
                self._write_stretch(conn, stretch, outcomes)
                stretch = []
            try:
                result = request.job(conn)
            except Refused as refused:
                outcomes.append((request.loop, (request.future, None, refused.error)))
            else:
                outcomes.append((request.loop, (request.future, result, None)))
                if request.effect is not None:
                    effects.append((request.effect, result))
        if stretch:
            self._write_stretch(conn, stretch, outcomes)

    def _write_stretch(
        self,
        conn: sqlite3.Connection,
        stretch: list[_Append | _Undone],
        outcomes: list[tuple[asyncio.AbstractEventLoop, Outcome]],
    ) -> None:
        """Appends and undo marks that follow each other in the queue: fenced per run, then
        written with one executemany each."""
        owner = self.owner
        refused: dict[str, Any] = {}  # run_id -> None (writable) or its (status, owner) row
        rows: list[tuple[Any, ...]] = []
        marks: list[tuple[str, str]] = []
        for request in stretch:
            run_id = request.run_id
            if run_id not in refused:
                if conn.execute(_FENCE, (run_id, owner)).fetchone() is not None:
                    refused[run_id] = None
                else:
                    refused[run_id] = [conn.execute(_SELECT_STATE, (run_id,)).fetchone()]
            state = refused[run_id]
            if state is not None:
                action = "append to" if isinstance(request, _Append) else "mark an undo done in"
                error = self._refusal(run_id, state[0], action).error
                outcomes.append((request.loop, (request.future, None, error)))
                continue
            if isinstance(request, _Append):
                rows.extend((run_id, e.key, e.seq, e.result, e.undo) for e in request.entries)
            else:
                marks.append((run_id, request.key))
            outcomes.append((request.loop, (request.future, None, None)))
        if rows:
            conn.executemany(_UPSERT_ENTRY, rows)
        if marks:
            conn.executemany(_INSERT_UNDONE, marks)

    @staticmethod
    def _deliver(outcomes: list[tuple[asyncio.AbstractEventLoop, Outcome]]) -> None:
        """One callback per event loop resolves all of a batch's futures."""
        by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
        for loop, outcome in outcomes:
            by_loop.setdefault(loop, []).append(outcome)
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(settle, items)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

    def _renew(self, conn: sqlite3.Connection, until: float) -> None:
        """Set the lease of the runs this journal owns to expire at ``until``."""
        owned = list(self._owned)
        if not owned:
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(_RENEW, [(until, run_id, self.owner) for run_id in owned])
            conn.execute("COMMIT")
        except Exception:
            _rollback(conn)
            _log.warning("could not renew the leases of %d run(s)", len(owned), exc_info=True)


def _connect(path: str, synchronous: str, busy_timeout: float) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise ValueError(f"{path!r} cannot be put in WAL mode (it is in {mode!r} mode)")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
    except BaseException:
        conn.close()
        raise
    return conn


def _ensure_schema(conn: sqlite3.Connection, path: str) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        elif version > SCHEMA_VERSION:
            raise ValueError(
                f"{path!r} holds a journal of schema version {version}; this reactorpy knows "
                f"versions up to {SCHEMA_VERSION}: upgrade reactorpy to open it."
            )
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            _log.warning("rollback failed", exc_info=True)
