"""Offload benchmarks: CPU-bound steps on the event loop against a process pool, and the
per-step overhead of sending steps to a dask.distributed cluster.

1. ``cpu``: 8 independent CPU-bound steps (a pure-Python loop calibrated at startup to take
   about 0.25 s) run as plain ``def`` steps on the event loop (one after another: they block
   the loop) and then with ``run(executor=ProcessPoolExecutor(2))``. On a 2-core machine the
   pool run should take at most 0.6x the loop run (ideal: 0.5x).
2. ``dask``: 200 no-op steps sent through a dask client's executor (``executor=client``),
   next to 200 direct ``client.submit`` calls, on a ``LocalCluster`` of 2 worker processes:
   all at once (throughput: 200 independent steps; ``client.submit`` then ``gather``) and
   one at a time (latency: a chain of 200 steps; ``submit(...).result()`` in a loop).

Methodology: pools and clusters are started and warmed (every worker has imported the step
module) before timing; repetitions are interleaved between contenders and the minimum is
reported. Run ``python benchmarks/bench_offload.py [--quick]``; the exit code is always 0.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import parse_args

import reactorpy as rp
from tests.examples import cpu_steps


def calibrate(seconds: float) -> int:
    """The loop count for which `cpu_steps.spin` takes about `seconds` here (best of 3)."""
    loops = 100_000
    while True:
        took = min(_time_spin(loops) for _ in range(3))
        if took > 0.05:
            # Refine at full length: a short sample taken under load would undershoot.
            loops = max(1, int(loops * seconds / took))
            took = min(_time_spin(loops) for _ in range(2))
            return max(1, int(loops * seconds / took))
        loops *= 4


def _time_spin(loops: int) -> float:
    start = time.perf_counter()
    cpu_steps.spin(loops)
    return time.perf_counter() - start


def timed(coro_fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    asyncio.run(coro_fn())
    return time.perf_counter() - start


def run_with(reactor: rp.Reactor, executor: Any) -> Callable[[], float]:
    return lambda: timed(lambda: reactor.run(executor=executor))


def cpu_reactor(n: int, loops: int) -> rp.Reactor:
    r = rp.Reactor("cpu")
    for i in range(n):
        r.add(rp.step(cpu_steps.spin, name=f"burn{i}"), args={"loops": rp.Value(loops)})
    r.plan()
    return r


def bench_cpu(quick: bool) -> None:
    seconds = 0.05 if quick else 0.25
    reps = 1 if quick else 5
    loops = calibrate(seconds)
    reactor = cpu_reactor(8, loops)
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as pool:
        # Warm up: start both workers and import the step module in each.
        list(pool.map(cpu_steps.spin, [1, 1, 1, 1]))
        on_loop: list[float] = []
        in_pool: list[float] = []
        for _ in range(reps):
            on_loop.append(timed(lambda: reactor.run()))
            in_pool.append(timed(lambda: reactor.run(executor=pool)))
    loop_t, pool_t = min(on_loop), min(in_pool)
    print(f"cpu: 8 steps x {seconds:.2f} s ({loops} loops each), {os.cpu_count()} cores")
    print(f"  on the event loop      {loop_t:8.3f} s  ({loop_t / 8:.3f} s per step)")
    print(f"  2-process pool         {pool_t:8.3f} s")
    verdict = "ok" if pool_t <= 0.6 * loop_t else "MISSED"
    print(f"  pool / loop            {pool_t / loop_t:8.3f}x  (target <= 0.6x: {verdict})")


def bench_dask(quick: bool) -> None:
    try:
        import distributed
    except ImportError:
        print("dask: skipped (pip install 'reactorpy[dask]')")
        return
    n = 50 if quick else 200
    reps = 1 if quick else 3
    wide = rp.Reactor("wide")
    for i in range(n):
        wide.add(rp.step(cpu_steps.noop, name=f"noop{i}"))
    chain = rp.Reactor("chain")
    for i in range(n):
        chain.add(rp.step(cpu_steps.noop, name=f"noop{i}", wait_for=[f"noop{i - 1}"] if i else ()))
    wide.plan()
    chain.plan()
    with (
        distributed.LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            dashboard_address=":0",  # None still binds 8787, and warns when taken
            silence_logs=logging.ERROR,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.gather([client.submit(cpu_steps.noop, pure=False) for _ in range(20)])
        executor = client.get_executor(pure=False)

        def direct_wide() -> float:
            start = time.perf_counter()
            client.gather([client.submit(cpu_steps.noop, pure=False) for _ in range(n)])
            return time.perf_counter() - start

        def direct_chain() -> float:
            start = time.perf_counter()
            for _ in range(n):
                client.submit(cpu_steps.noop, pure=False).result()
            return time.perf_counter() - start

        rows: dict[str, list[float]] = {}
        for _ in range(reps):
            for label, fn in (
                ("wide: client.submit + gather", direct_wide),
                (
                    "wide: reactorpy executor=client",
                    run_with(wide, client),
                ),
                (
                    "wide: reactorpy client executor",
                    run_with(wide, executor),
                ),
                ("chain: submit().result()", direct_chain),
                (
                    "chain: reactorpy executor=client",
                    run_with(chain, client),
                ),
            ):
                rows.setdefault(label, []).append(fn())
    print(f"dask: {n} no-op steps, LocalCluster of 2 worker processes")
    base = {
        "wide": min(rows["wide: client.submit + gather"]),
        "chain": min(rows["chain: submit().result()"]),
    }
    for label, times in rows.items():
        t = min(times)
        ratio = t / base[label.split(":")[0]]
        print(f"  {label:34} {t:7.3f} s  {t / n * 1e3:7.3f} ms/step  {ratio:5.2f}x")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv, __doc__, quick_help="short steps, one repetition")
    bench_cpu(args.quick)
    bench_dask(args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
