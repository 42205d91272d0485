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
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

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


@attrs.frozen
class Event:
    """One thing that happened to one step.

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

#: A finished attempt of a step: ``(step, run_id, phase, attempt, start, end, outcome,
#: concurrency, error)``, the fields of `reactorpy.Span`.
SpanRecord = tuple[str, str, str, int, float, float, str, int, BaseException | None]

#: Middleware with an ``on_event`` hook may also have a method of this name, returning a
#: function the executor calls with one `SpanRecord` per attempt of a plain step (an
#: ``async def`` or ``def`` with no options) instead of giving ``on_event`` that attempt's
#: ``step_start`` and its ending event (``step_complete``, ``step_error``, ``step_halt``):
#: one tuple instead of two `Event` objects, where a step itself may cost about as much as
#: an event. Every other event still reaches ``on_event``. Runs whose on_event hooks are
#: not all sync deliver events only. `reactorpy.Trace` is such middleware.
SPAN_RECORDER: Final = "_reactorpy_span_recorder"

_HOOKS: Final = ("on_run_start", "on_run_complete", "on_run_error", "on_run_halt", "on_event")


class Middleware:
    """The hooks of a list of middleware objects, bound once per run.

    Any object with any of ``on_run_start(run)``, ``on_run_complete(run, result)``,
    ``on_run_error(run, error)``, ``on_run_halt(run, checkpoint)`` and ``on_event(event)``
    is middleware; each hook may be sync or async.
    """

    __slots__ = ("event_hooks", "event_kinds", "hooks", "plain_hooks", "span_hooks", "sync_events")

    def __init__(self, middleware: Sequence[Any]) -> None:
        self.hooks: dict[str, list[Any]] = {name: [] for name in _HOOKS}
        #: Each on_event hook with the kinds it wants (None: all of them).
        self.event_hooks: list[tuple[Any, frozenset[str] | None]] = []
        #: What the `SPAN_RECORDER` method of each middleware that has one returned, and
        #: the on_event hooks of the others (with the kinds they want).
        self.span_hooks: list[Callable[[SpanRecord], object]] = []
        self.plain_hooks: list[tuple[Any, frozenset[str] | None]] = []
        kinds: set[str] = set()
        for m in middleware:
            found = False
            for name in _HOOKS:
                fn = getattr(m, name, None)
                if fn is not None:
                    self.hooks[name].append(fn)
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
                recorder = getattr(m, SPAN_RECORDER, None)
                if recorder is not None:
                    self.span_hooks.append(recorder())
                else:
                    self.plain_hooks.append((on_event, wanted))
        #: The kinds some middleware wants: no other event object is ever built. Middleware
        #: may narrow it with an ``event_kinds`` attribute (a collection of kinds).
        self.event_kinds: frozenset[str] = frozenset(kinds)
        #: Whether every on_event hook is a plain function: then events are delivered
        #: without awaiting, and steps keep their fast paths.
        self.sync_events = not any(inspect.iscoroutinefunction(fn) for fn in self.hooks["on_event"])

    @property
    def plain_kinds(self) -> frozenset[str]:
        """The kinds the on_event hooks of middleware without a span recorder want."""
        kinds: set[str] = set()
        for _, wanted in self.plain_hooks:
            kinds.update(EVENT_KINDS if wanted is None else wanted)
        return frozenset(kinds)

    @property
    def wants_events(self) -> bool:
        """Whether any middleware listens for step events."""
        return bool(self.event_kinds)

    def __bool__(self) -> bool:
        return any(self.hooks.values())

    async def call(self, name: str, *args: Any) -> None:
        """Call hook `name` on each middleware, awaiting async ones, in order."""
        for fn in self.hooks[name]:
            out = fn(*args)
            if inspect.isawaitable(out):
                await out

    async def deliver(self, event: Event) -> None:
        """Give `event` to each on_event hook that wants its kind, awaiting async ones."""
        for fn, kinds in self.event_hooks:
            if kinds is None or event.kind in kinds:
                out = fn(event)
                if inspect.isawaitable(out):
                    await out

    async def complete(self, run: RunInfo, result: Any) -> Any:
        """Call ``on_run_complete``; a hook returning non-None replaces the result."""
        for fn in self.hooks["on_run_complete"]:
            out = fn(run, result)
            if inspect.isawaitable(out):
                out = await out
            if out is not None:
                result = out
        return result
