"""A step's attempts: guard, arguments, the call, retries, backoff, timeout, compensation.

Owns: `attempts`, the coroutine a worker drives for every step that is not called directly
(options, composites, paths and transforms, executors), and the rules of what happens to
a step's error, in order (README, "When things go wrong"): an `rp.Retry` or an error
matching ``retry_on`` is retried while attempts remain; otherwise compensate decides
(``None``: the error stands; ``rp.Continue(v)``: the step succeeds with ``v``; ``rp.Retry``:
another attempt); when attempts run out the last error stands. A group of exceptions
(a ``TaskGroup`` inside a step) made only of `Halt` halts, made only of `Retry` retries;
``retry_on`` matches a group the way ``except*`` does (every member matches).
Must not import: the scheduler, the composites.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from .._arguments import Context, dig
from .._errors import _UNSET, Halt, Retry, annotate
from .._events import make_event
from .._offload import OffloadError, submit
from .._step import Continue, NewSteps, Skip

if TYPE_CHECKING:
    from .run import Run

__all__ = [
    "SKIPPED",
    "CompletedThenCancelled",
    "Pending",
    "StepFailed",
    "as_halt",
    "attempts",
    "reported_halt",
    "standing_error",
]


class _SkippedType:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<skipped>"


SKIPPED: Final = _SkippedType()  # what a step whose guard said no returns (else a `Skip`)


class StepFailed(Exception):
    """Internal: the standing error of a step after its attempts (`note`: how the run
    annotates it, when it says more than the attempt)."""

    def __init__(self, error: BaseException, attempt: int, note: str | None = None) -> None:
        self.error = error
        self.attempt = attempt
        self.note = note


class Pending(Exception):
    """Internal: the run stopped while the step waited to retry; it stays pending."""


class CompletedThenCancelled(Exception):
    """Internal: compensate gave the step a value (`rp.Continue`), or the step halted with
    a result, and the step's task was cancelled before the run heard of it. The step
    completed (it is recorded, and undone with the rest); then the cancellation goes on."""

    def __init__(self, value: Any, arguments: dict[str, Any] | None) -> None:
        self.value = value
        self.arguments = arguments


def as_halt(exc: BaseException) -> Halt | None:
    """`exc` as a halt: a `Halt`, or a group made only of halts (the first one counts)."""
    if isinstance(exc, Halt):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        match, rest = exc.split(Halt)
        if rest is None and match is not None:
            return _first(match)  # type: ignore[return-value]
    return None


async def reported_halt(halt: Halt, event: Awaitable[None]) -> None:
    """Deliver `event`, the ``step_halt`` of `halt`, before the halt goes to the run.

    Raises:
        CompletedThenCancelled: the step's task was cancelled meanwhile (the run stops and
            cancels its steps: a timeout, another step's error, ``run()`` cancelled) and
            the step halted with a result: it completed all the same, and is undone with
            the rest. A halt without a result lets the cancellation go on.
    """
    try:
        await event
    except asyncio.CancelledError:
        if halt.result is _UNSET:
            raise
        raise CompletedThenCancelled(halt.result, halt._arguments) from None


def _as_retry(exc: BaseException) -> Retry | None:
    """`exc` as a retry request: a `Retry`, or a group made only of them."""
    if isinstance(exc, Retry):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        match, rest = exc.split(Retry)
        if rest is None and match is not None:
            return _first(match)  # type: ignore[return-value]
    return None


def _first(group: BaseException) -> BaseException:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group


def _matches(exc: BaseException, retry_on: tuple[type[BaseException], ...]) -> bool:
    """Whether ``retry_on`` matches `exc` (a group: every member, as ``except*`` would
    leave nothing over)."""
    if not retry_on or isinstance(exc, OffloadError):  # it would fail the same way again
        return False
    if isinstance(exc, BaseExceptionGroup):
        match, rest = exc.split(retry_on)
        return rest is None and match is not None
    return isinstance(exc, retry_on)


def standing_error(exc: BaseException) -> BaseException:
    """The error that stands for `exc` when no attempt is left: an exhausted `rp.Retry`
    stands for its cause (or its reason, if that is an exception)."""
    retry = _as_retry(exc)
    if retry is None:
        return exc
    if retry.__cause__ is not None:
        return retry.__cause__
    if isinstance(retry.reason, BaseException):
        return retry.reason
    return retry


async def attempts(
    run: Run, i: int, failed: BaseException | None = None
) -> tuple[Any, dict[str, Any] | None]:
    """Run step `i` with its options; return its value and its arguments by name (when a
    callback needed them, so undo does not resolve them again), or `SKIPPED` (or the
    guard's `rp.Skip`) with them.

    Args:
        failed: what a first attempt made by the worker itself raised (a ``TRY`` step),
            handled as if this attempt had raised it.

    Raises:
        StepFailed: the standing error. Halt: the step halted. Pending: the run stopped
        during a backoff. CompletedThenCancelled: see there.
    """
    step = run.plan.steps[i]
    st = run.st
    first = st.attempts[i] - (failed is not None)
    arguments: dict[str, Any] | None = None
    guarded = False  # the guard's arguments serve the first attempt (transforms run once)
    if step.when is not None:
        arguments = run.named_args(i, first + 1)
        ok = step.when.fn(**step.when.kwargs(arguments, _context(run, i, first + 1)))
        if inspect.isawaitable(ok):
            ok = await ok
        if isinstance(ok, Skip):
            await _event(run, "guard_skip", i, 0, value=ok.value)
            return ok, arguments
        if not ok:
            await _event(run, "guard_skip", i, 0)
            return SKIPPED, arguments
        guarded = True
    attempt = first
    while True:
        attempt += 1
        st.attempts[i] = attempt
        await _event(run, "step_start", i, attempt)
        called = True  # False while the arguments resolve: a step that never ran
        try:
            if failed is not None:
                exc, failed = failed, None
                raise exc
            if not guarded:  # the guard's arguments serve the attempt right after it
                called = False
                arguments = _arguments(run, i, step, attempt)
                called = True
            guarded = False
            value = await _call(run, i, step, attempt, arguments)
        except Exception as exc:
            halt = as_halt(exc)
            if halt is not None:
                if arguments and halt._arguments is None:
                    halt._arguments = arguments
                await reported_halt(halt, _event(run, "step_halt", i, attempt, value=halt.reason))
                raise halt  # noqa: B904 - the halt itself, not a new error
            retry = _as_retry(exc)
            # (never a child run whose undo failed: it would run again over what it left)
            left = i in run.st.left
            retryable = (retry is not None or _matches(exc, step.retry_on)) and not left
            if retryable and attempt - first <= step.retries:
                delay = _delay(step, attempt - first, retry, exc)
                await _event(run, "step_retry", i, attempt, value=delay, error=exc)
                await _pause(run, delay)
                continue
            error = standing_error(exc)
            await _event(run, "step_error", i, attempt, error=error)
            if called and step.compensate_callback is not None:
                if arguments is None:
                    arguments = run.named_args(i, attempt)
                out = await _compensate(run, i, attempt, error, arguments)
                if isinstance(out, Retry):
                    if attempt - first <= step.retries and not left:
                        delay = _delay(step, attempt - first, out, error)
                        await _event(run, "compensate_retry", i, attempt, value=delay, error=out)
                        await _pause(run, delay)
                        continue
                    await _event(run, "compensate_complete", i, attempt, error=error)
                elif isinstance(out, Continue):
                    return out.value, arguments
            note = None
            if retryable or attempt - first > 1:
                note = (
                    f"reactorpy: step {run.names[i]!r} failed (attempt {attempt}, "
                    f"after {attempt - first} attempts)"
                )
            raise StepFailed(error, attempt, note) from None
        return value, arguments


def _arguments(run: Run, i: int, step: Any, attempt: int) -> dict[str, Any] | None:
    """Resolve step `i`'s arguments by name for this attempt, when something keeps them:
    a composite (its children get them), or a callback of a step whose arguments have
    paths or transforms (resolved once, not again when undo runs). None otherwise: the
    call resolves them itself."""
    if step.composite or run.keeps_arguments[i]:
        return run.named_args(i, attempt)
    return None


async def _compensate(
    run: Run, i: int, attempt: int, error: BaseException, arguments: dict[str, Any]
) -> Any:
    """Call compensate with the standing `error`: its `rp.Continue`, its `rp.Retry`
    (another attempt), or None (the error stands).

    It runs to its end even if the step's task is cancelled meanwhile (the cancellation is
    delivered after it); a `rp.Continue` that arrives that way still completes the step.

    Raises:
        StepFailed: compensate itself raised (that error stands).
        CompletedThenCancelled: a `rp.Continue` arrived during a cancellation.
    """
    compensate = run.plan.steps[i].compensate_callback
    assert compensate is not None
    await _event(run, "compensate_start", i, attempt, error=error)

    cancelled = False
    try:
        out = compensate.fn(error, **compensate.kwargs(arguments, _context(run, i, attempt)))
        if inspect.isawaitable(out):
            out, cancelled = await shielded(out)
    except Retry as retry:
        return retry
    except Exception as cexc:
        if cexc.__context__ is None:  # raised in a task of its own (shielded)
            cexc.__context__ = error
        await _event(run, "compensate_error", i, attempt, error=cexc)
        raise StepFailed(cexc, attempt) from None
    if isinstance(out, Continue):
        try:
            await _event(run, "compensate_continue", i, attempt, value=out.value)
        except asyncio.CancelledError:  # the step has its value all the same
            cancelled = True
        if cancelled:
            raise CompletedThenCancelled(out.value, arguments)
        return out
    await _event(run, "compensate_complete", i, attempt, error=error)
    if cancelled:
        raise asyncio.CancelledError
    return None


async def shielded(aw: Any) -> tuple[Any, bool]:
    """Await `aw` to its end even if this task is cancelled meanwhile.

    Returns its result and whether a cancellation arrived (for the caller to go on with
    once it has kept what `aw` did). What `aw` raises, raises here.
    """
    task = asyncio.ensure_future(aw)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            # Also when it lands just as `aw` ends: the caller must still see it.
            cancelled = True
    return task.result(), cancelled


async def _call(run: Run, i: int, step: Any, attempt: int, arguments: dict[str, Any] | None) -> Any:
    """One attempt: call the function (awaited, in an executor, or a composite's child
    runs), within the step's timeout."""
    if step.composite:
        assert arguments is not None
        call: Any = step.call(run.scope(i), arguments)
    else:
        if arguments is not None:
            pos, kw = run.split_args(i, arguments)
        else:
            pos, kw = resolve(run, i, attempt, None)
        executor = step.executor if step.executor is not None else run.default_executor
        if executor is not None and not step.is_async:
            call = _in_executor(run, i, step, executor, pos, kw)
        else:
            call = step.fn(*pos, **kw)
            if not step.is_async and not _is_awaitable(call):
                return call
    if step.timeout is None:
        return await call
    async with asyncio.timeout(step.timeout):
        return await call


def _is_awaitable(value: Any) -> bool:
    return type(value) is not NewSteps and inspect.isawaitable(value)


async def _in_executor(
    run: Run, i: int, step: Any, executor: Any, pos: list[Any], kw: dict[str, Any]
) -> Any:
    future = submit(executor, step, pos, kw, run.names[i])
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        # A timeout or the run's stop cancelled the wait; a call already running in a
        # thread or process cannot be stopped and runs on without us.
        if not future.cancel() and not future.done():
            run.st.abandoned.append(run.names[i])
        raise


def _delay(step: Any, attempt: int, retry: Retry | None, error: BaseException) -> float:
    """The pause before the next attempt: the `rp.Retry`'s delay, else the backoff
    (called with the step's own error, never a `rp.Retry` wrapping it)."""
    if retry is not None and retry.delay is not None:
        return float(retry.delay)
    backoff = step.backoff
    if backoff is None:
        return 0.0
    if callable(backoff):
        return float(backoff(attempt, standing_error(error)))
    return float(backoff)


async def _pause(run: Run, delay: float) -> None:
    """Wait out a backoff, but give up (the step stays pending) if the run stops."""
    if run.st.stopping:
        raise Pending
    if delay > 0:
        await run.until_stopped(delay)
    else:
        await asyncio.sleep(0)
    if run.st.stopping:
        raise Pending


def _context(run: Run, i: int, attempt: int) -> Context:
    return run.context(i, attempt)


async def _event(
    run: Run,
    kind: str,
    i: int,
    attempt: int,
    *,
    value: Any = None,
    error: BaseException | None = None,
) -> None:
    """Deliver an event of step `i` (in the step's context: this coroutine runs there).

    A hook that raises fails the step, as its own error would.
    """
    mw = run.mw
    if mw is None or not mw.wants(kind):
        return
    event = make_event(
        kind, run.names[i], attempt, run.clock(), value, error, run.run_id, len(run.st.workers)
    )
    failed = mw.send(event) if mw.sync_events else await mw.asend(event)
    if failed is not None:
        annotate(failed, f"reactorpy: middleware failed on {kind} of step {run.names[i]!r}")
        raise StepFailed(failed, attempt)


def resolve(
    run: Run, i: int, attempt: int, named: dict[str, Any] | None
) -> tuple[list[Any], dict[str, Any]]:
    """Step `i`'s positional and keyword arguments for `attempt` (paths followed,
    transforms applied); `named`, if given, is filled with them by parameter name."""
    pos: list[Any] = []
    kw: dict[str, Any] = {}
    plan = run.plan
    vals = run.st.vals
    for a in plan.argv[i]:
        if a.source is None:
            v: Any = run.context(i, attempt)
        else:
            v = vals[a.slot]
            if a.path:
                v = dig(v, a.path, plan.order[i], a.param, a.source)
            if a.transform is not None:
                v = _transformed(a.transform, v, plan.order[i], a.param)
        if named is not None:
            named[a.param] = v
        if a.positional:
            pos.append(v)
        else:
            kw[a.param] = v
    return pos, kw


def _transformed(transform: Callable[[Any], Any], value: Any, step: str, param: str) -> Any:
    try:
        return transform(value)
    except Exception as exc:
        annotate(exc, f"reactorpy: the transform of argument {param!r} of step {step!r} raised")
        raise
