"""Durable runs survive SIGKILL: a few crash trials (``tests/crashing.py``) on each
journal, and the trials' checker catching what it must. ``benchmarks/crash.py`` runs
a thousand."""

from __future__ import annotations

from typing import Any

import pytest

from .crashing import Backend, Execution, RunState, TrialReport, check, places, run_trial
from .test_journal import postgres_dsn

SQLITE_SEEDS = (1, 2, 3, 4, 5)
POSTGRES_SEEDS = (1, 2, 3)


@pytest.mark.parametrize("seed", SQLITE_SEEDS)
def test_runs_killed_at_random_moments_recover_on_sqlite(seed: int) -> None:
    """Killed mid-step, between steps, mid-undo or mid-recovery, every run ends completed
    with all its effects, or failed/undone with none of its undoable ones; no completed
    step or done undo runs again; nothing hangs."""
    report = run_trial(seed, Backend("sqlite"))
    assert [] == report.violations, report.details


@pytest.mark.parametrize("seed", POSTGRES_SEEDS)
def test_runs_killed_at_random_moments_recover_on_postgres(seed: int) -> None:
    """The same on PostgreSQL."""
    report = run_trial(seed, Backend("postgres", postgres_dsn()))
    assert [] == report.violations, report.details


# --------------------------------------------------------------------------- the checker


RUN = {"run_id": "r", "inputs": {"order": "r", "items": [["r", 0]], "fail": None, "flaky": False}}
ALL = ["reserve", "charge", "email", "ship", "points", "sub.book", "sub.confirm"]
ALL += ["packed.[0].pack", "gifts", "gifts.g0", "gifts.g1", "audit", "finish"]


def checked(
    final: RunState,
    effects: list[str],
    executions: list[Execution] = (),  # type: ignore[assignment]
    before: RunState | None = None,
    run: dict[str, Any] = RUN,
) -> list[str]:
    report = TrialReport(0)
    phases = [("recovery-1", {"r": before}, False)] if before is not None else []
    check(report, [run], phases, {"r": final}, {"r": {s: f"{s}@r" for s in effects}}, executions)
    return report.violations


def state(status: str, keys: list[str], undone: tuple[str, ...] = ()) -> RunState:
    """What the journal holds: `keys` completed in order, each by its first execution."""
    result = {"order": "r", "packed": 1} if status == "completed" else None
    entries = {k: n for n, k in enumerate(keys, 1)}
    return RunState(status, False, entries, frozenset(undone), result, dict.fromkeys(keys, 1))


def test_the_checker_passes_a_completed_run_with_every_effect() -> None:
    """A completed run with each step's effect and the expected result passes."""
    assert [] == checked(state("completed", ALL), ALL)


def test_the_checker_flags_a_completed_run_missing_an_effect() -> None:
    """A completed run without ``sub.book``'s effect is a violation."""
    [violation] = checked(state("completed", ALL), [s for s in ALL if s != "sub.book"])
    assert "missing ['sub.book']" in violation


def test_the_checker_flags_an_undoable_effect_left_by_a_failed_run() -> None:
    """A failed run that left the effect of a step it recorded, which has an undo, is a
    violation; one it never recorded is an orphan; one without an undo may stay."""
    failing = {"run_id": "r", "inputs": {**RUN["inputs"], "fail": "audit"}}  # type: ignore[dict-item]
    report = TrialReport(0)
    final = state("failed", ["reserve", "charge", "email"], ("reserve",))
    effects = {"r": {s: f"{s}@r" for s in ("charge", "email", "ship")}}
    check(report, [failing], [], {"r": final}, effects, [])
    assert ["r: ship"] == report.orphans
    [violation] = report.violations
    assert "'charge' (completion recorded, seq 2" in violation


def test_an_effect_rewritten_after_its_undo_by_an_unrecorded_run_is_an_orphan() -> None:
    """A step undone (marked) whose effect is back: an orphan if it ran again after its
    undo (in flight at a kill), a violation if not (its undo did not take)."""
    failing = {"run_id": "r", "inputs": {**RUN["inputs"], "fail": "audit"}}  # type: ignore[dict-item]
    final = {"r": state("failed", ["reserve", "charge"], ("reserve", "charge"))}
    effects = {"r": {"reserve": "reserve@r", "charge": "charge@r"}}
    story = ["do reserve", "do charge", "undo charge", "undo reserve", "do reserve"]
    ran = [Execution("worker", k, "r", s, s, f"r:{s}") for k, s in map(str.split, story)]
    report = TrialReport(0)
    check(report, [failing], [], final, effects, ran)
    assert ["r: reserve"] == report.orphans
    [violation] = report.violations
    assert "the effect of 'charge' (completion recorded, seq 2, undone marked: True)" in violation


def test_the_checker_flags_a_recorded_step_run_again_and_a_done_undo_run_again() -> None:
    """A step whose completion the journal held before a recovery must not run in it,
    nor an undo it held as done; a step undone in the recovery may run again after."""
    before = state("running", ["reserve", "charge"], ("reserve",))
    ran = [
        Execution("recovery-1", "do", "r", "charge", "charge", "r:charge"),
        Execution("recovery-1", "undo", "r", "reserve", "reserve", "r:reserve"),
        Execution("recovery-1", "undo", "r", "ship", "ship", "r:ship"),
        Execution("recovery-1", "do", "r", "ship", "ship", "r:ship"),
    ]
    violations = checked(state("completed", ALL), ALL, ran, before)
    assert 2 == len(violations)
    assert "'charge' ran again in recovery-1" in violations[0]
    assert "the undo of 'reserve' ran again in recovery-1" in violations[1]


def test_the_checker_flags_a_step_seeing_two_idempotency_keys() -> None:
    """Every execution of a step in a run sees one idempotency key."""
    ran = [
        Execution("worker", "do", "r", "charge", "charge", "r:charge"),
        Execution("recovery-1", "do", "r", "charge", "charge", "other"),
    ]
    [violation] = checked(state("completed", ALL), ALL, ran)
    assert "saw several keys" in violation


def test_the_checker_flags_a_step_started_before_its_dependencies_were_recorded() -> None:
    """A step that ran in a process before its dependencies' completions were durable
    (the journal held none of them once that process was gone) is a violation; so is an
    undo of a step never recorded."""
    before = state("running", ["reserve"])
    ran = [
        Execution("worker", "do", "r", "reserve", "reserve", "r:reserve"),
        Execution("worker", "do", "r", "charge", "charge", "r:charge"),
        Execution("worker", "do", "r", "email", "email", "r:email"),
        Execution("worker", "undo", "r", "email", "email", "r:email"),
    ]
    violations = checked(state("completed", ALL), ALL, ran, before)
    assert 2 == len(violations)
    assert "'email' ran in worker before its dependencies ['charge'] were recorded" in violations[0]
    assert "the undo of 'email' ran in worker, but its completion was never" in violations[1]


def test_the_checker_flags_a_step_run_again_before_its_undo_was_marked_done() -> None:
    """A step run again after its undo (a retried child), once its process is gone: the
    journal must hold the undo as done, or a completion of that second run."""
    story = ["do sub.book", "undo sub.book", "do sub.book"]
    ran = [Execution("worker", k, "r", s, s, f"r:{s}") for k, s in map(str.split, story)]
    before = state("running", ["reserve", "charge", "sub.book"])
    marked = state("running", ["reserve", "charge", "sub.book"], ("sub.book",))
    redone = state("running", ["reserve", "charge", "sub.book"])
    redone.made["sub.book"] = 2
    final = state("completed", ALL)
    for after, broken in [(before, True), (marked, False), (redone, False)]:
        violations = checked(final, ALL, ran, after)
        assert broken == any("ran again in worker after its undo" in v for v in violations)


def test_the_checker_flags_an_unfinished_run() -> None:
    """A run still running after the last recovery is a violation."""
    [violation] = checked(state("running", ["reserve"]), ["reserve"])
    assert "'running' after the last recovery" in violation


def test_the_checker_holds_an_undoing_recovery_to_newest_first_new_steps_after_their_step() -> None:
    """Newest first by seq, but ``gifts`` (which returned ``gifts.g0`` and ``g1``) comes
    before them even when a recovery ran it again after ``g0`` was recorded: undoing it
    before ``g0`` is flagged, after is not."""
    keys = ["reserve", "charge", "gifts.g0", "gifts", "gifts.g1"]
    assert places(dict(zip(keys, range(1, 6), strict=True)))["gifts"] == (3, 0)
    before = RunState("running", True, {k: n for n, k in enumerate(keys, 1)}, frozenset())

    def flagged(order: list[str]) -> list[str]:
        ran = [Execution("recovery-1", "undo", "r", s, s, f"r:{s}") for s in order]
        report = TrialReport(0)
        final = {"r": state("undone", keys, tuple(keys))}
        check(report, [RUN], [("recovery-1", {"r": before}, True)], final, {}, ran)
        return [v for v in report.violations if "newest first" in v]

    assert [] == flagged(["gifts.g1", "gifts.g0", "gifts", "charge", "reserve"])
    assert flagged(["gifts.g1", "gifts", "gifts.g0", "charge", "reserve"])
