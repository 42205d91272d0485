"""Reactors for the crash tests of tests/test_durable_failed_undos.py, and a process of
their own to crash (``python -m tests.failed_undo_child SPEC REACTOR RUN_ID``).

Each call appends ``what name`` to the ledger file named by ``REACTORPY_TEST_LEDGER``.
``REVIEW2_HANG=X``: call X appends ``hang X`` and waits forever (the test kills the
process). ``REVIEW2_FAIL=X,Y``: calls X and Y raise (after appending their line).
``REVIEW2_FAILSTART=1``: the run is given middleware whose on_run_start raises (a run
continued so fails before any step starts).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any, ClassVar

import reactorpy as rp

from .journal_child import open_journal

__all__ = ["FailsToStart", "TupleJson", "chained", "solo", "write"]


def write(line: str) -> None:
    with open(os.environ["REACTORPY_TEST_LEDGER"], "a") as f:
        f.write(line + "\n")


async def touch(what: str, name: str) -> None:
    write(f"{what} {name}")
    if name in os.environ.get("REVIEW2_FAIL", "").split(","):
        raise RuntimeError(f"{name} failed")
    if os.environ.get("REVIEW2_HANG") == name:
        write(f"hang {name}")
        await asyncio.Event().wait()


class FailsToStart:
    """Middleware whose on_run_start raises for the root run."""

    def on_run_start(self, run: rp.RunInfo) -> None:
        if run.parent is None:
            raise RuntimeError("on_run_start refused")


# ``chained``: root step ``r1`` (undone by ``undr1``), then ``gate`` (no undo), then the
# composite ``sub`` whose child completes ``a`` (from ``r1``'s result; undone by ``unda``),
# then ``b``.
inner: rp.Reactor[str] = rp.Reactor("inner2", inputs=["r1"], returns="b")


@inner.step
async def a(r1: str) -> str:
    await touch("do", "a")
    return f"{r1}+a"


@a.undo
async def unda(value: str) -> None:
    await touch("undo", "unda")


@inner.step
async def b(a: str) -> str:
    await touch("do", "b")
    return f"{a}+b"


chained: rp.Reactor[str] = rp.Reactor("chained", returns="sub")


@chained.step
async def r1() -> str:
    await touch("do", "r1")
    return "r1"


@r1.undo
async def undr1(value: str) -> None:
    await touch("undo", "undr1")


@chained.step
async def gate(r1: str) -> str:
    await touch("do", "gate")
    return "gate"


chained.compose("sub", inner, wait_for=["gate"])


class TupleJson(rp.JsonSerializer):
    """JSON whose arrays load as tuples (as msgpack's ``use_list=False`` does): a value
    serializer is free to give sequences back as tuples."""

    name: ClassVar[str] = "tuple-json"

    def dumps(self, obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    def loads(self, data: bytes) -> Any:
        return _tuples(json.loads(data))


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def journal_of(spec: dict[str, Any]) -> rp.Journal:
    """The journal `spec` names; with ``REVIEW2_TUPLES=1`` (SQLite) one using `TupleJson`."""
    if os.environ.get("REVIEW2_TUPLES"):
        return rp.SQLiteJournal(spec["path"], serializer=TupleJson())
    return open_journal(spec)


async def _main(spec: str, reactor: str, run_id: str) -> None:
    target = {"chained": chained, "solo": solo}[reactor]
    middleware: list[Any] = [FailsToStart()] if os.environ.get("REVIEW2_FAILSTART") else []
    async with journal_of(json.loads(spec)) as journal:
        await target.run({}, journal=journal, run_id=run_id, middleware=middleware)


# ``solo``: like ``chained`` without an undoable root step: ``r1`` has no undo, so the root
# run's own undo stack is empty when it fails before ``sub`` starts again.
solo: rp.Reactor[str] = rp.Reactor("solo", returns="sub")


async def plain_r1() -> str:
    await touch("do", "r1")
    return "r1"


solo.add(rp.step(plain_r1, name="r1"))
solo.compose("sub", inner)


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], sys.argv[2], sys.argv[3]))
