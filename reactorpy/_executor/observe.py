"""Events of steps called directly: delivered in the step's own context.

Owns: `run_info` (what middleware learns of a run), and ``step_start``, ``step_complete``
and ``step_error``/``step_halt`` of steps a worker or dispatch calls directly (steps run
through their attempts report their own), for sync hooks (`started_event`,
`completed_event`, `failed_event`) and async ones (`called`, `completed_async`). A hook that
raises at a start or a completion fails the step; at a failure, it is reported with the
run's errors.
Must not import: the scheduler, dispatch and endings above it, the composites.
"""

from __future__ import annotations

import contextvars
import types
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._errors import annotate
from .._events import RunInfo, make_event
from .attempts import StepFailed, as_halt, reported_halt, standing_error

if TYPE_CHECKING:
    from .run import Run

__all__ = [
    "called",
    "completed_async",
    "completed_event",
    "failed_event",
    "run_info",
    "started_async",
    "started_event",
]


def started_event(run: Run, i: int, ctx: contextvars.Context) -> None:
    """``step_start`` of a step called directly, delivered in its context, to sync hooks
    (a run with async hooks drives such steps through `called`). Only when
    ``run.wants_start``.

    Raises:
        StepFailed: a hook raised (the step fails with that error).
    """
    mw = run.mw
    assert mw is not None
    event = make_event("step_start", run.names[i], 1, run.clock(), None, None, run.run_id,
                       len(run.st.workers))  # fmt: skip
    try:
        ctx.run(mw.deliver, event)
    except Exception as failed:
        annotate(failed, f"reactorpy: middleware failed on step_start of step {run.names[i]!r}")
        raise StepFailed(failed, 1) from None


def completed_event(run: Run, i: int, value: Any, ctx: contextvars.Context) -> BaseException | None:
    """``step_complete`` of step `i` to sync hooks, in its context; returns what a hook
    raised (the step fails), after reporting that as the step's ``step_error``. Only when
    ``run.wants_complete``."""
    mw = run.mw
    assert mw is not None
    st = run.st
    event = make_event("step_complete", run.names[i], st.attempts[i] or 1, run.clock(), value,
                       None, run.run_id, len(st.workers))  # fmt: skip
    try:
        ctx.run(mw.deliver, event)
    except Exception as failed:
        annotate(failed, f"reactorpy: middleware failed on step_complete of step {run.names[i]!r}")
        failed_event(run, i, "step_error", None, failed, ctx)
        return failed
    return None


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


async def called(run: Run, i: int) -> Any:
    """Step `i` called directly (no options), its events awaited when observed."""
    if run.observed:
        await _event_async(run, "step_start", i, None, None)
    try:
        out = run.plan.fns[i](*run.plan.fetch[i](run.st.vals))  # type: ignore[misc]
        if run.is_async[i]:
            out = await out
    except Exception as exc:
        if run.observed:
            halt = as_halt(exc)
            if halt is not None:
                event = _event_async(run, "step_halt", i, halt.reason, None, fails=False)
                await reported_halt(halt, event)
            else:
                await _event_async(run, "step_error", i, None, standing_error(exc), fails=False)
        raise
    return out


async def started_async(run: Run, i: int) -> None:
    """``step_start`` to async hooks, of a step that goes on without a call (one that
    continues its new steps on resume).

    Raises:
        StepFailed: a hook raised (the step fails with that error).
    """
    await _event_async(run, "step_start", i, None, None)


async def completed_async(run: Run, i: int, value: Any) -> BaseException | None:
    """``step_complete`` to async hooks; returns what a hook raised (the step fails)."""
    try:
        await _event_async(run, "step_complete", i, value, None)
    except StepFailed as failed:
        return failed
    return None


async def _event_async(
    run: Run, kind: str, i: int, value: Any, error: BaseException | None, *, fails: bool = True
) -> None:
    """An event of step `i` to every hook, awaited. A hook that raises fails the step
    (`StepFailed`), or, if the step failed already (not `fails`), is reported with the
    run's errors."""
    mw = run.mw
    if mw is None or not mw.wants(kind):
        return
    st = run.st
    event = make_event(kind, run.names[i], st.attempts[i] or 1, run.clock(), value, error,
                       run.run_id, len(st.workers))  # fmt: skip
    failed = await mw.asend(event)
    if failed is not None:
        annotate(failed, f"reactorpy: middleware failed on {kind} of step {run.names[i]!r}")
        if not fails:
            st.hook_errors.append(failed)
            return
        raise StepFailed(failed, st.attempts[i] or 1)


def run_info(run: Run) -> RunInfo:
    """What middleware learns about `run` (made once, when first asked)."""
    if run.info is None:
        assert run.loop is not None
        plan = run.plan
        run.info = RunInfo(
            reactor=plan.reactor,
            run_id=run.run_id,
            inputs=dict(run.inputs),
            context=run.data,
            parent=run.parent,
            step_names=tuple(run.names),
            critical_path=tuple(run.prefix + name for name in plan.critical_path),
            start=run.loop.time(),
            dependencies=_dependencies(run),
        )
    return run.info


def _dependencies(run: Run) -> Mapping[str, tuple[str, ...]]:
    """Each step's dependencies (and inputs) by name, for RunInfo: the plan's own when
    the names carry no prefix, so a run builds nothing."""
    plan = run.plan
    if not run.prefix:
        return types.MappingProxyType(plan.structure)
    names = dict(zip(plan.order, run.names, strict=True))
    return {
        names[step]: tuple(names.get(d, d) for d in deps) for step, deps in plan.structure.items()
    }
