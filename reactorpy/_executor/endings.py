"""The endings of a step: completed, failed, halted, interrupted, or put back.

Owns: `record` (a step completed: store its value, push its undo, release what no reader
needs, count down its dependents), `fail`, `halt`, `fatal`, `cancelled`, `ended_badly`
(what a step raised decides which), `stop` (nothing new starts; a halt reaches the child
runs of new steps, which halt too: `halts_instead`), how a stopping run's workers end
(`drain`, `cancel_workers`, and `recorded`: its completions in the journal first), and the
slots and gate a step gives back when it ends (`end_slot`, `put_back`, `ungate`,
`Waiting`, `take_slot`).
Whatever a step raised, it ends exactly one way here, and its slot is given back.
Must not import: the scheduler and dispatch above it (what an ending starts goes through
`Run.spawn` and `Run.dispatch`), the composites.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import TYPE_CHECKING, Any

from .._checkpoint import UndoRecord
from .._errors import _UNSET, Halt, RunFailed, annotate
from .attempts import (
    CompletedThenCancelled,
    Pending,
    StepFailed,
    as_halt,
    shielded,
    standing_error,
)
from .observe import failed_event
from .saga import undo_route
from .state import DONE, PENDING, QUEUED

if TYPE_CHECKING:
    from .run import Run

__all__ = [
    "Waiting",
    "cancel_workers",
    "cancelled",
    "drain",
    "end_slot",
    "ended_badly",
    "fail",
    "fatal",
    "halt",
    "halts_instead",
    "hold_back",
    "put_back",
    "record",
    "recorded",
    "release",
    "stop",
    "stop_workers",
    "take_slot",
    "ungate",
]


def take_slot(run: Run, i: int) -> bool:
    """Take a slot of the run's limiter for step `i` now, or queue it for one."""
    limiter = run.limiter
    assert limiter is not None
    key = run.plan.steps[i].concurrency_key
    if limiter.try_acquire(key):
        run.st.holding[i] = 1
        return True
    limiter.enqueue(run.priority[i], key, Waiting(run, i))
    run.st.waiting += 1
    return False


class Waiting:
    """A step of a run waiting in the limiter's queue (the limiter's `Waiter`)."""

    __slots__ = ("i", "run")
    dead = False  # a stopping run takes its waiters out of the queue itself

    def __init__(self, run: Run, i: int) -> None:
        self.run = run
        self.i = i

    def wake(self, key: str | None) -> None:
        """The limiter gave this step a slot (released by this run or another)."""
        run, i = self.run, self.i
        st = run.st
        st.waiting -= 1
        st.holding[i] = 1
        if st.stopping:
            put_back(run, i)
        elif st.gate:
            hold_back(run, i)
        else:
            st.status[i] = QUEUED
            run.spawn([i])


def hold_back(run: Run, i: int) -> None:
    """An ``async_=False`` step runs: step `i` waits for its end, pending, without a slot
    (one it held goes to others: the step running alone may need it, for its new steps)."""
    run.st.status[i] = PENDING
    end_slot(run, i, None)
    run.st.held.append(i)


def end_slot(run: Run, i: int, stack: list[int] | None) -> None:
    """Step `i` ended (or goes back to pending): give back its slot, if it holds one.

    The slot goes to the best waiting step: one of this run goes onto `stack` (the
    calling worker starts it next), one of another run is woken.
    """
    st = run.st
    if not st.holding[i]:
        return
    st.holding[i] = 0
    if st.lent[i]:  # a nested run borrowed it and gives it back to the limiter itself
        return
    assert run.limiter is not None
    waiter = run.limiter.release(run.plan.steps[i].concurrency_key)
    if waiter is None:
        return
    j = getattr(waiter, "i", -1)
    if (
        stack is not None
        and getattr(waiter, "run", None) is run
        and not st.stopping
        and not st.gate
        and not run.modes.exclusive[j]
    ):
        st.waiting -= 1
        st.holding[j] = 1
        st.status[j] = QUEUED
        stack.append(j)
    else:
        waiter.wake(None)


def put_back(run: Run, i: int) -> None:
    """Step `i` did not start (the run stops): pending again, its slot given back."""
    if run.st.status[i] != DONE:
        run.st.status[i] = PENDING
    end_slot(run, i, None)
    ungate(run, i)


def ungate(run: Run, i: int) -> None:
    """An ``async_=False`` step ended: what it held back may start."""
    st = run.st
    if st.gated[i]:
        st.gated[i] = 0
        st.gate -= 1
        if not st.gate and st.held and not st.stopping:
            held, st.held = st.held, []
            for j in held:  # those holding a slot keep it and start at once
                if st.holding[j]:
                    st.status[j] = QUEUED
                    run.spawn([j])
            fresh = sorted((j for j in held if not st.holding[j]), key=run.order_key)
            if fresh:
                run.dispatch(fresh, None)


def record(
    run: Run,
    i: int,
    value: Any,
    arguments: dict[str, Any] | None,
    *,
    undoable: bool = True,
    pushed: UndoRecord | None = None,
    seq: int | None = None,
) -> list[int]:
    """Step `i` completed with `value`: store it, push its undo (and its children's, for a
    composite; not if `undoable` is false, or if `pushed` already: a step that returned new
    steps, journaled at the `seq` it reserved), release results no remaining step reads,
    and count down its dependents. Returns the dependents that became ready, most critical
    first (none once stopping)."""
    if run.durable is not None:
        return record_durably(run, i, value, arguments, undoable, pushed, seq)
    st = run.st
    st.status[i] = DONE
    vals = st.vals
    vals[i] = value
    st.n_done += 1
    plan = run.plan
    if undoable and pushed is None and run.modes.undo[i]:
        if arguments is not None:
            run.ledger.push(UndoRecord(plan.order[i], value, arguments))
        elif (fetch := plan.fetch[i]) is not None:
            run.ledger.push((i, value, fetch(vals)))  # named only if undo runs
        else:
            run.ledger.push(
                UndoRecord(plan.order[i], value, run.named_args(i, st.attempts[i] or 1))
            )
    if run.kept:
        children = run.kept.pop(i, None)
        if children:
            run.ledger.splice(children)
    if run.releasing:
        release(run, i)
    if st.n_done == run.n:
        run.maybe_wake()
    if st.stopping:
        return []
    ready: list[int] = []
    remaining = st.remaining
    status = st.status
    for d in run.ready_order[i]:  # most critical first
        remaining[d] -= 1
        if not remaining[d] and status[d] == PENDING:
            ready.append(d)
    return ready


def record_durably(
    run: Run,
    i: int,
    value: Any,
    arguments: dict[str, Any] | None,
    undoable: bool,
    pushed: UndoRecord | None,
    seq: int | None,
) -> list[int]:
    """`record` for a journaled run: the completion is written first, with its undo
    record (`pushed`'s, on the stack already), and the steps it made ready start once the
    write is durable (`Durable.write`); returns none to start now. A value that cannot be
    serialized fails the step instead."""
    durable = run.durable
    assert durable is not None
    st = run.st
    plan = run.plan
    undo = pushed
    if undo is None and undoable and run.modes.undo[i]:
        named = arguments
        if named is None:
            named = run.named_args(i, st.attempts[i] or 1)
        undo = UndoRecord(plan.order[i], value, named)
    try:
        route = undo_route(run, i) if undo is not None else None
        entry = durable.encode(run.names[i], value, undo, route, seq)
    except TypeError as exc:
        fail(run, i, exc, st.attempts[i] or 1)
        return []
    st.status[i] = DONE
    st.vals[i] = value
    st.n_done += 1
    if undo is not None and pushed is None:
        run.ledger.push(undo)
    if run.kept:
        children = run.kept.pop(i, None)
        if children:
            run.ledger.splice(children)
    if run.releasing:
        release(run, i)
    ready: list[int] = []
    if not st.stopping:
        for d in run.ready_order[i]:
            st.remaining[d] -= 1
            if not st.remaining[d] and st.status[d] == PENDING:
                ready.append(d)
    durable.write(run, entry, ready)
    return []


def release(run: Run, i: int) -> None:
    """Step `i` completed: results that no remaining step reads are released (not the
    return value), so a long pipeline holds only its live frontier."""
    st = run.st
    vals = st.vals
    left = st.readers_left
    keep = run.keep
    for j in run.plan.reads[i]:
        left[j] -= 1
        if not left[j] and not keep[j]:
            vals[j] = None
    if not run.plan.readers[i] and not keep[i]:
        vals[i] = None


def ended_badly(
    run: Run, i: int, exc: BaseException, ctx: contextvars.Context, *, reported: bool
) -> None:
    """Step `i` raised `exc` (`reported`: its attempts told middleware already). What an
    ``async_=False`` step held back may start only after its end is recorded (a halt with
    a result completes it: what starts then is newer)."""
    try:
        _ended_badly(run, i, exc, ctx, reported=reported)
    finally:
        ungate(run, i)


def _ended_badly(
    run: Run, i: int, exc: BaseException, ctx: contextvars.Context, *, reported: bool
) -> None:
    st = run.st
    if isinstance(exc, StepFailed):
        fail(run, i, exc.error, exc.attempt, note=exc.note)
    elif isinstance(exc, Pending):
        st.status[i] = PENDING
    elif isinstance(exc, CompletedThenCancelled):
        ready = record(run, i, exc.value, exc.arguments)
        if ready:
            run.dispatch(ready, None)
        cancelled(run, i, asyncio.CancelledError())
    elif isinstance(exc, asyncio.CancelledError):
        cancelled(run, i, exc)
    elif (h := as_halt(exc)) is not None:
        if not reported:
            failed_event(run, i, "step_halt", h.reason, None, ctx)
        halt(run, i, h)
    elif isinstance(exc, Exception):
        error = standing_error(exc)
        if not reported:
            failed_event(run, i, "step_error", None, error, ctx)
        fail(run, i, error, st.attempts[i] or 1)
    else:
        fatal(run, i, exc)


def cancelled(run: Run, i: int, exc: asyncio.CancelledError) -> None:
    """Step `i` ended with a cancellation. The run's own (it is stopping) leaves the step
    pending; any other (a future the step awaited was cancelled by someone else, or its
    task was) fails the step: the caller gets `RunFailed`, not a bare CancelledError."""
    st = run.st
    if st.status[i] != DONE:
        st.status[i] = PENDING
        keep_done(run, i)
    if st.stopping:
        return
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        task.uncancel()  # not the run's: this worker goes on
    error = RuntimeError(
        f"step {run.names[i]!r} was cancelled, but not by its run (a future or task it "
        "awaited was cancelled)"
    )
    error.__cause__ = exc
    if st.status[i] != DONE:
        fail(run, i, error, st.attempts[i] or 1)


def fail(run: Run, i: int, error: BaseException, attempt: int, *, note: str | None = None) -> None:
    """Step `i`'s `error` stands: the run stops, and undoes what it did. The error gets a
    note naming the step and the attempt (`note`, when its attempts say more)."""
    st = run.st
    st.status[i] = PENDING
    if st.halt_reason is not _UNSET and not st.errors:
        return  # halting: a step that fails while the run drains stays pending
    annotate(error, note or f"reactorpy: step {run.names[i]!r} failed (attempt {attempt})")
    keep_done(run, i)
    st.errors.append(error)
    st.failed_steps.append(run.names[i])
    stop(run)


def keep_done(run: Run, i: int) -> None:
    """Step `i` ends without completing, but what it did is done (its children's records,
    or its own work before its new steps): those records join the undo stack."""
    if run.kept and i in run.kept:
        run.ledger.splice(run.kept.pop(i))


def fatal(run: Run, i: int, error: BaseException) -> None:
    """A `BaseException` that is not an error (KeyboardInterrupt, ...) ends the run; it is
    re-raised as it is, after undo. `i` is -1 when no step raised it."""
    st = run.st
    if i >= 0 and st.status[i] != DONE:
        st.status[i] = PENDING
        keep_done(run, i)
    if st.fatal is None:
        st.fatal = error
    stop(run)


def halt(run: Run, i: int, h: Halt) -> None:
    """Step `i` halted: the run stops, keeping what it did; a `result` completes it."""
    st = run.st
    if h.result is not _UNSET:
        record(run, i, h.result, h._arguments)
    else:
        st.status[i] = PENDING
        keep_done(run, i)
    if st.halt_reason is _UNSET:
        st.halt_reason = h.reason
        st.halt_step = run.names[i]
    stop(run)


def stop(run: Run) -> None:
    """Nothing new starts: queued waiters leave the limiter, held steps give their slots
    back, steps waiting to retry stop waiting; the run's coordinator is woken. A run that
    halts halts its running child runs of new steps too (`RunState.linked`)."""
    st = run.st
    if not st.stopping:
        st.stopping = True
        if run.limiter is not None:
            st.waiting -= run.limiter.discard(run)
        held, st.held = st.held, []
        for j in held:
            put_back(run, j)
        for w in st.stop_waiters:
            if not w.done():
                w.set_result(None)
        if st.linked and st.halting:
            for child in list(st.linked):
                _halt_with_parent(child, st.halt_reason)
    run.wake()


def run_failed(run: Run, undo_errors: list[BaseException]) -> RunFailed:
    """The one error of a run that failed: its steps' (and hooks') errors, then the undo
    errors, naming the steps that failed."""
    st = run.st
    errors = [*st.errors, *st.hook_errors, *undo_errors]
    excs = [e if isinstance(e, Exception) else RuntimeError(repr(e)) for e in errors]
    steps = ", ".join(dict.fromkeys(st.failed_steps)) or "(an undo)"
    message = f"reactor {run.plan.reactor!r} failed in step(s) {steps}"
    if undo_errors:
        message += f"; {len(undo_errors)} undo(s) failed too"
    group = RunFailed(
        message,
        excs,
        reactor=run.plan.reactor,
        abandoned=st.abandoned,
        undo_failed=list(dict.fromkeys(run.undoer.failed)),
    )
    if st.abandoned:
        annotate(
            group,
            "reactorpy: still running in a thread or process, abandoned: "
            + ", ".join(st.abandoned),
        )
    return group


def _halt_with_parent(child: Run, reason: Any) -> None:
    """A run of new steps halts because its parent does: nothing new starts in it, its
    running steps get its grace, then it raises `Halted` with its checkpoint (resume
    continues it). One that is stopping already (it failed, or halted) goes on as it was."""
    st = child.st
    if not st.stopping:
        st.halt_reason = reason
        st.halt_step = None
        stop(child)


async def halts_instead(run: Run) -> bool:
    """`run` was cancelled: a run of new steps whose parent halts (the parent's grace ended
    and it cancels its workers) halts instead of undoing, its running steps cancelled back
    to pending (`stop_workers`, shielded). Returns False for any other run: it undoes."""
    st = run.st
    if not (st.follows and st.halting):
        return False
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()  # the cancellation is this halt: the parent's worker goes on with it
    await shielded(stop_workers(run))
    return True


async def drain(run: Run) -> None:
    """A stopping run's running steps get `grace` seconds to finish; then they are
    cancelled."""
    tasks = set(run.st.workers.values())
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=run.grace)
        if pending or run.st.workers:
            await cancel_workers(run)


async def recorded(run: Run) -> None:
    """Wait for every completion sent to the journal to be durable (or to fail): a
    journaled run undoes, halts or ends only once what it completed is recorded (after a
    crash, a completion left out would never be undone)."""
    st = run.st
    while st.writes:
        assert run.loop is not None
        st.wakeup = run.loop.create_future()
        await st.wakeup  # `Run.maybe_wake`, once the writes and workers are done


async def stop_workers(run: Run) -> None:
    """Cancel the workers, then wait for what they completed to be recorded."""
    await cancel_workers(run)
    await recorded(run)


async def cancel_workers(run: Run) -> None:
    """Cancel the workers and wait for each to end (each puts back what it had)."""
    st = run.st
    while st.workers:
        tasks = list(st.workers.values())
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
