"""OpenTelemetry tracing for reactorpy runs (install with ``pip install 'reactorpy[otel]'``).

Owns: `OpenTelemetryMiddleware`, which turns runs and step events into OpenTelemetry spans.
Must not import: the executor's internals (it reads only `Event` and `RunInfo`), nor
OpenTelemetry at import time (it is an optional extra, imported when the middleware is made).

Span tree: a span per run (``run <reactor>``), under it a span per step attempt
(``step <name>``), compensation (``compensate <name>``) and undo (``undo <name>``). The run
span of a composed reactor is a child of the composing step's span (found by the ``parent.``
prefix of the child's step names), or of the parent run's span. An outermost run's span is a
child of whatever span is current where ``run()`` was called. While a step attempt runs, its
span is the current span in the step's own context, so spans the step's code starts are its
children.

Span times come from the event loop's clock, shifted once per outermost run onto the wall
clock, so durations are exactly the loop's (and exact under a virtual clock).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

from ._events import EVENT_PHASES, Event, RunInfo

__all__ = ["OpenTelemetryMiddleware"]

_KINDS: Final = EVENT_PHASES
_FAILED: Final = frozenset({"error", "retry", "cancelled"})
_MISSING: Final = (
    "reactorpy.otel needs OpenTelemetry, which is not installed: "
    "install the extra with pip install 'reactorpy[otel]'."
)


class _RunSpan:
    __slots__ = ("context", "offset", "reactor", "span")

    def __init__(self, span: Any, context: Any, offset: int, reactor: str) -> None:
        self.span = span
        self.context = context  # a Context holding `span`, the parent of the run's steps
        self.offset = offset  # nanoseconds to add to loop time (in ns) for the wall clock
        self.reactor = reactor


class OpenTelemetryMiddleware:
    """Middleware that records every run and step attempt as an OpenTelemetry span.

    Attributes on every span: ``reactorpy.reactor``, ``reactorpy.run_id`` and
    ``reactorpy.outcome`` (``complete``, ``error``, ``retry``, ``halt``, ``skip``,
    ``continue`` or ``cancelled``); on step spans also ``reactorpy.step``,
    ``reactorpy.attempt``, ``reactorpy.phase`` and ``reactorpy.concurrency``. Failed
    attempts and runs get an ``ERROR`` status and the exception recorded on the span.

    Args:
        tracer_provider: the ``TracerProvider`` to use; by default the global one.

    Raises:
        ImportError: OpenTelemetry is not installed (``pip install 'reactorpy[otel]'``).

    >>> from opentelemetry.sdk.trace import TracerProvider
    >>> from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    >>> from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    ...     InMemorySpanExporter)
    >>> import reactorpy as rp
    >>> exporter = InMemorySpanExporter()
    >>> provider = TracerProvider()
    >>> provider.add_span_processor(SimpleSpanProcessor(exporter))
    >>> r = rp.Reactor("hello", returns="greet")
    >>> @r.step
    ... def greet():
    ...     return "hi"
    >>> r.run_sync(middleware=[OpenTelemetryMiddleware(provider)])
    'hi'
    >>> [span.name for span in exporter.get_finished_spans()]
    ['step greet', 'run hello']
    """

    __slots__ = ("_context", "_open", "_runs", "_status", "_trace", "_tracer")

    def __init__(self, tracer_provider: Any = None) -> None:
        try:
            from opentelemetry import context, trace
            from opentelemetry.trace import Status, StatusCode
        except ImportError as exc:
            raise ImportError(_MISSING) from exc
        from . import __version__

        self._trace: Any = trace
        self._context: Any = context
        self._status: Any = (Status, StatusCode)
        self._tracer: Any = trace.get_tracer(
            "reactorpy", __version__, tracer_provider=tracer_provider
        )
        self._runs: dict[str, _RunSpan] = {}
        # (run_id, step, phase) -> (span, context token or None) of spans not yet ended.
        self._open: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def __repr__(self) -> str:
        return f"<OpenTelemetryMiddleware: {len(self._runs)} runs in flight>"

    # ------------------------------------------------------------------ hooks
    def on_run_start(self, run: RunInfo) -> None:
        """Start the run's span (under the composing step's span for a composed run)."""
        parent = self._runs.get(run.parent) if run.parent is not None else None
        if parent is not None:
            offset = parent.offset
            composing = self._composing(run)
            context = self._trace.set_span_in_context(
                composing if composing is not None else parent.span
            )
        else:
            offset = _offset(run.start)
            context = None  # the caller's current context
        attributes: dict[str, Any] = {
            "reactorpy.reactor": run.reactor,
            "reactorpy.run_id": run.run_id,
        }
        if run.parent is not None:
            attributes["reactorpy.parent_run_id"] = run.parent
        span = self._tracer.start_span(
            f"run {run.reactor}",
            context=context,
            attributes=attributes,
            start_time=offset + _ns(run.start),
        )
        self._runs[run.run_id] = _RunSpan(
            span, self._trace.set_span_in_context(span), offset, run.reactor
        )

    def on_event(self, event: Event) -> None:
        """Start or end the span of a step attempt, compensation or undo."""
        found = _KINDS.get(event.kind)
        if found is None:
            return
        phase, outcome = found
        key = (event.run_id, event.step, phase)
        run = self._runs.get(event.run_id)
        if run is None:  # events of a run we never saw start: keep them anyway
            run = self._orphan(event)
        if outcome is None:
            span = self._start(run, event, phase)
            token = None
            if phase == "step":
                # The step's own code runs in this context: its spans become children.
                token = self._context.attach(self._trace.set_span_in_context(span))
            self._open[key] = (span, token)
            return
        opened = self._open.pop(key, None)
        if opened is None:  # a guard skip, or an end that no start announced
            span, token = self._start(run, event, phase), None
        else:
            span, token = opened
        self._finish(span, outcome, event.error, run.offset + _ns(event.time))
        if token is not None:
            self._context.detach(token)

    def on_run_complete(self, run: RunInfo, result: Any) -> None:
        """End the run's span (the result is left as it is)."""
        self._end(run, "complete", None)

    def on_run_error(self, run: RunInfo, error: BaseException) -> None:
        """End the run's span with an error status."""
        self._end(run, "error", error)

    def on_run_halt(self, run: RunInfo, checkpoint: Any) -> None:
        """End the run's span, marked as halted."""
        self._end(run, "halt", None)

    # ------------------------------------------------------------------ helpers
    def _start(self, run: _RunSpan, event: Event, phase: str) -> Any:
        return self._tracer.start_span(
            f"{phase} {event.step}",
            context=run.context,
            attributes={
                "reactorpy.reactor": run.reactor,
                "reactorpy.run_id": event.run_id,
                "reactorpy.step": event.step,
                "reactorpy.attempt": event.attempt,
                "reactorpy.phase": phase,
                "reactorpy.concurrency": event.concurrency,
            },
            start_time=run.offset + _ns(event.time),
        )

    def _finish(self, span: Any, outcome: str, error: BaseException | None, at: int) -> None:
        span.set_attribute("reactorpy.outcome", outcome)
        if error is not None:
            span.record_exception(error, timestamp=at)
        if outcome in _FAILED:
            status, code = self._status
            description = f"{type(error).__name__}: {error}" if error is not None else outcome
            span.set_status(status(code.ERROR, description))
        span.end(end_time=at)

    def _end(self, run: RunInfo, outcome: str, error: BaseException | None) -> None:
        known = self._runs.pop(run.run_id, None)
        if known is None:
            return
        now = known.offset + _ns(_now(run.start))
        # Spans that never reported an end: steps cancelled after the grace period. Their
        # context tokens belong to the steps' own (now finished) contexts: just drop them.
        for key in [k for k in self._open if k[0] == run.run_id]:
            span, _ = self._open.pop(key)
            self._finish(span, "cancelled", None, now)
        self._finish(known.span, outcome, error, now)

    def _composing(self, run: RunInfo) -> Any:
        """The open span of the parent run's step whose name prefixes the child's steps."""
        best: tuple[int, Any] | None = None
        for (run_id, step, phase), (span, _) in self._open.items():
            if run_id != run.parent or phase != "step":
                continue
            n = len(step)
            if any(
                name.startswith(step) and name[n : n + 1] in (".", "[") for name in run.step_names
            ) and (best is None or n > best[0]):
                best = (n, span)
        return best[1] if best is not None else None

    def _orphan(self, event: Event) -> _RunSpan:
        return _RunSpan(
            self._trace.get_current_span(),
            self._context.get_current(),
            _offset(event.time),
            "",
        )


def _ns(seconds: float) -> int:
    return round(seconds * 1e9)


def _now(fallback: float) -> float:
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:  # called by hand, outside a loop
        return fallback


def _offset(loop_time: float) -> int:
    """Nanoseconds that map the loop's clock, now at `loop_time`, onto the wall clock."""
    return time.time_ns() - _ns(_now(loop_time))
