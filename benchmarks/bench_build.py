"""Reactors built per request: building, planning and a first run against a cached run.

A service that assembles a reactor per order or per job, from `Step` objects defined once at
import, pays for building it, planning it and running it once; a service that keeps one
reactor pays for a run of an already planned reactor. Issue 16's target: the first at most 3x
the second, at 20, 200 and 2,000 steps.

Workload, per size: a random DAG (seeded), built per request from six module-level steps:

- ``fetch(key: str)``: the roots, wired to the input ``order_id``;
- ``enrich(record: dict, factor: int)``: a result and a ``rp.Value``;
- ``combine(left: dict, right: dict)``: two results (a plain ``def``);
- ``join(a, b, c)``: three results, unannotated, one in 20 of them through a path
  (``rp.Result(name, "id")``);
- ``tag(record: dict, customer: str)``: a result and the input ``customer``;
- ``reserve(record: dict)``: a result; ``retries=2`` and an undo.

Every step returns a ``dict[str, Any]`` (the plan's annotation check compares them), the
reactor returns the last step, and parents are drawn uniformly from the earlier steps. Per
request: ``r = rp.Reactor(...)``, then ``r.add(step, name=f"s{k}", args={...})`` for each
step, the sources (``rp.Result``, ``rp.Input``, ``rp.Value``) made on the spot; one step in
ten is added as ``r.add(step.evolve(name=..., args=...))`` instead.

Phases, each timed on its own, the four of one request after one another (interleaved
between sizes): (a) build, (b) ``plan()``, (c) the first ``run()``, (d) a second run of
the same reactor, whose plan and dispatch tables are cached. Figures are the best of N
(more repetitions for the smaller sizes, whose times are shorter); the ratio is the best
(a)+(b)+(c) of one request over the best (d), target <= 3x. ``gc.collect(); gc.freeze()``
precede the series and ``gc.collect()`` each request; the collector stays on, as it is in a
service.

Also, ``rp.step(fn)`` on one function again and again, against ``rp.step`` on functions
never seen before (each made by a ``def`` of its own), the steps kept as a module keeps
those it defines: the signature of a function is inspected once, so decorating it again
(or a method, or a partial) costs less than the first time. Reported, no target.

Run ``python benchmarks/bench_build.py [--quick] [--only build,decorate]``. The exit code is
always 0: this is a report, not a gate. ``main(argv)`` and ``run_benchmarks()`` are importable.
"""

from __future__ import annotations

import functools
import gc
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Job, Row, Table, frozen_gc, run_main, run_reactorpy_jobs, verdict

WORKLOADS = ("build", "decorate")
SIZES = (20, 200, 2_000)
INPUTS = {"order_id": "o-1", "customer": "c-1"}


# --------------------------------------------------------------------------- the steps


async def fetch(key: str) -> dict[str, Any]:
    return {"id": key}


async def enrich(record: dict[str, Any], factor: int) -> dict[str, Any]:
    return record


def combine(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    return left


async def join(a, b, c):  # type: ignore[no-untyped-def]
    return a if isinstance(a, dict) else {"id": a}


async def tag(record: dict[str, Any], customer: str) -> dict[str, Any]:
    return record


async def reserve(record: dict[str, Any]) -> dict[str, Any]:
    return record


def release(booking: dict[str, Any], record: dict[str, Any]) -> None:
    return None


_LIBRARY: dict[str, Any] = {}


def library(rp: Any) -> dict[str, Any]:
    """The module-level `Step` objects, made once per process (as at a module's import)."""
    if not _LIBRARY:
        _LIBRARY.update(
            fetch=rp.step(fetch),
            enrich=rp.step(enrich),
            combine=rp.step(combine),
            join=rp.step(join),
            tag=rp.step(tag),
            reserve=rp.step(retries=2)(reserve),
        )
        _LIBRARY["reserve"].undo(release)
    return _LIBRARY


# --------------------------------------------------------------------------- the workload

# One wired parameter: (parameter, "result" | "input" | "value" | "path", what it names).
Wire = tuple[str, str, Any]
# One step of a request: (name, kind of step, its wiring, added through evolve).
Spec = tuple[str, str, tuple[Wire, ...], bool]


def workload(n: int, seed: int = 16) -> list[Spec]:
    """The steps of a request of `n` steps: a seeded random DAG (see the module docstring)."""
    rng = random.Random(seed)
    roots = max(1, n // 20)
    specs: list[Spec] = []
    for k in range(n):
        name = f"s{k}"
        if k < roots:
            specs.append((name, "fetch", (("key", "input", "order_id"),), False))
            continue

        def parent() -> str:
            return f"s{rng.randrange(k)}"  # noqa: B023 - called in this iteration

        kind = rng.choice(("enrich", "enrich", "combine", "join", "join", "tag", "reserve"))
        wires: tuple[Wire, ...]
        if kind == "enrich":
            wires = (("record", "result", parent()), ("factor", "value", k % 5))
        elif kind == "combine":
            wires = (("left", "result", parent()), ("right", "result", parent()))
        elif kind == "join":
            first = ("path", (parent(), "id")) if rng.random() < 0.05 else ("result", parent())
            wires = (("a", *first), ("b", "result", parent()), ("c", "result", parent()))
        elif kind == "tag":
            wires = (("record", "result", parent()), ("customer", "input", "customer"))
        else:
            wires = (("record", "result", parent()),)
        specs.append((name, kind, wires, k % 10 == 5))
    return specs


def build(rp: Any, steps: dict[str, Any], specs: Sequence[Spec]) -> Any:
    """What a request does to assemble its reactor (timed as phase (a))."""
    Input, Result, Value = rp.Input, rp.Result, rp.Value
    reactor = rp.Reactor("order", inputs=["order_id", "customer"], returns=specs[-1][0])
    for name, kind, wires, evolve in specs:
        args: dict[str, Any] = {}
        for param, source, what in wires:
            if source == "result":
                args[param] = Result(what)
            elif source == "input":
                args[param] = Input(what)
            elif source == "value":
                args[param] = Value(what)
            else:
                args[param] = Result(*what)
        if evolve:
            reactor.add(steps[kind].evolve(name=name, args=args))
        else:
            reactor.add(steps[kind], name=name, args=args)
    return reactor


# --------------------------------------------------------------------------- measuring


@dataclass(slots=True)
class Config(Table):
    columns = (("workload", 9), ("phase", 22), ("figure", 30), ("ratio", 6), ("target", 7))
    quick: bool = False
    reps: dict[int, int] = field(default_factory=lambda: {20: 300, 200: 60, 2_000: 9})
    decorate_calls: int = 2_000

    @classmethod
    def make(cls, quick: bool) -> Config:
        if quick:
            return cls(quick=True, reps={20: 30, 200: 6, 2_000: 2}, decorate_calls=200)
        return cls()


@dataclass(slots=True)
class Phases:
    """The best time of each phase (seconds) and of a whole request."""

    build: float = math.inf
    plan: float = math.inf
    first: float = math.inf
    cached: float = math.inf
    fresh: float = math.inf  # build + plan + first run, of one request

    def add(self, times: Sequence[float]) -> None:
        build, plan, first, cached = times
        self.build = min(self.build, build)
        self.plan = min(self.plan, plan)
        self.first = min(self.first, first)
        self.cached = min(self.cached, cached)
        self.fresh = min(self.fresh, build + plan + first)


async def request(rp: Any, steps: dict[str, Any], specs: Sequence[Spec]) -> list[float]:
    """One request: the times of (a) to (d)."""
    clock = time.perf_counter
    t0 = clock()
    reactor = build(rp, steps, specs)
    t1 = clock()
    reactor.plan()
    t2 = clock()
    first = await reactor.run(INPUTS)
    t3 = clock()
    second = await reactor.run(INPUTS)
    t4 = clock()
    if first != second or not isinstance(first, dict):
        raise AssertionError(f"the two runs differ: {first!r} != {second!r}")
    return [t1 - t0, t2 - t1, t3 - t2, t4 - t3]


async def bench_build(cfg: Config, rp: Any, target: float = 3.0) -> None:
    steps = library(rp)
    specs = {n: workload(n) for n in SIZES}
    for n in SIZES:  # untimed: every size once, checked
        await request(rp, steps, specs[n])
    best = {n: Phases() for n in SIZES}
    with frozen_gc():
        for rep in range(max(cfg.reps.values())):
            for n in SIZES:
                if rep < cfg.reps[n]:
                    gc.collect()
                    best[n].add(await request(rp, steps, specs[n]))
    for n in SIZES:
        p = best[n]
        wl = f"build{n}"

        def us(t: float, n: int = n) -> str:
            return f"{t / n * 1e6:7.2f} us/step ({t * 1e3:.3f} ms)"

        for phase, t in (
            ("(a) build", p.build),
            ("(b) plan", p.plan),
            ("(c) first run", p.first),
            ("(d) cached run", p.cached),
        ):
            cfg.emit(Row(wl, phase, us(t), ratio=f"{t / p.cached:.2f}"))
        ratio = p.fresh / p.cached
        cfg.emit(
            Row(
                wl,
                "(a)+(b)+(c)",
                us(p.fresh),
                ratio=f"{ratio:.2f}",
                target=f"<= {target:g}x",
                verdict=verdict(ratio <= target),
            )
        )


def fresh_functions(count: int) -> list[Callable[..., Any]]:
    """`count` functions never decorated before, each with its own code object."""
    out = []
    for k in range(count):
        namespace: dict[str, Any] = {"Any": Any}
        exec(  # one def per function: distinct code objects, as distinct defs have
            f"async def fresh_{k}(record: dict[str, Any], factor: int = 1) -> dict[str, Any]:\n"
            "    return record\n",
            namespace,
        )
        out.append(namespace[f"fresh_{k}"])
    return out


class Pricer:
    """A callable instance (no code object of its own)."""

    async def __call__(self, record: dict[str, Any], factor: int) -> dict[str, Any]:
        return record


def per_call(
    contenders: dict[str, Callable[[], Any]], calls: int, reps: int = 5
) -> dict[str, float]:
    """Best over `reps` of the time of `calls` calls of each contender, per call (seconds),
    repetitions interleaved."""
    best = dict.fromkeys(contenders, math.inf)
    with frozen_gc():
        for _ in range(reps):
            for name, run in contenders.items():
                gc.collect()
                start = time.perf_counter()
                for _ in range(calls):
                    run()
                best[name] = min(best[name], (time.perf_counter() - start) / calls)
    return best


async def bench_decorate(cfg: Config, rp: Any, reps: int = 5) -> None:
    calls = cfg.decorate_calls
    fresh = iter(fresh_functions(calls * reps))
    partial = functools.partial(enrich, factor=2)
    pricer = Pricer()
    kept: list[Any] = []  # as a module keeps the steps it defines
    figures = per_call(
        {
            "rp.step(new function)": lambda: kept.append(rp.step(next(fresh))),
            "rp.step(same function)": lambda: kept.append(rp.step(enrich)),
            "rp.step(same partial)": lambda: kept.append(rp.step(partial, name="p")),
            "rp.step(same instance)": lambda: kept.append(rp.step(pricer)),
        },
        calls,
        reps,
    )
    first = figures["rp.step(new function)"]
    for what, t in figures.items():
        cfg.emit(Row("decorate", what, f"{t * 1e6:7.2f} us/call", ratio=f"{t / first:.2f}"))


# --------------------------------------------------------------------------- entry points


def jobs(cfg: Config, rp: Any) -> dict[str, Job]:
    """The benchmark of each workload, by name."""
    return {"build": lambda: bench_build(cfg, rp), "decorate": lambda: bench_decorate(cfg, rp)}


async def run_benchmarks(
    quick: bool = False, only: Sequence[str] | None = None, out: Config | None = None
) -> list[Row]:
    """Run the selected workloads (all by default) and return the table rows."""
    return await run_reactorpy_jobs(out or Config.make(quick), only, WORKLOADS, jobs)


def main(argv: Sequence[str] | None = None) -> int:
    cfg = run_main(argv, __doc__, WORKLOADS, run_benchmarks, Config.make)
    reps = ", ".join(f"{r} at {n:,}" for n, r in cfg.reps.items())
    print(
        f"\nfigures: best of {reps} steps; 'ratio' is the phase over (d), the cached run, "
        f"and for rp.step over a function never seen before; {cfg.decorate_calls:,} calls."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
