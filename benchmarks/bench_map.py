"""Map benchmarks: the per-element cost of ``reactor.map`` against the per-step cost of a plain
step in the same process.

Contenders, each over 10,000 elements (or steps), all on one event loop:

- ``steps``: a reactor of 10,000 independent no-op async steps; its per-step cost is the
  yardstick ("a plain step's cost").
- ``map reactor``: ``reactor.map`` over 10,000 elements of a one-step no-op reactor
  (``rp.Reactor("one", inputs=["x"], returns="noop")`` with ``async def noop(x): return x``).
  Target: at most 3x the yardstick per element.
- ``map step``: ``reactor.map`` over 10,000 elements of a plain ``@rp.step`` no-op step (no
  options, so it is called directly: elements start inline, one task between those that
  never wait). Reported.
- ``... b=10k``: the same two with ``batch_size=10_000`` (one batch) instead of the default
  100. Reported.
- ``gather``: a hand-written ``asyncio.gather`` over 10,000 ``noop(x)`` coroutines, and
  ``tasks``: bench_core's one-task-per-step baseline on the 10,000 independent steps; both for
  reference.

Methodology (as in bench_core.py): reactors are built and planned and the input list made
before timing, ``gc.collect(); gc.freeze()`` precedes the timing, repetitions are interleaved
between contenders and the best of N is reported. Each contender's result is checked once,
untimed.

Run ``python benchmarks/bench_map.py [--quick] [--only map]``. The exit code is always 0:
this is a report, not a gate. ``main(argv)`` and ``run_benchmarks()`` are importable.
"""

from __future__ import annotations

import asyncio
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
    Target,
    best_times,
    emit_timings,
    per_step,
    run_main,
    run_reactorpy_jobs,
)
from bench_core import build_reactor, independent_workload, run_tasks, step_fns

WORKLOADS = ("map",)

# --------------------------------------------------------------------------- table


class Config(RepsConfig):
    __slots__ = ()
    columns = (("workload", 9), ("contender", 18), ("figure", 36), ("vs steps", 9), ("target", 18))


# --------------------------------------------------------------------------- contenders


async def noop(x: Any) -> Any:
    return x


async def run_gather(xs: Sequence[Any]) -> list[Any]:
    return await asyncio.gather(*[noop(x) for x in xs])


def map_reactor(rp: Any, over: Any, batch_size: int = 100) -> Any:
    """A reactor whose only step maps `over` (a reactor or a step) over the input ``xs``."""
    parent = rp.Reactor("map_bench", inputs=["xs"], returns="out")
    parent.map("out", "xs", over, batch_size=batch_size)
    parent.plan()
    return parent


async def check(name: str, arm: Arm, expected: Any) -> None:
    got = await arm()
    if isinstance(expected, int):
        if not isinstance(got, dict) or len(got) != expected:
            raise AssertionError(f"{name}: expected {expected} results")
    elif list(got) != expected:
        raise AssertionError(f"{name}: results differ from the input")


async def bench_map(cfg: Config, rp: Any, n: int = 10_000, target: float = 3.0) -> None:
    xs = list(range(n))
    workload = independent_workload(n, "indep")
    fns = step_fns(workload)
    steps = build_reactor(rp, workload, fns)
    steps.plan()

    child = rp.Reactor("one", inputs=["x"], returns="noop")
    child.step(noop)
    plain = rp.step(noop)
    mapped = {
        "map reactor": map_reactor(rp, child),
        "map step": map_reactor(rp, plain),
        "map reactor b=10k": map_reactor(rp, child, batch_size=n),
        "map step b=10k": map_reactor(rp, plain, batch_size=n),
    }
    arms: dict[str, Arm] = {
        "steps": steps.run,
        "tasks": lambda: run_tasks(workload, fns),
        "gather": lambda: run_gather(xs),
    }
    for name, reactor in mapped.items():
        arms[name] = lambda r=reactor: r.run({"xs": xs})
    for name, arm in arms.items():
        await check(name, arm, n if name in ("steps", "tasks") else xs)

    best = await best_times(arms, cfg.reps)
    ref = best["steps"]

    def figure(name: str, t: float) -> str:
        return per_step(t, n, "us/step" if name in ("steps", "tasks") else "us/elem")

    goal: Target = (f"<= {target:g}x steps", lambda t: t / ref <= target)
    targets = {"map reactor": goal}
    emit_timings(cfg, f"map{n // 1000}k", best, "steps", figure, targets)


# --------------------------------------------------------------------------- entry points


def jobs(cfg: Config, rp: Any) -> dict[str, Job]:
    """The benchmark of each workload, by name."""
    return {"map": lambda: bench_map(cfg, rp)}


async def run_benchmarks(
    quick: bool = False, only: Sequence[str] | None = None, out: Config | None = None
) -> list[Row]:
    """Run the selected workloads (all by default) and return the table rows."""
    return await run_reactorpy_jobs(out or Config.make(quick), only, WORKLOADS, jobs)


def main(argv: Sequence[str] | None = None) -> int:
    cfg = run_main(argv, __doc__, WORKLOADS, run_benchmarks, Config.make)
    print(
        f"\nfigures: best of {cfg.reps} runs; 'vs steps' is contender/steps, the per-step cost "
        "of a reactor of 10,000 independent no-op async steps."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
