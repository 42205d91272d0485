"""Reactors for the durable-run tests, and a process of their own to crash
(``python -m tests.durable_child SPEC REACTOR RUN_ID AMOUNT``).

Each step appends ``what step key`` to the ledger file named by ``REACTORPY_TEST_LEDGER``
(one line per call: a test counts them). In a process started with ``REACTORPY_TEST_HANG=X``,
step or undo ``X`` appends ``hang`` to the ledger, then waits forever: the test kills the
process there with SIGKILL. ``REACTORPY_TEST_FAIL=X`` makes step ``X`` raise;
``REACTORPY_TEST_FAIL_ONCE=X`` makes its first call in this process raise.
SPEC is the JSON of `tests.journal_child.open_journal`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import reactorpy as rp

from .journal_child import open_journal

__all__ = ["ledger_lines", "order", "outer", "payment"]


def ledger_lines() -> list[str]:
    """What the ledger holds, one call per line."""
    path = Path(os.environ["REACTORPY_TEST_LEDGER"])
    return path.read_text().splitlines() if path.exists() else []


def _write(line: str) -> None:
    with open(os.environ["REACTORPY_TEST_LEDGER"], "a") as f:
        f.write(line + "\n")


_failed_once: set[str] = set()


async def _touch(what: str, name: str, key: str) -> None:
    _write(f"{what} {name} {key}")
    if os.environ.get("REACTORPY_TEST_FAIL") == name and what == "do":
        raise RuntimeError(f"{name} failed")
    if os.environ.get("REACTORPY_TEST_FAIL_ONCE") == name and name not in _failed_once:
        _failed_once.add(name)
        raise RuntimeError(f"{name} failed once")
    if os.environ.get("REACTORPY_TEST_HANG") == name:
        _write(f"hang {name} {key}")
        await asyncio.Event().wait()


payment: rp.Reactor[str] = rp.Reactor("payment", inputs=["amount"], returns="ship")


@payment.step
async def reserve(amount: int, ctx: rp.Context) -> str:
    await _touch("do", "reserve", ctx.idempotency_key)
    return f"hold-{amount}"


@reserve.undo
async def release(hold: str) -> None:
    await _touch("undo", "release", hold)


@payment.step
async def charge(amount: int, reserve: str, ctx: rp.Context) -> str:
    await _touch("do", "charge", ctx.idempotency_key)
    return f"charge-{amount}"


@charge.undo
async def refund(charge: str) -> None:
    await _touch("undo", "refund", charge)


@payment.step
async def ship(charge: str, ctx: rp.Context) -> str:
    await _touch("do", "ship", ctx.idempotency_key)
    return f"{charge}-shipped"


order: rp.Reactor[str] = rp.Reactor("order", inputs=["amount"], returns="confirm")
order.compose("pay", payment, args={"amount": rp.Input("amount")})


@order.step
async def confirm(pay: str, ctx: rp.Context) -> str:
    await _touch("do", "confirm", ctx.idempotency_key)
    return f"confirmed {pay}"


# A composite inside a composite: `shop` runs `payment` as ``pay``, then `check`; `outer`
# runs `shop` with a retry (a failing `check` undoes ``pay`` and runs the child again).
shop: rp.Reactor[str] = rp.Reactor("shop", inputs=["amount"], returns="check")
shop.compose("pay", payment, args={"amount": rp.Input("amount")})


@shop.step
async def check(pay: str, ctx: rp.Context) -> str:
    await _touch("do", "check", ctx.idempotency_key)
    return f"checked {pay}"


outer: rp.Reactor[str] = rp.Reactor("outer", inputs=["amount"], returns="shop")
outer.compose("shop", shop, args={"amount": rp.Input("amount")}, retries=1, retry_on=RuntimeError)


async def _main(spec: str, reactor: str, run_id: str, amount: int) -> None:
    target = {"payment": payment, "order": order, "outer": outer}[reactor]
    async with open_journal(json.loads(spec)) as journal:
        print(json.dumps({"owner": journal.owner}), flush=True)
        await target.run({"amount": amount}, journal=journal, run_id=run_id)


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
