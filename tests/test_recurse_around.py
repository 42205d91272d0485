"""``reactor.recurse`` (a child run again and again) and ``reactor.around`` (a child run
inside a wrapper), with their undo, halt and failure semantics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

import reactorpy as rp
from reactorpy.testing import Recorder, run_virtual
from tests.halting import halting


def countdown(undone: list[Any] | None = None, fail_at: int | None = None) -> rp.Reactor:
    """A child that takes ``n`` and returns ``{"n": n - 1}``; its step is undoable."""
    child = rp.Reactor("countdown", inputs=["n"], returns="tick")

    @child.step
    async def tick(n):
        if n == fail_at:
            raise ValueError(f"tick {n}")
        await asyncio.sleep(0)
        return {"n": n - 1}

    if undone is not None:

        @tick.undo
        def untick(value, n):
            undone.append(n)

    return child


# ----------------------------------------------------------------------------- recurse


def test_recurse_until_a_result_satisfies_the_predicate():
    r = rp.Reactor("loop", inputs=["n"], returns="down")
    r.recurse("down", countdown(), until=lambda out: out["n"] == 0)
    recorder = Recorder()
    assert {"n": 0} == run_virtual(r.run({"n": 3}, middleware=[recorder]))
    ticks = [e.step for e in recorder.events if e.kind == "step_complete" and "tick" in e.step]
    assert ["down.[0].tick", "down.[1].tick", "down.[2].tick"] == ticks


@pytest.mark.parametrize(
    ("until", "expected"), [(None, {"n": 8}), (lambda o: o["n"] < 9, {"n": 8})]
)
def test_recurse_stops_after_max_iterations_or_the_predicate_first(until: Any, expected: Any):
    r = rp.Reactor("loop", inputs=["n"], returns="down")
    r.recurse("down", countdown(), until=until, max_iterations=2)
    assert expected == run_virtual(r.run({"n": 10}))


def test_recurse_with_an_async_predicate_and_wired_args():
    async def reached(out: dict[str, int]) -> bool:
        await asyncio.sleep(0)
        return out["n"] <= 5

    r = rp.Reactor("loop", inputs=["start"], returns="down")
    r.recurse("down", countdown(), args={"n": rp.Input("start", transform=int)}, until=reached)
    assert {"n": 5} == run_virtual(r.run({"start": "7"}))


def test_recurse_result_that_cannot_be_the_next_inputs_fails_and_undoes():
    undone: list[Any] = []
    child = rp.Reactor("bad", inputs=["n"], returns="step")

    @child.step
    def step(n):
        return n - 1  # not a mapping of the inputs

    @step.undo
    def unstep(value, n):
        undone.append(n)

    r = rp.Reactor("loop", inputs=["n"], returns="down")
    r.recurse("down", child, max_iterations=5)
    with pytest.raises(rp.RunFailed) as info:
        run_virtual(r.run({"n": 3}))
    [error] = info.value.exceptions
    assert isinstance(error, TypeError)
    assert "recurse 'down': iteration 0 of 'bad' returned int" in str(error)
    assert [3] == undone


def test_recurse_failing_iteration_undoes_the_earlier_ones_newest_first():
    undone: list[Any] = []
    r = rp.Reactor("loop", inputs=["n"], returns="down")
    r.recurse("down", countdown(undone, fail_at=2), max_iterations=10)
    with pytest.raises(rp.RunFailed):
        run_virtual(r.run({"n": 5}))
    assert [3, 4, 5] == undone


def test_recurse_iterations_are_undone_when_the_parent_fails_later():
    undone: list[Any] = []
    r = rp.Reactor("loop", inputs=["n"])
    r.recurse("down", countdown(undone), max_iterations=3)

    @r.step
    def after(down):
        raise RuntimeError("later")

    with pytest.raises(rp.RunFailed):
        run_virtual(r.run({"n": 9}))
    assert [7, 8, 9] == undone


def test_recurse_halt_inside_undoes_the_iterations_and_starts_over_on_resume():
    undone: list[Any] = []
    gate = {"open": False}
    child = rp.Reactor("gated", inputs=["n"], returns="tick")

    @child.step
    def tick(n):
        if n == 1 and not gate["open"]:
            raise rp.Halt("closed")
        return {"n": n - 1}

    @tick.undo
    def untick(value, n):
        undone.append(n)

    r = rp.Reactor("loop", inputs=["n"], returns="down")
    r.recurse("down", child, until=lambda out: out["n"] == 0)
    with pytest.raises(rp.Halted) as info:
        run_virtual(r.run({"n": 3}))
    assert [2, 3] == undone
    gate["open"] = True
    assert {"n": 0} == run_virtual(r.resume(info.value.checkpoint))


def test_recurse_definition_errors():
    r = rp.Reactor("loop", inputs=["n"])
    with pytest.raises(rp.DefinitionError, match=r"give until=.*max_iterations="):
        r.recurse("a", countdown())
    with pytest.raises(rp.DefinitionError, match="max_iterations must be an int >= 1"):
        r.recurse("b", countdown(), max_iterations=0)
    with pytest.raises(rp.DefinitionError, match="until= must be callable"):
        r.recurse("c", countdown(), until=True)  # type: ignore[arg-type]
    with pytest.raises(rp.DefinitionError, match="takes a Reactor"):
        r.recurse("d", rp.step(lambda n: n, name="s"), max_iterations=1)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- around


def pair(log: list[str], undone: list[str] | None = None, fail: bool = False) -> rp.Reactor:
    """A child: ``insert`` then ``index`` (which fails if asked); insert is undoable."""
    child = rp.Reactor("pair", inputs=["row"])

    @child.step
    async def insert(row):
        log.append(f"insert {row}")
        return f"id-{row}"

    if undone is not None:

        @insert.undo
        def delete(value):
            undone.append(value)

    @child.step
    def index(insert):
        if fail:
            raise LookupError("index broken")
        log.append(f"index {insert}")
        return "indexed"

    return child


class Transactions:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[None]:
        self.log.append("begin")
        try:
            yield
        except BaseException as exc:
            self.log.append(f"rollback {type(exc).__name__}")
            raise
        self.log.append("commit")


def test_around_runs_the_child_inside_the_wrapper():
    log: list[str] = []
    db = Transactions(log)

    async def in_transaction(run_child, inputs):
        async with db.begin():
            out = await run_child()
        return (inputs["row"], out["insert"])

    r = rp.Reactor("save", inputs=["row"], returns="txn")
    r.around("txn", pair(log), in_transaction)
    assert (7, "id-7") == run_virtual(r.run({"row": 7}))
    assert ["begin", "insert 7", "index id-7", "commit"] == log


def test_around_wrapper_giving_wrong_inputs_gets_an_input_error():
    async def typo(run_child, inputs):
        return await run_child({"rows": 1})

    r = rp.Reactor("save", inputs=["row"])
    r.around("txn", pair([]), typo)
    with pytest.raises(rp.RunFailed) as info:
        run_virtual(r.run({"row": 1}))
    [error] = info.value.exceptions
    assert isinstance(error, rp.InputError)
    assert (["row"], ["rows"]) == (error.missing, error.unexpected)


def test_around_may_change_the_inputs_or_skip_the_child():
    log: list[str] = []

    async def twice(run_child, inputs):
        first = await run_child({"row": inputs["row"] + 1})
        return first["insert"]

    async def skip(run_child, inputs):
        return "skipped"

    r = rp.Reactor("save", inputs=["row"])
    r.around("plus", pair(log), twice)
    r.around("none", pair(log), skip)
    assert {"plus": "id-2", "none": "skipped"} == run_virtual(r.run({"row": 1}))
    assert ["insert 2", "index id-2"] == log


def test_around_child_failure_reaches_the_wrapper_and_is_undone_once():
    log: list[str] = []
    undone: list[str] = []
    db = Transactions(log)

    async def in_transaction(run_child, inputs):
        async with db.begin():
            return await run_child()

    r = rp.Reactor("save", inputs=["row"])
    r.around("txn", pair(log, undone, fail=True), in_transaction)
    with pytest.raises(rp.RunFailed) as info:
        run_virtual(r.run({"row": 1}))
    assert ["begin", "insert 1", "rollback RunFailed"] == log
    assert ["id-1"] == undone  # by the child itself, not again by the around step
    assert info.value.subgroup(LookupError) is not None


def test_around_wrapper_failing_after_the_child_undoes_the_child():
    log: list[str] = []
    undone: list[str] = []

    async def commit_fails(run_child, inputs):
        await run_child()
        raise ConnectionError("commit lost")

    r = rp.Reactor("save", inputs=["row"])
    r.around("txn", pair(log, undone), commit_fails)
    with pytest.raises(rp.RunFailed) as info:
        run_virtual(r.run({"row": 1}))
    assert ["id-1"] == undone
    assert isinstance(info.value.exceptions[0], ConnectionError)


def test_around_child_is_undone_when_the_parent_fails_later():
    undone: list[str] = []

    async def plain(run_child, inputs):
        return await run_child()

    r = rp.Reactor("save", inputs=["row"])
    r.around("txn", pair([], undone), plain)

    @r.step
    def after(txn):
        raise RuntimeError("later")

    with pytest.raises(rp.RunFailed):
        run_virtual(r.run({"row": 4}))
    assert ["id-4"] == undone


def test_around_halt_inside_undoes_the_child_and_runs_again_on_resume():
    log: list[str] = []
    undone: list[str] = []
    db = Transactions(log)
    gate = {"open": False}
    child = rp.Reactor("gated", inputs=["row"], returns="approve")

    @child.step
    def write(row):
        log.append("write")
        return f"w{row}"

    @write.undo
    def unwrite(value):
        undone.append(value)

    @child.step
    def approve(write):
        if not gate["open"]:
            raise rp.Halt("approval")
        return write

    async def in_transaction(run_child, inputs):
        async with db.begin():
            return await run_child()

    r = rp.Reactor("save", inputs=["row"], returns="txn")
    r.around("txn", child, in_transaction)
    with pytest.raises(rp.Halted) as info:
        run_virtual(r.run({"row": 2}))
    assert ["begin", "write", "rollback Halted"] == log
    assert ["w2"] == undone
    gate["open"] = True
    assert "w2" == run_virtual(r.resume(info.value.checkpoint))
    assert ["begin", "write", "commit"] == log[3:]


def test_around_holds_no_slot_so_one_slot_does_not_deadlock():
    async def plain(run_child, inputs):
        return await run_child()

    r = rp.Reactor("save", inputs=["row"])
    r.around("txn", pair([]), plain)

    async def main() -> Any:
        async with asyncio.timeout(10):
            return await r.run({"row": 1}, max_concurrency=1)

    assert {"insert": "id-1", "index": "indexed"} == run_virtual(main())["txn"]


def test_around_refuses_a_wrapper_that_is_not_async():
    """A sync wrapper, or something not callable, is refused when the step is defined."""
    r = rp.Reactor("save", inputs=["row"])
    with pytest.raises(rp.DefinitionError, match="'txn': the wrapper must be an async function"):
        r.around("txn", pair([]), lambda run_child, inputs: "sync")
    with pytest.raises(rp.DefinitionError, match="must be an async function"):
        r.around("other", pair([]), "nope")  # type: ignore[arg-type]
    assert "txn" not in r.steps


@pytest.mark.parametrize("kind", ["around", "recurse"])
def test_a_halt_two_levels_down_undoes_the_grandchilds_steps_too(kind: str):
    """around(child) where the child composes a grandchild that completes a step and then
    halts: that step is undone at the halt (the around runs again on resume), not
    forgotten."""
    log: list[str] = []
    gate = {"open": False}
    child = rp.Reactor("child", inputs=["x"], returns="inner")
    child.compose("inner", halting("grand", log, gate=gate))
    parent = rp.Reactor("parent", inputs=["x"], returns="wrap")
    if kind == "around":

        async def wrapper(run_child, inputs):
            return await run_child()

        parent.around("wrap", child, wrapper)
    else:
        parent.recurse("wrap", child, max_iterations=1)
    with pytest.raises(rp.Halted) as info:
        run_virtual(parent.run({"x": 1}))
    assert ["do first", "undo first"] == log
    gate["open"] = True
    assert {"x": 1} == run_virtual(parent.resume(info.value.checkpoint))
    assert ["do first", "undo first", "do first"] == log


def test_a_failing_run_undoes_what_a_halted_grandchild_completed():
    """A step fails while a composed child runs; the child then halts inside its own
    compose: the grandchild's completed step is undone with the rest."""
    log: list[str] = []
    child = rp.Reactor("child", inputs=["x"])
    child.compose("inner", halting("grand", log, delay=1))  # halts in the grace period
    parent = rp.Reactor("parent", inputs=["x"])
    parent.compose("outer", child)

    @parent.step
    async def boom(x):
        await asyncio.sleep(0.5)  # after the first step, before the halt
        raise ValueError("boom")

    with pytest.raises(rp.RunFailed):
        run_virtual(parent.run({"x": 1}))
    assert ["do first", "undo first"] == log


def test_around_child_runs_left_going_by_the_wrapper_are_cancelled_and_undone():
    """A wrapper gathers two child runs and one fails: gather raises at once, and the other
    child run is cancelled by the step (what it completed undone), not left running."""
    log: list[str] = []
    child = rp.Reactor("child", inputs=["n"], returns="b")

    @child.step
    def a(n):
        if n == 0:
            raise ValueError("boom")
        log.append(f"do a{n}")
        return n

    a.undo(lambda value: log.append(f"undo a{value}"))

    @child.step
    async def b(a):
        await asyncio.sleep(10)
        log.append(f"do b{a}")
        return a

    async def both(run_child, inputs):
        return await asyncio.gather(run_child({"n": 1}), run_child({"n": 0}))

    r = rp.Reactor("p", inputs=["n"])
    r.around("pair", child, both)

    async def main() -> None:
        with pytest.raises(rp.RunFailed):
            await r.run({"n": 1})
        assert {asyncio.current_task()} == asyncio.all_tasks()
        await asyncio.sleep(60)  # nothing of the child run happens later

    run_virtual(main())
    assert ["do a1", "undo a1"] == log


def test_a_failing_wrapper_whose_childs_undo_fails_keeps_both_errors():
    child = rp.Reactor("child", inputs=["n"])

    @child.step
    def a(n):
        return n

    @a.undo
    def undo_a(value):
        raise OSError("cannot undo a")

    async def failing(run_child, inputs):
        await run_child()
        raise ValueError("wrapper failed")

    r = rp.Reactor("p", inputs=["n"])
    r.around("pair", child, failing)
    with pytest.raises(rp.RunFailed) as info:
        run_virtual(r.run({"n": 1}))
    [group] = info.value.exceptions
    assert isinstance(group, ExceptionGroup)
    assert ["ValueError", "OSError"] == [type(e).__name__ for e in group.exceptions]
    assert info.value.subgroup(ValueError) is not None  # except* ValueError reaches it


@pytest.mark.parametrize("when", [0.05, 0.15, 0.25])
def test_a_cancellation_while_around_stops_its_stragglers_loses_nothing(when: float):
    """Cancelled at any moment while an around's leftover child runs are being stopped:
    every child step that completed is undone, once."""
    log: list[str] = []
    child = rp.Reactor("child", inputs=["x"])

    @child.step
    async def book(x):
        await asyncio.sleep(0.1 * x)
        log.append(f"book {x}")
        return x

    @book.undo
    async def unbook(value):
        await asyncio.sleep(0.1)
        log.append(f"unbook {value}")

    async def wrapper(run_child, inputs):
        async def failing():
            await asyncio.sleep(0.15)
            raise ValueError("boom")

        await asyncio.gather(run_child({"x": 1}), run_child({"x": 3}), failing())

    r = rp.Reactor("r")
    r.around("txn", child, wrapper, args={"x": rp.Value(0)})

    async def main():
        task = asyncio.ensure_future(r.run())
        await asyncio.sleep(0.15 + when)
        task.cancel()
        with pytest.raises((asyncio.CancelledError, rp.RunFailed)):
            await task

    run_virtual(main())
    booked = [e for e in log if e.startswith("book")]
    unbooked = [e for e in log if e.startswith("unbook")]
    assert sorted(b.split()[1] for b in booked) == sorted(u.split()[1] for u in unbooked)


def test_an_around_cancelled_as_its_wrapper_returns_is_undone_before_it_runs_again():
    """A run that halts (its timeout, no grace) just as an around's wrapper returned, while
    the step stops a child run the wrapper left going: the step stays pending, so what its
    children completed is undone before the halt; on resume it runs again, and one booking
    of its own is left."""
    booked: list[str] = []
    unbooked: list[str] = []
    child = rp.Reactor("child", inputs=["x"], returns="hold")

    @child.step
    def book(x):
        booked.append(x)
        return x

    @book.undo
    async def unbook(value):
        await asyncio.sleep(1)  # stopping the leftover child run takes a while
        unbooked.append(value)

    @child.step
    async def hold(book):
        if book == "slow":
            await asyncio.sleep(100)
        return book

    async def wrapper(run_child, inputs):
        leftover = asyncio.ensure_future(run_child({"x": "slow"}))
        await asyncio.sleep(0)  # it has started
        assert not leftover.done()
        return await run_child({"x": "fast"})

    r = rp.Reactor("r", returns="txn")
    r.around("txn", child, wrapper, args={"x": rp.Value(None)})

    async def main():
        with pytest.raises(rp.Halted) as halted:
            await r.run(timeout=0.5, grace=0.0)
        assert sorted(booked) == sorted(unbooked)  # nothing left behind by the pending step
        return await r.resume(halted.value.checkpoint)

    assert "fast" == run_virtual(main())
    assert ["fast", "fast"] == sorted(b for b in booked if b == "fast")
    assert ["fast"] == [u for u in unbooked if u == "fast"]
