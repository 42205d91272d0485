"""Dispatch: how each step that became ready starts.

Owns: `dispatch`, the one function that decides, from the run's dispatch table
(`modes.Modes`), how a ready step starts (inline now, onto a worker's stack, in a worker of
its own, or queued for a limiter slot), and `run_inline`, which runs a plain ``def`` with no
options where it became ready.
Must not import: the scheduler above it (a new worker is `Run.spawn`), the composites.
"""

from __future__ import annotations

import asyncio
import types
from typing import TYPE_CHECKING, Final

from .._step import NewSteps
from .attempts import StepFailed
from .endings import ended_badly, put_back, record, take_slot
from .modes import INLINE
from .observe import completed_event, started_event
from .state import PENDING, QUEUED, RUNNING

if TYPE_CHECKING:
    from .run import Run

__all__ = ["AWAITABLE", "YIELD_EVERY", "dispatch", "run_inline"]

#: A worker, or a run of inline steps, yields to the event loop after this many steps.
YIELD_EVERY: Final = 64

#: What a plain def may return for the run to await (then it is the step's value).
AWAITABLE: Final = (types.CoroutineType, asyncio.Future)


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
            run.spawn([d])
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
            run.spawn([d])
    elif stack is not None:
        stack.extend(reversed(startable))
    else:
        run.spawn(startable[::-1])


def run_inline(run: Run, i: int) -> list[int] | None:
    """Run plain-def step `i` here, in its own context; return what its completion made
    ready (None if it did not complete here)."""
    st = run.st
    st.status[i] = RUNNING
    st.attempts[i] = 1
    st.ran += 1
    ctx = run.base_ctx.copy()
    try:
        if run.wants_start:
            started_event(run, i, ctx)
        value = ctx.run(run.plan.fns[i], *run.plan.fetch[i](st.vals))  # type: ignore[misc]
    except BaseException as exc:
        ended_badly(run, i, exc, ctx, reported=False)
        return None
    if type(value) is NewSteps or isinstance(value, AWAITABLE):
        run.later(i, value, ctx)
        return None
    if run.wants_complete:
        failed = completed_event(run, i, value, ctx)
        if failed is not None:
            ended_badly(run, i, StepFailed(failed, 1), ctx, reported=True)
            return None
    return record(run, i, value, None)
