"""Map benchmarks: the per-element cost of ``reactor.map`` against the per-step cost of a plain
step in the same process.

Contenders, each over 10,000 elements (or steps), all on one event loop:

- ``steps``: a reactor of 10,000 independent no-op async steps; its per-step cost is the
  yardstick ("a plain step's cost").
- ``map reactor``: ``reactor.map`` over 10,000 elements of a one-step no-op reactor
  (``rp.Reactor("one", inputs=["x"], returns="noop")`` with ``async def noop(x): return x``).
  Target: at most 3x the yardstick per element.
- ``map step``: ``reactor.map`` over 10,000 elements of a plain ``@rp.step`` no-op step (no
  options, so it is called directly, one task per element). Reported.
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

import argparse
import asyncio
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
    load_reactorpy,
    run_tasks,
    short_error,
    step_fns,
    verdict,
)

WORKLOADS = ("map",)

# --------------------------------------------------------------------------- table


@dataclass(slots=True)
class Config:
    quick: bool = False
    reps: int = 7
    rows: list[Row] = field(default_factory=list)

    @classmethod
    def make(cls, quick: bool) -> Config:
        return cls(quick=True, reps=2) if quick else cls()


COLUMNS = (("workload", 9), ("contender", 18), ("figure", 36), ("vs steps", 9), ("target", 18))


def format_row(row: Row) -> str:
    cells = (row.workload, row.contender, row.figure, row.ratio, row.target)
    return "  ".join(c.ljust(w) for c, (_, w) in zip(cells, COLUMNS, strict=True)) + row.verdict


def emit(cfg: Config, row: Row) -> None:
    cfg.rows.append(row)
    print(format_row(row), flush=True)


def print_header() -> None:
    print(format_row(Row("workload", "contender", "figure", "vs steps", "target", "verdict")))
    print("-" * (sum(w + 2 for _, w in COLUMNS) + 7))


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
    workload = Workload("indep", tuple(StepSpec(f"s{i}", ()) for i in range(n)))
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
    for name, t in best.items():
        label = "us/step" if name in ("steps", "tasks") else "us/elem"
        row = Row(f"map{n // 1000}k", name, f"{t / n * 1e6:7.2f} {label} ({t * 1e3:.1f} ms)")
        row.ratio = f"{t / ref:.3f}"
        if name == "map reactor":
            row.target, row.verdict = f"<= {target:g}x steps", verdict(t / ref <= target)
        emit(cfg, row)


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
    if "map" in selected:
        try:
            await bench_map(cfg, rp)
        except Exception as exc:
            emit(cfg, Row("map", "reactorpy", "failed", verdict=f"ERROR: {short_error(exc)}"))
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
    print(
        f"\nfigures: best of {cfg.reps} runs; 'vs steps' is contender/steps, the per-step cost "
        "of a reactor of 10,000 independent no-op async steps."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
