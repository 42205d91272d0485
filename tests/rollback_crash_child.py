"""Reactors to break the rollback marks of child runs with real crashes, and a process of
their own to crash (``python -m tests.rollback_crash_child SPEC run REACTOR RUN_ID INPUTS_JSON`` or
``python -m tests.rollback_crash_child SPEC recover REACTOR UNDO``).

Each step's effect is a line ``do NAME KEY`` in the ledger named by ``BREAK_LEDGER``, each
undo's a line ``undo NAME KEY`` (KEY: the step's idempotency key, which is also its
result). The effect is written after the step's checks, so a step killed while it hangs
did nothing. ``BREAK_HANG`` / ``BREAK_FAIL`` are comma-separated rules
``what:name[@substring][#n]``: ``what`` is ``do`` or ``undo``, the rule matches when the
step (or undo) is ``name`` and its key contains ``substring``; ``#n``: only the n-th
matching call in this process (a hang writes ``hang ...`` then waits forever; a fail
raises RuntimeError); ``BREAK_HANG_AFTER`` hangs once the call did its work. SPEC is
JSON: ``{"kind": "sqlite", "path": ..., "serializer":
"json"?}`` or postgres (``dsn``, ``schema``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import reactorpy as rp

__all__ = ["REACTORS", "effects", "ledger_lines", "open_journal"]


def ledger_lines() -> list[str]:
    path = Path(os.environ["BREAK_LEDGER"])
    return path.read_text().splitlines() if path.exists() else []


def _write(line: str) -> None:
    with open(os.environ["BREAK_LEDGER"], "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


_seen: Counter[str] = Counter()


def _matches(rules: str, what: str, name: str, key: str) -> bool:
    for rule in filter(None, (r.strip() for r in rules.split(","))):
        head, _, nth = rule.partition("#")
        target, _, sub = head.partition("@")
        if target != f"{what}:{name}" or sub not in key:
            continue
        _seen[rule] += 1
        if not nth or _seen[rule] == int(nth):
            return True
    return False


async def touch(what: str, name: str, key: str) -> None:
    if _matches(os.environ.get("BREAK_SLOW", ""), what, name, key):
        await asyncio.sleep(60)  # cancelled meanwhile, as a rule
    if _matches(os.environ.get("BREAK_HANG", ""), what, name, key):
        _write(f"hang {what}:{name} {key}")
        await asyncio.Event().wait()
    if _matches(os.environ.get("BREAK_FAIL", ""), what, name, key):
        raise RuntimeError(f"{what} {name} failed ({key})")
    _write(f"{what} {name} {key}")
    if _matches(os.environ.get("BREAK_HANG_AFTER", ""), what, name, key):
        _write(f"hang after {what}:{name} {key}")  # (done: killed before it is recorded)
        await asyncio.Event().wait()


def effects() -> tuple[Counter[str], Counter[str]]:
    """(do, undo) calls by key."""
    do: Counter[str] = Counter()
    undo: Counter[str] = Counter()
    for line in ledger_lines():
        parts = line.split()
        if parts[0] == "do":
            do[parts[2]] += 1
        elif parts[0] == "undo":
            undo[parts[2]] += 1
    return do, undo


def act(
    r: rp.Reactor[Any],
    name: str,
    after: tuple[str, ...] = (),
    inputs: tuple[str, ...] = (),
    undo: bool = True,
) -> Any:
    """A step `name` of `r` that needs `after` (results) and `inputs`, returning its key."""

    async def fn(ctx: rp.Context, **kw: Any) -> str:
        await touch("do", name, ctx.idempotency_key)
        return ctx.idempotency_key

    fn.__name__ = fn.__qualname__ = name.replace(".", "_")
    args: dict[str, Any] = {d.replace(".", "_"): rp.Result(d) for d in after}
    args.update({i: rp.Input(i) for i in inputs})
    s = r.add(rp.step(fn, name=name, args=args))
    if undo:

        async def back(key: str) -> None:
            await touch("undo", name, key)

        s.undo(back)
    return s


# ---------------------------------------------------------------- A: "a" and "a.b"
# A step named "a.b" (with an undo) completes, then the composite "a" runs a child that
# fails once: its rollback marks "\x1fa.", which also starts the key of step "a.b".
dot_child: rp.Reactor[Any] = rp.Reactor("dot_child", inputs=["start"])
act(dot_child, "x", inputs=("start",))
act(dot_child, "y", after=("x",))

dotted: rp.Reactor[Any] = rp.Reactor("dotted", inputs=["n"], returns="fin")
act(dotted, "a.b", inputs=("n",))
dotted.compose("a", dot_child, args={"start": rp.Result("a.b")}, retries=1, retry_on=RuntimeError)
act(dotted, "fin", after=("a",))

# Composites "a" and "a.b", the second running after the first's rollback.
dotted2: rp.Reactor[Any] = rp.Reactor("dotted2", inputs=["n"], returns="fin")
dotted2.compose("a.b", dot_child, args={"start": rp.Input("n")})
dotted2.compose("a", dot_child, args={"start": rp.Result("a.b")}, retries=1, retry_on=RuntimeError)
act(dotted2, "fin", after=("a",))

# Siblings "sub" and "sub2".
siblings: rp.Reactor[Any] = rp.Reactor("siblings", inputs=["n"], returns="fin")
siblings.compose("sub2", dot_child, args={"start": rp.Input("n")})
siblings.compose(
    "sub", dot_child, args={"start": rp.Result("sub2")}, retries=1, retry_on=RuntimeError
)
act(siblings, "fin", after=("sub",))

# ---------------------------------------------------------------- B: map elements
elem: rp.Reactor[Any] = rp.Reactor("elem", inputs=["item"], returns="check")
act(elem, "take", inputs=("item",))
act(elem, "hold", after=("take",))
act(elem, "check", after=("hold",), undo=False)

mapped: rp.Reactor[Any] = rp.Reactor("mapped", inputs=["items"], returns="fin")
act(mapped, "first", inputs=("items",))
mapped.map("each", "items", elem, wait_for="first", retries=1, retry_on=RuntimeError)
act(mapped, "fin", after=("each",))

# ---------------------------------------------------------------- C: three deep
inner: rp.Reactor[Any] = rp.Reactor("inner", inputs=["n"], returns="i2")
act(inner, "i1", inputs=("n",))
act(inner, "i2", after=("i1",))

middle: rp.Reactor[Any] = rp.Reactor("middle", inputs=["n"], returns="m2")
act(middle, "m1", inputs=("n",))
middle.compose("in", inner, args={"n": rp.Result("m1")})
act(middle, "m2", after=("in",))

top: rp.Reactor[Any] = rp.Reactor("top", inputs=["n"], returns="t2")
act(top, "t1", inputs=("n",))
top.compose("mid", middle, args={"n": rp.Result("t1")})
act(top, "t2", after=("mid",))

deep: rp.Reactor[Any] = rp.Reactor("deep", inputs=["n"], returns="fin")
act(deep, "d0", inputs=("n",))
deep.compose("top", top, args={"n": rp.Result("d0")}, retries=1, retry_on=RuntimeError)
act(deep, "fin", after=("top",))

# Retries at each level: the innermost retries itself.
inner_r: rp.Reactor[Any] = rp.Reactor("inner_r", inputs=["n"], returns="i2")
act(inner_r, "i1", inputs=("n",))
act(inner_r, "i2", after=("i1",))
middle_r: rp.Reactor[Any] = rp.Reactor("middle_r", inputs=["n"], returns="m2")
act(middle_r, "m1", inputs=("n",))
middle_r.compose("in", inner_r, args={"n": rp.Result("m1")}, retries=1, retry_on=RuntimeError)
act(middle_r, "m2", after=("in",))
deep_r: rp.Reactor[Any] = rp.Reactor("deep_r", inputs=["n"], returns="fin")
act(deep_r, "d0", inputs=("n",))
deep_r.compose("mid", middle_r, args={"n": rp.Result("d0")}, retries=1, retry_on=RuntimeError)
act(deep_r, "fin", after=("mid",))


# ---------------------------------------------------------------- G: a halt in a sibling
halting: rp.Reactor[Any] = rp.Reactor("halting", inputs=["n"])
halting.compose("sub", dot_child, args={"start": rp.Input("n")}, retries=1, retry_on=RuntimeError)


@halting.step
async def sibling(n: int, ctx: rp.Context) -> str:
    await touch("do", "sibling", ctx.idempotency_key)
    if os.environ.get("BREAK_HALT"):
        raise rp.Halt("wait")
    return ctx.idempotency_key


# ---------------------------------------------------------------- NewSteps children
gen_parent: rp.Reactor[Any] = rp.Reactor("gen_parent", inputs=["n"], returns="fin")


def _new_step(name: str, after: tuple[str, ...] = ()) -> Any:
    holder: rp.Reactor[Any] = rp.Reactor("holder")
    s = act(holder, name, after=after)
    return s


@gen_parent.step(retries=1, retry_on=RuntimeError)
async def gen(n: int, ctx: rp.Context) -> Any:
    await touch("do", "gen", ctx.idempotency_key)
    return rp.NewSteps("generated", [_new_step("g1"), _new_step("g2", after=("g1",))])


act(gen_parent, "fin", after=("gen",))


# ---------------------------------------------------------------- a child cancelled
# ``boom`` fails once ``sub.x`` is done, while ``sub.y`` is slow (BREAK_SLOW): with no
# grace the child is cancelled, and rolls back.
cancelling: rp.Reactor[Any] = rp.Reactor("cancelling", inputs=["n"])
cancelling.compose("sub", dot_child, args={"start": rp.Input("n")})


@cancelling.step
async def boom(n: int, ctx: rp.Context) -> str:
    while not any(line.startswith("do x") for line in ledger_lines()):  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    await touch("do", "boom", ctx.idempotency_key)
    return ctx.idempotency_key


REACTORS: dict[str, rp.Reactor[Any]] = {
    r.name: r
    for r in (dotted, dotted2, siblings, mapped, deep, deep_r, halting, gen_parent, cancelling)
}


def open_journal(spec: dict[str, Any]) -> rp.Journal:
    options: dict[str, Any] = {}
    if spec.get("serializer") == "json":
        options["serializer"] = rp.JsonSerializer()
    if spec["kind"] == "sqlite":
        return rp.SQLiteJournal(spec["path"], **options)
    return rp.PostgresJournal(spec["dsn"], schema=spec["schema"], **options)


def _record(r: rp.RunRecord) -> dict[str, Any]:
    return {"run_id": r.run_id, "status": str(r.status), "result": repr(r.result)}


async def _main(argv: list[str]) -> None:
    spec, command, *args = argv
    async with open_journal(json.loads(spec)) as journal:
        if command == "run":
            name, run_id, inputs = args
            try:
                grace = float(os.environ.get("BREAK_GRACE", "5"))
                await REACTORS[name].run(
                    json.loads(inputs), journal=journal, run_id=run_id, grace=grace
                )
            except (rp.RunFailed, rp.Halted) as exc:
                print(json.dumps({"ended": type(exc).__name__}), flush=True)
        else:
            name, undo = args
            grace = float(os.environ.get("BREAK_GRACE", "5"))
            records = await REACTORS[name].recover(journal, undo=undo == "undo", grace=grace)
            print(json.dumps([_record(r) for r in records]), flush=True)


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1:]))
