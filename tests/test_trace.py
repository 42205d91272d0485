"""`Trace`: the recorded timeline, its trace-event and Gantt exports, and its summary.

Every run here is on the virtual clock, so times and durations are exact.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import pytest

import reactorpy as rp
from reactorpy._events import Event, RunInfo
from reactorpy._trace import Span, Trace
from reactorpy.testing import Recorder, run_virtual
from tests.examples.seed_reactor import seed


def traced(reactor: rp.Reactor, inputs: dict[str, Any] | None = None, **options: Any) -> Trace:
    """Run `reactor` on the virtual clock with a fresh Trace; return the Trace."""
    trace = Trace()
    run_virtual(reactor.run(inputs, middleware=[trace], **options))
    return trace


def check_trace_events(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Assert `doc` is valid trace-event JSON; return its complete ("X") events."""
    assert json.loads(json.dumps(doc)) == doc
    assert isinstance(doc["traceEvents"], list)
    for ev in doc["traceEvents"]:
        assert {"name", "ph", "ts", "pid", "tid"} <= ev.keys(), ev
        assert ev["ph"] in {"X", "M"}
        assert isinstance(ev["name"], str)
        assert isinstance(ev["pid"], int)
        assert isinstance(ev["tid"], int)
        if ev["ph"] == "X":
            assert isinstance(ev["dur"], float)
            assert ev["dur"] >= 0
        else:
            assert "name" in ev["args"] or "sort_index" in ev["args"]
    return [ev for ev in doc["traceEvents"] if ev["ph"] == "X"]


def assert_lanes_disjoint(events: list[dict[str, Any]]) -> None:
    """No two complete events on one (pid, tid) lane overlap."""
    lanes: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for ev in events:
        if ev["tid"] != 0:
            lanes.setdefault((ev["pid"], ev["tid"]), []).append((ev["ts"], ev["ts"] + ev["dur"]))
    for spans in lanes.values():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert end <= start


def test_seed_spans_are_exact():
    """Each step of the seed reactor is one span with its exact start, end and concurrency."""
    trace = traced(seed(), {"user_id": 123})
    run_id = trace.runs[0].run_id
    assert [
        Span("fetch_profile", run_id, "step", 1, 0.0, 0.2, "complete", 3),
        Span("fetch_preferences", run_id, "step", 1, 0.0, 0.15, "complete", 3),
        Span("fetch_activity", run_id, "step", 1, 0.0, 0.3, "complete", 3),
        Span("aggregate_data", run_id, "step", 1, 0.3, 0.3, "complete", 1),
    ] == trace.spans
    assert trace.spans[2].duration == 0.3
    (run,) = trace.runs
    assert (run.reactor, run.start, run.end, run.outcome) == (
        "async_user_data",
        0.0,
        0.3,
        "complete",
    )


def test_seed_chrome_trace():
    """The seed run exports as valid trace-event JSON: exact microseconds, one lane per slot."""
    trace = traced(seed(), {"user_id": 123})
    doc = trace.to_chrome_trace()
    xs = check_trace_events(doc)
    run_id = trace.runs[0].run_id
    assert [(e["name"], e["ts"], e["dur"], e["pid"], e["tid"]) for e in xs] == [
        ("async_user_data", 0.0, 300000.0, 1, 0),
        ("fetch_profile", 0.0, 200000.0, 1, 1),
        ("fetch_preferences", 0.0, 150000.0, 1, 2),
        ("fetch_activity", 0.0, 300000.0, 1, 3),
        ("aggregate_data", 300000.0, 0.0, 1, 1),
    ]
    assert xs[1]["args"] == {
        "run_id": run_id,
        "attempt": 1,
        "outcome": "complete",
        "concurrency": 3,
    }
    meta = {(e["name"], e["tid"]): e["args"] for e in doc["traceEvents"] if e["ph"] == "M"}
    assert meta[("process_name", 0)] == {"name": f"async_user_data {run_id}"}
    assert meta[("thread_name", 0)] == {"name": "run"}
    assert [meta[("thread_name", t)]["name"] for t in (1, 2, 3)] == ["lane 1", "lane 2", "lane 3"]
    assert_lanes_disjoint(xs)


def test_seed_gantt():
    """The seed run as a Mermaid Gantt chart: exact millisecond bars, one section."""
    assert traced(seed(), {"user_id": 123}).to_mermaid_gantt() == (
        "gantt\n"
        "    title async_user_data\n"
        "    dateFormat x\n"
        "    axisFormat %S.%L\n"
        "    section async_user_data\n"
        "    fetch_profile :0, 200\n"
        "    fetch_preferences :0, 150\n"
        "    fetch_activity :0, 300\n"
        "    aggregate_data :300, 301"
    )


def test_seed_summary():
    """The seed summary: 0.3 s wall time, 3 at once, slowest first, parallelism 0.65/0.3."""
    summary = traced(seed(), {"user_id": 123}).summary()
    assert summary.wall_time == 0.3
    assert summary.outcome == "complete"
    assert summary.steps == 4
    assert summary.critical_path == ("fetch_activity", "aggregate_data")
    assert summary.critical_path_time == 0.3
    assert (summary.peak_concurrency, summary.peak_at) == (3, 0.0)
    assert summary.slowest == (
        ("fetch_activity", 0.3),
        ("fetch_profile", 0.2),
        ("fetch_preferences", 0.15),
        ("aggregate_data", 0.0),
    )
    assert summary.busy_time == pytest.approx(0.65)
    assert summary.parallelism == pytest.approx(0.65 / 0.3)
    assert summary.available_parallelism == pytest.approx(0.65 / 0.3)
    text = str(summary)
    assert text.startswith(f"reactor 'async_user_data' run {summary.run_id}: complete, 4 steps")
    assert "  critical path:  fetch_activity -> aggregate_data (0.300 s)" in text
    assert "  busiest moment: 3 steps at once, at +0.000 s" in text
    assert "  parallelism:    2.17x achieved, at most 2.17x available" in text
    assert "    fetch_activity     0.300 s" in text


def test_one_step_at_a_time_uses_one_lane():
    """With async_=False the steps follow each other on one lane; wall time is their sum."""
    trace = traced(seed(), {"user_id": 1}, async_=False)
    xs = check_trace_events(trace.to_chrome_trace())
    assert {e["tid"] for e in xs if e["cat"] == "step"} == {1}
    summary = trace.summary()
    assert summary.wall_time == pytest.approx(0.65)
    assert summary.peak_concurrency == 1
    assert summary.parallelism == pytest.approx(1.0)
    assert summary.available_parallelism == pytest.approx(0.65 / 0.3)


def test_limited_run_never_has_more_lanes_than_slots():
    """Under max_concurrency=2 the trace uses two lanes and the third fetch waits for a slot."""
    trace = traced(seed(), {"user_id": 1}, max_concurrency=2)
    xs = check_trace_events(trace.to_chrome_trace())
    assert max(e["tid"] for e in xs) == 2
    assert_lanes_disjoint(xs)
    activity = next(s for s in trace.spans if s.step == "fetch_activity")
    assert (activity.start, activity.end) == (0.15, pytest.approx(0.45))
    assert trace.summary().peak_concurrency == 2


def test_retry_error_and_undo_outcomes():
    """Retried attempts, the failing step and the undos are spans; failures are crit."""
    r = rp.Reactor("saga", returns="last")
    calls = {"flaky": 0}

    @r.step
    async def reserve() -> str:
        await asyncio.sleep(0.1)
        return "seat"

    @reserve.undo
    async def release(value: str) -> None:
        await asyncio.sleep(0.05)

    @r.step(retries=1, backoff=0.02)
    async def flaky(reserve: str) -> str:
        calls["flaky"] += 1
        await asyncio.sleep(0.01)
        if calls["flaky"] == 1:
            raise rp.Retry("busy")
        return "ok"

    @r.step
    async def last(flaky: str) -> str:
        await asyncio.sleep(0.03)
        raise ValueError("boom")

    trace = Trace()
    with pytest.raises(rp.RunFailed):
        run_virtual(r.run(middleware=[trace]))
    got = [(s.label, s.phase, s.attempt, s.start, s.end, s.outcome) for s in trace.spans]
    assert got == [
        ("reserve", "step", 1, 0.0, 0.1, "complete"),
        ("flaky", "step", 1, 0.1, pytest.approx(0.11), "retry"),
        ("flaky (attempt 2)", "step", 2, pytest.approx(0.13), pytest.approx(0.14), "complete"),
        ("last", "step", 1, pytest.approx(0.14), pytest.approx(0.17), "error"),
        ("undo reserve", "undo", 1, pytest.approx(0.17), pytest.approx(0.22), "complete"),
    ]
    assert isinstance(trace.spans[3].error, ValueError)
    assert trace.runs[0].outcome == "error"
    gantt = trace.to_mermaid_gantt().splitlines()
    assert gantt[5:] == [
        "    reserve :0, 100",
        "    flaky :crit, 100, 110",
        "    flaky (attempt 2) :130, 140",
        "    last :crit, 140, 170",
        "    undo reserve :170, 220",
    ]
    xs = check_trace_events(trace.to_chrome_trace())
    failed = next(e for e in xs if e["name"] == "last")
    assert failed["args"]["error"] == "ValueError('boom')"
    assert next(e for e in xs if e["name"] == "undo reserve")["cat"] == "undo"
    summary = trace.summary()
    assert summary.outcome == "error"
    assert summary.steps == 3  # undo spans are not steps
    assert [name for name, _ in summary.slowest] == ["reserve", "flaky", "last"]
    assert summary.slowest[1] == ("flaky", pytest.approx(0.04))  # first start to last end


def test_guard_skip_and_halt():
    """A skipped step is a zero-length 'skip' milestone; a halting step ends as 'halt'."""
    r = rp.Reactor("guarded", returns="wait")

    @r.step(when=lambda: False)
    def maybe() -> int:
        return 1

    @r.step
    async def wait(maybe: int | None) -> None:
        await asyncio.sleep(0.5)
        raise rp.Halt("later")

    trace = Trace()
    with pytest.raises(rp.Halted):
        run_virtual(r.run(middleware=[trace]))
    assert [(s.step, s.start, s.end, s.outcome) for s in trace.spans] == [
        ("maybe", 0.0, 0.0, "skip"),
        ("wait", 0.0, 0.5, "halt"),
    ]
    assert trace.runs[0].outcome == "halt"
    assert trace.to_mermaid_gantt().splitlines()[5:] == [
        "    maybe :milestone, 0, 0",
        "    wait :active, 0, 500",
    ]


def test_steps_cancelled_after_grace_end_with_the_run():
    """A step still running when the grace period ends is closed as 'cancelled' at run end."""
    r = rp.Reactor("slow", returns="fail")

    @r.step
    async def forever() -> None:
        await asyncio.sleep(100)

    @r.step
    async def fail() -> None:
        await asyncio.sleep(0.1)
        raise RuntimeError("no")

    trace = Trace()
    with pytest.raises(rp.RunFailed):
        run_virtual(r.run(middleware=[trace], grace=0.4))
    spans = {s.step: s for s in trace.spans}
    assert (spans["forever"].outcome, spans["forever"].end) == ("cancelled", pytest.approx(0.5))
    assert trace.runs[0].end == pytest.approx(0.5)
    assert "    forever :crit, 0, 500" in trace.to_mermaid_gantt().splitlines()


def test_several_runs_at_once():
    """Two concurrent runs on one Trace become two processes and two Gantt sections."""
    r = seed()
    trace = Trace()

    async def both() -> None:
        await asyncio.gather(
            r.run({"user_id": 1}, middleware=[trace]),
            r.run({"user_id": 2}, middleware=[trace], max_concurrency=1),
        )

    run_virtual(both())
    first, second = trace.runs
    xs = check_trace_events(trace.to_chrome_trace())
    assert {e["pid"] for e in xs} == {1, 2}
    assert max(e["tid"] for e in xs if e["pid"] == 2) == 1
    assert_lanes_disjoint(xs)
    gantt = trace.to_mermaid_gantt()
    assert "    title async_user_data" in gantt
    assert gantt.count("    section async_user_data ") == 2
    assert trace.summary().run_id == second.run_id  # the last one started
    assert trace.summary(first.run_id).wall_time == 0.3
    assert trace.summary(second.run_id).wall_time == pytest.approx(0.65)


def _ev(kind: str, step: str, t: float, run_id: str, concurrency: int = 1) -> Event:
    return Event(kind, step, 1, t, run_id=run_id, concurrency=concurrency)


def test_nested_runs_share_their_root_process():
    """A composed run's steps ('parent.child') join the root run's process and summary."""
    trace = Trace()
    trace.on_run_start(RunInfo("order", "p", {}, {}, step_names=("pay", "ship"),
                               critical_path=("pay",)))  # fmt: skip
    trace.on_event(_ev("step_start", "pay", 0.0, "p", 2))
    trace.on_event(_ev("step_start", "ship", 0.0, "p", 2))
    trace.on_run_start(RunInfo("payment", "c", {}, {}, parent="p", step_names=("pay.charge",)))
    trace.on_event(_ev("step_start", "pay.charge", 0.0, "c"))
    trace.on_event(_ev("step_complete", "ship", 0.05, "p"))
    trace.on_event(_ev("step_complete", "pay.charge", 0.1, "c"))
    trace.on_run_complete(RunInfo("payment", "c", {}, {}, parent="p"), None)
    trace.on_event(_ev("step_complete", "pay", 0.1, "p"))
    trace.on_run_complete(RunInfo("order", "p", {}, {}), None)

    assert [(r.run_id, r.root, r.end) for r in trace.runs] == [("p", "p", 0.1), ("c", "p", 0.1)]
    xs = check_trace_events(trace.to_chrome_trace())
    assert {e["pid"] for e in xs} == {1}
    assert_lanes_disjoint(xs)
    gantt = trace.to_mermaid_gantt().splitlines()
    assert "    section payment (composed in order)" in gantt
    assert "    pay.charge :0, 100" in gantt
    summary = trace.summary()
    assert summary.steps == 3
    assert summary.busy_time == pytest.approx(0.15)  # 'pay' only waits for its child
    assert summary.peak_concurrency == 2
    assert summary.slowest == (("pay.charge", 0.1), ("ship", 0.05))


def test_real_compose_when_available():
    """With reactor.compose, the child run is recorded with its parent and 'parent.child' names."""
    if not hasattr(rp.Reactor, "compose"):
        pytest.skip("reactor.compose is not implemented yet")
    child = rp.Reactor("payment", inputs=["amount"], returns="charge")

    @child.step
    async def charge(amount: int) -> int:
        await asyncio.sleep(0.1)
        return amount

    parent = rp.Reactor("order", inputs=["amount"], returns="pay")
    parent.compose("pay", child)
    trace = traced(parent, {"amount": 3})
    root, composed = trace.runs
    assert (composed.parent, composed.root) == (root.run_id, root.run_id)
    assert [(s.step, s.run_id, s.end) for s in trace.spans] == [
        ("pay", root.run_id, 0.1),
        ("pay.charge", composed.run_id, 0.1),
    ]


def test_trace_leaves_the_result_alone():
    """Trace is passive: the run returns its own result."""
    result = run_virtual(seed().run({"user_id": 7}, middleware=[Trace()]))
    assert result == {"summary": "User 7 has 42"}


def test_empty_trace():
    """An empty Trace exports empty documents and has no summary to give."""
    trace = Trace()
    assert trace.to_chrome_trace() == {"traceEvents": [], "displayTimeUnit": "ms"}
    assert trace.to_mermaid_gantt().splitlines()[1] == "    title reactorpy trace"
    with pytest.raises(LookupError, match="no run yet"):
        trace.summary()
    with pytest.raises(LookupError, match="no run 'nope'"):
        trace.summary("nope")
    assert repr(trace) == "<Trace: 0 runs, 0 spans>"


def test_gantt_names_are_sanitised_and_long_runs_use_minutes():
    """Colons cannot break a Gantt line; runs over a minute get a minutes axis."""
    trace = Trace()
    trace.on_run_start(RunInfo("r: x", "a", {}, {}))
    trace.on_event(_ev("step_start", "odd:name#1", 0.0, "a"))
    trace.on_event(_ev("step_complete", "odd:name#1", 90.0, "a"))
    trace.on_run_complete(RunInfo("r: x", "a", {}, {}), None)
    lines = trace.to_mermaid_gantt().splitlines()
    assert lines[1] == "    title r  x"
    assert lines[3] == "    axisFormat %M:%S"
    assert lines[-1] == "    odd name 1 :0, 90000"


def test_partial_records_still_export():
    """Events of runs never announced, unknown kinds and unfinished runs still export."""
    trace = Trace()
    trace.on_event(_ev("step_start", "lonely", 1.0, "x"))
    trace.on_event(_ev("step_complete", "lonely", 1.5, "x"))
    trace.on_event(_ev("something_new", "lonely", 1.6, "x"))
    trace.on_run_start(RunInfo("outer", "o", {}, {}, start=1.0, step_names=("mid",)))
    trace.on_run_start(RunInfo("middle", "m", {}, {}, parent="o", start=1.0))
    trace.on_run_start(RunInfo("inner", "i", {}, {}, parent="m", start=1.0))
    trace.on_event(_ev("step_start", "mid.leaf.work", 1.0, "i"))
    trace.on_event(_ev("step_complete", "mid.leaf.work", 1.25, "i"))
    trace.on_run_complete(RunInfo("elsewhere", "e", {}, {}, start=2.0), None)  # outside a loop
    assert [s.step for s in trace.spans] == ["lonely", "mid.leaf.work"]
    xs = check_trace_events(trace.to_chrome_trace())
    assert sorted((e["name"], e["pid"], e["ts"]) for e in xs) == [
        ("elsewhere", 2, 1000000.0),
        ("lonely", 3, 0.0),
        ("mid.leaf.work", 1, 0.0),
        ("outer", 1, 0.0),
    ]
    summary = trace.summary("o")  # still running: its end is its last span's
    assert (summary.outcome, summary.wall_time, summary.steps) == ("running", 0.25, 1)
    assert trace.summary().run_id == "e"
    assert trace.summary("e").wall_time == 0.0
    assert "slowest" not in str(trace.summary("e"))


def test_run_cancelled_from_outside_is_ended():
    """A run cancelled by asyncio.timeout around run() is recorded as ended, not running."""
    r = rp.Reactor("cancelled", returns="slow")

    @r.step
    async def slow() -> None:
        await asyncio.sleep(10)

    trace = Trace()

    async def main() -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1):
                await r.run(middleware=[trace])

    run_virtual(main())
    assert trace.runs[0].outcome != "running"


def test_compensate_asking_retry_without_attempts_left_is_ended():
    """A compensation that asks for a retry when none is left still reports how it ended."""
    r = rp.Reactor("comp", returns="charge")

    @r.step
    async def charge() -> None:
        await asyncio.sleep(0.1)
        raise ValueError("declined")

    @charge.compensate
    def again(error: BaseException) -> None:
        raise rp.Retry()

    trace = Trace()
    with pytest.raises(rp.RunFailed):
        run_virtual(r.run(middleware=[trace]))
    compensation = next(s for s in trace.spans if s.phase == "compensate")
    assert compensation.outcome != "cancelled"


def test_summary_critical_path_is_the_measured_one():
    """The summary's critical path is the chain that set the wall time, not the plan's
    longest chain of steps."""
    r = rp.Reactor("measured", returns="sink")

    async def nap(seconds: float) -> None:
        await asyncio.sleep(seconds)

    r.add(rp.step(nap), name="slow", args={"seconds": rp.Value(0.3)})
    r.add(rp.step(nap), name="b1", args={"seconds": rp.Value(0.05)})
    r.add(rp.step(nap, wait_for="b1"), name="b2", args={"seconds": rp.Value(0.05)})
    r.add(rp.step(nap, wait_for="b2"), name="b3", args={"seconds": rp.Value(0.05)})
    r.add(rp.step(nap, wait_for=["slow", "b3"]), name="sink", args={"seconds": rp.Value(0.1)})
    assert ("b1", "b2", "b3", "sink") == r.plan().critical_path
    summary = traced(r, {}).summary()
    assert ("slow", "sink") == summary.critical_path
    assert summary.critical_path_time == pytest.approx(0.4)


class AsyncListener:
    """A middleware whose async on_event makes the run deliver every step as events."""

    def __init__(self) -> None:
        self.kinds: list[tuple[str, str]] = []

    async def on_event(self, event: Event) -> None:
        self.kinds.append((event.kind, event.step))


def _mixed_reactor(outcome: str) -> rp.Reactor:
    """Plain async and def steps, one adding a step at run time, one ending as `outcome`."""
    r = rp.Reactor(f"mixed_{outcome}")

    @r.step
    async def fetch() -> int:
        await asyncio.sleep(0.1)
        return 1

    @r.step
    def parse(fetch: int) -> int:
        return fetch + 1

    async def extra(parse: int) -> int:
        await asyncio.sleep(0.05)
        return parse * 10

    @r.step
    async def grow(parse: int) -> rp.NewSteps:
        await asyncio.sleep(0.02)
        return rp.NewSteps(0, steps=[rp.step(extra, name="extra")])

    @r.step
    async def last(fetch: int) -> int:
        await asyncio.sleep(0.3)
        if outcome == "error":
            raise ValueError("boom")
        if outcome == "halt":
            raise rp.Halt("later")
        return fetch

    return r


def _outcomes(trace: Trace) -> list[tuple[Any, ...]]:
    return [(s.step, s.phase, s.attempt, s.start, s.end, s.outcome, s.concurrency,
             type(s.error)) for s in trace.spans]  # fmt: skip


@pytest.mark.parametrize("outcome", ["complete", "error", "halt"])
def test_plain_steps_trace_the_same_with_events_or_without(outcome: str):
    """Plain steps reach a Trace as finished spans, not events, when every on_event hook
    is sync; the spans are the same as those built from events."""
    spans = []
    for extra in ([], [AsyncListener()]):
        trace = Trace()
        try:
            run_virtual(_mixed_reactor(outcome).run(middleware=[trace, *extra]))
        except (rp.RunFailed, rp.Halted):
            pass
        spans.append(_outcomes(trace))
        assert trace.runs[0].outcome == outcome
    assert spans[0] == spans[1]
    assert {s[0] for s in spans[0]} >= {"fetch", "parse", "grow", "last"}


class CountingTrace(Trace):
    __slots__ = ("events",)

    def __init__(self) -> None:
        super().__init__()
        self.events = 0

    def on_event(self, event: Event) -> None:
        self.events += 1
        super().on_event(event)


def test_a_trace_sees_the_events_every_other_middleware_sees():
    """A Trace is built from the same events as any middleware: next to an event recorder,
    it gets every plain step's start and completion, and its spans match them."""
    trace = CountingTrace()
    recorder = Recorder()
    run_virtual(seed().run({"user_id": 1}, middleware=[trace, recorder]))
    names = ["fetch_profile", "fetch_preferences", "fetch_activity", "aggregate_data"]
    assert trace.events == len(recorder.events) == 2 * len(names)
    assert sorted((s.step, s.outcome) for s in trace.spans) == sorted(
        (name, "complete") for name in names
    )
    started = {e.step: e.time for e in recorder.events if e.kind == "step_start"}
    completed = {e.step: e.time for e in recorder.events if e.kind == "step_complete"}
    assert started == {s.step: s.start for s in trace.spans}
    assert completed == {s.step: s.end for s in trace.spans}


@pytest.mark.parametrize("sync", [False, True])
def test_a_hook_failing_a_plain_step_leaves_one_error_span(sync: bool):
    """A middleware raising at a plain step's completion fails the step; the Trace records
    that attempt once, as an error."""

    class Breaks:
        def on_event(self, event: Event) -> None:
            if event.kind == "step_complete" and event.step == "b":
                raise RuntimeError("hook broke")

    r = rp.Reactor("hooked", returns="b")

    @r.step
    async def a() -> int:
        await asyncio.sleep(0.1)
        return 1

    if sync:

        @r.step
        def b(a: int) -> int:
            return a

    else:

        @r.step
        async def b(a: int) -> int:
            return a

    trace = Trace()
    with pytest.raises(rp.RunFailed):
        run_virtual(r.run(middleware=[trace, Breaks()]))
    spans = [(s.step, s.outcome, type(s.error).__name__) for s in trace.spans]
    assert spans == [("a", "complete", "NoneType"), ("b", "error", "RuntimeError")]


def test_gantt_draws_steps_shorter_than_a_millisecond() -> None:
    """A step that takes no time still gets a visible bar (one millisecond long); a
    skipped step stays a milestone."""
    r = rp.Reactor("instant", returns="b")
    r.step(lambda: 1, name="a")
    r.step(lambda a: a, name="b")
    r.step(lambda: 0, name="guarded", when=lambda: False)
    trace = rp.Trace()
    run_virtual(r.run(middleware=[trace]))
    lines = trace.to_mermaid_gantt().splitlines()
    assert "    a :0, 1" in lines
    assert "    b :0, 1" in lines
    assert "    guarded :milestone, 0, 0" in lines
