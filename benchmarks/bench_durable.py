"""Durable runs: what a journal adds to a run, against the same run in memory and DBOS.

Workloads (N = 100 no-op ``async def`` steps; steps return their input or a constant):

1. ``sqlite``: `rp.SQLiteJournal` with its defaults (WAL, ``synchronous=NORMAL``, pickle), a
   fresh file per shape. ``chain``: N steps, each taking the previous one's result (every
   completion is durable before the next step starts: a commit per step). ``fan-out``: N
   independent steps (they complete together: group commit). ``fixed``: a one-step run
   (recording the run, its one completion and its end). Per-step overhead is
   ``(median journaled run - median in-memory run) / N``, the fixed cost included; fixed
   cost is the same difference for the one-step run (its step's own write included). A
   row "chain, step to step" gives percentiles of the time between two steps' starts along
   the chain, journaled minus in memory: a run of 100 commits nearly always meets one of
   the disk's rare stalls when the machine's other work flushes, which the run's time
   (hence the chain's per-step figure) carries and the median step does not. Each
   row also shows the same difference in CPU time (``time.process_time``: every thread of
   the process, the writer's too; it moves less with the machine's load), and each N-step
   row its per-step overhead past the fixed cost. Targets (wall time): chain <= 60 µs per
   step, fan-out <= 15 µs per step, fixed <= 300 µs.
2. ``dbos``: DBOS Transact, if installed (``pip install dbos``), with its SQLite system
   database (its defaults) in a temporary directory, in this process after the ``sqlite``
   figures: ``chain`` is an async workflow awaiting N async ``@DBOS.step`` calls in
   sequence; ``fan-out`` one that creates N step tasks (in a fixed order, as DBOS asks) and
   gathers them. Its per-step overhead is over the same code without DBOS (plain coroutines,
   tasks and ``gather``); the ``vs rp`` column is it over reactorpy's of the ``sqlite`` rows.
   Targets: reactorpy's per-step overhead at least 20x smaller on the chain, 100x on the
   fan-out.
3. ``postgres``: the ``sqlite`` shapes on `rp.PostgresJournal` (a schema of its own, dropped
   afterwards), when ``REACTORPY_TEST_POSTGRES_DSN`` is set, and for reference the median
   one-row ``INSERT`` in autocommit into a table of that schema (each commit waits for the
   server's WAL flush, which its disk decides). Targets: chain <= 1 ms per step, fan-out
   <= 50 µs per step.
4. ``recovery``: a three-step chain (``a -> b -> c``). A child process (this script with
   ``--unfinished``) starts K runs in one SQLite journal and, once every run has ``a``
   recorded and ``b`` started (``b`` waits forever there), is killed with SIGKILL. This
   process then opens the journal and times ``await reactor.recover(journal)`` until it
   returns (every run completed and recorded), and the time from the call to the first
   recovered ``b`` starting. K = 1 (targets: first step within 100 ms) and K = 1,000
   (targets: all recovered in < 1 s, first step within 100 ms). PostgreSQL for reference
   when its DSN is set.

Methodology: reactors are built and planned before timing; each shape is run untimed first
(a warm-up that also checks the result); then in-memory and journaled runs alternate,
``gc.collect()`` before each and gc frozen for the series (``_common.py``), and the figures
are medians (the machine is shared and a thread hand-off sometimes waits for the scheduler:
the best run would flatter, the mean would measure the neighbours; the load averages are
printed first and last, to judge a run by). Recovery figures are the median of R child
processes. Run ``python benchmarks/bench_durable.py [--quick]
[--only sqlite,dbos,postgres,recovery]``; PostgreSQL figures need
``bash .ci/postgres.sh python benchmarks/bench_durable.py``. The exit code is always 0: this
is a report, not a gate.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Job,
    RepsConfig,
    Row,
    frozen_gc,
    load_reactorpy,
    run_main,
    run_reactorpy_jobs,
    short_error,
    verdict,
)

WORKLOADS = ("sqlite", "dbos", "postgres", "recovery")
DSN = os.environ.get("REACTORPY_TEST_POSTGRES_DSN")
N = 100
UNFINISHED_FLAG = "--unfinished"

# Targets, in seconds (per step, or per run for the fixed cost and recovery).
SQLITE = {"chain": 60e-6, "fan-out": 15e-6, "fixed": 300e-6}
POSTGRES = {"chain": 1e-3, "fan-out": 50e-6}
DBOS_RATIO = {"chain": 20.0, "fan-out": 100.0}
FIRST_STEP, RECOVER_1000 = 0.1, 1.0


@dataclass(slots=True)
class Config(RepsConfig):
    """The table, the repetitions, and reactorpy's SQLite per-step overheads (for the DBOS
    ratios, measured in the same run)."""

    columns = (("workload", 9), ("contender", 26), ("figure", 78), ("vs rp", 7), ("target", 22))
    reps: int = 101
    dbos_reps: int = 7
    recovery_reps: int = 3
    per_step: dict[str, float] = field(default_factory=dict)

    @classmethod
    def make(cls, quick: bool) -> Config:
        if quick:
            return cls(quick=True, reps=9, dbos_reps=3, recovery_reps=1)
        return cls()


def load() -> str:
    """The load averages (1, 5, 15 min): thread hand-offs slow down when the 2 cores are
    shared with other work."""
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def us(t: float) -> str:
    return f"{t * 1e6:8.1f} µs"


def target_row(row: Row, label: str, ok: bool) -> Row:
    row.target, row.verdict = label, verdict(ok)
    return row


# --------------------------------------------------------------------------- reactors


async def first() -> int:
    return 0


async def plus_one(x: int) -> int:
    return x + 1


async def one() -> int:
    return 1


def chain(rp: Any, n: int) -> Any:
    """``s0 -> s1 -> ... -> s{n-1}``, returning the last step's value (n - 1)."""
    r = rp.Reactor(f"chain{n}", returns=f"s{n - 1}")
    r.step(first, name="s0")
    for i in range(1, n):
        r.step(plus_one, name=f"s{i}", args={"x": rp.Result(f"s{i - 1}")})
    r.plan()
    return r


def fan_out(rp: Any, n: int) -> Any:
    """``n`` independent steps."""
    r = rp.Reactor(f"fanout{n}")
    for i in range(n):
        r.step(one, name=f"s{i}")
    r.plan()
    return r


SHAPES: dict[str, Callable[[Any], tuple[Any, int, Any]]] = {
    # name: reactor, steps the per-step figure divides by, expected result
    "fixed": lambda rp: (chain(rp, 1), 1, 0),
    "chain": lambda rp: (chain(rp, N), N, N - 1),
    "fan-out": lambda rp: (fan_out(rp, N), N, {f"s{i}": 1 for i in range(N)}),
}


# --------------------------------------------------------------------------- timing


@dataclass(slots=True)
class Overhead:
    """Medians of a shape's in-memory and journaled runs (seconds): wall time, and CPU
    time of the process (all its threads; what the neighbours on a shared machine do not
    change much)."""

    memory: float
    journaled: float
    memory_cpu: float
    journaled_cpu: float
    commits: float  # journal commits per journaled run

    def per(self, n: int) -> float:
        return (self.journaled - self.memory) / n

    def cpu_per(self, n: int) -> float:
        return (self.journaled_cpu - self.memory_cpu) / n


async def overhead(reactor: Any, journal: Any, reps: int, expected: Any, tag: str) -> Overhead:
    """Alternate in-memory and journaled runs of `reactor` (medians of `reps` each, after
    a warm-up of each that checks the result)."""
    ids = iter(range(10**9))

    async def journaled() -> Any:
        return await reactor.run({}, journal=journal, run_id=f"{tag}-{next(ids)}")

    for _ in range(5):
        for got in (await reactor.run({}), await journaled()):
            if got != expected:
                raise AssertionError(f"{reactor.name}: expected {expected!r}, got {got!r}")
    wall: dict[str, list[float]] = {"memory": [], "journaled": []}
    cpu: dict[str, list[float]] = {"memory": [], "journaled": []}
    commits = journal.commits
    with frozen_gc():
        for _ in range(reps):
            for kind, run in (("memory", reactor.run), ("journaled", journaled)):
                gc.collect()
                start, start_cpu = time.perf_counter(), time.process_time()
                await run()
                wall[kind].append(time.perf_counter() - start)
                cpu[kind].append(time.process_time() - start_cpu)
    median = statistics.median
    return Overhead(
        median(wall["memory"]),
        median(wall["journaled"]),
        median(cpu["memory"]),
        median(cpu["journaled"]),
        (journal.commits - commits) / reps,
    )


async def journal_overheads(
    cfg: Config, rp: Any, label: str, open_journal: Callable[[str], Any], targets: dict[str, float]
) -> dict[str, float]:
    """The three shapes on one kind of journal: a row each; returns the per-step figures.
    A shape of N steps also shows its overhead past the fixed cost, per step: (its
    difference - the one-step run's) / (N - 1)."""
    figures: dict[str, float] = {}
    for shape, make in SHAPES.items():
        reactor, n, expected = make(rp)
        async with open_journal(shape) as journal:
            o = await overhead(reactor, journal, cfg.reps, expected, shape.replace("-", ""))
        per = figures[shape] = o.per(n)
        runs = (
            f"cpu {o.cpu_per(n) * 1e6:.1f}; {o.memory * 1e3:.2f} -> {o.journaled * 1e3:.2f} ms,"
            f" {o.commits:.0f} commits"
        )
        if shape == "fixed":
            figure = f"{us(per)} per run  ({runs})"
        else:
            past = (per * n - figures["fixed"]) / (n - 1)
            figure = f"{us(per)} per step ({runs}; past the fixed cost {past * 1e6:.1f})"
        row = Row(label, f"reactorpy {shape}", figure)
        if shape in targets:
            target = targets[shape]
            target_row(row, f"<= {target * 1e6:g} µs", per <= target)
        cfg.emit(row)
    return figures


async def bench_sqlite(cfg: Config, rp: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg.per_step = await journal_overheads(
            cfg,
            rp,
            "sqlite",
            lambda name: rp.SQLiteJournal(os.path.join(tmp, f"{name}.db")),
            SQLITE,
        )
        async with rp.SQLiteJournal(os.path.join(tmp, "gaps.db")) as journal:
            memory, journaled = await step_gaps(rp, journal, max(cfg.reps // 5, 3))
    quantiles = [(q, journaled[q] - memory[q]) for q in (50, 90, 99)]
    figure = ", ".join(f"p{q} {us(t).strip()}" for q, t in quantiles)
    cfg.emit(Row("sqlite", "chain, step to step", figure + " (journaled - in memory)"))


START: list[float] = []  # when each step of the timed chain started (perf_counter)


async def timed_step(x: int) -> int:
    START.append(time.perf_counter())
    return x + 1


async def step_gaps(rp: Any, journal: Any, runs: int) -> tuple[dict[int, float], ...]:
    """Percentiles (50, 90, 99) of the time from one step's start to the next's along a
    chain of N, in memory and journaled: a step's own cost, apart from the rare stalls of
    the disk that a whole run of N commits is likely to meet (they move its median)."""
    r = rp.Reactor("gaps", returns=f"s{N - 1}")
    r.step(timed_step, name="s0", args={"x": rp.Value(-1)})
    for i in range(1, N):
        r.step(timed_step, name=f"s{i}", args={"x": rp.Result(f"s{i - 1}")})
    r.plan()
    gaps: tuple[list[float], list[float]] = ([], [])
    for k in range(runs + 2):
        for kind, run in enumerate((lambda: r.run({}), lambda: r.run({}, journal=journal))):
            START.clear()
            await run()
            if k >= 2:  # (two warm-ups)
                gaps[kind].extend(b - a for a, b in itertools.pairwise(START))
    out = []
    for times in gaps:
        times.sort()
        out.append({q: times[len(times) * q // 100] for q in (50, 90, 99)})
    return out[0], out[1]


async def bench_postgres(cfg: Config, rp: Any) -> None:
    if DSN is None:
        cfg.emit(Row("postgres", "reactorpy", "skipped", verdict="SKIP: no DSN"))
        return
    schema = f"bench_durable_{os.getpid()}"
    try:
        await journal_overheads(
            cfg, rp, "postgres", lambda _: rp.PostgresJournal(DSN, schema=schema), POSTGRES
        )
        commit = await postgres_commit(schema, cfg.reps * 2)
    finally:
        await drop_schema(schema)
    figure = f"{us(commit)} (a commit: the server's WAL flush, on its disk)"
    cfg.emit(Row("postgres", "one-row INSERT, autocommit", figure))


async def postgres_commit(schema: str, n: int) -> float:
    """Median time of a one-row ``INSERT`` in autocommit into a table of `schema` (one
    commit, one WAL flush), right after the journal's rows: what a commit costs now."""
    import asyncpg

    conn = await asyncpg.connect(DSN)
    try:
        table = f'"{schema}".bench_commit'
        await conn.execute(f"CREATE TABLE {table} (k text PRIMARY KEY, v bytea)")
        times = []
        for i in range(n):
            start = time.perf_counter()
            await conn.execute(f"INSERT INTO {table} VALUES ($1, $2)", f"k{i}", b"v")
            times.append(time.perf_counter() - start)
    finally:
        await conn.close()
    return statistics.median(times)


async def drop_schema(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(DSN)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


# --------------------------------------------------------------------------- DBOS


async def plain_chain(n: int) -> int:
    x = 0
    for _ in range(n):
        x = await plain_step(x)
    return x


async def plain_fan_out(n: int) -> int:
    tasks = [asyncio.create_task(plain_step(i)) for i in range(n)]
    return sum(await asyncio.gather(*tasks))


async def plain_step(x: int) -> int:
    return x


def dbos_workflows(dbos: Any) -> tuple[Callable[[int], Awaitable[int]], ...]:
    """The DBOS step and workflows, registered before ``DBOS.launch()``."""
    step = dbos.DBOS.step()(plain_step)

    async def chain(n: int) -> int:
        x = 0
        for _ in range(n):
            x = await step(x)
        return x

    async def fan_out(n: int) -> int:
        tasks = [asyncio.create_task(step(i)) for i in range(n)]  # started in a fixed order
        return sum(await asyncio.gather(*tasks))

    chain.__qualname__, fan_out.__qualname__ = "bench_chain", "bench_fan_out"
    return dbos.DBOS.workflow()(chain), dbos.DBOS.workflow()(fan_out)


async def dbos_overhead(
    workflow: Callable[[int], Awaitable[int]], plain: Callable[[int], Awaitable[int]], reps: int
) -> tuple[float, float]:
    """DBOS's per-step overhead over the plain coroutines, and its median run (seconds),
    after two checked warm-up runs."""
    expected = await plain(N)
    for _ in range(2):
        got = await workflow(N)
        if got != expected:
            raise AssertionError(f"DBOS {workflow.__name__}: expected {expected}, got {got}")
    plain_t: list[float] = []
    dbos_t: list[float] = []
    with frozen_gc():
        for _ in range(reps):
            for run, times in ((plain, plain_t), (workflow, dbos_t)):
                gc.collect()
                start = time.perf_counter()
                await run(N)
                times.append(time.perf_counter() - start)
    median = statistics.median(dbos_t)
    return (median - statistics.median(plain_t)) / N, median


async def bench_dbos(cfg: Config, rp: Any) -> None:
    try:
        import dbos
    except ImportError as exc:
        why = f"SKIP: {short_error(exc)} (pip install dbos)"
        cfg.emit(Row("dbos", "DBOS", "skipped", verdict=why))
        return
    if not cfg.per_step:
        await bench_sqlite(cfg, rp)  # the ratios need reactorpy's figures of this run
    import logging

    logging.getLogger("dbos").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        config = {
            "name": "bench_durable",
            "system_database_url": f"sqlite:///{os.path.join(tmp, 'dbos.sqlite')}",
            "run_admin_server": False,
            "log_level": "WARNING",
        }
        dbos.DBOS(config=config)  # type: ignore[arg-type]
        try:
            chain_wf, fan_wf = dbos_workflows(dbos)
            dbos.DBOS.launch()
            shapes = {"chain": (chain_wf, plain_chain), "fan-out": (fan_wf, plain_fan_out)}
            for shape, (workflow, plain) in shapes.items():
                per, run_t = await dbos_overhead(workflow, plain, cfg.dbos_reps)
                mine = cfg.per_step[shape]
                ratio = per / mine if mine > 0 else float("inf")
                figure = f"{us(per)} per step ({run_t * 1e3:.0f} ms a run)"
                row = Row("dbos", f"DBOS {shape}", figure, ratio=f"{ratio:.0f}x")
                want = DBOS_RATIO[shape]
                cfg.emit(target_row(row, f">= {want:g}x reactorpy", ratio >= want))
        finally:
            dbos.DBOS.destroy()
            # DBOS made its executor the loop's default one, and has shut it down.
            asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor())


# --------------------------------------------------------------------------- recovery


STARTED: list[float] = []  # when each recovered ``b`` started (perf_counter)
HANG: asyncio.Event | None = None  # in the child: ``b`` waits on it forever
ARRIVED = [0, 0]  # in the child: how many ``b`` started, and how many to wait for


async def rec_a(order: int) -> int:
    return order


async def rec_b(a: int) -> int:
    if HANG is not None:
        ARRIVED[0] += 1
        if ARRIVED[0] == ARRIVED[1]:
            print("ready", flush=True)
        await HANG.wait()
    STARTED.append(time.perf_counter())
    return a + 1


async def rec_c(b: int) -> int:
    return b + 1


def recovery_reactor(rp: Any) -> Any:
    r = rp.Reactor("recovery", inputs=["order"], returns="c")
    r.step(rec_a, name="a", args={"order": rp.Input("order")})
    r.step(rec_b, name="b", args={"a": rp.Result("a")})
    r.step(rec_c, name="c", args={"b": rp.Result("b")})
    r.plan()
    return r


def open_spec(rp: Any, spec: str) -> Any:
    kind, _, where = spec.partition(":")
    if kind == "sqlite":
        return rp.SQLiteJournal(where)
    dsn, _, schema = where.rpartition("#")
    return rp.PostgresJournal(dsn, schema=schema)


async def unfinished_child(spec: str, k: int) -> None:
    """The child: start `k` runs and leave them in ``b`` (the parent kills this process)."""
    global HANG
    rp = load_reactorpy()
    assert rp is not None
    HANG = asyncio.Event()
    ARRIVED[1] = k
    reactor = recovery_reactor(rp)
    journal = open_spec(rp, spec)
    await asyncio.gather(
        *(reactor.run({"order": i}, journal=journal, run_id=f"run-{i}") for i in range(k))
    )


def make_unfinished(spec: str, k: int) -> None:
    """K unfinished runs in the journal at `spec`, their owner killed with SIGKILL."""
    child = subprocess.Popen(
        [sys.executable, __file__, UNFINISHED_FLAG, spec, str(k)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the child that makes unfinished runs said {line!r}")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()


@dataclass(slots=True)
class Recovered:
    total: float  # recover() called -> returned
    first: float  # recover() called -> the first recovered ``b`` started
    runs: int  # the runs it completed


async def recover_once(rp: Any, spec: str, k: int) -> Recovered:
    make_unfinished(spec, k)
    reactor = recovery_reactor(rp)
    async with open_spec(rp, spec) as journal:
        STARTED.clear()
        gc.collect()
        start = time.perf_counter()
        records = await reactor.recover(journal)
        total = time.perf_counter() - start
        done = [r for r in records if r.status == "completed" and r.result == int(r.run_id[4:]) + 2]
    return Recovered(total, min(STARTED, default=float("inf")) - start, len(done))


async def recovery_rows(
    cfg: Config, rp: Any, label: str, spec: Callable[[str], str], targets: bool
) -> None:
    """`spec(name)`: a new journal for each round (its runs are named alike)."""
    await recover_once(rp, spec("warm"), 10)  # warm-up (untimed)
    for k in (1, 1000):
        results = [
            await recover_once(rp, spec(f"{k}-{rep}"), k) for rep in range(cfg.recovery_reps)
        ]
        total = statistics.median(r.total for r in results)
        first_t = statistics.median(r.first for r in results)
        runs = min(r.runs for r in results)
        row = Row(label, f"{k:,} run(s): first step", f"{first_t * 1e3:8.2f} ms after recover()")
        if targets:
            target_row(row, f"<= {FIRST_STEP * 1e3:g} ms", first_t <= FIRST_STEP)
        cfg.emit(row)
        row = Row(
            label, f"{k:,} run(s): recover()", f"{total * 1e3:8.2f} ms, {runs} of {k} completed"
        )
        if targets and k == 1000:
            target_row(
                row, f"< {RECOVER_1000:g} s, all completed", total < RECOVER_1000 and runs == k
            )
        cfg.emit(row)


async def bench_recovery(cfg: Config, rp: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        await recovery_rows(
            cfg, rp, "recovery", lambda name: f"sqlite:{os.path.join(tmp, f'{name}.db')}", True
        )
    if DSN is None:
        cfg.emit(Row("recovery", "postgres", "skipped", verdict="SKIP: no DSN"))
        return
    base = f"bench_recovery_{os.getpid()}"
    schemas: list[str] = []

    def spec(name: str) -> str:
        schemas.append(f"{base}_{len(schemas)}")
        return f"postgres:{DSN}#{schemas[-1]}"

    try:
        await recovery_rows(cfg, rp, "rec pg", spec, False)
    finally:
        for schema in schemas:
            await drop_schema(schema)


# --------------------------------------------------------------------------- entry points


def jobs(cfg: Config, rp: Any) -> dict[str, Job]:
    """The benchmark of each workload, by name."""
    return {
        "sqlite": lambda: bench_sqlite(cfg, rp),
        "dbos": lambda: bench_dbos(cfg, rp),
        "postgres": lambda: bench_postgres(cfg, rp),
        "recovery": lambda: bench_recovery(cfg, rp),
    }


async def run_benchmarks(
    quick: bool = False, only: Sequence[str] | None = None, out: Config | None = None
) -> list[Row]:
    """Run the selected workloads (all by default) and return the table rows."""
    return await run_reactorpy_jobs(out or Config.make(quick), only, WORKLOADS, jobs)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == [UNFINISHED_FLAG]:
        asyncio.run(unfinished_child(argv[1], int(argv[2])))
        return 0
    versions = [f"sqlite {sqlite3.sqlite_version}", f"load {load()}"]
    try:
        from importlib.metadata import version

        versions.append(f"dbos {version('dbos')}")
    except Exception:
        pass
    cfg = run_main(argv, __doc__, WORKLOADS, run_benchmarks, Config.make, versions=versions)
    print(
        f"\nfigures: medians of {cfg.reps} runs (DBOS: {cfg.dbos_reps}; recovery: "
        f"{cfg.recovery_reps} child processes); PostgreSQL "
        + ("at $REACTORPY_TEST_POSTGRES_DSN" if DSN else "skipped (no DSN)")
        + f"; load at the end {load()}."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
