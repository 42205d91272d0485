"""Saga benchmarks: what undo, retry options and the undo phase cost when nothing goes wrong
and when something does.

1. ``options``: the per-step cost of a reactor of 2,000 no-op async steps on bench_core's
   random layered DAG (about 3 parents per step) whose steps all have ``@step.undo`` (a no-op
   sync function) and ``retries=2, retry_on=ConnectionError, backoff=0.1``, none of which
   ever fails, against the same reactor without them. Target: at most 1.5x. The undo-only and
   retry-only variants are reported for reference.
2. ``undo``: a failing run. 1,000 undoable no-op async steps (``independent``: no
   dependencies; ``chain``: each on the previous one) complete, then one last step fails
   (it ``wait_for``s all 1,000, or follows the chain's end). The undo phase is estimated as
   ``time(failing run) - time(successful run of the same shape)`` (the same 1,000 steps, the
   last step succeeding), and compared with that successful run. Target: the undo of all
   1,000 takes under 10x the run. A counter checks that every timed failing run undid all
   1,000 steps.

Methodology (as in bench_core.py): reactors are built and planned before timing,
``gc.collect(); gc.freeze()`` precedes each workload's timing, repetitions are interleaved
between contenders and the best of N is reported. No middleware is attached.

Run ``python benchmarks/bench_saga.py [--quick] [--only options,undo]``. The exit code is
always 0: this is a report, not a gate. ``main(argv)`` and ``run_benchmarks()`` are importable.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Sequence
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
    verdict,
)
from bench_core import (
    StepFn,
    Workload,
    chain_workload,
    check_runs,
    independent_workload,
    random_dag_workload,
    step_fns,
)

WORKLOADS = ("options", "undo")
OPTIONS = {"retries": 2, "retry_on": ConnectionError, "backoff": 0.1}

# --------------------------------------------------------------------------- table


class Config(RepsConfig):
    __slots__ = ()
    columns = (("workload", 11), ("contender", 12), ("figure", 40), ("vs base", 8), ("target", 18))


# --------------------------------------------------------------------------- reactors


UNDONE = [0]  # how many undo calls ran (a list, so the undo function stays a plain global read)


def noop_undo(result: Any) -> None:
    """The undo of every step: a no-op sync function that only counts its calls."""
    UNDONE[0] += 1


class Boom(Exception):
    """The error of the failing step."""


async def fail() -> None:
    raise Boom("the last step fails")


async def finish() -> None:
    return None


def build(
    rp: Any,
    workload: Workload,
    fns: Sequence[StepFn],
    *,
    undo: bool,
    options: dict[str, Any],
    last: Callable[[], Awaitable[None]] | None = None,
    last_after: Sequence[str] = (),
) -> Any:
    """The workload as a reactor; every step gets `options` and (if `undo`) ``noop_undo``.

    One ``Step`` per distinct function is evolved under every step name (copies share the
    undo callback). `last`, if given, is appended as a step named ``last`` with
    ``wait_for=last_after``.
    """
    reactor = rp.Reactor(f"saga_{workload.name}")
    shared: dict[int, Any] = {}
    for spec, fn in zip(workload.steps, fns, strict=True):
        step = shared.get(id(fn))
        if step is None:
            step = shared[id(fn)] = rp.step(**options)(fn)
            if undo:
                step.undo(noop_undo)
        args = {f"p{k}": rp.Result(name) for k, name in enumerate(workload.parent_names(spec))}
        reactor.add(step, name=spec.name, args=args)
    if last is not None:
        reactor.add(rp.step(name="last", wait_for=list(last_after))(last))
    reactor.plan()
    return reactor


# --------------------------------------------------------------------------- benchmarks


async def bench_options(cfg: Config, rp: Any, n: int = 2_000, target: float = 1.5) -> None:
    """Per-step cost with undo + retry options configured (never used) vs without."""
    workload = random_dag_workload(n, name=f"random{n // 1000}k")
    fns = step_fns(workload)
    reactors = {
        "plain": build(rp, workload, fns, undo=False, options={}),
        "undo+retry": build(rp, workload, fns, undo=True, options=OPTIONS),
        "undo only": build(rp, workload, fns, undo=True, options={}),
        "retry only": build(rp, workload, fns, undo=False, options=OPTIONS),
    }
    arms: dict[str, Arm] = {name: r.run for name, r in reactors.items()}
    await check_runs(arms, workload)
    best = await best_times(arms, cfg.reps)
    ref = best["plain"]
    targets = {"undo+retry": (f"<= {target:.1f}x plain", lambda t: t / ref <= target)}
    emit_timings(cfg, "options", best, "plain", lambda _, t: per_step(t, n, ms_digits=2), targets)
    edges = sum(len(s.parents) for s in workload.steps)
    cfg.emit(Row("options", "(shape)", f"{n} steps, {edges} edges"))


async def bench_undo_shape(
    cfg: Config, rp: Any, workload: Workload, last_after: Sequence[str], target: float
) -> None:
    n = len(workload)
    fns = step_fns(workload)
    ok = build(rp, workload, fns, undo=True, options={}, last=finish, last_after=last_after)
    failing = build(rp, workload, fns, undo=True, options={}, last=fail, last_after=last_after)

    async def run_failing() -> None:
        try:
            await failing.run()
        except rp.RunFailed as exc:
            if len(exc.exceptions) != 1 or not isinstance(exc.exceptions[0], Boom):
                raise
        else:
            raise AssertionError("the failing run succeeded")

    async def run_ok() -> None:
        result = await ok.run()
        if len(result) != n + 1:
            raise AssertionError(f"expected {n + 1} results, got {len(result)}")

    arms: dict[str, Arm] = {"success": run_ok, "failure": run_failing}
    # Untimed warm-up and check: the successful run undoes nothing, the failing one all n.
    UNDONE[0] = 0
    await run_ok()
    if UNDONE[0] != 0:
        raise AssertionError(f"the successful run undid {UNDONE[0]} steps")
    await run_failing()
    if UNDONE[0] != n:
        raise AssertionError(f"the failing run undid {UNDONE[0]} of {n} steps")
    UNDONE[0] = 0
    best = await best_times(arms, cfg.reps)
    undone_ok = UNDONE[0] == n * cfg.reps
    run_t, fail_t = best["success"], best["failure"]
    undo_t = fail_t - run_t
    name = workload.name
    cfg.emit(Row(name, "success", f"{run_t * 1e3:7.2f} ms ({run_t / n * 1e6:.2f} us/step)"))
    row = Row(name, "failure", f"{fail_t * 1e3:7.2f} ms ({fail_t / n * 1e6:.2f} us/step)")
    cfg.emit(row)
    row = Row(name, "undo phase", f"{undo_t * 1e3:7.2f} ms ({undo_t / n * 1e6:.2f} us/undo)")
    row.ratio = f"{undo_t / run_t:.3f}"
    row.target, row.verdict = f"< {target:g}x success", verdict(undo_t < target * run_t)
    cfg.emit(row)
    row = Row(name, "undo count", f"{UNDONE[0]} undone in {cfg.reps} timed failing runs")
    row.target, row.verdict = f"= {n} x {cfg.reps}", verdict(undone_ok)
    cfg.emit(row)


async def bench_undo(cfg: Config, rp: Any, n: int = 1_000, target: float = 10.0) -> None:
    """Failing vs successful run of n undoable steps and a last step (independent, chain)."""
    independent = independent_workload(n)
    await bench_undo_shape(cfg, rp, independent, [s.name for s in independent.steps], target)
    chain = chain_workload(n)
    await bench_undo_shape(cfg, rp, chain, [chain.steps[-1].name], target)


# --------------------------------------------------------------------------- entry points


def jobs(cfg: Config, rp: Any) -> dict[str, Job]:
    """The benchmark of each workload, by name."""
    return {
        "options": lambda: bench_options(cfg, rp),
        "undo": lambda: bench_undo(cfg, rp),
    }


async def run_benchmarks(
    quick: bool = False, only: Sequence[str] | None = None, out: Config | None = None
) -> list[Row]:
    """Run the selected workloads (all by default) and return the table rows."""
    return await run_reactorpy_jobs(out or Config.make(quick), only, WORKLOADS, jobs)


def main(argv: Sequence[str] | None = None) -> int:
    cfg = run_main(argv, __doc__, WORKLOADS, run_benchmarks, Config.make)
    print(
        f"\nfigures: best of {cfg.reps} runs; 'vs base' is contender/plain (options) and "
        "undo phase/success (undo), where undo phase = failure - success."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
