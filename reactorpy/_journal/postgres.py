"""The PostgreSQL journal: one database shared by many processes on many machines.

Owns: `PostgresJournal`, its schema (tables ``reactorpy_*`` in a schema of its choice,
versioned in ``reactorpy_meta``), its writer task and its lease renewal task.
Must not import: the executor, the reactor, the CLI; asyncpg is imported only when a
`PostgresJournal` is made (it is the ``postgres`` extra).

The writer task owns one connection and does, like the SQLite writer thread:

1. Wait until something is queued; take all of it (group commit).
2. Only appends and undo marks (the common case): one statement in autocommit, one round
   trip: a CTE fences the runs (``SELECT ... FOR SHARE`` of the runs this process owns and
   that run, so a concurrent claim cannot take them mid-write), then inserts every entry and
   mark from arrays (``unnest``). Anything else: one transaction, requests in queue order.
3. Resolve the batch's futures. A request refused by its job fails alone; a batch the
   database fails is retried one request per transaction, so a bad request fails only its
   own future; a lost connection (or one the server ended) fails the batch, and the next
   batch opens a new one.

Times (created, leases) are the server's clock, so machines with skewed clocks agree on
leases. Reads and lease renewals use a small pool. The journal is bound to the event loop it
first connects on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .batches import Outcome, Refused, settle
from .journal import Journal
from .records import RECORD_COLUMNS, Entry, RunRecord, RunStatus, StoredRun
from .serializers import Serializer

__all__ = ["PostgresJournal"]

_log = logging.getLogger("reactorpy.journal")

SCHEMA_VERSION = 1
_NOW = "extract(epoch from statement_timestamp())::float8"

Job = Callable[[Any], Awaitable[Any]]


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


class _Sql:
    """The statements, with the tables qualified by the journal's schema."""

    def __init__(self, schema: str) -> None:
        s = _quote(schema)
        runs, entries, undone = (
            f"{s}.reactorpy_runs",
            f"{s}.reactorpy_entries",
            f"{s}.reactorpy_undone",
        )
        self.meta = f"{s}.reactorpy_meta"
        self.schema = (
            f"CREATE SCHEMA IF NOT EXISTS {s}",
            f"CREATE TABLE IF NOT EXISTS {self.meta} (name text PRIMARY KEY, value text NOT NULL)",
        )
        self.tables = (
            f"""CREATE TABLE {runs} (
                run_id text PRIMARY KEY,
                reactor text NOT NULL,
                status text NOT NULL,
                fingerprint text NOT NULL,
                owner text NOT NULL,
                lease_expires float8 NOT NULL,
                undo_requested boolean NOT NULL DEFAULT false,
                created float8 NOT NULL,
                updated float8 NOT NULL,
                ended float8,
                serializer text NOT NULL,
                inputs bytea NOT NULL,
                structure bytea,
                result bytea,
                error bytea,
                checkpoint bytea
            )""",
            f"CREATE INDEX ON {runs} (reactor, status)",
            f"CREATE INDEX ON {runs} (status, created)",
            f"""CREATE TABLE {entries} (
                run_id text NOT NULL,
                key text NOT NULL,
                seq bigint NOT NULL,
                result bytea,
                undo bytea,
                PRIMARY KEY (run_id, key)
            )""",
            f"""CREATE TABLE {undone} (
                run_id text NOT NULL,
                key text NOT NULL,
                PRIMARY KEY (run_id, key)
            )""",
        )
        self.insert_run = (
            f"INSERT INTO {runs} (run_id, reactor, status, fingerprint, owner, lease_expires, "
            "created, updated, serializer, inputs, structure) "
            f"VALUES ($1, $2, 'running', $3, $4, {_NOW} + $5, {_NOW}, {_NOW}, $6, $7, $8) "
            "ON CONFLICT (run_id) DO NOTHING RETURNING run_id"
        )
        self.record = f"SELECT {RECORD_COLUMNS} FROM {runs} WHERE run_id = $1"
        self.state = f"SELECT status, owner FROM {runs} WHERE run_id = $1"
        self.states = f"SELECT run_id, status, owner FROM {runs} WHERE run_id = ANY($1::text[])"
        # One statement, one round trip: fence, entries, undo marks. FOR SHARE keeps a
        # concurrent claim (FOR UPDATE SKIP LOCKED) off these runs until it has committed.
        self.stretch = f"""
            WITH ok AS (
                SELECT run_id FROM {runs}
                WHERE run_id = ANY($1::text[]) AND owner = $2 AND status = 'running'
                FOR SHARE
            ), written AS (
                INSERT INTO {entries} (run_id, key, seq, result, undo)
                SELECT e.run_id, e.key, e.seq, e.result, e.undo
                FROM unnest($3::text[], $4::text[], $5::int8[], $6::bytea[], $7::bytea[])
                    AS e(run_id, key, seq, result, undo)
                WHERE e.run_id IN (SELECT run_id FROM ok)
                ON CONFLICT (run_id, key) DO UPDATE
                SET seq = excluded.seq, result = excluded.result, undo = excluded.undo
            ), marked AS (
                INSERT INTO {undone} (run_id, key)
                SELECT m.run_id, m.key FROM unnest($8::text[], $9::text[]) AS m(run_id, key)
                WHERE m.run_id IN (SELECT run_id FROM ok)
                ON CONFLICT DO NOTHING
            )
            SELECT run_id FROM ok"""
        self.request_undo = (
            f"UPDATE {runs} SET undo_requested = true, error = coalesce($3, error), "
            f"updated = {_NOW} WHERE run_id = $1 AND owner = $2 AND status = 'running' "
            "RETURNING run_id"
        )
        self.finish_state = (
            f"SELECT status, owner, error IS NOT NULL FROM {runs} WHERE run_id = $1 FOR UPDATE"
        )
        self.finish = (
            f"UPDATE {runs} SET status = $2, result = $3, error = coalesce($4, error), "
            f"checkpoint = $5, ended = {_NOW}, updated = {_NOW} WHERE run_id = $1"
        )
        self.reopen_state = f"SELECT status, owner FROM {runs} WHERE run_id = $1 FOR UPDATE"
        self.reopen = (
            f"UPDATE {runs} SET status = 'running', owner = $2, lease_expires = {_NOW} + $3, "
            f"ended = NULL, undo_requested = $4, updated = {_NOW} WHERE run_id = $1 "
            f"RETURNING {RECORD_COLUMNS}"
        )
        # Candidates only: expired leases, or owners on this host (whose pids are checked);
        # live owners elsewhere are not even locked.
        self.candidates = (
            f"SELECT run_id, owner, lease_expires < {_NOW} FROM {runs} "
            "WHERE reactor = $1 AND status = 'running' AND ($3::text IS NULL OR run_id = $3) "
            f"AND (lease_expires < {_NOW} OR left(owner, length($2) + 1) = $2 || ':') "
            "ORDER BY created, run_id FOR UPDATE SKIP LOCKED"
        )
        # Compare-and-set on the owners read above.
        self.take = (
            f"UPDATE {runs} AS r SET owner = $1, lease_expires = {_NOW} + $2, updated = {_NOW} "
            "FROM unnest($3::text[], $4::text[]) AS c(run_id, owner) "
            "WHERE r.run_id = c.run_id AND r.owner = c.owner AND r.status = 'running' "
            "RETURNING r.run_id"
        )
        self.renew = (
            f"UPDATE {runs} SET lease_expires = {_NOW} + $3 "
            "WHERE run_id = ANY($1::text[]) AND owner = $2 AND status = 'running'"
        )
        self.release = (
            f"UPDATE {runs} SET lease_expires = 0 "
            "WHERE run_id = ANY($1::text[]) AND owner = $2 AND status = 'running'"
        )
        self.load_run = (
            f"SELECT {RECORD_COLUMNS}, inputs, checkpoint, structure FROM {runs} WHERE run_id = $1"
        )
        self.load_entries = (
            f"SELECT key, seq, result, undo FROM {entries} WHERE run_id = $1 ORDER BY seq, key"
        )
        self.load_undone = f"SELECT key FROM {undone} WHERE run_id = $1"
        self.runs = f"SELECT {RECORD_COLUMNS} FROM {runs}"


class _Append:
    __slots__ = ("entries", "future", "run_id")

    def __init__(self, future: asyncio.Future[None], run_id: str, entries: Sequence[Entry]) -> None:
        self.future, self.run_id, self.entries = future, run_id, entries


class _Undone:
    __slots__ = ("future", "key", "run_id")

    def __init__(self, future: asyncio.Future[None], run_id: str, key: str) -> None:
        self.future, self.run_id, self.key = future, run_id, key


class _Call:
    __slots__ = ("effect", "future", "job")

    def __init__(
        self, future: asyncio.Future[Any], job: Job, effect: Callable[[Any], None] | None
    ) -> None:
        self.future, self.job, self.effect = future, job, effect


_Request = _Append | _Undone | _Call


class PostgresJournal(Journal):
    """A journal in a PostgreSQL database, shared by processes on any number of machines.

    Needs asyncpg: ``pip install 'reactorpy[postgres]'``. It connects on first use (or on
    ``async with``), on the running event loop, and stays bound to that loop.

    Args:
        dsn: a libpq connection string or URI (``postgresql://user:pw@host:5432/db``).
        serializer: how values and errors become bytes (`PickleSerializer` by default).
        lease: seconds a run stays owned without a renewal (renewed every ``lease / 3``).
        schema: the PostgreSQL schema of its tables (created if missing).
        host: the host name in this process's owner identity.
        pool_size: connections for reads and lease renewals (the writer has its own).

    Raises:
        ImportError: asyncpg is not installed.
        ValueError: ``lease`` or ``pool_size`` is invalid.

    Example (not a doctest: it needs a server; ``tests/test_journal.py`` runs one)::

        async with rp.PostgresJournal("postgresql://app@db.internal/app") as journal:
            failed = await journal.runs(status="failed", limit=20)
    """

    def __init__(
        self,
        dsn: str,
        *,
        serializer: Serializer | None = None,
        lease: float = 30.0,
        schema: str = "public",
        host: str | None = None,
        pool_size: int = 4,
    ) -> None:
        try:
            import asyncpg
        except ImportError as exc:
            raise ImportError(
                "PostgresJournal needs the asyncpg driver: pip install 'reactorpy[postgres]'"
            ) from exc
        super().__init__(serializer=serializer, lease=lease, host=host)
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, not {pool_size!r}")
        self._asyncpg = asyncpg
        self.dsn = dsn
        self.schema = schema
        self._pool_size = pool_size
        self._sql = _Sql(schema)
        self._pending: list[_Request] = []
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._starting: asyncio.Task[None] | None = None
        self._started = False
        self._conn: Any = None  # the writer's asyncpg.Connection
        self._pool: Any = None
        self._writer: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None

    def _where(self) -> str:
        return f"schema={self.schema!r}"

    async def __aenter__(self) -> PostgresJournal:
        await self._start()
        return self

    # ----------------------------------------------------------------- starting

    async def _start(self) -> None:
        self._check_open()
        if self._started:
            return
        loop = asyncio.get_running_loop()
        if self._loop is not None and self._loop is not loop:
            raise RuntimeError("A PostgresJournal is bound to the event loop it connected on.")
        if self._starting is None:
            self._loop = loop
            self._starting = loop.create_task(self._connect())
            self._starting.add_done_callback(self._started_or_failed)
        await asyncio.shield(self._starting)

    def _started_or_failed(self, task: asyncio.Task[None]) -> None:
        error = None if task.cancelled() else task.exception()
        if task.cancelled() or error is not None:
            self._starting = None  # a later call tries again
            pending, self._pending = self._pending, []
            settle([(r.future, None, error or asyncio.CancelledError()) for r in pending])

    async def _connect(self) -> None:
        asyncpg = self._asyncpg
        conn = await asyncpg.connect(self.dsn)
        try:
            await self._ensure_schema(conn)
            self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=self._pool_size)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        self._started = True
        assert self._loop is not None
        self._writer = self._loop.create_task(self._write_loop())
        self._renewer = self._loop.create_task(self._renew_loop())

    async def _ensure_schema(self, conn: Any) -> None:
        async with conn.transaction():
            # Processes opening a new database at once: one creates, the others wait.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))", "reactorpy:" + self.schema
            )
            for statement in self._sql.schema:
                await conn.execute(statement)
            version = await conn.fetchval(
                f"SELECT value FROM {self._sql.meta} WHERE name = 'schema_version'"
            )
            if version is None:
                for statement in self._sql.tables:
                    await conn.execute(statement)
                await conn.execute(
                    f"INSERT INTO {self._sql.meta} (name, value) VALUES ('schema_version', $1)",
                    str(SCHEMA_VERSION),
                )
            elif int(version) > SCHEMA_VERSION:
                raise ValueError(
                    f"Schema {self.schema!r} holds a journal of schema version {version}; "
                    f"this reactorpy knows versions up to {SCHEMA_VERSION}: upgrade reactorpy "
                    "to open it."
                )

    # ----------------------------------------------------------------- the executor's API

    async def create_run(
        self,
        run_id: str,
        reactor: str,
        fingerprint: str,
        inputs: bytes,
        structure: bytes | None = None,
    ) -> RunRecord | None:
        sql, name = self._sql, self.serializer.name

        async def job(conn: Any) -> Any:
            inserted = await conn.fetchval(
                sql.insert_run,
                run_id,
                reactor,
                fingerprint,
                self.owner,
                self.lease,
                name,
                inputs,
                structure,
            )
            if inserted is not None:
                return None
            return await conn.fetchrow(sql.record, run_id)

        def effect(existing: Any) -> None:
            if existing is None:
                self._owned.add(run_id)

        existing = await self._call(job, effect)
        return None if existing is None else self._record(existing)

    def append(self, run_id: str, entries: Sequence[Entry]) -> asyncio.Future[None]:
        future = self._future()
        self._enqueue(_Append(future, run_id, entries))
        return future

    def mark_undone(self, run_id: str, key: str) -> asyncio.Future[None]:
        future = self._future()
        self._enqueue(_Undone(future, run_id, key))
        return future

    async def request_undo(self, run_id: str, *, error: bytes | None = None) -> None:
        sql = self._sql

        async def job(conn: Any) -> None:
            if await conn.fetchval(sql.request_undo, run_id, self.owner, error) is None:
                found = await conn.fetchrow(sql.state, run_id)
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
        ending, sql = self._ending(status), self._sql

        async def job(conn: Any) -> None:
            final = self._final_status(
                run_id, await conn.fetchrow(sql.finish_state, run_id), ending
            )
            if final is None:
                return  # a failed run stays failed
            await conn.execute(sql.finish, run_id, final.value, result, error, checkpoint)

        await self._call(job, lambda _: self._owned.discard(run_id))

    async def reopen(self, run_id: str, *, undo: bool = False) -> RunRecord:
        sql = self._sql

        async def job(conn: Any) -> Any:
            self._check_reopen(run_id, await conn.fetchrow(sql.reopen_state, run_id), undo)
            return await conn.fetchrow(sql.reopen, run_id, self.owner, self.lease, undo)

        row = await self._call(job, lambda _: self._owned.add(run_id))
        return self._record(row)

    async def claim(
        self, reactor: str, *, limit: int | None = None, run_id: str | None = None
    ) -> list[str]:
        sql = self._sql

        async def job(conn: Any) -> list[str]:
            candidates = await conn.fetch(sql.candidates, reactor, self.host, run_id)
            chosen = self._claimable(((r[0], r[1], r[2]) for r in candidates), limit)
            if not chosen:
                return []
            ids, owners = [c[0] for c in chosen], [c[1] for c in chosen]
            taken = {r[0] for r in await conn.fetch(sql.take, self.owner, self.lease, ids, owners)}
            return [candidate for candidate in ids if candidate in taken]

        claimed: list[str] = await self._call(job, self._owned.update)
        return claimed

    # ----------------------------------------------------------------- queries

    async def load(self, run_id: str) -> StoredRun:
        await self._start()
        sql = self._sql
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            row = await conn.fetchrow(sql.load_run, run_id)
            if row is None:
                raise LookupError(f"No run {run_id!r} in this journal.")
            entries = await conn.fetch(sql.load_entries, run_id)
            undone = [r[0] for r in await conn.fetch(sql.load_undone, run_id)]
        return self._stored(tuple(row)[:12], row[12], row[13], row[14], entries, undone)

    async def get(self, run_id: str) -> RunRecord:
        await self._start()
        row = await self._pool.fetchrow(self._sql.record, run_id)
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
        await self._start()
        where: list[str] = []
        params: list[Any] = []
        if reactor is not None:
            params.append(reactor)
            where.append(f"reactor = ${len(params)}")
        if status_value is not None:
            params.append(status_value)
            where.append(f"status = ${len(params)}")
        sql = self._sql.runs
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created DESC, run_id DESC"
        if limit is not None:
            params.append(int(limit))
            sql += f" LIMIT ${len(params)}"
        return [self._record(row) for row in await self._pool.fetch(sql, *params)]

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._starting is not None and not self._started:
            try:
                await asyncio.shield(self._starting)
            except Exception:
                pass  # its error went to whoever waited for it
        if not self._started:
            return
        self._wakeup.set()  # the writer drains what is queued, then sees _closed
        assert self._writer is not None
        assert self._renewer is not None
        await self._writer
        self._renewer.cancel()
        try:
            await self._renewer
        except asyncio.CancelledError:
            pass
        owned = list(self._owned)
        try:
            if owned:  # what this journal still owns can be claimed at once
                await self._pool.execute(self._sql.release, owned, self.owner)
        finally:
            await self._conn.close()
            await self._pool.close()

    # ----------------------------------------------------------------- the writer task

    def _future(self) -> asyncio.Future[Any]:
        self._check_open()
        loop = asyncio.get_running_loop()
        if self._loop is not None and self._loop is not loop:
            raise RuntimeError("A PostgresJournal is bound to the event loop it connected on.")
        return loop.create_future()

    def _enqueue(self, request: _Request) -> None:
        self._pending.append(request)
        if self._started:
            self._wakeup.set()
        elif self._starting is None:
            # Appends before any awaited call: connect now; the writer starts once connected.
            self._loop = asyncio.get_running_loop()
            self._starting = self._loop.create_task(self._connect())
            self._starting.add_done_callback(self._started_or_failed)

    async def _call(self, job: Job, effect: Callable[[Any], None] | None = None) -> Any:
        future = self._future()
        await self._start()
        self._enqueue(_Call(future, job, effect))
        return await future

    async def _write_loop(self) -> None:
        while True:
            while not self._pending:
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            batch, self._pending = self._pending, []
            await self._commit(batch)

    async def _commit(self, batch: list[_Request]) -> None:
        outcomes: list[Outcome] = []
        effects: list[tuple[Callable[[Any], None], Any]] = []
        try:
            conn = await self._connection()
            if any(type(r) is _Call for r in batch):
                async with conn.transaction():
                    await self._apply(conn, batch, outcomes, effects)
            else:  # appends and marks only: one statement, committed by itself
                await self._write_stretch(conn, batch, outcomes)  # type: ignore[arg-type]
        except Exception as exc:
            if self._broken(exc):  # the batch fails; the next one opens a new connection
                self._conn.terminate()
                settle([(r.future, None, exc) for r in batch])
            elif len(batch) > 1:
                for request in batch:  # find the request the database refused
                    await self._commit([request])
            else:
                settle([(r.future, None, exc) for r in batch])
            return
        self._commits += 1
        for effect, result in effects:
            effect(result)
        settle(outcomes)

    def _broken(self, error: Exception) -> bool:
        """Whether ``error`` leaves the writer's connection unusable (lost, terminated by
        the server, or in an unknown protocol state), rather than refusing one statement."""
        exceptions = self._asyncpg.exceptions
        if self._conn.is_closed():
            return True
        if isinstance(error, exceptions.DataError):  # a value that cannot be encoded
            return False
        if isinstance(error, exceptions.PostgresError):
            return isinstance(
                error, (exceptions.PostgresConnectionError, exceptions.OperatorInterventionError)
            )
        return True

    async def _connection(self) -> Any:
        if self._conn.is_closed():  # lost: the batch that saw it failed; open a new one
            self._conn = await self._asyncpg.connect(self.dsn)
        return self._conn

    async def _apply(
        self,
        conn: Any,
        batch: list[_Request],
        outcomes: list[Outcome],
        effects: list[tuple[Callable[[Any], None], Any]],
    ) -> None:
        stretch: list[_Append | _Undone] = []
        for request in batch:
            if type(request) is not _Call:
                stretch.append(request)  # type: ignore[arg-type]
                continue
            if stretch:
                await self._write_stretch(conn, stretch, outcomes)
                stretch = []
            try:
                result = await request.job(conn)
            except Refused as refused:
                outcomes.append((request.future, None, refused.error))
            else:
                outcomes.append((request.future, result, None))
                if request.effect is not None:
                    effects.append((request.effect, result))
        if stretch:
            await self._write_stretch(conn, stretch, outcomes)

    async def _write_stretch(
        self, conn: Any, stretch: list[_Append | _Undone], outcomes: list[Outcome]
    ) -> None:
        run_ids = list(dict.fromkeys(r.run_id for r in stretch))
        # The last of a key wins (one statement cannot update a row twice).
        rows: dict[tuple[str, str], Entry] = {}
        marks: dict[tuple[str, str], None] = {}
        for request in stretch:
            if type(request) is _Append:
                for entry in request.entries:
                    rows[(request.run_id, entry.key)] = entry
            else:
                marks[(request.run_id, request.key)] = None  # type: ignore[union-attr]
        written = await conn.fetch(
            self._sql.stretch,
            run_ids,
            self.owner,
            [k[0] for k in rows],
            [k[1] for k in rows],
            [e.seq for e in rows.values()],
            [e.result for e in rows.values()],
            [e.undo for e in rows.values()],
            [k[0] for k in marks],
            [k[1] for k in marks],
        )
        ok = {r[0] for r in written}
        states: dict[str, Any] = {}
        if len(ok) < len(run_ids):
            refused = [run_id for run_id in run_ids if run_id not in ok]
            states = {r[0]: (r[1], r[2]) for r in await conn.fetch(self._sql.states, refused)}
        for request in stretch:
            if request.run_id in ok:
                outcomes.append((request.future, None, None))
                continue
            action = "append to" if type(request) is _Append else "mark an undo done in"
            error = self._refusal(request.run_id, states.get(request.run_id), action).error
            outcomes.append((request.future, None, error))

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            owned = list(self._owned)
            if not owned:
                continue
            try:
                await self._pool.execute(self._sql.renew, owned, self.owner, self.lease)
            except Exception:
                _log.warning("could not renew the leases of %d run(s)", len(owned), exc_info=True)
