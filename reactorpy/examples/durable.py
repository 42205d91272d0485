"""A durable payment saga: its process is killed mid-run, and a new process recovers it.

Run it with ``python -m reactorpy.examples.durable`` on Linux or macOS (``--undo`` to undo
the run instead of finishing it; ``--dir DIR`` to keep the journal and the ledger in DIR):

1. A child process starts order 42 of the checkout saga with an `rp.SQLiteJournal`. It
   reserves the stock and charges the card; while the carrier is slow to answer, this
   process kills it with SIGKILL (no ``finally`` runs, nothing is closed).
2. The journal says what the run completed before it was killed.
3. A new process calls ``checkout.recover(journal)``: the run goes on from where it was
   and ships (the step that was in flight runs again; what completed does not); or, with
   ``--undo``, ``recover(journal, undo=True)`` refunds the card and releases the stock.
4. The journal and the ledger say how it ended.

Or do it by hand, in a directory of your own::

    python -m reactorpy.examples.durable start &   # order-42 waits for the carrier...
    kill -9 %1                                     # ...and its process dies
    python -m reactorpy runs --journal runs.db
    python -m reactorpy recover reactorpy.examples.durable:checkout --journal runs.db

(Ctrl-C is no crash: it cancels the run, which fails and undoes what it did.)

The ledger (``ledger.jsonl``, beside the journal) stands for the outside world: the
warehouse, the bank, the carrier. Each effect is written under the step's
``rp.Context.idempotency_key`` (the same in the killed process and in the recovery), so a
step that runs again takes effect once: steps and undo callbacks run at least once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import reactorpy as rp

MODULE = "reactorpy.examples.durable"  # (run with -m, __name__ is "__main__")
ORDER = {"id": 42, "sku": "mug", "amount": 12}
RUN_ID = "order-42"
JOURNAL = "runs.db"
LEDGER = "ledger.jsonl"
SLOW_CARRIER = "waiting for the carrier"  # what the child prints as it starts to wait

# Seconds the carrier takes to answer: long in ``start``, whose process is killed meanwhile.
carrier_wait = 0.0
# The ledger, in the current directory (the demonstration runs its children in its folder).
ledger_path = Path(LEDGER)


def effect(key: str, what: str) -> None:
    """Record `what` in the ledger under `key`, unless it is there already (an
    idempotent call to the outside world), and say so."""
    done = {entry["key"] for entry in read_ledger(ledger_path)}
    if key in done:
        print(f"    (already done: {what})", flush=True)
        return
    with ledger_path.open("a") as f:
        f.write(json.dumps({"key": key, "what": what}) + "\n")
        f.flush()
        os.fsync(f.fileno())
    print(f"    {what}", flush=True)


def read_ledger(path: Path) -> list[dict[str, str]]:
    """The ledger's entries, oldest first."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


# (The documentation shows the saga from here: docs/how-to/durable-runs.md.)
# --8<-- [start:saga]
checkout = rp.Reactor("checkout", inputs=["order"], returns="ship")


@checkout.step
async def reserve_stock(order: dict[str, object], ctx: rp.Context) -> str:
    """Hold the items in the warehouse."""
    effect(ctx.idempotency_key, f"reserved {order['sku']}")
    return f"hold-{order['id']}"


@reserve_stock.undo
async def release_stock(hold: str, order: dict[str, object], ctx: rp.Context) -> None:
    effect(f"{ctx.idempotency_key}:undo", f"released {order['sku']} ({hold})")


@checkout.step
async def charge_card(order: dict[str, object], reserve_stock: str, ctx: rp.Context) -> str:
    """Take the money."""
    effect(ctx.idempotency_key, f"charged {order['amount']}")
    return f"charge-{order['id']}"


@charge_card.undo
async def refund(charge: str, order: dict[str, object], ctx: rp.Context) -> None:
    effect(f"{ctx.idempotency_key}:undo", f"refunded {order['amount']} ({charge})")


@checkout.step
async def ship(order: dict[str, object], charge_card: str, ctx: rp.Context) -> str:
    """Book the carrier (slow in the child, which is killed while it waits)."""
    if carrier_wait:
        print(f"    {SLOW_CARRIER}...", flush=True)
        await asyncio.sleep(carrier_wait)
    effect(ctx.idempotency_key, f"shipped order {order['id']}")
    return f"shipped order {order['id']}"


# --8<-- [end:saga]


# ------------------------------------------------------------------ the two processes
async def start() -> None:
    """``start``: run the order with the journal of the current directory."""
    async with rp.SQLiteJournal(JOURNAL) as journal:
        await checkout.run({"order": ORDER}, journal=journal, run_id=RUN_ID)


async def recover(*, undo: bool) -> None:
    """``recover``: recover the runs of `checkout` whose process is gone."""
    async with rp.SQLiteJournal(JOURNAL) as journal:
        for record in await checkout.recover(journal, undo=undo):
            print(f"    recover() ended {record.run_id} as {record.status.value!r}", flush=True)


# ------------------------------------------------------------------ the demonstration
def child(folder: Path, command: str, *options: str) -> subprocess.Popen[str]:
    """Run ``python -m reactorpy.examples.durable COMMAND`` in a new process, in `folder`."""
    sys.stdout.flush()  # what this process printed comes before what the child prints
    argv = [sys.executable, "-m", MODULE, command, *options]
    return subprocess.Popen(argv, cwd=folder, stdout=subprocess.PIPE, text=True)


def kill_when_waiting(process: subprocess.Popen[str]) -> None:
    """Echo the child's lines; kill it with SIGKILL once it waits for the carrier."""
    watchdog = threading.Timer(60, process.kill)  # a child that never gets there
    watchdog.start()
    try:
        assert process.stdout is not None
        for line in process.stdout:
            print(line, end="", flush=True)
            if SLOW_CARRIER in line:
                os.kill(process.pid, signal.SIGKILL)
                break
        process.wait()
        process.stdout.close()
    finally:
        watchdog.cancel()
    if process.returncode != -signal.SIGKILL:
        raise SystemExit(f"the child ended with status {process.returncode} before it was killed")


async def describe(folder: Path) -> rp.RunRecord:
    """Print what the journal holds of the run, and return its record."""
    async with rp.SQLiteJournal(folder / JOURNAL) as journal:
        record = await journal.get(RUN_ID)
        stored = await journal.load(RUN_ID)
    completed = [entry.key for entry in stored.entries]
    print(f"  the journal holds {RUN_ID} as {record.status.value!r}")
    print(f"  steps completed: {', '.join(completed) or '(none)'}")
    if stored.undone:
        undone = [key for key in reversed(completed) if key in stored.undone]
        print(f"  steps undone (newest first): {', '.join(undone)}")
    if record.result is not None:
        print(f"  result: {record.result!r}")
    ledger = [entry["what"] for entry in read_ledger(folder / LEDGER)]
    print(f"  the ledger: {'; '.join(ledger) or '(empty)'}")
    return record


def demonstrate(folder: Path, *, undo: bool) -> None:
    """Start, kill, look, recover, look."""
    print(f"1. A child process runs {RUN_ID} with a journal; it is killed with SIGKILL mid-run:")
    kill_when_waiting(child(folder, "start"))
    print("2. What the crash left:")
    asyncio.run(describe(folder))
    call = "recover(journal, undo=True)" if undo else "recover(journal)"
    print(f"3. A new process calls checkout.{call}:")
    recovery = child(folder, "recover", *(["--undo"] if undo else []))
    out, _ = recovery.communicate(timeout=60)
    print(out, end="")
    if recovery.returncode != 0:
        raise SystemExit(f"the recovery failed with status {recovery.returncode}")
    print("4. How it ended:")
    asyncio.run(describe(folder))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reactorpy.examples.durable",
        description="Kill a journaled payment saga mid-run, then recover it in a new process.",
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=("start", "recover"),
        help="only start order-42 (it waits for the carrier: kill it with kill -9), or only "
        "recover it, with the journal and ledger of the current directory; without it, do "
        "both in child processes and show what happens",
    )
    parser.add_argument(
        "--undo", action="store_true", help="recover by undoing the run instead of finishing it"
    )
    parser.add_argument(
        "--dir",
        help="keep the journal (runs.db) and the ledger of the demonstration in DIR "
        "(default: a temporary directory, removed at the end)",
    )
    args = parser.parse_args(argv)
    global carrier_wait
    if args.command == "start":
        carrier_wait = 3600.0  # killed long before the carrier answers
        asyncio.run(start())
        return 0
    if args.command == "recover":
        asyncio.run(recover(undo=args.undo))
        return 0
    if args.dir is not None:
        folder = Path(args.dir)
        if any((folder / name).exists() for name in (JOURNAL, LEDGER)):
            parser.error(f"{folder} holds a journal or a ledger already: give a new directory")
        folder.mkdir(parents=True, exist_ok=True)
        demonstrate(folder, undo=args.undo)
        return 0
    with tempfile.TemporaryDirectory(prefix="reactorpy-durable-") as temporary:
        demonstrate(Path(temporary), undo=args.undo)
    return 0


if __name__ == "__main__":
    sys.exit(main())
