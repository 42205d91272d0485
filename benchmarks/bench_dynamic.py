"""Dynamic steps: what a step returning ``rp.NewSteps`` costs, against a plain step.

Workloads, each at 1,000 and 10,000 (issue 16's two sizes), all on one event loop:

- ``steps``: a reactor of N independent no-op async steps defined up front; its per-step
  cost is the yardstick ("a plain step's cost").
- ``countdown``: the README's loop, a step that replaces itself N times
  (``rp.NewSteps(steps=[count.evolve(args={"n": rp.Value(n - 1)})])``). Per round. Targets:
  at most 3x the yardstick, and the 10,000 figure at most 1.5x the 1,000 one.
- ``fan-out``: one step returning N new no-op async steps at once (each made with
  ``rp.step(noop, name=..., args={"x": rp.Value(k)})`` inside the step, as a user builds
  them). Per added step. Targets: as for the countdown.

Methodology as in ``bench_core.py``: reactors are built and planned before timing,
``gc.collect(); gc.freeze()`` precedes the timing, repetitions are interleaved between the
contenders and the best of N is reported; each contender's result is checked once,
untimed.

Run ``python benchmarks/bench_dynamic.py [--quick] [--only countdown,fanout]``. The exit
code is always 0: this is a report, not a gate.
"""

from __future__ import annotations

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

WORKLOADS = ("countdown", "fanout")
SIZES = (1_000, 10_000)
TARGET = 3.0  # per round or added step, against a plain step
FLAT = 1.5  # the 10,000 figure against the 1,000 one


class Config(RepsConfig):
    __slots__ = ()
    columns = (("workload", 13), ("contender", 12), ("figure", 30), ("vs steps", 9), ("target", 32))


async def noop(x: Any) -> Any:
    return x


def plain_reactor(rp: Any, n: int) -> Any:
    r = rp.Reactor("steps")
    for k in range(n):
        r.add(rp.step(noop, name=f"s{k}", args={"x": rp.Value(k)}))
    r.plan()
    return r


def countdown_reactor(rp: Any) -> Any:
    @rp.step
    def count(n: int) -> Any:
        if n == 0:
            return "liftoff"
        return rp.NewSteps(steps=[count.evolve(args={"n": rp.Value(n - 1)})])

    r = rp.Reactor("countdown", inputs=["n"], returns="count")
    r.add(count)
    r.plan()
    return r


def fanout_reactor(rp: Any) -> Any:
    @rp.step
    def spawn(k: int) -> Any:
        return rp.NewSteps(
            value=k,
            steps=[rp.step(noop, name=f"e{j}", args={"x": rp.Value(j)}) for j in range(k)],
        )

    r = rp.Reactor("fanout", inputs=["k"], returns="spawn")
    r.add(spawn)
    r.plan()
    return r


_per_round: dict[str, dict[int, float]] = {}


async def bench(cfg: Config, rp: Any, workload: str) -> None:
    reactor = countdown_reactor(rp) if workload == "countdown" else fanout_reactor(rp)
    key = "n" if workload == "countdown" else "k"
    expected = {"countdown": lambda n: "liftoff", "fanout": lambda n: n}[workload]
    for n in SIZES:
        plain = plain_reactor(rp, n)
        arms: dict[str, Arm] = {
            "steps": plain.run,
            workload: lambda r=reactor, n=n: r.run({key: n}),
        }
        got = await arms[workload]()
        if got != expected(n):
            raise AssertionError(f"{workload}: got {got!r}")
        best = await best_times(arms, cfg.reps)
        ref = best["steps"] / n
        cost = best[workload] / n
        _per_round.setdefault(workload, {})[n] = cost
        targets: dict[str, Target] = {
            workload: (f"<= {TARGET:g}x steps", lambda t, n=n, ref=ref: t / n / ref <= TARGET)
        }
        if n == SIZES[-1] and SIZES[0] in _per_round[workload]:
            small = _per_round[workload][SIZES[0]]
            targets[workload] = (
                f"<= {TARGET:g}x steps, {cost / small:.2f}x 1k (<= {FLAT:g})",
                lambda t, n=n, small=small, ref=ref: (
                    t / n / ref <= TARGET and t / n / small <= FLAT
                ),
            )

        def figure(name: str, t: float, n: int = n) -> str:
            return per_step(t, n, "us/step" if name == "steps" else "us/round")

        emit_timings(cfg, f"{workload} {n // 1000}k", best, "steps", figure, targets)


def jobs(cfg: Config, rp: Any) -> dict[str, Job]:
    """The benchmark of each workload, by name."""
    return {w: (lambda w=w: bench(cfg, rp, w)) for w in WORKLOADS}


async def run_benchmarks(
    quick: bool = False, only: Sequence[str] | None = None, out: Config | None = None
) -> list[Row]:
    """Run the selected workloads (all by default) and return the table rows."""
    return await run_reactorpy_jobs(out or Config.make(quick), only, WORKLOADS, jobs)


def main(argv: Sequence[str] | None = None) -> int:
    cfg = run_main(argv, __doc__, WORKLOADS, run_benchmarks, Config.make)
    print(
        f"\nfigures: best of {cfg.reps} runs; 'vs steps' is the cost per round (countdown) or "
        "per added step (fan-out) over a plain step's, in a reactor of as many independent "
        "no-op async steps defined up front."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
