"""Crash trials for durable runs: a saga run in a process that is killed with SIGKILL at a
random moment, then recovered in other processes (some of them killed too), and the
invariants of section 1.8 of the design checked against a ledger the trial owns.

Used by ``tests/test_crash.py`` (a few trials) and ``benchmarks/crash.py`` (many).

The saga (`saga`) is a chain, a fan-out, a composed child reactor, a map, a step that adds
new steps (`rp.NewSteps`), a step retried after a flaky first execution and a step that
fails on some runs, so that a run ends
completed or, after undoing, failed. Each step's side effect is an idempotent upsert of
``(run, step)`` into a ledger (an SQLite file apart from the journal); each undo deletes
that row. Every execution of a step or undo is also appended to the ledger's
``executions`` table, tagged with the process's *phase* (``worker``, ``recovery-1``, ...).

A trial (`run_trial`):

1. a *worker* process (``python -m tests.crashing work SPEC``) starts a few runs at once
   against the journal, and is killed with SIGKILL after a random delay (or left to finish);
2. before each recovery the parent reads the journal (each run's entries, undone keys and
   the rollbacks of its child runs);
3. a *recovery* process (``python -m tests.crashing recover SPEC``) calls
   ``saga.recover(journal, undo=...)``, forward or undoing at random; it is sometimes
   killed too, then recovered again; the last one must finish in time;
4. `check` then holds the trial to the invariants:

   - every run the journal holds has ended: ``completed`` with every step's effect
     present and the expected result, or ``failed``/``undone`` with no effect of a step
     that has an undo (a run meant to fail never completes; one meant to succeed never
     fails);
   - no step whose completion the journal held before a recovery (not voided by a child
     run's rollback since) ran again in it, unless undone first, and no undo the journal
     held as done ran again;
   - a step started only once its dependencies' completions were durable, and an undo
     ran only for a recorded completion (what the journal held once the process that ran
     them was dead says so);
   - a recovery that undoes a run undoes newest completion first (a step that returned
     new steps counting as completed before them: `places`);
   - every execution and undo of a step in a run saw one `rp.Context.idempotency_key`,
     which no other step of the run saw;
   - a run the journal never recorded ran no step;
   - no process hung (each has a time limit) or died other than by our SIGKILL.

An effect of a step that has an undo, left by a run that ended failed or undone, written
by an execution whose completion the journal never recorded, is an *orphan*, reported
apart from the violations: the step was in flight when its process died (its effect was
written, its completion was not), and undo only knows what the journal holds (see
`TrialReport`).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import reactorpy as rp
from reactorpy._executor.durable import ROLLED_BACK

ROOT = Path(__file__).resolve().parents[1]
MAX_SLEEP = 0.012  # seconds a step or undo may sleep before its effect
TIME_LIMIT = 60.0  # seconds any process of a trial may take before it counts as hung
FAILURES = (None, None, None, "audit", "sub", "map")  # where a run fails, if it does


# --------------------------------------------------------------------------- the ledger


class Ledger:
    """The trial's own record of side effects (``effects``) and of every execution of a
    step or an undo (``executions``), in an SQLite file apart from the journal."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS effects "
            "(run_id TEXT, step TEXT, value TEXT, PRIMARY KEY (run_id, step))"
        )
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS executions (n INTEGER PRIMARY KEY AUTOINCREMENT, "
            "phase TEXT, kind TEXT, run_id TEXT, step TEXT, ctx_step TEXT, key TEXT)"
        )

    def executed(self, phase: str, kind: str, run_id: str, step: str, ctx: rp.Context) -> int:
        """Record an execution; returns how many of this kind the step has had, this one
        included."""
        row = (phase, kind, run_id, step, ctx.step, ctx.idempotency_key)
        self.conn.execute(
            "INSERT INTO executions (phase, kind, run_id, step, ctx_step, key) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            row,
        )
        (count,) = self.conn.execute(
            "SELECT count(*) FROM executions WHERE kind = ? AND run_id = ? AND step = ?",
            (kind, run_id, step),
        ).fetchone()
        return int(count)

    def upsert(self, run_id: str, step: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO effects VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET value = excluded.value",
            (run_id, step, value),
        )

    def delete(self, run_id: str, step: str) -> None:
        self.conn.execute("DELETE FROM effects WHERE run_id = ? AND step = ?", (run_id, step))

    def effects(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for run_id, step, value in self.conn.execute("SELECT run_id, step, value FROM effects"):
            out.setdefault(run_id, {})[step] = value
        return out

    def executions(self) -> list[Execution]:
        rows = self.conn.execute(
            "SELECT phase, kind, run_id, step, ctx_step, key FROM executions ORDER BY n"
        )
        return [Execution(*row) for row in rows]

    def close(self) -> None:
        self.conn.close()


@dataclass(frozen=True)
class Execution:
    """One execution of a step (``kind="do"``) or of its undo (``"undo"``)."""

    phase: str
    kind: str
    run_id: str
    step: str
    ctx_step: str
    key: str


_ledger: Ledger | None = None
Made = list[Any]  # a step's result: [run, step, n], n its execution (see `effect`)


def ledger() -> Ledger:
    """This process's ledger (its path and the process's phase come from the environment)."""
    global _ledger
    if _ledger is None:
        _ledger = Ledger(os.environ["CRASH_LEDGER"])
    return _ledger


async def effect(run_id: str, ctx: rp.Context, *, fail: bool = False, flaky: bool = False) -> Made:
    """A step's body: record the execution, sleep a little (a kill may land here), then
    upsert the effect, or raise for a step meant to fail. A `flaky` step raises `rp.Retry`
    after its effect on its first execution ever (the same in every process). Returns
    ``[run, step, n]``, which its undo gets back: n counts the step's executions, so the
    journal's entry tells which one it recorded."""
    count = ledger().executed(os.environ["CRASH_PHASE"], "do", run_id, ctx.step, ctx)
    await asyncio.sleep(random.uniform(0, MAX_SLEEP))
    if fail:
        raise RuntimeError(f"{ctx.step} fails in run {run_id!r}, as it was asked to")
    ledger().upsert(run_id, ctx.step, value_of(run_id, ctx.step))
    if flaky and count == 1:
        raise rp.Retry(f"{ctx.step} is flaky in run {run_id!r}")
    return [run_id, ctx.step, count]


async def undo_effect(result: Made, ctx: rp.Context) -> None:
    """An undo's body: record it, sleep a little, delete the step's effect."""
    run_id, step, _ = result
    ledger().executed(os.environ["CRASH_PHASE"], "undo", run_id, step, ctx)
    await asyncio.sleep(random.uniform(0, MAX_SLEEP))
    ledger().delete(run_id, step)
    if step == os.environ.get("CRASH_HANG_AFTER_UNDO"):  # a scripted kill lands here
        print("hanging", flush=True)
        await asyncio.Event().wait()


def value_of(run_id: str, step: str) -> str:
    """The effect a step leaves in the ledger."""
    return f"{step}@{run_id}"


# --------------------------------------------------------------------------- the saga

child = rp.Reactor("crash_child", inputs=["order", "fail", "flaky"], returns="confirm")


@child.step
async def book(order: str, ctx: rp.Context) -> Made:
    return await effect(order, ctx)


@book.undo
async def unbook(result: Made, ctx: rp.Context) -> None:
    await undo_effect(result, ctx)


@child.step
async def confirm(book: Made, order: str, fail: str | None, flaky: bool, ctx: rp.Context) -> Made:
    """Fails when the run fails in its child; a flaky run's fails its first execution
    ever, so the composing step runs the child again: `book` is undone, then runs again."""
    return await effect(order, ctx, fail=fail == "sub", flaky=flaky)


saga = rp.Reactor("crash_saga", inputs=["order", "items", "fail", "flaky"], returns="finish")


@saga.step
async def reserve(order: str, ctx: rp.Context) -> Made:
    return await effect(order, ctx)


@reserve.undo
async def release(result: Made, ctx: rp.Context) -> None:
    await undo_effect(result, ctx)


@saga.step
async def charge(reserve: Made, order: str, ctx: rp.Context) -> Made:
    return await effect(order, ctx)


@charge.undo
async def refund(result: Made, ctx: rp.Context) -> None:
    await undo_effect(result, ctx)


@saga.step
async def email(charge: Made, order: str, ctx: rp.Context) -> Made:
    return await effect(order, ctx)  # no undo: an email sent stays sent


@saga.step
async def ship(charge: Made, order: str, ctx: rp.Context) -> Made:
    return await effect(order, ctx)


@ship.undo
async def unship(result: Made, ctx: rp.Context) -> None:
    await undo_effect(result, ctx)


@saga.step(retries=2)
async def points(charge: Made, order: str, flaky: bool, ctx: rp.Context) -> Made:
    """A flaky run's fails its first attempt ever, after its effect: retried, same key."""
    return await effect(order, ctx, flaky=flaky)


@points.undo
async def unpoints(result: Made, ctx: rp.Context) -> None:
    await undo_effect(result, ctx)


saga.compose(
    "sub",
    child,
    args={"order": rp.Input("order"), "fail": rp.Input("fail"), "flaky": rp.Input("flaky")},
    wait_for=["charge"],
    retries=1,
    retry_on=(rp.RunFailed,),
)


@rp.step
async def pack(item: list[Any], ctx: rp.Context) -> Made:
    run_id, i = item
    return await effect(run_id, ctx, fail=i < 0)


@pack.undo
async def unpack(result: Made, ctx: rp.Context) -> None:
    await undo_effect(result, ctx)


saga.map("packed", rp.Input("items"), pack, wait_for=["charge"])


@rp.step
async def gift(order: str, ctx: rp.Context) -> Made:
    return await effect(order, ctx)


@gift.undo
async def ungift(result: Made, ctx: rp.Context) -> None:
    await undo_effect(result, ctx)


@saga.step
async def gifts(charge: Made, order: str, ctx: rp.Context) -> rp.NewSteps:
    """Its own effect (undone by `ungifts`, on the stack from when it returns), then two
    new steps made from `gift`, undone from the journal by `ungift` (found by its module
    and name)."""
    made = await effect(order, ctx)
    return rp.NewSteps(made, [gift.evolve(name=f"g{k}") for k in range(2)])


@gifts.undo
async def ungifts(result: Made, ctx: rp.Context) -> None:
    await undo_effect(result, ctx)


@saga.step
async def audit(
    email: Made,
    ship: Made,
    points: Made,
    sub: Made,
    packed: list[Made],
    gifts: Made,
    order: str,
    fail: str | None,
    ctx: rp.Context,
) -> Made:
    return await effect(order, ctx, fail=fail == "audit")


@saga.step
async def finish(audit: Made, packed: list[Made], order: str, ctx: rp.Context) -> Any:
    await effect(order, ctx)
    return {"order": order, "packed": len(packed)}


UNDOABLE = frozenset(
    {"reserve", "charge", "ship", "points", "sub.book", "gifts", "gifts.g0", "gifts.g1"}
)
# (and the packs)


def inputs_for(run_id: str, rng: random.Random) -> dict[str, Any]:
    """A run's inputs: where it fails (if it does), its map's items, whether it is flaky."""
    fail = rng.choice(FAILURES)
    items: list[list[Any]] = [[run_id, i] for i in range(rng.randint(1, 3))]
    if fail == "map":
        items.insert(rng.randrange(len(items) + 1), [run_id, -1])
    return {"order": run_id, "items": items, "fail": fail, "flaky": rng.random() < 0.4}


def expected_steps(inputs: dict[str, Any]) -> list[str]:
    """The steps whose effects a completed run leaves."""
    packs = [f"packed.[{k}].pack" for k in range(len(inputs["items"]))]
    return [
        "reserve",
        "charge",
        "email",
        "ship",
        "points",
        "sub.book",
        "sub.confirm",
        *packs,
        "gifts",
        "gifts.g0",
        "gifts.g1",
        "audit",
        "finish",
    ]


def dependencies(step: str) -> set[str]:
    """The keys whose completions must be durable before `step` starts: the steps it
    reads or waits for, and, inside a composite, those of the composite."""
    head, _, rest = step.partition(".")
    own = {p for p in saga.graph.predecessors(head) if "step" in saga.graph.nodes[p]}
    if not rest:
        return own
    if head == "sub":
        inner = {p for p in child.graph.predecessors(rest) if "step" in child.graph.nodes[p]}
        return own | {f"sub.{p}" for p in inner}
    return own  # a map element, a new step: what the map, or the step, waits for


def undoable(step: str) -> bool:
    """Whether `step` (a key) has an undo."""
    return step in UNDOABLE or (step.startswith("packed.[") and step.endswith("].pack"))


def expected_result(inputs: dict[str, Any]) -> Any:
    return {"order": inputs["order"], "packed": len(inputs["items"])}


# --------------------------------------------------------------------------- processes


def open_journal(spec: dict[str, Any]) -> rp.Journal:
    """The trial's journal, from its spec (``backend``, ``journal`` or ``dsn`` and
    ``schema``, ``serializer``)."""
    serializer = rp.JsonSerializer() if spec["serializer"] == "json" else rp.PickleSerializer()
    if spec["backend"] == "sqlite":
        return rp.SQLiteJournal(spec["journal"], serializer=serializer)
    return rp.PostgresJournal(spec["dsn"], schema=spec["schema"], serializer=serializer)


async def work(spec: dict[str, Any]) -> None:
    """The worker: start every run of the trial (a little apart), each to its end."""
    rng = random.Random(spec["seed"])

    async def one(run: dict[str, Any], delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            await saga.run(run["inputs"], journal=journal, run_id=run["run_id"])
        except rp.RunFailed:
            pass

    async with open_journal(spec) as journal:
        await journal.runs(limit=1)  # opened (and its tables made) before "ready"
        print("ready", flush=True)
        delays = [rng.uniform(0, 0.05) for _ in spec["runs"]]
        await asyncio.gather(*(one(run, d) for run, d in zip(spec["runs"], delays, strict=True)))
    print("done", flush=True)


async def recover(spec: dict[str, Any]) -> None:
    """A recovery: ``saga.recover(journal, undo=spec["undo"])``; prints the statuses."""
    async with open_journal(spec) as journal:
        await journal.runs(limit=1)
        print("ready", flush=True)
        records = await saga.recover(journal, undo=spec["undo"])
    print(json.dumps({r.run_id: r.status.value for r in records}), flush=True)


def main(argv: list[str]) -> None:
    """``python -m tests.crashing work|recover SPEC``."""
    command, spec = argv
    asyncio.run({"work": work, "recover": recover}[command](json.loads(spec)))


# --------------------------------------------------------------------------- a trial


@dataclass
class RunState:
    """What the journal holds of a run at some moment."""

    status: str
    undo_requested: bool
    entries: dict[str, int]  # key -> seq
    undone: frozenset[str]
    result: Any = None
    made: dict[str, int] = field(default_factory=dict)  # key -> the execution recorded
    rollbacks: dict[str, int] = field(default_factory=dict)  # a child's prefix -> seq
    # Keys of steps that returned new steps, their undo recorded, not their completion.
    returned: frozenset[str] = frozenset()

    def completed(self) -> set[str]:
        """The keys whose completion is recorded, not undone since, nor void: a child
        run that undid what it completed recorded its rollback first (a mark with its
        steps' prefix, newer than their entries)."""
        return {
            k
            for k, seq in self.entries.items()
            if k not in self.undone
            and k not in self.returned
            and not any(k.startswith(p) and seq < mark for p, mark in self.rollbacks.items())
        }


# A recovery: its name, what the journal held before it, whether it was asked to undo.
Phase = tuple[str, dict[str, RunState], bool]


@dataclass
class TrialReport:
    """How a trial went.

    Attributes:
        seed: the trial's seed.
        violations: broken invariants, one sentence each (none is the promise).
        orphans: effects of undoable steps left by runs that ended failed or undone, written
            by an execution whose completion the journal never recorded: the step was in
            flight at a kill (perhaps running again after its undo), wrote its effect, and
            its completion never reached the journal, so no undo knows of it. Undo covers
            what completed (design 1.8); reported apart from violations.
        landings: where the kills landed (``mid-step``, ``between-steps``, ``mid-undo``,
            ``after-end``, ``before-start``, ``mid-recovery``, ``after-recovery``,
            ``no-kill``).
        statuses: how the runs ended, by status.
        details: when an invariant broke, the story of the runs that broke it.
    """

    seed: int
    violations: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    landings: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    details: str = ""


class Backend:
    """Where a trial's journal lives: an SQLite file, or a PostgreSQL schema of its own."""

    def __init__(self, kind: str, dsn: str | None = None) -> None:
        if kind not in ("sqlite", "postgres"):
            raise ValueError(f"backend {kind!r}: 'sqlite' or 'postgres'")
        if kind == "postgres" and not dsn:
            raise ValueError("the postgres backend needs a DSN")
        self.kind, self.dsn = kind, dsn

    @contextmanager
    def spec(self, workdir: Path) -> Iterator[dict[str, Any]]:
        """The journal's part of a trial's spec; a PostgreSQL schema is dropped after."""
        if self.kind == "sqlite":
            yield {"backend": "sqlite", "journal": str(workdir / "journal.db")}
            return
        schema = f"crash_{uuid.uuid4().hex[:12]}"
        try:
            yield {"backend": "postgres", "dsn": self.dsn, "schema": schema}
        finally:
            asyncio.run(_drop_schema(self.dsn or "", schema))


async def _drop_schema(dsn: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


class Process:
    """A worker or recovery process of a trial: its output lines are read by a thread
    (so waiting for one never blocks on what is buffered), its errors go to a file."""

    def __init__(
        self,
        command: str,
        spec: dict[str, Any],
        phase: str,
        ledger_path: Path,
        **env_vars: str,
    ) -> None:
        env = {**os.environ, **env_vars, "CRASH_PHASE": phase, "CRASH_LEDGER": str(ledger_path)}
        self.phase = phase
        self.errors = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.crashing", command, json.dumps(spec)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self.errors,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.killed = False

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put("")  # its end

    def wait_ready(self, line: str = "ready") -> bool:
        """Wait for its next line to be `line` ("ready": its journal is open); False if
        another came, or none within `TIME_LIMIT`."""
        try:
            return self.lines.get(timeout=TIME_LIMIT) == line
        except queue.Empty:
            return False

    def kill(self) -> None:
        """SIGKILL, and reap it: a dead owner on this host is then seen as dead at once."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.killed = True

    def finish(self) -> tuple[int | None, str]:
        """Wait for its end (at most `TIME_LIMIT`): its exit code (None if it hung, and
        was killed) and its errors."""
        try:
            code: int | None = self.proc.wait(timeout=TIME_LIMIT)
        except subprocess.TimeoutExpired:
            self.kill()
            code = None
        self.errors.seek(0)
        return code, self.errors.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self.reader.join(TIME_LIMIT)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self.errors.close()


async def snapshot(spec: dict[str, Any], run_ids: list[str]) -> dict[str, RunState]:
    """What the journal holds of each run (runs it does not hold are left out)."""
    out: dict[str, RunState] = {}
    async with open_journal(spec) as journal:
        for run_id in run_ids:
            try:
                stored = await journal.load(run_id)
            except LookupError:
                continue
            marks = [e for e in stored.entries if e.key.startswith(ROLLED_BACK)]
            steps = [e for e in stored.entries if not e.key.startswith(ROLLED_BACK)]
            out[run_id] = RunState(
                status=stored.record.status.value,
                undo_requested=stored.record.undo_requested,
                entries={e.key: e.seq for e in steps},
                undone=stored.undone,
                result=stored.record.result,
                made=_made(journal, steps),
                rollbacks={e.key[len(ROLLED_BACK) :]: e.seq for e in marks},
                returned=frozenset(e.key for e in steps if e.result is None),
            )
    return out


def _made(journal: rp.Journal, entries: Sequence[Any]) -> dict[str, int]:
    """Which execution of each step the journal recorded (see `effect`)."""
    made = {}
    for e in entries:
        value = journal.serializer.loads(e.result) if e.result is not None else None
        if isinstance(value, list) and len(value) == 3 and value[1] == e.key:
            made[e.key] = value[2]
    return made


def landing(after: dict[str, RunState], begun: set[tuple[str, str]]) -> str:
    """Where a kill of the worker landed, from the journal after it and the steps the
    worker had begun, as ``(run, step)``."""
    running = {r: s for r, s in after.items() if s.status == "running"}
    if not after:
        return "before-start"
    if not running:
        return "after-end"
    if any(s.undo_requested for s in running.values()):
        return "mid-undo"
    if any(r in running and s not in running[r].entries for r, s in begun):
        return "mid-step"
    return "between-steps"


def run_trial(
    seed: int,
    backend: Backend,
    *,
    workdir: Path | None = None,
    kill_after: float = 0.25,
) -> TrialReport:
    """One trial: a killed worker, one or more recoveries, then `check`.

    Args:
        seed: decides the runs, the kill delays and the recoveries' directions.
        backend: where the journal lives.
        workdir: a directory for the ledger (and the SQLite journal); a temporary one
            by default.
        kill_after: the worker is killed after a delay drawn up to this (seconds).
    """
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="reactorpy-crash-") as tmp:
            return run_trial(seed, backend, workdir=Path(tmp), kill_after=kill_after)
    rng = random.Random(seed)
    report = TrialReport(seed)
    ledger_path = workdir / "ledger.db"
    Ledger(ledger_path).close()  # its tables exist before any process writes
    run_ids = [f"t{seed}-r{k}" for k in range(rng.randint(2, 5))]
    runs = [{"run_id": r, "inputs": inputs_for(r, rng)} for r in run_ids]
    with backend.spec(workdir) as where:
        spec = {**where, "seed": seed, "serializer": rng.choice(("pickle", "json")), "runs": runs}
        if not _work(report, rng, spec, ledger_path, kill_after):
            return report
        phases: list[Phase] = []
        state = asyncio.run(snapshot(spec, run_ids))
        for k in range(1, 4):
            undo = rng.random() < 0.5
            last = k == 3 or rng.random() < 0.6
            phases.append((f"recovery-{k}", state, undo))
            if not _recover(report, rng, {**spec, "undo": undo}, k, ledger_path, last=last):
                return report
            state = asyncio.run(snapshot(spec, run_ids))
            if last:
                break
        led = Ledger(ledger_path)
        try:
            executions = led.executions()
            check(report, runs, phases, state, led.effects(), executions)
        finally:
            led.close()
        if report.violations:
            report.details = story(runs, phases, state, executions, report.violations)
    return report


def _work(
    report: TrialReport,
    rng: random.Random,
    spec: dict[str, Any],
    ledger_path: Path,
    kill_after: float,
) -> bool:
    """The worker's phase: killed after a random delay (one time in ten, left to finish).
    False if the trial cannot go on."""
    worker = Process("work", spec, "worker", ledger_path)
    try:
        if not worker.wait_ready():
            report.violations.append(f"the worker never became ready: {worker.finish()}")
            return False
        if rng.random() < 0.1:
            code, err = worker.finish()
            if code != 0:
                report.violations.append(f"the worker ended {code}: {err.strip()[-2000:]}")
            report.landings.append("no-kill")
            return True
        time.sleep(rng.uniform(0, kill_after))
        worker.kill()
    finally:
        worker.close()
    state = asyncio.run(snapshot(spec, [r["run_id"] for r in spec["runs"]]))
    led = Ledger(ledger_path)
    begun = {(e.run_id, e.step) for e in led.executions() if e.kind == "do"}
    led.close()
    report.landings.append(landing(state, begun))
    return True


def _recover(
    report: TrialReport,
    rng: random.Random,
    spec: dict[str, Any],
    k: int,
    ledger_path: Path,
    *,
    last: bool,
) -> bool:
    """Recovery `k`: killed after a random delay unless it is the `last`, which must end
    well in time. False if the trial cannot go on."""
    phase = f"recovery-{k}"
    recovery = Process("recover", spec, phase, ledger_path)
    try:
        if not recovery.wait_ready():
            report.violations.append(f"{phase} never became ready: {recovery.finish()}")
            return False
        if not last:
            time.sleep(rng.uniform(0, 0.15))
            code = recovery.proc.poll()
            recovery.kill()
            report.landings.append("mid-recovery" if code is None else "after-recovery")
            if code:
                report.violations.append(f"{phase} ended {code}: {recovery.finish()[1]}")
            return True
        code, err = recovery.finish()
        if code != 0:
            how = "hung" if code is None else f"ended {code}"
            report.violations.append(f"{phase} {how}: {err.strip()[-2000:]}")
    finally:
        recovery.close()
    return True


def story(
    runs: list[dict[str, Any]],
    phases: list[Phase],
    final: dict[str, RunState],
    executions: list[Execution],
    violations: list[str],
) -> str:
    """What happened to the runs that broke an invariant: their inputs, and phase by phase
    what the journal held before it and what ran in it."""
    lines = []
    for run in runs:
        run_id = run["run_id"]
        if not any(v.startswith(f"{run_id}:") for v in violations):
            continue
        lines.append(f"run {run_id}: {run['inputs']}")
        states = [(phase, before, undo) for phase, before, undo in phases]
        prior = ["worker", *(p for p, _, _ in states)]
        for k, phase in enumerate(prior):
            if k:
                _, before, undo = states[k - 1]
                lines.append(f"  {phase} (undo={undo}), before it: {_state(before.get(run_id))}")
            else:
                lines.append("  worker:")
            ran = [
                f"{e.kind} {e.step}" for e in executions if e.phase == phase and e.run_id == run_id
            ]
            lines.append(f"    ran: {', '.join(ran) or '-'}")
        lines.append(f"  at the end: {_state(final.get(run_id))}")
    return "\n".join(lines)


def _state(state: RunState | None) -> str:
    if state is None:
        return "not in the journal"
    entries = " ".join(f"{k}#{seq}" for k, seq in sorted(state.entries.items(), key=lambda x: x[1]))
    return (
        f"{state.status}{' (undo requested)' if state.undo_requested else ''}; entries: "
        f"{entries or '-'}; undone: {' '.join(sorted(state.undone)) or '-'}"
    )


def check(
    report: TrialReport,
    runs: list[dict[str, Any]],
    phases: list[Phase],
    final: dict[str, RunState],
    effects: dict[str, dict[str, str]],
    executions: list[Execution],
) -> None:
    """Hold a trial to the invariants (see the module's docstring); adds to `report`."""
    bad = report.violations.append
    undo_asked = any(undo for _, _, undo in phases)
    for run in runs:
        run_id, inputs = run["run_id"], run["inputs"]
        state = final.get(run_id)
        left = effects.get(run_id, {})
        if state is None:
            ran = [e for e in executions if e.run_id == run_id]
            if ran or left:
                bad(f"{run_id}: not in the journal, yet it ran {ran[:3]} (effects {left})")
            continue
        report.statuses[state.status] = report.statuses.get(state.status, 0) + 1
        if state.status == "completed":
            if inputs["fail"] is not None:
                bad(f"{run_id}: completed, but it fails in {inputs['fail']!r}")
            want = {s: value_of(run_id, s) for s in expected_steps(inputs)}
            if left != want:
                missing = sorted(set(want) - set(left))
                extra = sorted(set(left) - set(want))
                bad(f"{run_id}: completed with effects missing {missing}, extra {extra}")
            if state.result != expected_result(inputs):
                bad(f"{run_id}: completed with result {state.result!r}")
        elif state.status in ("failed", "undone"):
            if inputs["fail"] is None and state.status == "failed":
                bad(f"{run_id}: failed, though nothing in it fails")
            if inputs["fail"] is None and not undo_asked:
                bad(f"{run_id}: {state.status}, though no recovery undid and nothing fails")
            for step in sorted(left):
                if not undoable(step):
                    continue
                if _orphaned(state, run_id, step, executions):
                    report.orphans.append(f"{run_id}: {step}")
                else:
                    bad(
                        f"{run_id}: {state.status}, but the effect of {step!r} (completion "
                        f"recorded, seq {state.entries[step]}, undone marked: "
                        f"{step in state.undone}) is still there"
                    )
        else:
            bad(f"{run_id}: {state.status!r} after the last recovery")
    _check_reruns(report, phases, executions)
    _check_order(report, phases, final, executions)
    _check_undo_order(report, phases, executions)
    _check_redone(report, phases, final, executions)
    _check_keys(report, executions)


def _orphaned(state: RunState, run_id: str, step: str, executions: list[Execution]) -> bool:
    """Whether the effect of `step` was last written by an execution whose completion
    the journal never recorded: the step is not recorded, or it is recorded and undone
    and ran again after its undo (that run's completion was not recorded either)."""
    if step not in state.entries:
        return True
    if step not in state.undone:
        return False
    kinds = [e.kind for e in executions if e.run_id == run_id and e.step == step]
    last = kinds[::-1]
    return "undo" in kinds and "do" in kinds and last.index("do") < last.index("undo")


def _check_reruns(
    report: TrialReport,
    phases: list[Phase],
    executions: list[Execution],
) -> None:
    """In a recovery, no step whose completion the journal held runs again, and no undo
    the journal held as done runs again, unless the recovery itself undid the step, or
    ran it, first (a composed child failing and run again does both)."""
    for phase, before, _ in phases:
        did: dict[tuple[str, str], set[str]] = {}  # what this phase has done to a step
        for e in executions:
            if e.phase != phase or e.run_id not in before:
                continue
            state = before[e.run_id]
            earlier = did.setdefault((e.run_id, e.step), set())
            if state.status != "running":
                report.violations.append(
                    f"{e.run_id}: {e.kind} of {e.step!r} ran in {phase}, though the run had "
                    f"ended {state.status!r}"
                )
            elif e.kind == "do" and e.step in state.completed() and "undo" not in earlier:
                report.violations.append(
                    f"{e.run_id}: {e.step!r} ran again in {phase}, though the journal held "
                    f"its completion (seq {state.entries[e.step]})"
                )
            elif e.kind == "undo" and e.step in state.undone and "do" not in earlier:
                report.violations.append(
                    f"{e.run_id}: the undo of {e.step!r} ran again in {phase}, though the "
                    "journal held it as done"
                )
            earlier.add(e.kind)


def _after(phases: list[Phase], final: dict[str, RunState]) -> dict[str, dict[str, RunState]]:
    """What the journal held once each process (by phase) was gone."""
    after = {"worker": phases[0][1] if phases else final}
    for k, (phase, _, _) in enumerate(phases):
        after[phase] = phases[k + 1][1] if k + 1 < len(phases) else final
    return after


def _check_order(
    report: TrialReport,
    phases: list[Phase],
    final: dict[str, RunState],
    executions: list[Execution],
) -> None:
    """A step starts only once its dependencies' completions are durable, and an undo
    runs only for a recorded completion (or the undo a step that returned new steps
    recorded then): what the journal held when the process that ran them was gone says so
    (entries are replaced, never removed)."""
    after = _after(phases, final)
    for e in executions:
        held = after.get(e.phase, final).get(e.run_id)
        entries = held.entries if held is not None else {}
        if e.kind == "do":  # (a step that returned new steps is no dependency's completion)
            done = set(entries) - (held.returned if held is not None else frozenset())
            missing = sorted(dependencies(e.step) - done)
            if missing:
                report.violations.append(
                    f"{e.run_id}: {e.step!r} ran in {e.phase} before its dependencies "
                    f"{missing} were recorded"
                )
        elif e.step not in entries:
            report.violations.append(
                f"{e.run_id}: the undo of {e.step!r} ran in {e.phase}, but its completion "
                "was never recorded"
            )


def places(entries: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Each key's place in completion order: its seq; but a step with entries under its
    name and a dot (the new steps it returned: they depend on it) comes before the first
    of them, whenever its own entry was written (after them when it ran again in a
    recovery, its earlier new steps restored). Ties: fewer dots first."""
    first = dict(entries)
    for key, seq in entries.items():
        parts = key.split(".")
        for n in range(1, len(parts)):
            head = ".".join(parts[:n])
            if head in first and seq < first[head]:
                first[head] = seq
    return {k: (first[k], k.count(".")) for k in entries}


def _check_undo_order(
    report: TrialReport,
    phases: list[Phase],
    executions: list[Execution],
) -> None:
    """A recovery that undoes a run (asked to, or continuing its undo) undoes what the
    journal held newest first (by completion order, `places`), across crashes."""
    for phase, before, undo in phases:
        for run_id, state in before.items():
            if state.status != "running" or not (undo or state.undo_requested):
                continue
            place = places(state.entries)
            seqs = [
                (place.get(e.step, (0, 0)), e.step)
                for e in executions
                if e.phase == phase and e.run_id == run_id and e.kind == "undo"
            ]
            if seqs != sorted(seqs, reverse=True):
                report.violations.append(
                    f"{run_id}: {phase} undid {[step for _, step in seqs]}, not newest first"
                )


def _check_redone(
    report: TrialReport,
    phases: list[Phase],
    final: dict[str, RunState],
    executions: list[Execution],
) -> None:
    """A step runs again after its undo (a retried child) only once that undo is marked
    done: once the process is gone, the journal holds the mark, or a completion of that
    run of the step or a later one."""
    after = _after(phases, final)
    count: dict[tuple[str, str], int] = {}
    undone_in: set[tuple[str, str, str]] = set()  # (phase, run, step) undone in that phase
    for e in executions:
        if e.kind == "undo":
            undone_in.add((e.phase, e.run_id, e.step))
            continue
        n = count[(e.run_id, e.step)] = count.get((e.run_id, e.step), 0) + 1
        held = after.get(e.phase, final).get(e.run_id)
        if (e.phase, e.run_id, e.step) not in undone_in or held is None:
            continue
        if e.step not in held.undone and held.made.get(e.step, 0) < n:
            report.violations.append(
                f"{e.run_id}: {e.step!r} ran again in {e.phase} after its undo, which the "
                "journal did not hold as done"
            )


def _check_keys(report: TrialReport, executions: list[Execution]) -> None:
    """One idempotency key per step of a run, for all its executions and undos; no two
    steps of a run share one; the context names the step."""
    keys: dict[tuple[str, str], set[str]] = {}
    owners: dict[tuple[str, str], set[str]] = {}
    for e in executions:
        if e.ctx_step != e.step:
            report.violations.append(
                f"{e.run_id}: {e.kind} of {e.step!r} saw ctx.step {e.ctx_step!r}"
            )
        keys.setdefault((e.run_id, e.step), set()).add(e.key)
        owners.setdefault((e.run_id, e.key), set()).add(e.step)
    for (run_id, step), seen in keys.items():
        if len(seen) != 1:
            report.violations.append(f"{run_id}: {step!r} saw several keys {sorted(seen)}")
    for (run_id, key), steps in owners.items():
        if len(steps) != 1:
            report.violations.append(f"{run_id}: key {key!r} seen by {sorted(steps)}")


if __name__ == "__main__":  # this module under its own name (as a service imports its saga)
    importlib.import_module("tests.crashing").main(sys.argv[1:])
