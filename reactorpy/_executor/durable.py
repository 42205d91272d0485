"""Durable runs: what a run records in its journal, and what a recovered run starts from.

Owns: `Durable`, one per journaled run (shared by the child runs of its composite steps):
each step's completion (its result and undo record) is appended to the journal, and the
steps it made ready start only once that write is durable. Completions go in few requests
(`Write`): those of the steps a worker starts one after another go in one when it stops;
one append of a run is in flight at a time, and what comes meanwhile goes together in the
next (siblings share commits however the journal's writer is scheduled). The worker that
completed a step waits for the write and starts what it made ready itself when it has
nothing else to start (`Durable.wait_for_write`): a chain costs a commit and one loop turn
per step, no new task. Each undo done is marked; a recovered run restores its completed
steps, and the undo records of what completed, from the journal's entries
(`restore_recovered`); a root run records its undo request before its first undo
(`undo_requested`); `undo_from_journal` undoes what the journal holds as not undone.
Must not import: the scheduler (what becomes ready when a write is durable is started
through `Run.dispatch`), the composites.

An entry's key is the step's name in the run (``charge_card``, ``sub.book``,
``items.[3].square``); its undo is ``[value, arguments, route]``, the route leading from
the root reactor to the step's undo callback (see `UndoRecord.route`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._checkpoint import BY_REFERENCE, UndoRecord
from .._errors import annotate
from .attempts import shielded
from .endings import fatal, stop
from .resume import undo_records
from .saga import undo_route
from .state import DONE

if TYPE_CHECKING:
    from .._journal import Entry, Journal, StoredRun
    from .run import Run

__all__ = [
    "ROLLED_BACK",
    "Durable",
    "Write",
    "restore_recovered",
    "undo_from_journal",
    "to_undo",
    "undo_requested",
]

# The start of the key of a rollback mark (`Durable.rolling_back`): the mark of a child run
# whose steps are keyed ``prefix...`` is ``ROLLED_BACK + prefix``. Step names are printable
# (`check_name`), so no step's key starts with it.
ROLLED_BACK = "\x1f"


class Durable:
    """The journal of one run (and its children's): where completions and undos go.

    Attributes:
        journal: the journal.
        run_id: the run's id in it.
        entries: what a recovered run had completed, by key (empty for a new run).
        undone: keys whose undo the journal holds as done.
        failed: keys whose undo failed in this process (in the run or a child run).
        rollbacks: the rollbacks of child runs the journal holds: their prefix and seq
            (`rolling_back`).
        seq: the next completion's order number (shared by the run and its children).
    """

    __slots__ = (
        "_places",
        "entries",
        "entry_type",
        "failed",
        "in_flight",
        "journal",
        "queued",
        "rollbacks",
        "run_id",
        "seq",
        "serializer",
        "undone",
    )

    def __init__(self, journal: Journal, run_id: str, stored: StoredRun | None = None) -> None:
        """`stored`: what the journal holds of the run (a recovered run starts from its
        entries; a run resumed from its checkpoint restores the checkpoint, and its child
        runs that the halt did not keep restore what the journal holds of them)."""
        # The journal's record of a completion (not imported at module level: `import
        # reactorpy` does not load the journals, or sqlite3).
        from .._journal import Entry

        self.entry_type = Entry
        self.journal = journal
        self.run_id = run_id
        self.serializer = journal.serializer
        entries: Sequence[Entry] = stored.entries if stored is not None else ()
        self.entries = {e.key: e for e in entries}
        self.undone = set(stored.undone) if stored is not None else set()
        self.failed: set[str] = set()
        self.rollbacks = {
            e.key[len(ROLLED_BACK) :]: e.seq for e in entries if e.key.startswith(ROLLED_BACK)
        }
        self.seq = 1 + max((e.seq for e in entries), default=0)
        self._places: dict[str, tuple[int, int]] | None = None
        self.in_flight = False  # an append of this run's is in flight
        self.queued: list[Write] = []  # what goes in the next append

    def encode(
        self, key: str, value: Any, undo: UndoRecord | None, route: Any, seq: int | None = None
    ) -> Entry:
        """The entry of a step's completion (at `seq` if reserved, else the next).

        Raises:
            TypeError: the value or the undo's arguments cannot be serialized (naming the
                step and the type); the step fails, nothing is written.
        """
        try:
            result = self.serializer.dumps(value)
        except Exception as exc:  # TypeError, and what a serializer raises besides
            raise TypeError(
                f"step {key!r}: its result ({type(value).__name__}) cannot be recorded in "
                f"the journal: {exc}"
            ) from exc
        record = None
        if undo is not None:
            try:
                record = self.serializer.dumps([undo.value, undo.arguments, route])
            except Exception as exc:
                kinds = ", ".join(f"{k}: {type(v).__name__}" for k, v in undo.arguments.items())
                raise TypeError(
                    f"step {key!r}: its arguments, kept for its undo ({kinds}), cannot be "
                    f"recorded in the journal: {exc}"
                ) from exc
        if seq is None:
            seq = self.seq
            self.seq += 1
        return self.entry_type(key, seq, result, record)

    def write(self, run: Run, entry: Entry, ready: list[int]) -> None:
        """Append `entry`; once it is durable, start `ready` (steps it made ready). While a
        worker of `run` starts steps one after another (`RunState.batch`), it waits to go
        with theirs when the worker stops (`flush`).

        A step completed again after its undo (a composite that runs its child again) is
        no longer undone, here as in the journal (its append drops the mark); a recovered
        run's children restore what it completed last."""
        st = run.st
        st.writes += 1
        batch = st.batch
        if batch is None:
            batch = Write(run)
        batch.entries.append(entry)
        batch.ready.extend(ready)  # (most critical first, completion after completion)
        if self.undone and entry.key in self.undone:
            self.undone.discard(entry.key)
            batch.redone.append(entry.key)
        if self.entries:
            self.entries[entry.key] = entry
            self._places = None
        if st.batch is None:
            self._submit(batch)

    @staticmethod
    def new_write(run: Run) -> Write:
        """An empty `Write` of `run`, for a worker's pass to fill (`RunState.batch`)."""
        return Write(run)

    def flush(self, run: Run) -> None:
        """A worker of `run` stopped starting steps: append what they completed."""
        st = run.st
        batch, st.batch = st.batch, None
        if batch is not None and batch.entries:
            self._submit(batch)

    def _submit(self, write: Write) -> None:
        if self.in_flight:
            self.queued.append(write)
        else:
            self._send([write])

    def _send(self, writes: list[Write]) -> None:
        """Append `writes` in one request. Alone, a write that made steps ready is the one
        a worker left with nothing to start may wait for (`RunState.handoff`); with others,
        its callback starts them (a worker's cancelled wait would cancel theirs)."""
        self.in_flight = True
        if len(writes) == 1:
            entries, redone = writes[0].entries, writes[0].redone
        else:
            entries = [e for w in writes for e in w.entries]
            redone = [k for w in writes for k in w.redone]
        try:
            future = self.journal.append(self.run_id, entries, redone=redone)
        except Exception as exc:  # the journal is closed: the run fails
            self.in_flight = False
            for write in writes:
                _written(write, False, exc)
            return
        if len(writes) == 1 and writes[0].ready:
            write = writes[0]
            write.future = future
            write.run.st.handoff = write  # (one an older write left unclaimed keeps its callback)
        future.add_done_callback(lambda f: self._sent(f, writes))

    def _sent(self, future: asyncio.Future[None], writes: list[Write]) -> None:
        self.in_flight = False
        if self.queued:
            queued, self.queued = self.queued, []
            self._send(queued)
        cancelled = future.cancelled()
        error = None if cancelled else future.exception()
        for write in writes:
            try:
                _written(write, cancelled, error)
            except BaseException as exc:  # a bug of ours: the run ends, never a hang
                fatal(write.run, -1, exc)
                write.run.maybe_wake()

    async def wait_for_write(self, run: Run, stack: list[int]) -> None:
        """A worker with nothing left to start waits for the run's last write that made
        steps ready (`RunState.handoff`), then starts them from `stack`: the next step of a
        chain runs one loop turn after its predecessor is durable, in the same worker
        (through the write's callback it would take a turn more and a new worker task).
        The callback runs first (it was added first): it counts the write, or fails the
        run. Cancelling the worker leaves the write alone: the run stopping waits for it
        (`endings.recorded`), and what it made ready is the callback's to start."""
        st = run.st
        write = st.handoff
        assert write is not None
        future = write.future
        assert future is not None
        st.handoff = None
        write.claimed = True
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            if not future.done():
                write.claimed = False
            raise
        except Exception:
            return  # `_written` fails the run
        if not st.stopping:
            run.dispatch(write.ready, stack)

    async def rolling_back(self, prefix: str) -> None:
        """A child run, whose steps are keyed ``prefix...``, is about to undo what it
        completed (its composite step failed, or its run was cancelled): record first that
        its entries so far are void. A recovery then never takes them for completions: it
        finishes their undo (again: undo is at least once) before the composite runs its
        child again (`restore_recovered`)."""
        entry = self.entry_type(ROLLED_BACK + prefix, self.seq)
        self.seq += 1
        self.rollbacks[prefix] = entry.seq
        await self.journal.append(self.run_id, [entry])

    async def undone_now(self, key: str) -> None:
        """Record that the undo of step `key` is done (awaited: undo is rare and slow)."""
        self.undone.add(key)
        await self.journal.mark_undone(self.run_id, key)

    def returned(self, run: Run, i: int, own: UndoRecord, seq: int) -> None:
        """Step `i` of `run` returned new steps, its own undo `own` on the stack now: to
        the journal at `seq`, in an entry with no result (not complete: a recovery runs it
        again) that its completion replaces, so an undo from the journal undoes its work
        even if a crash cuts its new steps short. (Unserializable: its completion says so.)"""
        try:
            undo = self.serializer.dumps([own.value, own.arguments, undo_route(run, i)])
        except Exception:
            return
        self.write(run, self.entry_type(run.names[i], seq, None, undo), [])

    def reserve(self) -> int:
        """A seq for a step that returned new steps, before theirs, as its undo on the stack:
        its completion's, written when they end (`encode`); unused if they fail."""
        self.seq += 1
        return self.seq - 1

    def place(self, entry: Entry) -> tuple[int, int]:
        """Where `entry` is in the order its steps completed: its seq; but a step whose
        children (the new steps it returned, a composite's child runs: keys under its name
        and a dot) were recorded before it goes just before the first of them, as its undo
        on the stack did (they depend on it): resumed by id, or run again in a recovery."""
        places = self._places
        if places is None:
            first = {k: e.seq for k, e in self.entries.items()}
            for e in self.entries.values():
                key = e.key
                dot = key.find(".")
                while dot > 0:
                    head = key[:dot]
                    if head in first and e.seq < first[head]:
                        first[head] = e.seq
                    dot = key.find(".", dot + 1)
            # (a step before its children at one seq: fewer dots first)
            places = self._places = {k: (first[k], k.count(".")) for k in self.entries}
        return places.get(entry.key, (entry.seq, 0))

    def records(self, run: Run) -> list[UndoRecord]:
        """Every undo record the journal holds that is not undone, oldest first (a run
        whose undo a crash interrupted, or that `recover(undo=True)` undoes)."""
        out = []
        for entry in sorted(self.entries.values(), key=self.place):
            if entry.undo is not None and entry.key not in self.undone:
                out.append(_record(self, entry))
        return out


class Write:
    """Completions of one run on their way to the journal, in one append (or with others):
    their entries, the keys among them completed again after their undo (`redone`), and
    the steps they made ready, most critical first, completion after completion.

    Once durable, its callback (`_written`) counts it, fails the run if it could not be
    written, and starts what it made ready, unless ``claimed``: a worker waits for it
    (`Durable.wait_for_write`) and starts them itself.
    """

    __slots__ = ("claimed", "entries", "future", "ready", "redone", "run")

    def __init__(self, run: Run) -> None:
        self.run = run
        self.entries: list[Entry] = []
        self.ready: list[int] = []
        self.redone: list[str] = []
        self.future: asyncio.Future[None] | None = None  # set when a worker may wait for it
        self.claimed = False


def _written(write: Write, cancelled: bool, error: BaseException | None) -> None:
    """`write` is durable (or could not be written: `error`; or the worker waiting for it
    was cancelled): start what it made ready, unless the worker that waits for it does."""
    run = write.run
    st = run.st
    st.writes -= len(write.entries)
    if st.handoff is write:
        st.handoff = None
    if cancelled:  # the journal never cancels a write, nor does a worker (it shields it)
        error = RuntimeError("the journal's write was cancelled")
    if error is not None:
        annotate(error, "reactorpy: a step's completion could not be recorded in the journal")
        if not st.halting:  # the run fails (what it did is undone, in this process)
            st.errors.append(error)
            st.failed_steps.append("(the journal)")
            stop(run)
    elif write.ready and not write.claimed and not st.stopping:
        run.dispatch(write.ready, None)
    run.maybe_wake()


def _record(durable: Durable, entry: Entry, prefix: str = "", depth: int = 0) -> UndoRecord:
    """The undo record of `entry`, as the run it is restored into names it: a child run
    (`prefix`, ``"sub."``; its reactor `depth` steps down the route from the root's)
    holds its records by its own step names and routes, as if it had made them."""
    value, arguments, route = durable.serializer.loads(entry.undo)  # type: ignore[arg-type]
    step = entry.key[len(prefix) :] if prefix and entry.key.startswith(prefix) else entry.key
    if route and route[0] != BY_REFERENCE:  # (a reference is where it is at any depth)
        route = route[depth:]
    return UndoRecord(step, value, arguments, route=tuple(route) if route else None)


def restore_recovered(run: Run) -> list[UndoRecord]:
    """Rebuild `run` from its journal's entries (a recovered run, or a child of one whose
    composite runs again): steps with an entry are completed with its result; the undo
    records of those steps, and of what completed inside them (a composite's child runs,
    the new steps a step returned), go onto its undo stack in completion order
    (`Durable.place`). A composite in flight at the crash runs again, and its child
    restores its own from the same entries.

    Entries an earlier run of this child rolled back (`Durable.rolling_back`) are not
    completions: returned, newest first, are the undo records among them not marked
    undone (the rollback was cut short), for the run to undo before anything starts."""
    durable = run.durable
    assert durable is not None
    entries = durable.entries
    if not entries:
        return []
    st = run.st
    plan = run.plan
    loads = durable.serializer.loads
    marks = durable.rollbacks.items()

    def void(e: Entry) -> bool:
        return any(e.seq < seq and e.key.startswith(p) for p, seq in marks)

    undone = durable.undone
    done: list[int] = []
    for i, name in enumerate(run.names):
        entry = entries.get(name)
        if entry is None or entry.result is None:  # (None: returned new steps, not done)
            continue
        if name not in undone and not (marks and void(entry)):
            st.status[i] = DONE
            st.vals[i] = loads(entry.result)
            done.append(i)
    st.n_done += len(done)
    for i in done:
        for d in plan.dependents[i]:
            st.remaining[d] -= 1
        for j in plan.reads[i]:
            st.readers_left[j] -= 1
    roots = tuple(run.names[i] for i in done)
    # What completed under a done step: a composite's children, the new steps it returned.
    composites = tuple(f"{run.names[i]}." for i in done)
    mine = [
        e
        for e in entries.values()
        if e.undo is not None
        and e.key not in undone
        and (e.key in roots or e.key.startswith(composites))
        and not (marks and void(e))
    ]
    mine.sort(key=durable.place)
    depth = len(run.route) if run.route else 0
    run.ledger.entries = [_record(durable, e, run.prefix, depth) for e in mine]
    if not (marks and run.prefix):
        return []
    cut = [
        e
        for e in entries.values()
        if e.undo is not None and e.key not in undone and e.key.startswith(run.prefix) and void(e)
    ]
    cut.sort(key=durable.place, reverse=True)
    return [_record(durable, e, run.prefix, depth) for e in cut]


async def undo_requested(
    run: Run, error: BaseException | None, records: list[UndoRecord]
) -> BaseException | None:
    """A journaled run is about to undo `records`: record it first, the undo request of a
    root run (a crash during the undo is then continued by a recovery), the rollback of a
    child run (`Durable.rolling_back`). A journal that fails here is a note on `error`;
    one that says the run is another process's now (its lease expired and the run was
    claimed) is returned: this process undoes nothing, the new owner finishes the run."""
    durable = run.durable
    if durable is None or not records:
        return None
    from .._journal import OwnershipError  # (a run without a journal never loads it)

    try:
        if run.parent is not None:  # a child run: its entries are void (a composite's)
            await durable.rolling_back(run.prefix)
            return None
        failure = durable.serializer.dumps_error(error) if error is not None else None
        await durable.journal.request_undo(durable.run_id, error=failure)
    except OwnershipError as lost:
        return lost
    except Exception as exc:
        if error is not None:
            annotate(error, f"reactorpy: the journal could not record the undo: {exc!r}")
    return None


def to_undo(run: Run) -> list[UndoRecord]:
    """What a run that failed or was cancelled undoes, newest first: its undo stack; for a
    recovered root run, merged by completion order with what the journal holds besides as
    completed and not undone, which the stack never held (what a composite in flight at
    the crash completed, a child's rollback the crash cut short: their child runs finish
    them only if the composite runs again). Not the undos that failed in this process."""
    stack = run.ledger.pop_all()
    durable = run.durable
    if durable is None or run.parent is not None or not durable.entries:
        return stack
    held = {r.step for r in stack} | durable.failed
    left = [r for r in reversed(durable.records(run)) if r.step not in held]
    if not left:
        return stack
    entries = durable.entries
    late = (1 + durable.seq, 0)  # (a record without an entry keeps its place in the stack)

    def seq(record: UndoRecord) -> tuple[int, int]:
        entry = entries.get(record.step)
        return late if entry is None else durable.place(entry)

    merged: list[UndoRecord] = []
    k = 0
    for record in stack:  # the stack's order kept, the others placed by completion
        while k < len(left) and seq(left[k]) > seq(record):
            merged.append(left[k])
            k += 1
        merged.append(record)
    merged.extend(left[k:])
    return merged


async def undo_from_journal(run: Run) -> list[BaseException]:
    """Undo what `run`'s journal holds as completed and not undone, newest first (a
    recovery with ``undo=True``, a run that crashed while it undid, ``Reactor.undo`` of a
    journaled run); returns the undo errors (one `RunFailed`, if any). Shielded, as every
    undo: a cancellation waits for it, then is raised."""
    durable = run.durable
    assert durable is not None
    records = durable.records(run)
    run.loop = asyncio.get_running_loop()
    run.clock = run.loop.time
    errors, cancelled = await shielded(undo_records(run, records))
    if cancelled:
        raise asyncio.CancelledError
    return errors  # type: ignore[no-any-return]
