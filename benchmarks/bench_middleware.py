"""Middleware benchmarks: the per-step cost of observing a run.

Two no-op workloads from bench_core.py: ``indep`` (2,000 independent no-op async steps) and
``chain`` (1,000 no-op async steps, each depending on the previous one). Each runs with:

- ``none``: no middleware (no event object is built); the base of every ratio.
- ``trace``: a fresh ``rp.Trace()`` per run (made before timing). Target: at most 2.0x.
- ``logging``: ``rp.LoggingMiddleware(logger, level=logging.INFO)`` on a logger whose
  effective level is WARNING, so nothing is logged. Target: at most 1.3x.
- ``on_event``: a middleware with only a do-nothing sync ``on_event``. Reported.

The middleware is passed to each run (``run(middleware=[...])``). An untimed check run
verifies that the trace recorded one span per step and that ``on_event`` saw two events
(start, complete) per step.

Methodology (as in bench_core.py): reactors are built and planned before timing,
``gc.collect(); gc.freeze()`` precedes each workload's timing, repetitions are interleaved
between contenders and the best of N is reported.

Run ``python benchmarks/bench_middleware.py [--quick] [--only indep,chain]``. The exit code is
always 0: this is a report, not a gate. ``main(argv)`` and ``run_benchmarks()`` are importable.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import (
    Arm,
    Row,
    StepSpec,
    Workload,
    best_times,
    build_reactor,
    chain_workload,
    check_run,
    load_reactorpy,
    short_error,
    step_fns,
    verdict,
)

WORKLOADS = ("indep", "chain")
TARGETS = {"trace": 2.0, "logging": 1.3}

# --------------------------------------------------------------------------- table


@dataclass(slots=True)
class Config:
    quick: bool = False
    reps: int = 7
    rows: list[Row] = field(default_factory=list)

    @classmethod
    def make(cls, quick: bool) -> Config:
        return cls(quick=True, reps=2) if quick else cls()


COLUMNS = (("workload", 9), ("contender", 10), ("figure", 34), ("vs none", 8), ("target", 16))


def format_row(row: Row) -> str:
    cells = (row.workload, row.contender, row.figure, row.ratio, row.target)
    return "  ".join(c.ljust(w) for c, (_, w) in zip(cells, COLUMNS, strict=True)) + row.verdict


def emit(cfg: Config, row: Row) -> None:
    cfg.rows.append(row)
    print(format_row(row), flush=True)


def print_header() -> None:
    print(format_row(Row("workload", "contender", "figure", "vs none", "target", "verdict")))
    print("-" * (sum(w + 2 for _, w in COLUMNS) + 7))


# --------------------------------------------------------------------------- middleware


class OnEventOnly:
    """A middleware with a do-nothing ``on_event`` and no other hook."""

    def on_event(self, event: Any) -> None:
        pass


class CountingOnEvent:
    """Like `OnEventOnly`, counting the events (used by the untimed check only)."""

    def __init__(self) -> None:
        self.events = 0

    def on_event(self, event: Any) -> None:
        self.events += 1


def quiet_logger() -> logging.Logger:
    """A logger whose effective level is WARNING and which has no handler of its own."""
    logger = logging.getLogger("bench_middleware.quiet")
    logger.setLevel(logging.WARNING)
    assert logger.getEffectiveLevel() == logging.WARNING
    return logger


# --------------------------------------------------------------------------- benchmarks


async def check_middleware(rp: Any, reactor: Any, workload: Workload) -> None:
    """Untimed: the trace and the counting middleware saw every step of one run."""
    n = len(workload)
    trace = rp.Trace()
    counter = CountingOnEvent()
    result = await reactor.run(middleware=[trace, counter])
    if len(result) != n:
        raise AssertionError(f"expected {n} results, got {len(result)}")
    if len(trace.spans) != n:
        raise AssertionError(f"the trace recorded {len(trace.spans)} spans for {n} steps")
    if counter.events != 2 * n:
        raise AssertionError(f"on_event saw {counter.events} events for {n} steps")


async def bench_workload(cfg: Config, rp: Any, workload: Workload) -> None:
    fns = step_fns(workload)
    reactor = build_reactor(rp, workload, fns)
    reactor.plan()
    await check_middleware(rp, reactor, workload)
    logging_mw = rp.LoggingMiddleware(quiet_logger(), level=logging.INFO)
    on_event = OnEventOnly()
    arms: dict[str, Arm] = {
        "none": lambda: reactor.run(),
        "trace": lambda: reactor.run(middleware=[rp.Trace()]),
        "logging": lambda: reactor.run(middleware=[logging_mw]),
        "on_event": lambda: reactor.run(middleware=[on_event]),
    }
    for name, arm in arms.items():
        await check_run(name, arm, workload)
    best = await best_times(arms, cfg.reps)
    ref = best["none"]
    n = len(workload)
    for name, t in best.items():
        row = Row(workload.name, name, f"{t / n * 1e6:7.2f} us/step ({t * 1e3:.2f} ms)")
        row.ratio = f"{t / ref:.3f}"
        target = TARGETS.get(name)
        if target is not None:
            row.target, row.verdict = f"<= {target:.1f}x none", verdict(t / ref <= target)
        emit(cfg, row)


def indep_workload(n: int = 2_000) -> Workload:
    """``n`` independent no-op steps."""
    return Workload("indep", tuple(StepSpec(f"s{i}", ()) for i in range(n)))


# --------------------------------------------------------------------------- entry points


async def run_benchmarks(
    quick: bool = False, only: Sequence[str] | None = None, out: Config | None = None
) -> list[Row]:
    """Run the selected workloads (all by default) and return the table rows."""
    cfg = out or Config.make(quick)
    selected = set(only or WORKLOADS)
    unknown = selected - set(WORKLOADS)
    if unknown:
        raise ValueError(f"unknown workloads {sorted(unknown)}; choose from {list(WORKLOADS)}")
    print_header()
    rp = load_reactorpy()
    if rp is None:
        emit(cfg, Row("all", "reactorpy", "skipped", verdict="SKIP: import failed"))
        return cfg.rows
    workloads = {"indep": indep_workload, "chain": lambda: chain_workload(1_000)}
    for name in WORKLOADS:
        if name in selected:
            try:
                await bench_workload(cfg, rp, workloads[name]())
            except Exception as exc:
                emit(cfg, Row(name, "reactorpy", "failed", verdict=f"ERROR: {short_error(exc)}"))
    return cfg.rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument(
        "--only",
        type=lambda s: [w.strip() for w in s.split(",") if w.strip()],
        help=f"comma-separated workloads among {', '.join(WORKLOADS)}",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.only or ()) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {', '.join(WORKLOADS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"python {sys.version.split()[0]}, {'quick' if args.quick else 'full'} mode")
    cfg = Config.make(args.quick)
    asyncio.run(run_benchmarks(args.quick, args.only, out=cfg))
    print(f"\nfigures: best of {cfg.reps} runs; 'vs none' is contender/none (no middleware).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
