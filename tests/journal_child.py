"""A process of its own for the journal tests: it opens the journal a test describes and
does one thing, printing one JSON line per result (``python -m tests.journal_child SPEC CMD``).

SPEC is a JSON object: ``{"kind": "sqlite", "path": ...}`` or ``{"kind": "postgres", "dsn":
..., "schema": ...}``, plus journal options (``lease``, ``host``). Commands:

- ``create REACTOR N``: create runs ``REACTOR-0`` ... with one entry each, print
  ``{"owner": ..., "runs": [...]}``, then wait forever (the test kills it).
- ``claim REACTOR LIMIT``: claim ``LIMIT`` at a time until nothing is left, print the ids,
  then wait forever, holding them (closing would release them).
- ``stalled REACTOR``: create one run, print it, wait for a line on stdin, then try to append
  to it and print ``{"error": <repr or null>}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import reactorpy as rp
from reactorpy._journal import Entry


def open_journal(spec: dict[str, Any]) -> rp.Journal:
    options = {k: v for k, v in spec.items() if k in ("lease", "host")}
    if spec["kind"] == "sqlite":
        return rp.SQLiteJournal(spec["path"], **options)
    return rp.PostgresJournal(spec["dsn"], schema=spec["schema"], **options)


def say(data: Any) -> None:
    print(json.dumps(data), flush=True)


async def create(journal: rp.Journal, reactor: str, n: int) -> None:
    runs = [f"{reactor}-{i}" for i in range(n)]
    for run_id in runs:
        await journal.create_run(run_id, reactor, "fp", b"inputs")
        await journal.append(run_id, [Entry("first", 1, b"result", b"undo")])
    say({"owner": journal.owner, "runs": runs})
    await asyncio.Event().wait()


async def claim(journal: rp.Journal, reactor: str, limit: int) -> None:
    claimed: list[str] = []
    for _ in range(1000):  # bounded: a broken claim must fail the test, not spin
        if not (batch := await journal.claim(reactor, limit=limit)):
            break
        claimed += batch
    say(claimed)
    await asyncio.Event().wait()


async def stalled(journal: rp.Journal, reactor: str) -> None:
    run_id = f"{reactor}-0"
    await journal.create_run(run_id, reactor, "fp", b"inputs")
    say({"owner": journal.owner, "runs": [run_id]})
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    try:
        await journal.append(run_id, [Entry("late", 2, b"x")])
    except Exception as exc:
        say({"error": repr(exc)})
    else:
        say({"error": None})


async def main(argv: list[str]) -> None:
    spec, command, *args = argv
    async with open_journal(json.loads(spec)) as journal:
        if command == "create":
            await create(journal, args[0], int(args[1]))
        elif command == "claim":
            await claim(journal, args[0], int(args[1]))
        elif command == "stalled":
            await stalled(journal, args[0])
        else:
            raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
