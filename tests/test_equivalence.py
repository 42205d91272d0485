"""Equivalence (issue 13, point 1): observing a run, capping it, running it one step at a
time or sending its plain defs to threads changes nothing it does. The safety net for the
executor's redesign: every variant of one random reactor gives the same result (or the same
errors), undoes the same steps, and reports the same events for each step.

The reactors come from ``tests/fuzzing.py`` in its ``"equiv"`` mode: nested composites,
undo, retries, guards, compensation, new steps and transforms before a "tail" where steps
may fail or halt (each tail step waits for everything before it, so which steps completed
when something fails does not depend on scheduling). Halts are resumed through pickle, JSON
or directly. Steps sleep fixed virtual amounts: every run is deterministic.
"""

from __future__ import annotations

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests import fuzzing as fz


@st.composite
def equivalent_cases(draw: st.DrawFn) -> fz.CaseSpec:
    return fz.generate(fz.DrawChooser(draw), fz.HYPOTHESIS, mode="equiv")


def shaped(case: fz.CaseSpec, variant: fz.Variant) -> fz.CaseSpec:
    """`case` with the options of `variant` (to match the shapes of known bugs)."""
    return fz.CaseSpec(
        None, case.top, cap=variant.cap, async_=variant.async_, resume=case.resume, mode="equiv"
    )


def runnable(case: fz.CaseSpec, variant: fz.Variant) -> bool:
    """Whether no known bug (see `fz.KNOWN_BUGS`) that spoils every check has this
    variant's shape."""
    return not fz.skipped(shaped(case, variant))


def events_comparable(case: fz.CaseSpec) -> bool:
    """Whether no known bug makes the events differ between variants."""
    return not any("events" in (b.kinds or ()) for b in fz.known_bugs(case))


def in_order(undone: list[str], groups: list[tuple[float, tuple[str, ...]]]) -> bool:
    """Whether `undone` is `groups` in order, up to the order inside each group (steps
    that completed at the same virtual instant)."""
    rank = {name: k for k, (_, names) in enumerate(groups) for name in names}
    ranks = [rank.get(name, -1) for name in undone]
    return -1 not in ranks and ranks == sorted(ranks)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(case=equivalent_cases())
def test_observers_caps_and_executors_change_nothing(case: fz.CaseSpec) -> None:
    """No middleware, a sync Recorder, an async on_event hook, Trace, max_concurrency 1-4,
    run(async_=False) and executor="thread" give identical results or errors, the same
    steps run as often and undone, in the same order where the scheduling is the same (an
    async hook may change it: then newest first by its own completions),
    and the same event kinds per step wherever events are observed; each keeps the saga's
    invariants."""
    assume(runnable(case, fz.Variant("plain")) and runnable(case, fz.VARIANTS[1]))
    outcomes = [fz.run_variant(case, v) for v in fz.VARIANTS if runnable(case, v)]
    context = fz.describe(case)
    for o in outcomes:
        assert [] == [str(v) for v in o.violations], f"{o.variant.name}\n{context}"
    base = outcomes[0]
    timing = next(o for o in outcomes if o.variant.observer == "recorder")
    order = fz.undo_groups(timing, timing)
    for o in outcomes[1:]:
        where = f"{o.variant.name} against {base.variant.name}\n{context}"
        assert base.phases == o.phases, where
        assert base.result == o.result, where
        assert base.executions == o.executions, where
        assert sorted(base.undone) == sorted(o.undone), where
    for o in outcomes:
        if o.variant.cap is None and o.variant.async_ and o.variant.executor is None:
            if o.variant.observer == "async":
                # An awaited hook yields to the loop as each step starts, so independent
                # steps may start in another order (an async_=False one taking the run
                # first, say): newest first by its own completions, then.
                times = [t for t, _ in fz.undo_groups(o, o) if t >= 0]
                assert times == sorted(times, reverse=True), f"{o.undone} {times}\n{context}"
                continue
            # The same scheduling (sync observers): the same undo order, up to the order
            # of steps whose top-level steps completed at the same virtual instant.
            assert in_order(o.undone, order), f"{o.variant.name}: {o.undone} vs {order}\n{context}"
    if not events_comparable(case):
        return
    observed = [o for o in outcomes if o.events is not None]
    for o in observed[1:]:
        where = f"{o.variant.name} against {observed[0].variant.name}\n{context}"
        assert observed[0].events == o.events, where
    traced = [o for o in outcomes if o.spans is not None]
    if observed and traced:
        assert fz.spans_of(observed[0].events or {}) == traced[0].spans, context
