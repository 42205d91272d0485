"""Per-step overhead of reactorpy against Prefect and Hamilton, on no-op steps.

Workloads (every step body is a plain ``def`` returning at once):

- ``chain``:  N steps, each taking the previous one's result.
- ``fanout``: one root feeding N independent steps (N + 1 steps); the run ends when all are done.
- ``fanin``:  ``fanout`` plus one aggregate step taking all N results (N + 2 steps).

Contenders, each only if it imports (otherwise a line says why it was skipped):

- ``reactorpy``: ``rp.Reactor`` with ``r.add(rp.step(fn), name=..., args={...: rp.Result(...)})``,
  planned before timing, timed around ``await r.run()``. Plain ``def`` steps (run inline on the
  loop, the same kind of body the other frameworks get) are the reference for the ratio column;
  ``async def`` steps are shown too, for information. Sizes: every N another framework uses,
  plus 1,000 and 10,000.
- ``hamilton`` (package ``sf-hamilton``): a ``types.ModuleType`` of generated functions
  (``s{i}(s{i-1})``; ``f{i}(root)``; ``agg(f0, ..., fN)``), ``driver.Builder().with_modules(mod)
  .build()`` before timing, timed around ``dr.execute([final nodes])``. N = 1,000. Hamilton's
  executor recurses once per node of a chain, so the recursion limit is raised while it runs.
- ``prefect`` (Prefect 3): ``@flow``/``@task``. The chain is a sync flow calling the task N times
  in sequence; the fan-out submits N ``task.submit(root)`` futures and waits for them; the fan-in
  submits an aggregate task given the list of futures and takes its result. Default task
  settings (thread-pool task runner, default cache policy). N = 100 (50 with ``--quick``). It
  runs in a child process against an ephemeral local API server (a subprocess on localhost
  started by Prefect itself), with a fresh ``PREFECT_HOME`` in a temporary directory (so no
  user profile or database is read), ``PREFECT_API_URL`` removed from the environment,
  ``DO_NOT_TRACK=1``, ``PREFECT_SERVER_ANALYTICS_ENABLED=false``, ``PREFECT_UI_ENABLED=false``
  and logging at ERROR. The child's stderr (Prefect's server logs) is shown only if it fails.

Methodology, as in ``bench_core.py``: everything is built before timing and each workload is run
once untimed (a warm-up that also checks the result; for Prefect it also starts the server);
``gc.collect(); gc.freeze()`` precedes each timing series; the best of N repetitions is reported
(the median too, because Prefect's run time varies a lot between repetitions). ``us/step`` is
the run's wall time divided by its number of steps. ``x reactorpy`` is the framework's best
us/step over reactorpy's (plain ``def`` steps) on the same workload and N.

To reproduce, keep the frameworks out of the project's test environment::

    python3 -m venv /work/venv-fw
    /work/venv-fw/bin/pip install -e . 'prefect>=3' sf-hamilton
    /work/venv-fw/bin/python benchmarks/bench_frameworks.py [--quick] [--only reactorpy,hamilton]

The exit code is always 0: this is a report, not a gate. ``main(argv)`` is importable.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    banner,
    join_cells,
    load_reactorpy,
    parse_args,
    reactorpy_error,
    rule,
    short_error,
    timed,
)

FRAMEWORKS = ("reactorpy", "hamilton", "prefect")
WORKLOADS = ("chain", "fanout", "fanin")
WORKER_FLAG = "--prefect-worker"


@dataclass(frozen=True, slots=True)
class Config:
    rp_sizes: tuple[int, ...]
    rp_reps: int
    hamilton_n: int
    hamilton_reps: int
    prefect_n: int
    prefect_reps: int

    @classmethod
    def make(cls, quick: bool) -> Config:
        if quick:
            return cls((1_000,), 3, 1_000, 3, 50, 2)
        return cls((1_000, 10_000), 7, 1_000, 5, 100, 3)


@dataclass(slots=True)
class Result:
    """Timings (seconds) of one framework on one workload and size."""

    workload: str
    framework: str
    n: int
    steps: int
    times: list[float] = field(default_factory=list)

    @property
    def best(self) -> float:
        return min(self.times)

    def per_step(self, t: float) -> float:
        return t / self.steps * 1e6


def n_steps(workload: str, n: int) -> int:
    return {"chain": n, "fanout": n + 1, "fanin": n + 2}[workload]


def expected(workload: str, n: int) -> int:
    """What every contender's final value must be: the chain passes 0 along, agg counts."""
    return n if workload == "fanin" else 0


def generated(name: str, source: str) -> types.ModuleType:
    """A module of functions compiled from ``source``, registered in ``sys.modules``."""
    mod = types.ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), mod.__dict__)
    sys.modules[name] = mod
    return mod


def agg_source(n: int, prefix: str = "f", is_async: bool = False, annotate: bool = False) -> str:
    ann = ": int" if annotate else ""
    params = ", ".join(f"{prefix}{i}{ann}" for i in range(n))
    return f"{'async ' if is_async else ''}def agg({params}){' -> int' if annotate else ''}:\n" + (
        f"    return {n}\n"
    )


# --------------------------------------------------------------------------- reactorpy


def build_reactorpy(rp: Any, workload: str, n: int, is_async: bool) -> Any:
    kw = "async def" if is_async else "def"
    mod = generated(
        f"_bench_rp_{workload}_{n}_{int(is_async)}",
        f"{kw} first():\n    return 0\n{kw} link(x):\n    return x\n"
        + agg_source(n, "p", is_async),
    )
    first, link = rp.step(mod.first), rp.step(mod.link)
    if workload == "chain":
        r = rp.Reactor("bench_chain", returns=f"s{n - 1}")
        r.add(first, name="s0")
        for i in range(1, n):
            r.add(link, name=f"s{i}", args={"x": rp.Result(f"s{i - 1}")})
        return r
    # fanout: no ``returns``, so run() returns the dict of every step's result
    r = rp.Reactor(f"bench_{workload}", **({"returns": "agg"} if workload == "fanin" else {}))
    r.add(first, name="root")
    for i in range(n):
        r.add(link, name=f"f{i}", args={"x": rp.Result("root")})
    if workload == "fanin":
        r.add(rp.step(mod.agg), name="agg", args={f"p{i}": rp.Result(f"f{i}") for i in range(n)})
    return r


def check(framework: str, workload: str, n: int, value: Any) -> None:
    if workload == "fanout":
        got = len(value) if isinstance(value, dict) else value
        ok = isinstance(value, dict) and len(value) >= n
    else:
        got = value
        ok = value == expected(workload, n)
    if not ok:
        raise AssertionError(f"{framework} {workload} N={n}: unexpected result {got!r:.80}")


def bench_reactorpy(cfg: Config, sizes: Sequence[int]) -> list[Result] | str:
    rp = load_reactorpy()
    if rp is None:
        return reactorpy_error()
    results = []
    for workload in WORKLOADS:
        for n in sizes:
            for is_async in (False, True):
                name = "reactorpy" + (" async" if is_async else "")
                reactor = build_reactorpy(rp, workload, n, is_async)
                reactor.plan()
                loop = asyncio.new_event_loop()
                try:
                    check(name, workload, n, loop.run_until_complete(reactor.run()))
                    times = timed(
                        lambda r=reactor, lp=loop: lp.run_until_complete(r.run()), cfg.rp_reps
                    )
                finally:
                    loop.close()
                results.append(Result(workload, name, n, n_steps(workload, n), times))
    return results


# --------------------------------------------------------------------------- hamilton


def hamilton_module(workload: str, n: int) -> tuple[types.ModuleType, list[str]]:
    if workload == "chain":
        src = ["def s0() -> int:\n    return 0\n"]
        src += [f"def s{i}(s{i - 1}: int) -> int:\n    return s{i - 1}\n" for i in range(1, n)]
        finals = [f"s{n - 1}"]
    else:
        src = ["def root() -> int:\n    return 0\n"]
        src += [f"def f{i}(root: int) -> int:\n    return root\n" for i in range(n)]
        finals = [f"f{i}" for i in range(n)]
        if workload == "fanin":
            src.append(agg_source(n, annotate=True))
            finals = ["agg"]
    return generated(f"_bench_hamilton_{workload}_{n}", "".join(src)), finals


def bench_hamilton(cfg: Config) -> list[Result] | str:
    os.environ.setdefault("HAMILTON_TELEMETRY_ENABLED", "false")  # older versions phone home
    try:
        from hamilton import driver
    except Exception as exc:
        return f"import failed: {short_error(exc, 110)}"
    n = cfg.hamilton_n
    results = []
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20 * n + 1_000))
    try:
        for workload in WORKLOADS:
            mod, finals = hamilton_module(workload, n)
            dr = driver.Builder().with_modules(mod).build()
            out = dr.execute(finals)
            check("hamilton", workload, n, out if workload == "fanout" else out[finals[0]])
            times = timed(lambda dr=dr, finals=finals: dr.execute(finals), cfg.hamilton_reps)
            results.append(Result(workload, "hamilton", n, n_steps(workload, n), times))
    finally:
        sys.setrecursionlimit(limit)
    return results


# --------------------------------------------------------------------------- prefect


def prefect_worker(n: int, reps: int) -> dict[str, Any]:
    """Runs in the child process: time the Prefect flows, return their timings."""
    import logging

    from prefect import __version__, flow, task
    from prefect.futures import wait

    logging.getLogger("prefect").setLevel(logging.ERROR)

    @task
    def first() -> int:
        return 0

    @task
    def link(x: int) -> int:
        return x

    @task
    def agg(xs: list[int]) -> int:
        return len(xs)

    @flow
    def chain(n: int) -> int:
        v = first()
        for _ in range(n - 1):
            v = link(v)
        return v

    @flow
    def fanout(n: int) -> dict[int, int]:
        root = first.submit()
        futures = [link.submit(root) for _ in range(n)]
        wait(futures)
        return {i: f.result() for i, f in enumerate(futures)}

    @flow
    def fanin(n: int) -> int:
        root = first.submit()
        futures = [link.submit(root) for _ in range(n)]
        return agg.submit(futures).result()

    flows = {"chain": chain, "fanout": fanout, "fanin": fanin}
    out: dict[str, Any] = {"version": __version__, "times": {}}
    for workload, fl in flows.items():
        fl(2)  # warm-up: starts the ephemeral server on the first call, loads the flow
        check("prefect", workload, n, fl(n))
        out["times"][workload] = timed(lambda fl=fl: fl(n), reps)
    return out


def prefect_env(home: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        DO_NOT_TRACK="1",
        PREFECT_HOME=home,
        PREFECT_SERVER_ALLOW_EPHEMERAL_MODE="true",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        PREFECT_LOGGING_LEVEL="ERROR",
        PREFECT_SERVER_LOGGING_LEVEL="ERROR",
    )
    return env


def bench_prefect(cfg: Config) -> tuple[list[Result] | str, str]:
    """Run :func:`prefect_worker` in a child process; return results (or why not), version."""
    home = tempfile.mkdtemp(prefix="bench-prefect-")
    try:
        proc = subprocess.run(
            [sys.executable, __file__, WORKER_FLAG, str(cfg.prefect_n), str(cfg.prefect_reps)],
            cwd=home,  # no prefect.toml / .env of the caller's directory is read
            env=prefect_env(home),
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "timed out after 900 s", "?"
    finally:
        shutil.rmtree(home, ignore_errors=True)
    lines = proc.stdout.strip().splitlines()
    try:
        data = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = "\n    ".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        return f"worker exited {proc.returncode} without a result:\n    {tail}", "?"
    if "error" in data:
        return data["error"], data.get("version", "?")
    n = cfg.prefect_n
    results = [Result(w, "prefect", n, n_steps(w, n), times) for w, times in data["times"].items()]
    return results, data["version"]


def run_prefect_worker(argv: Sequence[str]) -> int:
    n, reps = int(argv[0]), int(argv[1])
    try:
        import prefect  # noqa: F401
    except Exception as exc:
        print(json.dumps({"error": f"import failed: {short_error(exc, 110)}"}))
        return 0
    try:
        out = prefect_worker(n, reps)
    except Exception as exc:
        out = {"error": f"run failed: {short_error(exc, 110)}"}
    print(json.dumps(out), flush=True)
    return 0


# --------------------------------------------------------------------------- report

COLUMNS = (
    ("workload", 8),
    ("framework", 15),
    ("N", 6),
    ("steps", 6),
    ("best us/step", 12),
    ("median us/step", 14),
    ("best run", 11),
    ("x reactorpy", 11),
)


def format_cells(cells: Sequence[str]) -> str:
    return join_cells(cells, COLUMNS, right_from=2).rstrip()


def num(x: float, digits: int = 1) -> str:
    """``x`` with ``digits`` decimals, or none (with thousands separators) from 1,000 on."""
    return f"{x:,.0f}" if x >= 1_000 else f"{x:.{digits}f}"


def print_table(results: list[Result]) -> None:
    ref = {(r.workload, r.n): r for r in results if r.framework == "reactorpy"}
    order = {w: i for i, w in enumerate(WORKLOADS)}
    rank = {"prefect": 0, "hamilton": 1, "reactorpy": 2, "reactorpy async": 3}
    print(format_cells([name for name, _ in COLUMNS]))
    print(rule(COLUMNS, -2))
    rows = sorted(results, key=lambda r: (order[r.workload], rank.get(r.framework, 9), r.n))
    previous = None
    for r in rows:
        if previous is not None and previous != r.workload:
            print()
        previous = r.workload
        base = ref.get((r.workload, r.n))
        ratio = f"{num(r.best / base.best)}x" if base is not None else "-"
        if r.framework == "reactorpy":
            ratio = "1.0x"
        run = r.best * 1e3
        cells = [
            r.workload,
            r.framework,
            f"{r.n:,}",
            f"{r.steps:,}",
            num(r.per_step(r.best), 2),
            num(r.per_step(statistics.median(r.times)), 2),
            f"{run:.1f} ms" if run < 10_000 else f"{run / 1e3:.2f} s",
            ratio,
        ]
        print(format_cells(cells), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [WORKER_FLAG]:
        return run_prefect_worker(argv[1:])
    args = parse_args(
        argv,
        __doc__,
        FRAMEWORKS,
        quick_help="fewer repetitions, smaller N",
        what="frameworks",
        only_note=" (reactorpy always runs)",
    )
    cfg = Config.make(args.quick)
    selected = set(args.only or FRAMEWORKS) | {"reactorpy"}
    print(banner(args.quick), flush=True)
    results: list[Result] = []
    notes: list[str] = []
    versions: list[str] = []

    if "prefect" in selected:
        print(f"prefect: N={cfg.prefect_n}, best of {cfg.prefect_reps} (child process)...")
        out, version = bench_prefect(cfg)
        if isinstance(out, str):
            notes.append(f"prefect skipped: {out}")
        else:
            results += out
            versions.append(f"prefect {version}")
    if "hamilton" in selected:
        print(f"hamilton: N={cfg.hamilton_n}, best of {cfg.hamilton_reps}...", flush=True)
        out_h = bench_hamilton(cfg)
        if isinstance(out_h, str):
            notes.append(f"hamilton skipped: {out_h}")
        else:
            results += out_h
            from importlib.metadata import version as dist_version

            versions.append(f"sf-hamilton {dist_version('sf-hamilton')}")
    sizes = sorted({*cfg.rp_sizes, *(r.n for r in results)})
    print(f"reactorpy: N={', '.join(map(str, sizes))}, best of {cfg.rp_reps}...", flush=True)
    out_rp = bench_reactorpy(cfg, sizes)
    if isinstance(out_rp, str):
        notes.append(f"reactorpy not benchmarked: {out_rp}")
    else:
        results += out_rp

    print()
    if versions:
        print(", ".join(versions))
    if results:
        print_table(results)
    for note in notes:
        print(note)
    print(
        "\nus/step: wall time of one run / its steps; 'x reactorpy': best us/step over "
        "reactorpy's (plain def steps)\non the same workload and N."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
