"""`LoggingMiddleware`: what it logs, at which level, and that quiet levels cost nothing."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import reactorpy as rp
from reactorpy._logging import LoggingMiddleware
from reactorpy.testing import run_virtual


class CountingLogger(logging.Logger):
    """A logger that counts the records it builds and keeps them."""

    def __init__(self, name: str, level: int) -> None:
        super().__init__(name, level)
        self.made = 0
        self.logged = 0
        self.records: list[logging.LogRecord] = []

    def _log(self, *args: Any, **kwargs: Any) -> None:
        self.logged += 1
        super()._log(*args, **kwargs)

    def makeRecord(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        self.made += 1
        return super().makeRecord(*args, **kwargs)

    def handle(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self) -> list[tuple[str, str]]:
        return [(r.levelname, r.getMessage()) for r in self.records]


def seed() -> rp.Reactor:
    r = rp.Reactor("seed", inputs=["user_id"], returns="aggregate")

    @r.step
    async def fetch(user_id: int) -> int:
        await asyncio.sleep(0.2)
        return user_id

    @r.step
    def aggregate(fetch: int) -> int:
        return fetch

    return r


def failing() -> rp.Reactor:
    r = rp.Reactor("failing", returns="boom")

    @r.step
    async def ok() -> int:
        await asyncio.sleep(0.1)
        return 1

    @ok.undo
    def undo_ok(value: int) -> None:
        pass

    @r.step
    async def boom(ok: int) -> None:
        raise ValueError("bad")

    return r


def test_info_logs_runs_and_step_events():
    """At INFO, a run logs its start, each step's start and completion, and its end time."""
    log = CountingLogger("t", logging.INFO)
    run_virtual(seed().run({"user_id": 5}, middleware=[LoggingMiddleware(log)]))
    run_id = log.records[0].reactorpy_run_id
    assert log.lines() == [
        ("INFO", f"reactor 'seed' run {run_id} started"),
        ("INFO", f"step 'fetch' started (attempt 1, run {run_id})"),
        ("INFO", f"step 'fetch' completed (attempt 1, run {run_id})"),
        ("INFO", f"step 'aggregate' started (attempt 1, run {run_id})"),
        ("INFO", f"step 'aggregate' completed (attempt 1, run {run_id})"),
        ("INFO", f"reactor 'seed' run {run_id} completed in 0.200 s"),
    ]
    step = log.records[1]
    assert (step.reactorpy_step, step.reactorpy_kind, step.reactorpy_attempt) == (
        "fetch",
        "step_start",
        1,
    )
    assert log.records[0].reactorpy_reactor == "seed"


def test_errors_are_warnings_and_failed_runs_errors():
    """A step error is a WARNING naming the error; the failed run an ERROR with traceback."""
    log = CountingLogger("t", logging.WARNING)
    with pytest.raises(rp.RunFailed):
        run_virtual(failing().run(middleware=[LoggingMiddleware(log)]))
    levels = [level for level, _ in log.lines()]
    messages = [message for _, message in log.lines()]
    assert levels == ["WARNING", "ERROR"]
    assert messages[0].startswith("step 'boom' failed (attempt 1, run ")
    assert messages[0].endswith("): ValueError('bad')")
    assert "failed after 0.100 s" in messages[1]
    assert log.records[1].exc_info is not None


def test_quiet_levels_build_no_records():
    """At WARNING, a successful run's INFO step events never reach makeRecord or _log."""
    log = CountingLogger("t", logging.WARNING)
    run_virtual(seed().run({"user_id": 5}, middleware=[LoggingMiddleware(log)]))
    assert (log.logged, log.made) == (0, 0)


def test_retries_and_halts_are_warnings():
    """Retries and halts are logged at WARNING even when ordinary events are at DEBUG."""
    r = rp.Reactor("retrying", returns="pause")
    calls = []

    @r.step(retries=1)
    async def flaky() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise rp.Retry("busy")
        return 1

    @r.step
    def pause(flaky: int) -> None:
        raise rp.Halt("wait for approval")

    log = CountingLogger("t", logging.WARNING)
    with pytest.raises(rp.Halted):
        run_virtual(r.run(middleware=[LoggingMiddleware(log, level=logging.DEBUG)]))
    messages = [m for _, m in log.lines()]
    assert [level for level, _ in log.lines()] == ["WARNING", "WARNING", "WARNING"]
    assert messages[0].startswith("step 'flaky' will retry (attempt 1")
    assert messages[1].startswith("step 'pause' halted (attempt 1")
    assert messages[2].endswith(": 'wait for approval'")


def test_undo_and_guard_wording():
    """Undo and guard events read as sentences."""
    r = rp.Reactor("words", returns="fail")

    @r.step(when=lambda: False)
    def skipped() -> int:
        return 1

    @r.step
    def done() -> int:
        return 1

    @done.undo
    def undo_done(value: int) -> None:
        pass

    @r.step
    def fail(done: int, skipped: int | None) -> None:
        raise RuntimeError("x")

    log = CountingLogger("t", logging.DEBUG)
    with pytest.raises(rp.RunFailed):
        run_virtual(r.run(middleware=[LoggingMiddleware(log)]))
    messages = [m.split(" (")[0] for _, m in log.lines()]
    assert "step 'skipped' skipped by its guard" in messages
    assert "undo of step 'done' started" in messages
    assert "undo of step 'done' completed" in messages


def test_default_logger_and_repr():
    """By default the 'reactorpy' logger is used, at INFO."""
    mw = LoggingMiddleware()
    assert mw.logger is logging.getLogger("reactorpy")
    assert repr(mw) == "<LoggingMiddleware 'reactorpy' at INFO>"


def test_caplog_integration(caplog: pytest.LogCaptureFixture):
    """Records go through the ordinary logging machinery (here, pytest's caplog)."""
    with caplog.at_level(logging.INFO, logger="reactorpy"):
        run_virtual(seed().run({"user_id": 1}, middleware=[LoggingMiddleware()]))
    assert [r.name for r in caplog.records] == ["reactorpy"] * 6


def test_run_hooks_outside_a_loop_and_disabled_levels():
    """Hooks called by hand outside a loop report 0 s; disabled run levels build nothing."""
    log = CountingLogger("t", logging.INFO)
    mw = LoggingMiddleware(log)
    run = rp.RunInfo("r", "id1", {}, {})
    mw.on_run_complete(run, None)
    assert log.lines() == [("INFO", "reactor 'r' run id1 completed in 0.000 s")]
    quiet = CountingLogger("q", logging.CRITICAL)
    mw = LoggingMiddleware(quiet)
    mw.on_run_start(run)
    mw.on_run_error(run, ValueError("x"))
    mw.on_run_halt(run, None)
    assert (quiet.logged, quiet.made) == (0, 0)
