"""Saga semantics: retries, backoff, timeouts, guards, compensation, undo, cancellation."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

import reactorpy as rp
from reactorpy.testing import run_virtual


class Events:
    """A middleware that keeps (kind, step, attempt, time) tuples."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str, int, float]] = []

    def on_event(self, event: rp.Event) -> None:
        self.log.append((event.kind, event.step, event.attempt, event.time))

    def kinds(self, step: str) -> list[str]:
        return [k for k, s, _, _ in self.log if s == step]


def test_retries_with_fixed_backoff_on_virtual_time():
    """A step retried twice waits its backoff each time: exact virtual durations."""
    calls = []
    r = rp.Reactor("retry", returns="flaky")

    @r.step(retries=2, retry_on=ConnectionError, backoff=1.5)
    async def flaky():
        calls.append(asyncio.get_running_loop().time())
        if len(calls) < 3:
            raise ConnectionError("down")
        return "up"

    assert "up" == run_virtual(r.run())
    assert [0.0, 1.5, 3.0] == calls


def test_callable_backoff_and_retry_delay_override():
    """backoff may be callable(attempt, error); rp.Retry(delay=) overrides it."""
    calls = []
    r = rp.Reactor("retry2", returns="s")

    @r.step(retries=3, backoff=lambda attempt, error: 2.0**attempt)
    async def s():
        calls.append(asyncio.get_running_loop().time())
        if len(calls) == 1:
            raise rp.Retry("again")  # backoff(1) = 2
        if len(calls) == 2:
            raise rp.Retry("again", delay=0.25)
        return len(calls)

    assert 3 == run_virtual(r.run())
    assert [0.0, 2.0, 2.25] == calls


def test_attempts_run_out_last_error_stands_with_note():
    """When attempts run out the last error stands, noting the attempt count."""
    r = rp.Reactor("exhaust")

    @r.step(retries=2, retry_on=ValueError)
    def s():
        raise ValueError("bad")

    with pytest.raises(rp.RunFailed) as info:
        run_virtual(r.run())
    [err] = info.value.exceptions
    assert isinstance(err, ValueError)
    assert any("after 3 attempts" in n for n in err.__notes__)
    assert any("attempt 3" in n for n in err.__notes__)


def test_exhausted_retry_stands_as_its_cause():
    """An rp.Retry raised from an error stands as that error when attempts run out."""
    r = rp.Reactor("cause")

    @r.step(retries=1)
    def s():
        try:
            raise OSError("disk")
        except OSError as exc:
            raise rp.Retry("once more") from exc

    with pytest.raises(rp.RunFailed) as info:
        run_virtual(r.run())
    [err] = info.value.exceptions
    assert isinstance(err, OSError)


def test_error_not_in_retry_on_is_not_retried():
    """Errors outside retry_on fail at once."""
    calls = []
    r = rp.Reactor("noretry")

    @r.step(retries=5, retry_on=ConnectionError)
    def s():
        calls.append(1)
        raise KeyError("x")

    with pytest.raises(rp.RunFailed):
        run_virtual(r.run())
    assert [1] == calls


def test_timeout_per_attempt_on_virtual_time():
    """timeout bounds each attempt; a timed-out attempt may be retried."""
    starts = []
    r = rp.Reactor("timeout", returns="s")

    @r.step(timeout=2.0, retries=1, retry_on=TimeoutError)
    async def s():
        starts.append(asyncio.get_running_loop().time())
        if len(starts) == 1:
            await asyncio.sleep(10)
        return "ok"

    assert "ok" == run_virtual(r.run())
    assert [0.0, 2.0] == starts


def test_compensate_continue_retry_and_none():
    """compensate gets the error and named args; Continue succeeds, Retry runs again."""
    seen = []
    r = rp.Reactor("comp", inputs=["order_id"])

    @r.step(retries=1)
    def charge(order_id):
        raise RuntimeError(f"declined {order_id}")

    @charge.compensate
    def fallback(error, order_id):
        seen.append((type(error).__name__, order_id))
        return rp.Continue("cash")

    @r.step(retries=1)
    def flaky():
        if not seen or seen[-1] != "retried":
            seen.append("retried")
            raise RuntimeError("first")
        return "second"

    @flaky.compensate
    def ask_again(error):
        raise rp.Retry("try again")

    result = run_virtual(r.run({"order_id": 7}))
    assert {"charge": "cash", "flaky": "second"} == result
    assert ("RuntimeError", 7) in seen


def test_compensate_returning_none_lets_error_stand():
    """A compensate returning None leaves the error standing."""
    r = rp.Reactor("stand")
    calls = []

    @r.step
    async def s():
        raise ValueError("v")

    @s.compensate
    async def note(error):
        calls.append(error)

    with pytest.raises(rp.RunFailed) as info:
        run_virtual(r.run())
    assert calls == list(info.value.exceptions)


def test_compensate_is_called_once_per_failed_attempt():
    """Compensation runs once per failed attempt, and retries are bounded by retries."""
    calls = []
    r = rp.Reactor("count")

    @r.step(retries=2)
    def s():
        raise ValueError("v")

    @s.compensate
    def again(error):
        calls.append(1)
        raise rp.Retry()

    with pytest.raises(rp.RunFailed):
        run_virtual(r.run())
    assert 3 == len(calls)


def test_undo_newest_first_with_result_and_named_args():
    """Completed steps are undone newest completion first, with result and named args."""
    undone = []
    r = rp.Reactor("undo", inputs=["order_id"])

    @r.step
    async def reserve(order_id):
        return f"stock-{order_id}"

    @reserve.undo
    async def release(value, order_id):
        undone.append(("release", value, order_id))

    @r.step
    def charge(reserve, order_id):
        return f"charge-{order_id}"

    @charge.undo
    def refund(value):
        undone.append(("refund", value))

    @r.step
    async def ship(charge):
        raise RuntimeError("truck broke")

    with pytest.raises(rp.RunFailed) as info:
        run_virtual(r.run({"order_id": 1}))
    assert [("refund", "charge-1"), ("release", "stock-1", 1)] == undone
    assert 1 == len(info.value.exceptions)


def test_undo_errors_are_collected_and_other_undos_still_run():
    """An undo that fails does not stop the others; its error joins the group."""
    undone = []
    r = rp.Reactor("undoerr")

    @r.step
    def a():
        return "a"

    @a.undo
    def undo_a(value):
        undone.append("a")

    @r.step
    def b(a):
        return "b"

    @b.undo
    def undo_b(value):
        raise OSError("cannot undo b")

    @r.step
    def c(b):
        raise ValueError("c failed")

    with pytest.raises(rp.RunFailed) as info:
        run_virtual(r.run())
    assert ["a"] == undone
    kinds = sorted(type(e).__name__ for e in info.value.exceptions)
    assert ["OSError", "ValueError"] == kinds
    oserr = next(e for e in info.value.exceptions if isinstance(e, OSError))
    assert any("undo of step 'b'" in n for n in oserr.__notes__)


def test_undo_retry_at_most_five_attempts():
    """Undo may ask for Retry; after 5 attempts it gives up with an error."""
    attempts = []
    r = rp.Reactor("undoretry")

    @r.step
    def a():
        return 1

    @a.undo
    def undo_a(value):
        attempts.append(1)
        raise rp.Retry("not yet")

    @r.step
    def b(a):
        raise ValueError("b")

    with pytest.raises(rp.RunFailed) as info:
        run_virtual(r.run())
    assert 5 == len(attempts)
    assert 2 == len(info.value.exceptions)


def test_guard_skips_step_result_none_never_undone_dependents_run():
    """A falsy when= guard skips the step: result None, not undone, dependents still run."""
    undone = []
    events = Events()
    r = rp.Reactor("guard", inputs=["vip"])

    @r.step(when=lambda vip: vip)
    def discount(vip):
        return 10

    @discount.undo
    def undo_discount(value):
        undone.append(value)

    @r.step
    def price(discount):
        return 100 - (discount or 0)

    @r.step
    def fail(price):
        raise ValueError(price)

    with pytest.raises(rp.RunFailed) as info:
        run_virtual(r.run({"vip": False}, middleware=[events]))
    assert [] == undone
    assert ValueError(100).args == info.value.exceptions[0].args
    assert ["guard_skip"] == events.kinds("discount")


def test_event_kinds_of_a_retry_compensate_undo_story():
    """Every outcome is an event, in order, with attempts and times."""
    events = Events()
    r = rp.Reactor("story")

    @r.step
    def a():
        return 1

    @a.undo
    def undo_a(value):
        return None

    @r.step(retries=1, backoff=1.0)
    def b(a):
        raise rp.Retry("later")

    @b.compensate
    def comp_b(error):
        return None

    with pytest.raises(rp.RunFailed):
        run_virtual(r.run(middleware=[events]))
    assert ["step_start", "step_complete", "undo_start", "undo_complete"] == events.kinds("a")
    assert [
        "step_start",
        "step_retry",
        "step_start",
        "step_error",
        "compensate_start",
        "compensate_complete",
    ] == events.kinds("b")
    b_starts = [t for k, s, _, t in events.log if s == "b" and k == "step_start"]
    assert [0.0, 1.0] == b_starts


def test_no_new_attempt_once_another_error_stands():
    """A step waiting on backoff does not try again after another step's error stood."""
    calls = []
    r = rp.Reactor("stop-retrying")

    @r.step(retries=5, backoff=10.0)
    async def patient():
        calls.append(asyncio.get_running_loop().time())
        raise rp.Retry("later")

    @r.step
    async def boom():
        await asyncio.sleep(1.0)
        raise ValueError("boom")

    with pytest.raises(rp.RunFailed) as info:
        run_virtual(r.run())
    assert [0.0] == calls
    assert [ValueError] == [type(e) for e in info.value.exceptions]


def test_cancellation_undoes_completed_steps_shielded():
    """Cancelling run() undoes completed steps (even async undo), then re-raises."""
    undone = []

    async def main():
        r = rp.Reactor("cancel-undo")
        started = asyncio.Event()

        @r.step
        async def done_first():
            return "x"

        @done_first.undo
        async def undo_first(value):
            await asyncio.sleep(1.0)
            undone.append(value)

        @r.step(wait_for="done_first")
        async def forever():
            started.set()
            await asyncio.Event().wait()

        task = asyncio.create_task(r.run())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        leftover = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
        return leftover

    assert set() == run_virtual(main())
    assert ["x"] == undone


def test_keyboard_interrupt_propagates_unwrapped_after_undo():
    """A KeyboardInterrupt in a step propagates as itself, after undo."""
    undone = []
    r = rp.Reactor("kbd")

    @r.step
    def a():
        return 1

    @a.undo
    def undo_a(value):
        undone.append(value)

    @r.step
    async def b(a):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_virtual(r.run())
    assert [1] == undone


def test_abandoned_steps_are_not_undone_and_undo_happens_once():
    """Only completed undoable steps are undone, each exactly once."""
    undone = []
    r = rp.Reactor("once")

    async def work(n):
        await asyncio.sleep(n)
        return n

    def undo(value):
        undone.append(value)

    for n in (1, 2, 3):
        s = r.add(rp.step(work), name=f"w{n}", args={"n": rp.Value(n)})
        s.undo(undo)

    @r.step
    async def boom():
        await asyncio.sleep(2.5)
        raise ValueError

    with pytest.raises(rp.RunFailed):
        run_virtual(r.run(grace=0.1))
    assert [2, 1] == undone


def test_compensate_that_raises_makes_its_error_stand():
    """A compensate that raises: its error stands, the step's error is its context."""
    events = Events()
    r = rp.Reactor("comp-raise")

    @r.step
    async def charge():
        raise ValueError("declined")

    @charge.compensate
    def fallback(error):
        raise OSError("fallback is down")

    with pytest.raises(rp.RunFailed) as info:
        run_virtual(r.run(middleware=[events]))
    [err] = info.value.exceptions
    assert isinstance(err, OSError)
    assert isinstance(err.__context__, ValueError)
    assert "compensate_error" in events.kinds("charge")


def test_async_guard_and_retry_with_exception_reason():
    """An async when= guard is awaited; Retry(reason=exc) stands as that exception."""
    r = rp.Reactor("async-guard", inputs=["go"])

    async def allowed(go):
        await asyncio.sleep(1)
        return go

    @r.step(when=allowed)
    def guarded(go):
        return "ran"

    @r.step(retries=1)
    def retry_reason():
        raise rp.Retry(LookupError("gone"))

    with pytest.raises(rp.RunFailed) as info:
        run_virtual(r.run({"go": False}))
    assert [LookupError] == [type(e) for e in info.value.exceptions]


def test_composite_timeout_bounds_the_whole_child():
    """timeout= on a composed step bounds the child reactor's whole run."""
    child = rp.Reactor("slow-child", returns="nap")

    @child.step
    async def nap():
        await asyncio.sleep(10)

    parent = rp.Reactor("parent", returns="sub")
    parent.compose("sub", child, timeout=2.0)
    with pytest.raises(rp.RunFailed) as info:
        run_virtual(parent.run())
    assert [TimeoutError] == [type(e) for e in info.value.exceptions]


def test_cancellation_keeps_undo_errors_as_notes():
    """Undo errors during cancellation travel as notes on the CancelledError."""

    async def main():
        r = rp.Reactor("cancel-undo-error")
        started = asyncio.Event()

        @r.step
        def first():
            return 1

        @first.undo
        def undo_first(value):
            raise OSError("cannot undo")

        @r.step(wait_for="first")
        async def forever():
            started.set()
            await asyncio.Event().wait()

        task = asyncio.create_task(r.run())
        await started.wait()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError as cancelled:
            return getattr(cancelled, "__notes__", [])
        return []

    notes = run_virtual(main())
    assert any("cannot undo" in n for n in notes)


def test_compensation_finishes_even_when_the_run_is_cancelled():
    """A compensation in progress when run() is cancelled runs to its end first."""
    log = []

    async def main():
        r = rp.Reactor("shielded-compensate")

        @r.step
        async def charge():
            raise ValueError("declined")

        @charge.compensate
        async def notify(error):
            log.append("compensating")
            await asyncio.sleep(1.0)
            log.append("compensated")

        task = asyncio.create_task(r.run())
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return asyncio.get_running_loop().time()

    assert 1.0 == run_virtual(main())
    assert ["compensating", "compensated"] == log


def test_step_timeout_in_a_batch_of_siblings_cancels_only_that_step():
    """Siblings share a worker until one waits; a timed-out sibling is the only one cut."""
    r = rp.Reactor("siblings")
    ended: list[tuple[str, float]] = []

    @r.step
    async def root():
        return 0

    async def wait_then_end(name, root):
        await asyncio.sleep(0.5)
        ended.append((name, asyncio.get_running_loop().time()))
        return name

    r.add(rp.step(wait_then_end), name="a", args={"name": rp.Value("a")})

    @r.step(timeout=0.1)
    async def slow(root):
        await asyncio.sleep(10)

    @slow.compensate
    def fallback(error):
        assert isinstance(error, TimeoutError)
        return rp.Continue("fallback")

    r.add(rp.step(wait_then_end), name="b", args={"name": rp.Value("b")})
    result = run_virtual(r.run())
    assert (result["a"], result["slow"], result["b"]) == ("a", "fallback", "b")
    assert sorted(ended) == [("a", 0.5), ("b", 0.5)]


def test_a_retrying_step_called_directly_retries_after_failing_inline_or_later():
    """A step whose only option is retries is first called like a plain step; when it
    fails (at once, or after waiting) its attempts take over, with the configured backoff,
    and its siblings are not held up."""
    calls: list[float] = []
    r = rp.Reactor("flaky")

    @r.step(retries=2, retry_on=ConnectionError, backoff=0.1)
    async def flaky() -> str:
        now = asyncio.get_running_loop().time()
        calls.append(now)
        if len(calls) == 1:
            raise ConnectionError("at once")  # before any await
        if len(calls) == 2:
            await asyncio.sleep(0.05)
            raise ConnectionError("after waiting")
        return "ok"

    @r.step
    async def sibling() -> float:
        await asyncio.sleep(0.2)
        return asyncio.get_running_loop().time()

    result = run_virtual(r.run())
    assert result == {"flaky": "ok", "sibling": 0.2}
    assert calls == [0.0, pytest.approx(0.1), pytest.approx(0.25)]


# ---------------------------------------------------------------------- issue 12 regressions
@dataclasses.dataclass(frozen=True)
class Declined(Exception):
    """An exception that refuses notes (a frozen dataclass cannot take ``__notes__``)."""

    code: str


def test_a_step_error_that_refuses_notes_still_fails_the_run_and_undoes():
    """A frozen-dataclass exception (add_note fails on it) stands as the run's error; the
    run ends and what completed is undone."""
    undone: list[str] = []
    r = rp.Reactor("frozen")

    @r.step
    async def reserve():
        return "hold"

    @reserve.undo
    async def release(hold):
        undone.append(hold)

    @r.step
    async def charge(reserve):
        raise Declined("card")

    with pytest.raises(rp.RunFailed) as info:
        run_virtual(asyncio.wait_for(r.run(), 5))
    assert [Declined("card")] == list(info.value.exceptions)
    assert ["hold"] == undone


def test_an_undo_error_that_refuses_notes_does_not_stop_the_older_undos():
    """An undo raising a frozen-dataclass exception is reported; older undos still run."""
    undone: list[str] = []
    r = rp.Reactor("frozen-undo")

    @r.step
    async def first():
        return 1

    @first.undo
    async def undo_first(value):
        undone.append("first")

    @r.step
    async def second(first):
        return 2

    @second.undo
    async def undo_second(value):
        raise Declined("undo")

    @r.step
    async def third(second):
        raise ValueError("boom")

    with pytest.raises(rp.RunFailed) as info:
        run_virtual(asyncio.wait_for(r.run(), 5))
    assert ["first"] == undone
    assert info.group_contains(Declined)
    assert info.group_contains(ValueError, match="boom")


def test_an_undo_raising_cancelled_error_is_an_undo_error_and_the_others_run():
    """An undo callback raising CancelledError (nothing cancelled the run) is one undo
    error; the remaining undos run and the caller gets RunFailed, not CancelledError."""
    undone: list[str] = []
    r = rp.Reactor("undo-cancel")

    @r.step
    async def a():
        return 1

    @a.undo
    async def undo_a(value):
        undone.append("a")

    @r.step
    async def b(a):
        return 2

    @b.undo
    async def undo_b(value):
        raise asyncio.CancelledError

    @r.step
    async def c(b):
        raise ValueError("boom")

    with pytest.raises(rp.RunFailed, match="1 undo") as info:
        run_virtual(r.run())
    assert ["a"] == undone
    assert info.group_contains(RuntimeError, match="undo of step 'b' was cancelled")


def test_a_reused_exception_instance_gets_one_note_per_kind_however_often_it_is_raised():
    """A module-level exception raised by steps of several runs carries one note of
    reactorpy's, not one per run."""
    r = rp.Reactor("reused")

    @r.step
    async def lookup():
        raise NOT_FOUND

    for _ in range(3):
        with pytest.raises(rp.RunFailed):
            run_virtual(r.run())
    assert ["reactorpy: step 'lookup' failed (attempt 1)"] == NOT_FOUND.__notes__


NOT_FOUND = LookupError("not found")


def test_a_group_of_halts_from_a_task_group_halts_the_run():
    """rp.Halt raised inside a TaskGroup in a step arrives as an ExceptionGroup of halts:
    the run halts (it does not fail and undo)."""
    undone: list[str] = []
    r = rp.Reactor("halt-group", returns="wait")

    @r.step
    async def book():
        return "b"

    @book.undo
    async def cancel(b):
        undone.append(b)

    @r.step
    async def wait(book):
        async with asyncio.TaskGroup() as tg:

            async def approval():
                raise rp.Halt("needs approval")

            tg.create_task(approval())

    with pytest.raises(rp.Halted, match="needs approval") as info:
        run_virtual(r.run())
    assert [] == undone
    assert ("book",) == info.value.checkpoint.completed


@pytest.mark.parametrize("how", ["Retry", "retry_on"])
def test_a_group_of_retries_retries(how: str):
    """A group made only of rp.Retry retries; retry_on matches a group whose every member
    matches (as except* would leave nothing over)."""
    attempts = [0]
    options = {"retries": 2}
    if how == "retry_on":
        options["retry_on"] = ConnectionError  # type: ignore[assignment]
    r = rp.Reactor("retry-group", returns="flaky")

    @r.step(**options)
    async def flaky():
        attempts[0] += 1
        if attempts[0] == 1:
            if how == "Retry":
                raise ExceptionGroup("g", [rp.Retry("again"), rp.Retry("and again")])
            raise ExceptionGroup("g", [ConnectionError("a"), ConnectionError("b")])
        return attempts[0]

    assert 2 == run_virtual(r.run())


def test_retry_on_does_not_retry_a_group_with_other_errors_in_it():
    """A group holding an error retry_on does not match is not retried: it stands."""
    attempts = [0]
    r = rp.Reactor("mixed-group")

    @r.step(retries=3, retry_on=ConnectionError)
    async def flaky():
        attempts[0] += 1
        raise ExceptionGroup("g", [ConnectionError("a"), KeyError("b")])

    with pytest.raises(rp.RunFailed):
        run_virtual(r.run())
    assert [1] == attempts


def test_backoff_gets_the_steps_own_error_when_compensate_asks_to_retry():
    """backoff=callable(attempt, error) gets the step's error, not the rp.Retry raised by
    its compensate (Elixir Reactor's #306)."""
    seen: list[object] = []
    calls = [0]
    r = rp.Reactor("backoff-error", returns="charge")

    def backoff(attempt, error):
        seen.append((attempt, error))
        return 0.5

    @r.step(retries=1, backoff=backoff)
    async def charge():
        calls[0] += 1
        if calls[0] == 1:
            raise KeyError("declined")
        return "ok"

    @charge.compensate
    def retry_it(error):
        raise rp.Retry("try again")

    assert "ok" == run_virtual(r.run())
    [(attempt, error)] = seen
    assert 1 == attempt
    assert isinstance(error, KeyError)


def test_a_continue_arriving_during_outside_cancellation_completes_and_is_undone():
    """compensate returning rp.Continue(v) while run() is cancelled from outside: the step
    completed with v (nothing lost), so it is undone with the rest, and the caller gets
    CancelledError."""
    log: list[str] = []
    r = rp.Reactor("continue-cancel")

    @r.step
    async def pay():
        raise KeyError("declined")

    @pay.compensate
    async def fallback(error):
        await asyncio.sleep(1)
        log.append("fallback")
        return rp.Continue("voucher")

    @pay.undo
    async def unpay(value):
        log.append(f"undo {value}")

    @r.step
    async def slow():
        await asyncio.sleep(10)

    async def main():
        task = asyncio.ensure_future(r.run())
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run_virtual(main())
    assert ["fallback", "undo voucher"] == log


def test_a_continue_arriving_after_the_grace_period_is_kept_for_resume():
    """When the grace period ends while compensate runs (another step halted), its
    rp.Continue still completes the step: the checkpoint has it, and resume does not
    compensate again."""
    calls = [0]
    r = rp.Reactor("continue-halt")

    @r.step
    async def pay():
        raise KeyError("declined")

    @pay.compensate
    async def fallback(error):
        calls[0] += 1
        await asyncio.sleep(5)
        return rp.Continue("voucher")

    @r.step
    async def wait():
        await asyncio.sleep(0.1)
        raise rp.Halt("later")

    async def main():
        with pytest.raises(rp.Halted) as first:
            await r.run(grace=1)
        checkpoint = first.value.checkpoint
        assert "pay" in checkpoint.completed
        with pytest.raises(rp.Halted):
            await r.resume(checkpoint, grace=1)

    run_virtual(main())
    assert [1] == calls


def test_a_run_cancelled_while_it_undoes_still_ends_its_middleware():
    """Cancelled while undoing after a failure: the undo finishes, on_run_error is called
    once with the CancelledError the caller gets (the run's error is kept as its note)."""
    ends: list[str] = []
    undone: list[str] = []

    class Watch:
        def on_run_error(self, run, error):
            ends.append(type(error).__name__)

    r = rp.Reactor("cancel-undo")

    @r.step
    async def hold():
        return 1

    @hold.undo
    async def release(value):
        await asyncio.sleep(1)
        undone.append("hold")

    @r.step
    async def fail(hold):
        raise ValueError("boom")

    async def main():
        task = asyncio.ensure_future(r.run(middleware=[Watch()]))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError) as cancelled:
            await task
        assert "cancelled while the run undid: RunFailed" in str(cancelled.value.__notes__)

    run_virtual(main())
    assert ["hold"] == undone
    assert ["CancelledError"] == ends


def test_a_guard_returning_skip_gives_the_step_that_result_and_never_undoes_it():
    """when= returning rp.Skip(value) skips the step with value as its result (a cache
    hit); such a step is never undone; a truthy guard runs it."""
    undone: list[str] = []
    cache = {"a": "cached"}
    r = rp.Reactor("cache", inputs=["key"], returns="use")

    @r.step(when=lambda key: rp.Skip(cache[key]) if key in cache else True)
    def fetch(key):
        return f"fetched {key}"

    @fetch.undo
    def forget(value):
        undone.append(value)

    @r.step
    def use(fetch):
        return fetch

    @r.step
    def fail(use, key):
        if key == "a":
            raise ValueError("after the cache hit")

    with pytest.raises(rp.RunFailed):
        run_virtual(r.run({"key": "a"}))
    assert [] == undone
    assert "fetched b" == run_virtual(r.run({"key": "b"}))


@pytest.mark.parametrize("turns", range(8))
def test_a_cancellation_landing_as_the_undo_ends_is_never_swallowed(turns: int):
    """run() cancelled at any loop turn while a failed run undoes (even as the undo ends)
    raises CancelledError, never RunFailed, unless the run had already ended."""
    r = rp.Reactor("r")

    @r.step
    async def booked():
        return "booking"

    @booked.undo
    async def cancel_booking(value):
        await asyncio.sleep(0)

    @r.step
    def charge(booked):
        raise ValueError("card declined")

    async def main():
        task = asyncio.ensure_future(r.run())
        for _ in range(turns):
            await asyncio.sleep(0)
        if not task.cancel():
            return "ended before"
        with pytest.raises(asyncio.CancelledError):
            await task
        return "cancelled"

    assert run_virtual(main()) in {"cancelled", "ended before"}
