"""One run of a plan: the coordinator, and what the scheduler asks of a run.

Owns: `Run` (start the ready steps, wait until they are done or the run stops, drain
running steps for ``grace`` seconds, then end: undo and raise `RunFailed`, raise `Halted`
with a checkpoint, or return the result), its answer to outside cancellation, the undo of
a checkpoint (`Reactor.undo`), and the child runs of composite steps (`child`).
Must not import: the composites (they reach a run through `ChildScope`), the CLI.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import itertools
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from .._arguments import Context
from .._checkpoint import Checkpoint, UndoRecord
from .._errors import _UNSET, Halted, annotate
from .._events import Middleware, RunInfo
from .._limiter import Limiter
from .attempts import resolve, shielded
from .dispatch import dispatch
from .durable import Durable, restore_recovered, to_undo, undo_requested
from .endings import drain, fatal, halts_instead, recorded, run_failed, stop, stop_workers
from .inputs import check_inputs
from .modes import Modes, modes_of
from .observe import called, completed_async, run_info
from .resume import finished_checkpoint, make_checkpoint, restore, resumable, revert
from .saga import Undoer, UndoLedger, push_own
from .scheduler import resume_inside, settle_later, spawn
from .scope import ChildScope
from .slots import SLOT, StepSlot
from .state import RunState

if TYPE_CHECKING:
    from .._plan import Plan
    from .._reactor import Reactor
    from .._step import NewSteps

__all__ = ["Run"]

# Run ids: unique within a process by the counter, across processes by the random prefix
# (uuid4 per run would cost more than a whole small run).
_ids = itertools.count(1)
_PROCESS_ID = uuid.uuid4().hex[:8]

#: Runs new steps (`rp.NewSteps`) of a step: given by the reactor layer, which knows how
#: (the composites), so that the executor never imports them.
NewStepsRunner = Callable[[ChildScope, "NewSteps"], Coroutine[Any, Any, Any]]


class Run:
    """One execution of a plan. Made by `Reactor.run()` (and `resume`, `run_reversible`,
    `undo`), and by composite steps for their children; never by users.

    Its parts: `st` (the mutable `RunState`), `ledger` (the `UndoLedger`), `modes` (the
    dispatch table), `mw` (middleware, which is also the event emitter), the limiter.
    """

    def __init__(
        self,
        reactor: Reactor,
        plan: Plan,
        inputs: dict[str, Any],
        *,
        context: dict[str, Any] | None,
        async_: bool,
        limiter: Limiter | None,
        timeout: float | None,
        grace: float,
        middleware: Middleware | None,
        new_steps: NewStepsRunner,
        prefix: str = "",
        parent: str | None = None,
        checkpoint: Checkpoint | None = None,
        executor: Any = None,
        durable: Durable | None = None,
        route: tuple[str, ...] | None = (),
        root_id: str | None = None,
        run_id: str | None = None,
    ) -> None:
        self.reactor = reactor
        self.plan = plan
        self.inputs = inputs
        self.data = context if context is not None else {}
        self.run_id = run_id if run_id is not None else f"{_PROCESS_ID}-{next(_ids):x}"
        # The root run's id (a journaled run's is the journal's): idempotency keys.
        self.root_id = root_id if root_id is not None else self.run_id
        self.parent = parent
        self.prefix = prefix
        self.grace = grace
        self.timeout = timeout
        self.async_ = async_
        self.default_executor = executor
        self.checkpoint = checkpoint
        self.new_steps_runner = new_steps
        # The journal this run records in (a child shares its parent's), and the route from
        # the root reactor to this run's steps (`UndoRecord.route`; None: steps made at
        # run time, which exist in no definition).
        self.durable = durable
        self.route = route
        self.mw = middleware if middleware else None
        # Async on_event hooks: each step's events are awaited from its own coroutine.
        self.observed = self.mw is not None and not self.mw.sync_events
        # Sync hooks that want the start or the completion of steps called directly.
        sync = self.mw is not None and self.mw.sync_events
        self.wants_start = sync and self.mw is not None and self.mw.wants("step_start")
        self.wants_complete = sync and self.mw is not None and self.mw.wants("step_complete")
        n = plan.size
        self.n = n
        # One step at a time runs on a one-slot limiter of its own (its queue orders the
        # steps); a limiter the caller gave is honoured on top of it, around each step.
        self.outer_limiter = None if async_ else limiter
        self.limiter = Limiter(1) if not async_ else limiter
        self.modes: Modes = modes_of(
            plan,
            serial=not async_,
            executor=executor is not None,
            limited=self.limiter is not None,
            outer=self.outer_limiter is not None,
            events=self.mw is not None,
        )
        self.slow = self.modes.slow if not self.observed else b"\x01" * n
        self.is_async = self.modes.is_async
        self.fns = plan.fns
        self.fetch = plan.fetch
        # Steps whose completion records nothing but the value (see `scheduler.run_fast`).
        self.quick = self.modes.quick if durable is None else bytes(n)  # (journaled: `record`)
        self.chainable = self.modes.chainable
        self.keeps_arguments = self.modes.keeps_arguments
        self.inline_ok = not self.observed
        self.names = [prefix + name for name in plan.order] if prefix else plan.order
        # Critical path first; one step at a time goes in plan order instead.
        self.priority = plan.priority if async_ else range(n, 0, -1)
        # Dependents in the order they start when made ready together (plan.dependents is
        # in index order, which one step at a time wants).
        self.ready_order = plan.ready_order if async_ else plan.dependents
        self.keep = [plan.returns is None] * n
        if plan.return_slot is not None and plan.return_slot < n:
            self.keep[plan.return_slot] = True
        # Whether a completion may free results (not when every result is returned).
        self.releasing = plan.returns is not None
        vals: list[Any] = [None] * n
        vals.extend(inputs[name] for name in plan.inputs)
        vals.extend(plan.constants)
        self.st = RunState(vals, plan.ndeps, plan.readers, n)
        self.ledger = UndoLedger(plan)
        self.undoer = Undoer(
            reactor, plan, self.run_id, prefix, self.data, self.mw, self.root_id, durable
        )
        # Children's undo records, by composite step, joining the ledger when it completes.
        self.kept: dict[int, list[UndoRecord]] = {}
        # Checkpoints of children that halted inside composite steps, by step name.
        self.inner: dict[str, Any] = {}
        self.base_ctx = contextvars.copy_context()
        self.info: RunInfo | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.clock: Callable[[], float] = _no_clock
        self.new_task: Callable[..., asyncio.Task[None]] = asyncio.ensure_future

    def __repr__(self) -> str:
        return f"<Run {self.run_id} of {self.plan.reactor!r}: {self.st!r}>"

    # ------------------------------------------------------------------ the coordinator
    async def execute(self) -> Any:
        """Run to the end: return the result, or raise `RunFailed`, `Halted`, or what
        cancelled or interrupted the run (after undo)."""
        loop = self.loop = asyncio.get_running_loop()
        self.clock = loop.time
        self.new_task = _task_factory(loop)
        self.st.wakeup = loop.create_future()
        check_inputs(self)
        shared = self.limiter if self.async_ else self.outer_limiter
        loan = SLOT.get()
        borrowed = loan is not None and shared is not None and loan.borrow(shared)
        try:
            return await self._execute()
        finally:
            if borrowed:
                assert loan is not None
                await loan.give_back()

    async def _execute(self) -> Any:
        st = self.st
        if self.mw is not None:
            reached: list[Any] = []
            try:
                failed = await self.mw.call("on_run_start", self._run_info(), reached=reached)
            except asyncio.CancelledError as exc:  # ended before it began: what a resumed
                # or recovered run completed before is undone; the middleware whose
                # on_run_start was not reached hear of nothing
                owners = self.mw.owners["on_run_start"]
                unreached = [m for m in owners if not any(m is r for r in reached)]
                self._restore()
                await self._cancelled(exc, unreached)
            if failed:
                st.errors.extend(failed)
                st.failed_steps.extend("on_run_start" for _ in failed)
                self._restore()  # a resumed or recovered run that fails undoes them too
                await self._failed()
        self.base_ctx = contextvars.copy_context()  # what on_run_start set reaches steps
        self.base_ctx.run(SLOT.set, None)  # a slot the caller's step lent is not ours
        deadline = None
        if self.timeout is not None:
            assert self.loop is not None
            deadline = self.loop.call_later(self.timeout, self._on_deadline)
        try:
            try:
                if self.checkpoint is not None:
                    restore(self, self.checkpoint)
                    ready = resume_inside(self, resumable(self))
                elif self.durable is not None and self.durable.entries:
                    cut = restore_recovered(self)
                    if cut:  # a rollback of this child that a crash cut short
                        await self._roll_back(cut)
                    ready = resumable(self)
                else:
                    ready = list(self.plan.roots)
                    ready.sort(key=self.order_key)
                dispatch(self, ready, None)
                self.maybe_wake()
                if st.n_done < self.n or st.workers or st.writes:
                    assert st.wakeup is not None
                    await st.wakeup
                    if st.stopping:
                        await drain(self)  # not shielded: a cancellation ends the grace
                        await recorded(self)
            except asyncio.CancelledError as cancelled:
                if not await halts_instead(self):
                    await self._cancelled(cancelled)
        finally:
            if deadline is not None:
                deadline.cancel()
        return await self._finish()

    def _restore(self) -> None:
        """What a resumed or recovered run completed before, onto its undo stack (its
        `on_run_start` failed or was cancelled: it ends there, undoing them)."""
        if self.checkpoint is not None:
            restore(self, self.checkpoint)
        elif self.durable is not None and self.durable.entries:
            cut = restore_recovered(self)
            self.ledger.entries[:0] = reversed(cut)  # (older than what is restored)

    async def _roll_back(self, cut: list[UndoRecord]) -> None:
        """Finish a rollback a crash cut short (`restore_recovered`); its errors fail the run."""
        errors, cancelled = await shielded(self.undoer.undo_all(cut))
        if cancelled:
            raise asyncio.CancelledError
        if errors:
            self.st.errors.extend(errors)
            self.st.failed_steps.append("(an undo)")
            stop(self)

    async def _cancelled(
        self, cancelled: asyncio.CancelledError, told: Sequence[Any] = ()
    ) -> NoReturn:
        """`run()` itself was cancelled: stop, cancel running steps at once, undo, tell
        middleware (but those `told` of the run's end already: as it completed or halted,
        the cancellation came while middleware heard of it), and let the cancellation
        go on."""
        stop(self)

        async def wind_down() -> list[BaseException]:
            await stop_workers(self)
            records = to_undo(self)
            if await undo_requested(self, cancelled, records) is not None:
                return []  # the run is another process's now: it finishes it
            return await self.undoer.undo_all(records)

        errors, _ = await shielded(wind_down())
        for error in self.st.errors:  # (a completion the journal refused as the run stopped)
            annotate(cancelled, f"reactorpy: the run also failed as it was cancelled: {error!r}")
        for error in errors:  # (undo errors cannot travel with CancelledError: notes)
            annotate(cancelled, f"reactorpy: undo failed during cancellation: {error!r}")
        if self.mw is not None:
            info = self._run_info()
            await shielded(self.mw.replace("on_run_error", info, cancelled, skip=told))
        raise cancelled

    async def _finish(self) -> Any:
        st = self.st
        st.fail_halt_over_left(self.names)  # (never resumed over a failed undo: it fails)
        if st.errors or st.fatal is not None:
            await self._failed()
        if st.halt_reason is not _UNSET:
            checkpoint = make_checkpoint(self)
            halted = Halted(st.halt_reason, checkpoint, st.halt_step)
            failed = list(st.hook_errors)
            if self.mw is not None:
                told: list[Any] = []
                try:
                    failed += await self.mw.call(
                        "on_run_halt", self._run_info(), checkpoint, told=told
                    )
                except asyncio.CancelledError as exc:  # the caller gets no checkpoint: undo
                    await self._cancelled(exc, told)
            for error in failed:  # the checkpoint is never lost to a hook
                annotate(halted, f"reactorpy: middleware failed at the halt: {error!r}")
            raise halted
        result = self.result()
        if self.mw is not None:
            told = []
            try:
                result, failed = await self.mw.replace(
                    "on_run_complete", self._run_info(), result, told=told
                )
            except asyncio.CancelledError as exc:  # the caller gets no result: undo
                await self._cancelled(exc, told)
            if failed:  # a hook that raises fails the run, which is undone; the middleware
                # after it hear of the error instead, those it told keep what they heard
                annotate(failed[0], "reactorpy: middleware failed on_run_complete")
                st.errors.append(failed[0])
                st.failed_steps.append("on_run_complete")
                await self._failed(told)
        return result

    async def _failed(self, told: Sequence[Any] = ()) -> NoReturn:
        """An error stood: undo every completed step, newest first (shielded), tell
        middleware (but those `told` of the run's completion already), and raise one
        error. A caller that cancelled ``run()`` meanwhile gets its `CancelledError` (so
        does middleware), the run's error kept as a note."""
        st = self.st

        async def undo() -> list[BaseException]:
            records = to_undo(self)
            lost = await undo_requested(self, st.errors[0] if st.errors else st.fatal, records)
            if lost is not None:  # the run is another process's now: it finishes it
                st.fatal = st.fatal or lost
                return []
            return await self.undoer.undo_all(records)

        undo_errors, cancelled = await shielded(undo())
        error: BaseException
        if st.fatal is not None:
            error = st.fatal
            for e in [*st.errors, *st.hook_errors, *undo_errors]:
                annotate(error, f"reactorpy: also, while the run ended: {e!r}")
        else:
            error = run_failed(self, undo_errors)
        if cancelled:
            interrupted = asyncio.CancelledError()
            annotate(interrupted, f"reactorpy: cancelled while the run undid: {error!r}")
            error = interrupted
        if self.mw is not None:
            (replaced, failed), again = await shielded(
                self.mw.replace("on_run_error", self._run_info(), error, skip=told)
            )
            for e in failed:
                annotate(error, f"reactorpy: middleware failed on_run_error: {e!r}")
            if again and not cancelled:  # cancelled while middleware heard of the error
                interrupted = asyncio.CancelledError()
                annotate(interrupted, f"reactorpy: cancelled as the run ended: {error!r}")
                raise interrupted
            if isinstance(replaced, BaseException) and replaced is not error and not cancelled:
                raise replaced from error
        raise error

    def result(self) -> Any:
        """The value of ``returns``, or every step's result by name."""
        plan = self.plan
        if plan.returns is None:
            results = plan.no_results.copy()
            results.update(zip(plan.order, self.st.vals, strict=False))
            return results
        return self.st.vals[plan.return_slot]  # type: ignore[index]

    def finished_checkpoint(self) -> Checkpoint:
        """What undoing this completed run later needs."""
        return finished_checkpoint(self)

    async def revert(self, checkpoint: Checkpoint) -> None:
        """Undo what `checkpoint` records (`Reactor.undo`); see `resume.revert`."""
        await revert(self, checkpoint)

    def _run_info(self) -> RunInfo:
        return run_info(self)

    def _on_deadline(self) -> None:
        st = self.st
        if not st.stopping and st.n_done < self.n:
            st.halt_reason = "timeout"
            st.halt_step = None
            stop(self)

    # ------------------------------------------------------------------ for the scheduler
    def order_key(self, i: int) -> tuple[int, int]:
        """Most critical first, then plan order."""
        return (-self.priority[i], i)

    def wake(self) -> None:
        """Wake the coordinator (it checks what to do)."""
        w = self.st.wakeup
        if w is not None and not w.done():
            w.set_result(None)

    def maybe_wake(self) -> None:
        """Wake the coordinator if the run is idle: every step done, or stopping, and no
        worker left. A run with steps left, none running or waiting, is stuck: that is a
        bug of ours, reported as one rather than a hang."""
        st = self.st
        if st.workers or st.writes:
            return
        if st.stopping or st.n_done == self.n:
            self.wake()
        elif not st.waiting and not st.held:
            fatal(self, -1, RuntimeError(f"reactorpy: run {self.run_id} stalled: {st!r}"))

    async def until_stopped(self, delay: float) -> None:
        """Sleep `delay` seconds, or less if the run stops meanwhile."""
        assert self.loop is not None
        stopped = self.loop.create_future()
        self.st.stop_waiters.add(stopped)
        try:
            await asyncio.wait((stopped,), timeout=delay)
        finally:
            self.st.stop_waiters.discard(stopped)
            stopped.cancel()

    def lend_slot(self, i: int) -> None:
        """In step `i`'s context: it holds a slot that a nested run may borrow."""
        SLOT.set(StepSlot(self, i))

    def spawn(self, stack: list[int], first: Awaitable[None] | None = None) -> None:
        """A new worker for `stack` (for the parts of the executor below the scheduler)."""
        spawn(self, stack, first)

    def dispatch(self, ready: list[int], stack: list[int] | None) -> None:
        """Start steps that became ready (for the parts below dispatch)."""
        dispatch(self, ready, stack)

    def later(self, i: int, value: Any, ctx: contextvars.Context) -> None:
        """An inline step returned new steps or an awaitable: a worker goes on with it."""
        stack: list[int] = []
        own = push_own(self, i, value, None)
        spawn(self, stack, settle_later(self, i, value, None, ctx, stack, own=own))

    def call(self, i: int) -> Coroutine[Any, Any, Any]:
        """Step `i` called directly, as a coroutine (its events awaited when observed)."""
        return called(self, i)

    def completed_async(self, i: int, value: Any) -> Coroutine[Any, Any, BaseException | None]:
        """``step_complete`` to async hooks; its coroutine returns what a hook raised."""
        return completed_async(self, i, value)

    def new_steps(self, i: int, new: NewSteps) -> Coroutine[Any, Any, Any]:
        """Run the new steps step `i` returned; returns the step's value."""
        return self.new_steps_runner(self.scope(i), new)

    def scope(self, i: int) -> ChildScope:
        """What composite step `i` may do with this run."""
        return ChildScope(self, i)

    def context(self, i: int, attempt: int) -> Context:
        """The `rp.Context` of step `i`'s `attempt`."""
        name = self.names[i]
        return Context(
            self.run_id, name, attempt, self.data, self.plan.reactor, f"{self.root_id}:{name}"
        )

    # ------------------------------------------------------------------ arguments
    def named_args(self, i: int, attempt: int = 1) -> dict[str, Any]:
        """Step `i`'s arguments by parameter name (for callbacks and composites)."""
        fetch = self.plan.fetch[i]
        if fetch is not None:
            return dict(zip(self.plan.param_names[i], fetch(self.st.vals), strict=True))
        named: dict[str, Any] = {}
        resolve(self, i, attempt, named)
        return named

    def split_args(self, i: int, named: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """Arguments by name as the positional and keyword ones."""
        argv = self.plan.argv[i]
        return (
            [named[a.param] for a in argv if a.positional],
            {a.param: named[a.param] for a in argv if not a.positional},
        )


def _no_clock() -> float:  # pragma: no cover - replaced when the run starts
    raise RuntimeError("the run has not started")


def _task_factory(loop: asyncio.AbstractEventLoop) -> Callable[..., asyncio.Task[None]]:
    """How this run makes worker tasks: ``loop.create_task``, or what it amounts to.

    On a stock loop with no task factory (and no debug traceback trimming), create_task is
    just ``asyncio.Task(coro, loop=loop, context=ctx)`` behind a Python-level call.
    """
    if (
        type(loop).create_task is asyncio.BaseEventLoop.create_task
        and loop.get_task_factory() is None
        and not loop.get_debug()
    ):
        return functools.partial(asyncio.Task, loop=loop)
    return loop.create_task
