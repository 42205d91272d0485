"""`reactorpy.otel.OpenTelemetryMiddleware`: span tree, attributes, timing and status."""

from __future__ import annotations

import asyncio
import sys

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import reactorpy as rp
from reactorpy._events import Event, RunInfo
from reactorpy.otel import OpenTelemetryMiddleware
from reactorpy.testing import run_virtual
from tests.examples.seed_reactor import seed


@pytest.fixture
def otel() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}


def test_seed_span_tree(otel: tuple[TracerProvider, InMemorySpanExporter]):
    """One run span with one child span per step, exact durations and reactorpy attributes."""
    provider, exporter = otel
    assert run_virtual(seed().run({"user_id": 1}, middleware=[OpenTelemetryMiddleware(provider)]))
    spans = by_name(exporter)
    assert sorted(spans) == [
        "run async_user_data",
        "step aggregate_data",
        "step fetch_activity",
        "step fetch_preferences",
        "step fetch_profile",
    ]
    run = spans["run async_user_data"]
    run_id = run.attributes["reactorpy.run_id"]
    assert run.parent is None
    assert run.attributes["reactorpy.reactor"] == "async_user_data"
    assert run.attributes["reactorpy.outcome"] == "complete"
    assert run.end_time - run.start_time == 300_000_000
    for name, ns in [("fetch_profile", 200_000_000), ("fetch_activity", 300_000_000)]:
        span = spans[f"step {name}"]
        assert span.parent is not None
        assert span.parent.span_id == run.context.span_id
        assert span.context.trace_id == run.context.trace_id
        assert span.end_time - span.start_time == ns
        assert span.start_time == run.start_time
        assert dict(span.attributes) == {
            "reactorpy.reactor": "async_user_data",
            "reactorpy.run_id": run_id,
            "reactorpy.step": name,
            "reactorpy.attempt": 1,
            "reactorpy.phase": "step",
            "reactorpy.concurrency": span.attributes["reactorpy.concurrency"],
            "reactorpy.outcome": "complete",
        }
        assert span.status.status_code == StatusCode.UNSET
    # The fetches start one after another at the same moment, each counting those running.
    fetches = ["fetch_profile", "fetch_preferences", "fetch_activity"]
    assert [spans[f"step {f}"].attributes["reactorpy.concurrency"] for f in fetches] == [1, 2, 3]


def test_failures_have_error_status(otel: tuple[TracerProvider, InMemorySpanExporter]):
    """A retried attempt and a failing step are ERROR spans with the exception; undo too."""
    provider, exporter = otel
    r = rp.Reactor("saga", returns="fail")
    calls: list[int] = []

    @r.step(retries=1)
    async def flaky() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise rp.Retry("busy")
        return 1

    @flaky.undo
    def unflake(value: int) -> None:
        pass

    @r.step
    def fail(flaky: int) -> None:
        raise ValueError("boom")

    with pytest.raises(rp.RunFailed):
        run_virtual(r.run(middleware=[OpenTelemetryMiddleware(provider)]))
    spans = exporter.get_finished_spans()
    summary = [
        (s.name, s.attributes["reactorpy.attempt"], s.attributes["reactorpy.outcome"],
         s.status.status_code)
        for s in spans if s.name != "run saga"
    ]  # fmt: skip
    assert summary == [
        ("step flaky", 1, "retry", StatusCode.ERROR),
        ("step flaky", 2, "complete", StatusCode.UNSET),
        ("step fail", 1, "error", StatusCode.ERROR),
        ("undo flaky", 1, "complete", StatusCode.UNSET),
    ]
    failed = spans[2]
    assert failed.status.description == "ValueError: boom"
    assert [e.name for e in failed.events] == ["exception"]
    assert failed.events[0].attributes["exception.type"] == "ValueError"
    run = spans[-1]
    assert run.name == "run saga"
    assert run.status.status_code == StatusCode.ERROR
    assert run.attributes["reactorpy.outcome"] == "error"
    assert all(s.parent.span_id == run.context.span_id for s in spans[:-1])


def test_halt_is_not_an_error(otel: tuple[TracerProvider, InMemorySpanExporter]):
    """A halted run and its halting step are marked 'halt' without an error status."""
    provider, exporter = otel
    r = rp.Reactor("pausing", returns="pause")

    @r.step
    def pause() -> None:
        raise rp.Halt("later")

    with pytest.raises(rp.Halted):
        run_virtual(r.run(middleware=[OpenTelemetryMiddleware(provider)]))
    spans = by_name(exporter)
    for name in ("step pause", "run pausing"):
        assert spans[name].attributes["reactorpy.outcome"] == "halt"
        assert spans[name].status.status_code == StatusCode.UNSET


def test_step_code_spans_nest_under_the_step(
    otel: tuple[TracerProvider, InMemorySpanExporter],
):
    """Spans the step's own code starts are children of that step's span."""
    provider, exporter = otel
    tracer = provider.get_tracer("user")
    r = rp.Reactor("nesting", returns="work")

    @r.step
    async def work() -> int:
        with tracer.start_as_current_span("inside"):
            await asyncio.sleep(0.1)
        return 1

    run_virtual(r.run(middleware=[OpenTelemetryMiddleware(provider)]))
    spans = by_name(exporter)
    assert spans["inside"].parent.span_id == spans["step work"].context.span_id


def test_root_run_is_child_of_callers_span(otel: tuple[TracerProvider, InMemorySpanExporter]):
    """An outermost run's span is a child of the span current where run() was called."""
    provider, exporter = otel
    tracer = provider.get_tracer("user")

    async def main() -> None:
        with tracer.start_as_current_span("request"):
            await seed().run({"user_id": 1}, middleware=[OpenTelemetryMiddleware(provider)])
        assert trace.get_current_span() is trace.INVALID_SPAN  # nothing leaked

    run_virtual(main())
    spans = by_name(exporter)
    assert spans["run async_user_data"].parent.span_id == spans["request"].context.span_id


def test_composed_run_is_child_of_composing_step(
    otel: tuple[TracerProvider, InMemorySpanExporter],
):
    """A composed run's span is a child of the span of the step that composed it."""
    provider, exporter = otel
    mw = OpenTelemetryMiddleware(provider)
    mw.on_run_start(RunInfo("order", "p", {}, {}, step_names=("pay", "ship")))
    mw.on_event(Event("step_start", "ship", 1, 0.0, run_id="p"))
    mw.on_event(Event("step_start", "pay", 1, 0.0, run_id="p"))
    mw.on_run_start(RunInfo("payment", "c", {}, {}, parent="p", step_names=("pay.charge",)))
    mw.on_event(Event("step_start", "pay.charge", 1, 0.0, run_id="c"))
    mw.on_event(Event("step_complete", "pay.charge", 1, 0.1, run_id="c"))
    mw.on_run_complete(RunInfo("payment", "c", {}, {}, parent="p"), None)
    mw.on_event(Event("step_complete", "pay", 1, 0.1, run_id="p"))
    mw.on_event(Event("step_complete", "ship", 1, 0.1, run_id="p"))
    mw.on_run_complete(RunInfo("order", "p", {}, {}), None)
    spans = by_name(exporter)
    assert spans["run payment"].parent.span_id == spans["step pay"].context.span_id
    assert spans["run payment"].attributes["reactorpy.parent_run_id"] == "p"
    assert spans["step pay.charge"].parent.span_id == spans["run payment"].context.span_id
    assert spans["step pay.charge"].end_time - spans["step pay.charge"].start_time == 100_000_000


def test_a_composed_runs_span_hangs_under_its_composing_step(
    otel: tuple[TracerProvider, InMemorySpanExporter],
):
    """With reactor.compose, the child run's span hangs under the composing step's span."""
    provider, exporter = otel
    child = rp.Reactor("payment", inputs=["amount"], returns="charge")

    @child.step
    async def charge(amount: int) -> int:
        await asyncio.sleep(0.1)
        return amount

    parent = rp.Reactor("order", inputs=["amount"], returns="pay")
    parent.compose("pay", child)
    run_virtual(parent.run({"amount": 3}, middleware=[OpenTelemetryMiddleware(provider)]))
    spans = by_name(exporter)
    assert spans["run payment"].parent.span_id == spans["step pay"].context.span_id
    assert spans["step pay.charge"].parent.span_id == spans["run payment"].context.span_id


def test_cancelled_steps_are_closed_with_the_run(
    otel: tuple[TracerProvider, InMemorySpanExporter],
):
    """A step cancelled after the grace period gets an ERROR 'cancelled' span ending the run."""
    provider, exporter = otel
    r = rp.Reactor("slow", returns="fail")

    @r.step
    async def forever() -> None:
        await asyncio.sleep(100)

    @r.step
    async def fail() -> None:
        await asyncio.sleep(0.1)
        raise RuntimeError("no")

    with pytest.raises(rp.RunFailed):
        run_virtual(r.run(middleware=[OpenTelemetryMiddleware(provider)], grace=0.4))
    spans = by_name(exporter)
    forever_span = spans["step forever"]
    assert forever_span.attributes["reactorpy.outcome"] == "cancelled"
    assert forever_span.status.status_code == StatusCode.ERROR
    assert forever_span.end_time == spans["run slow"].end_time


def test_missing_opentelemetry_names_the_extra(monkeypatch: pytest.MonkeyPatch):
    """Without OpenTelemetry installed, making the middleware says which extra to install."""
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ImportError, match=r"pip install 'reactorpy\[otel\]'"):
        OpenTelemetryMiddleware()


def test_events_of_unknown_runs_and_kinds(otel: tuple[TracerProvider, InMemorySpanExporter]):
    """Events of a run never announced still make spans; unknown kinds are ignored."""
    provider, exporter = otel
    mw = OpenTelemetryMiddleware(provider)
    mw.on_event(Event("something_new", "a", 1, 0.0, run_id="x"))
    mw.on_event(Event("guard_skip", "a", 0, 0.0, run_id="x"))
    mw.on_run_complete(RunInfo("never started", "x", {}, {}), None)
    assert [(s.name, s.attributes["reactorpy.outcome"]) for s in exporter.get_finished_spans()] == [
        ("step a", "skip")
    ]
    assert repr(mw) == "<OpenTelemetryMiddleware: 0 runs in flight>"


@pytest.mark.parametrize("sync", [False, True])
def test_spans_of_continued_and_plain_def_steps_nest_under_their_step(
    otel: tuple[TracerProvider, InMemorySpanExporter], sync: bool
):
    """A step run by the worker that finished its dependency (a chain), or a plain def run
    inline, still sees its own step span as the current one."""
    provider, exporter = otel
    tracer = provider.get_tracer("user")
    r = rp.Reactor("chain", returns="second")

    @r.step
    async def first() -> int:
        with tracer.start_as_current_span("inside first"):
            return 1

    if sync:

        @r.step
        def second(first: int) -> int:
            with tracer.start_as_current_span("inside second"):
                return first + 1

    else:

        @r.step
        async def second(first: int) -> int:
            with tracer.start_as_current_span("inside second"):
                await asyncio.sleep(0)
                return first + 1

    assert 2 == run_virtual(r.run(middleware=[OpenTelemetryMiddleware(provider)]))
    spans = by_name(exporter)
    for name in ("first", "second"):
        assert spans[f"inside {name}"].parent.span_id == spans[f"step {name}"].context.span_id
