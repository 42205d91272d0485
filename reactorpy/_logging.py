"""Logging: a middleware that reports runs and step events to the stdlib `logging` module.

Owns: `LoggingMiddleware` and the level and wording of each message.
Must not import: the executor's internals (it reads only `Event` and `RunInfo`).

Cheap when quiet: each hook asks ``logger.isEnabledFor(level)`` first (the logger caches the
answer) and returns at once when the level is off, so no record, message or ``extra`` dict is
built. Messages use %-style arguments, formatted only if a handler emits them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

from ._events import EVENT_KINDS, Event, RunInfo

__all__ = ["LoggingMiddleware"]

# Kinds that report trouble, and the least level they are logged at.
_RAISED: Final[dict[str, int]] = {
    "step_error": logging.WARNING,
    "step_retry": logging.WARNING,
    "step_halt": logging.WARNING,
    "compensate_error": logging.ERROR,
    "compensate_retry": logging.WARNING,
    "undo_retry": logging.WARNING,
    "undo_error": logging.ERROR,
}


class LoggingMiddleware:
    """Middleware that logs run starts and ends and every step event.

    Ordinary events are logged at `level`; retries, step errors and halts at least at
    ``WARNING``; failed runs, compensations and undos at least at ``ERROR`` (a failed run with
    its traceback). Each record carries ``extra`` fields ``reactorpy_reactor`` (run hooks),
    ``reactorpy_run_id``, and for step events ``reactorpy_step``, ``reactorpy_kind`` and
    ``reactorpy_attempt``, for structured log handlers.

    Args:
        logger: the logger to use; by default ``logging.getLogger("reactorpy")``.
        level: the level of ordinary messages (default ``logging.INFO``).

    >>> import logging, sys, reactorpy as rp
    >>> log = logging.getLogger("doctest.reactorpy")
    >>> log.addHandler(logging.StreamHandler(sys.stdout)); log.setLevel(logging.INFO)
    >>> r = rp.Reactor("hello", returns="greet", middleware=[LoggingMiddleware(log)])
    >>> @r.step
    ... def greet():
    ...     return "hi"
    >>> r.run_sync()  # doctest: +ELLIPSIS
    reactor 'hello' run ... started
    step 'greet' started (attempt 1, run ...)
    step 'greet' completed (attempt 1, run ...)
    reactor 'hello' run ... completed in ... s
    'hi'
    """

    __slots__ = ("_levels", "level", "logger")

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.INFO) -> None:
        self.logger = logger if logger is not None else logging.getLogger("reactorpy")
        self.level = level
        self._levels = {kind: max(level, least) for kind, least in _RAISED.items()}

    def __repr__(self) -> str:
        return f"<LoggingMiddleware {self.logger.name!r} at {logging.getLevelName(self.level)}>"

    @property
    def event_kinds(self) -> frozenset[str]:
        """The event kinds worth building: those whose level the logger has enabled.

        Read when a run starts, so at WARNING a successful run builds no event at all.
        """
        enabled = self.logger.isEnabledFor
        return frozenset(k for k in EVENT_KINDS if enabled(self._levels.get(k, self.level)))

    def on_run_start(self, run: RunInfo) -> None:
        """Log that a run started."""
        if self.logger.isEnabledFor(self.level):
            self.logger.log(
                self.level,
                "reactor %r run %s started",
                run.reactor,
                run.run_id,
                extra=_run_extra(run),
            )

    def on_event(self, event: Event) -> None:
        """Log a step event (nothing is built when its level is disabled)."""
        level = self._levels.get(event.kind, self.level)
        if not self.logger.isEnabledFor(level):
            return
        kind = event.kind
        what, verb = _WORDS.get(kind) or (kind, "happened")
        extra = {
            "reactorpy_run_id": event.run_id,
            "reactorpy_step": event.step,
            "reactorpy_kind": kind,
            "reactorpy_attempt": event.attempt,
        }
        if event.error is not None:
            self.logger.log(
                level,
                "%s %r %s (attempt %d, run %s): %r",
                what,
                event.step,
                verb,
                event.attempt,
                event.run_id,
                event.error,
                extra=extra,
            )
        else:
            self.logger.log(
                level,
                "%s %r %s (attempt %d, run %s)",
                what,
                event.step,
                verb,
                event.attempt,
                event.run_id,
                extra=extra,
            )

    def on_run_complete(self, run: RunInfo, result: Any) -> None:
        """Log that a run completed, and how long it took (the result is left as it is)."""
        if self.logger.isEnabledFor(self.level):
            self.logger.log(
                self.level,
                "reactor %r run %s completed in %.3f s",
                run.reactor,
                run.run_id,
                _elapsed(run),
                extra=_run_extra(run),
            )

    def on_run_error(self, run: RunInfo, error: BaseException) -> None:
        """Log a failed run, with its error's traceback."""
        level = max(self.level, logging.ERROR)
        if self.logger.isEnabledFor(level):
            self.logger.log(
                level,
                "reactor %r run %s failed after %.3f s: %s",
                run.reactor,
                run.run_id,
                _elapsed(run),
                error,
                exc_info=error,
                extra=_run_extra(run),
            )

    def on_run_halt(self, run: RunInfo, checkpoint: Any) -> None:
        """Log a halted run and why it halted."""
        level = max(self.level, logging.WARNING)
        if self.logger.isEnabledFor(level):
            self.logger.log(
                level,
                "reactor %r run %s halted after %.3f s: %r",
                run.reactor,
                run.run_id,
                _elapsed(run),
                getattr(checkpoint, "reason", None),
                extra=_run_extra(run),
            )


_WORDS: Final[dict[str, tuple[str, str]]] = {
    "step_start": ("step", "started"),
    "step_complete": ("step", "completed"),
    "step_error": ("step", "failed"),
    "step_retry": ("step", "will retry"),
    "step_halt": ("step", "halted"),
    "guard_skip": ("step", "skipped by its guard"),
    "compensate_start": ("compensation of step", "started"),
    "compensate_complete": ("compensation of step", "completed, the error stands"),
    "compensate_continue": ("compensation of step", "continued with a value"),
    "compensate_retry": ("compensation of step", "asked for a retry"),
    "compensate_error": ("compensation of step", "failed"),
    "undo_start": ("undo of step", "started"),
    "undo_complete": ("undo of step", "completed"),
    "undo_retry": ("undo of step", "will retry"),
    "undo_error": ("undo of step", "failed"),
}


def _run_extra(run: RunInfo) -> dict[str, Any]:
    return {"reactorpy_reactor": run.reactor, "reactorpy_run_id": run.run_id}


def _elapsed(run: RunInfo) -> float:
    try:
        return asyncio.get_running_loop().time() - run.start
    except RuntimeError:  # called by hand, outside a loop
        return 0.0
