"""Reactors for tests/test_durable_halts.py, and a process of their own to crash
(``python -m tests.halting_child SPEC REACTOR RUN_ID``).

Each call appends ``what name`` to the ledger file named by ``REACTORPY_TEST_LEDGER``.
``REVIEW3_HANG=X``: call X appends ``hang X`` and waits forever (the test kills the
process). ``REVIEW3_SLOW=X``: call X waits forever (no line). ``REVIEW3_HALT=X``: step X
raises `rp.Halt`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import reactorpy as rp

from .journal_child import open_journal

__all__ = ["halting"]


def write(line: str) -> None:
    with open(os.environ["REACTORPY_TEST_LEDGER"], "a") as f:
        f.write(line + "\n")


async def touch(what: str, name: str) -> None:
    write(f"{what} {name}")
    if os.environ.get("REVIEW3_HANG") == name:
        write(f"hang {name}")
        await asyncio.Event().wait()
    if os.environ.get("REVIEW3_SLOW") == name:
        await asyncio.Event().wait()
    if os.environ.get("REVIEW3_HALT") == name:
        raise rp.Halt(f"{name} halts")


inner: rp.Reactor[str] = rp.Reactor("inner3", returns="b")


@inner.step
async def a() -> str:
    await touch("do", "a")
    return "a"


@a.undo
async def unda(value: str) -> None:
    await touch("undo", "unda")


@inner.step
async def b(a: str) -> str:
    await touch("do", "b")
    return f"{a}+b"


# ``halting``: the composite ``sub`` (``a`` undoable, then ``b``) beside ``h``, which heads
# a longer chain (``h`` -> ``h2`` -> ``h3``): ``h`` goes first when one step runs at a time.
halting: rp.Reactor[dict[str, str]] = rp.Reactor("halting3")
halting.compose("sub", inner)


@halting.step
async def h() -> str:
    await touch("do", "h")
    return "h"


@halting.step
async def h2(h: str) -> str:
    await touch("do", "h2")
    return "h2"


@halting.step
async def h3(h2: str) -> str:
    await touch("do", "h3")
    return "h3"


async def _main(spec: str, reactor: str, run_id: str) -> None:
    target = {"halting": halting}[reactor]
    async with open_journal(json.loads(spec)) as journal:
        await target.run({}, journal=journal, run_id=run_id)


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], sys.argv[2], sys.argv[3]))
