"""A reactor for the durable-run tests, and a process that runs it with a journal and dies.

``python -m tests.examples.journaled JOURNAL RUN_ID N [SCHEMA]`` runs `orders` for order N
under RUN_ID in the journal JOURNAL: an SQLite file, or a ``postgresql://`` DSN (with its
tables in SCHEMA). With ``CRASH_IN_SHIP=1`` in the environment, the
process dies in `ship` (``os._exit``: no ``finally`` runs, the journal is not closed), after
`reserve` completed: the run stays ``running`` with a dead owner, for ``recover``. With
``UNDO_FAILS=1``, `release` (the undo of `reserve`) raises.

Owns: test fixtures only. Must not import: reactorpy's private modules.
"""

from __future__ import annotations

import asyncio
import os
import sys

import reactorpy as rp

orders = rp.Reactor("orders", inputs=["n"], returns="ship")


@orders.step
def reserve(n: int) -> str:
    return f"hold-{n}"


@reserve.undo
def release(hold: str) -> None:
    if os.environ.get("UNDO_FAILS"):
        raise OSError(f"the warehouse lost {hold}")


@orders.step
def ship(n: int, reserve: str) -> str:
    if os.environ.get("CRASH_IN_SHIP"):
        os._exit(17)
    if n < 0:
        raise ValueError(f"cannot ship order {n}")
    return f"shipped {n} ({reserve})"


def open_journal(spec: str, schema: str = "public") -> rp.Journal:
    """The journal `spec` names: an SQLite file, or a ``postgresql://`` DSN."""
    if spec.startswith("postgresql://"):
        return rp.PostgresJournal(spec, schema=schema)
    return rp.SQLiteJournal(spec)


async def main(spec: str, run_id: str, n: str, *schema: str) -> None:
    async with open_journal(spec, *schema) as journal:
        await orders.run({"n": int(n)}, journal=journal, run_id=run_id)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
