"""Run options: checked once, before any step runs, with errors that say what is right."""

from __future__ import annotations

import asyncio

import pytest

import reactorpy as rp
from reactorpy.testing import run_virtual


def reactor(log: list[str]) -> rp.Reactor:
    r = rp.Reactor("r", inputs=["x"], returns="work")

    @r.step(concurrency_key="db")
    async def work(x):
        log.append("work")
        return x

    return r


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"timeout": "1"}, TypeError, "timeout must be a number of seconds > 0, got '1'"),
        ({"timeout": 0}, ValueError, "timeout must be a number of seconds > 0, got 0"),
        ({"grace": "5"}, TypeError, "grace must be a number of seconds >= 0, got '5'"),
        ({"grace": -1}, ValueError, "grace must be a number of seconds >= 0"),
        ({"grace": None}, TypeError, "grace must be a number of seconds >= 0, got None"),
        ({"max_concurrency": 0}, ValueError, "max_concurrency must be an int >= 1"),
        ({"max_concurrency": "2"}, ValueError, "max_concurrency must be an int >= 1"),
        ({"limits": {"db": 0}}, ValueError, r"limits\['db'\] must be an int >= 1"),
        ({"limits": ["db"]}, TypeError, "limits must map concurrency keys to caps"),
        ({"limits": {"nope": 1}}, ValueError, "limits of 'r' name 'nope', which no step"),
        ({"context": []}, TypeError, "context must be a dict"),
        ({"async_": "no"}, TypeError, "async_ must be True or False"),
        ({"middleware": object()}, TypeError, "middleware must be a list"),
        ({"executor": 3}, rp.DefinitionError, "executor must be 'thread'"),
        ({"timout": 1}, TypeError, "unknown option 'timout'. Did you mean 'timeout'"),
    ],
)
def test_bad_run_options_fail_before_any_step(options, error, message):
    """A wrong option is one clear error naming it and its value; no step has run."""
    log: list[str] = []
    with pytest.raises(error, match=message):
        run_virtual(reactor(log).run({"x": 1}, **options))
    assert [] == log


def test_resume_and_run_reversible_check_options_the_same_way():
    """resume() and run_reversible() take run()'s options, checked by the same rules."""
    log: list[str] = []
    r = reactor(log)
    with pytest.raises(TypeError, match=r"run_reversible\(\) of 'r': grace"):
        run_virtual(r.run_reversible({"x": 1}, grace="5"))
    with pytest.raises(TypeError, match="unknown option 'timout'"):
        run_virtual(r.resume(_halted_checkpoint(), timout=1))


def _halted_checkpoint() -> rp.Checkpoint:
    r = rp.Reactor("h", returns="s")

    @r.step
    def s():
        raise rp.Halt("wait")

    with pytest.raises(rp.Halted) as info:
        r.run_sync()
    return info.value.checkpoint


def test_limits_may_name_keys_of_composed_reactors():
    """A key used only by a step of a composed reactor is a key in use."""
    log: list[str] = []
    parent = rp.Reactor("parent", inputs=["x"], returns="sub")
    parent.compose("sub", reactor(log))
    assert 1 == run_virtual(parent.run({"x": 1}, limits={"db": 1}))
    assert rp.Reactor("declared", limits={"db": 1}).limits == {"db": 1}


def test_a_shared_limiter_may_cap_keys_no_step_of_this_reactor_uses():
    """A shared rp.Limiter serves many reactors: its keys are not checked against one."""
    log: list[str] = []
    shared = rp.Limiter(2, limits={"other": 1})
    assert 1 == run_virtual(reactor(log).run({"x": 1}, max_concurrency=shared))


async def test_run_sync_inside_a_running_loop_says_to_await_run():
    """run_sync() in a running loop is a RuntimeError pointing at `await reactor.run()`,
    with no 'coroutine was never awaited' warning (the suite turns warnings into errors)."""
    log: list[str] = []
    with pytest.raises(RuntimeError, match=r"await reactor.run\(...\)"):
        reactor(log).run_sync({"x": 1})
    await asyncio.sleep(0)
    assert [] == log
