"""The PostgreSQL journal's connections: connecting, its writer task, its leases, closing.

Owns: `PostgresWriter`, the writing half of `PostgresJournal`: its options and connections
(it connects on first use, on the running event loop, and stays bound to that loop), the
writer task and its group commit, the lease renewal task, and closing; and the requests the
journal queues for the writer (`Append`, `Undone`, and the jobs of the other calls).
Must not import: `postgres` (the journal above it), the SQLite modules, the executor, the
reactor, the CLI; nor asyncpg (`PostgresJournal` imports it when one is made and hands it
over: it is the ``postgres`` extra).

The writer task owns one connection and does, like the SQLite writer thread:

1. Wait until something is queued; take all of it (group commit).
2. Only appends and undo marks (the common case): one statement in autocommit, one round
   trip: a CTE fences the runs (``SELECT ... FOR SHARE`` of the runs this process owns and
   that run, so a concurrent claim cannot take them mid-write), then inserts every entry and
   mark from arrays (``unnest``), deleting the marks of keys appended as ``redone``.
   Anything else: one transaction, requests in queue order.
3. Resolve the batch's futures. A request refused by its job fails alone; a batch the
   database fails is retried one request per transaction, so a bad request fails only its
   own future; a lost connection (or one the server ended) fails the batch, and the next
   batch opens a new one.

Reads (`PostgresJournal`'s queries) and lease renewals use a small pool.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

from .batches import Outcome, Refused, settle
from .journal import Journal
from .postgres_schema import Sql, ensure_schema
from .records import Entry
from .serializers import Serializer

__all__ = ["Append", "PostgresWriter", "Undone"]

_log = logging.getLogger("reactorpy.journal")

Job = Callable[[Any], Awaitable[Any]]


class Append:
    """An ``append``: its entries, written in the next batch if the run is still ours, and
    the keys among them whose undo marks go (``redone``)."""

    __slots__ = ("entries", "future", "redone", "run_id")

    def __init__(
        self,
        future: asyncio.Future[None],
        run_id: str,
        entries: Sequence[Entry],
        redone: Collection[str] = (),
    ) -> None:
        self.future, self.run_id, self.entries, self.redone = future, run_id, entries, redone


class Undone:
    """A ``mark_undone``: its key, written in the next batch if the run is still ours."""

    __slots__ = ("future", "key", "run_id")

    def __init__(self, future: asyncio.Future[None], run_id: str, key: str) -> None:
        self.future, self.run_id, self.key = future, run_id, key


class _Call:
    """Any other call: its job, run in the next batch's transaction, and the effect of its
    result on the journal once that transaction has committed."""

    __slots__ = ("effect", "future", "job")

    def __init__(
        self, future: asyncio.Future[Any], job: Job, effect: Callable[[Any], None] | None
    ) -> None:
        self.future, self.job, self.effect = future, job, effect


_Request = Append | Undone | _Call


class PostgresWriter(Journal):
    """The writing half of `PostgresJournal`: its connections, its writer task, its lease
    renewal task; `PostgresJournal` adds the API and the queries.

    Args:
        dsn: as `PostgresJournal`'s.
        asyncpg: the asyncpg module (imported by `PostgresJournal`).
        serializer, lease, host: as `Journal`'s.
        schema, pool_size: as `PostgresJournal`'s.

    Raises:
        ValueError: ``lease`` or ``pool_size`` is invalid.
    """

    def __init__(
        self,
        dsn: str,
        asyncpg: Any,
        *,
        serializer: Serializer | None,
        lease: float,
        schema: str,
        host: str | None,
        pool_size: int,
    ) -> None:
        super().__init__(serializer=serializer, lease=lease, host=host)
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, not {pool_size!r}")
        self._asyncpg = asyncpg
        self.dsn = dsn
        self.schema = schema
        self._pool_size = pool_size
        self._sql = Sql(schema)
        self._pending: list[_Request] = []
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._starting: asyncio.Task[None] | None = None
        self._started = False
        self._conn: Any = None  # the writer's asyncpg.Connection
        self._pool: Any = None
        self._writer: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- starting and stopping

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
            await ensure_schema(conn, self._sql, self.schema)
            self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=self._pool_size)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        self._started = True
        assert self._loop is not None
        self._writer = self._loop.create_task(self._write_loop())
        self._renewer = self._loop.create_task(self._renew_loop())

    async def _stop(self) -> None:
        """Wait for a connection under way, let the writer commit what is queued, stop the
        lease renewal, release the leases of the runs still owned, and close the
        connections (`aclose`, once)."""
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
        stretch: list[Append | Undone] = []
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
        self, conn: Any, stretch: list[Append | Undone], outcomes: list[Outcome]
    ) -> None:
        run_ids = list(dict.fromkeys(r.run_id for r in stretch))
        # The last of a key wins (one statement cannot update a row twice).
        rows: dict[tuple[str, str], Entry] = {}
        marks: dict[tuple[str, str], None] = {}
        unmarks: dict[tuple[str, str], None] = {}
        for request in stretch:
            if type(request) is Append:
                for entry in request.entries:
                    rows[(request.run_id, entry.key)] = entry
                for key in request.redone:  # a mark queued before it is dropped with it
                    marks.pop((request.run_id, key), None)
                    unmarks[(request.run_id, key)] = None
            else:
                marks[(request.run_id, request.key)] = None  # type: ignore[union-attr]
        # Marked again after it was redone, in this stretch: it stays marked (one statement
        # cannot delete a row and insert it again).
        unmark = [k for k in unmarks if k not in marks]
        arrays = [
            run_ids,
            self.owner,
            [k[0] for k in rows],
            [k[1] for k in rows],
            [e.seq for e in rows.values()],
            [e.result for e in rows.values()],
            [e.undo for e in rows.values()],
            [k[0] for k in marks],
            [k[1] for k in marks],
        ]
        if unmark:
            arrays += [[k[0] for k in unmark], [k[1] for k in unmark]]
        written = await conn.fetch(
            self._sql.stretch_redone if unmark else self._sql.stretch, *arrays
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
            action = "append to" if type(request) is Append else "mark an undo done in"
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
