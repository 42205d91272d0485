"""Undoing a run after the fact: `Reactor.run_reversible`, `Reversible.undo`, `Reactor.undo`."""

from __future__ import annotations

import asyncio
import json
import pickle
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

import reactorpy as rp
from reactorpy.testing import Recorder, run_virtual
from tests.halting import halting
from tests.strategies import dags
from tests.test_properties import Harness


def checkout(log: list[tuple[Any, ...]]) -> rp.Reactor:
    """reserve (async) -> charge (plain def) -> ship; both of the first two undoable."""
    r = rp.Reactor("checkout", inputs=["order_id"], returns="ship")

    @r.step
    async def reserve(order_id):
        return f"stock-{order_id}"

    @reserve.undo
    def release(value, order_id):
        log.append(("release", value, order_id))

    @r.step
    def charge(reserve, order_id):
        return f"charge-{order_id}"

    @charge.undo
    async def refund(value):
        log.append(("refund", value))

    @r.step
    async def ship(charge):
        return f"shipped {charge}"

    return r


def test_run_reversible_returns_the_result_and_undoes_newest_first_once():
    """The result is run()'s; undo() reverses completed undoable steps newest first, with
    their results and arguments, and refuses a second call."""
    log: list[tuple[Any, ...]] = []
    r = checkout(log)

    async def main() -> rp.Reversible:
        done = await r.run_reversible({"order_id": 7})
        assert [] == log  # nothing undone until asked
        await done.undo()
        with pytest.raises(rp.ReactorError, match="already undone"):
            await done.undo()
        return done

    done = run_virtual(main())
    assert "shipped charge-7" == done.result
    assert done.undone
    assert [("refund", "charge-7"), ("release", "stock-7", 7)] == log


def test_checkpoint_of_a_finished_run_undoes_after_pickle_and_json():
    """The checkpoint carries the undo stack, not results, and survives pickle and JSON."""
    log: list[tuple[Any, ...]] = []
    r = checkout(log)
    done = run_virtual(r.run_reversible({"order_id": 1}))
    checkpoint = done.checkpoint
    assert checkpoint.finished
    assert {} == checkpoint.results
    assert ("reserve", "charge", "ship") == checkpoint.completed
    assert ["reserve", "charge"] == [u.step for u in checkpoint.undo_stack]

    run_virtual(r.undo(pickle.loads(pickle.dumps(checkpoint))))
    assert [("refund", "charge-1"), ("release", "stock-1", 1)] == log
    log.clear()
    run_virtual(r.undo(rp.Checkpoint.from_json(checkpoint.to_json())))
    assert [("refund", "charge-1"), ("release", "stock-1", 1)] == log


def test_a_finished_checkpoint_cannot_be_resumed_nor_undone_by_another_reactor():
    r = checkout([])
    done = run_virtual(r.run_reversible({"order_id": 1}))
    with pytest.raises(rp.ResumeError, match="completed: there is nothing to resume"):
        run_virtual(r.resume(done.checkpoint))
    other = rp.Reactor("other")
    other.add(rp.step(lambda: 1, name="one"))
    with pytest.raises(rp.ResumeError, match="of reactor 'checkout', not 'other'"):
        run_virtual(other.undo(done.checkpoint))
    with pytest.raises(TypeError, match="takes a Checkpoint"):
        run_virtual(r.undo(done))  # type: ignore[arg-type]


def test_undo_errors_are_collected_and_the_other_undos_still_run():
    r = rp.Reactor("undoerr")
    undone = []

    @r.step
    def a():
        return "a"

    @a.undo
    def undo_a(value):
        undone.append("a")

    @r.step
    async def b(a):
        return "b"

    @b.undo
    def undo_b(value):
        raise OSError("cannot undo b")

    done = run_virtual(r.run_reversible())
    message = r"undoing reactor 'undoerr' failed in step\(s\) b"
    with pytest.raises(rp.RunFailed, match=message) as info:
        run_virtual(done.undo())
    assert ["a"] == undone
    [error] = info.value.exceptions
    assert isinstance(error, OSError)
    assert any("undo of step 'b'" in note for note in error.__notes__)


def test_a_failing_run_reversible_raises_as_run_does_after_its_own_undo():
    log: list[tuple[Any, ...]] = []
    r = checkout(log)

    @r.step
    async def notify(ship):
        raise RuntimeError("mail down")

    with pytest.raises(rp.RunFailed):
        run_virtual(r.run_reversible({"order_id": 2}))
    assert [("refund", "charge-2"), ("release", "stock-2", 2)] == log


def composites(undone: list[str]) -> rp.Reactor:
    """A reactor whose undoable steps sit inside compose, map, switch, recurse and around,
    two levels deep for compose."""

    def undoable(name: str) -> rp.Step[..., Any]:
        s = rp.step(lambda x: f"{name}({x})", name=name)
        s.undo(lambda value: undone.append(value))
        return s

    leaf = rp.Reactor("leaf", inputs=["x"], returns="inner")
    leaf.add(undoable("inner"))
    middle = rp.Reactor("middle", inputs=["x"], returns="deep")
    middle.compose("deep", leaf)
    again = rp.Reactor("again", inputs=["x"], returns="twice")
    again.add(rp.step(lambda x: {"x": x}, name="twice"))
    again.steps["twice"].undo(lambda value: undone.append(f"twice({value['x']})"))

    async def wrapper(run_child, inputs):
        return await run_child()

    r = rp.Reactor("parent", inputs=["x", "xs"])
    r.add(undoable("first"))
    r.compose("composed", middle, args={"x": rp.Result("first")})
    r.map("mapped", "xs", undoable("each"), wait_for=["composed"])
    r.switch(
        "switched",
        rp.Result("first"),
        [(lambda v: True, undoable("branch"))],
        args={"x": rp.Input("x")},
        wait_for=["mapped"],
    )
    r.recurse("looped", again, max_iterations=2, wait_for=["switched"])
    r.around("wrapped", leaf, wrapper, wait_for=["looped"])
    return r


def test_composed_mapped_switched_repeated_and_wrapped_steps_are_undone_with_their_parent():
    """Steps inside compose (two levels), map, switch, recurse and around are undone too,
    newest first, named as in the parent run."""
    undone: list[str] = []
    r = composites(undone)
    recorder = Recorder()

    async def main() -> None:
        done = await r.run_reversible({"x": 1, "xs": [10, 20]})
        await done.undo(middleware=[recorder])

    run_virtual(main())
    assert [
        "inner(1)",
        "twice(1)",
        "twice(1)",
        "branch(1)",
        "each(20)",
        "each(10)",
        "inner(first(1))",
        "first(1)",
    ] == undone
    assert [
        "wrapped.inner",
        "looped.[1].twice",
        "looped.[0].twice",
        "switched.branch.branch",
        "mapped.[1].each",
        "mapped.[0].each",
        "composed.deep.inner",
        "first",
    ] == [e.step for e in recorder.events if e.kind == "undo_complete"]


def test_a_finished_runs_checkpoint_with_composed_steps_undoes_from_json():
    """Records of steps inside composite steps carry a route to their step: a checkpoint
    loaded from JSON (no callbacks in it) undoes them as the run itself would."""
    in_process: list[str] = []
    run_virtual(run_virtual(composites(in_process).run_reversible({"x": 1, "xs": [7]})).undo())
    from_json: list[str] = []
    r = composites(from_json)
    done = run_virtual(r.run_reversible({"x": 1, "xs": [7]}))
    routes = [u.route for u in done.checkpoint.undo_stack]
    assert ("composed", "composed", "deep", "deep", "inner") in routes
    assert ("mapped", "mapped", "each") in routes
    assert ("switched", "0: branch", "branch") in routes
    assert ("looped", "repeated", "twice") in routes
    assert ("wrapped", "wrapped", "inner") in routes
    run_virtual(r.undo(rp.Checkpoint.from_json(done.checkpoint.to_json())))
    assert in_process == from_json
    assert len(from_json) == 7  # first, inner, each, branch, twice x2, inner
    assert "first(1)" == from_json[-1]


def test_a_checkpoint_with_composed_records_pickles_even_with_local_callbacks():
    """A composed step's record pickles without its callback (a lambda here, which cannot
    pickle): undo finds it again along the route."""
    in_process: list[str] = []
    run_virtual(run_virtual(composites(in_process).run_reversible({"x": 1, "xs": [7]})).undo())
    pickled: list[str] = []
    r = composites(pickled)
    done = run_virtual(r.run_reversible({"x": 1, "xs": [7]}))
    assert any(u.undo is not None for u in done.checkpoint.undo_stack)
    restored = pickle.loads(pickle.dumps(done.checkpoint))
    assert all(u.undo is None for u in restored.undo_stack)
    run_virtual(r.undo(restored))
    assert in_process == pickled


def test_a_route_that_no_longer_leads_to_an_undo_is_an_undo_error():
    undone: list[str] = []
    r = composites(undone)
    done = run_virtual(r.run_reversible({"x": 1, "xs": []}))
    data = json.loads(done.checkpoint.to_json())
    for record in data["undo_stack"]:
        if len(record) == 4 and record[3][0] == "composed":
            record[3][-1] = "renamed"
    with pytest.raises(rp.RunFailed) as info:
        run_virtual(r.undo(rp.Checkpoint.from_json(data)))
    [error] = info.value.exceptions
    assert isinstance(error, LookupError)
    assert "no undo callback found" in str(error)
    assert "first(1)" in undone  # the other undos still ran


def test_new_steps_records_cannot_go_to_json_but_undo_in_process():
    undone: list[Any] = []

    @rp.step
    def made(x):
        return x

    made.undo(lambda value: undone.append(value))
    r = rp.Reactor("gen", inputs=["x"])

    @r.step
    def gen(x):
        return rp.NewSteps(x, steps=[made])

    done = run_virtual(r.run_reversible({"x": 3}))
    with pytest.raises(TypeError, match=r"new steps \(rp.NewSteps\) cannot be exported"):
        done.checkpoint.to_json()
    run_virtual(done.undo())
    assert [3] == undone


def test_undo_a_halted_run_including_a_child_that_halted_inside():
    """Giving up on a halted run: what it completed is undone, the child's steps first."""
    log: list[str] = []
    r = rp.Reactor("parent", inputs=["x"])

    @r.step
    async def start(x):
        log.append("do start")
        return x

    @start.undo
    async def unstart(value):
        log.append("undo start")

    r.compose("approval", halting("child", log), args={"x": rp.Result("start")})

    with pytest.raises(rp.Halted) as info:
        run_virtual(r.run({"x": 5}))
    checkpoint = pickle.loads(pickle.dumps(info.value.checkpoint))
    assert ["do start", "do first"] == log
    run_virtual(r.undo(checkpoint))
    assert ["undo first", "undo start"] == log[2:]


@pytest.mark.parametrize("via_json", [False, True])
def test_undo_of_a_halted_run_goes_newest_first_across_levels(via_json: bool):
    """A parent step that completed during the grace period, after a composed child
    halted, is newer than the child's steps: it is undone first."""
    order: list[str] = []
    parent = rp.Reactor("parent", inputs=["x"])

    @parent.step
    def early(x):
        order.append("do early")
        return x

    early.undo(lambda value: order.append("undo early"))
    parent.compose("comp", halting("child", order, delay=1), wait_for=["early"])

    @parent.step
    async def slow(x):
        await asyncio.sleep(2)  # completes in the grace period, after the child halted
        order.append("do slow")
        return x

    slow.undo(lambda value: order.append("undo slow"))

    with pytest.raises(rp.Halted) as info:
        run_virtual(parent.run({"x": 1}))
    checkpoint = info.value.checkpoint
    if via_json:
        checkpoint = rp.Checkpoint.from_json(checkpoint.to_json())
    assert ["do early", "do first", "do slow"] == order
    run_virtual(parent.undo(checkpoint))
    assert ["undo slow", "undo first", "undo early"] == order[3:]


def test_undo_halted_inside_a_switch_branch():
    log: list[str] = []
    r = rp.Reactor("picker", inputs=["x"])
    r.switch("pick", "x", [(lambda x: x > 0, halting("branch", log))])
    with pytest.raises(rp.Halted) as info:
        run_virtual(r.run({"x": 3}))
    run_virtual(r.undo(info.value.checkpoint))
    assert ["do first", "undo first"] == log


def test_middleware_sees_the_undo_as_a_run_of_undo_events():
    log: list[tuple[Any, ...]] = []
    r = checkout(log)
    calls: list[Any] = []

    class Hooks:
        def on_run_start(self, run: rp.RunInfo) -> None:
            calls.append(("start", run.reactor))

        def on_event(self, event: rp.Event) -> None:
            calls.append((event.kind, event.step))

        def on_run_complete(self, run: rp.RunInfo, result: Any) -> None:
            calls.append(("complete", result))

    async def main() -> None:
        done = await r.run_reversible({"order_id": 3})
        await done.undo(middleware=[Hooks()], context={"why": "customer cancelled"})

    run_virtual(main())
    assert [
        ("start", "checkout"),
        ("undo_start", "charge"),
        ("undo_complete", "charge"),
        ("undo_start", "reserve"),
        ("undo_complete", "reserve"),
        ("complete", None),
    ] == calls


def test_undo_finishes_when_the_caller_is_cancelled():
    """Undo is shielded: cancelling the caller lands after every undo ran."""
    undone: list[str] = []
    r = rp.Reactor("slow_undo")

    @r.step
    def a():
        return "a"

    @a.undo
    async def undo_a(value):
        await asyncio.sleep(10)
        undone.append(value)

    @r.step
    def b(a):
        return "b"

    @b.undo
    async def undo_b(value):
        await asyncio.sleep(10)
        undone.append(value)

    async def main() -> None:
        done = await r.run_reversible()
        task = asyncio.create_task(done.undo())
        await asyncio.sleep(5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert ["b", "a"] == undone
        assert {asyncio.current_task()} == asyncio.all_tasks()

    run_virtual(main())


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dag=dags(behaviours=("ok", "ok", "retry_then_ok", "continue", "undo_error")))
def test_undo_of_random_finished_runs(dag: Any) -> None:
    """Every completed undoable step is undone exactly once, newest completion first; the
    undo errors, and only they, are raised; no task is left behind."""
    h = Harness(dag)

    async def main() -> BaseException | None:
        done = await h.reactor.run_reversible()
        assert [] == h.undone
        try:
            await done.undo()
        except rp.RunFailed as failed:
            return failed
        finally:
            assert {asyncio.current_task()} == asyncio.all_tasks()
        return None

    failed = run_virtual(main())
    assert [i for i in reversed(h.completed) if h.undoable[i]] == h.undone
    raised = list(failed.exceptions) if isinstance(failed, rp.RunFailed) else []
    assert sorted(map(id, h.raised)) == sorted(map(id, raised))


def test_undo_refused_for_a_changed_reactor_leaves_the_run_undoable():
    log: list[tuple[Any, ...]] = []
    r = checkout(log)
    done = run_virtual(r.run_reversible({"order_id": 5}))
    r.add(rp.step(lambda ship: ship, name="extra"))
    with pytest.raises(rp.ResumeError, match="steps added since: 'extra'"):
        run_virtual(done.undo())
    assert not done.undone  # nothing was undone: it may be tried again
    assert [] == log
