"""Scheduling: starting ready steps, workers, and what happens when a step ends.

Owns: `dispatch` (how each ready step starts, from the run's dispatch table), `worker` (a
task that starts queued steps one after another and drives the one that suspends),
`record` (a step completed: store, push its undo, release what no reader needs, count
down its dependents), `complete` (`record`, then `dispatch` what became ready), and the
other endings of a step: `fail`, `halt`, `put_back`, `fatal`, and `stop`.
Must not import: the composites, the CLI.

Rules every path keeps (the saga promise):
- A step ends exactly one way: `complete`, `fail`, `halt`, `fatal` or back to pending,
  and its slot is given back (`end_slot`) on every one of them.
- Nothing a worker does can escape it: an error in an error, cancel or event path is
  recorded as an error of the run, and a worker that ends always wakes the run if it was
  the last one (`worker`'s ``finally``).
- No slot is held while its holder waits for work that needs a slot: a step that returns
  `rp.NewSteps` gives its slot back before its new steps run; a nested ``run()`` of a
  step borrows the step's slot (`Run.lend`).
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import types
from collections.abc import Awaitable, Coroutine
from typing import TYPE_CHECKING, Any, Final

from .._checkpoint import UndoRecord
from .._errors import _UNSET, Halt, annotate
from .._events import make_event
from .._step import NewSteps
from .attempts import (
    SKIPPED,
    CompletedThenCancelled,
    Pending,
    StepFailed,
    as_halt,
    attempts,
    standing_error,
)
from .inline import SUSPENDED, InContext, start
from .modes import ATTEMPTS, INLINE, TRY
from .state import DONE, PENDING, QUEUED, RUNNING

if TYPE_CHECKING:
    from .run import Run

__all__ = ["Waiting", "complete", "dispatch", "fail", "fatal", "halt", "record", "spawn", "stop"]

#: A worker, or a run of inline steps, yields to the event loop after this many steps.
YIELD_EVERY: Final = 64

_keys = itertools.count()
_AWAITABLE = (types.CoroutineType, asyncio.Future)  # what a plain def may return to await


# ---------------------------------------------------------------------- starting steps
def dispatch(run: Run, ready: list[int], stack: list[int] | None) -> None:
    """Start the steps that became ready; `ready` is most critical first.

    Inline steps (plain defs without options) run here and now, and what their completion
    makes ready is dispatched in turn (iteratively, never recursively). A step that takes a
    slot takes one, or waits in the limiter's queue for one. An ``async_=False`` step gets
    a worker of its own and holds back what becomes ready after it. The others go onto
    `stack` (the calling worker's, which starts the most critical next), or from outside a
    worker onto one new worker.
    """
    st = run.st
    modes = run.modes
    mode, slot, exclusive = modes.mode, modes.slot, modes.exclusive
    inline = run.inline_ok
    status = st.status
    todo = ready[::-1]  # a stack: the most critical on top
    startable: list[int] = []  # most critical first
    ran = 0
    while todo:
        d = todo.pop()
        if st.stopping:
            break
        if status[d] != PENDING:
            continue
        if st.gate:
            st.held.append(d)
        elif mode[d] == INLINE and inline and ran < YIELD_EVERY:
            ran += 1
            more = run_inline(run, d)
            if more:
                todo.extend(reversed(more))
        elif slot[d] and not take_slot(run, d):
            continue  # it waits in the limiter's queue
        elif exclusive[d]:
            status[d] = QUEUED
            spawn(run, [d])
        else:
            status[d] = QUEUED
            startable.append(d)
    if not startable:
        return
    if st.stopping:
        for d in startable:
            put_back(run, d)
    elif run.limiter is not None:
        # Steps that hold a slot start at once, each in a task of its own (none waits in a
        # worker's stack with a slot taken); the calling worker keeps the most critical.
        first = 0
        if stack is not None:
            stack.append(startable[0])
            first = 1
        for d in startable[first:]:
            spawn(run, [d])
    elif stack is not None:
        stack.extend(reversed(startable))
    else:
        spawn(run, startable[::-1])


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
            st.held.append(i)  # it keeps the slot until the async_=False step ends
        else:
            st.status[i] = QUEUED
            spawn(run, [i])


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


def spawn(run: Run, stack: list[int], first: Awaitable[None] | None = None) -> None:
    """A new worker task for `stack` (its top is started first), after `first`."""
    key = next(_keys)
    st = run.st
    for i in stack:
        if run.modes.exclusive[i] and not st.gated[i]:
            st.gated[i] = 1
            st.gate += 1
    st.workers[key] = run.new_task(worker(run, stack, key, first), context=run.base_ctx.copy())


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
                    spawn(run, [j])
            fresh = sorted((j for j in held if not st.holding[j]), key=run.order_key)
            if fresh:
                dispatch(run, fresh, None)


# ---------------------------------------------------------------------- running steps
def run_inline(run: Run, i: int) -> list[int] | None:
    """Run plain-def step `i` here, in its own context; return what its completion made
    ready (None if it did not complete here)."""
    st = run.st
    st.status[i] = RUNNING
    st.attempts[i] = 1
    st.ran += 1
    ctx = run.base_ctx.copy()
    try:
        if run.mw is not None:
            started_event(run, i, ctx)
        value = ctx.run(run.plan.fns[i], *run.plan.fetch[i](st.vals))  # type: ignore[misc]
    except BaseException as exc:
        ended_badly(run, i, exc, ctx, reported=False)
        return None
    if type(value) is NewSteps or isinstance(value, _AWAITABLE):
        spawn(run, [], settle_later(run, i, value, None, ctx, []))
        return None
    if run.mw is not None and not completed_event(run, i, value, ctx):
        return None
    return record(run, i, value, None)


async def worker(
    run: Run, stack: list[int], key: int, first: Awaitable[None] | None = None
) -> None:
    """A worker task: start the steps of `stack` one after another, the top first.

    Each step runs in a fresh copy of the run's context. Most finish without suspending
    (`run_fast` starts them); one that suspends keeps this worker, which first hands the
    rest of `stack` to a new one (a step is driven to its end by the task that started
    it: what ``asyncio.current_task()``, ``asyncio.timeout`` and ``TaskGroup`` inside a
    step rely on). What a completion makes ready goes onto `stack`, the most critical on
    top. `first`: a step to finish before (one that an inline step left to await).
    """
    st = run.st
    try:
        if first is not None:
            await first
        while True:
            rest = run_fast(run, stack)
            if rest is None:  # nothing left, or the run stops (the finally puts back)
                return
            if rest is _TURN:
                await asyncio.sleep(0)  # a long batch or chain still lets others run
            else:
                await rest
    except asyncio.CancelledError:
        if not st.stopping:  # only the run cancels its workers between steps
            fatal(run, -1, asyncio.CancelledError())
    except BaseException as exc:  # a bug of ours, or an interrupt: never a hang
        fatal(run, -1, exc)
    finally:
        for j in stack:
            put_back(run, j)
        del st.workers[key]
        run.maybe_wake()


_TURN: Final = object()  # `run_fast`: the worker should let the event loop run once


def run_fast(run: Run, stack: list[int]) -> Any:
    """Start the steps on top of `stack` one after another, while each finishes without
    suspending; return what the worker must await next (a step that needs more), `_TURN`
    to let the loop run, or None when the stack is empty or the run stops.

    The one hand-inlined hot path. For each step it does what `run_one` followed by
    `finish` does, with `inline.start` inlined, and for a step with nothing to record but
    its value (no undo, no children, no gate, not observed), `record` and `dispatch`
    inlined too (a chain's next step goes straight onto `stack`). Steps run through their
    attempts, and one that suspends, returns new steps, or fails a ``TRY`` call, go on in
    the awaitable returned. `tests/test_equivalence.py` compares runs of both paths.
    """
    st = run.st
    status, vals, remaining, holding = st.status, st.vals, st.remaining, st.holding
    fns, fetch, is_async, quick, slow = run.fns, run.fetch, run.is_async, run.quick, run.slow
    ready_order, chainable, base, mw = run.ready_order, run.chainable, run.base_ctx, run.mw
    ran = 0  # steps started here; `st.ran` counts those run inline by `dispatch` too
    turn = st.ran + YIELD_EVERY
    while stack:
        ran += 1
        if st.ran + ran > turn:
            st.ran += ran
            return _TURN
        i = stack.pop()
        if st.stopping:
            stack.append(i)
            break
        if st.gate and not st.gated[i]:  # an async_=False step runs: wait for its end
            status[i] = PENDING
            st.held.append(i)
            continue
        if slow[i]:
            return run_one(run, i, stack)
        status[i] = RUNNING
        st.attempts[i] = 1
        ctx = base.copy()
        if holding[i]:
            ctx.run(run.lend_slot, i)
        try:
            if mw is not None:
                started_event(run, i, ctx)
            if is_async[i]:
                coro = fns[i](*fetch[i](vals))  # type: ignore[misc]
                try:
                    yielded = ctx.run(coro.send, None)
                except StopIteration as stop:
                    out = stop.value
                else:
                    return suspended(run, i, coro, ctx, yielded, stack, via_attempts=False)
                if type(out) is NewSteps:
                    return settle_later(run, i, out, None, ctx, stack)
            else:
                out = ctx.run(fns[i], *fetch[i](vals))  # type: ignore[misc]
                if type(out) is NewSteps or isinstance(out, _AWAITABLE):
                    return settle_later(run, i, out, None, ctx, stack)
        except BaseException as exc:
            if run.modes.mode[i] == TRY and retried(exc):
                return suspended(
                    run, i, attempts(run, i, exc), ctx, _FIRST, stack, via_attempts=True
                )
            ended_badly(run, i, exc, ctx, reported=False)
            end_slot(run, i, stack)
            continue
        if mw is not None or not quick[i] or run.kept or holding[i]:
            finish(run, i, out, None, ctx, stack, reported=False)
            continue
        # What `finish` does for a step with nothing to record but its value.
        status[i] = DONE
        vals[i] = out
        st.n_done += 1
        if run.releasing:
            release(run, i)
        if st.n_done == run.n:
            run.maybe_wake()
        dependents = ready_order[i]
        if not dependents or st.stopping:
            continue
        if len(dependents) == 1:  # a chain: its next step, if ready, goes next
            d = dependents[0]
            remaining[d] -= 1
            if not remaining[d] and status[d] == PENDING:
                if chainable[d] and not st.gate:
                    status[d] = QUEUED
                    stack.append(d)
                else:
                    dispatch(run, [d], stack)
            continue
        ready = []  # most critical first; those `dispatch` decides about
        queued = []  # what `dispatch` does with chainable steps: onto this stack
        gate = st.gate
        for d in dependents:
            remaining[d] -= 1
            if not remaining[d] and status[d] == PENDING:
                if chainable[d] and not gate:
                    status[d] = QUEUED
                    queued.append(d)
                else:
                    ready.append(d)
        if ready:
            dispatch(run, ready, stack)
        if queued:
            queued.reverse()
            stack.extend(queued)
    return None


_FIRST: Final = object()  # for `suspended`: the coroutine has not been started yet


async def run_one(run: Run, i: int, stack: list[int]) -> None:
    """Start step `i` (any mode) and drive it to its end."""
    st = run.st
    st.status[i] = RUNNING
    ctx = run.base_ctx.copy()
    if st.holding[i]:
        ctx.run(run.lend_slot, i)
    via_attempts = run.modes.mode[i] == ATTEMPTS
    coro: Coroutine[Any, Any, Any]
    if via_attempts:
        coro = attempts(run, i)
    else:
        st.attempts[i] = 1
        coro = run.call(i)
    if run.modes.outer[i]:
        coro = run.outer_slot(i, coro)
    await suspended(run, i, coro, ctx, _FIRST, stack, via_attempts=via_attempts)


async def suspended(
    run: Run,
    i: int,
    coro: Coroutine[Any, Any, Any],
    ctx: contextvars.Context,
    yielded: Any,
    stack: list[int],
    *,
    via_attempts: bool,
) -> None:
    """Drive step `i`'s coroutine to its end from this worker (the rest of `stack` goes
    to a new worker first, if it suspends), then settle it. `via_attempts`: the coroutine
    is `attempts` (it returns the value with the arguments, and reports its own events)."""
    if yielded is not _FIRST and stack:
        spawn(run, stack[:])
        stack.clear()
    try:
        if yielded is _FIRST:
            out = start(coro, ctx)
            if type(out) is SUSPENDED:
                if stack:
                    spawn(run, stack[:])
                    stack.clear()
                out = await InContext(coro, ctx, out.yielded)
        else:
            out = await InContext(coro, ctx, yielded)
    except BaseException as exc:
        if not via_attempts and run.modes.mode[i] == TRY and retried(exc):
            await suspended(run, i, attempts(run, i, exc), ctx, _FIRST, stack, via_attempts=True)
            return
        ended_badly(run, i, exc, ctx, reported=via_attempts or run.observed)
        end_slot(run, i, stack)
        return
    value, arguments = out if via_attempts else (out, None)
    await settle_later(run, i, value, arguments, ctx, stack)


async def settle_later(
    run: Run,
    i: int,
    value: Any,
    arguments: dict[str, Any] | None,
    ctx: contextvars.Context,
    stack: list[int],
) -> None:
    """Step `i` returned `value`: new steps to run first, or an awaitable to await (from
    a plain def), or its result. With async hooks, its completion is reported here. Then
    `finish` it."""
    if type(value) is NewSteps or isinstance(value, _AWAITABLE):
        if stack:
            spawn(run, stack[:])
            stack.clear()
        end_slot(run, i, None)  # no slot is held while new steps wait for slots
        try:
            if type(value) is NewSteps:
                value = await drive(run.new_steps(i, value), ctx)
            else:
                value = await drive(_awaited(value), ctx)  # type: ignore[arg-type]
        except BaseException as exc:
            ended_badly(run, i, exc, ctx, reported=run.observed)
            return
    if run.observed and value is not SKIPPED:
        failed = await drive(run.completed_async(i, value), ctx)
        if failed is not None:
            ended_badly(run, i, failed, ctx, reported=True)
            end_slot(run, i, stack)
            return
    finish(run, i, value, arguments, ctx, stack, reported=run.observed)


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    """An awaitable a plain def returned, as a coroutine (to drive in the step's context)."""
    return await awaitable


async def drive(coro: Coroutine[Any, Any, Any], ctx: contextvars.Context) -> Any:
    """Await `coro` with each of its steps inside `ctx`."""
    out = start(coro, ctx)
    if type(out) is SUSPENDED:
        out = await InContext(coro, ctx, out.yielded)
    return out


def finish(
    run: Run,
    i: int,
    value: Any,
    arguments: dict[str, Any] | None,
    ctx: contextvars.Context,
    stack: list[int],
    *,
    reported: bool,
) -> None:
    """Step `i` completed with `value`: tell middleware (unless `reported`), record it,
    start what became ready, and give back its slot."""
    if value is SKIPPED:
        ready = record(run, i, None, None, undoable=False)
    elif not reported and run.mw is not None and not completed_event(run, i, value, ctx):
        end_slot(run, i, stack)
        return
    else:
        ready = record(run, i, value, arguments)
    ungate(run, i)
    if ready:
        dispatch(run, ready, stack)
    end_slot(run, i, stack)


def retried(exc: BaseException) -> bool:
    """Whether a ``TRY`` step's failed first call goes on to its attempts (retry,
    compensate): errors do; halts, cancellation and interrupts do not."""
    return isinstance(exc, Exception) and as_halt(exc) is None


# ---------------------------------------------------------------------- endings
def record(
    run: Run, i: int, value: Any, arguments: dict[str, Any] | None, *, undoable: bool = True
) -> list[int]:
    """Step `i` completed with `value`: store it, push its undo (and its children's, for a
    composite), release results no remaining step reads, and count down its dependents.

    Returns the dependents that became ready, most critical first (none once stopping).
    """
    st = run.st
    st.status[i] = DONE
    vals = st.vals
    vals[i] = value
    st.n_done += 1
    plan = run.plan
    if undoable and run.modes.undo[i]:
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


def complete(
    run: Run, i: int, value: Any, arguments: dict[str, Any] | None, stack: list[int] | None
) -> None:
    """Step `i` completed: `record` it, then `dispatch` what became ready."""
    ready = record(run, i, value, arguments)
    if ready:
        dispatch(run, ready, stack)


def ended_badly(
    run: Run, i: int, exc: BaseException, ctx: contextvars.Context, *, reported: bool
) -> None:
    """Step `i` raised `exc` (`reported`: its attempts told middleware already)."""
    ungate(run, i)
    st = run.st
    if isinstance(exc, StepFailed):
        fail(run, i, exc.error, exc.attempt, noted=True)
    elif isinstance(exc, Pending):
        st.status[i] = PENDING
    elif isinstance(exc, CompletedThenCancelled):
        complete(run, i, exc.value, exc.arguments, None)
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


def fail(run: Run, i: int, error: BaseException, attempt: int, *, noted: bool = False) -> None:
    """Step `i`'s `error` stands: the run stops, and undoes what it did."""
    st = run.st
    st.status[i] = PENDING
    if st.halt_reason is not _UNSET and not st.errors:
        return  # halting: a step that fails while the run drains stays pending
    if not noted:
        annotate(error, f"reactorpy: step {run.names[i]!r} failed (attempt {attempt})")
    if run.kept:  # a composite's children completed, then the step failed: undone too
        run.ledger.splice(run.kept.pop(i, ()))
    st.errors.append(error)
    st.failed_steps.append(run.names[i])
    stop(run)


def fatal(run: Run, i: int, error: BaseException) -> None:
    """A `BaseException` that is not an error (KeyboardInterrupt, ...) ends the run; it is
    re-raised as it is, after undo. `i` is -1 when no step raised it."""
    st = run.st
    if i >= 0 and st.status[i] != DONE:
        st.status[i] = PENDING
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
    if st.halt_reason is _UNSET:
        st.halt_reason = h.reason
        st.halt_step = run.names[i]
    stop(run)


def stop(run: Run) -> None:
    """Nothing new starts: queued waiters leave the limiter, held steps give their slots
    back, steps waiting to retry stop waiting; the run's coordinator is woken."""
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
    run.wake()


# ---------------------------------------------------------------------- events
def started_event(run: Run, i: int, ctx: contextvars.Context) -> None:
    """``step_start`` of a step called directly, delivered in its context (sync hooks:
    a run with async hooks drives such steps through `Run.observed`).

    Raises:
        StepFailed: a hook raised (the step fails with that error).
    """
    mw = run.mw
    if mw is not None and mw.wants("step_start"):
        event = make_event("step_start", run.names[i], 1, run.clock(), None, None, run.run_id,
                           len(run.st.workers))  # fmt: skip
        failed = ctx.run(mw.send, event)
        if failed is not None:
            annotate(failed, f"reactorpy: middleware failed on step_start of step {run.names[i]!r}")
            raise StepFailed(failed, 1)


def completed_event(run: Run, i: int, value: Any, ctx: contextvars.Context) -> bool:
    """``step_complete`` of step `i`; a hook that raises fails the step instead (returns
    False)."""
    mw = run.mw
    assert mw is not None
    if not mw.wants("step_complete"):
        return True
    st = run.st
    event = make_event("step_complete", run.names[i], st.attempts[i] or 1, run.clock(), value,
                       None, run.run_id, len(st.workers))  # fmt: skip
    failed = ctx.run(mw.send, event)
    if failed is None:
        return True
    annotate(failed, f"reactorpy: middleware failed on step_complete of step {run.names[i]!r}")
    ungate(run, i)
    failed_event(run, i, "step_error", None, failed, ctx)
    fail(run, i, failed, st.attempts[i] or 1, noted=True)
    return False


def failed_event(
    run: Run,
    i: int,
    kind: str,
    value: Any,
    error: BaseException | None,
    ctx: contextvars.Context,
) -> None:
    """``step_error`` or ``step_halt`` of a step called directly. A hook failing here is
    reported with the run's errors (the step has failed already)."""
    mw = run.mw
    if mw is None or not mw.wants(kind):
        return
    st = run.st
    event = make_event(kind, run.names[i], st.attempts[i] or 1, run.clock(), value, error,
                       run.run_id, len(st.workers))  # fmt: skip
    failed = ctx.run(mw.send, event)
    if failed is not None:
        annotate(failed, f"reactorpy: middleware failed on {kind} of step {run.names[i]!r}")
        st.hook_errors.append(failed)
