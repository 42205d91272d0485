"""Events and middleware: kinds filters, sync and async hooks, endings of every run."""

from __future__ import annotations

import asyncio
import contextvars
import logging

import pytest

import reactorpy as rp
from reactorpy.testing import run_virtual


def story() -> rp.Reactor:
    r = rp.Reactor("story", returns="c")

    @r.step
    def a():
        return 1

    @r.step
    async def b(a):
        await asyncio.sleep(0)
        return a + 1

    @r.step(retries=1, retry_on=KeyError)
    async def c(b):
        return b + 1

    return r


class SyncHooks:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def on_event(self, event: rp.Event) -> None:
        self.events.append((event.kind, event.step))


class AsyncHooks:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    async def on_event(self, event: rp.Event) -> None:
        await asyncio.sleep(0)
        self.events.append((event.kind, event.step))


async def test_sync_and_async_hooks_see_the_same_events():
    """Sync hooks (delivered inline) and async hooks (awaited) get the same event stream."""
    sync, asyn = SyncHooks(), AsyncHooks()
    assert 3 == await story().run(middleware=[sync])
    assert 3 == await story().run(middleware=[asyn])
    expected = [
        ("step_start", "a"),
        ("step_complete", "a"),
        ("step_start", "b"),
        ("step_complete", "b"),
        ("step_start", "c"),
        ("step_complete", "c"),
    ]
    assert expected == sync.events
    assert expected == asyn.events


async def test_event_kinds_attribute_narrows_what_is_built():
    """Middleware with event_kinds receives only those kinds."""

    class OnlyErrors(SyncHooks):
        event_kinds = frozenset({"step_error"})

    hooks = OnlyErrors()
    r = rp.Reactor("e")

    @r.step
    def ok():
        return 1

    @r.step
    async def bad(ok):
        raise ValueError("x")

    with pytest.raises(rp.RunFailed):
        await r.run(middleware=[hooks])
    assert [("step_error", "bad")] == hooks.events


async def test_logging_at_warning_builds_no_event_for_a_good_run():
    """LoggingMiddleware's event_kinds follow the logger level: WARNING wants errors only."""
    logger = logging.getLogger("test.reactorpy.quiet")
    logger.setLevel(logging.WARNING)
    mw = rp.LoggingMiddleware(logger)
    assert "step_start" not in mw.event_kinds
    assert "step_error" in mw.event_kinds
    logger.setLevel(logging.DEBUG)
    assert "step_start" in mw.event_kinds


def test_keyboard_interrupt_ends_with_on_run_error():
    """A run ended by KeyboardInterrupt tells middleware through on_run_error."""
    seen = []

    class M:
        def on_run_error(self, run, error):
            seen.append(type(error))

    r = rp.Reactor("kbd")

    @r.step
    def a():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_virtual(r.run(middleware=[M()]))
    assert [KeyboardInterrupt] == seen


def test_cancelled_run_ends_with_on_run_error():
    """A run cancelled from outside tells middleware through on_run_error."""
    seen = []

    class M:
        def on_run_error(self, run, error):
            seen.append(type(error))

    r = rp.Reactor("cancel")

    @r.step
    async def slow():
        await asyncio.sleep(10)

    async def main():
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1):
                await r.run(middleware=[M()])

    run_virtual(main())
    assert [asyncio.CancelledError] == seen


def test_undo_giving_up_ends_its_last_start():
    """After 5 undo attempts the last undo_start is matched by an undo_error."""
    hooks = SyncHooks()
    r = rp.Reactor("undo-5")

    @r.step
    def a():
        return 1

    @a.undo
    def never(value):
        raise rp.Retry("not yet")

    @r.step
    def b(a):
        raise ValueError

    with pytest.raises(rp.RunFailed):
        run_virtual(r.run(middleware=[hooks]))
    undo = [k for k, s in hooks.events if s == "a" and k.startswith("undo")]
    assert ["undo_start", "undo_retry"] * 4 + ["undo_start", "undo_error"] == undo


async def test_composed_run_info_names_are_prefixed():
    """A composed child's RunInfo names its steps and critical path with the parent prefix."""
    infos = []

    class M:
        def on_run_start(self, run):
            infos.append(run)

    child = rp.Reactor("child", returns="x")
    child.step(lambda: 1, name="x")
    parent = rp.Reactor("parent", returns="sub")
    parent.compose("sub", child)
    await parent.run(middleware=[M()])
    inner = next(i for i in infos if i.parent is not None)
    assert ("sub.x",) == inner.step_names
    assert ("sub.x",) == inner.critical_path


class Exploding:
    """Middleware whose hook raises on one event kind."""

    def __init__(self, kind: str, step: str | None = None, asynchronous: bool = False) -> None:
        self.kind, self.step = kind, step
        if asynchronous:
            self.on_event = self._async_on_event  # type: ignore[method-assign]

    def on_event(self, event: rp.Event) -> None:
        if event.kind == self.kind and (self.step is None or event.step == self.step):
            raise RuntimeError(f"middleware broke on {event.kind}")

    async def _async_on_event(self, event: rp.Event) -> None:
        await asyncio.sleep(0)
        Exploding.on_event(self, event)


@pytest.mark.parametrize("plain_def", [False, True])
@pytest.mark.parametrize("asynchronous", [False, True])
@pytest.mark.parametrize("kind", ["step_start", "step_complete", "undo_start"])
def test_a_raising_middleware_fails_the_run_cleanly(kind: str, asynchronous: bool, plain_def: bool):
    """A middleware that raises fails the run: undo still runs and nothing leaks (also
    when the step it reported on is a plain def, run inline on the loop)."""
    undone = []
    r = rp.Reactor("explode")

    @r.step
    async def a():
        return "a"

    @a.undo
    def undo_a(value):
        undone.append(value)

    def b(a):
        if kind == "undo_start":
            raise ValueError("b fails so that undo starts")
        return "b"

    async def async_b(a):
        return b(a)

    r.add(rp.step(b if plain_def else async_b, name="b"))

    async def main():
        with pytest.raises(rp.RunFailed) as info:
            await r.run(
                middleware=[Exploding(kind, None if kind == "undo_start" else "b", asynchronous)]
            )
        leftover = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
        return info.value, leftover

    failed, leftover = run_virtual(main())
    assert set() == leftover
    messages = [str(e) for e in failed.exceptions]
    if kind == "undo_start":
        assert any("middleware broke" in m for m in messages)
    else:
        assert ["middleware broke on " + kind] == messages
    assert ["a"] == undone


def test_middleware_raising_at_run_start_starts_nothing():
    """A failing on_run_start fails the run (RunFailed holding its error) before any step
    starts, and the other middleware still see the run end."""
    ran = []
    ended = []

    class Bad:
        def on_run_start(self, run):
            raise RuntimeError("no")

    class Watch:
        def on_run_error(self, run, error):
            ended.append(type(error).__name__)

    r = rp.Reactor("start")
    r.step(lambda: ran.append(1), name="s")
    with pytest.raises(rp.RunFailed, match="on_run_start") as info:
        run_virtual(r.run(middleware=[Bad(), Watch()]))
    assert info.group_contains(RuntimeError, match="no")
    assert [] == ran
    assert ["RunFailed"] == ended


async def test_event_kinds_filter_each_middleware_on_its_own():
    """A middleware with event_kinds gets only those, even next to one that wants all."""

    class Narrow(SyncHooks):
        event_kinds = frozenset({"step_complete"})

    narrow, wide = Narrow(), SyncHooks()
    await story().run(middleware=[narrow, AsyncHooks(), wide])
    assert {"step_complete"} == {k for k, _ in narrow.events}
    assert "step_start" in {k for k, _ in wide.events}


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_a_step_returning_new_steps_completes_after_them(asynchronous: bool):
    """step_complete of a step that returns NewSteps comes once its new steps are done."""
    hooks = AsyncHooks() if asynchronous else SyncHooks()
    r = rp.Reactor("dyn", returns="gen")

    @r.step
    async def gen():
        return rp.NewSteps(100, steps=[rp.step(lambda: 1, name="extra")])

    assert 100 == await r.run(middleware=[hooks])
    assert [
        ("step_start", "gen"),
        ("step_start", "gen.extra"),
        ("step_complete", "gen.extra"),
        ("step_complete", "gen"),
    ] == hooks.events


async def test_error_events_reach_a_middleware_that_only_wants_errors():
    """Plain steps taking the short path still report their errors and halts."""

    class Errors(SyncHooks):
        event_kinds = frozenset({"step_error", "step_halt"})

    hooks = Errors()
    r = rp.Reactor("errors-only")

    @r.step
    async def ok():
        return 1

    @r.step
    async def bad():
        raise ValueError("x")

    with pytest.raises(rp.RunFailed):
        await r.run(middleware=[hooks])
    assert [("step_error", "bad")] == hooks.events

    halting = rp.Reactor("halt-only")

    @halting.step
    async def pause():
        raise rp.Halt("wait")

    with pytest.raises(rp.Halted):
        await halting.run(middleware=[hooks])
    assert ("step_halt", "pause") == hooks.events[-1]


CURRENT: contextvars.ContextVar[str] = contextvars.ContextVar("CURRENT", default="none")


def test_a_steps_events_are_delivered_in_its_own_context():
    """What a sync on_event hook sets in the context at step_start, that step's code sees
    (how tracing middleware makes a step's span current), for every way a step is run:
    batched siblings, a chain continued by its worker, plain defs, steps with options."""

    class SetsCurrent:
        def on_event(self, event: rp.Event) -> None:
            if event.kind == "step_start":
                CURRENT.set(event.step)

    r = rp.Reactor("contexts")

    @r.step
    async def root():
        return CURRENT.get()

    async def leaf(root):
        await asyncio.sleep(0.01)
        return CURRENT.get()

    for name in ("left", "right"):
        r.add(rp.step(leaf), name=name)

    @r.step
    def plain_def(left):
        return CURRENT.get()

    @r.step(retries=1)
    async def with_options(right):
        return CURRENT.get()

    @r.step
    async def chained(plain_def, with_options):
        return CURRENT.get()

    result = run_virtual(r.run(middleware=[SetsCurrent()]))
    assert result == {name: name for name in result}
    assert CURRENT.get() == "none"


async def test_middleware_none_is_none_and_a_lone_object_is_refused():
    """middleware=None means no middleware; one middleware object not in a list is a
    clear TypeError, for a reactor and for a run."""
    r = rp.Reactor("lone", returns="a", middleware=None)

    @r.step
    async def a():
        return 1

    assert 1 == await r.run(middleware=None)
    with pytest.raises(TypeError, match=r"middleware=\[\.\.\.\]"):
        await r.run(middleware=rp.Trace())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Reactor 'x'.*list of middleware"):
        rp.Reactor("x", middleware=rp.Trace())  # type: ignore[arg-type]


def test_a_sync_hook_that_raises_on_every_event_does_not_hang_the_run():
    """A sync on_event hook raising at step_start and again at step_error (the CLI's
    printer on a closed pipe): the run ends with RunFailed holding the hook's error."""

    class Broken:
        def on_event(self, event):
            raise BrokenPipeError("pipe closed")

    r = rp.Reactor("broken-pipe", returns="s")

    @r.step
    async def s():
        return 1

    with pytest.raises(rp.RunFailed) as info:
        run_virtual(asyncio.wait_for(r.run(middleware=[Broken()]), 5))
    assert info.group_contains(BrokenPipeError)


@pytest.mark.parametrize("hook", ["on_run_error", "on_run_complete", "on_run_halt"])
def test_a_raising_ending_hook_never_loses_the_runs_outcome(hook: str):
    """An ending hook that raises: a failure still raises RunFailed (after undo), a halt
    still raises Halted with its checkpoint, and a completion that a hook fails is undone
    and raised as RunFailed."""
    undone: list[int] = []

    class Broken:
        pass

    def broken(*args):
        raise RuntimeError(f"{hook} broke")

    setattr(Broken, hook, staticmethod(broken))
    r = rp.Reactor("ending", returns="last")

    @r.step
    async def first():
        return 1

    @first.undo
    async def undo_first(value):
        undone.append(value)

    @r.step
    async def last(first):
        if hook == "on_run_error":
            raise ValueError("boom")
        if hook == "on_run_halt":
            raise rp.Halt("later")
        return 2

    expected = {"on_run_error": rp.RunFailed, "on_run_complete": rp.RunFailed}
    with pytest.raises(expected.get(hook, rp.Halted)) as info:
        run_virtual(r.run(middleware=[Broken()]))
    if hook == "on_run_halt":
        assert info.value.checkpoint.completed == ("first",)
        assert [] == undone
    else:
        assert [1] == undone
    if hook == "on_run_complete":
        assert info.group_contains(RuntimeError, match="on_run_complete broke")


def test_on_run_error_may_replace_the_error():
    """A hook returning an exception from on_run_error makes it the error run() raises,
    with the original as its __cause__ (as on_run_complete may replace the result)."""

    class DomainError(Exception):
        pass

    class Translate:
        def on_run_error(self, run, error):
            return DomainError("order could not be placed")

    r = rp.Reactor("replace")

    @r.step
    async def place():
        raise ValueError("card declined")

    with pytest.raises(DomainError) as info:
        run_virtual(r.run(middleware=[Translate()]))
    assert isinstance(info.value.__cause__, rp.RunFailed)


@pytest.mark.parametrize("turns", range(6))
def test_a_completion_an_async_hook_is_delivering_survives_a_cancellation(turns: int):
    """A step completes while an async on_event hook delivers its step_complete; the run is
    cancelled then: the step counts as completed, so it is undone with the rest."""
    done: list[str] = []
    undone: list[str] = []
    r = rp.Reactor("r")

    @r.step
    def book():
        done.append("booking")
        return "booking"

    @book.undo
    def cancel(value):
        undone.append(value)

    @r.step
    async def later(book):
        await asyncio.sleep(10)

    class Exporter:
        async def on_event(self, event):
            await asyncio.sleep(0)

    async def main():
        task = asyncio.ensure_future(r.run(middleware=[Exporter()]))
        for _ in range(turns):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run_virtual(main())
    assert done == undone


@pytest.mark.parametrize("executor", [None, "thread"])
async def test_the_elements_of_a_map_report_their_events_wherever_they_run(
    executor: str | None,
) -> None:
    """A map of a plain step reports each element's events to middleware, on the loop as
    in a thread (on the loop it skipped them: observing depended on where steps ran)."""
    from reactorpy.testing import Recorder

    @rp.step
    def double(x: int) -> int:
        return 2 * x

    r = rp.Reactor("m", inputs=["xs"], returns="all")
    r.map("all", "xs", double)
    recorder = Recorder()
    assert await r.run({"xs": [1, 2]}, middleware=[recorder], executor=executor) == [2, 4]
    kinds = {(e.step, e.kind) for e in recorder.events}
    for k in (0, 1):
        name = f"all.[{k}].double"
        assert {(name, "step_start"), (name, "step_complete")} <= kinds
