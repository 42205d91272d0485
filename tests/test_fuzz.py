"""Fault injection: random nested reactors with random faults keep the saga's promise
(``tests/fuzzing.py`` says what is generated and what is checked), and the bugs it found,
each a named regression test that flips when it is fixed.

``python benchmarks/fuzz.py --cases 10000 --jobs 2`` runs the same cases at scale.
"""

from __future__ import annotations

import asyncio
import dataclasses
import pickle
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import reactorpy as rp
from tests import fuzzing as fz


@st.composite
def cases(draw: st.DrawFn) -> fz.CaseSpec:
    return fz.generate(fz.DrawChooser(draw), fz.HYPOTHESIS)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(case=cases())
def test_the_saga_holds_under_random_faults(case: fz.CaseSpec) -> None:
    """Every completed undoable step is undone exactly once when a run fails, is cancelled
    or is given up, never when it succeeds, newest first; no step re-runs on resume; every
    value is the right one; caps hold, the limiter is released, no task is left, only
    RunFailed/Halted/CancelledError escape, and every run ends (known bugs aside)."""
    assume(not fz.skipped(case))
    report = fz.run_case(case)
    assert [] == [str(v) for v in fz.unexplained(report)], fz.describe(case)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_case_is_replayed_from_its_seed(seed: int) -> None:
    """The same seed gives the same case and the same outcome (what --replay relies on)."""
    first, second = fz.run_seed(seed), fz.run_seed(seed)
    assert fz.describe(first.spec) == fz.describe(second.spec)
    assert first.outcomes == second.outcomes
    assert sorted(v.kind for v in first.violations) == sorted(v.kind for v in second.violations)


def test_the_known_bugs_are_listed_once_with_their_tests() -> None:
    """Each known bug has a regression test here named after it."""
    names = [b.name for b in fz.KNOWN_BUGS]
    assert len(names) == len(set(names))
    tests = {name for name in globals() if name.startswith("test_known_")}
    assert all(any(t.startswith(f"test_known_{n}") for t in tests) for n in names)
    assert all(any(t.startswith(f"test_known_{n}") for n in names) for t in tests)


# ------------------------------------------------------------------ known bugs, one each
def run(main: Any) -> Any:
    """Run ``main()`` on the virtual clock; a run that does not end fails the test."""
    return fz.run_bounded(main)


def xfail(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=reason)


@dataclasses.dataclass(frozen=True)
class Declined(Exception):
    code: str


def test_fixed_wait_for_releases_early() -> None:
    """A step that only waits for another does not make a real reader get None."""
    r = rp.Reactor("r", returns="use")

    @r.step
    async def doable() -> str:
        return "mcfly"

    @r.step(wait_for="doable")
    async def waiter() -> str:
        return "w"

    @r.step
    async def use(doable: str) -> str:
        return doable

    assert "mcfly" == run(lambda: r.run())


def test_fixed_exception_refusing_notes() -> None:
    """A step raising an exception that refuses notes fails the run; it does not hang."""
    r = rp.Reactor("r")

    @r.step
    async def charge() -> None:
        raise Declined("insufficient funds")

    async def main() -> None:
        with pytest.raises(rp.RunFailed):
            await r.run()

    run(main)


def test_fixed_sync_hook_raising_again() -> None:
    """A sync on_event hook that raises on every event fails the run; it does not hang."""
    r = rp.Reactor("r")

    @r.step
    async def a() -> int:
        return 1

    class ClosedPipe:
        def on_event(self, event: rp.Event) -> None:
            raise BrokenPipeError("closed pipe")

    async def main() -> None:
        with pytest.raises(rp.RunFailed):
            await r.run(middleware=[ClosedPipe()])

    run(main)


def test_fixed_new_steps_one_at_a_time() -> None:
    """New steps run under run(async_=False) with a cap of one."""
    r = rp.Reactor("r", returns="spawn")

    @rp.step
    async def new() -> str:
        return "new"

    @r.step
    async def spawn() -> rp.NewSteps:
        return rp.NewSteps("spawned", steps=[new])

    assert "spawned" == run(lambda: r.run(async_=False, max_concurrency=1))


def test_fixed_new_steps_one_at_a_time_from_a_step_that_runs_alone() -> None:
    """New steps of an async_=False step inside a composed reactor run under a cap of one
    while another step runs."""

    @rp.step
    async def audit() -> str:
        return "audited"

    child = rp.Reactor("child", inputs=["x"], returns="spawn")

    @child.step
    async def fetch(x: int) -> int:
        return x

    @child.step(async_=False)
    def spawn(x: int) -> rp.NewSteps:
        return rp.NewSteps("spawned", steps=[audit])

    r = rp.Reactor("r", inputs=["x"], returns="sub")
    r.compose("sub", child)

    @r.step
    async def other(x: int) -> None:
        await asyncio.sleep(2)

    assert "spawned" == run(lambda: r.run({"x": 1}, max_concurrency=1))


def test_fixed_cancelled_while_compensating() -> None:
    """A fallback a compensate made while the run was being cancelled is undone."""
    undone: list[str] = []
    r = rp.Reactor("r", returns="pay")

    @r.step
    async def pay() -> str:
        raise ConnectionError("bank down")

    @pay.compensate
    async def use_voucher(error: BaseException) -> rp.Continue:
        await asyncio.sleep(1)
        return rp.Continue("voucher")

    @pay.undo
    def refund(value: str) -> None:
        undone.append(value)

    async def main() -> None:
        task = asyncio.ensure_future(r.run())
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main)
    assert ["voucher"] == undone


def test_fixed_halted_child_not_undone() -> None:
    """A composed child's completed steps are undone when the parent fails after resume."""
    undone: list[str] = []
    gate = {"open": False}
    child = rp.Reactor("child", inputs=["x"], returns="wait")

    @child.step
    def book(x: int) -> str:
        return f"booking {x}"

    @book.undo
    def cancel(value: str) -> None:
        undone.append(value)

    @child.step
    async def wait(book: str) -> str:
        if not gate["open"]:
            raise rp.Halt("approval")
        await asyncio.sleep(1)
        return book

    r = rp.Reactor("r", inputs=["x"])

    @r.step
    async def check(x: int) -> None:
        if gate["open"]:
            raise ValueError("fraud")  # on resume: fails as the composite restarts
        await asyncio.sleep(1)  # the child halts meanwhile, holding its booking
        raise rp.Halt("check later")

    r.compose("sub", child)

    async def main() -> None:
        with pytest.raises(rp.Halted) as halted:
            await r.run({"x": 1})
        gate["open"] = True
        with pytest.raises(rp.RunFailed):
            await r.resume(halted.value.checkpoint)

    run(main)
    assert ["booking 1"] == undone


def test_fixed_nested_checkpoint_keyerror() -> None:
    """A checkpoint that halted inside a composed reactor that composes another resumes
    after pickling."""
    gate = {"open": False}
    inner = rp.Reactor("inner", inputs=["x"], returns="book")

    @inner.step
    def book(x: int) -> str:
        return f"booking {x}"

    @book.undo
    def cancel(value: str) -> None:
        pass

    middle = rp.Reactor("middle", inputs=["x"], returns="wait")
    middle.compose("sub", inner)

    @middle.step
    def wait(sub: str) -> str:
        if not gate["open"]:
            raise rp.Halt("approval")
        return sub

    r = rp.Reactor("r", inputs=["x"], returns="mid")
    r.compose("mid", middle)

    async def main() -> str:
        with pytest.raises(rp.Halted) as halted:
            await r.run({"x": 1})
        gate["open"] = True
        checkpoint = pickle.loads(pickle.dumps(halted.value.checkpoint))
        return await r.resume(checkpoint)  # type: ignore[no-any-return]

    assert "booking 1" == run(main)


def test_fixed_undo_raising_cancelled() -> None:
    """An undo that raises CancelledError is an undo error; the other undos still run."""
    undone: list[str] = []
    r = rp.Reactor("r")

    @r.step
    def first() -> str:
        return "first"

    @first.undo
    def undo_first(value: str) -> None:
        undone.append(value)

    @r.step
    def second(first: str) -> str:
        return "second"

    @second.undo
    def undo_second(value: str) -> None:
        raise asyncio.CancelledError

    @r.step
    def third(second: str) -> None:
        raise ValueError("boom")

    async def main() -> None:
        with pytest.raises(rp.RunFailed):
            await r.run()

    run(main)
    assert ["first"] == undone


def test_fixed_no_ending_when_cancelled() -> None:
    """A run cancelled while it undoes still ends with on_run_error (spans get closed)."""
    ends: list[str] = []
    r = rp.Reactor("r")

    @r.step
    def book() -> str:
        return "booking"

    @book.undo
    async def cancel(value: str) -> None:
        await asyncio.sleep(1)

    @r.step
    def pay(book: str) -> None:
        raise ValueError("declined")

    class Spans:
        def on_run_error(self, info: rp.RunInfo, error: BaseException) -> None:
            ends.append(type(error).__name__)

    async def main() -> None:
        task = asyncio.ensure_future(r.run(middleware=[Spans()]))
        await asyncio.sleep(0.5)  # undoing book
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main)
    assert ["CancelledError"] == ends


def test_fixed_signals_in_groups() -> None:
    """A step whose TaskGroup raises only rp.Halt halts the run."""
    r = rp.Reactor("r")

    @r.step
    async def gather() -> None:
        async with asyncio.TaskGroup() as tg:

            async def wait() -> None:
                raise rp.Halt("later")

            tg.create_task(wait())

    async def main() -> None:
        with pytest.raises(rp.Halted):
            await r.run()

    run(main)


def test_fixed_step_raising_cancelled() -> None:
    """A step whose awaited future was cancelled by someone else fails with RunFailed."""
    r = rp.Reactor("r")

    @r.step
    async def fetch() -> None:
        future = asyncio.get_running_loop().create_future()
        future.cancel()
        await future

    async def main() -> None:
        with pytest.raises(rp.RunFailed):
            await r.run()

    run(main)


NOT_FOUND = LookupError("not found")


def test_fixed_notes_on_shared_instances() -> None:
    """A module-level exception raised by different steps in different runs is blamed on
    the step that raised it this time, and gets no notes from earlier runs."""
    r = rp.Reactor("r", inputs=["which"])

    @r.step
    def a(which: str) -> None:
        if which == "a":
            raise NOT_FOUND

    @r.step
    def b(which: str) -> None:
        if which == "b":
            raise NOT_FOUND

    async def main() -> str:
        with pytest.raises(rp.RunFailed):
            await r.run({"which": "a"})
        with pytest.raises(rp.RunFailed) as failed:
            await r.run({"which": "b"})
        return str(failed.value)

    message = run(main)
    assert "step(s) b" in message
    assert len(getattr(NOT_FOUND, "__notes__", [])) <= 1


def test_fixed_run_hooks_raising() -> None:
    """A run whose on_run_complete hook raises fails with RunFailed, undone."""
    undone: list[str] = []
    r = rp.Reactor("r", returns="book")

    @r.step
    def book() -> str:
        return "booking"

    @book.undo
    def cancel(value: str) -> None:
        undone.append(value)

    endings: list[tuple[str, str]] = []

    class Watcher:
        def __init__(self, name: str) -> None:
            self.name = name

        def on_run_complete(self, info: rp.RunInfo, result: Any) -> None:
            endings.append((self.name, "complete"))
            if self.name == "exporter":
                raise RuntimeError("exporter down")

        def on_run_error(self, info: rp.RunInfo, error: BaseException) -> None:
            endings.append((self.name, "error"))

    async def main() -> None:
        with pytest.raises(rp.RunFailed, match="on_run_complete"):
            await r.run(middleware=[Watcher("before"), Watcher("exporter"), Watcher("after")])

    run(main)
    assert ["booking"] == undone
    # one ending each: those told of the completion keep it, the ones after hear the error
    assert [("before", "complete"), ("exporter", "complete"), ("after", "error")] == endings


def test_fixed_shielded_swallows_cancel() -> None:
    """run() cancelled while it undoes raises CancelledError, whenever the cancel lands."""
    r = rp.Reactor("r")

    @r.step
    async def booked() -> str:
        return "booking"

    @booked.undo
    async def cancel_booking(value: str) -> None:
        await asyncio.sleep(0)

    @r.step
    def charge(booked: str) -> None:
        raise ValueError("card declined")

    async def main(k: int) -> str:
        task = asyncio.ensure_future(r.run())
        for _ in range(k):
            await asyncio.sleep(0)
        if not task.cancel():
            return "done"
        try:
            await task
        except asyncio.CancelledError:
            return "cancelled"
        except rp.RunFailed:
            return "RunFailed"
        return "returned"

    outcomes = {k: run(lambda k=k: main(k)) for k in range(8)}
    assert {"cancelled", "done"} >= set(outcomes.values()), outcomes


def test_fixed_async_event_loses_completion() -> None:
    """A step that completed while an async hook delivered its event is undone when the
    run is cancelled."""
    done: list[str] = []
    undone: list[str] = []
    r = rp.Reactor("r")

    @r.step
    def book() -> str:
        done.append("booking")
        return "booking"

    @book.undo
    def cancel(value: str) -> None:
        undone.append(value)

    @r.step
    async def later(book: str) -> None:
        await asyncio.sleep(10)

    class Exporter:
        async def on_event(self, event: rp.Event) -> None:
            await asyncio.sleep(0)

    async def main() -> None:
        task = asyncio.ensure_future(r.run(middleware=[Exporter()]))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main)
    assert done == undone


def test_fixed_hook_fails_composite_completion() -> None:
    """When a hook fails a composite step at its completion, its children are undone."""
    undone: list[str] = []
    child = rp.Reactor("child", inputs=["x"], returns="book")

    @child.step
    async def book(x: int) -> str:
        return f"booking {x}"

    @book.undo
    def cancel(value: str) -> None:
        undone.append(value)

    r = rp.Reactor("r", inputs=["x"], returns="sub")
    r.compose("sub", child)

    class FailsOnSub:
        def on_event(self, event: rp.Event) -> None:
            if event.kind == "step_complete" and event.step == "sub":
                raise RuntimeError("exporter down")

    async def main() -> None:
        with pytest.raises(rp.RunFailed):
            await r.run({"x": 1}, middleware=[FailsOnSub()])

    run(main)
    assert ["booking 1"] == undone


def test_fixed_map_element_halt_result() -> None:
    """A map element that halts with a result halts the map; resumed, it returns a list."""
    calls: list[int] = []

    @rp.step
    def item(x: int) -> str:
        calls.append(x)
        if len(calls) == 1:
            raise rp.Halt("wait", result=f"r{x}")
        return f"r{x}"

    r = rp.Reactor("r", inputs=["xs"], returns="all")
    r.map("all", "xs", item)

    async def main() -> Any:
        try:
            return await r.run({"xs": [1, 2]})
        except rp.Halted as halted:
            return await r.resume(halted.checkpoint)

    assert ["r1", "r2"] == run(main)


def test_fixed_map_element_new_steps() -> None:
    """A map element that returns NewSteps gets the new steps' value, with or without a
    Recorder attached."""

    @rp.step
    def double(x: int) -> rp.NewSteps:
        return rp.NewSteps(steps=[rp.step(lambda: 2 * x, name="double")])

    r = rp.Reactor("r", inputs=["xs"], returns="all")
    r.map("all", "xs", double)
    assert [2, 4] == run(lambda: r.run({"xs": [1, 2]}))


def test_fixed_new_steps_spawner_effect() -> None:
    """A step that did its work and returned NewSteps is undone when the run fails
    (in Elixir's Reactor such a step is complete as soon as it returns)."""
    undone: list[str] = []

    @rp.step
    def send_mail() -> None:
        raise ConnectionError("smtp down")

    r = rp.Reactor("r")

    @r.step
    def book() -> rp.NewSteps:
        return rp.NewSteps("booking", steps=[send_mail])

    @book.undo
    def cancel(value: str) -> None:
        undone.append(value)

    async def main() -> None:
        with pytest.raises(rp.RunFailed):
            await r.run()

    run(main)
    assert ["booking"] == undone


_APPROVAL = {"open": False}


def _approve() -> None:
    """A new step that waits for approval (module-level: the checkpoint pickles it)."""
    if not _APPROVAL["open"]:
        raise rp.Halt("approval")


def test_fixed_new_steps_spawner_halted() -> None:
    """A step whose new steps halt is not called again on resume: its new steps continue,
    so its work is done once and never undone (it was undone at the halt and done again)."""
    done: list[str] = []
    calls: list[str] = []
    _APPROVAL["open"] = False
    r = rp.Reactor("r")

    @r.step
    def book() -> rp.NewSteps:
        calls.append("book")
        done.append("booking")
        return rp.NewSteps("booking", steps=[rp.step(_approve, name="approve")])

    @book.undo
    def cancel(value: str) -> None:
        done.remove(value)

    async def main() -> None:
        with pytest.raises(rp.Halted) as halted:
            await r.run()
        assert ["booking"] == done
        _APPROVAL["open"] = True
        await r.resume(pickle.loads(pickle.dumps(halted.value.checkpoint)))

    run(main)
    assert ["booking"] == done
    assert ["book"] == calls


def test_fixed_new_steps_spawner_undone_in_order() -> None:
    """A step that returned NewSteps is undone in the order it returned, not when its new
    steps ended: a step completed after it returned is undone before it."""
    undone: list[str] = []

    async def fail_later() -> None:
        await asyncio.sleep(2)
        raise ConnectionError("smtp down")

    r = rp.Reactor("r")

    @r.step
    def book() -> rp.NewSteps:
        return rp.NewSteps("booking", steps=[rp.step(fail_later)])

    @r.step
    async def pay() -> str:
        await asyncio.sleep(1)
        return "payment"

    for s in (book, pay):
        s.undo(lambda value: undone.append(value))

    async def main() -> None:
        with pytest.raises(rp.RunFailed):
            await r.run()

    run(main)
    assert ["payment", "booking"] == undone


class Events:
    """An on_event hook that keeps the kinds of the events of one step."""

    def __init__(self, step: str) -> None:
        self.step = step
        self.kinds: list[str] = []

    def on_event(self, event: rp.Event) -> None:
        if event.step == self.step:
            self.kinds.append(event.kind)


class AsyncEvents(Events):
    async def on_event(self, event: rp.Event) -> None:  # type: ignore[override]
        super().on_event(event)


def failing_kinds(reactor: rp.Reactor, hook: Events, **options: Any) -> list[str]:
    async def main() -> None:
        with pytest.raises(rp.RunFailed):
            await reactor.run(middleware=[hook], **options)

    run(main)
    return hook.kinds


def test_fixed_guard_error_events() -> None:
    """A when= guard that raises is reported the same way to sync and async hooks."""

    def broken() -> bool:
        raise ValueError("guard broke")

    r = rp.Reactor("r")

    @r.step(when=broken)
    def pay() -> int:
        return 1

    assert failing_kinds(r, Events("pay")) == failing_kinds(r, AsyncEvents("pay"))


def test_fixed_transform_error_events() -> None:
    """A step whose argument transform raises has the same events in every run mode."""

    def refuse(value: Any) -> Any:
        raise ValueError("bad argument")

    r = rp.Reactor("r")

    @r.step
    def a() -> int:
        return 1

    @r.step(args={"v": rp.Result("a", transform=refuse)})
    def b(v: int) -> int:
        return v

    assert failing_kinds(r, Events("b")) == failing_kinds(r, Events("b"), async_=False)
