"""The scheduler: workers, and what they do with each step they start.

Owns: `spawn` (a new worker task), `worker` (starts queued steps one after another and
drives the one that suspends), `run_fast` (the hot path), `run_one`, `suspended`,
`settle_later` and `finish` (a step completed: tell middleware, record it, dispatch what
became ready, give its slot back), and `resume_inside` (on resume, a step whose new steps
halted continues them instead of being called again).
Must not import: the composites, the CLI.

Rules every path keeps (the saga promise):
- A step ends exactly one way (`endings`): completed, failed, halted, interrupted or back
  to pending, and its slot is given back on every one of them.
- Nothing a worker does can escape it: an error in an error, cancel or event path is
  recorded as an error of the run, and a worker that ends always wakes the run if it was
  the last one (`worker`'s ``finally``).
- No slot is held while its holder waits for work that needs a slot: a step that returns
  `rp.NewSteps` gives its slot back before its new steps run; a nested ``run()`` of a
  step borrows the step's slot (`slots`).
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
from collections.abc import Awaitable, Coroutine
from typing import TYPE_CHECKING, Any, Final

from .._checkpoint import UndoRecord
from .._errors import _UNSET
from .._step import NewSteps, Skip
from .attempts import SKIPPED, StepFailed, as_halt, attempts, shielded
from .dispatch import AWAITABLE, YIELD_EVERY, dispatch
from .endings import end_slot, ended_badly, fatal, hold_back, put_back, record, release, ungate
from .inflight import NewStepsHalted
from .inline import SUSPENDED, InContext, start
from .modes import ATTEMPTS, TRY
from .observe import completed_event, started_async, started_event
from .saga import own_record, owns, push_own
from .slots import outer_slot
from .state import DONE, PENDING, QUEUED, RUNNING

if TYPE_CHECKING:
    from .run import Run

__all__ = [
    "finish",
    "resume_inside",
    "run_fast",
    "run_one",
    "settle_later",
    "spawn",
    "suspended",
    "worker",
]

_keys = itertools.count()
_AWAITABLE = AWAITABLE


def spawn(run: Run, stack: list[int], first: Awaitable[None] | None = None) -> None:
    """A new worker task for `stack` (its top is started first), after `first`."""
    key = next(_keys)
    st = run.st
    for i in stack:
        if run.modes.exclusive[i] and not st.gated[i]:
            st.gated[i] = 1
            st.gate += 1
    st.workers[key] = run.new_task(worker(run, stack, key, first), context=run.base_ctx.copy())


async def worker(
    run: Run, stack: list[int], key: int, first: Awaitable[None] | None = None
) -> None:
    """A worker task: start the steps of `stack` one after another, the top first.

    Each step runs in a fresh copy of the run's context. Most finish without suspending
    (`run_fast` starts them); one that suspends keeps this worker, which first hands the
    rest of `stack` to a new one (a step is driven to its end by the task that started
    it: what ``asyncio.current_task()``, ``asyncio.timeout`` and ``TaskGroup`` inside a
    step rely on). What a completion makes ready goes onto `stack`, the most critical on
    top. `first`: a step to finish before (one that an inline step left to await). In a
    journaled run, what a pass completes goes to the journal in one request, and a worker
    with nothing left waits for the last write that made steps ready and starts them
    (`Durable.wait_for_write`).
    """
    st = run.st
    try:
        if first is not None:
            await first
        durable = run.durable
        while True:
            if durable is None:
                rest = run_fast(run, stack)
            else:
                st.batch = durable.new_write(run)  # (what this pass completes: one request)
                try:
                    rest = run_fast(run, stack)
                finally:
                    durable.flush(run)
            if rest is None:  # nothing left, or the run stops (the finally puts back)
                if durable is None or st.handoff is None or st.stopping:
                    return
                rest = durable.wait_for_write(run, stack)  # a journaled run's next steps
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
    """Start the steps on top of `stack` while each finishes without suspending; return
    what the worker must await next, `_TURN` (let the loop run) or None (nothing left).

    The one hand-inlined hot path: per step, what `run_one` then `finish` do, with
    `inline.start`, `record` and `dispatch` inlined for a step with nothing to record but
    its value. Anything else goes on in the awaitable returned (`test_equivalence.py`)."""
    st = run.st
    status, vals, remaining, holding = st.status, st.vals, st.remaining, st.holding
    fns, fetch, is_async, quick, slow = run.fns, run.fetch, run.is_async, run.quick, run.slow
    ready_order, chainable, base = run.ready_order, run.chainable, run.base_ctx
    undo = run.modes.undo
    wants_start, wants_complete = run.wants_start, run.wants_complete
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
            hold_back(run, i)
            continue
        if slow[i]:
            return run_one(run, i, stack)
        status[i] = RUNNING
        st.attempts[i] = 1
        ctx = base.copy()
        if holding[i]:
            ctx.run(run.lend_slot, i)
        try:
            if wants_start:
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
        if wants_complete:
            failed = completed_event(run, i, out, ctx)
            if failed is not None:
                ended_badly(run, i, StepFailed(failed, 1), ctx, reported=True)
                end_slot(run, i, stack)
                continue
        if not quick[i] or run.kept or holding[i]:
            finish(run, i, out, None, ctx, stack, reported=True)
            continue
        # What `finish` does for a step with nothing to record but its value (and, if it
        # has an undo, its argument values: named only if the undo runs).
        status[i] = DONE
        if undo[i]:
            run.ledger.push((i, out, fetch[i](vals)))  # type: ignore[misc]
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
        _count_down(run, dependents, stack)
    return None


def _count_down(run: Run, dependents: tuple[int, ...], stack: list[int]) -> None:
    """`run_fast`'s `dispatch` of the dependents of a step that completed: count each
    down; the ready ones that need no decision (no slot, not inline, no gate) go onto
    `stack` as `dispatch` would put them, the others through `dispatch`."""
    st = run.st
    remaining, status, chainable = st.remaining, st.status, run.chainable
    ready = []  # most critical first; those `dispatch` decides about
    queued = []
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
        coro = outer_slot(run, i, coro)
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
    *,
    own: Any = _UNSET,
) -> None:
    """Step `i` returned `value`: new steps to run first (its place in a journal taken
    now), or an awaitable to await (from a plain def), or its result. With async hooks,
    its completion is reported here. Then `finish` it. `own`: its own undo record if on
    the stack already, else None (`push_own`, done here if not given)."""
    pushed: UndoRecord | None = None
    seq: int | None = None
    if type(value) is NewSteps or isinstance(value, _AWAITABLE):
        if stack:
            spawn(run, stack[:])
            stack.clear()
        if run.async_ or type(value) is not NewSteps:
            end_slot(run, i, None)  # no slot is held while new steps wait for slots
        # (one step at a time, it keeps the run's one slot while its new steps run on one
        # of their own: nothing else of the run runs meanwhile)
        pushed = push_own(run, i, value, arguments) if own is _UNSET else own
        if run.durable is not None and type(value) is NewSteps:
            seq = run.durable.reserve()  # (its completion's place: before its new steps)
            if pushed is not None:
                run.durable.returned(run, i, pushed, seq)
        try:
            if type(value) is NewSteps:
                value = await drive(run.new_steps(i, value), ctx)
            else:
                value = await drive(_awaited(value), ctx)  # type: ignore[arg-type]
        except BaseException as exc:
            if pushed is not None and _runs_again(run, i, exc):
                exc = await _undo_own(run, i, exc)
            ended_badly(run, i, exc, ctx, reported=run.observed)
            return
    if run.observed and value is not SKIPPED and type(value) is not Skip:
        try:
            failed = await drive(run.completed_async(i, value), ctx)
        except asyncio.CancelledError:  # it completed all the same: nothing is lost
            finish(run, i, value, arguments, ctx, stack, reported=True, pushed=pushed, seq=seq)
            raise
        if failed is not None:
            ended_badly(run, i, failed, ctx, reported=True)
            end_slot(run, i, stack)
            return
    finish(run, i, value, arguments, ctx, stack, reported=run.observed, pushed=pushed, seq=seq)


def _runs_again(run: Run, i: int, exc: BaseException) -> bool:
    """Whether step `i`, whose new steps ended with `exc`, runs again on resume: it stays
    pending (it halted, or failed or was cancelled while the run halts) and its new steps
    were not kept inside it to continue (`ChildScope.halted_inside`), as under a journal
    that writes JSON."""
    if run.plan.order[i] in run.inner:
        return False
    if (h := as_halt(exc)) is not None:
        return h.result is _UNSET
    return isinstance(exc, Exception | asyncio.CancelledError) and run.st.halting


async def _undo_own(run: Run, i: int, ending: BaseException) -> BaseException:
    """Step `i` runs again on resume (`_runs_again`), and its new steps undid what they
    completed: its own work is undone now too. Returns `ending`, or what undoing raised."""
    own = own_record(run, i)
    if own is None:
        return ending  # the run undid it already
    entries = run.ledger.entries
    del entries[max(k for k, e in enumerate(entries) if e is own)]
    errors, cancelled = await shielded(run.undoer.undo_all([own]))
    if cancelled:
        return asyncio.CancelledError()
    return errors[0] if errors else ending


def resume_inside(run: Run, ready: list[int]) -> list[int]:
    """A resumed run: the ready steps that halted while their new steps ran continue those
    (their functions are not called again: `settle_later` runs the new steps kept in the
    checkpoint), each in a worker of its own. Returns the other ready steps."""
    if not run.inner:
        return ready
    st = run.st
    rest = []
    for i in ready:
        inner = run.inner.get(run.plan.order[i])
        if not isinstance(inner, NewStepsHalted):
            rest.append(i)
            continue
        st.status[i] = RUNNING
        if run.modes.exclusive[i] and not st.gated[i]:  # as when it first ran
            st.gated[i] = 1
            st.gate += 1
        stack: list[int] = []
        spawn(run, stack, _continued(run, i, inner.new, stack))
    return rest


async def _continued(run: Run, i: int, new: NewSteps, stack: list[int]) -> None:
    """Step `i` continues its new steps `new` (`resume_inside`): its start is reported,
    then it goes on as when it returned them. If the resumed run stopped first, it stays
    as it halted (its new steps kept in `Run.inner`, their records held)."""
    ctx = run.base_ctx.copy()
    try:
        if run.observed and not run.st.stopping:
            await drive(started_async(run, i), ctx)
        elif run.wants_start and not run.st.stopping:
            started_event(run, i, ctx)
    except StepFailed as failed:
        ended_badly(run, i, failed, ctx, reported=True)
        return
    if not run.async_ and run.limiter is not None and not run.st.stopping:
        # One step at a time: it holds the run's one slot while its new steps run.
        await run.limiter.acquire(run.plan.steps[i].concurrency_key, run.priority[i])
        run.st.holding[i] = 1
    if run.st.stopping:  # checked after the last await: the new steps take over at once
        put_back(run, i)
        return
    own = own_record(run, i) if owns(run, i, new) else None  # (pushed before the halt)
    await settle_later(run, i, new, None, ctx, stack, own=own)


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
    pushed: UndoRecord | None = None,
    seq: int | None = None,
) -> None:
    """Step `i` completed with `value`: tell middleware (unless `reported`), record it
    (its undo too, unless `pushed`; `seq`: its place reserved in the journal), start what
    became ready, give back its slot."""
    if value is SKIPPED or type(value) is Skip:  # a guard said no: never undone
        skipped = value.value if type(value) is Skip else None
        ready = record(run, i, skipped, None, undoable=False)
    else:
        if not reported and run.wants_complete:
            failed = completed_event(run, i, value, ctx)
            if failed is not None:
                ended_badly(run, i, StepFailed(failed, run.st.attempts[i] or 1), ctx, reported=True)
                end_slot(run, i, stack)
                return
        ready = record(run, i, value, arguments, pushed=pushed, seq=seq)
    ungate(run, i)
    if ready:
        dispatch(run, ready, stack)
    end_slot(run, i, stack)


def retried(exc: BaseException) -> bool:
    """Whether a ``TRY`` step's failed first call goes on to its attempts (retry,
    compensate): errors do; halts, cancellation and interrupts do not."""
    return isinstance(exc, Exception) and as_halt(exc) is None
