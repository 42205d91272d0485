"""The dispatch table: how each step of a plan runs, for one kind of run.

Owns: `Modes` and `modes_of`, which derive from a `Plan`'s facts and a run's options how
each step is started, and whether it takes a limiter slot. Derived once per plan and kind
of run (cached on the plan), so a run reads a few byte strings and builds nothing. What
middleware is attached never enters the table: observing a run does not change how it is
scheduled.
Must not import: the rest of the executor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import attrs

if TYPE_CHECKING:
    from .._plan import Plan
    from .._step import Step

__all__ = ["ATTEMPTS", "FAST", "INLINE", "TRY", "Modes", "modes_of"]

INLINE: Final = 1  # a plain def with no options: called where it becomes ready, no slot
FAST: Final = 2  # no options, simple arguments: a worker calls it directly
TRY: Final = 3  # an async def whose only options are retries or a compensation: as FAST,
# and its attempts take over when the first call fails
ATTEMPTS: Final = 4  # anything else: through `attempts.attempts` (options, composites, ...)


@attrs.frozen
class Modes:
    """How each step runs, by plan index (byte strings: one byte per step).

    Attributes:
        mode: `INLINE`, `FAST`, `TRY` or `ATTEMPTS`.
        slot: 1 if the step takes a slot of the run's limiter before it starts.
        outer: 1 if, one step at a time, the step also takes a slot of the limiter the
            caller gave (the run's own is a one-slot limiter that orders the steps).
        exclusive: 1 for a step with ``async_=False``: nothing new starts while it runs.
        undo: 1 if the step has an undo callback.
        is_async: 1 if calling the step's function gives a coroutine.
        keeps_arguments: 1 if a callback will want the step's arguments by name and they
            have paths or transforms (resolved once, kept for undo).
        slow: 1 if a worker runs the step through `scheduler.run_one` rather than its
            hot path (its attempts, or a slot of the caller's limiter around it).
        quick: 1 if, when it completes, there is nothing to record but its value and, for
            an undo, its argument values (not ``async_=False``, no undo needing its
            arguments by name): the hot path records it itself.
        chainable: 1 if, made ready by a worker, it may go straight onto that worker's
            stack (no slot to take, not inline, not ``async_=False``).
    """

    mode: bytes
    slot: bytes
    outer: bytes
    exclusive: bytes
    undo: bytes
    is_async: bytes
    keeps_arguments: bytes
    slow: bytes
    quick: bytes
    chainable: bytes


def modes_of(
    plan: Plan, *, serial: bool, executor: bool, limited: bool, outer: bool, events: bool
) -> Modes:
    """The dispatch table of `plan` for a run that is `serial` (``async_=False``), sends
    plain defs to a run-wide `executor`, is `limited` (has a limiter), and, serial, was
    given a limiter of the caller's (`outer`). With `events` (middleware that wants
    events), ``TRY`` steps run through their attempts from the first call, which reports
    each attempt (the same outcome, one path for its events); so do those that take a
    slot of the caller's limiter around them (held for all their attempts). Cached on
    the plan."""
    key = (serial, executor, limited, outer, events)
    found = plan.modes.get(key)
    if found is None:
        found = plan.modes[key] = _derive(plan, serial, executor, limited, outer, events)
    return found


def _derive(
    plan: Plan, serial: bool, executor: bool, limited: bool, outer: bool, events: bool
) -> Modes:
    """The table, one row of bytes per step (`_row`), sliced into its columns. Steps whose
    rows cannot differ (the same `Step.dispatch_key`, callbacks and kind of arguments, in
    runs with the same options) share one, made once per process (`_rows`): most steps
    cost a lookup."""
    rows: list[bytes] = []
    options = (serial, executor, limited, outer, events)
    known = _rows.get(options)
    if known is None:
        known = _rows[options] = {}
    for s, fetch in zip(plan.steps, plan.fetch, strict=True):
        key = (
            s.dispatch_key,
            s.undo_callback is None,
            s.compensate_callback is None,
            fetch is None,
        )
        row = known.get(key)
        if row is None:
            row = _row(s, fetch is not None, serial, executor, limited, outer, events)
            if len(known) < _ROWS:
                known[key] = row
        rows.append(row)
    table = b"".join(rows)
    return Modes(*(table[column::_COLUMNS] for column in range(_COLUMNS)))


_COLUMNS: Final = 10
# Rows by the run's options, then by what decides them of a step (`Step.dispatch_key`,
# callbacks, kind of arguments), for every plan: there are few kinds of step (the key is
# a small int and booleans), bounded all the same.
_rows: dict[tuple[bool, ...], dict[tuple[int, bool, bool, bool], bytes]] = {}
_ROWS: Final = 4096


def _row(
    s: Step[..., Any],
    simple: bool,
    serial: bool,
    executor: bool,
    limited: bool,
    outer: bool,
    events: bool,
) -> bytes:
    """Step `s`'s row: its byte in each column of `Modes`, in their order."""
    m = _mode(s, simple, serial, executor)
    takes = not s.composite and (s.is_async or s.executor is not None or executor)
    outer_slot = serial and outer and takes
    # A slot of the caller's limiter is taken around the coroutine the worker drives: a
    # TRY step's attempts, taking over from a failed first call, would run outside it.
    mode = ATTEMPTS if m == TRY and (events or outer_slot) else m
    slot = limited and (serial or (takes and mode != INLINE))
    exclusive = not s.async_
    undo = s.undo_callback is not None
    keeps = not simple and (undo or s.compensate_callback is not None)
    row = (
        mode,
        slot,
        outer_slot,
        exclusive,
        undo,
        s.is_async,
        keeps,
        mode == ATTEMPTS or outer_slot,  # slow
        not exclusive and (not undo or simple),  # quick
        not slot and not exclusive and mode != INLINE,  # chainable
    )
    return bytes(row)


def _mode(step: Step[..., Any], simple: bool, serial: bool, executor: bool) -> int:
    if step.composite or not simple:
        return ATTEMPTS
    if not step.is_async and executor:
        return ATTEMPTS  # sent to the run's executor
    if not step.has_features:
        if step.is_async or serial:
            return FAST
        return INLINE
    if step.is_async and step.when is None and step.timeout is None and step.executor is None:
        return TRY
    return ATTEMPTS
