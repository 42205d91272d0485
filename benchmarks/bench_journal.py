"""Journal benchmarks: what durable runs cost at the storage layer, on this machine.

1. ``raw``: the databases alone. SQLite (WAL, ``synchronous=NORMAL`` and ``FULL``, the
   standard library's ``sqlite3``): a single-row transaction (``BEGIN IMMEDIATE``, one
   ``INSERT``, ``COMMIT``), and the per-row cost of a batch of 100 rows in one transaction
   (``executemany``). PostgreSQL (asyncpg), when ``REACTORPY_TEST_POSTGRES_DSN`` is set: a
   single-row ``INSERT`` in autocommit, and a batch of 100 rows in one statement (``unnest``).
2. ``handoff``: the thread round trip the SQLite journal's writer pays on top of a commit:
   the event loop hands an item to a thread, which resolves an asyncio future with
   ``call_soon_threadsafe``, for three hand-offs (``queue.SimpleQueue``; a
   ``threading.Condition`` over a deque; a deque and a pipe the thread sleeps on, the
   journal's); and 100 futures resolved by one ``call_soon_threadsafe`` (the journal's, one
   per commit) or by one each.
3. ``roundtrip``: through the journal's API, ``append`` -> durable. ``chain``: 1,000 appends,
   each awaited before the next (a chain of steps); target (SQLite NORMAL): well under the
   60 µs a journaled step may cost in all, <= 50 µs. ``fan-out``: 100 appends issued together
   then awaited (siblings completing at once; group commit); target <= 15 µs per entry.
   PostgreSQL targets: chain <= 1 ms, fan-out <= 50 µs. FULL is reported for reference.
4. ``claim``: 1,000 unfinished runs (3 entries each) whose owner is gone, claimed and each
   loaded, on SQLite: target < 1 s. PostgreSQL for reference.

Figures are the best of N repetitions (interleaved where there are contenders), gc frozen
during timing (``_common.py``). The machine is shared: read a figure near its target as at
the target. Run ``python benchmarks/bench_journal.py [--quick] [--only raw,handoff,...]``.
The exit code is always 0: this is a report, not a gate.
"""

from __future__ import annotations

import asyncio
import collections
import os
import queue
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Job, RepsConfig, Row, frozen_gc, run_main, run_reactorpy_jobs, verdict

WORKLOADS = ("raw", "handoff", "roundtrip", "claim")
DSN = os.environ.get("REACTORPY_TEST_POSTGRES_DSN")

# Targets, in seconds.
CHAIN_SQLITE, FANOUT_SQLITE = 50e-6, 15e-6
CHAIN_POSTGRES, FANOUT_POSTGRES = 1e-3, 50e-6
CLAIM_SQLITE = 1.0


class Config(RepsConfig):
    __slots__ = ()
    columns = (("workload", 10), ("contender", 32), ("figure", 40), ("", 0), ("target", 20))


def us(t: float) -> str:
    return f"{t * 1e6:8.2f} µs"


def best_of(reps: int, run: Callable[[], float]) -> float:
    """The best of ``reps`` calls of ``run()``, which returns its own measured time."""
    with frozen_gc():
        return min(run() for _ in range(reps))


async def best_of_async(reps: int, run: Callable[[], Awaitable[float]]) -> float:
    with frozen_gc():
        return min([await run() for _ in range(reps)])


# --------------------------------------------------------------------------- raw


def sqlite_raw(path: str, synchronous: str, single: int, batches: int) -> tuple[float, float]:
    """Seconds per single-row transaction, and per row in transactions of 100 rows."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS entries (run_id TEXT, key TEXT, seq INTEGER, result BLOB, "
        "undo BLOB, PRIMARY KEY (run_id, key)) WITHOUT ROWID"
    )
    sql = "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?)"
    start = time.perf_counter()
    for i in range(single):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(sql, ("run", f"single-{i}", i, b"result", b"undo"))
        conn.execute("COMMIT")
    per_commit = (time.perf_counter() - start) / single
    start = time.perf_counter()
    for b in range(batches):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, [("run", f"b{b}-{i}", i, b"result", b"undo") for i in range(100)])
        conn.execute("COMMIT")
    per_row = (time.perf_counter() - start) / (batches * 100)
    conn.close()
    return per_commit, per_row


async def postgres_raw(single: int, batches: int) -> tuple[float, float]:
    import asyncpg

    conn = await asyncpg.connect(DSN)
    try:
        await conn.execute(
            "CREATE TEMP TABLE entries (run_id text, key text, seq int8, result bytea, "
            "undo bytea, PRIMARY KEY (run_id, key))"
        )
        insert = "INSERT INTO entries VALUES ($1, $2, $3, $4, $5)"
        start = time.perf_counter()
        for i in range(single):
            await conn.execute(insert, "run", f"single-{i}", i, b"result", b"undo")
        per_commit = (time.perf_counter() - start) / single
        many = (
            "INSERT INTO entries SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], "
            "$4::bytea[], $5::bytea[])"
        )
        start = time.perf_counter()
        for b in range(batches):
            keys = [f"b{b}-{i}" for i in range(100)]
            await conn.execute(
                many, ["run"] * 100, keys, list(range(100)), [b"result"] * 100, [b"undo"] * 100
            )
        per_row = (time.perf_counter() - start) / (batches * 100)
    finally:
        await conn.close()
    return per_commit, per_row


async def bench_raw(cfg: Config, rp: Any) -> None:
    reps = cfg.reps
    with tempfile.TemporaryDirectory() as tmp:
        for synchronous, single in (("NORMAL", 2000), ("FULL", 200)):
            results = [
                sqlite_raw(os.path.join(tmp, f"{synchronous}-{r}.db"), synchronous, single, 20)
                for r in range(min(reps, 3))
            ]
            commit = min(r[0] for r in results)
            row = min(r[1] for r in results)
            cfg.emit(
                Row("raw", f"sqlite {synchronous} commit", f"{us(commit)} ({1 / commit:,.0f}/s)")
            )
            cfg.emit(Row("raw", f"sqlite {synchronous} batch 100", f"{us(row)} per row"))
    if DSN is None:
        cfg.emit(Row("raw", "postgres", "skipped", verdict="SKIP: no DSN"))
        return
    results = [await postgres_raw(300, 20) for _ in range(min(reps, 3))]
    commit, row = min(r[0] for r in results), min(r[1] for r in results)
    cfg.emit(Row("raw", "postgres commit", f"{us(commit)} ({1 / commit:,.0f}/s)"))
    cfg.emit(Row("raw", "postgres batch 100", f"{us(row)} per row"))


# --------------------------------------------------------------------------- handoff


Handoff = Callable[[asyncio.AbstractEventLoop], tuple[Callable[[Any], None], threading.Thread]]


def simple_queue(loop: asyncio.AbstractEventLoop) -> tuple[Callable[[Any], None], threading.Thread]:
    q: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def worker() -> None:
        while (future := q.get()) is not None:
            loop.call_soon_threadsafe(future.set_result, None)

    return q.put, threading.Thread(target=worker)


def condition(loop: asyncio.AbstractEventLoop) -> tuple[Callable[[Any], None], threading.Thread]:
    items: collections.deque[Any] = collections.deque()
    ready = threading.Condition()

    def put(item: Any) -> None:
        with ready:
            items.append(item)
            ready.notify()

    def worker() -> None:
        while True:
            with ready:
                ready.wait_for(lambda: items)
                batch = list(items)
                items.clear()
            for future in batch:
                if future is None:
                    return
                loop.call_soon_threadsafe(future.set_result, None)

    return put, threading.Thread(target=worker)


def pipe(loop: asyncio.AbstractEventLoop) -> tuple[Callable[[Any], None], threading.Thread]:
    items: collections.deque[Any] = collections.deque()
    r, w = os.pipe()

    def put(item: Any) -> None:
        items.append(item)
        os.write(w, b"\0")

    def worker() -> None:
        try:
            while True:
                os.read(r, 4096)
                while items:
                    future = items.popleft()
                    if future is None:
                        return
                    loop.call_soon_threadsafe(future.set_result, None)
        finally:
            os.close(r)
            os.close(w)

    return put, threading.Thread(target=worker)


async def handoff_round_trip(make: Handoff, n: int) -> float:
    loop = asyncio.get_running_loop()
    put, thread = make(loop)
    thread.start()
    try:
        for _ in range(100):
            future = loop.create_future()
            put(future)
            await future
        start = time.perf_counter()
        for _ in range(n):
            future = loop.create_future()
            put(future)
            await future
        return (time.perf_counter() - start) / n
    finally:
        put(None)
        thread.join()


async def resolve_many(n: int, one_callback: bool) -> float:
    """Seconds for a thread to resolve ``n`` futures of the loop: with one
    ``call_soon_threadsafe`` for all (the journal's), or one each."""
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(n)]

    def settle_all() -> None:
        for future in futures:
            future.set_result(None)

    go = threading.Event()

    def worker() -> None:
        go.wait()
        if one_callback:
            loop.call_soon_threadsafe(settle_all)
        else:
            for future in futures:
                loop.call_soon_threadsafe(future.set_result, None)

    thread = threading.Thread(target=worker)
    thread.start()
    start = time.perf_counter()
    go.set()
    await asyncio.gather(*futures)
    elapsed = time.perf_counter() - start
    thread.join()
    return elapsed


async def bench_handoff(cfg: Config, rp: Any) -> None:
    contenders: dict[str, Handoff] = {
        "SimpleQueue": simple_queue,
        "Condition + deque": condition,
        "pipe + deque (journal)": pipe,
    }
    best = dict.fromkeys(contenders, float("inf"))
    with frozen_gc():
        for _ in range(cfg.reps):
            for name, make in contenders.items():
                best[name] = min(best[name], await handoff_round_trip(make, 3000))
    for name, t in best.items():
        cfg.emit(Row("handoff", name, f"{us(t)} per round trip"))
    for one in (True, False):
        t = await best_of_async(cfg.reps * 3, lambda one=one: resolve_many(100, one))
        label = "1 callback (journal)" if one else "100 callbacks"
        cfg.emit(Row("handoff", f"100 futures, {label}", f"{us(t / 100)} per future"))


# --------------------------------------------------------------------------- round trip


async def chain(journal: Any, run_id: str, n: int, tag: str) -> float:
    start = time.perf_counter()
    for i in range(n):
        await journal.append(run_id, [rp_entry(f"{tag}-{i}", i)])
    return (time.perf_counter() - start) / n


async def fan_out(journal: Any, run_id: str, n: int, tag: str) -> float:
    start = time.perf_counter()
    await asyncio.gather(*[journal.append(run_id, [rp_entry(f"{tag}-{i}", i)]) for i in range(n)])
    return (time.perf_counter() - start) / n


def rp_entry(key: str, seq: int) -> Any:
    from reactorpy._journal import Entry

    return Entry(key, seq, b"\x80\x05K*.", b"\x80\x05N.")


async def roundtrip(
    cfg: Config, label: str, journal: Any, targets: tuple[float, float] | None
) -> None:
    counter = iter(range(10**9))
    async with journal:
        await journal.create_run("bench", "bench", "fp", b"inputs")
        await chain(journal, "bench", 200, "warm")
        chain_t = await best_of_async(
            cfg.reps, lambda: chain(journal, "bench", 1000, f"c{next(counter)}")
        )
        commits = journal.commits
        fan_t = await best_of_async(
            cfg.reps * 5, lambda: fan_out(journal, "bench", 100, f"f{next(counter)}")
        )
        per_fan = (journal.commits - commits) / (cfg.reps * 5)
    row = Row("roundtrip", f"{label} chain", f"{us(chain_t)} per append")
    if targets:
        row.target, row.verdict = f"<= {targets[0] * 1e6:g} µs", verdict(chain_t <= targets[0])
    cfg.emit(row)
    row = Row("roundtrip", f"{label} fan-out 100", f"{us(fan_t)} per entry, {per_fan:.1f} commits")
    if targets:
        row.target, row.verdict = f"<= {targets[1] * 1e6:g} µs", verdict(fan_t <= targets[1])
    cfg.emit(row)


async def bench_roundtrip(cfg: Config, rp: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        normal = rp.SQLiteJournal(os.path.join(tmp, "normal.db"))
        await roundtrip(cfg, "sqlite NORMAL", normal, (CHAIN_SQLITE, FANOUT_SQLITE))
        full = rp.SQLiteJournal(os.path.join(tmp, "full.db"), synchronous="FULL")
        await roundtrip(cfg, "sqlite FULL", full, None)
    if DSN is None:
        cfg.emit(Row("roundtrip", "postgres", "skipped", verdict="SKIP: no DSN"))
        return
    schema = f"bench_{os.getpid()}"
    try:
        journal = rp.PostgresJournal(DSN, schema=schema)
        await roundtrip(cfg, "postgres", journal, (CHAIN_POSTGRES, FANOUT_POSTGRES))
    finally:
        await drop_schema(schema)


async def drop_schema(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(DSN)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


# --------------------------------------------------------------------------- claim


async def claim_and_load(
    rp: Any, open_journal: Callable[..., Any], n: int, reps: int
) -> tuple[float, int]:
    """Best time to claim ``n`` abandoned runs and load each; the runs claimed."""
    best, claimed = float("inf"), 0
    for rep in range(reps):
        reactor = f"claimable-{rep}"
        # Runs of an owner on another host whose leases are released (lapsed) on close.
        async with open_journal(host="gone.example") as gone:
            for i in range(n):
                run_id = f"{reactor}-{i}"
                await gone.create_run(run_id, reactor, "fp", b"inputs")
            entries = [rp_entry(k, s) for s, k in enumerate(("a", "b", "c"))]
            await asyncio.gather(*[gone.append(f"{reactor}-{i}", entries) for i in range(n)])
        async with open_journal() as journal:
            with frozen_gc():
                start = time.perf_counter()
                runs = await journal.claim(reactor)
                stored = [await journal.load(run_id) for run_id in runs]
                elapsed = time.perf_counter() - start
            assert all(len(s.entries) == 3 for s in stored)
            claimed = len(runs)
        best = min(best, elapsed)
    return best, claimed


async def bench_claim(cfg: Config, rp: Any, n: int = 1000) -> None:
    reps = min(cfg.reps, 3)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "claim.db")
        t, claimed = await claim_and_load(rp, lambda **kw: rp.SQLiteJournal(path, **kw), n, reps)
    row = Row("claim", "sqlite", f"{t * 1e3:8.1f} ms for {claimed} runs")
    row.target, row.verdict = "< 1 s, all claimed", verdict(t < CLAIM_SQLITE and claimed == n)
    cfg.emit(row)
    if DSN is None:
        cfg.emit(Row("claim", "postgres", "skipped", verdict="SKIP: no DSN"))
        return
    schema = f"bench_claim_{os.getpid()}"
    try:
        t, claimed = await claim_and_load(
            rp, lambda **kw: rp.PostgresJournal(DSN, schema=schema, **kw), n, reps
        )
    finally:
        await drop_schema(schema)
    cfg.emit(Row("claim", "postgres", f"{t * 1e3:8.1f} ms for {claimed} runs"))


# --------------------------------------------------------------------------- entry points


def jobs(cfg: Config, rp: Any) -> dict[str, Job]:
    """The benchmark of each workload, by name."""
    return {
        "raw": lambda: bench_raw(cfg, rp),
        "handoff": lambda: bench_handoff(cfg, rp),
        "roundtrip": lambda: bench_roundtrip(cfg, rp),
        "claim": lambda: bench_claim(cfg, rp),
    }


async def run_benchmarks(
    quick: bool = False, only: Sequence[str] | None = None, out: Config | None = None
) -> list[Row]:
    """Run the selected workloads (all by default) and return the table rows."""
    return await run_reactorpy_jobs(out or Config.make(quick), only, WORKLOADS, jobs)


def main(argv: Sequence[str] | None = None) -> int:
    versions = [f"sqlite {sqlite3.sqlite_version}"]
    try:
        import asyncpg

        versions.append(f"asyncpg {asyncpg.__version__}")
    except ImportError:
        pass
    cfg = run_main(argv, __doc__, WORKLOADS, run_benchmarks, Config.make, versions=versions)
    print(
        f"\nfigures: best of {cfg.reps} runs (fan-out: of {cfg.reps * 5}); PostgreSQL "
        + ("at $REACTORPY_TEST_POSTGRES_DSN." if DSN else "skipped (no DSN).")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
