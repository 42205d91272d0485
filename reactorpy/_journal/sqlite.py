"""The SQLite journal: one file that many processes share, one writer thread per journal.

Owns: `SQLiteJournal`: opening the file, the executor's API (each write a request, see
below), the requests the event loop commits itself, and the queries, which go through a
connection of their own in a reader thread: in WAL mode they never wait for the writer.
Must not import: the PostgreSQL modules, the executor, the reactor, the CLI.

Requests (``append``/``mark_undone`` queue theirs without waiting; the async calls queue a
job and await its future) go to the writer thread (`sqlite_writer`), except that the first
of an event loop turn is held until the turn ends (`_queue`): if it is the turn's only one
and the writer is idle, an append of up to 128 entries (a chain's step, the steps a worker
ran in a row) or a run's record or end is committed by the loop itself (`_commit_here`), on
a connection that never waits for the file's lock (``busy_timeout`` 0) and never
checkpoints: no thread hand-off (a chain's step costs a third less). Otherwise (or if that
connection finds the lock taken, or the request refused, or it has ``redone`` keys) it goes
to the writer thread, which waits for the lock and says why a request is refused, and
checkpoints the WAL after every 500 commits of the loop's (as SQLite would every 1,000
pages; meanwhile the loop commits nothing). A second request in the same turn sends both to
the writer, and the turn's later ones go at once: group commit is kept.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from .batches import settle
from .records import RECORD_COLUMNS, Entry, RunRecord, RunStatus, StoredRun
from .serializers import Serializer
from .sqlite_schema import (
    FENCE,
    FENCED_ENTRY,
    INSERT_RUN,
    SELECT_RECORD,
    SELECT_STATE,
    UPSERT_ENTRY,
    connect,
    ensure_schema,
    rollback,
)
from .sqlite_writer import CHECKPOINT, Append, Call, Job, Request, SQLiteWriter, Undone

__all__ = ["SQLiteJournal"]

_CHECKPOINT_EVERY = 500  # commits of the event loop's (about 1,000 pages of WAL, as SQLite's own)
_DIRECT_ENTRIES = 128  # the largest append the event loop commits itself (a worker's pass: 64)


class SQLiteJournal(SQLiteWriter):
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
        writer = connect(self.path, synchronous, busy_timeout)
        opened = [writer]
        try:
            ensure_schema(writer, self.path)
            self._reader_conn = connect(self.path, synchronous, busy_timeout)
            opened.append(self._reader_conn)
            # The event loop's connection for the requests it commits itself (see the
            # module docstring): with NORMAL only (FULL's fsync would block the loop).
            self._direct: sqlite3.Connection | None = None
            if synchronous == "NORMAL":
                self._direct = connect(self.path, synchronous, busy_timeout)
                opened.append(self._direct)
                self._direct.execute("PRAGMA busy_timeout = 0")  # (once open: never waits)
                self._direct.execute("PRAGMA wal_autocheckpoint = 0")
        except BaseException:
            for conn in opened:
                conn.close()
            raise
        self._reader_conn.execute("PRAGMA query_only = ON")
        self._direct_lock = threading.Lock()  # (a journal used from two event loops)
        self._direct_commits = 0  # (under the lock)
        self._turns: dict[asyncio.AbstractEventLoop, list[Request]] = {}
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="reactorpy-journal-reader")
        self._start_writer(writer)

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
            if conn.execute(INSERT_RUN, (*row, inputs, structure)).rowcount == 1:
                return None
            return conn.execute(SELECT_RECORD, (run_id,)).fetchone()

        def effect(existing: Any) -> None:
            if existing is None:
                self._owned.add(run_id)

        existing = await self._call(job, effect, direct=True)
        return None if existing is None else self._record(existing)

    def append(
        self, run_id: str, entries: Sequence[Entry], *, redone: Collection[str] = ()
    ) -> asyncio.Future[None]:
        if self._closed:
            self._check_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue(Append(loop, future, run_id, entries, redone))
        return future

    def mark_undone(self, run_id: str, key: str) -> asyncio.Future[None]:
        self._check_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue(Undone(loop, future, run_id, key))
        return future

    async def request_undo(self, run_id: str, *, error: bytes | None = None) -> None:
        def job(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "UPDATE runs SET undo_requested = 1, error = coalesce(?, error), updated = ? "
                "WHERE run_id = ? AND owner = ? AND status = 'running'",
                (error, time.time(), run_id, self.owner),
            )
            if cur.rowcount != 1:
                found = conn.execute(SELECT_STATE, (run_id,)).fetchone()
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

        await self._call(job, lambda _: self._owned.discard(run_id), direct=True)

    async def reopen(self, run_id: str, *, undo: bool = False) -> RunRecord:
        def job(conn: sqlite3.Connection) -> Any:
            self._check_reopen(run_id, conn.execute(SELECT_STATE, (run_id,)).fetchone(), undo)
            now = time.time()
            conn.execute(
                "UPDATE runs SET status = 'running', owner = ?, lease_expires = ?, ended = NULL, "
                "undo_requested = ?, updated = ? WHERE run_id = ?",
                (self.owner, now + self.lease, int(undo), now, run_id),
            )
            return conn.execute(SELECT_RECORD, (run_id,)).fetchone()

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
        loop = asyncio.get_running_loop()
        held = self._turns.pop(loop, None)
        if held:  # (what this turn queued is committed before the writer stops)
            self._inbox.put_all(held)
        await self._stop_writer()
        await loop.run_in_executor(None, self._reader.shutdown)
        self._reader_conn.close()
        if self._direct is not None:
            with self._direct_lock:
                self._direct.close()

    @property
    def commits(self) -> int:
        """How many transactions were committed for requests, by the writer thread or by
        the event loop itself (group commits count once however many requests they
        carried; lease renewals and checkpoints do not count)."""
        return self._commits + self._direct_commits

    # ----------------------------------------------------------------- requests

    def _call(
        self, job: Job, effect: Callable[[Any], None] | None = None, *, direct: bool = False
    ) -> asyncio.Future[Any]:
        self._check_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue(Call(loop, future, job, effect, direct))
        return future

    def _queue(self, request: Request) -> None:
        """Queue a request: the first of an event loop turn is held until the turn ends
        (`_end_turn`); with a second, both go to the writer, and the turn's next at once."""
        turn = self._turns.get(request.loop)
        if turn is None:
            self._turns[request.loop] = [request]
            request.loop.call_soon(self._end_turn, request.loop)
        elif turn:
            turn.append(request)
            self._inbox.put_all(turn)
            turn.clear()  # (the turn's requests go to the writer from now on)
        else:
            self._inbox.put(request)

    def _end_turn(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop's turn ended: commit its one request here, or hand it to the writer."""
        batch = self._turns.pop(loop, None)
        if not batch:
            return
        if self._closed:  # (held by another event loop's turn: `aclose` hands over its own)
            error = RuntimeError(f"{type(self).__name__} closed before this request was written")
            settle([(r.future, None, error) for r in batch])
        elif not self._commit_here(batch[0]):
            self._inbox.put_all(batch)

    def _commit_here(self, request: Request) -> bool:
        """The fast path of a turn's one request: committed on the event loop's own
        connection if it is short and the writer is idle, as the writer would commit it
        alone (the same fence and statements: `_write_here`); False if it must go to the
        writer after all (which then says why one is refused)."""
        conn = self._direct
        if conn is None or not self._inbox.idle():
            return False
        if type(request) is Append:
            if len(request.entries) > _DIRECT_ENTRIES or request.redone:
                return False
        elif type(request) is not Call or not request.direct:
            return False
        if not self._direct_lock.acquire(False):
            return False
        try:  # (busy_timeout 0: a lock another connection holds fails it at once)
            result = self._write_here(conn, request)
            self._direct_commits += 1
            if self._direct_commits % _CHECKPOINT_EVERY == 0:
                self._inbox.put(CHECKPOINT)
        except Exception:
            rollback(conn)
            return False
        finally:
            self._direct_lock.release()
        if type(request) is Call and request.effect is not None:
            request.effect(result)
        settle([(request.future, result, None)])
        return True

    def _write_here(self, conn: sqlite3.Connection, request: Append | Call) -> Any:
        """Write `request` through `conn` and commit; raise if it is refused (nothing is
        written: the writer will say why)."""
        if type(request) is Call:
            conn.execute("BEGIN IMMEDIATE")
            result = request.job(conn)
            conn.execute("COMMIT")
            return result
        assert type(request) is Append
        run_id = request.run_id
        if len(request.entries) == 1:  # (a chain's step: one statement in autocommit)
            e = request.entries[0]
            row = (run_id, e.key, e.seq, e.result, e.undo, run_id, self.owner)
            if conn.execute(FENCED_ENTRY, row).rowcount != 1:
                raise LookupError(run_id)
            return None
        conn.execute("BEGIN IMMEDIATE")  # (the steps a worker ran in a row)
        if conn.execute(FENCE, (run_id, self.owner)).fetchone() is None:
            raise LookupError(run_id)
        conn.executemany(
            UPSERT_ENTRY, [(run_id, e.key, e.seq, e.result, e.undo) for e in request.entries]
        )
        conn.execute("COMMIT")
        return None

    # ----------------------------------------------------------------- the reader thread

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        self._check_open()
        return await asyncio.get_running_loop().run_in_executor(self._reader, fn, *args)

    def _read_record(self, run_id: str) -> Any:
        return self._reader_conn.execute(SELECT_RECORD, (run_id,)).fetchone()

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
