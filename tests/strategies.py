"""Hypothesis strategies: random DAGs of steps with random behaviours."""

from __future__ import annotations

from hypothesis import strategies as st

BEHAVIOURS = ("ok", "ok", "ok", "fail", "retry_then_ok", "continue", "undo_error")


@st.composite
def dags(draw: st.DrawFn, max_steps: int = 12, behaviours: tuple[str, ...] = BEHAVIOURS):
    """A random DAG: (parents per step, behaviour per step, sleeps per step, undoable)."""
    n = draw(st.integers(min_value=1, max_value=max_steps))
    parents = []
    for i in range(n):
        if i == 0:
            parents.append(())
        else:
            ps = draw(st.sets(st.integers(min_value=0, max_value=i - 1), max_size=3))
            parents.append(tuple(sorted(ps)))
    kinds = [draw(st.sampled_from(behaviours)) for _ in range(n)]
    sleeps = [draw(st.integers(min_value=0, max_value=3)) for _ in range(n)]
    undoable = [draw(st.booleans()) for _ in range(n)]
    sync = [draw(st.booleans()) for _ in range(n)]
    return parents, kinds, sleeps, undoable, sync
