"""Reactors for the crash tests of tests/test_durable_rollbacks.py, and a process of
their own to crash (``python -m tests.rollback_child SPEC REACTOR RUN_ID``).

Each call appends ``what name`` to the ledger file named by ``REACTORPY_TEST_LEDGER``.
``REVIEW_HANG=X``: call X appends ``hang X`` and waits forever (the test kills the process).
``REVIEW_FAIL=X``: step X raises. ``REVIEW_FAIL_ONCE=X``: its first call in this process
raises.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import reactorpy as rp

from .journal_child import open_journal

__all__ = ["rolled", "write"]


def write(line: str) -> None:
    with open(os.environ["REACTORPY_TEST_LEDGER"], "a") as f:
        f.write(line + "\n")


_once: set[str] = set()


async def touch(what: str, name: str) -> None:
    write(f"{what} {name}")
    if os.environ.get("REVIEW_FAIL") == name:
        raise RuntimeError(f"{name} failed")
    if os.environ.get("REVIEW_FAIL_ONCE") == name and name not in _once:
        _once.add(name)
        raise RuntimeError(f"{name} failed once")
    if os.environ.get("REVIEW_HANG") == name:
        write(f"hang {name}")
        await asyncio.Event().wait()


# ``rolled``: a composite ``sub`` whose child completes ``a`` (undone by ``unda``), then
# fails in ``b``: the child records its rollback, then undoes ``a``.
inner: rp.Reactor[str] = rp.Reactor("inner", returns="b")


@inner.step
async def a() -> str:
    await touch("do", "a")
    return "a-done"


@a.undo
async def unda(value: str) -> None:
    await touch("undo", "unda")


@inner.step
async def b(a: str) -> str:
    await touch("do", "b")
    return f"{a}+b"


rolled: rp.Reactor[str] = rp.Reactor("rolled", returns="sub")
rolled.compose("sub", inner)


async def _main(spec: str, reactor: str, run_id: str) -> None:
    target = {"rolled": rolled}[reactor]
    async with open_journal(json.loads(spec)) as journal:
        await target.run({}, journal=journal, run_id=run_id)


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], sys.argv[2], sys.argv[3]))
