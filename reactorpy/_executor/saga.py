"""The saga: what a run has done that can be undone, and undoing it.

Owns: `UndoLedger` (the undo stack of one run: push a completion, splice the records of a
composite's children as one unit, keep the records of children that halted inside a step
where they halted, pop newest first), `Undoer` (undo one record, with retries, events
and errors collected; undo everything newest first), and the own undo record of a step
that returned new steps (`push_own`, `owns`, `own_record`). Undo never raises: every error
of an undo callback, or of a hook that watches it, is returned to the caller, which reports
it with the run's own errors.
Must not import: the scheduler, the composites.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from .._arguments import Context
from .._checkpoint import BY_REFERENCE, UndoRecord, by_reference, reference_route
from .._errors import DefinitionError, Retry, annotate
from .._events import make_event
from .._signature import Callback
from .._step import NewSteps

if TYPE_CHECKING:
    from .._events import Middleware
    from .._plan import Plan
    from .._reactor import Reactor
    from .durable import Durable
    from .run import Run

__all__ = [
    "UNDO_ATTEMPTS",
    "UndoLedger",
    "Undoer",
    "own_record",
    "owns",
    "push_own",
    "routed_callback",
    "undo_route",
]

UNDO_ATTEMPTS: Final = 5

# An entry: an UndoRecord, or a simple step's (plan index, value, argument values), named
# only when read (most undo stacks are never undone).
Entry = UndoRecord | tuple[int, Any, Sequence[Any]]


class UndoLedger:
    """The undo stack of one run, oldest first.

    Invariants: each completed step with an undo is in it once, in completion order; a
    composite's children's records are spliced in as one unit when the composite completes;
    records of a child that halted inside composite step ``i`` are kept apart in
    ``halted[i]`` with the length of the stack when it halted (``marks[i]``), so that steps
    this run completed later are newer than them.
    """

    __slots__ = ("entries", "halted", "marks", "plan")

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.entries: list[Entry] = []
        self.halted: dict[int, list[UndoRecord]] = {}
        self.marks: dict[int, int] = {}

    def __repr__(self) -> str:
        return f"<UndoLedger: {len(self.entries)} entries, halted inside {sorted(self.halted)}>"

    def __len__(self) -> int:
        return len(self.entries) + sum(len(r) for r in self.halted.values())

    def push(self, entry: Entry) -> None:
        """A step completed that can be undone."""
        self.entries.append(entry)

    def splice(self, records: Sequence[UndoRecord]) -> None:
        """A composite completed: its children's records, oldest first, as one unit."""
        self.entries.extend(records)

    def hold_halted(self, i: int, records: list[UndoRecord], mark: int | None = None) -> None:
        """The child of composite step `i` halted inside it, having completed `records`."""
        self.halted[i] = records
        self.marks[i] = len(self.entries) if mark is None else mark

    def take_halted(self, i: int) -> list[UndoRecord]:
        """Composite step `i` resumes inside its child (which undoes those records itself,
        if it fails) or starts over: the records leave this ledger."""
        self.marks.pop(i, None)
        return self.halted.pop(i, [])

    def record(self, entry: Entry) -> UndoRecord:
        """An entry as an `UndoRecord`."""
        if isinstance(entry, UndoRecord):
            return entry
        i, value, argvals = entry
        names = self.plan.param_names[i]
        return UndoRecord(self.plan.order[i], value, dict(zip(names, argvals, strict=True)))

    def records(self, with_halted: bool = False) -> list[UndoRecord]:
        """Every record, oldest first; `with_halted`: those of children that halted
        inside too, where they halted."""
        return [self.record(e) for e in (self._merged() if with_halted else self.entries)]

    def _merged(self) -> list[Entry]:
        stack = list(self.entries)
        for i in sorted(self.halted, key=lambda j: -self.marks.get(j, len(self.entries))):
            mark = self.marks.get(i, len(self.entries))
            stack[mark:mark] = self.halted[i]
        return stack

    def pop_all(self, down_to: int = 0) -> list[UndoRecord]:
        """Take the records newer than the first `down_to`, newest first (children that
        halted inside included, where they halted)."""
        if self.halted:
            self.entries = self._merged()
            self.halted.clear()
            self.marks.clear()
        taken = self.entries[down_to:]
        del self.entries[down_to:]
        return [self.record(e) for e in reversed(taken)]


class Undoer:
    """Runs undo callbacks for one run: events, retries (`rp.Retry`, at most
    `UNDO_ATTEMPTS` attempts), errors collected, never raised.

    Each error is returned with a note naming the step; the names of the steps whose undo
    failed are kept in `failed` (never read back from notes).
    """

    __slots__ = (
        "data",
        "durable",
        "emitter",
        "failed",
        "plan",
        "prefix",
        "reactor",
        "root_id",
        "run_id",
    )

    def __init__(
        self,
        reactor: Reactor,
        plan: Plan,
        run_id: str,
        prefix: str,
        data: dict[str, Any],
        emitter: Middleware | None,
        root_id: str,
        durable: Durable | None,
    ) -> None:
        self.reactor = reactor
        self.root_id = root_id
        self.durable = durable
        self.plan = plan
        self.run_id = run_id
        self.prefix = prefix
        self.data = data
        self.emitter = emitter
        self.failed: list[str] = []

    async def undo_all(self, records: Sequence[UndoRecord]) -> list[BaseException]:
        """Undo `records` in the order given (newest first); return the errors."""
        errors: list[BaseException] = []
        for record in records:
            errors.extend(await self.undo_one(record))
        return errors

    async def undo_one(self, record: UndoRecord) -> list[BaseException]:
        """Undo one record; return its error and the errors of hooks watching it."""
        name = self.prefix + record.step
        callback = self._callback(record)
        if callback is None:  # the definition changed since the record was made
            missing = LookupError(f"undo of step {name!r}: no undo callback found for it")
            return [self._failed(name, missing, 0)]
        ctx = Context(self.run_id, name, 1, self.data, self.reactor.name, f"{self.root_id}:{name}")
        hook_errors: list[BaseException] = []
        for attempt in range(1, UNDO_ATTEMPTS + 1):
            await self._event("undo_start", name, attempt, None, hook_errors)
            try:
                out = callback.fn(record.value, **callback.kwargs(record.arguments, ctx))
                if inspect.isawaitable(out):
                    await out
            except Retry as retry:
                if attempt < UNDO_ATTEMPTS:
                    await self._event("undo_retry", name, attempt, retry, hook_errors)
                    if retry.delay:
                        await asyncio.sleep(retry.delay)
                    continue
                error = _gave_up(retry, name)
                await self._event("undo_error", name, attempt, error, hook_errors)
                return [self._failed(name, error, attempt, gave_up=True), *hook_errors]
            except asyncio.CancelledError as cancelled:
                # Undo runs shielded: nothing outside cancels it. A CancelledError here is
                # the callback's own (a future it awaited was cancelled): an undo error.
                error = RuntimeError(f"undo of step {name!r} was cancelled inside")
                error.__cause__ = cancelled
                await self._event("undo_error", name, attempt, error, hook_errors)
                return [self._failed(name, error, attempt), *hook_errors]
            except BaseException as exc:  # an Exception, or KeyboardInterrupt/SystemExit
                await self._event("undo_error", name, attempt, exc, hook_errors)
                return [self._failed(name, exc, attempt), *hook_errors]
            await self._event("undo_complete", name, attempt, None, hook_errors)
            if self.durable is not None:
                try:
                    await self.durable.undone_now(name)
                except Exception as exc:  # the undo ran: the others still run
                    annotate(exc, f"reactorpy: the journal could not record the undo of {name!r}")
                    return [*hook_errors, exc]
            return hook_errors
        raise AssertionError("unreachable: the last attempt returns")  # pragma: no cover

    def _failed(
        self, name: str, error: BaseException, attempt: int, *, gave_up: bool = False
    ) -> BaseException:
        self.failed.append(name)
        if self.durable is not None:  # (what no undo of this run's journal runs again)
            self.durable.failed.add(name)
        how = f"gave up after {attempt} attempts" if gave_up else f"failed (attempt {attempt})"
        annotate(error, f"reactorpy: undo of step {name!r} {how}")
        return error

    def _callback(self, record: UndoRecord) -> Callback | None:
        if record.undo is not None:
            return record.undo  # type: ignore[no-any-return]
        if record.route is not None:  # a composed step's, loaded from JSON
            return routed_callback(self.reactor, record.route)
        i = self.plan.index.get(record.step)
        return None if i is None else self.plan.steps[i].undo_callback

    async def _event(
        self,
        kind: str,
        name: str,
        attempt: int,
        error: BaseException | None,
        hook_errors: list[BaseException],
    ) -> None:
        """Tell middleware; a hook that fails is reported, and the undo goes on."""
        emitter = self.emitter
        if emitter is None or not emitter.wants(kind):
            return
        loop = asyncio.get_running_loop()
        event = make_event(kind, name, attempt, loop.time(), None, error, self.run_id, 0)
        failed = emitter.send(event) if emitter.sync_events else await emitter.asend(event)
        if failed is not None:
            annotate(failed, f"reactorpy: middleware failed on {kind} of step {name!r}")
            hook_errors.append(failed)


def routed_callback(reactor: Any, route: tuple[str, ...]) -> Callback | None:
    """The undo callback of the step at `route`, or of the function it names (see
    `UndoRecord.route`)."""
    if route and route[0] == BY_REFERENCE:
        fn = by_reference(route)
        if fn is None:
            return None
        try:
            return Callback.of(fn, leading=True, what=f"the undo {route[1]}.{route[2]}")
        except DefinitionError:  # what it names now is no undo callback
            return None
    for k in range(0, len(route) - 1, 2):
        children = getattr(reactor.steps.get(route[k]), "children", None) or {}
        reactor = children.get(route[k + 1])
        if reactor is None:
            return None
    step = reactor.steps.get(route[-1])
    return None if step is None else step.undo_callback


def _gave_up(retry: Retry, name: str) -> BaseException:
    """The error of an undo that asked to retry once too often."""
    if retry.__cause__ is not None:
        return retry.__cause__
    if isinstance(retry.reason, BaseException):
        return retry.reason
    return RuntimeError(f"undo of step {name!r} asked to retry {UNDO_ATTEMPTS} times")


# --------------------------------------------------------------- a step's own undo record


def undo_route(run: Run, i: int) -> tuple[str, ...] | None:
    """The route the journal keeps with step `i`'s undo record (`UndoRecord.route`): from
    the root reactor to the step; for a step made at run time, where its undo callback is
    defined (`reference_route`), or None."""
    if run.route is not None:
        return (*run.route, run.plan.order[i])
    callback = run.plan.steps[i].undo_callback
    return reference_route(callback.fn) if callback is not None else None


def push_own(run: Run, i: int, value: Any, args: dict[str, Any] | None) -> UndoRecord | None:
    """Step `i` returned `value`. New steps that do not replace it: its own work is done
    (Elixir's Reactor counts it complete then), so its undo goes on the stack now, even if
    they fail, before what completes after. Returns the record it pushed, if it did (its
    completion then journals it, and pushes none)."""
    if not owns(run, i, value):
        return None
    named = args if args is not None else run.named_args(i, run.st.attempts[i] or 1)
    own = UndoRecord(run.plan.order[i], value.value, named)
    run.ledger.push(own)
    return own


def owns(run: Run, i: int, value: Any) -> bool:
    """Whether step `i`, returning `value`, has an undo of its own before it completes."""
    return type(value) is NewSteps and bool(run.modes.undo[i]) and not _replaces(run, i, value)


def own_record(run: Run, i: int) -> UndoRecord | None:
    """Step `i`'s own undo record on the stack (`push_own`), if it is there."""
    name, entries = run.plan.order[i], reversed(run.ledger.entries)
    mine = (e for e in entries if isinstance(e, UndoRecord) and e.step == name)
    return next((e for e in mine if e.route is None), None)


def _replaces(run: Run, i: int, new: NewSteps) -> bool:
    """Whether one of `new`'s steps replaces step `i` (its result is then theirs)."""
    return any(s.name == run.plan.order[i] for s in new.steps)
