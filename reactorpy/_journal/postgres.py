"""The PostgreSQL journal: one database shared by many processes on many machines.

Owns: `PostgresJournal`: the executor's API (each write a job or a request for the writer
task, see `postgres_writer`) and the queries, which go through a small pool.
Must not import: the SQLite modules, the executor, the reactor, the CLI; asyncpg is
imported only when a `PostgresJournal` is made (it is the ``postgres`` extra).

Times (created, leases) are the server's clock, so machines with skewed clocks agree on
leases. The journal is bound to the event loop it first connects on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from typing import Any

from .postgres_writer import Append, PostgresWriter, Undone
from .records import Entry, RunRecord, RunStatus, StoredRun
from .serializers import Serializer

__all__ = ["PostgresJournal"]


class PostgresJournal(PostgresWriter):
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
        super().__init__(
            dsn,
            asyncpg,
            serializer=serializer,
            lease=lease,
            schema=schema,
            host=host,
            pool_size=pool_size,
        )

    def _where(self) -> str:
        return f"schema={self.schema!r}"

    async def __aenter__(self) -> PostgresJournal:
        await self._start()
        return self

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

    def append(
        self, run_id: str, entries: Sequence[Entry], *, redone: Collection[str] = ()
    ) -> asyncio.Future[None]:
        future = self._future()
        self._enqueue(Append(future, run_id, entries, redone))
        return future

    def mark_undone(self, run_id: str, key: str) -> asyncio.Future[None]:
        future = self._future()
        self._enqueue(Undone(future, run_id, key))
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
        await self._stop()
