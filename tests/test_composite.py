"""Composition: compose, map, switch and steps added at run time."""

from __future__ import annotations

import asyncio
import gc
import random
import tracemalloc

import pytest

import reactorpy as rp
from reactorpy.testing import run_virtual
from tests.loop_turns import LoopTurns


class Peak:
    def __init__(self) -> None:
        self.running = 0
        self.peak = 0

    async def work(self, n: int = 3) -> None:
        self.running += 1
        self.peak = max(self.peak, self.running)
        for _ in range(n):
            await asyncio.sleep(0)
        self.running -= 1


def nested(peak: Peak) -> rp.Reactor:
    """Three levels: outer maps users through a composed per-user reactor with fan-out."""
    leaf = rp.Reactor("leaf", inputs=["user"], returns="merge")

    async def fetch(user):
        await peak.work()
        return user

    for name in ("profile", "prefs", "activity"):
        leaf.add(rp.step(fetch), name=name)

    @leaf.step
    def merge(profile, prefs, activity):
        return profile

    middle = rp.Reactor("middle", inputs=["user"], returns="data")
    middle.compose("data", leaf)

    outer = rp.Reactor("outer", inputs=["users"], returns="all")
    outer.map("all", "users", middle, batch_size=4)
    return outer


async def test_limiter_shared_across_three_levels():
    """One max_concurrency caps steps at every nesting level together."""
    peak = Peak()
    outer = nested(peak)
    async with asyncio.timeout(10):
        result = await outer.run({"users": list(range(10))}, max_concurrency=3)
    assert list(range(10)) == result
    assert 3 == peak.peak


async def test_nesting_does_not_deadlock_at_one_slot():
    """Composite steps hold no slot, so any nesting runs under max_concurrency=1."""
    peak = Peak()
    async with asyncio.timeout(10):
        assert [0, 1, 2] == await nested(peak).run({"users": [0, 1, 2]}, max_concurrency=1)
    assert 1 == peak.peak


async def test_map_keeps_input_order_under_random_completion():
    """map returns results in input order whatever order elements finish in."""
    rng = random.Random(7)
    delays = [rng.randint(0, 5) for _ in range(50)]
    r = rp.Reactor("order", inputs=["xs"], returns="out")

    @rp.step
    async def slow_echo(x):
        for _ in range(delays[x]):
            await asyncio.sleep(0)
        return x

    r.map("out", "xs", slow_echo, batch_size=7)
    assert list(range(50)) == await r.run({"xs": range(50)})


async def test_map_over_async_iterator_with_extra_wired_parameter():
    """map takes async iterables; other parameters of the step are wired by name."""
    r = rp.Reactor("aiter", inputs=["factor"], returns="out")

    @r.step
    async def numbers():
        async def gen():
            for i in range(5):
                yield i

        return gen()

    @rp.step
    async def scale(x, factor):
        return x * factor

    r.map("out", "numbers", scale, as_="x")
    assert [0, 3, 6, 9, 12] == await r.run({"factor": 3})


@pytest.mark.parametrize("max_concurrency", [None, 2])
async def test_map_over_a_step_with_its_own_args(max_concurrency: int | None):
    """A mapped step's own args= (here a constant) reach every element, next to the
    parameters wired by name from the parent."""
    r = rp.Reactor("scaled", inputs=["xs", "offset"], returns="out")

    @rp.step(args={"k": rp.Value(3)})
    async def scale(x, k, offset):
        return x * k + offset

    r.map("out", "xs", scale, as_="x")
    assert [13, 16] == await r.run({"xs": [1, 2], "offset": 10}, max_concurrency=max_concurrency)


def test_map_of_100000_elements_keeps_memory_flat():
    """map materialises at most batch_size elements at a time: memory stays flat."""
    r = rp.Reactor("big", inputs=["n"], returns="total")

    @r.step
    def items(n):
        return (i for i in range(n))

    @rp.step
    async def noop(x):
        return None

    r.map("mapped", "items", noop, batch_size=100)

    @r.step
    def total(mapped):
        return len(mapped)

    async def peak_for(n: int) -> int:
        tracemalloc.start()
        try:
            assert n == await r.run({"n": n})
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small = run_virtual(peak_for(10_000))
    large = run_virtual(peak_for(100_000))
    # The result list itself grows (8 bytes a slot); everything else stays flat.
    assert large - small < 90_000 * 8 + 200_000


async def test_map_element_failure_undoes_completed_elements():
    """When an element fails, completed elements are undone and the run fails."""
    undone = []
    element = rp.Reactor("element", inputs=["x"], returns="book")

    @element.step
    async def book(x):
        if x == 3:
            raise ValueError("sold out")
        await asyncio.sleep(0)
        return x

    @book.undo
    def cancel_booking(value):
        undone.append(value)

    r = rp.Reactor("trip", inputs=["xs"], returns="all")
    r.map("all", "xs", element, batch_size=2)
    with pytest.raises(rp.RunFailed) as info:
        await r.run({"xs": [0, 1, 2, 3, 4]})
    assert sorted(undone) == [0, 1, 2]
    assert info.value.exceptions


async def test_nested_map_inside_compose_inside_map():
    """Maps nest inside composed reactors inside maps, to any depth."""
    square = rp.step(lambda x: x * x, name="square")
    row = rp.Reactor("row", inputs=["xs"], returns="squares")
    row.map("squares", "xs", square)
    wrapper = rp.Reactor("wrapper", inputs=["xs"], returns="inner")
    wrapper.compose("inner", row)
    grid = rp.Reactor("grid", inputs=["rows"], returns="out")
    grid.map("out", "rows", wrapper)
    assert [[1, 4], [9, 16, 25]] == await grid.run({"rows": [[1, 2], [3, 4, 5]]})


async def test_parent_failure_undoes_composed_child_as_unit_newest_first():
    """A parent failing after its child finished undoes the child's steps newest first."""
    undone = []
    child = rp.Reactor("child", inputs=["order"], returns="b")

    @child.step
    def a(order):
        return f"a{order}"

    @a.undo
    def undo_a(value):
        undone.append(value)

    @child.step
    def b(a):
        return "b"

    @b.undo
    def undo_b(value):
        undone.append(value)

    parent = rp.Reactor("parent", inputs=["order"])

    @parent.step
    def before(order):
        return "before"

    @before.undo
    def undo_before(value):
        undone.append(value)

    parent.compose("sub", child, wait_for="before")

    @parent.step
    def fail(sub):
        raise RuntimeError("late failure")

    with pytest.raises(rp.RunFailed):
        await parent.run({"order": 1})
    assert ["b", "a1", "before"] == undone


async def test_compose_args_must_match_child_inputs():
    """compose args naming something that is not an input of the child is an error."""
    child = rp.Reactor("child", inputs=["x"], returns="x")
    parent = rp.Reactor("parent")
    with pytest.raises(rp.DefinitionError, match=r"inputs of reactor 'child'.*\['x'\]"):
        parent.compose("sub", child, args={"y": rp.Value(1)})


async def test_child_halt_halts_parent_and_resume_continues_inside():
    """A halt inside a composed child halts the parent; resume continues in the child."""
    log = []
    go = {"yes": False}
    child = rp.Reactor("child", returns="second")

    @child.step
    async def first():
        log.append("first")
        return 1

    @child.step
    async def second(first):
        log.append("second")
        if not go["yes"]:
            raise rp.Halt("wait")
        return first + 1

    parent = rp.Reactor("parent", returns="sub")
    parent.compose("sub", child)
    with pytest.raises(rp.Halted) as info:
        await parent.run()
    go["yes"] = True
    assert 2 == await parent.resume(info.value.checkpoint)
    assert ["first", "second", "second"] == log


async def test_switch_picks_first_match_default_and_none():
    """switch runs the first matching case, else the default, else returns None."""
    r = rp.Reactor("route", inputs=["amount"], returns="route")
    big = rp.step(lambda amount: f"manual {amount}", name="manual")
    small = rp.step(lambda amount: f"auto {amount}", name="auto")
    r.switch("route", "amount", [(lambda a: a > 100, big), (lambda a: a > 10, small)])
    assert "manual 500" == await r.run({"amount": 500})
    assert "auto 50" == await r.run({"amount": 50})
    assert None is await r.run({"amount": 5})


async def test_switch_branch_may_be_a_reactor():
    """A switch case may run a whole reactor."""
    branch = rp.Reactor("double", inputs=["n"], returns="twice")
    branch.step(lambda n: 2 * n, name="twice")
    r = rp.Reactor("sw", inputs=["n"], returns="s")
    r.switch("s", "n", [(lambda n: True, branch)])
    assert 8 == await r.run({"n": 4})


async def test_recursive_countdown_with_new_steps():
    """A step returning NewSteps with its own name replaces itself: loops work."""
    seen = []
    r = rp.Reactor("countdown", inputs=["n"], returns="count")

    @rp.step
    def count(n):
        seen.append(n)
        if n == 0:
            return "liftoff"
        return rp.NewSteps(steps=[count.evolve(args={"n": rp.Value(n - 1)})])

    r.add(count)
    assert "liftoff" == await r.run({"n": 50})
    assert list(range(50, -1, -1)) == seen


async def test_new_steps_may_use_earlier_results_and_each_other():
    """New steps see earlier results and inputs and each other's results."""
    r = rp.Reactor("dyn", inputs=["base"], returns="grow")

    @r.step
    def seed(base):
        return base * 10

    @r.step
    async def grow(seed):
        @rp.step
        def plus_one(seed):
            return seed + 1

        @rp.step(name="grow")
        def final(plus_one, base):
            return plus_one + base

        return rp.NewSteps(steps=[plus_one, final])

    assert 23 == await r.run({"base": 2})


async def test_bad_new_step_fails_run_with_definition_error_and_undoes():
    """A new step that cannot be planned fails the run with a definition error; undo runs."""
    undone = []
    r = rp.Reactor("baddyn")

    @r.step
    def first():
        return 1

    @first.undo
    def undo_first(value):
        undone.append(value)

    @r.step
    def spawn(first):
        @rp.step
        def orphan(nothing_like_this):
            return 1

        return rp.NewSteps(steps=[orphan])

    with pytest.raises(rp.RunFailed) as info:
        await r.run()
    assert isinstance(info.value.exceptions[0], rp.DefinitionError)
    assert [1] == undone


def test_mermaid_expand_draws_children():
    """to_mermaid(expand=True) shows composed sub-reactors."""
    peak = Peak()
    text = nested(peak).to_mermaid(expand=True)
    assert "subgraph" in text
    assert "merge" in text


async def test_map_over_one_step_reactor_honours_limiter_and_later_undo():
    """A one-step child reactor is mapped under the limiter, and an undo added later runs."""
    peak = Peak()
    undone = []
    child = rp.Reactor("one", inputs=["x"], returns="work")

    @child.step
    async def work(x):
        await peak.work()
        if x == 5:
            raise ValueError("five")
        return x

    r = rp.Reactor("many", inputs=["xs"], returns="out")
    r.map("out", "xs", child, batch_size=4)
    assert [0, 1, 2, 3] == await r.run({"xs": range(4)}, max_concurrency=2)
    assert 2 == peak.peak

    @work.undo
    def forget(value):
        undone.append(value)

    with pytest.raises(rp.RunFailed):
        await r.run({"xs": range(8)}, max_concurrency=2)
    assert {0, 1, 2, 3} <= set(undone)


@pytest.mark.parametrize("child_kind", ["step", "reactor", "two-step reactor"])
async def test_one_at_a_time_runs_map_compose_and_switch_one_step_at_a_time(child_kind):
    """run(async_=False) runs composite children one step at a time too, without deadlock."""
    peak = Peak()

    async def work(x):
        await peak.work()
        return x

    if child_kind == "step":
        unit: rp.Step | rp.Reactor = rp.step(work)
    else:
        unit = rp.Reactor("child", inputs=["x"], returns="work")
        unit.add(rp.step(work))
        if child_kind == "two-step reactor":
            unit.add(rp.step(work, wait_for="work"), name="again", args={"x": rp.Input("x")})
    r = rp.Reactor("seq", inputs=["xs"])
    r.map("mapped", "xs", unit)
    r.compose("composed", nested(peak), args={"users": rp.Input("xs")})
    r.switch("switched", "xs", [(lambda xs: True, rp.step(lambda xs: len(xs), name="n"))])
    async with asyncio.timeout(10):
        result = await r.run({"xs": [1, 2, 3]}, async_=False)
    assert [1, 2, 3] == result["mapped"]
    assert [1, 2, 3] == result["composed"]
    assert 3 == result["switched"]
    assert 1 == peak.peak


async def test_halt_inside_a_switch_branch_resumes_inside_it():
    """A halt inside a switch branch halts the run; resume continues in that branch."""
    approved = {"yes": False}
    prepared = []
    branch = rp.Reactor("branch", inputs=["n"], returns="approve")

    @branch.step
    def prepare(n):
        prepared.append(n)
        return n

    @branch.step
    def approve(prepare):
        if not approved["yes"]:
            raise rp.Halt("needs approval")
        return prepare * 10

    r = rp.Reactor("routing", inputs=["n"], returns="routed")
    r.switch("routed", "n", [(lambda n: n > 0, branch)])
    with pytest.raises(rp.Halted) as info:
        await r.run({"n": 2})
    cp = rp.Checkpoint.from_json(info.value.checkpoint.to_json())
    approved["yes"] = True
    assert 20 == await r.resume(cp)
    assert [2] == prepared  # not prepared again: resumed inside the branch


async def test_halt_inside_new_steps_keeps_them_and_resume_continues_them():
    """A halt inside new steps halts the run; what they completed is kept, and resume
    continues them: neither the step nor the new steps that completed run again."""
    approved = {"yes": False}
    undone = []
    calls = []
    r = rp.Reactor("growing", inputs=["n"], returns="grow")

    @r.step
    def grow(n):
        calls.append("grow")

        @rp.step(name="extra")
        def extra(n):
            calls.append("extra")
            return n + 1

        @extra.undo
        def undo_extra(value):
            undone.append(value)

        @rp.step(name="grow")
        def again(extra):
            calls.append("again")
            if not approved["yes"]:
                raise rp.Halt("needs approval")
            return extra * 2

        return rp.NewSteps(steps=[extra, again])

    with pytest.raises(rp.Halted) as info:
        await r.run({"n": 2})
    assert [] == undone
    approved["yes"] = True
    assert 6 == await r.resume(info.value.checkpoint)
    assert ["grow", "extra", "again", "again"] == calls
    assert [] == undone


def test_map_cancelled_mid_batch_undoes_completed_elements():
    """Cancelling a run while a map batch is half done undoes the elements that finished."""
    undone = []
    child = rp.Reactor("el", inputs=["x"], returns="book")

    @child.step
    async def book(x):
        if x == 1:
            await asyncio.Event().wait()
        return x

    @book.undo
    def unbook(value):
        undone.append(value)

    r = rp.Reactor("trip", inputs=["xs"], returns="all")
    r.map("all", "xs", child)

    async def main():
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1):
                await r.run({"xs": [0, 1]})

    run_virtual(main())
    assert [0] == undone


def test_failure_undoes_a_composed_child_that_halted_inside():
    """When the parent fails while a composed child has halted, the child's completed steps
    are undone (the run fails: nothing will resume the child)."""
    undone = []
    child = rp.Reactor("child")

    @child.step
    async def booked():
        return "seat"

    @booked.undo
    def unbook(value):
        undone.append(value)

    @child.step
    async def wait_for_approval(booked):
        await asyncio.sleep(2)
        raise rp.Halt("approval")

    parent = rp.Reactor("parent")
    parent.compose("sub", child)

    @parent.step
    async def doomed():
        await asyncio.sleep(1)  # fails while the child runs; the child halts in the grace
        raise ValueError("failure")

    with pytest.raises(rp.RunFailed):
        run_virtual(parent.run(grace=10))
    assert ["seat"] == undone


async def test_map_elements_that_wait_overlap_each_in_the_task_that_started_it():
    """map over a plain step starts its elements inline; one that waits keeps the task that
    started it (asyncio.timeout inside it works) while the others go on and overlap."""
    n = 6
    barrier = asyncio.Barrier(n)
    seen: dict[int, tuple[object, object]] = {}
    r = rp.Reactor("fan", inputs=["xs"], returns="out")

    @rp.step
    async def element(x):
        if x % 2:
            return x  # finishes without waiting
        before = asyncio.current_task()
        await barrier.wait()
        seen[x] = (before, asyncio.current_task())
        try:
            async with asyncio.timeout(0):
                await asyncio.Event().wait()
        except TimeoutError:
            return -x

    r.map("out", "xs", element, batch_size=2 * n)
    async with asyncio.timeout(5):
        out = await r.run({"xs": range(2 * n)})
    assert [x if x % 2 else -x for x in range(2 * n)] == out  # even ones timed out
    assert all(before is after for before, after in seen.values())
    assert n == len({after for _, after in seen.values()})
    assert not {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def test_map_element_error_cancels_the_rest_of_its_batch():
    """The first failing element of a plain map cancels the elements still waiting."""
    waiting: list[int] = []
    cancelled: list[int] = []
    r = rp.Reactor("fail-fast", inputs=["xs"], returns="out")

    @rp.step
    async def element(x):
        if x == 3:
            await asyncio.sleep(0)
            raise ValueError("three")
        waiting.append(x)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(x)
            raise

    r.map("out", "xs", element)
    async with asyncio.timeout(5):
        with pytest.raises(rp.RunFailed) as info:
            await r.run({"xs": range(6)})
    assert ["three"] == [str(e) for e in info.value.exceptions]
    assert {0, 1, 2} <= set(waiting)  # started before the failure
    assert sorted(waiting) == sorted(cancelled)  # every one that waited was cancelled
    assert not {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def test_long_plain_map_batch_yields_to_the_loop():
    """A batch of elements that never wait still lets other tasks run every 64 elements."""
    r = rp.Reactor("quick", inputs=["xs"], returns="out")

    @rp.step
    async def double(x):
        return 2 * x

    r.map("out", "xs", double, batch_size=1000)
    async with LoopTurns() as turns:
        assert [2 * x for x in range(1000)] == await r.run({"xs": range(1000)})
    assert turns.during >= 1000 // 64


def test_cancelling_a_plain_map_mid_batch_leaves_no_task():
    """A run cancelled while a plain map's elements wait cancels them all, helpers too."""
    cancelled: list[int] = []
    r = rp.Reactor("stuck", inputs=["xs"], returns="out")

    @rp.step
    async def element(x):
        if x % 3 == 0:
            return x
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(x)
            raise

    r.map("out", "xs", element, batch_size=10)

    async def main():
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1):
                await r.run({"xs": range(10)})
        return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}

    assert set() == run_virtual(main())
    assert [1, 2, 4, 5, 7, 8] == sorted(cancelled)


@pytest.mark.parametrize("max_concurrency", [None, 1])
async def test_nested_map_sees_outer_arguments_and_undoes_every_cell_once(
    max_concurrency: int | None,
):
    """A map over a reactor that maps itself (Elixir's Reactor crashes on it, its #335 and
    #206): inner elements get the outer inputs wired by name, results nest in order, and
    when one cell fails every completed cell is undone exactly once."""
    undone: list[int] = []

    @rp.step
    async def cell(x, factor):
        if x == 99:
            raise ValueError("bad cell")
        return x * factor

    @cell.undo
    def uncell(value):
        undone.append(value)

    row = rp.Reactor("row", inputs=["row", "factor"], returns="cells")
    row.map("cells", "row", cell, as_="x")
    grid = rp.Reactor("grid", inputs=["grid", "factor"], returns="rows")
    grid.map("rows", "grid", row, as_="row")

    ok = await grid.run({"grid": [[1, 2], [3, 4]], "factor": 10}, max_concurrency=max_concurrency)
    assert [[10, 20], [30, 40]] == ok
    with pytest.raises(rp.RunFailed):
        await grid.run({"grid": [[1, 2], [3, 99]], "factor": 10}, max_concurrency=max_concurrency)
    assert len(undone) == len(set(undone))
    assert set(undone) <= {10, 20, 30}
    if max_concurrency == 1:  # one at a time: everything before the bad cell completed
        assert [30, 20, 10] == undone


def test_a_switch_case_that_is_not_a_pair_is_a_definition_error():
    """Each case must be a (predicate, step_or_reactor) pair; the error shows the fix."""
    r = rp.Reactor("r", inputs=["x"])
    with pytest.raises(rp.DefinitionError, match=r"each case is a \(predicate, step_or_reactor\)"):
        r.switch("s", "x", [lambda x: True])  # type: ignore[list-item]
    with pytest.raises(rp.DefinitionError, match="pair"):
        r.switch("s", "x", [(lambda x: True,)])  # type: ignore[list-item]


def test_explicit_sources_of_a_map_element_reach_this_reactors_steps():
    """A mapped step's args=rp.Result(outer) and wait_for=outer work as wiring by name does."""
    log: list[str] = []
    r = rp.Reactor("r", inputs=["xs"], returns="m")

    @r.step
    def outer():
        log.append("outer")
        return {"k": 10}

    @r.step
    def other():
        log.append("other")

    def add(x, y):
        log.append(f"add {x}")
        return x + y

    r.map("m", "xs", rp.step(add, args={"y": rp.Result("outer", "k")}, wait_for="other"))
    assert [11, 12] == r.run_sync({"xs": [1, 2]})
    assert log.index("other") < log.index("add 1")
    assert {"outer", "other", "xs"} == set(r.plan().structure["m"])


def test_explicit_sources_of_a_switch_branch_reach_this_reactors_steps():
    """A branch step's args=rp.Result(outer) is wired from the parent, checked at plan()."""
    r = rp.Reactor("r", inputs=["x"], returns="sw")

    @r.step
    def base():
        return {"v": 5}

    pos = rp.step(lambda x, b: x + b, name="pos", args={"b": rp.Result("base", "v")})
    r.switch("sw", "x", [(lambda x: x > 0, pos)])
    assert 6 == r.run_sync({"x": 1})
    bad = rp.Reactor("bad", inputs=["x"])
    bad.switch("sw", "x", [(bool, rp.step(lambda b: b, name="p", args={"b": rp.Result("nope")}))])
    with pytest.raises(rp.DefinitionError, match="'nope' matches no input or step"):
        bad.plan()


@pytest.mark.parametrize("value", [5, None, "abc"])
def test_map_over_an_input_that_cannot_be_iterated_fails_before_any_step(value):
    """map over an input that is 5 or None (known when the run starts) is an InputError
    naming the step and the input, before any step runs."""
    ran: list[str] = []
    r = rp.Reactor("r", inputs=["xs"], returns="m")

    @r.step
    def first():
        ran.append("first")

    r.map("m", "xs", rp.step(lambda x: x, name="ident"))
    with pytest.raises(rp.InputError, match=r"Step 'm': input 'xs' is .*which map cannot run over"):
        r.run_sync({"xs": value})
    assert [] == ran


def test_map_over_a_result_that_cannot_be_iterated_fails_the_map_step():
    """When what a map runs over is a step's result, the map step fails with a clear error."""
    r = rp.Reactor("r", returns="m")

    @r.step
    def count():
        return 5

    r.map("m", "count", rp.step(lambda x: x, name="ident"))
    with pytest.raises(rp.RunFailed) as info:
        r.run_sync()
    assert info.group_contains(TypeError, match="map 'm': what it maps over is 5")


def test_new_steps_whose_later_round_fails_undo_every_round():
    """A replacing step returns new steps twice; when the second round fails, the first
    round's completed step is undone too (it used to be forgotten)."""
    undone: list[int] = []

    def book(n):
        return n

    def unbook(value):
        undone.append(value)

    booking = rp.step(book)
    booking.undo(unbook)

    @rp.step
    def loop(n):
        if n == 2:
            raise ValueError("no more rooms")
        return rp.NewSteps(
            steps=[
                booking.evolve(name=f"book{n}", args={"n": rp.Value(n)}),
                loop.evolve(args={"n": rp.Value(n + 1)}, name="loop"),
            ]
        )

    r = rp.Reactor("rounds", inputs=["n"], returns="loop")
    r.add(loop)
    with pytest.raises(rp.RunFailed):
        run_virtual(r.run({"n": 0}))
    assert [1, 0] == undone


@pytest.mark.parametrize("plain", [True, False])
@pytest.mark.parametrize("cap", [None, 4])
def test_map_unordered_returns_results_as_elements_finish(plain: bool, cap: int | None):
    """map(..., ordered=False) returns results in the order elements finished (Elixir's
    strict_ordering?: false); the default keeps input order."""

    async def slow(x):
        await asyncio.sleep(1 / x)
        return x

    unit = rp.step(slow)
    if not plain:
        unit.undo(lambda value: None)  # not plain: each element is a child run
    r = rp.Reactor("m", inputs=["xs"], returns="m")
    r.map("m", "xs", unit, ordered=False)
    assert [8, 4, 2, 1] == run_virtual(r.run({"xs": [1, 2, 4, 8]}, max_concurrency=cap or None))
    ordered = rp.Reactor("o", inputs=["xs"], returns="m")
    ordered.map("m", "xs", rp.step(slow))
    assert [1, 2, 4, 8] == run_virtual(ordered.run({"xs": [1, 2, 4, 8]}))


def test_compose_async_false_runs_the_child_one_step_at_a_time():
    """compose(..., async_=False) runs that child one step at a time while the parent's
    other steps run alongside."""
    running = peak = 0

    async def busy():
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.1)
        running -= 1

    child = rp.Reactor("child")
    for k in range(4):
        child.add(rp.step(busy), name=f"c{k}")
    parent = rp.Reactor("parent")
    parent.compose("one_at_a_time", child, async_=False)
    run_virtual(parent.run())
    assert 1 == peak
    concurrent = rp.Reactor("concurrent")
    concurrent.compose("all_at_once", child)
    run_virtual(concurrent.run())
    assert 4 == peak


def _countdown(options: dict[str, object]) -> rp.Reactor:
    """A countdown whose step replaces itself; `options` on the replacement (an option
    makes each round a child run: the general way)."""

    @rp.step(name="count")
    async def count(n, base, seen):
        if n == 0:
            return f"liftoff from {base} after {len(seen)}"
        replacement = rp.step(count.fn, name="count", **options)  # type: ignore[arg-type]
        return rp.NewSteps(
            steps=[replacement.evolve(args={"n": rp.Value(n - 1), "seen": rp.Value([*seen, n])})]
        )

    r = rp.Reactor("countdown", inputs=["n", "base"], returns="count")
    r.add(count, args={"seen": rp.Value([])})
    return r


@pytest.mark.parametrize("n", [0, 1, 5, 40])
def test_a_step_replacing_itself_in_place_matches_the_general_way(n: int):
    """A plain replacement loops in place (no child run per round); it gives what the
    general way (a replacement with an option: one child run per round) gives, reading
    its arguments from its own args=, the previous round's arguments and the inputs."""
    in_place = run_virtual(_countdown({}).run({"n": n, "base": "pad"}))
    general = run_virtual(_countdown({"retries": 1}).run({"n": n, "base": "pad"}))
    assert in_place == general == f"liftoff from pad after {n}"


def test_a_long_in_place_loop_costs_no_depth():
    """Ten thousand rounds of a step replacing itself run in place (no nesting)."""

    @rp.step
    def count(n):
        if n == 0:
            return "liftoff"
        return rp.NewSteps(steps=[count.evolve(args={"n": rp.Value(n - 1)})])

    r = rp.Reactor("countdown", inputs=["n"], returns="count")
    r.add(count)
    assert "liftoff" == run_virtual(r.run({"n": 10_000}))


def test_an_async_in_place_loop_holds_one_slot_under_a_cap():
    """Under max_concurrency=1 an async replacement looping in place holds the one slot:
    nothing else runs beside it, and the limiter ends empty."""
    running = peak = 0
    limiter = rp.Limiter(1)

    async def busy():
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.1)
        running -= 1

    @rp.step
    async def loop(n):
        await busy()
        if n == 0:
            return "done"
        return rp.NewSteps(steps=[loop.evolve(args={"n": rp.Value(n - 1)})])

    r = rp.Reactor("r", inputs=["n"], returns="loop")
    r.add(loop)
    r.add(rp.step(busy), name="other")
    assert "done" == run_virtual(r.run({"n": 3}, max_concurrency=limiter))
    assert 1 == peak
    assert 0 == limiter.running


def test_a_step_that_returned_new_steps_is_undone_when_they_fail():
    """A step that did its work and returned new steps (not replacing itself) is complete
    when it returns, as in Elixir's Reactor: it is undone when its new steps fail."""
    undone: list[str] = []

    @rp.step
    def send_mail():
        raise ConnectionError("smtp down")

    r = rp.Reactor("r")

    @r.step
    def book():
        return rp.NewSteps("booking", steps=[send_mail])

    @book.undo
    def cancel(value):
        undone.append(value)

    with pytest.raises(rp.RunFailed):
        run_virtual(r.run())
    assert ["booking"] == undone


@pytest.mark.parametrize("sync", [True, False])
def test_a_map_element_returning_new_steps_gets_their_value(sync: bool):
    """A plain mapped step whose element returns rp.NewSteps gets the new steps' value, as
    a child run would (the fast path does not take the NewSteps as the value)."""
    if sync:

        @rp.step
        def double(x):
            return rp.NewSteps(steps=[rp.step(lambda: 2 * x, name="double")])

    else:

        @rp.step
        async def double(x):
            return rp.NewSteps(steps=[rp.step(lambda: 2 * x, name="double")])

    r = rp.Reactor("r", inputs=["xs"], returns="all")
    r.map("all", "xs", double)
    assert [2, 4] == run_virtual(r.run({"xs": [1, 2]}))
    assert [2, 4] == run_virtual(r.run({"xs": [1, 2]}, max_concurrency=2))


def test_a_map_element_halting_with_a_result_halts_the_map():
    """A plain map element raising rp.Halt(result=v) halts the map (the map's result is
    not v); resumed, the map runs again and returns its list."""
    calls: list[int] = []

    @rp.step
    def item(x):
        calls.append(x)
        if len(calls) == 1:
            raise rp.Halt("wait", result=f"r{x}")
        return f"r{x}"

    r = rp.Reactor("r", inputs=["xs"], returns="all")
    r.map("all", "xs", item)

    async def main():
        with pytest.raises(rp.Halted) as halted:
            await r.run({"xs": [1, 2]})
        return await r.resume(halted.value.checkpoint)

    assert ["r1", "r2"] == run_virtual(main())


def test_a_map_cancelled_as_its_elements_fail_retrieves_their_errors():
    """A map whose task is cancelled when its elements have just failed (before it woke
    to look at them) retrieves their errors: none is logged as never retrieved, no task
    is left, and the cancellation goes on."""

    async def main(turns: int) -> tuple[type[BaseException], list[str], set[asyncio.Task]]:
        lost: list[str] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, c: lost.append(c["message"]))
        go = asyncio.Event()

        @rp.step(timeout=10)  # an option: each element is a child run, in a task of its own
        async def element(x):
            await go.wait()
            raise ValueError(x)

        r = rp.Reactor("failing", inputs=["xs"], returns="out")
        r.map("out", "xs", element)
        task = asyncio.ensure_future(r.run({"xs": [0, 1]}))
        for _ in range(5):
            await asyncio.sleep(0)
        go.set()
        for _ in range(turns):  # the elements fail, then the run is cancelled
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises((asyncio.CancelledError, rp.RunFailed)) as ended:
            await task
        gc.collect()  # a task never retrieved says so when it is collected
        left = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
        return ended.type, lost, left

    outcomes = [run_virtual(main(turns)) for turns in range(16)]
    assert [] == [(k, lost) for k, (_, lost, _) in enumerate(outcomes) if lost]
    assert [] == [(k, left) for k, (_, _, left) in enumerate(outcomes) if left]
    assert asyncio.CancelledError is outcomes[0][0]
