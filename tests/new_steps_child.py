"""Reactors whose steps add undoable new steps (`rp.NewSteps`) made from module-level steps
(their undos registered as this module is imported: the journal finds them again), for
tests/test_durable_new_steps_kinds.py; and a process of their own to crash (``python -m
tests.new_steps_child SPEC REACTOR RUN_ID``; ``CHILD_MODE=recover-undo`` recovers the
journal's runs of REACTOR with ``undo=True`` instead of running one).

Each call appends ``what name`` to the ledger (``touch`` of tests/composite_child.py, with
its ``CHILD_`` settings: ``HANG=X``, ``FAIL=X``, ...). ``CHILD_TUPLES=1``: JSON journal.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import reactorpy as rp

from .composite_child import touch
from .journal_child import open_journal
from .killing import crash_child, lines


def crash(db: Path, ledger: Path, reactor: str, run_id: str, **env: str) -> None:
    crash_child("tests.new_steps_child", db, ledger, reactor, run_id, "CHILD_", **env)


def journal_at(db: Path | str, json_: bool = False) -> rp.SQLiteJournal:
    if json_:
        return rp.SQLiteJournal(db, serializer=rp.JsonSerializer())
    return rp.SQLiteJournal(db)


# --- ``nested``: ``spawn`` (its own undo ``unspawn``) adds ``m1`` (undo ``unm1``), which adds
# ``m2`` (undo ``Undos.unm2``, a staticmethod); then ``tail``. In a run, what is undone comes
# newest first: ``unm2``, ``unm1``, ``unspawn`` (each step's own undo is on the stack from the
# moment it returned its new steps).
nested: rp.Reactor[str] = rp.Reactor("nested", returns="tail")


class Undos:
    @staticmethod
    async def unm2(value: str) -> None:
        await touch("undo", "unm2")


async def m2() -> str:
    await touch("do", "m2")
    return "m2"


async def unm1(value: str) -> None:
    await touch("undo", "unm1")


m2_step = rp.step(m2)
m2_step.undo(Undos.unm2)


async def m1() -> rp.NewSteps:
    await touch("do", "m1")
    return rp.NewSteps("m1", [m2_step.evolve(name="m2")])


m1_step = rp.step(m1)
m1_step.undo(unm1)


@nested.step
async def spawn() -> rp.NewSteps:
    await touch("do", "spawn")
    return rp.NewSteps("spawned", [m1_step.evolve(name="m1")])


@spawn.undo
async def unspawn(value: str) -> None:
    await touch("undo", "unspawn")


@nested.step
async def tail(spawn: str) -> str:
    await touch("do", "tail")
    return spawn


# --- ``countdown``: ``count`` replaces itself three times with ``tick`` (a module-level
# step named ``count`` whose undo ``untick`` is module-level too), then ``after``.
countdown: rp.Reactor[str] = rp.Reactor("countdown", returns="after")


async def counting(n: int) -> Any:
    await touch("do", f"count{n}")
    if n == 0:
        return "liftoff"
    return rp.NewSteps(steps=[tick.evolve(args={"n": rp.Value(n - 1)})])


tick = rp.step(counting, name="count")


@tick.undo
async def untick(value: str, n: int) -> None:
    await touch("undo", f"untick{n}")


countdown.add(rp.step(counting, name="count", args={"n": rp.Value(3)}))


@countdown.step
async def after(count: str) -> str:
    await touch("do", "after")
    return count


# --- ``composed``: ``sub`` runs ``inner`` (``spawn`` adds ``n1``, undone by ``undn1``; then
# ``check``); a failure of ``sub`` is compensated (the run goes on with "fallback"); then
# ``final``.
inner: rp.Reactor[str] = rp.Reactor("inner", returns="check")


async def n1() -> str:
    await touch("do", "n1")
    return "n1"


async def undn1(value: str) -> None:
    await touch("undo", "undn1")


n1_step = rp.step(n1)
n1_step.undo(undn1)


@inner.step(name="spawn")
async def inner_spawn() -> rp.NewSteps:
    await touch("do", "spawn")
    return rp.NewSteps("spawned", [n1_step.evolve(name="n1")])


@inner.step
async def check(spawn: str) -> str:
    await touch("do", "check")
    return spawn


composed: rp.Reactor[str] = rp.Reactor("composed", returns="final")
sub = composed.compose("sub", inner)


@sub.compensate
def fallback(error: Exception) -> rp.Continue:
    return rp.Continue("fallback")


@composed.step
async def final(sub: str) -> str:
    await touch("do", "final")
    return sub


# --- ``mapped``: ``items`` maps ``element`` over [1, 2, 3]: ``grow`` adds ``e`` (undone by
# ``une``), then ``look{x}``; a failure of ``items`` is compensated; then ``done``.
element: rp.Reactor[str] = rp.Reactor("element", inputs=["x"], returns="look")


async def e(x: int) -> int:
    await touch("do", f"e{x}")
    return x


async def une(value: int, x: int) -> None:
    await touch("undo", f"une{value}")


e_step = rp.step(e)
e_step.undo(une)


@element.step
async def grow(x: int) -> rp.NewSteps:
    await touch("do", f"grow{x}")
    return rp.NewSteps(x, [e_step.evolve(args={"x": rp.Value(x)})])


@element.step
async def look(grow: int) -> int:
    await touch("do", f"look{grow}")
    return grow


mapped: rp.Reactor[Any] = rp.Reactor("mapped", returns="done")


@mapped.step
async def xs() -> list[int]:
    return [1, 2, 3]


items = mapped.map("items", "xs", element, as_="x")


@items.compensate
def map_fallback(error: Exception) -> rp.Continue:
    return rp.Continue("fallback")


@mapped.step
async def done(items: Any) -> Any:
    await touch("do", "done")
    return items


# --- ``interleaved``: ``lead`` returns new step ``c``, which waits until ``x``, a step beside
# ``lead``, completed; then ``join``. Undone newest first: ``unc``, ``unx``, ``unlead``
# (``lead``'s work was done when it returned, before ``x``'s).
interleaved: rp.Reactor[str] = rp.Reactor("interleaved", returns="join")


async def c() -> str:
    while not any(line == "do x" for line in _lines()):  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    await touch("do", "c")
    return "c"


async def unc(value: str) -> None:
    await touch("undo", "unc")


c_step = rp.step(c)
c_step.undo(unc)


@interleaved.step
async def lead() -> rp.NewSteps:
    await touch("do", "lead")
    return rp.NewSteps("lead", [c_step.evolve(name="c")])


@lead.undo
async def unlead(value: str) -> None:
    await touch("undo", "unlead")


@interleaved.step
async def x() -> str:
    while not any(line == "do lead" for line in _lines()):  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    await touch("do", "x")
    return "x"


@x.undo
async def unx(value: str) -> None:
    await touch("undo", "unx")


@interleaved.step
async def join(lead: str, x: str) -> str:
    await touch("do", "join")
    return f"{lead}+{x}"


def _lines() -> list[str]:
    return lines(Path(os.environ["REACTORPY_TEST_LEDGER"]))


# --- ``halting``: ``split`` returns ``h1`` then ``h2`` (``HALT=h2``: it halts); resumed by
# its id, they continue. Undone newest first: ``unh2``, ``unh1``, ``unsplit``.
halting: rp.Reactor[str] = rp.Reactor("halting_new", returns="split")


async def h1() -> str:
    await touch("do", "h1")
    return "h1"


async def unh1(value: str) -> None:
    await touch("undo", "unh1")


async def h2(h1: str) -> str:
    await touch("do", "h2")
    return "h2"


async def unh2(value: str) -> None:
    await touch("undo", "unh2")


h1_step, h2_step = rp.step(h1), rp.step(h2)
h1_step.undo(unh1)
h2_step.undo(unh2)


@halting.step
async def split() -> rp.NewSteps:
    await touch("do", "split")
    return rp.NewSteps("split", [h1_step, h2_step])


@split.undo
async def unsplit(value: str) -> None:
    await touch("undo", "unsplit")


# --- ``retried``: the composite ``sub`` (``retries=1``) runs ``once_new``: ``g`` returns new
# step ``bad`` the first time in the process (which fails: ``sub`` rolls back and runs
# again), a plain value the second; then ``h``; then ``tail``. ``deeper``: ``retried``'s
# composite and ``hh`` composed as ``outer``, then ``end``. (A reservation ``g`` made
# for its first completion, never used, must not be the second's: it would come before
# the rollback mark, as if rolled back.)
async def bad() -> str:
    await touch("do", "bad")
    raise RuntimeError("bad fails")


bad_step = rp.step(bad)
once_new: rp.Reactor[str] = rp.Reactor("once_new", returns="h")


@once_new.step
async def g() -> Any:
    await touch("do", "g")
    if sum(1 for line in _lines() if line == "do g") == 1:
        return rp.NewSteps("g-new", [bad_step])
    return "g-plain"


@g.undo
async def ung(value: Any) -> None:
    await touch("undo", "g")


@once_new.step
async def h(g: str) -> str:
    await touch("do", "h")
    return g


retried: rp.Reactor[str] = rp.Reactor("retried", returns="tail")
retried.compose("sub", once_new, retries=1, retry_on=Exception)


@retried.step(name="tail")
async def retried_tail(sub: str) -> str:
    await touch("do", "tail")
    return sub


mid: rp.Reactor[str] = rp.Reactor("mid", returns="hh")
mid.compose("sub", once_new, retries=1, retry_on=Exception)


@mid.step
async def hh(sub: str) -> str:
    await touch("do", "hh")
    return sub


deeper: rp.Reactor[str] = rp.Reactor("deeper", returns="end")
deeper.compose("outer", mid)


@deeper.step
async def end(outer: str) -> str:
    await touch("do", "end")
    return outer


REACTORS: dict[str, rp.Reactor[Any]] = {
    "nested": nested,
    "countdown": countdown,
    "composed": composed,
    "mapped": mapped,
    "interleaved": interleaved,
    "halting": halting,
    "retried": retried,
    "deeper": deeper,
}


async def _main(spec: str, reactor: str, run_id: str) -> None:
    reactors = importlib.import_module("tests.new_steps_child").REACTORS
    parsed = json.loads(spec)
    journal = (
        journal_at(parsed["path"], json_=True)
        if os.environ.get("CHILD_TUPLES")
        else open_journal(parsed)
    )
    async with journal:
        if os.environ.get("CHILD_MODE") == "recover-undo":
            await reactors[reactor].recover(journal, undo=True)
        else:
            await reactors[reactor].run({}, journal=journal, run_id=run_id)


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], sys.argv[2], sys.argv[3]))
