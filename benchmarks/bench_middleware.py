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

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Arm,
    Job,
    RepsConfig,
    Row,
    best_times,
    emit_timings,
    per_step,
    run_main,
    run_reactorpy_jobs,
)
from bench_core import (
    Workload,
    build_reactor,
    chain_workload,
    check_runs,
    independent_workload,
    step_fns,
)

WORKLOADS = ("indep", "chain")
TARGETS = {"trace": 2.0, "logging": 1.3}

# --------------------------------------------------------------------------- table


class Config(RepsConfig):
    __slots__ = ()
    columns = (("workload", 9), ("contender", 10), ("figure", 34), ("vs none", 8), ("target", 16))


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
    await check_runs(arms, workload)
    best = await best_times(arms, cfg.reps)
    ref = best["none"]
    n = len(workload)
    targets = {
        name: (f"<= {x:.1f}x none", lambda t, x=x: t / ref <= x) for name, x in TARGETS.items()
    }
    emit_timings(
        cfg, workload.name, best, "none", lambda _, t: per_step(t, n, ms_digits=2), targets
    )


# --------------------------------------------------------------------------- entry points


def jobs(cfg: Config, rp: Any) -> dict[str, Job]:
    """The benchmark of each workload, by name."""
    return {
        "indep": lambda: bench_workload(cfg, rp, independent_workload(2_000, "indep")),
        "chain": lambda: bench_workload(cfg, rp, chain_workload(1_000)),
    }


async def run_benchmarks(
    quick: bool = False, only: Sequence[str] | None = None, out: Config | None = None
) -> list[Row]:
    """Run the selected workloads (all by default) and return the table rows."""
    return await run_reactorpy_jobs(out or Config.make(quick), only, WORKLOADS, jobs)


def main(argv: Sequence[str] | None = None) -> int:
    cfg = run_main(argv, __doc__, WORKLOADS, run_benchmarks, Config.make)
    print(f"\nfigures: best of {cfg.reps} runs; 'vs none' is contender/none (no middleware).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
