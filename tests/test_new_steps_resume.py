"""A run that halts while a step's new steps (`rp.NewSteps`) run: resume continues them.

The step that returned them is not called again, new steps that completed are not run
again, and what they did is undone exactly once, newest first, if the run fails or is given
up later. New steps' functions are module-level here, so checkpoints pickle (a checkpoint
keeps the steps to continue them).
"""

from __future__ import annotations

import asyncio
import pickle
import threading
from typing import Any

import pytest

import reactorpy as rp
from reactorpy.testing import run_virtual

LOG: list[str] = []  # what ran and what was undone, in order
GATE = {"open": False}  # new steps that wait for approval halt until it opens
FAIL = {"after": False}  # the step after the producer fails


@pytest.fixture(autouse=True)
def _fresh() -> None:
    LOG.clear()
    GATE["open"] = False
    FAIL["after"] = False


def reserve(n: int) -> int:
    LOG.append("reserve")
    return n + 1


def unreserve(value: int) -> None:
    LOG.append(f"undo reserve {value}")


def approve(reserve: int) -> int:
    LOG.append("approve")
    if not GATE["open"]:
        raise rp.Halt("approval")
    return reserve * 10


def unapprove(value: int) -> None:
    LOG.append(f"undo approve {value}")


async def slow(reserve: int) -> int:
    LOG.append("slow")
    await asyncio.sleep(10)
    LOG.append("slow done")
    return reserve * 100


def unslow(value: int) -> None:
    LOG.append(f"undo slow {value}")


def undoable(fn: Any, undo: Any, name: str | None = None) -> rp.Step[..., Any]:
    made = rp.step(fn, name=name)
    made.undo(undo)
    return made


def booking(second: Any = approve, undo_second: Any = unapprove) -> rp.Reactor:
    """``book`` returns new steps: ``reserve``, then `second`; ``after`` reads ``book``."""
    r = rp.Reactor("trip", inputs=["n"], returns="after")

    @r.step
    def book(n: int) -> rp.NewSteps:
        LOG.append("book")
        steps = [undoable(reserve, unreserve), undoable(second, undo_second)]
        return rp.NewSteps("booked", steps=steps)

    @book.undo
    def unbook(value: str) -> None:
        LOG.append(f"undo {value}")

    @r.step
    def after(book: str) -> str:
        LOG.append("after")
        if FAIL["after"]:
            raise ValueError("after failed")
        return f"{book} then after"

    return r


def halted(r: rp.Reactor, inputs: dict[str, Any], **options: Any) -> rp.Checkpoint:
    """Run `r` until it halts; its checkpoint, through pickle."""

    async def main() -> rp.Checkpoint:
        with pytest.raises(rp.Halted) as info:
            await r.run(inputs, **options)
        return info.value.checkpoint

    return pickle.loads(pickle.dumps(run_virtual(main())))  # type: ignore[no-any-return]


def test_the_step_runs_once_and_completed_new_steps_are_not_run_again() -> None:
    """The producer runs once across a halt and a resume; completed new steps do not run
    again, the halted one does, and the run's result is right."""
    r = booking()
    checkpoint = halted(r, {"n": 1})
    assert ["book", "reserve", "approve"] == LOG
    GATE["open"] = True
    assert "booked then after" == run_virtual(r.resume(checkpoint))
    assert ["book", "reserve", "approve", "approve", "after"] == LOG


def test_a_failure_after_resume_undoes_everything_once_newest_first() -> None:
    """A resumed run that fails undoes the new steps and the producer once, newest first."""
    r = booking()
    checkpoint = halted(r, {"n": 1})
    GATE["open"] = True
    FAIL["after"] = True
    with pytest.raises(rp.RunFailed):
        run_virtual(r.resume(checkpoint))
    undone = [e for e in LOG if e.startswith("undo")]
    assert ["undo approve 20", "undo reserve 2", "undo booked"] == undone


def test_a_failure_before_the_new_steps_continue_undoes_what_they_completed() -> None:
    """A resumed run that fails before the new steps continue still undoes what they
    completed before the halt, and the producer, once, newest first."""
    r = booking(slow, unslow)

    @r.step
    async def wait(n: int) -> None:
        await asyncio.sleep(1)

    @r.step
    def audit(wait: None) -> None:  # halts the first run; fails on resume, as it starts
        LOG.append("audit")
        if GATE["open"]:
            raise ValueError("audit failed")
        raise rp.Halt("audit")

    checkpoint = halted(r, {"n": 1})  # `slow` is cut short at the end of the grace
    GATE["open"] = True
    with pytest.raises(rp.RunFailed):
        run_virtual(r.resume(checkpoint))
    assert ["book", "reserve", "slow", "audit", "audit", "undo reserve 2", "undo booked"] == LOG


def test_undo_of_the_checkpoint_undoes_producer_and_new_steps_once() -> None:
    """Giving up the halted run undoes the completed new steps, then the producer."""
    r = booking()
    checkpoint = halted(r, {"n": 1})
    run_virtual(r.undo(checkpoint))
    assert ["book", "reserve", "approve", "undo reserve 2", "undo booked"] == LOG


def test_the_checkpoint_cannot_be_exported_to_json() -> None:
    """to_json names the step whose new steps halted, and says to pickle instead."""
    checkpoint = halted(booking(), {"n": 1})
    with pytest.raises(TypeError, match=r"step 'book' halted while the new steps.*pickle"):
        checkpoint.to_json()


def test_new_steps_that_cannot_be_pickled_are_named() -> None:
    """Pickling a checkpoint whose new steps are nested functions names the step."""
    r = rp.Reactor("r")

    @r.step
    def book() -> rp.NewSteps:
        def wait() -> None:
            raise rp.Halt("later")

        return rp.NewSteps("booked", steps=[rp.step(wait)])

    async def main() -> rp.Checkpoint:
        with pytest.raises(rp.Halted) as info:
            await r.run()
        return info.value.checkpoint

    checkpoint = run_virtual(main())
    with pytest.raises(TypeError, match=r"step 'book' halted.*new step 'wait' cannot be saved"):
        pickle.dumps(checkpoint)


def test_a_run_timeout_halts_the_new_steps_and_resume_continues_them() -> None:
    """A run timeout while a new step runs halts the new steps (the one cut short runs
    again, nothing is undone) and resume continues them without calling the producer."""
    r = booking(slow, unslow)
    checkpoint = halted(r, {"n": 1}, timeout=5, grace=0)
    assert ["book", "reserve", "slow"] == LOG
    assert "book" in checkpoint.inner
    assert "booked then after" == run_virtual(r.resume(checkpoint))
    assert ["book", "reserve", "slow", "slow", "slow done", "after"] == LOG


def test_at_the_end_of_the_grace_new_steps_halt_instead_of_undoing() -> None:
    """A new step still running when the grace ends is cancelled; the new steps halt with
    what they completed kept (the run's cancellation of its step does not undo them)."""
    r = booking(slow, unslow)
    checkpoint = halted(r, {"n": 1}, timeout=5, grace=2)
    assert ["book", "reserve", "slow"] == LOG
    LOG.clear()
    run_virtual(r.undo(checkpoint))
    assert ["undo reserve 2", "undo booked"] == LOG


def confirm(slow: int) -> int:
    LOG.append("confirm")
    return slow + 1


def test_a_halt_elsewhere_stops_new_steps_from_starting() -> None:
    """When another step halts, the running new steps finish within the grace and are
    kept; new steps that were not started yet start on resume."""
    r = rp.Reactor("trip", inputs=["n"])

    @r.step
    def book(n: int) -> rp.NewSteps:
        LOG.append("book")
        steps = [undoable(reserve, unreserve), undoable(slow, unslow), rp.step(confirm)]
        return rp.NewSteps("booked", steps=steps)

    @r.step
    async def elsewhere(n: int) -> None:
        await asyncio.sleep(1)
        if not GATE["open"]:
            raise rp.Halt("elsewhere")

    checkpoint = halted(r, {"n": 1}, grace=20)
    assert ["book", "reserve", "slow", "slow done"] == LOG
    GATE["open"] = True
    LOG.clear()
    run_virtual(r.resume(checkpoint))
    assert ["confirm"] == LOG


def countdown(n: int, fails: bool = False) -> Any:
    """A step replacing itself until `n` is 0, each round with a side effect; it halts
    once in round 2. The effects have an undo, so each round is a child run."""
    LOG.append(f"count {n}")
    if n == 2 and not GATE["open"]:
        raise rp.Halt("round 2")
    if n == 0:
        if fails:
            raise ValueError("the last round failed")
        return "liftoff"
    effect = undoable(counted, uncounted, name=f"effect{n}")
    args = {"n": rp.Value(n - 1), "fails": rp.Value(fails)}
    replacement = rp.step(countdown, name="launch", args=args)
    return rp.NewSteps(steps=[effect.evolve(args={"n": rp.Value(n)}), replacement])


def counted(n: int) -> int:
    LOG.append(f"effect {n}")
    return n


def uncounted(value: int) -> None:
    LOG.append(f"undo effect {value}")


def _launcher(fails: bool = False) -> rp.Reactor:
    r = rp.Reactor("launcher", returns="launch")

    @r.step
    def launch() -> rp.NewSteps:
        LOG.append("launch")
        args = {"n": rp.Value(4), "fails": rp.Value(fails)}
        return rp.NewSteps(steps=[rp.step(countdown, name="launch", args=args)])

    return r


def test_a_replacing_loop_halted_midway_continues_from_that_round() -> None:
    """A step replacing itself round after round, halted in round 2, continues from that
    round on resume: neither the step nor the rounds before run again."""
    r = _launcher()
    checkpoint = halted(r, {})
    assert ["launch", "count 4", "effect 4", "count 3", "effect 3", "count 2"] == LOG
    GATE["open"] = True
    LOG.clear()
    assert "liftoff" == run_virtual(r.resume(checkpoint))
    assert ["count 2", "effect 2", "count 1", "effect 1", "count 0"] == LOG


def test_a_replacing_loop_that_fails_after_resume_undoes_every_round_once() -> None:
    """What the rounds did before the halt and after it is undone once, newest first."""
    r = _launcher(fails=True)
    checkpoint = halted(r, {})
    GATE["open"] = True
    with pytest.raises(rp.RunFailed):
        run_virtual(r.resume(checkpoint))
    undone = [e for e in LOG if e.startswith("undo")]
    assert [f"undo effect {n}" for n in (1, 2, 3, 4)] == undone


def ticking(n: int) -> Any:
    """A plain replacement (called in place, round after round); it halts once at 2."""
    LOG.append(f"tick {n}")
    if n == 2 and not GATE["open"]:
        raise rp.Halt("tick 2")
    if n == 0:
        return "rang"
    return rp.NewSteps(steps=[rp.step(ticking, name="alarm", args={"n": rp.Value(n - 1)})])


def test_an_in_place_replacing_loop_halted_midway_continues_from_that_round() -> None:
    """A plain replacement loop (the in-place fast path) halted in a round calls that
    round again on resume, not the step nor the rounds before."""
    r = rp.Reactor("clock", returns="alarm")

    @r.step
    def alarm() -> rp.NewSteps:
        LOG.append("alarm")
        return rp.NewSteps(steps=[rp.step(ticking, name="alarm", args={"n": rp.Value(3)})])

    checkpoint = halted(r, {})
    GATE["open"] = True
    assert "rang" == run_virtual(r.resume(checkpoint))
    assert ["alarm", "tick 3", "tick 2", "tick 2", "tick 1", "tick 0"] == LOG


def test_new_steps_halted_inside_a_composed_reactor_continue_on_resume() -> None:
    """New steps that halt inside a composed reactor continue there on resume."""
    child = booking()
    parent = rp.Reactor("parent", inputs=["n"], returns="sub")
    parent.compose("sub", child)
    checkpoint = halted(parent, {"n": 1})
    with pytest.raises(TypeError, match=r"step 'sub\.book' halted while the new steps"):
        checkpoint.to_json()
    GATE["open"] = True
    assert "booked then after" == run_virtual(parent.resume(checkpoint))
    assert ["book", "reserve", "approve", "approve", "after"] == LOG


def test_under_a_json_journal_new_steps_that_halt_are_undone_and_run_again(tmp_path: Any) -> None:
    """A journal that writes checkpoints as JSON cannot keep steps: new steps that halt are
    undone with the step's own work, and the step runs again on resume."""
    r = booking()

    async def main() -> str:
        journal = rp.SQLiteJournal(tmp_path / "runs.db", serializer=rp.JsonSerializer())
        try:
            with pytest.raises(rp.Halted):
                await r.run({"n": 1}, journal=journal, run_id="trip-1")
            GATE["open"] = True
            return await r.resume("trip-1", journal=journal)  # type: ignore[no-any-return]
        finally:
            await journal.aclose()

    assert "booked then after" == run_virtual(main())
    assert [
        *("book", "reserve", "approve", "undo reserve 2", "undo booked"),
        *("book", "reserve", "approve", "after"),
    ] == LOG


class Kinds:
    """Middleware keeping the kind and step of each event (sync hooks)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def on_event(self, event: rp.Event) -> None:
        self.seen.append((event.kind, event.step))


class AsyncKinds(Kinds):
    """The same, with an async hook (events awaited from each step's coroutine)."""

    async def on_event(self, event: rp.Event) -> None:  # type: ignore[override]
        self.seen.append((event.kind, event.step))


@pytest.mark.parametrize("kinds", [Kinds, AsyncKinds])
def test_the_step_continuing_its_new_steps_reports_its_start_and_end(kinds: type[Kinds]) -> None:
    """On resume, middleware sees the step start and complete, its halted new step start
    and complete, and nothing of the new step that completed before the halt."""
    r = booking()
    checkpoint = halted(r, {"n": 1})
    GATE["open"] = True
    hook = kinds()
    run_virtual(r.resume(checkpoint, middleware=[hook]))
    seen = hook.seen
    assert [
        ("step_start", "book"),
        ("step_start", "book.approve"),
        ("step_complete", "book.approve"),
        ("step_complete", "book"),
        ("step_start", "after"),
        ("step_complete", "after"),
    ] == seen


def test_a_checkpoint_never_holds_the_context_of_the_step() -> None:
    """A step that takes its rp.Context does not hand it to its new steps: the checkpoint
    of new steps that halt pickles though the run's context data cannot."""
    r = rp.Reactor("trip", inputs=["n"], returns="book")

    @r.step
    def book(n: int, ctx: rp.Context) -> rp.NewSteps:
        LOG.append(f"book in {ctx.step}")
        steps = [undoable(reserve, unreserve), undoable(approve, unapprove)]
        return rp.NewSteps("booked", steps=steps)

    unpicklable = {"lock": threading.Lock()}  # a client, say
    checkpoint = halted(r, {"n": 1}, context=unpicklable)
    GATE["open"] = True
    assert "booked" == run_virtual(r.resume(checkpoint, context=unpicklable))
    assert ["book in book", "reserve", "approve", "approve"] == LOG


async def flaky(reserve: int) -> int:
    """Fails after a second while the gate is closed."""
    LOG.append("flaky")
    await asyncio.sleep(1)
    if not GATE["open"]:
        raise ConnectionError("flaked")
    return reserve


def test_new_steps_that_failed_as_the_run_halts_run_again_on_resume_not_the_step() -> None:
    """New steps that fail and are still undoing when the run halts (their running steps
    get the grace) run again on resume; the step that returned them is not called again,
    nor undone."""
    r = rp.Reactor("trip", inputs=["n"], returns="book")

    @r.step
    def book(n: int) -> rp.NewSteps:
        LOG.append("book")
        steps = [undoable(reserve, unreserve), rp.step(flaky), undoable(slow, unslow)]
        return rp.NewSteps("booked", steps=steps)

    @book.undo
    def unbook(value: str) -> None:
        LOG.append(f"undo {value}")

    @r.step
    async def elsewhere(n: int) -> None:
        await asyncio.sleep(2)  # while the new steps' failure waits for `slow`
        if not GATE["open"]:
            raise rp.Halt("elsewhere")

    checkpoint = halted(r, {"n": 1})
    assert ["book", "reserve", "flaky", "slow", "undo reserve 2"] == LOG
    GATE["open"] = True
    LOG.clear()
    assert "booked" == run_virtual(r.resume(checkpoint))
    assert ["reserve", "flaky", "slow", "slow done"] == LOG


def test_a_plain_def_that_returns_new_steps_is_undone_as_of_its_return() -> None:
    """A plain def returning new steps is undone after the steps that completed once it
    returned (a sibling run inline right after it, its new steps), newest first."""
    r = rp.Reactor("trip", inputs=["n"])

    @r.step
    def book(n: int) -> rp.NewSteps:
        return rp.NewSteps("booked", steps=[undoable(reserve, unreserve)])

    @book.undo
    def unbook(value: str) -> None:
        LOG.append(f"undo {value}")

    @r.step
    def pay(n: int) -> str:
        return "paid"

    @pay.undo
    def refund(value: str) -> None:
        LOG.append(f"undo {value}")

    @r.step
    def ship(book: str, pay: str) -> None:
        raise ValueError("no ship")

    with pytest.raises(rp.RunFailed):
        run_virtual(r.run({"n": 1}))
    assert ["undo reserve 2", "undo paid", "undo booked"] == [e for e in LOG if "undo" in e]
