"""Halting and resuming: checkpoints, timeouts, resume in another process."""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

import reactorpy as rp
from reactorpy.testing import run_virtual


def approval_reactor(log: list[str], approved: dict[str, bool]) -> rp.Reactor:
    r = rp.Reactor("approval", inputs=["doc"], returns="publish")

    @r.step
    async def draft(doc):
        log.append("draft")
        return f"draft({doc})"

    @r.step
    async def approve(draft):
        log.append("approve")
        if not approved["yes"]:
            raise rp.Halt("waiting for approval")
        return "approved"

    @r.step
    async def publish(draft, approve):
        log.append("publish")
        return f"{draft} {approve}"

    return r


async def test_halt_and_resume_without_redoing_work():
    """A halted run raises Halted; resume finishes it without re-running completed steps."""
    log: list[str] = []
    approved = {"yes": False}
    r = approval_reactor(log, approved)
    with pytest.raises(rp.Halted) as info:
        await r.run({"doc": "d"})
    assert "waiting for approval" == info.value.reason
    assert "approve" == info.value.step
    cp = info.value.checkpoint
    assert ("draft",) == cp.completed
    approved["yes"] = True
    assert "draft(d) approved" == await r.resume(cp)
    assert ["draft", "approve", "approve", "publish"] == log


async def test_halt_with_result_completes_the_step():
    """Halt(result=v) counts the step as completed with v; dependents get it on resume."""
    r = rp.Reactor("halt-result", returns="after")
    log = []

    @r.step
    async def pause():
        log.append("pause")
        raise rp.Halt("later", result=41)

    @r.step
    async def after(pause):
        return pause + 1

    with pytest.raises(rp.Halted) as info:
        await r.run()
    assert 42 == await r.resume(info.value.checkpoint)
    assert ["pause"] == log


@pytest.mark.parametrize("options", [{}, {"timeout": 10.0}], ids=["called", "attempts"])
def test_a_step_halting_with_a_result_is_undone_if_cancelled_while_its_halt_is_reported(
    options: dict[str, Any],
):
    """A step that halts with a result has completed: when its run is cancelled while an
    async hook hears of the halt, the step is undone with the rest (called directly, or
    through its attempts)."""
    undone: list[str] = []
    reporting = asyncio.Event()

    class SlowToHearOfHalts:
        async def on_event(self, event: rp.Event) -> None:
            if event.kind == "step_halt":
                reporting.set()
                await asyncio.sleep(1)

    r = rp.Reactor("halt-result", returns="book")

    async def book():
        raise rp.Halt("later", result="booked")

    r.add(rp.step(book, **options))

    @r.steps["book"].undo
    def unbook(value):
        undone.append(value)

    async def main():
        task = asyncio.ensure_future(r.run(middleware=[SlowToHearOfHalts()]))
        await reporting.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run_virtual(main())
    assert ["booked"] == undone


def test_a_step_halting_with_a_result_as_its_run_drains_is_not_run_again_on_resume():
    """The run's timeout halts it and its grace ends while an async hook hears of a step's
    halt with a result: the step completed, so resume goes on after it."""
    calls: list[str] = []

    class SlowToHearOfHalts:
        async def on_event(self, event: rp.Event) -> None:
            if event.kind == "step_halt":
                await asyncio.sleep(10)

    r = rp.Reactor("halt-result", returns="after")

    @r.step
    async def book():
        calls.append("book")
        raise rp.Halt("later", result="booked")

    @r.step
    async def after(book):
        return f"{book}!"

    async def main():
        with pytest.raises(rp.Halted) as halted:
            await r.run(timeout=0.5, grace=1.0, middleware=[SlowToHearOfHalts()])
        assert "timeout" == halted.value.reason
        return await r.resume(halted.value.checkpoint)

    assert "booked!" == run_virtual(main())
    assert ["book"] == calls


async def test_halt_lets_running_steps_finish_and_keeps_them():
    """Steps in flight when a halt comes finish and are kept; none re-runs on resume."""
    counts: dict[str, int] = {}
    release = asyncio.Event()
    r = rp.Reactor("inflight")

    async def count(name):
        counts[name] = counts.get(name, 0) + 1

    @r.step
    async def slow():
        await count("slow")
        await release.wait()
        return "slow"

    @r.step
    async def halter():
        await count("halter")
        release.set()
        if counts["halter"] == 1:
            raise rp.Halt("stop")

    @r.step
    async def later(slow, halter):
        await count("later")
        return "later"

    with pytest.raises(rp.Halted) as info:
        await r.run()
    assert {"slow"} == set(info.value.checkpoint.completed)
    result = await r.resume(info.value.checkpoint)
    assert {"slow": "slow", "halter": None, "later": "later"} == result
    assert {"slow": 1, "halter": 2, "later": 1} == counts


def test_run_timeout_halts_resumably_on_virtual_time():
    """run(timeout=) halts when the deadline passes; the checkpoint resumes."""
    r = rp.Reactor("deadline", returns="b")

    @r.step
    async def a():
        await asyncio.sleep(5)
        return 1

    @r.step
    async def b(a):
        await asyncio.sleep(5)
        return a + 1

    async def main():
        with pytest.raises(rp.Halted) as info:
            await r.run(timeout=7, grace=1)
        assert info.value.step is None
        assert "timeout" == info.value.reason
        assert ("a",) == info.value.checkpoint.completed
        return await r.resume(info.value.checkpoint)

    assert 2 == run_virtual(main())


async def test_failure_after_resume_undoes_steps_from_before_the_halt():
    """After a resumed run fails, steps completed before the halt are undone too."""
    undone = []
    fail = {"now": False}
    r = rp.Reactor("undo-across")

    @r.step
    def reserve():
        return "r"

    @reserve.undo
    def unreserve(value):
        undone.append(value)

    @r.step
    def gate(reserve):
        if not fail["now"]:
            raise rp.Halt("wait")
        raise ValueError("rejected")

    with pytest.raises(rp.Halted) as info:
        await r.run()
    fail["now"] = True
    with pytest.raises(rp.RunFailed):
        await r.resume(info.value.checkpoint)
    assert ["r"] == undone


async def test_a_resume_whose_on_run_start_hook_raises_undoes_steps_from_before_the_halt():
    """A resumed run that fails in its middleware's on_run_start, before any step, still
    undoes what its checkpoint completed, as when a step fails after the resume."""
    undone = []
    r = rp.Reactor("undo-across")

    @r.step
    def reserve():
        raise rp.Halt("wait", result="r")

    @reserve.undo
    def unreserve(value):
        undone.append(value)

    class Closed:
        def on_run_start(self, info: rp.RunInfo) -> None:
            raise ConnectionError("the tracer is gone")

    with pytest.raises(rp.Halted) as info:
        await r.run()
    with pytest.raises(rp.RunFailed, match="on_run_start"):
        await r.resume(info.value.checkpoint, middleware=[Closed()])
    assert ["r"] == undone


async def test_resume_twice_is_independent():
    """One checkpoint can be resumed twice; each resume is its own run."""
    log: list[str] = []
    r = approval_reactor(log, {"yes": False})
    with pytest.raises(rp.Halted) as info:
        await r.run({"doc": "x"})
    cp = pickle.loads(pickle.dumps(info.value.checkpoint))
    with pytest.raises(rp.Halted):
        await r.resume(cp)
    with pytest.raises(rp.Halted):
        await r.resume(cp)
    assert ["draft", "approve", "approve", "approve"] == log


async def test_resume_with_changed_reactor_names_the_difference():
    """Resuming with a reactor whose graph changed raises ResumeError naming what differs."""
    r = approval_reactor([], {"yes": False})
    with pytest.raises(rp.Halted) as info:
        await r.run({"doc": "x"})

    @r.step
    def audit(publish):
        return publish

    with pytest.raises(rp.ResumeError, match="steps added since: 'audit'"):
        await r.resume(info.value.checkpoint)


@pytest.mark.parametrize("use", ["resume", "undo"])
async def test_a_composed_child_that_changed_since_it_halted_inside_is_named(use: str):
    """The checkpoint of a child that halted inside is checked too, before anything runs."""
    undone: list[str] = []
    parent = rp.Reactor("parent", inputs=["doc"])

    @parent.step
    def first(doc):
        return doc

    @first.undo
    def unfirst(value):
        undone.append(value)

    parent.compose("approval", approval_reactor([], {"yes": False}), wait_for=["first"])
    with pytest.raises(rp.Halted) as info:
        await parent.run({"doc": "x"})
    child = parent.steps["approval"].children["approval"]  # type: ignore[attr-defined]

    @child.step
    def audit(publish):
        return publish

    message = "Inside step 'approval' of 'parent': .* steps added since: 'audit'"
    with pytest.raises(rp.ResumeError, match=message):
        await getattr(parent, use)(info.value.checkpoint)
    assert [] == undone


async def test_a_checkpoint_pickled_before_newer_fields_existed_still_resumes():
    """Unpickling gives fields a checkpoint's pickle lacks (``finished``, say, added
    later) their defaults, as for a run halted before an upgrade."""
    log: list[str] = []
    approved = {"yes": False}
    r = approval_reactor(log, approved)
    with pytest.raises(rp.Halted) as info:
        await r.run({"doc": "x"})
    state = info.value.checkpoint.__getstate__()
    del state["finished"], state["inner"]
    old = rp.Checkpoint.__new__(rp.Checkpoint)
    old.__setstate__(state)  # what pickle.loads does with that state
    assert (False, {}) == (old.finished, old.inner)
    record_state = rp.UndoRecord("s", 1, {}).__getstate__()
    del record_state["route"]
    record = rp.UndoRecord.__new__(rp.UndoRecord)
    record.__setstate__(record_state)
    assert record == rp.UndoRecord("s", 1, {})
    approved["yes"] = True
    assert "draft(x) approved" == await r.resume(pickle.loads(pickle.dumps(old)))


async def test_json_checkpoint_with_a_finished_composed_child_undoes_it_after_resume():
    """A composed child that finished before the halt: its undo records go through JSON
    as routes, and a failure after the resume (a new process, say) undoes its steps."""
    undone: list[str] = []
    child = rp.Reactor("child", inputs=["doc"], returns="stamp")

    @child.step
    def stamp(doc):
        return f"stamped {doc}"

    @stamp.undo
    def unstamp(value):
        undone.append(value)

    gate = {"open": False}
    r = rp.Reactor("parent", inputs=["doc"])
    r.compose("signed", child)

    @r.step
    def send(signed):
        if not gate["open"]:
            raise rp.Halt("wait")
        raise ConnectionError("mail down")

    with pytest.raises(rp.Halted) as info:
        await r.run({"doc": "d"})
    text = info.value.checkpoint.to_json()
    gate["open"] = True
    with pytest.raises(rp.RunFailed):
        await r.resume(rp.Checkpoint.from_json(text))
    assert ["stamped d"] == undone


async def test_checkpoint_json_round_trip():
    """A checkpoint of JSON-friendly values round-trips through JSON and resumes."""
    approved = {"yes": False}
    r = approval_reactor([], approved)
    with pytest.raises(rp.Halted) as info:
        await r.run({"doc": "j"})
    text = info.value.checkpoint.to_json()
    cp = rp.Checkpoint.from_json(text)
    assert cp == info.value.checkpoint
    approved["yes"] = True
    assert "draft(j) approved" == await r.resume(cp)


async def test_middleware_sees_halt():
    """on_run_halt receives the checkpoint and step_halt is an event."""
    seen = []

    class M:
        def on_run_halt(self, run, checkpoint):
            seen.append(("halt", run.reactor, checkpoint.reason))

        def on_event(self, event):
            if event.kind == "step_halt":
                seen.append(("event", event.step, event.value))

    r = approval_reactor([], {"yes": False})
    with pytest.raises(rp.Halted):
        await r.run({"doc": "m"}, middleware=[M()])
    assert [
        ("event", "approve", "waiting for approval"),
        ("halt", "approval", "waiting for approval"),
    ] == seen


def test_halt_in_one_process_resume_in_another(tmp_path: Path):
    """Halt in one Python process, pickle to a file, resume in a fresh process."""
    root = Path(__file__).resolve().parent.parent
    cp_file = tmp_path / "cp.pickle"
    script = textwrap.dedent(
        f"""
        import asyncio, pickle, sys
        import reactorpy as rp
        from tests.examples import approval
        if sys.argv[1] == "halt":
            try:
                asyncio.run(approval.reactor.run({{"doc": "contract"}}))
            except rp.Halted as halted:
                with open({str(cp_file)!r}, "wb") as f:
                    pickle.dump(halted.checkpoint, f)
                print("halted")
        else:
            approval.APPROVED.add("contract")
            with open({str(cp_file)!r}, "rb") as f:
                cp = pickle.load(f)
            print(asyncio.run(approval.reactor.resume(cp)))
        """
    )
    env_cmd = [sys.executable, "-c", script]
    first = subprocess.run([*env_cmd, "halt"], cwd=root, capture_output=True, text=True, timeout=60)
    assert "halted" == first.stdout.strip(), first.stderr
    second = subprocess.run(
        [*env_cmd, "resume"], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert "published contract (reviewed)" == second.stdout.strip(), second.stderr


async def test_resume_releases_results_like_a_fresh_run():
    """Results restored from a checkpoint are released once their consumers complete."""
    r = rp.Reactor("chain-resume", returns="d")
    gate = {"open": False}

    @r.step
    def a():
        return "a"

    @r.step
    def b(a):
        return a + "b"

    @r.step
    def c(b):
        if not gate["open"]:
            raise rp.Halt("wait")
        return b + "c"

    @r.step
    def d(c):
        return c + "d"

    with pytest.raises(rp.Halted) as info:
        await r.run()
    cp = info.value.checkpoint
    assert {"b": "ab"} == cp.results  # a's result was released: only c needs b
    gate["open"] = True
    assert "abcd" == await r.resume(cp)


def test_a_parent_step_failing_on_resume_before_the_composite_restarts_undoes_the_child():
    """A child halted inside compose; on resume a pending parent step fails before the
    composite runs again: the child's completed steps are undone all the same."""
    log: list[str] = []
    gate = {"fail": False}
    child = rp.Reactor("child", returns="wait")

    @child.step
    async def book():
        log.append("book")
        return 1

    @book.undo
    async def unbook(value):
        log.append("unbook")

    @child.step
    async def wait(book):
        log.append("wait")
        raise rp.Halt("approval")

    parent = rp.Reactor("parent")

    @parent.step
    async def other():
        if gate["fail"]:
            raise ValueError("boom")
        await asyncio.sleep(1)

    parent.compose("sub", child)

    async def main():
        with pytest.raises(rp.Halted) as halted:
            await parent.run(grace=0.5)
        gate["fail"] = True
        with pytest.raises(rp.RunFailed):
            await parent.resume(halted.value.checkpoint)

    run_virtual(main())
    assert ["book", "wait", "unbook"] == log


@pytest.mark.parametrize("how", ["pickle", "json"])
def test_a_halt_two_composes_down_resumes_through_pickle_and_json(how: str):
    """A checkpoint halted inside a composed reactor that composes another goes through
    pickle or JSON, resumes, and when the resumed run fails the grandchild's step is
    undone (issue 12: KeyError('sub.book'))."""
    log: list[str] = []
    calls = {"n": 0}
    grand = rp.Reactor("grand", returns="wait")

    @grand.step
    async def book():
        return "B"

    @book.undo
    def unbook(value):
        log.append(f"unbook {value}")

    @grand.step
    async def wait(book):
        calls["n"] += 1
        if calls["n"] == 1:
            raise rp.Halt("approval")
        raise ValueError("refused")

    mid = rp.Reactor("mid", returns="inner")
    mid.compose("inner", grand)
    top = rp.Reactor("top", returns="sub")
    top.compose("sub", mid)

    async def main():
        with pytest.raises(rp.Halted) as halted:
            await top.run()
        checkpoint = halted.value.checkpoint
        if how == "pickle":
            again = pickle.loads(pickle.dumps(checkpoint))
        else:
            again = rp.Checkpoint.from_json(checkpoint.to_json())
        with pytest.raises(rp.RunFailed):
            await top.resume(again)

    run_virtual(main())
    assert ["unbook B"] == log


class Client:
    """Like an httpx.AsyncClient: holds a lock, so it cannot be pickled."""

    def __init__(self) -> None:
        self.lock = threading.Lock()


def halting_with(client_as_input: bool) -> rp.Reactor[Any]:
    r = rp.Reactor("fetcher", inputs=["url", "client"] if client_as_input else ["url"])

    @r.step
    def connect(url: str) -> Client:
        return Client()

    @connect.undo
    def disconnect(client: Client) -> None:
        pass

    @r.step
    def wait(connect: Client) -> None:
        raise rp.Halt("later")

    return r


async def test_a_checkpoint_that_cannot_pickle_names_the_input_and_points_to_context():
    """A client passed as an input: pickling the checkpoint names the input and context=."""
    r = halting_with(client_as_input=True)
    with pytest.raises(rp.Halted) as info:
        await r.run({"url": "u", "client": Client()})
    with pytest.raises(TypeError) as error:
        pickle.dumps(info.value.checkpoint)
    message = str(error.value)
    assert message.startswith("A checkpoint of 'fetcher' cannot be pickled: input 'client'")
    assert "(a Client) cannot be saved (TypeError: cannot pickle '_thread.lock' object)" in message
    assert "run(context={...})" in message
    assert isinstance(error.value.__cause__, TypeError)


async def test_a_checkpoint_that_cannot_pickle_names_the_result():
    """A result kept for a pending step or an undo is named, with its step."""
    r = halting_with(client_as_input=False)
    with pytest.raises(rp.Halted) as info:
        await r.run({"url": "u"})
    with pytest.raises(TypeError, match="the result of step 'connect' \\(a Client\\)"):
        pickle.dumps(info.value.checkpoint)
    with pytest.raises(TypeError, match="cannot be exported to JSON: the result of step 'connect'"):
        info.value.checkpoint.to_json()


async def test_the_context_does_not_go_into_checkpoints_and_comes_back_on_resume():
    """What the docs recommend: a client in context= halts and resumes with a new one."""
    r = rp.Reactor("ctx", inputs=["url"], returns="fetch")

    @r.step
    def fetch(url: str, ctx: rp.Context) -> str:
        if ctx.attempt == 1 and "resumed" not in ctx.data:
            raise rp.Halt("later")
        return f"{url} via {type(ctx.data['client']).__name__}"

    with pytest.raises(rp.Halted) as info:
        await r.run({"url": "u"}, context={"client": Client()})
    saved = pickle.loads(pickle.dumps(info.value.checkpoint))
    resumed = await r.resume(saved, context={"client": Client(), "resumed": True})
    assert "u via Client" == resumed


async def test_a_step_running_alone_that_halts_with_a_result_starts_nothing_more() -> None:
    """An ``async_=False`` step halting with a result completes, and what it held back
    does not start once the run halts (it started, and completed before the halting step
    was recorded, so undo went oldest first)."""
    undone: list[str] = []
    r = rp.Reactor("alone", inputs=["x"])

    @r.step(async_=False, retries=1)  # (run through its attempts)
    def first(x: int) -> int:
        raise rp.Halt("later", result=x)

    @r.step
    def second(x: int) -> int:
        return x

    for s in (first, second):
        s.undo(lambda value, name=s.name: undone.append(name))

    with pytest.raises(rp.Halted) as halted:
        await r.run({"x": 1})
    assert halted.value.checkpoint.completed == ("first",)
    await r.undo(halted.value.checkpoint)
    assert undone == ["first"]
