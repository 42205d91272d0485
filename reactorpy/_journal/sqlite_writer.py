"""The SQLite journal's writer thread, which alone writes through its connection.

Owns: `SQLiteWriter`, the writing half of `SQLiteJournal` (its writer thread, group
commit, the fence, lease renewal, checkpointing the WAL), the requests the journal queues
for it (`Append`, `Undone`, and the jobs of the other calls: `Call`), and its inbox (which
also tells the journal whether the thread is `idle`: see ``sqlite`` for the requests the
event loop commits itself meanwhile).
Must not import: `sqlite` (the journal above it), the PostgreSQL modules, the executor, the
reactor, the CLI.

The writer thread:

1. Take every request waiting in its inbox, sleeping on a pipe while there is none
   (``append``/``mark_undone`` put theirs from the event loop without waiting; the async
   calls put a job and await its future): that is one batch, one transaction (group commit).
   The batch is in flight (the inbox is not `idle`) until its results go out.
2. ``BEGIN IMMEDIATE`` (the file's write lock; other processes wait up to ``busy_timeout``).
3. In queue order: each stretch of appends and undo marks is fenced (a ``SELECT`` per run:
   written only if this process owns it and it is running) and written with one
   ``executemany`` each: the entries, the deletion of the undo marks of keys appended as
   ``redone`` (a mark queued before such an append goes with it), then the new marks;
   every other request runs its job. (A batch of one append of one entry,
   a chain's, is one fenced ``INSERT`` in autocommit instead: no ``BEGIN``, no ``COMMIT``.)
4. ``COMMIT``; then (the batch no longer in flight) one ``call_soon_threadsafe`` per event
   loop resolves every future of the batch. A job may refuse its own request (`Refused`):
   its future fails, the rest commits. A batch the database fails is rolled back and
   retried one request per transaction, so a bad request fails only its own future.
5. `CHECKPOINT` in the batch (the event loop's every 500 commits, on a connection that
   never checkpoints): once the results are out, checkpoint the WAL while the batch is
   still in flight, so the loop commits nothing meanwhile and the WAL starts over.
6. Every ``lease / 3`` seconds, between batches, renew the leases of the runs this journal
   owns (the event loop may be busy: the thread is not).
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
from collections.abc import Callable, Collection, Sequence
from typing import Any

from .batches import Outcome, Refused, settle
from .journal import Journal
from .records import Entry
from .sqlite_schema import (
    DELETE_UNDONE,
    FENCE,
    FENCED_ENTRY,
    INSERT_UNDONE,
    RENEW,
    SELECT_STATE,
    UPSERT_ENTRY,
    checkpoint,
    rollback,
)

__all__ = ["CHECKPOINT", "Append", "Call", "Job", "Request", "SQLiteWriter", "Undone"]

_log = logging.getLogger("reactorpy.journal")

Job = Callable[[sqlite3.Connection], Any]
#: A request's outcome, with the event loop to resolve its future on.
Delivery = tuple[asyncio.AbstractEventLoop, Outcome]


class Append:
    """An ``append``: its entries, written in the next batch if the run is still ours, and
    the keys among them whose undo marks go (``redone``)."""

    __slots__ = ("entries", "future", "loop", "redone", "run_id")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[None],
        run_id: str,
        entries: Sequence[Entry],
        redone: Collection[str] = (),
    ) -> None:
        self.loop, self.future, self.run_id, self.entries = loop, future, run_id, entries
        self.redone = redone


class Undone:
    """A ``mark_undone``: its key, written in the next batch if the run is still ours."""

    __slots__ = ("future", "key", "loop", "run_id")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None], run_id: str, key: str
    ) -> None:
        self.loop, self.future, self.run_id, self.key = loop, future, run_id, key


class Call:
    """Any other call: its job, run in the next batch's transaction, and the effect of its
    result on the journal once that transaction has committed. ``direct``: a short job
    the event loop may commit itself (a run's record or its end)."""

    __slots__ = ("direct", "effect", "future", "job", "loop")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
        job: Job,
        effect: Callable[[Any], None] | None,
        direct: bool = False,
    ) -> None:
        self.loop, self.future, self.job, self.effect = loop, future, job, effect
        self.direct = direct


Request = Append | Undone | Call
_STOP = object()
CHECKPOINT = object()  # in the inbox: the writer checkpoints the WAL (see the docstring)


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
        self._busy = False  # a batch `take` returned is not `done`
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

    def put_all(self, items: list[Any]) -> None:
        self._items.extend(items[:-1])
        self.put(items[-1])

    def idle(self) -> bool:
        """No request is queued or in flight (the writer does not write for this journal;
        it may renew leases)."""
        return not self._items and not self._busy

    def take(self, timeout: float) -> list[Any]:
        """Everything waiting; if nothing is, wait up to ``timeout`` seconds for something.
        The requests are in flight (not `idle`) until `done`."""
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
        self._busy = True  # (before the inbox empties: `idle` never sees neither)
        batch = []
        while items:
            batch.append(items.popleft())
        return batch

    def done(self) -> None:
        """The batch `take` returned is committed (or failed)."""
        self._busy = False

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)


class _PortableInbox:
    """`_Inbox` where there is no ``select.poll`` (Windows): a ``queue.SimpleQueue``."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.put = self._queue.put

    def put_all(self, items: list[Any]) -> None:
        for item in items:
            self._queue.put(item)

    def idle(self) -> bool:
        return False  # (the event loop never commits itself here)

    def done(self) -> None:
        pass

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


class SQLiteWriter(Journal):
    """The writing half of `SQLiteJournal`: its writer thread and what the thread does with
    each batch. `SQLiteJournal.__init__` starts the thread (`_start_writer`) and `aclose`
    stops it (`_stop_writer`); the thread alone uses the connection it is given."""

    def _start_writer(self, conn: sqlite3.Connection) -> None:
        self._inbox = _Inbox() if hasattr(select, "poll") else _PortableInbox()
        self._writer = threading.Thread(
            target=self._write_loop, args=(conn,), name="reactorpy-journal-writer", daemon=True
        )
        self._writer.start()

    async def _stop_writer(self) -> None:
        """Let the thread commit what is queued, release the leases and close its
        connection; return once it has."""
        self._inbox.put(_STOP)
        await asyncio.get_running_loop().run_in_executor(None, self._writer.join)

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
                wal = CHECKPOINT in batch
                if wal:
                    batch = [r for r in batch if r is not CHECKPOINT]
                outcomes = self._commit(conn, batch) if batch else []
                if wal:  # (in flight: the loop commits nothing meanwhile, so the WAL resets)
                    self._deliver(outcomes)
                    outcomes = []
                    checkpoint(conn)
                # Done before the results go out: the loop goes on committing by itself as
                # soon as it has them (not while this thread waits to give the GIL back).
                self._inbox.done()
                self._deliver(outcomes)
                if time.monotonic() >= renew_at:
                    self._renew(conn, time.time() + self.lease)
                    renew_at = time.monotonic() + interval
        finally:
            # Closing: what this journal still owns can be claimed at once.
            self._renew(conn, 0.0)
            conn.close()
            self._inbox.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[Request]) -> list[Delivery]:
        """Commit `batch`; return the outcome of each request, to deliver."""
        if (
            len(batch) == 1
            and type(batch[0]) is Append
            and len(batch[0].entries) == 1
            and not batch[0].redone
        ):
            return self._commit_one(conn, batch[0])
        outcomes: list[Delivery] = []
        effects: list[tuple[Callable[[Any], None], Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
        except Exception as exc:  # the lock was not had within busy_timeout: nothing began
            return [(r.loop, (r.future, None, exc)) for r in batch]
        try:
            self._apply(conn, batch, outcomes, effects)
            conn.execute("COMMIT")
        except Exception as exc:
            rollback(conn)
            if len(batch) == 1:
                return [(batch[0].loop, (batch[0].future, None, exc))]
            # Find the request the database refused: one transaction each.
            return [outcome for request in batch for outcome in self._commit(conn, [request])]
        self._commits += 1
        for effect, result in effects:
            effect(result)
        return outcomes

    def _commit_one(self, conn: sqlite3.Connection, request: Append) -> list[Delivery]:
        """The fast path of `_commit` for a batch of one append of one entry (a chain)."""
        run_id, entry = request.run_id, request.entries[0]
        row = (run_id, entry.key, entry.seq, entry.result, entry.undo, run_id, self.owner)
        error: BaseException | None = None
        try:
            if conn.execute(FENCED_ENTRY, row).rowcount == 1:
                self._commits += 1
            else:  # nothing was written: say why
                found = conn.execute(SELECT_STATE, (run_id,)).fetchone()
                error = self._refusal(run_id, found, "append to").error
        except Exception as exc:
            error = exc
        return [(request.loop, (request.future, None, error))]

    def _apply(
        self,
        conn: sqlite3.Connection,
        batch: list[Request],
        outcomes: list[Delivery],
        effects: list[tuple[Callable[[Any], None], Any]],
    ) -> None:
        stretch: list[Append | Undone] = []
        for request in batch:
            if type(request) is not Call:
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
        stretch: list[Append | Undone],
        outcomes: list[Delivery],
    ) -> None:
        """Appends and undo marks that follow each other in the queue: fenced per run, then
        written with one executemany each."""
        owner = self.owner
        refused: dict[str, Any] = {}  # run_id -> None (writable) or its (status, owner) row
        rows: list[tuple[Any, ...]] = []
        marks: dict[tuple[str, str], None] = {}
        unmarks: list[tuple[str, str]] = []
        for request in stretch:
            run_id = request.run_id
            if run_id not in refused:
                if conn.execute(FENCE, (run_id, owner)).fetchone() is not None:
                    refused[run_id] = None
                else:
                    refused[run_id] = [conn.execute(SELECT_STATE, (run_id,)).fetchone()]
            state = refused[run_id]
            if state is not None:
                action = "append to" if isinstance(request, Append) else "mark an undo done in"
                error = self._refusal(run_id, state[0], action).error
                outcomes.append((request.loop, (request.future, None, error)))
                continue
            if isinstance(request, Append):
                rows.extend((run_id, e.key, e.seq, e.result, e.undo) for e in request.entries)
                for key in request.redone:  # a mark queued before it is dropped with it
                    marks.pop((run_id, key), None)
                    unmarks.append((run_id, key))
            else:
                marks[(run_id, request.key)] = None
            outcomes.append((request.loop, (request.future, None, None)))
        if rows:
            conn.executemany(UPSERT_ENTRY, rows)
        if unmarks:
            conn.executemany(DELETE_UNDONE, unmarks)
        if marks:  # after the deletions: these were queued after what they mark
            conn.executemany(INSERT_UNDONE, list(marks))

    @staticmethod
    def _deliver(outcomes: list[Delivery]) -> None:
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
            conn.executemany(RENEW, [(until, run_id, self.owner) for run_id in owned])
            conn.execute("COMMIT")
        except Exception:
            rollback(conn)
            _log.warning("could not renew the leases of %d run(s)", len(owned), exc_info=True)
