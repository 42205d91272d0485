"""Reactors with a composed child, for the durable-run tests of rollbacks, failed undos and
halts (tests/test_durable_rollbacks.py, tests/test_durable_failed_undos.py,
tests/test_durable_halts.py), and a process of their own to crash
(``python -m tests.composite_child SPEC REACTOR RUN_ID``).

Each call appends ``what name`` to the ledger file named by ``REACTORPY_TEST_LEDGER``.
Set by the test (``CHILD_`` + the name):

- ``FAIL=X,Y``: calls X and Y raise (after their line); ``FAIL_ONCE=X``: the first call
  of X in this process raises;
- ``HANG=X``: call X appends ``hang X`` and waits forever (the test kills the process);
  ``SLOW=X``: call X waits forever (no line); ``HALT=X``: step X raises `rp.Halt`;
- ``FAILSTART=1``: the run's ``on_run_start`` raises; ``TUPLES=1``: the SQLite journal
  uses `TupleJson`; ``CLOSURE=1``: ``spawn`` adds ``n3``, whose undo is a closure.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

import reactorpy as rp

from .journal_child import open_journal
from .killing import crash_child

__all__ = [
    "REACTORS",
    "FailsToStart",
    "TupleJson",
    "chained",
    "crash",
    "fresh_ledger",
    "halting",
    "rolled",
    "deep_spawning",
    "deeper_spawning",
    "solo",
    "spawning",
    "undo_fails",
]

_SETTINGS = ("FAIL", "FAIL_ONCE", "HANG", "SLOW", "HALT", "FAILSTART", "TUPLES", "CLOSURE")


def write(line: str) -> None:
    with open(os.environ["REACTORPY_TEST_LEDGER"], "a") as f:
        f.write(line + "\n")


_failed_once: set[str] = set()


async def touch(what: str, name: str) -> None:
    write(f"{what} {name}")
    env = os.environ.get
    if name in env("CHILD_FAIL", "").split(","):
        raise RuntimeError(f"{name} failed")
    if env("CHILD_FAIL_ONCE") == name and name not in _failed_once:
        _failed_once.add(name)
        raise RuntimeError(f"{name} failed once")
    if env("CHILD_HANG") == name:
        write(f"hang {name}")
        await asyncio.Event().wait()
    if env("CHILD_SLOW") == name:
        await asyncio.Event().wait()
    if env("CHILD_HALT") == name:
        raise rp.Halt(f"{name} halts")


def fresh_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A test's ledger file (set for this process and the children it starts), with no
    setting left from another test."""
    path = tmp_path / "ledger.txt"
    monkeypatch.setenv("REACTORPY_TEST_LEDGER", str(path))
    for name in _SETTINGS:
        monkeypatch.delenv(f"CHILD_{name}", raising=False)
    _failed_once.clear()
    return path


def crash(db: Path, ledger: Path, reactor: str, run_id: str, **env: str) -> None:
    """Run `reactor` as `run_id` on the SQLite journal `db` in a process of its own, with
    the settings `env` (``HANG="b"``), and SIGKILL it once it writes a ``hang`` line."""
    crash_child("tests.composite_child", db, ledger, reactor, run_id, "CHILD_", **env)


def undo_fails(calls: list[str], name: str = "inner") -> rp.Reactor[str]:
    """A child reactor, for tests that run it in their own process, that completes ``a``,
    whose undo fails, then waits in ``b`` until cancelled; `calls` gets ``do a`` and
    ``undo a``."""
    child: rp.Reactor[str] = rp.Reactor(name, returns="b")

    @child.step
    async def a() -> str:
        calls.append("do a")
        return "a"

    @a.undo
    async def unda(value: str) -> None:
        calls.append("undo a")
        raise RuntimeError("the undo of a failed")

    @child.step
    async def b(a: str) -> str:
        await asyncio.Event().wait()
        return "never"

    return child


class FailsToStart:
    """Middleware whose on_run_start raises for the root run."""

    def on_run_start(self, run: rp.RunInfo) -> None:
        if run.parent is None:
            raise RuntimeError("on_run_start refused")


# ``inner``: ``a`` (undone by ``unda``), then ``b``; ``inner_r1`` the same, ``a`` taking the
# parent's ``r1``.
inner: rp.Reactor[str] = rp.Reactor("inner", returns="b")
inner_r1: rp.Reactor[str] = rp.Reactor("inner2", inputs=["r1"], returns="b")


async def a() -> str:
    await touch("do", "a")
    return "a"


async def a_after_r1(r1: str) -> str:
    await touch("do", "a")
    return f"{r1}+a"


async def unda(value: str) -> None:
    await touch("undo", "unda")


async def b(a: str) -> str:
    await touch("do", "b")
    return f"{a}+b"


for child, first in ((inner, a), (inner_r1, a_after_r1)):
    child.add(rp.step(first, name="a")).undo(unda)
    child.add(rp.step(b))

# ``rolled``: the composite ``sub`` alone.
rolled: rp.Reactor[str] = rp.Reactor("rolled", returns="sub")
rolled.compose("sub", inner)

# ``chained``: root step ``r1`` (undone by ``undr1``), then ``gate`` (no undo), then the
# composite ``sub`` whose child completes ``a`` from ``r1``'s result, then ``b``.
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


chained.compose("sub", inner_r1, wait_for=["gate"])

# ``solo``: like ``chained`` without an undoable root step: ``r1`` has no undo, so the root
# run's own undo stack is empty when it fails before ``sub`` starts again.
solo: rp.Reactor[str] = rp.Reactor("solo", returns="sub")


async def plain_r1() -> str:
    await touch("do", "r1")
    return "r1"


solo.add(rp.step(plain_r1, name="r1"))
solo.compose("sub", inner_r1)

# ``halting``: the composite ``sub`` beside ``h``, which heads a longer chain (``h`` ->
# ``h2`` -> ``h3``): ``h`` goes first when one step runs at a time.
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


# ``spawning``: ``spawn`` returns two new steps, ``n1`` (made from ``n1_step``, undone by
# ``undn1``: the journal finds it again by where it is defined) then ``n2``, and
# ``n3`` beside them, undone by ``undn3``, a closure (which no journal finds again); then
# ``tail``.
spawning: rp.Reactor[str] = rp.Reactor("spawning", returns="spawn")


async def n1() -> str:
    await touch("do", "n1")
    return "n1"


async def undn1(value: str) -> None:
    await touch("undo", "undn1")


async def n2(n1: str) -> str:
    await touch("do", "n2")
    return f"{n1}+n2"


async def n3() -> str:
    await touch("do", "n3")
    return "n3"


# The template of new step ``n1`` (its undo registered as this module is imported).
n1_step = rp.step(n1)
n1_step.undo(undn1)


@spawning.step
async def spawn() -> rp.NewSteps:
    await touch("do", "spawn")
    first, third = n1_step.evolve(name="n1"), rp.step(n3)

    @third.undo
    async def undn3(value: str) -> None:
        await touch("undo", "undn3")

    with_closure = os.environ.get("CHILD_CLOSURE")
    return rp.NewSteps("spawned", [first, rp.step(n2), *([third] if with_closure else [])])


def passing(r: rp.Reactor[Any], name: str, after: str) -> None:
    """Step `name` of `r`: it writes ``do name`` and returns the result of `after`."""

    async def passes(value: str) -> str:
        await touch("do", name)
        return value

    r.add(rp.step(passes, name=name, args={"value": rp.Result(after)}))


passing(spawning, "tail", after="spawn")

# ``deep_spawning``: ``spawning`` composed as ``sub`` (its new steps ``sub.spawn.n1``, ...),
# then ``last``; ``deeper_spawning``: ``deep_spawning`` composed as ``outer``, then ``final``.
deep_spawning: rp.Reactor[str] = rp.Reactor("deep_spawning", returns="last")
deep_spawning.compose("sub", spawning)
passing(deep_spawning, "last", after="sub")
deeper_spawning: rp.Reactor[str] = rp.Reactor("deeper_spawning", returns="final")
deeper_spawning.compose("outer", deep_spawning)
passing(deeper_spawning, "final", after="outer")


REACTORS: dict[str, rp.Reactor[Any]] = {
    "rolled": rolled,
    "chained": chained,
    "solo": solo,
    "halting": halting,
    "spawning": spawning,
    "deep_spawning": deep_spawning,
    "deeper_spawning": deeper_spawning,
}


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
    """The journal `spec` names; with ``CHILD_TUPLES=1`` (SQLite) one using `TupleJson`."""
    if os.environ.get("CHILD_TUPLES"):
        return rp.SQLiteJournal(spec["path"], serializer=TupleJson())
    return open_journal(spec)


async def _main(spec: str, reactor: str, run_id: str) -> None:
    # The reactors of this module under its own name, not ``__main__``'s (as a service
    # imports them): the journal names a new step's undo by its module.
    reactors = importlib.import_module("tests.composite_child").REACTORS
    middleware: list[Any] = [FailsToStart()] if os.environ.get("CHILD_FAILSTART") else []
    async with journal_of(json.loads(spec)) as journal:
        await reactors[reactor].run({}, journal=journal, run_id=run_id, middleware=middleware)


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], sys.argv[2], sys.argv[3]))
