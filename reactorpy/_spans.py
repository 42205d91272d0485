"""What a `Trace` records and how its views are computed: spans, runs, summaries.

Owns: `Span`, `TracedRun`, `TraceSummary` (frozen records), and the pure functions the
views share (microseconds, lanes, the busiest moment, the measured critical path).
Must not import: the executor, `_trace` (which builds on this).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["Span", "TraceSummary", "TracedRun"]


@attrs.frozen
class Span:
    """One recorded attempt, compensation or undo of one step.

    Attributes:
        step: the step's name (``parent.child`` in composed reactors).
        run_id: the run it belongs to.
        phase: ``"step"``, ``"compensate"`` or ``"undo"``.
        attempt: the attempt number.
        start: loop time when it started.
        end: loop time when it ended.
        outcome: ``complete``, ``error``, ``retry``, ``halt``, ``skip``, ``continue`` or
            ``cancelled``.
        concurrency: how many steps of the run were running when it started, itself
            included (counted from the run's recorded step spans).
        error: the exception, for failed outcomes.
    """

    step: str
    run_id: str
    phase: str
    attempt: int
    start: float
    end: float
    outcome: str
    concurrency: int
    error: BaseException | None = None

    @property
    def duration(self) -> float:
        """``end - start``, in seconds."""
        return self.end - self.start

    @property
    def label(self) -> str:
        """A short display name: the step, its phase, and its attempt after the first."""
        name = self.step if self.phase == "step" else f"{self.phase} {self.step}"
        return name if self.attempt <= 1 else f"{name} (attempt {self.attempt})"


@attrs.frozen
class TracedRun:
    """One recorded run.

    Attributes:
        reactor: the reactor's name.
        run_id: the run's id.
        parent: the run_id of the run that composed it, if any.
        root: the run_id of the outermost run it belongs to (its own, when not composed).
        start: loop time when it started.
        end: loop time when it ended (None while it runs).
        outcome: ``running``, ``complete``, ``error`` or ``halt``.
        step_names: its planned steps, in plan order.
        critical_path: its plan's critical path.
        dependencies: each step and the steps it waits for.
    """

    reactor: str
    run_id: str
    parent: str | None
    root: str
    start: float
    end: float | None
    outcome: str
    step_names: tuple[str, ...]
    critical_path: tuple[str, ...]
    dependencies: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)


@attrs.frozen
class TraceSummary:
    """What a traced run did, in numbers; ``str()`` gives a readable report.

    Attributes:
        reactor: the reactor's name.
        run_id: the run's id.
        outcome: ``complete``, ``error``, ``halt`` or ``running``.
        wall_time: seconds from the run's start to its end.
        steps: how many distinct steps ran (or were skipped), composed ones included.
        critical_path: the chain of steps that set the wall time: from the step that ended
            last, back through the dependency that ended last each time (the plan's
            critical path, counted in steps, when no dependencies were recorded).
        critical_path_time: seconds from that chain's first start to its last end.
        peak_concurrency: the most steps running at one moment.
        peak_at: when that moment began, in seconds after the run's start.
        slowest: up to five ``(step, seconds)`` pairs, slowest first.
        busy_time: the summed duration of every step attempt (composite steps, which
            only wait for their children, are not counted).
        parallelism: ``busy_time / wall_time``: the parallelism achieved.
        available_parallelism: ``busy_time`` over the longer of ``critical_path_time``
            and the slowest step: no schedule of these steps could do better than this.
    """

    reactor: str
    run_id: str
    outcome: str
    wall_time: float
    steps: int
    critical_path: tuple[str, ...]
    critical_path_time: float
    peak_concurrency: int
    peak_at: float
    slowest: tuple[tuple[str, float], ...]
    busy_time: float
    parallelism: float
    available_parallelism: float

    def __str__(self) -> str:
        lines = [
            f"reactor {self.reactor!r} run {self.run_id}: {self.outcome}, "
            f"{self.steps} step{'s' if self.steps != 1 else ''} in {self.wall_time:.3f} s",
            f"  critical path:  {' -> '.join(self.critical_path) or '(none)'} "
            f"({self.critical_path_time:.3f} s)",
            f"  busiest moment: {self.peak_concurrency} step"
            f"{'s' if self.peak_concurrency != 1 else ''} at once, at +{self.peak_at:.3f} s",
            f"  parallelism:    {self.parallelism:.2f}x achieved, at most "
            f"{self.available_parallelism:.2f}x available",
        ]
        if self.slowest:
            lines.append("  slowest steps:")
            width = max(len(name) for name, _ in self.slowest)
            lines.extend(f"    {name:<{width}}  {secs:.3f} s" for name, secs in self.slowest)
        return "\n".join(lines)


def us(seconds: float) -> float:
    """Seconds as microseconds, rounded to the nanosecond (float noise removed)."""
    return round(seconds * 1e6, 3)


def ms(seconds: float) -> int:
    return round(seconds * 1e3)


def meta(name: str, pid: int, tid: int, value: Any, *, key: str = "name") -> dict[str, Any]:
    return {"name": name, "ph": "M", "ts": 0, "pid": pid, "tid": tid, "args": {key: value}}


def gantt_text(text: str) -> str:
    """`text` made safe for a Gantt line (``:`` separates a task's name from its data)."""
    for bad in (":", ";", "#", "\r", "\n"):
        text = text.replace(bad, " ")
    return text.strip() or "_"


def span_lanes(spans: list[Span]) -> list[int]:
    """A lane (from 1) per span, sorted by start, so that overlapping spans never share one.

    Greedy interval partitioning: each span takes the lowest free lane, so the number of
    lanes equals the largest number of spans running at one moment.
    """
    busy: list[tuple[float, int]] = []  # (end, lane) of spans holding a lane
    free: list[int] = []
    out: list[int] = []
    for span in spans:
        while busy and busy[0][0] <= span.start:
            heapq.heappush(free, heapq.heappop(busy)[1])
        lane = heapq.heappop(free) if free else len(busy) + 1
        heapq.heappush(busy, (span.end, lane))
        out.append(lane)
    return out


def span_peak(spans: list[Span]) -> tuple[int, float]:
    """The most spans running at one moment, and when that began (ends before starts)."""
    edges = sorted([(s.start, 1) for s in spans] + [(s.end, -1) for s in spans])
    running = peak = 0
    at = 0.0
    for t, delta in edges:
        running += delta
        if running > peak:
            peak, at = running, t
    return peak, at


def measured_critical_path(
    run: TracedRun, first: dict[str, float], final: dict[str, float]
) -> tuple[tuple[str, ...], float]:
    """The chain that set the run's wall time, and its measured seconds.

    From the run's step that ended last, step back through the dependency that ended last,
    until a step with no recorded dependency.
    """
    ran = [name for name in run.step_names if name in final]
    if not ran or not run.dependencies:
        chain = tuple(run.critical_path)
        return chain, sum(final.get(n, 0.0) - first.get(n, 0.0) for n in chain)
    # Ties (steps that take no time) go to the step later in plan order: a dependent.
    step = max(reversed(ran), key=final.__getitem__)
    path = [step]
    while True:
        before = [d for d in run.dependencies.get(step, ()) if d in final]
        if not before:
            break
        step = max(before, key=final.__getitem__)
        path.append(step)
    path.reverse()
    return tuple(path), final[path[-1]] - first[path[0]]
