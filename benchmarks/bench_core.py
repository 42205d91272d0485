"""Core scheduling benchmarks: reactorpy against three hand-written asyncio baselines.

Every workload is an abstract DAG (:class:`Workload`): steps in topological order, each with
the indices of its parents and either a no-op body or an ``asyncio.sleep(d)`` body. The same
generated step functions (positional parameters ``p0..pN``) are used by every contender, so the
only thing that differs is the scheduling around them.

Contenders, all run in one process on one event loop:

- ``tasks``: one eager ``asyncio.create_task`` per step, created in topological order, each
  awaiting its parents' tasks directly. The main yardstick.
- ``tasks+sem``: the same, each step body under ``async with semaphore`` (limited workload only).
- ``graphlib``: ``graphlib.TopologicalSorter`` with an ``asyncio.wait(FIRST_COMPLETED)`` loop.
- ``barrier``: ``networkx.topological_generations`` plus one ``asyncio.gather`` per generation.
- ``reactorpy``: a reactor built through the public API, planned once before timing.
- ``(kahn)``, scaling workload only: Kahn's algorithm over the DAG's lists of parent indices,
  no asyncio at all. Not a contender but the machine's own factor between the two sizes: the
  leanest linear pass, so the part of any ratio above 10x that no algorithm can remove.

Methodology: every contender's objects (reactor definitions and plans, topological sorters,
generations) are built before timing; ``gc.collect(); gc.freeze()`` precedes each workload's
timing; repetitions are interleaved between contenders and the minimum is reported. Memory is
measured with ``tracemalloc`` in a separate pass so it never distorts a timing.

Run ``python benchmarks/bench_core.py [--quick] [--only seed,chain,...]``. The exit code is
always 0: this is a report, not a gate. ``main(argv)`` and ``run_benchmarks()`` are importable.
"""

from __future__ import annotations

import asyncio
import gc
import graphlib
import math
import random
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import networkx as nx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Arm,
    Job,
    Row,
    Table,
    best_times,
    emit_timings,
    load_reactorpy,
    per_step,
    reactorpy_error,
    run_jobs,
    run_main,
    selection,
    short_error,
    timed,
    verdict,
)

StepFn = Callable[..., Coroutine[Any, Any, Any]]

WORKLOADS = ("seed", "skew", "fanout", "chain", "random", "limited", "scaling")


# --------------------------------------------------------------------------- workloads


@dataclass(frozen=True, slots=True)
class StepSpec:
    """One step of a workload: its name, its parents (indices of earlier steps), its body."""

    name: str
    parents: tuple[int, ...]
    delay: float | None = None  # None: a no-op body; otherwise ``await asyncio.sleep(delay)``


@dataclass(frozen=True, slots=True)
class Workload:
    """A DAG of steps in topological order (every parent index is smaller than its child's)."""

    name: str
    steps: tuple[StepSpec, ...]

    def __len__(self) -> int:
        return len(self.steps)

    def parent_names(self, step: StepSpec) -> list[str]:
        return [self.steps[p].name for p in step.parents]


class PeakProbe:
    """Counts step bodies running at once; used by a separate (untimed) correctness pass."""

    def __init__(self) -> None:
        self.current = 0
        self.peak = 0

    def enter(self) -> None:
        self.current += 1
        self.peak = max(self.peak, self.current)

    def exit(self) -> None:
        self.current -= 1


_FN_CACHE: dict[tuple[int, float | None, int], StepFn] = {}


def make_step_fn(arity: int, delay: float | None, probe: PeakProbe | None = None) -> StepFn:
    """An ``async def step_fn(p0, ..., pN)`` with a no-op or sleeping body (cached per shape).

    Parameters are named because reactorpy wires arguments by parameter name; the baselines call
    the very same function positionally.
    """
    key = (arity, delay, id(probe))
    fn = _FN_CACHE.get(key)
    if fn is None:
        params = ", ".join(f"p{i}" for i in range(arity))
        if delay is None:
            body = "    return None\n"
        elif probe is None:
            body = f"    await _sleep({delay!r})\n"
        else:
            body = f"    _probe.enter()\n    try:\n        await _sleep({delay!r})\n"
            body += "    finally:\n        _probe.exit()\n"
        namespace: dict[str, Any] = {"_sleep": asyncio.sleep, "_probe": probe}
        exec(f"async def step_fn({params}):\n{body}", namespace)
        fn = namespace["step_fn"]
        fn.__qualname__ = fn.__name__ = f"step_{arity}_{'noop' if delay is None else 'sleep'}"
        fn.__module__ = __name__
        _FN_CACHE[key] = fn
    return fn


def step_fns(workload: Workload, probe: PeakProbe | None = None) -> list[StepFn]:
    return [make_step_fn(len(s.parents), s.delay, probe) for s in workload.steps]


def seed_workload() -> Workload:
    """The seed tutorial: three sleeping fetches and an aggregate of all three (0.30 s path)."""
    return Workload(
        "seed",
        (
            StepSpec("fetch_profile", (), 0.20),
            StepSpec("fetch_preferences", (), 0.15),
            StepSpec("fetch_activity", (), 0.30),
            StepSpec("aggregate_data", (0, 1, 2)),
        ),
    )


def skew_workload() -> Workload:
    """Two skewed chains: the critical path is 0.31 s, a generation barrier pays 0.6 s."""
    return Workload(
        "skew",
        (
            StepSpec("a1", (), 0.3),
            StepSpec("b1", (), 0.01),
            StepSpec("a2", (0,), 0.01),
            StepSpec("b2", (1,), 0.3),
            StepSpec("sink", (2, 3)),
        ),
    )


def fanout_workload(n: int = 10_000) -> Workload:
    """One root feeding ``n`` independent no-op children."""
    children = tuple(StepSpec(f"s{i}", (0,)) for i in range(1, n + 1))
    return Workload("fanout", (StepSpec("s0", ()), *children))


def chain_workload(n: int = 1_000) -> Workload:
    """``n`` no-op steps, each depending on the previous one."""
    return Workload("chain", tuple(StepSpec(f"s{i}", (i - 1,) if i else ()) for i in range(n)))


def random_dag_workload(n: int = 5_000, seed: int = 42, name: str = "random") -> Workload:
    """A layered random DAG of ``n`` no-op steps with about 3 parents each.

    Layer widths are uniform in 1..100. Each step past the first layer has one parent in the
    previous layer (so the layers are real) and 1 to 3 more anywhere earlier (mean 3 in total).
    """
    rng = random.Random(seed)
    steps: list[StepSpec] = []
    prev_start = cur_start = 0
    while len(steps) < n:
        width = min(rng.randint(1, 100), n - len(steps))
        for _ in range(width):
            if cur_start == 0:
                parents: set[int] = set()
            else:
                parents = {rng.randrange(prev_start, cur_start)}
                k = min(rng.randint(1, 3), cur_start)
                parents.update(rng.sample(range(cur_start), k))
            steps.append(StepSpec(f"s{len(steps)}", tuple(sorted(parents))))
        prev_start, cur_start = cur_start, len(steps)
    return Workload(name, tuple(steps))


def independent_workload(n: int, name: str = "independent", delay: float | None = None) -> Workload:
    """``n`` independent steps (no-op, or sleeping ``delay`` seconds)."""
    return Workload(name, tuple(StepSpec(f"s{i}", (), delay) for i in range(n)))


def limited_workload(n: int = 200, delay: float = 0.01) -> Workload:
    """``n`` independent sleeping steps (run under a concurrency cap of 10)."""
    return independent_workload(n, "limited", delay)


# --------------------------------------------------------------------------- baselines


async def _await_parents_then_call(fn: StepFn, parents: Sequence[asyncio.Task[Any]]) -> Any:
    args = []
    for task in parents:
        args.append(await task)
    return await fn(*args)


async def _call_root(fn: StepFn) -> Any:
    return await fn()


async def _await_parents_then_call_limited(
    fn: StepFn, parents: Sequence[asyncio.Task[Any]], sem: asyncio.Semaphore
) -> Any:
    args = []
    for task in parents:
        args.append(await task)
    async with sem:
        return await fn(*args)


async def run_tasks(
    workload: Workload, fns: Sequence[StepFn], sem: asyncio.Semaphore | None = None
) -> dict[str, Any]:
    """Baseline ``tasks``: one eagerly created task per step, awaiting its parents' tasks."""
    tasks: list[asyncio.Task[Any]] = []
    create_task = asyncio.create_task
    for spec, fn in zip(workload.steps, fns, strict=True):
        parents = [tasks[p] for p in spec.parents]
        if sem is not None:
            coro = _await_parents_then_call_limited(fn, parents, sem)
        elif parents:
            coro = _await_parents_then_call(fn, parents)
        else:
            coro = _call_root(fn)
        tasks.append(create_task(coro))
    results = {}
    for spec, task in zip(workload.steps, tasks, strict=True):
        results[spec.name] = await task
    return results


def prepare_graphlib(workload: Workload) -> graphlib.TopologicalSorter[int]:
    """A prepared sorter (single use: one per repetition, built before timing)."""
    sorter = graphlib.TopologicalSorter({i: s.parents for i, s in enumerate(workload.steps)})
    sorter.prepare()
    return sorter


async def run_graphlib(
    workload: Workload, fns: Sequence[StepFn], sorter: graphlib.TopologicalSorter[int]
) -> dict[str, Any]:
    """Baseline ``graphlib``: ready set from the sorter, ``asyncio.wait(FIRST_COMPLETED)``."""
    steps = workload.steps
    results: list[Any] = [None] * len(steps)
    pending: dict[asyncio.Task[Any], int] = {}
    create_task = asyncio.create_task
    while sorter.is_active():
        for i in sorter.get_ready():
            pending[create_task(fns[i](*[results[p] for p in steps[i].parents]))] = i
        done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            i = pending.pop(task)
            results[i] = task.result()
            sorter.done(i)
    return {s.name: r for s, r in zip(steps, results, strict=True)}


def prepare_barrier(workload: Workload) -> list[list[int]]:
    """Topological generations computed by networkx (before timing)."""
    graph = nx.DiGraph()
    graph.add_nodes_from(range(len(workload)))
    graph.add_edges_from((p, i) for i, s in enumerate(workload.steps) for p in s.parents)
    return [sorted(g) for g in nx.topological_generations(graph)]


async def run_barrier(
    workload: Workload, fns: Sequence[StepFn], generations: Sequence[Sequence[int]]
) -> dict[str, Any]:
    """Baseline ``barrier``: one ``asyncio.gather`` per topological generation."""
    steps = workload.steps
    results: list[Any] = [None] * len(steps)
    for generation in generations:
        values = await asyncio.gather(
            *[fns[i](*[results[p] for p in steps[i].parents]) for i in generation]
        )
        for i, value in zip(generation, values, strict=True):
            results[i] = value
    return {s.name: r for s, r in zip(steps, results, strict=True)}


# --------------------------------------------------------------------------- reactorpy


def build_reactor(rp: ModuleType, workload: Workload, fns: Sequence[StepFn]) -> Any:
    """A reactor (``returns`` unset: a dict of all results) wired with ``rp.Result`` sources.

    One ``Step`` per distinct function is added under every step name; if the implementation
    refuses that, each step gets its own ``Step``.
    """
    reactor = rp.Reactor(f"bench_{workload.name}")
    shared: dict[int, Any] = {}
    for spec, fn in zip(workload.steps, fns, strict=True):
        args = {f"p{k}": rp.Result(name) for k, name in enumerate(workload.parent_names(spec))}
        step = shared.get(id(fn))
        if step is None:
            step = shared[id(fn)] = rp.step(fn)
        try:
            reactor.add(step, name=spec.name, args=args)
        except rp.DuplicateStepError:
            raise
        except rp.ReactorError:
            reactor.add(rp.step(name=spec.name, args=args)(fn))
    return reactor


# --------------------------------------------------------------------------- measuring


@dataclass(slots=True)
class Config(Table):
    columns = (("workload", 9), ("contender", 11), ("figure", 34), ("vs tasks", 9), ("target", 20))
    quick: bool = False
    fast_reps: int = 5
    slow_reps: int = 3
    scaling_sizes: tuple[int, ...] = (10_000, 100_000)
    plan_reps: int = 5

    @classmethod
    def make(cls, quick: bool) -> Config:
        if quick:
            return cls(quick=True, fast_reps=2, slow_reps=1, scaling_sizes=(10_000,), plan_reps=1)
        return cls()


async def check_run(name: str, arm: Arm, workload: Workload) -> None:
    """Untimed warm-up run that also checks every step produced a result."""
    result = await arm()
    if not isinstance(result, dict) or len(result) != len(workload):
        got = len(result) if isinstance(result, dict) else type(result).__name__
        raise AssertionError(f"{name}: expected {len(workload)} results, got {got}")


async def check_runs(arms: dict[str, Arm], workload: Workload) -> None:
    """:func:`check_run` of every arm."""
    for name, arm in arms.items():
        await check_run(name, arm, workload)


def baseline_arms(workload: Workload, fns: Sequence[StepFn]) -> dict[str, Arm]:
    generations = prepare_barrier(workload)
    return {
        "tasks": lambda: run_tasks(workload, fns),
        "graphlib": lambda: run_graphlib(workload, fns, prepare_graphlib(workload)),
        "barrier": lambda: run_barrier(workload, fns, generations),
    }


def reactorpy_arm(workload: Workload, fns: Sequence[StepFn], **run_kw: Any) -> Arm | str:
    """Build and plan a reactor now; return its arm, or the reason it cannot be benchmarked."""
    rp = load_reactorpy()
    if rp is None:
        return reactorpy_error()
    try:
        reactor = build_reactor(rp, workload, fns)
        reactor.plan()
    except Exception as exc:
        return f"build failed: {short_error(exc)}"
    return lambda: reactor.run(**run_kw)


async def with_reactorpy(
    arms: dict[str, Arm], workload: Workload, fns: Sequence[StepFn], **run_kw: Any
) -> str | None:
    """Add a checked reactorpy arm to ``arms``; return why not when it fails."""
    arm = reactorpy_arm(workload, fns, **run_kw)
    if isinstance(arm, str):
        return arm
    try:
        await check_run("reactorpy", arm, workload)
    except Exception as exc:
        return f"run failed: {short_error(exc)}"
    arms["reactorpy"] = arm
    return None


async def time_against_baselines(
    workload: Workload, reps: int
) -> tuple[dict[str, float], str | None]:
    """Best times of the baselines and reactorpy (checked first), and why reactorpy is not
    among them if it is not."""
    fns = step_fns(workload)
    arms = baseline_arms(workload, fns)
    await check_runs(arms, workload)
    skipped = await with_reactorpy(arms, workload, fns)
    return await best_times(arms, reps), skipped


def ms_from(ref: float) -> Callable[[str, float], str]:
    """The figure of a sleeping workload: milliseconds, and the difference from ``ref``."""
    return lambda _, t: f"{t * 1e3:8.2f} ms ({(t - ref) * 1e3:+.2f} ms)"


async def bench_sleeping(cfg: Config, workload: Workload, ideal: float) -> None:
    """Wall time of a sleeping workload; target: reactorpy within 1 ms of ``tasks``."""
    best, skipped = await time_against_baselines(workload, cfg.slow_reps)
    ref = best["tasks"]
    target = ("<= tasks + 1 ms", lambda t: t - ref <= 1e-3)
    emit_timings(cfg, workload.name, best, "tasks", ms_from(ref), {"reactorpy": target})
    cfg.emit(Row(workload.name, "(ideal)", f"{ideal * 1e3:8.2f} ms critical path"))
    if skipped:
        cfg.emit(Row(workload.name, "reactorpy", "skipped", verdict=f"SKIP: {skipped}"))


async def bench_noop(cfg: Config, workload: Workload, target: float) -> None:
    """Per-step cost of a no-op workload; target: reactorpy/tasks ratio at most ``target``."""
    best, skipped = await time_against_baselines(workload, cfg.fast_reps)
    ref = best["tasks"]
    n = len(workload)
    targets = {"reactorpy": (f"<= {target:.1f}x tasks", lambda t: t / ref <= target)}
    emit_timings(cfg, workload.name, best, "tasks", lambda _, t: per_step(t, n), targets)
    if skipped:
        cfg.emit(Row(workload.name, "reactorpy", "skipped", verdict=f"SKIP: {skipped}"))


async def bench_limited(cfg: Config, limit: int = 10) -> None:
    """Independent sleeps under a cap; target: within 3 ms of ``tasks+sem``, peak <= cap."""
    workload = limited_workload()
    fns = step_fns(workload)
    sem = asyncio.Semaphore(limit)
    arms: dict[str, Arm] = {"tasks+sem": lambda: run_tasks(workload, fns, sem)}
    await check_run("tasks+sem", arms["tasks+sem"], workload)
    skipped = await with_reactorpy(arms, workload, fns, max_concurrency=limit)
    best = await best_times(arms, cfg.slow_reps)
    ref = best["tasks+sem"]
    ideal = math.ceil(len(workload) / limit) * workload.steps[0].delay  # type: ignore[operator]
    target = ("<= tasks+sem + 3 ms", lambda t: t - ref <= 3e-3)
    emit_timings(cfg, workload.name, best, "tasks+sem", ms_from(ref), {"reactorpy": target})
    cfg.emit(Row(workload.name, "(ideal)", f"{ideal * 1e3:8.2f} ms ({limit} at a time)"))

    # Correctness pass (untimed): the same workload with bodies that count who runs at once.
    for name in arms:
        probe = PeakProbe()
        probed = step_fns(workload, probe)
        if name == "reactorpy":
            arm = reactorpy_arm(workload, probed, max_concurrency=limit)
            if isinstance(arm, str):
                cfg.emit(Row(workload.name, "reactorpy", "peak: skipped", verdict=f"SKIP: {arm}"))
                continue
            await arm()
        else:
            await run_tasks(workload, probed, sem)
        row = Row(workload.name, name, f"peak concurrency {probe.peak}")
        if name == "reactorpy":
            row.target, row.verdict = f"<= {limit}", verdict(probe.peak <= limit)
        cfg.emit(row)
    if skipped:
        cfg.emit(Row(workload.name, "reactorpy", "skipped", verdict=f"SKIP: {skipped}"))


@dataclass(slots=True)
class ScalePoint:
    tasks: float = math.nan  # best run time of the tasks baseline
    kahn: float = math.nan  # best time of Kahn's algorithm over the same DAG (calibration)
    mem_tasks: float = math.nan  # its peak MiB while running
    build: float = math.nan  # reactorpy: time to define the reactor
    plan: float = math.inf  # best cold plan() (of a freshly built reactor)
    run: float = math.nan  # best run time, plan cached
    mem_plan: float = math.nan  # peak MiB while building and planning
    mem_run: float = math.nan  # peak MiB while running
    error: str | None = None  # why reactorpy could not be measured


async def traced_peak(make: Callable[[], Awaitable[Any] | Any]) -> float:
    """Peak traced memory (MiB) while ``make()`` (and what it returns, if awaitable) runs."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        out = make()
        if isinstance(out, Awaitable):
            await out
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def kahn_order(preds: Sequence[Sequence[int]]) -> list[int]:
    """Kahn's algorithm over lists of parent indices: the leanest linear pass over a DAG.

    The scaling workload times it at both sizes as the machine's own factor: how much more a
    pass over 10x the steps costs when the larger working set no longer fits the caches.
    """
    indegree = [len(ps) for ps in preds]
    children: list[list[int]] = [[] for _ in preds]
    for k, ps in enumerate(preds):
        for p in ps:
            children[p].append(k)
    current = [k for k, d in enumerate(indegree) if not d]
    order: list[int] = []
    while current:
        order.extend(current)
        after = []
        for k in current:
            for d in children[k]:
                indegree[d] -= 1
                if not indegree[d]:
                    after.append(d)
        current = after
    return order


async def scale_point(cfg: Config, n: int) -> ScalePoint:
    """Build, plan and run a random DAG of ``n`` steps; memory in a second, separate pass."""
    point = ScalePoint()
    workload = random_dag_workload(n, name=f"random{n // 1000}k")
    fns = step_fns(workload)
    reps = cfg.fast_reps  # the same at both sizes: a best of fewer would favour the small one
    preds = [list(s.parents) for s in workload.steps]
    assert len(kahn_order(preds)) == n
    point.kahn = min(timed(lambda: kahn_order(preds), cfg.fast_reps))
    tasks_arm: Arm = lambda: run_tasks(workload, fns)  # noqa: E731
    await check_run("tasks", tasks_arm, workload)
    point.tasks = (await best_times({"tasks": tasks_arm}, reps))["tasks"]
    point.mem_tasks = await traced_peak(tasks_arm)

    rp = load_reactorpy()
    if rp is None:
        point.error = reactorpy_error()
        return point
    stage = "build"
    try:
        gc.collect()
        start = time.perf_counter()
        reactor = build_reactor(rp, workload, fns)
        point.build = time.perf_counter() - start
        stage = "plan"
        # A cold plan (a fresh reactor each time, built untimed), best of a few: one pass of
        # a few hundred ms moves by tens of percent on a shared machine.
        for rep in range(cfg.plan_reps):
            if rep:
                reactor = build_reactor(rp, workload, fns)
            gc.collect()
            start = time.perf_counter()
            reactor.plan()
            point.plan = min(point.plan, time.perf_counter() - start)
        stage = "run"
        arm: Arm = lambda: reactor.run()  # noqa: E731
        await check_run("reactorpy", arm, workload)
        point.run = (await best_times({"reactorpy": arm}, reps))["reactorpy"]
        stage = "memory pass"
        point.mem_plan = await traced_peak(lambda: build_reactor(rp, workload, fns).plan())
        point.mem_run = await traced_peak(arm)
    except Exception as exc:
        point.error = f"{stage} failed: {short_error(exc)}"
    return point


async def bench_scaling(cfg: Config, target: float = 12.0) -> None:
    """Plan and run time at 10k and 100k steps, their ratio (target <= 12), peak memory."""
    points: dict[int, ScalePoint] = {}
    for n in cfg.scaling_sizes:
        wl = f"scale{n // 1000}k"
        p = points[n] = await scale_point(cfg, n)
        cfg.emit(Row(wl, "tasks", f"run   {p.tasks * 1e3:8.1f} ms, peak {p.mem_tasks:6.1f} MiB"))
        cfg.emit(Row(wl, "(kahn)", f"pass  {p.kahn * 1e3:8.1f} ms"))
        if p.error is not None:
            cfg.emit(Row(wl, "reactorpy", "skipped", verdict=f"SKIP: {p.error}"))
            continue
        cfg.emit(Row(wl, "reactorpy", f"build {p.build * 1e3:8.1f} ms"))
        cfg.emit(Row(wl, "reactorpy", f"plan  {p.plan * 1e3:8.1f} ms, peak {p.mem_plan:6.1f} MiB"))
        run = f"run   {p.run * 1e3:8.1f} ms, peak {p.mem_run:6.1f} MiB"
        cfg.emit(Row(wl, "reactorpy", run, ratio=f"{p.run / p.tasks:.3f}"))
    if len(points) < 2:
        return
    lo, hi = sorted(points)[:2]
    small, large = points[lo], points[hi]
    sizes = f"{hi // 1000}k/{lo // 1000}k"
    cfg.emit(Row("scaling", "(kahn)", f"pass {sizes} = {large.kahn / small.kahn:.2f}x"))
    cfg.emit(Row("scaling", "tasks", f"run {sizes} = {large.tasks / small.tasks:.2f}x"))
    if small.error or large.error:
        return
    ratios = {
        "plan": large.plan / small.plan,
        "run": large.run / small.run,
        "plan+run": (large.plan + large.run) / (small.plan + small.run),
    }
    for what, ratio in ratios.items():
        row = Row(
            "scaling", "reactorpy", f"{what} {sizes} = {ratio:.2f}x", target=f"<= {target:g}x"
        )
        row.verdict = verdict(ratio <= target)
        cfg.emit(row)


# --------------------------------------------------------------------------- entry points


async def run_benchmarks(
    quick: bool = False, only: Sequence[str] | None = None, out: Config | None = None
) -> list[Row]:
    """Run the selected workloads (all by default) and return the table rows."""
    cfg = out or Config.make(quick)
    selected = selection(only, WORKLOADS)
    cfg.print_header()
    jobs: dict[str, Job] = {
        "seed": lambda: bench_sleeping(cfg, seed_workload(), ideal=0.30),
        "skew": lambda: bench_sleeping(cfg, skew_workload(), ideal=0.31),
        "fanout": lambda: bench_noop(cfg, fanout_workload(), target=1.0),
        "chain": lambda: bench_noop(cfg, chain_workload(), target=0.5),
        "random": lambda: bench_noop(cfg, random_dag_workload(), target=1.0),
        "limited": lambda: bench_limited(cfg),
        "scaling": lambda: bench_scaling(cfg),
    }
    return await run_jobs(cfg, jobs, selected)


def main(argv: Sequence[str] | None = None) -> int:
    cfg = run_main(
        argv,
        __doc__,
        WORKLOADS,
        run_benchmarks,
        Config.make,
        quick_help="fewer repetitions, skip 100k",
        versions=(f"networkx {nx.__version__}",),
    )
    print(
        f"\nfigures: best of {cfg.fast_reps} (no-op) / {cfg.slow_reps} (sleeping) runs; "
        "'vs tasks' is contender/tasks (tasks+sem for limited)."
    )
    if load_reactorpy() is None:
        print(f"reactorpy not benchmarked: {reactorpy_error()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
