"""Trace: a middleware that records a run's timeline, and its exporters.

Owns: `Trace` (the recorder), the records it produces (`Span`, `TracedRun`, `TraceSummary`),
and the views of them: the trace-event format (Chrome, Perfetto), Mermaid Gantt charts and a
text summary.
Must not import: the executor's internals (a trace is built from `Event` and `RunInfo` only).

Recording is kept cheap: ``on_event`` does one dict lookup on the event kind, and an ending
event builds one tuple and stores it; every view is computed afterwards, from those tuples.
A trace sees exactly the events any other middleware sees. Times are the event loop's
clock (``Event.time``), so under `reactorpy.testing.run_virtual` they are exact.

A span is one attempt of one step (phase ``"step"``), one compensation (``"compensate"``) or
one undo (``"undo"``), with an outcome: ``complete``, ``error``, ``retry``, ``halt``, ``skip``
(a guard said no), ``continue`` (a compensation that turned the error into a value), or
``cancelled`` (it never reported an end before its run ended).
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Iterable
from typing import Any, Final

import attrs

from ._events import EVENT_PHASES, Event, RunInfo
from ._spans import (
    Span,
    TracedRun,
    TraceSummary,
    gantt_text,
    measured_critical_path,
    meta,
    ms,
    span_lanes,
    span_peak,
    us,
)

__all__ = ["Span", "Trace", "TraceSummary", "TracedRun"]

_KINDS: Final = EVENT_PHASES
_SLOWEST: Final = 5


# A finished span, as recorded: the fields of `Span` in order (step, run_id, phase,
# attempt, start, end, outcome, concurrency, error).
_Record = tuple[str, str, str, int, float, float, str, int, BaseException | None]


class Trace:
    """Middleware that records when each step of a run started and ended, and how.

    Give it to ``run()`` (or to the reactor) as middleware; one `Trace` may record several
    runs, one after another or at once, and the runs of composed reactors with them. Then
    export the timeline with `to_chrome_trace` (open it in https://ui.perfetto.dev or
    ``chrome://tracing``), `to_mermaid_gantt`, or read `summary`.

    >>> import asyncio, json, reactorpy as rp
    >>> r = rp.Reactor("nap", returns="sleep")
    >>> @r.step
    ... async def sleep():
    ...     await asyncio.sleep(0.01)
    >>> trace = Trace()
    >>> asyncio.run(r.run(middleware=[trace]))
    >>> [(s.step, s.outcome) for s in trace.spans]
    [('sleep', 'complete')]
    >>> "traceEvents" in json.loads(json.dumps(trace.to_chrome_trace()))
    True
    """

    __slots__ = ("_done", "_open", "_runs")

    def __init__(self) -> None:
        self._runs: dict[str, TracedRun] = {}
        # (run_id, step, phase) -> (start, attempt, concurrency) of spans not yet ended.
        self._open: dict[tuple[str, str, str], tuple[float, int, int]] = {}
        self._done: list[_Record] = []

    def __repr__(self) -> str:
        return f"<Trace: {len(self._runs)} runs, {len(self._done)} spans>"

    # ------------------------------------------------------------------ middleware hooks
    def on_run_start(self, run: RunInfo) -> None:
        """Record that `run` started."""
        parent = self._runs.get(run.parent) if run.parent is not None else None
        self._runs[run.run_id] = TracedRun(
            reactor=run.reactor,
            run_id=run.run_id,
            parent=run.parent,
            root=parent.root if parent is not None else run.run_id,
            start=run.start,
            end=None,
            outcome="running",
            step_names=run.step_names,
            critical_path=run.critical_path,
            dependencies=run.dependencies,
        )

    def on_event(self, event: Event) -> None:
        """Record a step event: open a span, or close the open one with an outcome."""
        kind, step, attempt, time, _, error, run_id, concurrency = event
        if kind == "step_start":  # the common case first: one dict store
            self._open[run_id, step, "step"] = (time, attempt, concurrency)
            return
        found = _KINDS.get(kind)
        if found is None:
            return
        phase, outcome = found
        key = (run_id, step, phase)
        if outcome is None:
            self._open[key] = (time, attempt, concurrency)
            return
        opened = self._open.pop(key, None)
        if opened is None:
            if outcome == "error" and self._undo_complete(event):
                return
            opened = (time, attempt, concurrency)  # a guard skip, or an unannounced end
        self._done.append(
            (step, run_id, phase, opened[1], opened[0], time, outcome, opened[2], error)
        )

    def _undo_complete(self, event: Event) -> bool:
        """An error for an attempt that reported its completion already (a middleware
        failed on that completion, which failed the step): the attempt's span becomes an
        error. Returns whether there was such a span."""
        for k in range(len(self._done) - 1, -1, -1):
            span = self._done[k]
            if span[0] == event.step and span[1] == event.run_id and span[2] == "step":
                if span[3] != event.attempt or span[6] != "complete":
                    return False
                self._done[k] = (*span[:5], event.time, "error", span[7], event.error)
                return True
        return False

    def on_run_complete(self, run: RunInfo, result: Any) -> None:
        """Record that `run` completed (the result is left as it is)."""
        self._end(run, "complete")

    def on_run_error(self, run: RunInfo, error: BaseException) -> None:
        """Record that `run` failed."""
        self._end(run, "error")

    def on_run_halt(self, run: RunInfo, checkpoint: Any) -> None:
        """Record that `run` halted."""
        self._end(run, "halt")

    def _end(self, run: RunInfo, outcome: str) -> None:
        try:
            now = asyncio.get_running_loop().time()
        except RuntimeError:  # called by hand, outside a loop
            now = max((r[5] for r in self._done if r[1] == run.run_id), default=run.start)
        # Spans that never reported an end: steps cancelled after the grace period.
        for key in [k for k in self._open if k[0] == run.run_id]:
            start, attempt, concurrency = self._open.pop(key)
            self._done.append(
                (key[1], key[0], key[2], attempt, start, now, "cancelled", concurrency, None)
            )
        known = self._runs.get(run.run_id)
        if known is None:
            self.on_run_start(run)
            known = self._runs[run.run_id]
        self._runs[run.run_id] = attrs.evolve(known, end=now, outcome=outcome)

    # ------------------------------------------------------------------ records
    @property
    def runs(self) -> list[TracedRun]:
        """The recorded runs, in the order they started."""
        return sorted(self._runs.values(), key=lambda r: r.start)

    @property
    def spans(self) -> list[Span]:
        """The finished spans by start time, then outer runs first, plan order, end time."""
        rank: dict[str, dict[str, int]] = {
            run_id: {name: k for k, name in enumerate(run.step_names)}
            for run_id, run in self._runs.items()
        }
        depth = {run_id: self._depth(run) for run_id, run in self._runs.items()}
        none: dict[str, int] = {}
        return sorted(
            (
                Span(*r[:7], concurrency, r[8])
                for r, concurrency in zip(self._done, self._concurrency(), strict=True)
            ),
            key=lambda s: (
                s.start,
                depth.get(s.run_id, 0),
                rank.get(s.run_id, none).get(s.step, -1),
                s.end,
            ),
        )

    def _concurrency(self) -> list[int]:
        """For each record, how many step spans of its run were running when it started.

        Counted from the recorded spans, so steps that start at the same moment all count
        each other, however the run happened to start them one after another.
        """
        by_run: dict[str, tuple[list[float], list[float]]] = {}
        for r in self._done:
            if r[2] == "step":
                starts, ends = by_run.setdefault(r[1], ([], []))
                starts.append(r[4])
                ends.append(r[5])
        for starts, ends in by_run.values():
            starts.sort()
            ends.sort()
        out = []
        for r in self._done:
            starts, ends = by_run.get(r[1], ([], []))
            t = r[4]
            # Started by t, less ended by t: a step span that ended when it started (a
            # no-op on the loop's clock) is in both, and counts itself back in.
            running = bisect.bisect_right(starts, t) - bisect.bisect_right(ends, t)
            out.append(running + (r[2] == "step" and r[5] <= t))
        return out

    def _depth(self, run: TracedRun) -> int:
        depth = 0
        while run.parent is not None and run.parent in self._runs and depth < len(self._runs):
            run = self._runs[run.parent]
            depth += 1
        return depth

    def _root(self, run_id: str) -> str:
        run = self._runs.get(run_id)
        return run.root if run is not None else run_id

    def _groups(self) -> list[tuple[str, list[Span]]]:
        """The spans grouped by outermost run, in the order those runs started."""
        groups: dict[str, list[Span]] = {}
        for run in self.runs:
            if run.root == run.run_id:
                groups[run.run_id] = []
        for span in self.spans:
            groups.setdefault(self._root(span.run_id), []).append(span)
        return list(groups.items())

    def _origin(self) -> float:
        starts = [r.start for r in self._runs.values()]
        starts.extend(r[4] for r in self._done)
        return min(starts, default=0.0)

    def _run_end(self, run: TracedRun, spans: Iterable[Span]) -> float:
        if run.end is not None:
            return run.end
        return max((s.end for s in spans), default=run.start)

    # ------------------------------------------------------------------ exporters
    def to_chrome_trace(self) -> dict[str, Any]:
        """The timeline in the trace-event format, as a JSON-serialisable dict.

        Each outermost run is a process (``pid``, from 1) whose thread 0 holds a span for
        the whole run; its steps, composed reactors' steps included, are complete (``"X"``)
        events on threads 1, 2, ...: one lane per concurrent slot, so overlapping steps
        never share a lane and the number of lanes is the peak concurrency. Times are in
        microseconds from the first recorded run's start. Write it with ``json.dump`` and
        open it in https://ui.perfetto.dev or ``chrome://tracing``.

        Returns:
            ``{"traceEvents": [...], "displayTimeUnit": "ms"}``.
        """
        t0 = self._origin()
        events: list[dict[str, Any]] = []
        for pid, (root, spans) in enumerate(self._groups(), start=1):
            run = self._runs.get(root)
            name = f"{run.reactor} {root}" if run is not None else root
            events.append(meta("process_name", pid, 0, name))
            events.append(meta("process_sort_index", pid, 0, pid, key="sort_index"))
            events.append(meta("thread_name", pid, 0, "run"))
            if run is not None:
                end = self._run_end(run, spans)
                events.append(
                    {
                        "name": run.reactor,
                        "cat": "run",
                        "ph": "X",
                        "ts": us(run.start - t0),
                        "dur": us(end - run.start),
                        "pid": pid,
                        "tid": 0,
                        "args": {"run_id": root, "outcome": run.outcome},
                    }
                )
            lanes = span_lanes(spans)
            for lane in range(1, max(lanes, default=0) + 1):
                events.append(meta("thread_name", pid, lane, f"lane {lane}"))
                events.append(meta("thread_sort_index", pid, lane, lane, key="sort_index"))
            for span, lane in zip(spans, lanes, strict=True):
                args: dict[str, Any] = {
                    "run_id": span.run_id,
                    "attempt": span.attempt,
                    "outcome": span.outcome,
                    "concurrency": span.concurrency,
                }
                if span.error is not None:
                    args["error"] = repr(span.error)
                events.append(
                    {
                        "name": span.step if span.phase == "step" else span.label,
                        "cat": span.phase,
                        "ph": "X",
                        "ts": us(span.start - t0),
                        "dur": us(span.end - span.start),
                        "pid": pid,
                        "tid": lane,
                        "args": args,
                    }
                )
        return {"traceEvents": events, "displayTimeUnit": "ms"}

    def to_mermaid_gantt(self, *, title: str | None = None) -> str:
        """The timeline as a Mermaid Gantt chart: one section per run, one task per span.

        Times are whole milliseconds from the first recorded run's start (``dateFormat x``);
        a span shorter than a millisecond is drawn one millisecond long, so that every step
        shows. Failed attempts are ``crit``, halted ones ``active``, skipped steps milestones.

        Args:
            title: the chart's title; by default the reactor's name (with one run).

        >>> print(Trace().to_mermaid_gantt(title="nothing yet"))
        gantt
            title nothing yet
            dateFormat x
            axisFormat %S.%L
        """
        runs = self.runs
        if title is None:
            reactors = {r.reactor for r in runs if r.root == r.run_id}
            title = reactors.pop() if len(reactors) == 1 else "reactorpy trace"
        t0 = self._origin()
        by_run: dict[str, list[Span]] = {r.run_id: [] for r in runs}
        for span in self.spans:
            by_run.setdefault(span.run_id, []).append(span)
        last = max((s.end for s in self.spans), default=t0)
        last = max([last, *(r.end for r in runs if r.end is not None)])
        lines = [
            "gantt",
            f"    title {gantt_text(title)}",
            "    dateFormat x",
            f"    axisFormat {'%S.%L' if last - t0 < 60 else '%M:%S'}",
        ]
        several = len({self._root(run_id) for run_id in by_run}) > 1
        for run_id, spans in by_run.items():
            run = self._runs.get(run_id)
            section = run.reactor if run is not None else run_id
            parent = self._runs.get(run.parent) if run and run.parent else None
            if parent is not None:
                section = f"{section} (composed in {parent.reactor})"
            if several:
                section = f"{section} {run_id}"
            lines.append(f"    section {gantt_text(section)}")
            for span in spans:
                tag = _GANTT_TAGS.get(span.outcome, "")
                start = ms(span.start - t0)
                # A span shorter than a millisecond still gets one: Mermaid draws a task
                # from start to end, and one of no length would not be seen at all.
                end = start if span.outcome == "skip" else max(ms(span.end - t0), start + 1)
                lines.append(f"    {gantt_text(span.label)} :{tag}{start}, {end}")
        return "\n".join(lines)

    def summary(self, run_id: str | None = None) -> TraceSummary:
        """Numbers about one run and the runs composed into it.

        Args:
            run_id: the outermost run to summarise; by default the last one that started.

        Raises:
            LookupError: no such run was recorded (or none at all).
        """
        roots = [r for r in self.runs if r.root == r.run_id]
        if run_id is None:
            if not roots:
                raise LookupError("This Trace has recorded no run yet.")
            run = roots[-1]
        elif run_id in self._runs:
            run = self._runs[run_id]
        else:
            raise LookupError(
                f"This Trace has no run {run_id!r}; it has {', '.join(map(repr, self._runs))}."
            )
        tree = {run.run_id} | {
            r.run_id for r in self._runs.values() if self._descends(r, run.run_id)
        }
        spans = [s for s in self.spans if s.run_id in tree]
        end = self._run_end(run, spans)
        wall = end - run.start
        steps = [s for s in spans if s.phase == "step"]
        names = {s.step for s in steps}
        composite = {s.step[:k] for s in steps for k, c in enumerate(s.step) if c in ".["}
        leaves = [s for s in steps if s.step not in composite]
        # Each step from its first start to its last end (retries and backoff included).
        first: dict[str, float] = {}
        final: dict[str, float] = {}
        for s in steps:
            first[s.step] = min(first.get(s.step, s.start), s.start)
            final[s.step] = max(final.get(s.step, s.end), s.end)
        took = {name: final[name] - first[name] for name in first}
        slowest = sorted(((n, t) for n, t in took.items() if n not in composite),
                         key=lambda nt: -nt[1])  # fmt: skip
        critical, critical_time = measured_critical_path(run, first, final)
        busy = sum(s.duration for s in leaves)
        peak, peak_at = span_peak(leaves)
        bound = max(critical_time, slowest[0][1] if slowest else 0.0)
        return TraceSummary(
            reactor=run.reactor,
            run_id=run.run_id,
            outcome=run.outcome,
            wall_time=wall,
            steps=len(names),
            critical_path=critical,
            critical_path_time=critical_time,
            peak_concurrency=peak,
            peak_at=(peak_at - run.start) if peak else 0.0,
            slowest=tuple(slowest[:_SLOWEST]),
            busy_time=busy,
            parallelism=busy / wall if wall > 0 else 0.0,
            available_parallelism=busy / bound if bound > 0 else 0.0,
        )

    def _descends(self, run: TracedRun, ancestor: str) -> bool:
        seen: set[str] = set()
        while run.parent is not None and run.parent not in seen:
            if run.parent == ancestor:
                return True
            seen.add(run.parent)
            parent = self._runs.get(run.parent)
            if parent is None:
                return False
            run = parent
        return False


_GANTT_TAGS: Final = {
    "error": "crit, ",
    "retry": "crit, ",
    "cancelled": "crit, ",
    "halt": "active, ",
    "skip": "milestone, ",
}
