"""Execution: one run of a compiled `Plan`, its scheduling, retries, undo, halt and cancel.

Owns: `Run`, the per-run mutable state (a definition never changes while it runs).
Must not import: the CLI.

The scheduling loop, in the graphlib style (counters prepared at plan time):

1. Check the inputs; seed the value array with inputs and constants.
2. Start every root step. Starting step ``j``:
   a. a plain ``def`` with no options runs at once, inline on the loop thread; its
      completion (step 3) may start more steps, iteratively, never recursively;
   b. in a run with no limiter, steps that become ready together (``plan.plain``: async
      steps with simple arguments, called directly, and steps with options, run through
      their attempts) share one batch worker (`Run._work_batch`), which starts them one
      after another in their own contexts: most finish without suspending, and one that
      suspends keeps the worker while the rest of the batch moves to a new one;
   c. anything else needs a worker task. With a limiter, the step takes a slot first, or
      waits in the limiter's queue (critical path first) for one.
3. A worker task runs its step (attempts, retries, compensation: ``_attempts``). When the step
   completes, the worker records the result, releases the results no remaining step needs,
   and decrements the counter of each dependent; a dependent that reaches zero is started
   (step 2), except that the worker keeps one of them, the most critical, and runs it
   itself in that step's own ``contextvars`` context instead of paying for a new task. With
   a limiter, the slot it frees goes to the best waiting step, which it may likewise run.
4. When every step is done, the run returns the value of ``returns``.
5. When an error stands (or a step halts, or the run's timeout passes), nothing new starts:
   running steps are awaited for ``grace`` seconds, then cancelled. On failure every completed
   step with an undo is undone, newest completion first, and `RunFailed` is raised; on halt
   `Halted` carries a `Checkpoint`. Cancellation of ``run()`` cancels running steps at once,
   undoes, and re-raises.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import itertools
import types
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from ._arguments import Context, dig
from ._checkpoint import Checkpoint, UndoRecord
from ._errors import _UNSET, Halt, Halted, InputError, Retry, RunFailed
from ._events import Event, Middleware, RunInfo, SpanRecord
from ._limiter import Limiter
from ._offload import OffloadError
from ._plan import BATCH_ATTEMPTS, BATCH_TRY, KIND_ASYNC, KIND_FEATURED, KIND_SYNC, ArgSpec
from ._step import Callback, Continue, NewSteps

if TYPE_CHECKING:
    from ._plan import Plan
    from ._reactor import Reactor

__all__ = ["Run"]

# Step kinds, per run (a plain run uses the plan's, see `step_kind`).
_SYNC: Final = KIND_SYNC  # plain def, no options: called inline
_ASYNC: Final = KIND_ASYNC  # async def, no options: awaited directly
_FEATURED: Final = KIND_FEATURED  # anything else: through _attempts

# Step states.
_PENDING: Final = 0
_STARTED: Final = 1
_DONE: Final = 2

_UNDO_ATTEMPTS: Final = 5
# The outcome of a plain step's span, by how its attempt ended (`Run._plain_end`).
_OUTCOMES: Final = {
    "step_complete": "complete",
    "step_error": "error",
    "step_halt": "halt",
    "cancelled": "cancelled",
}
# A worker that has run this many steps back to back yields to the event loop once.
_YIELD_EVERY: Final = 64

# Run ids: unique within a process by the counter, across processes by the random prefix
# (uuid4 per run would cost more than a whole small run).
_ids = itertools.count(1)
_PROCESS_ID = uuid.uuid4().hex[:8]


class _InContext:
    """Await a coroutine with every resumption inside `ctx` (a step's own context).

    Lets one worker task run several steps one after another, each in its own copy of the
    caller's context, without a task per step. The worker starts the coroutine itself with
    ``ctx.run(coro.send, None)``, as most steps finish without ever suspending; only one that
    suspends comes here, with `yielded`, what that first send yielded (for the task to wait
    on before the coroutine is resumed).
    """

    __slots__ = ("coro", "ctx", "yielded")

    def __init__(self, coro: Any, ctx: contextvars.Context, yielded: Any) -> None:
        self.coro = coro
        self.ctx = ctx
        self.yielded = yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        run = self.ctx.run
        send = self.coro.send
        throw = self.coro.throw
        yielded = self.yielded
        while True:
            try:
                value = yield yielded
            except BaseException as exc:  # forwarded into the step (cancellation, mostly)
                try:
                    yielded = run(throw, exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    yielded = run(send, value)
                except StopIteration as stop:
                    return stop.value


class _Waiting:
    """A step of a run waiting in the limiter's queue."""

    __slots__ = ("i", "run")
    dead = False  # a stopping run takes its waiters out of the queue itself

    def __init__(self, run: Run, i: int) -> None:
        self.run = run
        self.i = i

    def wake(self, key: str | None) -> None:
        self.run._wake(self.i)


class _StepFailed(Exception):
    """Internal: the standing error of step `i` after its attempts."""

    def __init__(self, error: BaseException, attempt: int) -> None:
        self.error = error
        self.attempt = attempt


class _Pending(Exception):
    """Internal: the step stopped without completing and stays pending (halt/stop)."""


class Run:
    """One execution of a plan. Build with `Reactor.run()`, not directly."""

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
        prefix: str = "",
        parent: str | None = None,
        checkpoint: Checkpoint | None = None,
        executor: Any = None,
    ) -> None:
        self.reactor = reactor
        self.plan = plan
        self.inputs = inputs
        self.data = context if context is not None else {}
        self.run_id = f"{_PROCESS_ID}-{next(_ids):x}"
        self.parent = parent
        self.prefix = prefix
        self.grace = grace
        self.timeout = timeout
        self.async_ = async_
        self.default_executor = executor
        self.mw = middleware if middleware else None
        self.emit = self.mw is not None and self.mw.wants_events
        self.emit_kinds: frozenset[str] = self.mw.event_kinds if self.mw else frozenset()
        # Sync on_event hooks: events are delivered inline and steps keep their fast paths.
        self.fast_events = self.emit and self.mw is not None and self.mw.sync_events
        self.event_hooks = self.mw.event_hooks if self.mw else []
        # A plain step's attempt reaches span recorders (`Trace`) as one record, and the
        # other on_event hooks as events (`_plain_start`, `_plain_end`).
        self.spans: list[Callable[[SpanRecord], object]] = []
        self.plain_hooks = self.event_hooks
        self.plain_kinds = self.emit_kinds
        if self.fast_events and self.mw is not None and self.mw.span_hooks:
            self.spans = self.mw.span_hooks
            self.plain_hooks = self.mw.plain_hooks
            self.plain_kinds = self.mw.plain_kinds
        # Whether a plain step's start and completion are reported at all (`_plain_start`).
        self.report_plain = self.fast_events and bool(
            self.spans or {"step_start", "step_complete"} & self.plain_kinds
        )
        # Whether only span recorders want them: a batch worker then records the span itself.
        self.spans_only = bool(self.spans) and not (
            {"step_start", "step_complete"} & self.plain_kinds
        )
        # What `_plain_start` returned for plain steps whose NewSteps run in `_steps`, and the
        # step's context (its completion is reported in the context its start was).
        self.plain_open: dict[int, tuple[tuple[float, int] | None, contextvars.Context]] = {}
        self.checkpoint = checkpoint
        n = plan.size
        self.n = n
        # One step at a time runs on a one-slot limiter of its own (which orders the steps);
        # a limiter the caller gave (shared with other runs, say) is honoured on top of it.
        self.outer_limiter = None if async_ else limiter
        if not async_:
            limiter = Limiter(1)
        self.limiter = limiter
        steps = plan.steps
        # Per-step arrays are read-only during the run: a plain run shares the plan's.
        self.kinds: Sequence[int]
        slow_events = self.emit and not self.fast_events
        if async_ and not slow_events and executor is None:
            self.kinds = plan.kinds
        else:
            # A run-wide executor sends plain defs away: they need _call, not the inline path.
            self.kinds = [
                _kind(s, slow_events or (executor is not None and not s.is_async), async_)
                for s in steps
            ]
        self.needs_slot: Sequence[bool] | bytes
        if limiter is None:
            self.needs_slot = bytes(n)
        else:
            self.needs_slot = [
                (not async_ or s.is_async or s.executor is not None or executor is not None)
                and (not s.composite or not async_)
                for s in steps
            ]
        self.names: Sequence[str] = [prefix + name for name in plan.order] if prefix else plan.order
        # Critical path first; one step at a time goes in plan order instead.
        self.priority = plan.priority if async_ else tuple(range(n, 0, -1))
        # The dependents of each step in the order they start when made ready together (the
        # order of `_order_key`; plan.dependents is in index order, which async_=False wants).
        self.ready_order = plan.ready_order if async_ else plan.dependents
        self.vals: list[Any] = [None] * n
        self.vals.extend(inputs[name] for name in plan.inputs)
        self.vals.extend(plan.constants)
        self.remaining = list(plan.ndeps)
        self.consumers_left = list(plan.consumers)
        keep = [plan.returns is None] * n
        if plan.return_slot is not None and plan.return_slot < n:
            keep[plan.return_slot] = True
        self.keep = keep
        # Whether a completion may free results: not when every result is kept (no
        # ``returns``), where consumers_left only ever matters together with keep.
        self.releasing = plan.returns is not None
        self.state = bytearray(n)
        self.holding = bytearray(n)  # 1 while step i holds a limiter slot
        # Steps batch workers start inline (`_work_batch`), in runs with no limiter whose
        # event hooks (if any) are sync: async steps with simple arguments, called
        # directly, and steps with options, run through their attempts.
        self.plain: Sequence[bool] | bytes
        if limiter is not None or (self.emit and not self.fast_events):
            self.plain = bytes(n)
        elif self.kinds is plan.kinds:
            self.plain = plan.plain_events if self.emit else plan.plain
        else:
            self.plain = [
                k == _ASYNC and f is not None and not x
                for k, f, x in zip(self.kinds, plan.fetch, plan.exclusive, strict=True)
            ]
        self.gated = bytearray(n)  # 1 while async_=False step i holds back new starts
        self.attempts = [0] * n
        self.n_done = 0
        # UndoRecords, or (step index, value, argument values) tuples of simple steps that
        # become UndoRecords only when read (`undo_records`): most undo stacks are never used.
        self.undo_stack: list[UndoRecord | tuple[int, Any, Sequence[Any]]] = []
        self.errors: list[BaseException] = []
        self.fatal: BaseException | None = None  # a BaseException to re-raise after undo
        self.halt_reason: Any = _UNSET
        self.halt_step: str | None = None
        self.stopping = False
        self.gate = 0  # running async_=False steps: nothing new starts while > 0
        self.held: list[int] = []
        # The live worker tasks, by the step each started with (a step starts at most once a
        # run), so a worker can drop its own entry without asking for the current task.
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.in_executor: dict[int, concurrent.futures.Future[Any] | asyncio.Future[Any]] = {}
        self.abandoned: list[str] = []
        self.hook_errors: list[BaseException] = []  # middleware failures while undoing
        self.base_ctx = contextvars.copy_context()
        self.wakeup: asyncio.Future[None] | None = None
        self.info: RunInfo | None = None
        self.inner: dict[str, Any] = {}  # child checkpoints of composite steps, by step name
        self.extra_undo: dict[int, list[UndoRecord]] = {}  # children's undo, by composite
        # What composed children that halted inside had completed, by composite: undone
        # if this run fails instead of halting.
        self.halted_undo: dict[int, list[UndoRecord]] = {}
        # Where in the undo stack each of those children halted: steps of this run that
        # completed after it (during the grace period) are newer than the child's.
        self.halted_marks: dict[int, int] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.clock: Callable[[], float] = _no_clock
        self.new_task: Callable[..., asyncio.Task[None]] = asyncio.ensure_future

    # ------------------------------------------------------------------ public entry
    async def execute(self) -> Any:
        """Run to completion; returns the `returns` value or raises."""
        loop = self.loop = asyncio.get_running_loop()
        self.clock = loop.time
        self.new_task = _task_factory(loop)
        self.wakeup = loop.create_future()
        if self.reactor.input_transforms:
            self._transform_inputs()
        self._check_input_paths()
        if self.mw is not None:
            await self._run_start()
            # Context variables the middleware set (a tracing span, say) reach every step.
            self.base_ctx = contextvars.copy_context()
        deadline = None
        if self.timeout is not None:
            deadline = loop.call_later(self.timeout, self._on_deadline)
        try:
            if self.checkpoint is not None:
                self._restore(self.checkpoint)
            self._start_many(self.plan.roots if self.checkpoint is None else self._resumable())
            if self.n_done < self.n or self.tasks:
                try:
                    await self.wakeup
                    if self.stopping:
                        # Not shielded: a cancellation now ends the grace period at once.
                        await self._drain()
                except asyncio.CancelledError as cancelled:
                    await self._shielded(self._cancelled(cancelled))
                    raise
        finally:
            if deadline is not None:
                deadline.cancel()
        return await self._finish()

    async def _run_start(self) -> None:
        assert self.mw is not None
        assert self.loop is not None
        self.info = RunInfo(
            reactor=self.plan.reactor,
            run_id=self.run_id,
            inputs=dict(self.inputs),
            context=self.data,
            parent=self.parent,
            step_names=tuple(self.names),
            critical_path=tuple(self.prefix + name for name in self.plan.critical_path),
            start=self.loop.time(),
            dependencies=self._dependencies(),
        )
        await self.mw.call("on_run_start", self.info)

    async def revert(self, checkpoint: Checkpoint) -> None:
        """Undo what `checkpoint` records (`Reactor.undo`); raises `RunFailed` with the undo
        errors. Shielded: once started, the undo finishes before a cancellation lands."""
        errors = await self._shielded(self._reverted(checkpoint))
        if errors:
            raise self._undo_failed(errors)

    async def _reverted(self, checkpoint: Checkpoint) -> list[BaseException]:
        """Undo the children that halted inside composite steps (they were still running,
        so their steps are the newest), then this run's undo stack, newest first."""
        loop = self.loop = asyncio.get_running_loop()
        self.clock = loop.time
        if self.mw is not None:
            await self._run_start()
        errors: list[BaseException] = []
        # Newest first: what this run completed after a child halted (the checkpoint's
        # marks), then that child's steps, and so on down the stack.
        self.undo_stack = list(checkpoint.undo_stack)
        marks = checkpoint.inner_marks
        top = len(self.undo_stack)
        for name in sorted(checkpoint.inner, key=lambda n: -marks.get(n, top)):
            errors.extend(await self._undo_all(down_to=marks.get(name, top)))
            i = self.plan.index[name]
            composite: Any = self.plan.steps[i]
            child, child_checkpoint, label = composite.halted_child(checkpoint.inner[name])
            child_run = self._child(i, child, child_checkpoint, label)
            errors.extend(await child_run._reverted(child_checkpoint))
        errors.extend(await self._undo_all())
        errors.extend(self.hook_errors)
        if self.mw is not None:
            if errors:
                await self.mw.call("on_run_error", self.info, self._undo_failed(errors))
            else:
                await self.mw.complete(self.info, None)  # type: ignore[arg-type]
        return errors

    def _child(self, i: int, reactor: Reactor, checkpoint: Checkpoint, label: str) -> Run:
        """A run of `reactor` inside composite step i, named as its steps are in this run."""
        return Run(
            reactor,
            reactor.plan(),
            dict(checkpoint.inputs),
            context=self.data,
            async_=self.async_,
            limiter=None,
            timeout=None,
            grace=self.grace,
            middleware=self.mw,
            prefix=f"{self.names[i]}.{label}",
            parent=self.run_id,
        )

    def _undo_failed(self, errors: list[BaseException]) -> RunFailed:
        failed = [n for e in errors for n in _step_of(e, "reactorpy: undo of step ")]
        excs = [e if isinstance(e, Exception) else RuntimeError(repr(e)) for e in errors]
        message = f"undoing reactor {self.plan.reactor!r} failed in step(s) {', '.join(failed)}"
        return RunFailed(message, excs, reactor=self.plan.reactor)

    # ------------------------------------------------------------------ starting steps
    def _start_many(self, ready: Any) -> None:
        """Start the given ready steps (from the coordinator, not a worker)."""
        ordered = sorted(ready, key=self._order_key)
        batch: list[int] = []  # plain async steps: one worker starts them all
        for n, j in enumerate(ordered):
            if self.stopping:
                for k in ordered[n:]:  # held steps that were given a slot give it back
                    if self.holding[k]:
                        self.state[k] = _PENDING
                        self._release(k)
                return
            if self.holding[j]:  # held back by an async_=False step, with its slot
                if self.gate:
                    self.held.append(j)
                else:
                    self._spawn(j)
                continue
            if self.state[j] != _PENDING:
                continue
            if self.gate:
                self.held.append(j)
            elif self.kinds[j] == _SYNC:
                self._run_sync_chain(j)
            elif self.plain[j]:
                batch.append(j)
            else:
                self._launch(j)
        if batch and not self.stopping:
            self._spawn_batch(batch)

    def _order_key(self, i: int) -> tuple[int, int]:
        return (-self.priority[i], i)

    def _launch(self, j: int) -> None:
        """Give step j a worker task, once it has a slot (or queue it for one)."""
        self.state[j] = _STARTED
        if self.needs_slot[j]:
            limiter = self.limiter
            assert limiter is not None
            key = self.plan.steps[j].concurrency_key
            if not limiter.try_acquire(key):
                limiter.enqueue(self.priority[j], key, _Waiting(self, j))
                return
            self.holding[j] = 1
        self._spawn(j)

    def _spawn(self, j: int, preset: Any = _UNSET) -> None:
        if preset is _UNSET and self.plain[j]:
            self.state[j] = _PENDING  # a batch worker starts its steps itself
            self._spawn_batch([j])
            return
        self.state[j] = _STARTED
        if self.plan.exclusive[j]:
            self._gate(j)
        self.tasks[j] = self.new_task(self._work(j, preset), context=self.base_ctx.copy())

    def _gate(self, j: int) -> None:
        """An async_=False step is starting: hold back new starts until it ends."""
        if not self.plan.steps[j].async_ and not self.gated[j]:
            self.gated[j] = 1
            self.gate += 1

    def _ungate(self, j: int) -> None:
        if self.gated[j]:
            self.gated[j] = 0
            self.gate -= 1

    def _wake(self, j: int) -> None:
        """The limiter gave step j a slot (released by another run)."""
        self.holding[j] = 1
        if self.stopping:
            self.state[j] = _PENDING
            self._release(j)
            return
        if self.gate:
            self.held.append(j)  # it keeps the slot until the async_=False step ends
            return
        self._spawn(j)

    def _release(self, i: int) -> int:
        """Give back step i's slot, if it holds one.

        Returns a step of this run that the freed slot went to, for the caller to run
        itself, or -1. A step of another run is woken instead.
        """
        if not self.holding[i]:
            return -1
        self.holding[i] = 0
        assert self.limiter is not None
        waiter = self.limiter.release(self.plan.steps[i].concurrency_key)
        if waiter is None:
            return -1
        if waiter.run is self and not self.stopping:  # type: ignore[attr-defined]
            j: int = waiter.i  # type: ignore[attr-defined]
            self.holding[j] = 1
            if self.gate:
                self.held.append(j)  # it keeps the slot until the async_=False step ends
                return -1
            return j
        waiter.wake(None)
        return -1

    # ------------------------------------------------------------------ arguments
    def _args(
        self, i: int, attempt: int, named: dict[str, Any] | None = None
    ) -> tuple[list[Any], dict[str, Any]]:
        """Step i's positional and keyword arguments; a step whose arguments have paths or
        transforms also fills `named` (if given) with them, by parameter name."""
        simple = self.plan.simple[i]
        if simple is not None:
            vals = self.vals
            return [vals[s] for s in simple], {}
        pos: list[Any] = []
        kw: dict[str, Any] = {}
        for a in self.plan.argv[i]:
            v = self._argument(i, a, attempt)
            if named is not None:
                named[a.param] = v
            if a.positional:
                pos.append(v)
            else:
                kw[a.param] = v
        return pos, kw

    def _split(self, i: int, named: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """Arguments by name (from `_args`) as the positional and keyword ones again."""
        argv = self.plan.argv[i]
        return (
            [named[a.param] for a in argv if a.positional],
            {a.param: named[a.param] for a in argv if not a.positional},
        )

    def _argument(self, i: int, a: ArgSpec, attempt: int) -> Any:
        """One argument of step i, resolved as `_args` does."""
        if a.source is None:
            return Context(self.run_id, self.names[i], attempt, self.data, self.plan.reactor)
        v = self.vals[a.slot]
        if a.path:
            v = dig(v, a.path, self.plan.order[i], a.param, a.source)
        if a.transform is not None:
            v = _transformed(a.transform, v, self.plan.order[i], a.param)
        return v

    def _named_args(self, i: int, attempt: int = 1) -> dict[str, Any]:
        """The step's arguments by parameter name (for callbacks)."""
        fetch = self.plan.fetch[i]
        if fetch is not None:
            return dict(zip(self.plan.param_names[i], fetch(self.vals), strict=True))
        named: dict[str, Any] = {}
        self._args(i, attempt, named)
        return named

    def _transform_inputs(self) -> None:
        """Apply the reactor's input transforms, once, before any step starts (the raw
        inputs stay in ``self.inputs``: checkpoints keep them, and a resume transforms
        them again)."""
        n = self.n
        for k, name in enumerate(self.plan.inputs):
            transform = self.reactor.input_transforms.get(name)
            if transform is None:
                continue
            try:
                self.vals[n + k] = transform(self.vals[n + k])
            except Exception as exc:
                raise InputError(
                    f"Input {name!r} of reactor {self.plan.reactor!r}: its transform raised "
                    f"{type(exc).__name__}: {exc}",
                    reactor=self.plan.reactor,
                    available=self.plan.inputs,
                ) from exc

    def _check_input_paths(self) -> None:
        n = self.n
        for step_name, param, source in self.plan.input_paths:
            slot = n + self.plan.inputs.index(source.name)
            try:
                dig(self.vals[slot], source.path, step_name, param, source)
            except LookupError as exc:
                raise InputError(
                    f"Step {step_name!r}, argument {param!r}: input {source.name!r} has no "
                    f"item {getattr(exc, 'at', '?')!r} along the path {source.path!r}.",
                    reactor=self.plan.reactor,
                    available=self.plan.inputs,
                    step=step_name,
                    argument=param,
                    path=source.path,
                ) from None

    # ------------------------------------------------------------------ running steps
    def _run_sync_chain(self, j: int) -> None:
        """Run plain-def step j inline, then any plain-def steps that become ready, iteratively."""
        stack = [j]
        report = self.report_plain
        inline = 0
        batch: list[int] = []  # plain async steps made ready: one worker starts them
        while stack:
            if self.stopping:  # an error stood: the rest stay pending
                break
            i = stack.pop()
            inline += 1
            self.state[i] = _STARTED
            self.attempts[i] = 1
            started = None
            # Events are reported in the step's own context (a tracing middleware sets the
            # step's span there, for the step's code to see).
            ctx = self.base_ctx.copy()
            # Arguments with paths or transforms, by name, for the undo record: resolved
            # once (simple ones are named from the values when the undo runs).
            named: dict[str, Any] | None = None if self.plan.simple[i] is not None else {}
            try:
                pos, kw = self._args(i, 1, named)
                if report:
                    started = self._plain_start(i, ctx)
                value = ctx.run(self.plan.fns[i], *pos, **kw)
            except BaseException as exc:
                if named and isinstance(exc, Halt):
                    exc._arguments = named
                self._settle(i, exc, started, ctx)
                continue
            if type(value) is NewSteps:
                if report:
                    self.plain_open[i] = (started, ctx)
                self._spawn(i, value)  # planning and running new steps needs a task
                continue
            if report:
                try:
                    self._plain_end(i, "step_complete", started, value, ctx=ctx)
                except BaseException as exc:  # a middleware hook raised: the step fails
                    self._settle(i, exc, started, ctx)
                    continue
            self._record(i, value, named)
            for d in self._newly_ready(i):
                if self.gate:
                    self.held.append(d)
                elif self.kinds[d] == _SYNC and inline < _YIELD_EVERY:
                    stack.append(d)
                elif self.kinds[d] == _SYNC:
                    self._spawn(d)  # a long run of plain defs: let the loop breathe first
                elif self.plain[d]:
                    batch.append(d)
                else:
                    self._launch(d)
        if batch and not self.stopping:
            self._spawn_batch(batch)

    def _settle(
        self,
        i: int,
        exc: BaseException,
        started: tuple[float, int] | None,
        ctx: contextvars.Context | None = None,
    ) -> None:
        """Plain step i raised `exc` on its only attempt: it halts, fails, or stops the run.

        `started` is what `_plain_start` returned, if it was called; `ctx` the step's own
        context, if it is not the current one.
        """
        if isinstance(exc, Halt):
            if self.fast_events:
                self._plain_end(i, "step_halt", started, exc.reason, ctx=ctx)
            self._halt(i, exc)
        elif isinstance(exc, Exception):
            if self.fast_events:
                self._plain_end(i, "step_error", started, error=exc, ctx=ctx)
            self._fail(i, exc, 1)
        else:
            if self.fast_events:
                self._plain_end(i, "cancelled", started, ctx=ctx)
            self._fatal(i, exc)

    def _newly_ready(self, i: int) -> list[int]:
        """Decrement the counters of i's dependents; return those that reached zero."""
        out: list[int] = []
        if self.stopping:
            return out
        remaining = self.remaining
        state = self.state
        # ready_order is already sorted by _order_key, and so is any subsequence of it.
        for d in self.ready_order[i]:
            remaining[d] -= 1
            if remaining[d] == 0 and state[d] == _PENDING:
                out.append(d)
        return out

    def _record(
        self, i: int, value: Any, arguments: dict[str, Any] | None, *, undoable: bool = True
    ) -> None:
        """Step i completed with value: store it, push its undo, release what is not needed."""
        self.state[i] = _DONE
        vals = self.vals
        vals[i] = value
        self.n_done += 1
        plan = self.plan
        if undoable and plan.has_undo[i]:
            if arguments is not None:
                self.undo_stack.append(UndoRecord(plan.order[i], value, arguments))
            elif (fetch := plan.fetch[i]) is not None:
                # Most undos never run: keep the argument values, name them if needed.
                self.undo_stack.append((i, value, fetch(vals)))
            else:
                arguments = self._named_args(i, self.attempts[i] or 1)
                self.undo_stack.append(UndoRecord(plan.order[i], value, arguments))
        if self.extra_undo:
            children = self.extra_undo.pop(i, None)
            if children:
                self.undo_stack.extend(children)
        if self.releasing:
            left = self.consumers_left
            keep = self.keep
            for j in plan.deps[i]:
                left[j] -= 1
                if left[j] == 0 and not keep[j]:
                    vals[j] = None
            if not plan.dependents[i] and not keep[i]:
                vals[i] = None
        if self.n_done == self.n:
            self._wake_coordinator()

    def _wake_coordinator(self) -> None:
        w = self.wakeup
        if w is not None and not w.done():
            w.set_result(None)

    def _spawn_batch(self, batch: list[int]) -> None:
        """Give pending batchable steps (``plain``, most critical first) one worker."""
        self.tasks[batch[0]] = self.new_task(self._work_batch(batch), context=self.base_ctx.copy())

    async def _work_batch(self, batch: list[int]) -> None:
        """A worker for batchable steps (``plain``): the short path of `_work`.

        It starts the steps of `batch` one after another, each in a fresh copy of the
        caller's context (a plain async step by calling it, one with options through its
        attempts), and most (fan-out leaves, no-op steps) finish without suspending.
        One that suspends keeps this worker, which hands the rest of the batch to a new one:
        a step is driven to its end by the task that started it (what
        ``asyncio.current_task()``, ``asyncio.timeout`` and ``TaskGroup`` inside a step rely
        on), and steps that wait overlap as if each had a task of its own. The steps a
        completion makes ready join the batch, the most critical one next.
        """
        key = batch[0]
        plan = self.plan
        fns = plan.fns
        fetch = plan.fetch
        state = self.state
        plain = self.plain
        base = self.base_ctx
        report = self.report_plain
        vals = self.vals
        has_undo = plan.has_undo
        spans_only, spans, clock, names = self.spans_only, self.spans, self.clock, self.names
        ready_order = self.ready_order
        remaining = self.remaining
        k = 0  # batch[k:] are pending, not started yet
        nxt = -1  # a plain step _continue handed over (started), to run before batch[k:]
        ran = 0
        try:
            while True:
                if nxt >= 0:
                    i, nxt = nxt, -1
                elif k < len(batch):
                    i = batch[k]
                    k += 1
                else:
                    return
                if self.stopping:  # an error stood: this and the rest stay pending
                    state[i] = _PENDING
                    return
                if self.gate:  # an async_=False step started meanwhile: wait for its end
                    state[i] = _PENDING
                    self.held.append(i)
                    self.held.extend(batch[k:])
                    return
                state[i] = _STARTED
                ctx = base.copy()
                mode = plain[i]
                started = None
                waited = False
                try:
                    if mode == BATCH_ATTEMPTS:  # options (retries, timeout, guard, ...)
                        coro = self._attempts(i)
                    else:  # BATCH_CALL, or BATCH_TRY until it fails
                        self.attempts[i] = 1
                        if spans_only:
                            started = (clock(), len(self.tasks))
                        elif report:
                            started = self._plain_start(i, ctx)
                        coro = fns[i](*fetch[i](vals))  # type: ignore[misc]
                    yielded = ctx.run(coro.send, None)
                except StopIteration as stop:
                    out = stop.value
                except BaseException as exc:
                    if mode != BATCH_TRY or not _retried(exc):
                        self._batch_failed(i, mode, exc, started, ctx)
                        continue
                    mode, coro, yielded = BATCH_ATTEMPTS, self._attempts(i, exc), None
                    waited = True
                else:
                    waited = True
                if waited:
                    # It waits: this worker drives it to the end; the rest go to a new one.
                    if k < len(batch):
                        self._spawn_batch(batch[k:])
                        del batch[k:]
                    try:
                        try:
                            out = await _InContext(coro, ctx, yielded)
                        except BaseException as exc:
                            if mode != BATCH_TRY or not _retried(exc):
                                raise
                            # Its attempts take over from the failed first one.
                            mode, coro = BATCH_ATTEMPTS, self._attempts(i, exc)
                            out = await _InContext(coro, ctx, None)
                    except BaseException as exc:
                        self._batch_failed(i, mode, exc, started, ctx)
                        return
                    batch, k = [], 0
                arguments = None
                if mode == BATCH_ATTEMPTS:
                    value, arguments = out
                else:
                    value = out
                if type(value) is NewSteps:
                    if k < len(batch):
                        self._spawn_batch(batch[k:])
                    if report and mode != BATCH_ATTEMPTS:
                        self.plain_open[i] = (started, ctx)
                    await self._steps(i, value, False)
                    return
                if mode != BATCH_ATTEMPTS:
                    if spans_only:  # what _plain_end does for span recorders alone
                        record = (
                            names[i], self.run_id, "step", 1, started[0], clock(),  # type: ignore[index]
                            "complete", started[1], None,  # type: ignore[index]
                        )  # fmt: skip
                        for hook in spans:
                            hook(record)
                    elif report:
                        try:
                            self._plain_end(i, "step_complete", started, value, ctx=ctx)
                        except BaseException as exc:  # a middleware hook raised: it fails
                            self._batch_failed(i, mode, exc, started, ctx)
                            continue
                    if self.releasing or has_undo[i]:
                        self._done_plain(i, value)
                    else:  # what _done_plain does with nothing to push (inline: a chain)
                        state[i] = _DONE
                        vals[i] = value
                        self.n_done += 1
                        if self.n_done == self.n:
                            self._wake_coordinator()
                elif value is _Skipped:
                    self._record(i, None, None, undoable=False)
                else:
                    self._record(i, value, arguments)
                out = arguments = None
                value = None  # from here the result lives in vals only
                dependents = ready_order[i]
                if len(dependents) == 1 and plain[d := dependents[0]] and not self.gate:
                    # What _continue does for a chain's next step, without the call.
                    remaining[d] -= 1
                    if not remaining[d] and state[d] == _PENDING and not self.stopping:
                        state[d] = _STARTED
                        nxt = d
                elif dependents:
                    nxt = self._continue(i, batch)
                    if self.gate == 0 and self.held and not self.stopping:
                        held, self.held = self.held, []
                        self._start_many(held)
                    if nxt >= 0 and not plain[nxt]:
                        self._spawn(nxt)
                        nxt = -1
                ran += 1
                if ran % _YIELD_EVERY == 0:  # a long batch still lets others run
                    try:
                        await asyncio.sleep(0)
                    except asyncio.CancelledError:
                        if nxt >= 0:
                            state[nxt] = _PENDING
                        if not self.stopping:
                            self._fatal(i, asyncio.CancelledError())
                        return
        finally:
            del self.tasks[key]
            if not self.tasks and (self.stopping or self.n_done == self.n):
                self._wake_coordinator()

    def _batch_failed(
        self,
        i: int,
        mode: int,
        exc: BaseException,
        started: tuple[float, int] | None,
        ctx: contextvars.Context,
    ) -> None:
        """Step i of a batch raised `exc` (as `_steps` handles it for a worker's step)."""
        if isinstance(exc, asyncio.CancelledError):
            self.state[i] = _PENDING
            if started is not None:
                self._plain_end(i, "cancelled", started)
            if not self.stopping:  # not cancelled by this run
                self._fatal(i, asyncio.CancelledError())
        elif mode != BATCH_ATTEMPTS:
            self._settle(i, exc, started, ctx)
        elif isinstance(exc, _Pending):  # the run stopped during a backoff
            self.state[i] = _PENDING
        elif isinstance(exc, _StepFailed):
            self._fail(i, exc.error, exc.attempt)
        elif isinstance(exc, Halt):
            self._halt(i, exc)
        elif isinstance(exc, Exception):
            if self.fast_events:
                self._emit_now("step_error", self.names[i], self.attempts[i] or 1, error=exc)
            self._fail(i, exc, self.attempts[i] or 1)
        else:
            self._fatal(i, exc)

    def _done_plain(self, i: int, value: Any) -> None:
        """Plain step i (simple arguments) completed with value: `_record`, or what it
        amounts to when there is nothing to release."""
        if self.releasing:
            self._record(i, value, None)
            return
        plan = self.plan
        if plan.has_undo[i]:  # as _record keeps it: the values, named only if undo runs
            self.undo_stack.append((i, value, plan.fetch[i](self.vals)))  # type: ignore[misc]
        self.state[i] = _DONE
        self.vals[i] = value
        self.n_done += 1
        if self.n_done == self.n:
            self._wake_coordinator()

    async def _work(self, i: int, preset: Any = _UNSET) -> None:
        """A worker task: run step i, then keep running the ready steps it is handed."""
        try:
            await self._steps(i, preset, True)
        finally:
            del self.tasks[i]
            if not self.tasks and (self.stopping or self.n_done == self.n):
                self._wake_coordinator()

    async def _steps(self, i: int, preset: Any, first: bool) -> None:
        """Run step i (its value preset, for NewSteps from a plain def), then the steps the
        worker is handed, until none is left.

        The first step of a task runs in the task's own context; later ones each in a
        fresh copy of the caller's context (through `_InContext` once they suspend).
        """
        streak = 0
        plan = self.plan
        exclusive = plan.exclusive
        while i >= 0:
            ran = i  # i is reassigned on failure before the finally below runs
            if exclusive[i]:
                self._gate(i)
            arguments: dict[str, Any] | None = None
            outer = None
            started = None  # for a plain step's span and events (`_plain_start`)
            step_ctx = None  # a plain step's own context, when not this task's
            try:
                if self.stopping:
                    raise _Pending
                if streak and streak % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # long inline streaks still let others run
                    if self.stopping:
                        raise _Pending
                if self.outer_limiter is not None and self._takes_slot(i):
                    await self.outer_limiter.acquire(plan.steps[i].concurrency_key)
                    outer = self.outer_limiter
                if preset is not _UNSET:
                    value, preset = preset, _UNSET
                    if self.plain_open:
                        started, step_ctx = self.plain_open.pop(i, (None, None))
                else:
                    kind = self.kinds[i]
                    if kind == _ASYNC:
                        if not first:
                            step_ctx = self.base_ctx.copy()
                        if self.report_plain:
                            started = self._plain_start(i, step_ctx)
                        fetch = plan.fetch[i]
                        if fetch is not None:
                            args = fetch(self.vals)
                            self.attempts[i] = 1
                            coro = plan.fns[i](*args)
                        else:
                            arguments = {}  # named as resolved, for the undo record
                            pos, kw = self._args(i, 1, arguments)
                            self.attempts[i] = 1
                            coro = plan.fns[i](*pos, **kw)
                    else:
                        coro = self._attempts(i)
                    if first:
                        out = await coro
                    else:
                        # In a fresh copy of the caller's context. Most steps finish
                        # without suspending: start it here, and only a step that does
                        # suspend pays for the _InContext trampoline.
                        ctx = step_ctx if step_ctx is not None else self.base_ctx.copy()
                        try:
                            yielded = ctx.run(coro.send, None)
                        except StopIteration as stop:
                            out = stop.value
                        else:
                            out = await _InContext(coro, ctx, yielded)
                    if kind == _ASYNC:
                        value = out
                        if self.report_plain and type(value) is not NewSteps:
                            self._plain_end(i, "step_complete", started, value, ctx=step_ctx)
                    else:
                        value, arguments = out
                if type(value) is NewSteps:
                    self._drop_slot(i)  # new steps take their own slots
                    value = await self._new_steps(i, value)
                    # The step completes once its new steps have.
                    if self.fast_events and self.kinds[i] != _FEATURED:
                        self._plain_end(i, "step_complete", started, value, ctx=step_ctx)
                    elif self.emit:
                        await self._event("step_complete", i, self.attempts[i] or 1, value=value)
            except _Pending:
                self.state[i] = _PENDING
                i = self._release(i)
                continue
            except _StepFailed as failed:
                self._fail(i, failed.error, failed.attempt)
                i = self._release(i)
                continue
            except Halt as halt:
                if self.fast_events and self.kinds[i] != _FEATURED:
                    self._plain_end(i, "step_halt", started, halt.reason, ctx=step_ctx)
                if arguments and halt._arguments is None:
                    halt._arguments = arguments
                self._halt(i, halt)
                i = self._release(i)
                continue
            except asyncio.CancelledError:
                self.state[i] = _PENDING
                if started is not None:
                    self._plain_end(i, "cancelled", started, ctx=step_ctx)
                if not self.stopping:
                    # Not cancelled by this run (which only cancels once stopping).
                    self._fatal(i, asyncio.CancelledError())
                self._release(i)
                return
            except Exception as exc:
                if self.fast_events and self.kinds[i] != _FEATURED:
                    self._plain_end(i, "step_error", started, error=exc, ctx=step_ctx)
                elif self.fast_events:
                    self._emit_now("step_error", self.names[i], self.attempts[i] or 1, error=exc)
                self._fail(i, exc, self.attempts[i] or 1)
                i = self._release(i)
                continue
            except BaseException as exc:
                if started is not None:
                    self._plain_end(i, "cancelled", started, ctx=step_ctx)
                self._fatal(i, exc)
                i = self._release(i)
                continue
            finally:
                if exclusive[ran]:
                    self._ungate(ran)
                if outer is not None:
                    outer.release_and_wake(plan.steps[ran].concurrency_key)
            first = False
            streak += 1
            if value is _Skipped:
                self._record(i, None, None, undoable=False)
            else:
                self._record(i, value, arguments)
            # Drop this worker's references to the step's result and arguments: from here
            # they live in vals only, and are released when no remaining step needs them.
            value = out = arguments = None
            args = ()
            i = self._continue(i)
            if self.gate == 0 and self.held and not self.stopping:
                held, self.held = self.held, []
                self._start_many(held)

    def _dependencies(self) -> Mapping[str, tuple[str, ...]]:
        """Each step's dependencies (and inputs) by name, for RunInfo: the plan's own when
        the names carry no prefix, so a run builds nothing."""
        plan = self.plan
        if not self.prefix:
            return types.MappingProxyType(plan.structure)  # read-only: it is the plan's
        names = dict(zip(plan.order, self.names, strict=True))
        return {
            names[step]: tuple(names.get(d, d) for d in deps)
            for step, deps in plan.structure.items()
        }

    def _takes_slot(self, i: int) -> bool:
        """Whether step i counts against a limiter: async and executor steps, not composites
        (their children do) nor plain defs on the loop thread."""
        step = self.plan.steps[i]
        return not step.composite and (
            step.is_async or step.executor is not None or self.default_executor is not None
        )

    def _drop_slot(self, i: int) -> None:
        """Step i stops holding its slot early (it waits on child steps that need slots).

        Not one step at a time (async_=False): the children have their own one slot, and
        the parent's must stay taken so nothing else of the parent starts meanwhile.
        """
        if not self.async_:
            return
        nxt = self._release(i)
        if nxt >= 0:
            self._spawn(nxt)

    def _continue(self, i: int, batch: list[int] | None = None) -> int:
        """After step i completed in a worker: start what became ready; return a step to run.

        The worker keeps the most critical newly ready step that can use i's slot (or needs
        none); the others get tasks or wait for slots, and plain ones join `batch` (a
        batch worker's pending steps) or one new batch. Then i's slot, if still held, is
        released, which may hand back a waiting step of this run to continue with.
        """
        limiter = self.limiter
        if limiter is None and not self.stopping:
            # No slots to inherit or hand back. A step with a single dependent (a chain)
            # needs no list: the same decisions as below, for that one step.
            dependents = self.ready_order[i]
            if not dependents:
                return -1
            if len(dependents) == 1:
                d = dependents[0]
                remaining = self.remaining
                remaining[d] -= 1
                if remaining[d] or self.state[d] != _PENDING:
                    return -1
                if self.gate:
                    self.held.append(d)
                elif self.kinds[d] == _SYNC:
                    self._run_sync_chain(d)
                else:
                    self.state[d] = _STARTED
                    if self.plan.exclusive[d]:
                        self._gate(d)
                    return d
                return -1
        cont = -1
        kinds = self.kinds
        needs_slot = self.needs_slot
        plain = self.plain
        spare = batch if batch is not None else []
        remaining = self.remaining
        state = self.state
        for d in self.ready_order[i]:  # most critical first
            remaining[d] -= 1
            if remaining[d] or state[d] != _PENDING:
                continue
            if self.stopping:  # an error stood (a plain def below may have failed): no starts
                break
            if self.gate:
                self.held.append(d)
            elif plain[d]:  # (only in runs with no limiter, and never async_=False)
                if cont < 0:
                    cont = d
                    state[d] = _STARTED
                else:
                    spare.append(d)  # pending until the batch worker starts it
            elif kinds[d] == _SYNC:
                self._run_sync_chain(d)
            elif not needs_slot[d]:
                if cont < 0:
                    cont = d
                    self.state[d] = _STARTED
                    if self.plan.exclusive[d]:
                        self._gate(d)  # holds back the siblings that follow
                else:
                    self._spawn(d)  # what _launch does for a step that needs no slot
            elif (
                cont < 0
                and self.holding[i]
                and self.plan.steps[d].concurrency_key == self.plan.steps[i].concurrency_key
                and not limiter.outranks(self.priority[d])  # type: ignore[union-attr]
            ):
                cont = d  # inherits i's slot
                self.state[d] = _STARTED
                self.holding[i] = 0
                self.holding[d] = 1
                if self.plan.exclusive[d]:
                    self._gate(d)
            else:
                self._launch(d)
        if spare and batch is None and not self.stopping:
            self._spawn_batch(spare)
        if limiter is None:
            return cont  # no slot to give back
        nxt = self._release(i)
        if cont < 0:
            return nxt
        if nxt >= 0:
            self._spawn(nxt)
        return cont

    # ------------------------------------------------------------------ attempts
    async def _attempts(
        self, i: int, failed: BaseException | None = None
    ) -> tuple[Any, dict[str, Any] | None]:
        """Run step i with its options: guard, attempts, timeout, retries, compensation.

        Returns the value and, when a callback needed them, the arguments by name (so undo
        does not build them again). `failed`: what the attempt a batch worker already made
        raised (``BATCH_TRY``), handled as if this attempt had raised it.
        """
        step = self.plan.steps[i]
        retries = step.retries
        first_attempt = self.attempts[i] - (failed is not None)
        # Built only when a callback needs them: most attempts succeed without.
        arguments: dict[str, Any] | None = None
        fetch = self.plan.fetch[i]
        # Plain awaits or calls need no _call frame (no executor, no timeout).
        direct = self.plan.direct[i] and (step.is_async or self.default_executor is None)
        # Arguments resolved through paths or transforms, which callbacks will want.
        keeps_arguments = fetch is None and (
            self.plan.has_undo[i] or step.compensate_callback is not None
        )
        guarded = None  # the arguments the guard was given, when they need resolving
        if step.when is not None:
            arguments = self._named_args(i, first_attempt + 1)
            if fetch is None:
                guarded = arguments
            ok = step.when.fn(**step.when.kwargs(arguments, self._context(i, 1)))
            if inspect.isawaitable(ok):
                ok = await ok
            if not ok:
                if self.emit:
                    await self._event("guard_skip", i, 0)
                return _Skipped, arguments
        attempt = first_attempt
        while True:
            attempt += 1
            self.attempts[i] = attempt
            if self.emit:
                await self._event("step_start", i, attempt)
            # False while the arguments are resolved: if that fails (a path, a transform)
            # the step never ran, and there is nothing for compensate to make good.
            called = True
            try:
                if failed is not None:
                    exc, failed = failed, None
                    raise exc
                if direct:
                    assert fetch is not None
                    value = step.fn(*fetch(self.vals))
                    if step.is_async:
                        value = await value
                elif step.composite:
                    if arguments is None:
                        called = False
                        arguments = self._named_args(i, attempt)
                        called = True
                    value = await self._composite(step, i, arguments)
                else:
                    # Callbacks get this attempt's arguments: transforms run once each
                    # (the guard's, for the attempt right after it).
                    if guarded is not None:
                        arguments, guarded = guarded, None
                        pos, kw = self._split(i, arguments)
                    else:
                        arguments = {} if keeps_arguments else None
                        called = False
                        pos, kw = self._args(i, attempt, arguments)
                        called = True
                    value = await self._call(i, step, pos, kw)
            except Halt as halt:
                if self.emit:
                    await self._event("step_halt", i, attempt, value=halt.reason)
                if arguments:
                    halt._arguments = arguments
                raise
            except Exception as exc:
                error: BaseException = exc
                retryable = isinstance(exc, Retry) or (
                    bool(step.retry_on)
                    and isinstance(exc, step.retry_on)
                    and not isinstance(exc, OffloadError)  # it would fail the same way again
                )
                if retryable and attempt - first_attempt <= retries:
                    delay = self._delay(step, attempt - first_attempt, exc)
                    if self.emit:
                        await self._event("step_retry", i, attempt, value=delay, error=exc)
                    await self._pause(delay)
                    continue
                if isinstance(exc, Retry):
                    error = _unwrap_retry(exc)
                if self.emit:
                    await self._event("step_error", i, attempt, error=error)
                compensate = step.compensate_callback if called else None
                if compensate is not None:
                    if arguments is None:
                        arguments = self._named_args(i, attempt)
                    if self.emit:
                        await self._event("compensate_start", i, attempt, error=error)
                    try:
                        out = compensate.fn(
                            error, **compensate.kwargs(arguments, self._context(i, attempt))
                        )
                        if inspect.isawaitable(out):
                            out = await self._shielded(out)
                    except Retry as retry:
                        if attempt - first_attempt <= retries:
                            delay = self._delay(step, attempt - first_attempt, retry)
                            if self.emit:
                                await self._event(
                                    "compensate_retry", i, attempt, value=delay, error=retry
                                )
                            await self._pause(delay)
                            continue
                        # No attempt left: compensation ended and the error stands.
                        if self.emit:
                            await self._event("compensate_complete", i, attempt, error=error)
                    except Exception as cexc:
                        if self.emit:
                            await self._event("compensate_error", i, attempt, error=cexc)
                        raise _StepFailed(cexc, attempt) from None
                    else:
                        if isinstance(out, Continue):
                            if self.emit:
                                await self._event(
                                    "compensate_continue", i, attempt, value=out.value
                                )
                            return out.value, arguments
                        if self.emit:
                            await self._event("compensate_complete", i, attempt, error=error)
                if retryable or attempt - first_attempt > 1:
                    error.add_note(f"(after {attempt - first_attempt} attempts)")
                raise _StepFailed(error, attempt) from None
            if self.emit and type(value) is not NewSteps:  # else: once the new steps are done
                await self._event("step_complete", i, attempt, value=value)
            return value, arguments

    def _context(self, i: int, attempt: int) -> Context:
        return Context(self.run_id, self.names[i], attempt, self.data, self.plan.reactor)

    @staticmethod
    def _delay(step: Any, attempt: int, exc: BaseException) -> float:
        if isinstance(exc, Retry) and exc.delay is not None:
            return float(exc.delay)
        backoff = step.backoff
        if backoff is None:
            return 0.0
        if callable(backoff):
            return float(backoff(attempt, exc))
        return float(backoff)

    async def _pause(self, delay: float) -> None:
        """Wait out a backoff, but give up (leaving the step pending) if the run stops."""
        if self.stopping:
            raise _Pending
        if delay > 0:
            stop = self.loop.create_future()  # type: ignore[union-attr]
            self._stop_waiters.add(stop)
            try:
                await asyncio.wait((stop,), timeout=delay)
            finally:
                self._stop_waiters.discard(stop)
                stop.cancel()
        else:
            await asyncio.sleep(0)
        if self.stopping:
            raise _Pending

    async def _call(self, i: int, step: Any, pos: list[Any], kw: dict[str, Any]) -> Any:
        """One attempt: call the function (inline, awaited, or in an executor)."""
        executor = step.executor if step.executor is not None else self.default_executor
        if executor is not None and not step.is_async:
            call = self._in_executor(i, step, executor, pos, kw)
        elif step.is_async:
            call = step.fn(*pos, **kw)
        else:
            return step.fn(*pos, **kw)
        if step.timeout is None:
            return await call
        async with asyncio.timeout(step.timeout):
            return await call

    async def _composite(self, step: Any, i: int, arguments: dict[str, Any]) -> Any:
        self.extra_undo.pop(i, None)
        self.halted_undo.pop(i, None)
        self.halted_marks.pop(i, None)
        if step.timeout is None:
            return await step.call(self, i, arguments)
        async with asyncio.timeout(step.timeout):
            return await step.call(self, i, arguments)

    def available_values(self, i: int) -> dict[str, Any]:
        """What steps added by step i may use: held results, inputs, i's own arguments."""
        plan = self.plan
        out = {
            name: self.vals[j]
            for j, name in enumerate(plan.order)
            if self.state[j] == _DONE and (self.keep[j] or self.consumers_left[j] > 0)
        }
        out.update(zip(plan.inputs, self.vals[self.n : self.n + len(plan.inputs)], strict=True))
        out.update(self._named_args(i, self.attempts[i] or 1))
        return out

    async def _in_executor(
        self, i: int, step: Any, executor: Any, pos: list[Any], kw: dict[str, Any]
    ) -> Any:
        from ._offload import submit

        loop = asyncio.get_running_loop()
        future = submit(executor, step, pos, kw, self.names[i])
        wrapped = asyncio.wrap_future(future, loop=loop)
        self.in_executor[i] = future
        try:
            return await wrapped
        except asyncio.CancelledError:
            # A timeout or the run's stop cancelled the wait; a call already running in a
            # thread or process cannot be stopped and runs on without us.
            if not future.cancel() and not future.done():
                self.abandoned.append(self.names[i])
            raise
        finally:
            self.in_executor.pop(i, None)

    # ------------------------------------------------------------------ dynamic steps
    async def _new_steps(self, i: int, new: NewSteps) -> Any:
        from ._composite import run_new_steps

        return await run_new_steps(self, i, new)

    # ------------------------------------------------------------------ stopping
    def _stop(self) -> None:
        if not self.stopping:
            self.stopping = True
            if self.limiter is not None:
                self.limiter.discard(self)
                held, self.held = self.held, []
                for j in held:  # held back by an async_=False step with a slot: give it back
                    if self.holding[j]:
                        self.state[j] = _PENDING
                        self._release(j)
            for w in self._stop_waiters:
                if not w.done():
                    w.set_result(None)
        self._wake_coordinator()

    @functools.cached_property
    def _stop_waiters(self) -> set[asyncio.Future[None]]:
        return set()

    def _fail(self, i: int, error: BaseException, attempt: int) -> None:
        self.state[i] = _PENDING
        if self.halt_reason is not _UNSET and not self.errors:
            # Halting: a step that fails while the run drains stays pending for resume.
            return
        error.add_note(f"reactorpy: step {self.names[i]!r} failed (attempt {attempt})")
        self.errors.append(error)
        self._stop()

    def _fatal(self, i: int, error: BaseException) -> None:
        self.state[i] = _PENDING
        if self.fatal is None:
            self.fatal = error
        self._stop()

    def _halt(self, i: int, halt: Halt) -> None:
        if halt.result is not _UNSET:
            self._record(i, halt.result, halt._arguments)
        else:
            self.state[i] = _PENDING
        if self.halt_reason is _UNSET:
            self.halt_reason = halt.reason
            self.halt_step = self.names[i]
        self._stop()

    def _on_deadline(self) -> None:
        if not self.stopping and self.n_done < self.n:
            self.halt_reason = "timeout"
            self.halt_step = None
            self._stop()

    @staticmethod
    async def _shielded(aw: Any) -> Any:
        """Await `aw` to the end even if this task is cancelled meanwhile; re-cancel after.

        Undo and compensation must finish once started: the cancellation that interrupts
        the run is delivered when they are done.
        """
        task = asyncio.ensure_future(aw)
        cancelled = False
        while not task.done():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                if task.done():
                    break
                cancelled = True
        if cancelled:
            task.result()
            raise asyncio.CancelledError
        return task.result()

    async def _drain(self) -> None:
        """Await running steps for `grace` seconds, then cancel the rest."""
        if self.tasks:
            _, pending = await asyncio.wait(set(self.tasks.values()), timeout=self.grace)
            if pending:
                await self._cancel_tasks()

    async def _cancel_tasks(self) -> None:
        for t in list(self.tasks.values()):
            t.cancel()
        if self.tasks:
            await asyncio.wait(set(self.tasks.values()))
        # A worker cancelled before it first ran never entered its body, so its bookkeeping
        # (slot, live count, task entry) is done here.
        for j, t in list(self.tasks.items()):
            if t.done():
                del self.tasks[j]
                if self.state[j] != _DONE:
                    self.state[j] = _PENDING
                self._release(j)

    async def _cancelled(self, cancelled: asyncio.CancelledError) -> None:
        """run() itself was cancelled: cancel running steps now, undo, tell middleware."""
        self._stop()
        await self._cancel_tasks()
        errors = await self._undo_all()
        for error in errors:
            # Undo errors cannot travel with CancelledError: attach them as notes.
            cancelled.add_note(f"reactorpy: undo failed during cancellation: {error!r}")
        if self.mw is not None:
            await self.mw.call("on_run_error", self.info, cancelled)

    # ------------------------------------------------------------------ undo
    def child_halted(self, i: int, name: str, inner: Any, records: list[UndoRecord]) -> None:
        """The child of composite step i halted inside it: keep its checkpoint (`inner`, to
        resume inside it) and what it completed (undone if this run fails instead)."""
        self.inner[name] = inner
        self.halted_undo[i] = records
        self.halted_marks[i] = len(self.undo_stack)

    def _with_halted(self) -> list[UndoRecord | tuple[int, Any, Sequence[Any]]]:
        """The undo stack with the records of children that halted inside placed where
        they halted (later completions of this run are newer)."""
        stack = list(self.undo_stack)
        marks = self.halted_marks
        for i in sorted(self.halted_undo, key=lambda j: -marks.get(j, len(stack))):
            mark = marks.get(i, len(stack))
            stack[mark:mark] = self.halted_undo[i]
        return stack

    async def _undo_all(self, down_to: int = 0) -> list[BaseException]:
        """Undo completed steps, newest first, until `down_to` are left; return the undo
        errors."""
        if self.halted_undo:  # children halted inside: the run failed instead
            self.undo_stack = self._with_halted()
            self.halted_undo.clear()
        errors: list[BaseException] = []
        stack = self.undo_stack
        while len(stack) > down_to:
            record = self._as_record(stack.pop())
            err = await self._undo_one(record)
            if err is not None:
                errors.append(err)
        return errors

    async def _undo_event(
        self, kind: str, name: str, attempt: int, *, error: BaseException | None = None
    ) -> None:
        """Tell middleware about an undo; a hook that fails must not stop the undo itself."""
        try:
            await self._event_named(kind, name, attempt, error=error)
        except Exception as exc:
            exc.add_note(f"reactorpy: middleware failed on {kind} of step {name!r}")
            self.hook_errors.append(exc)

    def _as_record(self, entry: UndoRecord | tuple[int, Any, Sequence[Any]]) -> UndoRecord:
        if isinstance(entry, UndoRecord):
            return entry
        i, value, argvals = entry
        names = self.plan.param_names[i]
        return UndoRecord(self.plan.order[i], value, dict(zip(names, argvals, strict=True)))

    def _routed_callback(self, route: tuple[str, ...]) -> Callback | None:
        """The undo callback of the step at `route` (see `UndoRecord.route`)."""
        reactor: Any = self.reactor
        for k in range(0, len(route) - 1, 2):
            children = getattr(reactor.steps.get(route[k]), "children", None) or {}
            reactor = children.get(route[k + 1])
            if reactor is None:
                return None
        step = reactor.steps.get(route[-1])
        return None if step is None else step.undo_callback

    def undo_records(self, halted: bool = False) -> list[UndoRecord]:
        """The undo stack as records, oldest first; with `halted`, the records of children
        that halted inside too (what a halted run completed, at every depth)."""
        stack = self._with_halted() if halted and self.halted_undo else self.undo_stack
        return [self._as_record(entry) for entry in stack]

    async def _undo_one(self, record: UndoRecord) -> BaseException | None:
        i = self.plan.index.get(record.step, -1)
        name = self.prefix + record.step
        callback: Callback | None
        if record.undo is not None:
            callback = record.undo
        elif record.route is not None:  # a composed step's, loaded from JSON
            callback = self._routed_callback(record.route)
        else:
            callback = self.plan.steps[i].undo_callback if i >= 0 else None
        if callback is None:  # the definition changed since the record was made
            missing = LookupError(f"undo of step {name!r}: no undo callback found for it")
            missing.add_note(f"reactorpy: undo of step {name!r} failed (attempt 0)")
            return missing
        ctx = Context(self.run_id, name, 1, self.data, self.plan.reactor)
        for attempt in range(1, _UNDO_ATTEMPTS + 1):
            if self.emit:
                await self._undo_event("undo_start", name, attempt)
            try:
                out = callback.fn(record.value, **callback.kwargs(record.arguments, ctx))
                if inspect.isawaitable(out):
                    await out
            except Retry as retry:
                if attempt < _UNDO_ATTEMPTS:
                    if self.emit:
                        await self._undo_event("undo_retry", name, attempt, error=retry)
                    if retry.delay:
                        await asyncio.sleep(retry.delay)
                    continue
                error = _unwrap_retry(retry)
                if error is retry:
                    error = RuntimeError(
                        f"undo of step {name!r} asked to retry {_UNDO_ATTEMPTS} times"
                    )
                error.add_note(
                    f"reactorpy: undo of step {name!r} gave up after {_UNDO_ATTEMPTS} attempts"
                )
                if self.emit:  # ends the last undo_start, like any failed undo
                    await self._undo_event("undo_error", name, attempt, error=error)
                return error
            except Exception as exc:
                if self.emit:
                    await self._undo_event("undo_error", name, attempt, error=exc)
                exc.add_note(f"reactorpy: undo of step {name!r} failed (attempt {attempt})")
                return exc
            if self.emit:
                await self._undo_event("undo_complete", name, attempt)
            return None
        raise AssertionError("unreachable: the last attempt returns")  # pragma: no cover

    # ------------------------------------------------------------------ the end
    async def _finish(self) -> Any:
        if self.errors or self.fatal is not None:
            undo_errors = await self._shielded_undo()
            undo_errors.extend(self.hook_errors)
            if self.fatal is not None:
                if self.mw is not None:
                    await self.mw.call("on_run_error", self.info, self.fatal)
                raise self.fatal
            excs = [e if isinstance(e, Exception) else RuntimeError(repr(e)) for e in self.errors]
            excs.extend(
                e if isinstance(e, Exception) else RuntimeError(repr(e)) for e in undo_errors
            )
            failed = [n for e in self.errors for n in _step_of(e)]
            message = f"reactor {self.plan.reactor!r} failed in step(s) {', '.join(failed)}"
            if undo_errors:
                message += f"; {len(undo_errors)} undo(s) failed too"
            group = RunFailed(message, excs, reactor=self.plan.reactor, abandoned=self.abandoned)
            if self.abandoned:
                group.add_note(
                    "reactorpy: still running in a thread or process, abandoned: "
                    + ", ".join(self.abandoned)
                )
            if self.mw is not None:
                await self.mw.call("on_run_error", self.info, group)
            raise group
        if self.halt_reason is not _UNSET:
            checkpoint = self.make_checkpoint()
            if self.mw is not None:
                await self.mw.call("on_run_halt", self.info, checkpoint)
            raise Halted(self.halt_reason, checkpoint, self.halt_step)
        result = self.result()
        if self.mw is not None:
            result = await self.mw.complete(self.info, result)  # type: ignore[arg-type]
        return result

    async def _shielded_undo(self) -> list[BaseException]:
        out: list[BaseException] = []

        async def undo() -> None:
            out.extend(await self._undo_all())

        await self._shielded(undo())
        return out

    def result(self) -> Any:
        plan = self.plan
        if plan.returns is None:
            results = plan.no_results.copy()
            results.update(zip(plan.order, self.vals, strict=False))
            return results
        return self.vals[plan.return_slot]  # type: ignore[index]

    # ------------------------------------------------------------------ checkpoint
    def make_checkpoint(self) -> Checkpoint:
        plan = self.plan
        done = [name for name, s in zip(plan.order, self.state, strict=True) if s == _DONE]
        results = {}
        for name in done:
            i = plan.index[name]
            v = self.vals[i]
            if self.keep[i] or self.consumers_left[i] > 0:
                results[name] = v
        return Checkpoint(
            reactor=plan.reactor,
            fingerprint=plan.fingerprint,
            structure=dict(plan.structure),
            inputs=dict(self.inputs),
            completed=tuple(done),
            results=results,
            undo_stack=tuple(self.undo_records()),
            attempts={name: a for name, a in zip(plan.order, self.attempts, strict=True) if a},
            reason=self.halt_reason,
            halted_step=self.halt_step,
            inner=dict(self.inner),
            inner_marks={
                plan.order[i]: mark
                for i, mark in self.halted_marks.items()
                if plan.order[i] in self.inner
            },
        )

    def finished_checkpoint(self) -> Checkpoint:
        """What undoing this completed run needs (`Reactor.run_reversible`): the undo
        stack, no results."""
        plan = self.plan
        return Checkpoint(
            reactor=plan.reactor,
            fingerprint=plan.fingerprint,
            structure=dict(plan.structure),
            inputs=dict(self.inputs),
            completed=tuple(n for n, s in zip(plan.order, self.state, strict=True) if s == _DONE),
            results={},
            undo_stack=tuple(self.undo_records()),
            attempts={name: a for name, a in zip(plan.order, self.attempts, strict=True) if a},
            finished=True,
        )

    def _restore(self, cp: Checkpoint) -> None:
        index = self.plan.index
        for name in cp.completed:
            i = index[name]
            self.state[i] = _DONE
            self.n_done += 1
            self.vals[i] = cp.results.get(name)
        for name in cp.completed:
            i = index[name]
            for d in self.plan.dependents[i]:
                self.remaining[d] -= 1
            for j in self.plan.deps[i]:
                self.consumers_left[j] -= 1
        for name, attempts in cp.attempts.items():
            if name in index:
                self.attempts[index[name]] = attempts  # numbering goes on; budgets restart
        self.undo_stack = list(cp.undo_stack)
        self.inner = dict(cp.inner)
        if self.n_done == self.n:
            self._wake_coordinator()

    def _resumable(self) -> list[int]:
        return [i for i in range(self.n) if self.state[i] == _PENDING and self.remaining[i] == 0]

    # ------------------------------------------------------------------ events
    async def _event(
        self,
        kind: str,
        i: int,
        attempt: int,
        *,
        value: Any = None,
        error: BaseException | None = None,
    ) -> None:
        await self._event_named(kind, self.names[i], attempt, value=value, error=error)

    async def _event_named(
        self,
        kind: str,
        name: str,
        attempt: int,
        *,
        value: Any = None,
        error: BaseException | None = None,
    ) -> None:
        if kind not in self.emit_kinds:
            return
        if self.fast_events:
            self._emit_now(kind, name, attempt, value, error)
            return
        assert self.mw is not None
        await self.mw.deliver(self._make_event(kind, name, attempt, value, error))

    def _emit_now(
        self,
        kind: str,
        name: str,
        attempt: int,
        value: Any = None,
        error: BaseException | None = None,
    ) -> None:
        """Deliver an event to sync on_event hooks at once (``fast_events`` runs only)."""
        if kind in self.emit_kinds:
            _deliver(self.event_hooks, self._make_event(kind, name, attempt, value, error))

    def _plain_start(
        self, i: int, ctx: contextvars.Context | None = None
    ) -> tuple[float, int] | None:
        """Plain step i starts its only attempt (``fast_events`` runs): a ``step_start``
        event for the on_event hooks that want it, delivered in `ctx` (the step's own
        context, if not the current one); the start time and concurrency for span
        recorders (`SPAN_RECORDER`), returned for `_plain_end`, if there are any."""
        if "step_start" in self.plain_kinds:
            self._plain_event("step_start", i, None, None, ctx)
        return (self.clock(), len(self.tasks)) if self.spans else None

    def _plain_end(
        self,
        i: int,
        kind: str,
        started: tuple[float, int] | None,
        value: Any = None,
        error: BaseException | None = None,
        *,
        ctx: contextvars.Context | None = None,
    ) -> None:
        """Plain step i's attempt ended: `kind` is ``step_complete``, ``step_error``,
        ``step_halt`` or ``cancelled`` (no event: its run ends it). The event is delivered
        in `ctx`, as `_plain_start`'s was, before the span is recorded: when a hook raises,
        the step fails instead, and its span is recorded once, as an error."""
        if kind in self.plain_kinds:
            self._plain_event(kind, i, value, error, ctx)
        if started is not None:
            record = (
                self.names[i], self.run_id, "step", 1, started[0], self.clock(),
                _OUTCOMES[kind], started[1], error,
            )  # fmt: skip
            for hook in self.spans:
                hook(record)

    def _plain_event(
        self,
        kind: str,
        i: int,
        value: Any,
        error: BaseException | None,
        ctx: contextvars.Context | None,
    ) -> None:
        """An event of plain step i to the on_event hooks that take events, in `ctx`."""
        event = self._make_event(kind, self.names[i], 1, value, error)
        if ctx is None:
            _deliver(self.plain_hooks, event)
        else:
            ctx.run(_deliver, self.plain_hooks, event)

    def _make_event(
        self, kind: str, name: str, attempt: int, value: Any, error: BaseException | None
    ) -> Event:
        """``concurrency`` is the run's worker tasks: each runs one step at a time."""
        return Event(kind, name, attempt, self.clock(), value, error, self.run_id, len(self.tasks))


class _SkippedType:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<skipped>"


_Skipped: Final = _SkippedType()


def _deliver(hooks: Sequence[tuple[Any, frozenset[str] | None]], event: Event) -> None:
    """Give `event` to each sync on_event hook that wants its kind."""
    kind = event.kind
    for hook, kinds in hooks:
        if kinds is None or kind in kinds:
            hook(event)


def _no_clock() -> float:  # pragma: no cover - replaced when the run starts
    raise RuntimeError("the run has not started")


def _kind(step: Any, emit: bool, async_: bool) -> int:
    if emit or step.has_features or step.composite:
        return _FEATURED
    if step.is_async:
        return _ASYNC
    return _SYNC if async_ else _FEATURED


def _task_factory(loop: asyncio.AbstractEventLoop) -> Callable[..., asyncio.Task[None]]:
    """How this run makes worker tasks: ``loop.create_task``, or what it amounts to.

    On a stock loop with no task factory (and no debug traceback trimming), create_task is
    just ``asyncio.Task(coro, loop=loop, context=ctx)`` behind a Python-level call; a fan-out
    makes one task per step, so it skips the wrapper.
    """
    if (
        type(loop).create_task is asyncio.BaseEventLoop.create_task
        and loop.get_task_factory() is None
        and not loop.get_debug()
    ):
        return functools.partial(asyncio.Task, loop=loop)
    return loop.create_task


def _unwrap_retry(retry: Retry) -> BaseException:
    if retry.__cause__ is not None:
        return retry.__cause__
    if isinstance(retry.reason, BaseException):
        return retry.reason
    return retry


def _transformed(transform: Callable[[Any], Any], value: Any, step: str, param: str) -> Any:
    try:
        return transform(value)
    except Exception as exc:
        exc.add_note(f"reactorpy: the transform of argument {param!r} of step {step!r} raised")
        raise


def _step_of(error: BaseException, prefix: str = "reactorpy: step ") -> list[str]:
    for note in getattr(error, "__notes__", ()):
        if note.startswith(prefix):
            return [note.split("'")[1]]
    return []


def _retried(exc: BaseException) -> bool:
    """Whether a ``BATCH_TRY`` step's failure goes on to its attempts (retry, compensate):
    errors do; halts, cancellation and interrupts do not."""
    return isinstance(exc, Exception) and not isinstance(exc, Halt)
