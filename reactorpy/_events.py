"""Events and middleware: what a run tells the outside world.

Owns: the `Event` and `RunInfo` records, the list of event kinds, and `Middleware` dispatch
(hooks may be sync or async, and any subset of them may be defined).
Must not import: the executor's internals.

Hook order for one run: ``on_run_start``, then ``on_event`` for each step event as it happens,
then exactly one of ``on_run_complete``, ``on_run_error`` or ``on_run_halt`` (a run cancelled
from outside, or ended by a ``KeyboardInterrupt``, ends with ``on_run_error`` given that
exception). Middleware given
to the reactor run before middleware given to ``run()``; each hook is called on every middleware
in that order (``on_run_complete`` threads the result through them).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple

import attrs

__all__ = ["EVENT_KINDS", "Event", "Middleware", "RunInfo"]

EVENT_KINDS: Final = frozenset(
    {
        "step_start",
        "step_complete",
        "step_error",
        "step_retry",
        "step_halt",
        "compensate_start",
        "compensate_complete",
        "compensate_continue",
        "compensate_retry",
        "compensate_error",
        "undo_start",
        "undo_complete",
        "undo_retry",
        "undo_error",
        "guard_skip",
    }
)


class Event(NamedTuple):
    """One thing that happened to one step: a frozen record (a named tuple, so that a
    traced run, which builds two per step, pays little for them).

    Attributes:
        kind: one of `EVENT_KINDS`.
        step: the step's name; steps of composed reactors are named ``parent.child``.
        attempt: the attempt number, from 1 (0 for undo events before any attempt).
        time: the event loop's clock (``loop.time()``) when it happened.
        value: the result (``step_complete``, ``compensate_continue``), the halt reason
            (``step_halt``), the retry delay (``step_retry``), else None.
        error: the exception, for ``*_error`` and ``*_retry`` kinds.
        run_id: the run it belongs to.
        concurrency: how many of the run's worker tasks were alive at that moment; each
            runs one step at a time, so this is the steps running (a worker that starts
            quick sibling steps one after another counts once).
    """

    kind: str
    step: str
    attempt: int
    time: float
    value: Any = None
    error: BaseException | None = None
    run_id: str = ""
    concurrency: int = 0


@attrs.frozen
class RunInfo:
    """What middleware learns about a run.

    Attributes:
        reactor: the reactor's name.
        run_id: unique per run.
        inputs: the inputs given.
        context: the ``context=`` dict.
        parent: the run_id of the run that composed this one, if any.
        step_names: the planned steps, in plan order.
        critical_path: the plan's critical path.
        start: the loop time at which the run started.
        dependencies: each step's name and the names of the steps (and inputs) it waits for.
    """

    reactor: str
    run_id: str
    inputs: dict[str, Any]
    context: dict[str, Any]
    parent: str | None = None
    step_names: tuple[str, ...] = ()
    critical_path: tuple[str, ...] = ()
    start: float = 0.0
    dependencies: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)


#: Each event kind as (phase, outcome): ``phase`` is ``"step"``, ``"compensate"`` or
#: ``"undo"``; an outcome of None opens a span of that phase, any other closes it (for
#: exporters such as `Trace` and the OpenTelemetry middleware).
EVENT_PHASES: Final[dict[str, tuple[str, str | None]]] = {
    "step_start": ("step", None),
    "step_complete": ("step", "complete"),
    "step_error": ("step", "error"),
    "step_retry": ("step", "retry"),
    "step_halt": ("step", "halt"),
    "guard_skip": ("step", "skip"),
    "compensate_start": ("compensate", None),
    "compensate_complete": ("compensate", "complete"),
    "compensate_continue": ("compensate", "continue"),
    "compensate_retry": ("compensate", "retry"),
    "compensate_error": ("compensate", "error"),
    "undo_start": ("undo", None),
    "undo_complete": ("undo", "complete"),
    "undo_retry": ("undo", "retry"),
    "undo_error": ("undo", "error"),
}
assert EVENT_PHASES.keys() == EVENT_KINDS

_HOOKS: Final = ("on_run_start", "on_run_complete", "on_run_error", "on_run_halt", "on_event")

_new_event = tuple.__new__


def make_event(
    kind: str,
    step: str,
    attempt: int,
    time: float,
    value: Any,
    error: BaseException | None,
    run_id: str,
    concurrency: int,
) -> Event:
    """An `Event`, built as ``Event(...)`` would be, without the keyword handling."""
    return _new_event(Event, (kind, step, attempt, time, value, error, run_id, concurrency))


class Middleware:
    """The hooks of a list of middleware objects, bound once per run: run hooks, and the
    run's event emitter.

    Any object with any of ``on_run_start(run)``, ``on_run_complete(run, result)``,
    ``on_run_error(run, error)``, ``on_run_halt(run, checkpoint)`` and ``on_event(event)``
    is middleware; each hook may be sync or async. Events have one delivery path: the run
    asks `wants` (one set lookup) and builds an `Event` only for a kind some hook wants;
    `send` gives it to the sync hooks, `asend` to all of them.
    """

    __slots__ = ("deliver", "event_hooks", "event_kinds", "hooks", "owners", "sync_events")

    def __init__(self, middleware: Sequence[Any]) -> None:
        self.hooks: dict[str, list[Any]] = {name: [] for name in _HOOKS}
        #: The middleware object of each hook, in the same order.
        self.owners: dict[str, list[Any]] = {name: [] for name in _HOOKS}
        #: Each on_event hook with the kinds it wants (None: all of them).
        self.event_hooks: list[tuple[Any, frozenset[str] | None]] = []
        kinds: set[str] = set()
        for m in middleware:
            found = False
            for name in _HOOKS:
                fn = getattr(m, name, None)
                if fn is not None:
                    self.hooks[name].append(fn)
                    self.owners[name].append(m)
                    found = True
            if not found:
                raise TypeError(
                    f"{m!r} is not middleware: it has none of the hooks {', '.join(_HOOKS)}."
                )
            on_event = getattr(m, "on_event", None)
            if on_event is not None:
                wanted = getattr(m, "event_kinds", None)
                wanted = None if wanted is None else frozenset(wanted)
                self.event_hooks.append((on_event, wanted))
                kinds.update(EVENT_KINDS if wanted is None else wanted)
        #: The kinds some middleware wants: no other event object is ever built. Middleware
        #: may narrow it with an ``event_kinds`` attribute (a collection of kinds).
        self.event_kinds: frozenset[str] = frozenset(kinds)
        #: Whether every on_event hook is a plain function: events are then delivered
        #: without awaiting (`send`).
        self.sync_events = not any(_is_async_hook(fn) for fn in self.hooks["on_event"])
        #: Gives an event to the sync hooks that want it and raises what one raised: the
        #: one hook itself when there is one that wants every kind (no loop, no frame).
        self.deliver: Any = self._deliver_all
        if len(self.event_hooks) == 1 and self.event_hooks[0][1] is None:
            self.deliver = self.event_hooks[0][0]

    def __bool__(self) -> bool:
        return any(self.hooks.values())

    def wants(self, kind: str) -> bool:
        """Whether some on_event hook wants events of `kind` (build none otherwise)."""
        return kind in self.event_kinds

    def _deliver_all(self, event: Event) -> None:
        """`deliver` with several hooks: each that wants the event gets it; the first
        error raised is raised once all have had it."""
        failed = self.send(event)
        if failed is not None:
            raise failed

    def send(self, event: Event) -> BaseException | None:
        """Give `event` to each sync on_event hook that wants it; an async hook's
        coroutine is closed unawaited (use `asend` where hooks may be async).

        Returns the first exception a hook raised (the other hooks still get the event),
        or None: delivering never raises.
        """
        failed: BaseException | None = None
        kind = event.kind
        for fn, kinds in self.event_hooks:
            if kinds is None or kind in kinds:
                try:
                    fn(event)
                except Exception as exc:
                    if failed is None:
                        failed = exc
        return failed

    async def asend(self, event: Event) -> BaseException | None:
        """`send`, awaiting async hooks."""
        failed: BaseException | None = None
        kind = event.kind
        for fn, kinds in self.event_hooks:
            if kinds is None or kind in kinds:
                try:
                    out = fn(event)
                    if inspect.isawaitable(out):
                        await out
                except Exception as exc:
                    if failed is None:
                        failed = exc
        return failed

    async def call(
        self,
        name: str,
        *args: Any,
        told: list[Any] | None = None,
        reached: list[Any] | None = None,
    ) -> list[BaseException]:
        """Call hook `name` on each middleware, awaiting async ones, in order; every hook
        is called even if an earlier one raised. Returns what the hooks raised. `told`
        gets each middleware object whose hook returned or raised (not one a cancellation
        interrupted), `reached` each one whose hook was called."""
        failed: list[BaseException] = []
        for fn, owner in zip(self.hooks[name], self.owners[name], strict=True):
            if reached is not None:
                reached.append(owner)
            try:
                out = fn(*args)
                if inspect.isawaitable(out):
                    await out
            except Exception as exc:
                failed.append(exc)
            if told is not None:
                told.append(owner)
        return failed

    async def replace(
        self,
        name: str,
        run: RunInfo,
        value: Any,
        *,
        told: list[Any] | None = None,
        skip: Sequence[Any] = (),
    ) -> tuple[Any, list[BaseException]]:
        """Call ``on_run_complete`` or ``on_run_error`` (`name`), threading `value`
        through: a hook returning non-None replaces it. Returns the value and what the
        hooks raised. With `told`, stop at the first hook that raises, and add to `told`
        the middleware objects whose hook returned or raised (not one a cancellation
        interrupted); `skip`: middleware objects (by identity) not to call."""
        failed: list[BaseException] = []
        for fn, owner in zip(self.hooks[name], self.owners[name], strict=True):
            if any(owner is other for other in skip):
                continue
            try:
                out = fn(run, value)
                if inspect.isawaitable(out):
                    out = await out
            except Exception as exc:
                failed.append(exc)
                if told is not None:
                    told.append(owner)
                    break
                continue
            if told is not None:
                told.append(owner)
            if out is not None:
                value = out
        return value, failed


def _is_async_hook(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object whose __call__ is async
    )
