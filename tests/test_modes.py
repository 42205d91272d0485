"""The dispatch table (`_executor/modes.py`): one row per kind of step, the same table as
working each step out on its own."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import reactorpy as rp
from reactorpy._executor.modes import ATTEMPTS, INLINE, TRY, Modes, _mode, modes_of


def _one_by_one(plan, serial, executor, limited, outer, events):
    """The table as it was derived before rows were shared: step by step."""
    columns = [bytearray(plan.size) for _ in range(10)]
    mode, slot, outer_slot, exclusive, undo, is_async, keeps, slow, quick, chainable = columns
    for i, s in enumerate(plan.steps):
        m = _mode(s, plan.simple[i] is not None, serial, executor)
        takes = not s.composite and (s.is_async or s.executor is not None or executor)
        outer_slot[i] = serial and outer and takes
        mode[i] = ATTEMPTS if m == TRY and (events or outer_slot[i]) else m
        if limited:
            slot[i] = serial or (takes and mode[i] != INLINE)
        exclusive[i] = not s.async_
        undo[i] = s.undo_callback is not None
        is_async[i] = s.is_async
        keeps[i] = plan.fetch[i] is None and (
            s.undo_callback is not None or s.compensate_callback is not None
        )
        slow[i] = mode[i] == ATTEMPTS or outer_slot[i]
        quick[i] = not exclusive[i] and (not undo[i] or plan.fetch[i] is not None)
        chainable[i] = not slot[i] and not exclusive[i] and mode[i] != INLINE
    return Modes(*map(bytes, columns))


async def _async_step(x):
    return x


def _sync_step(x):
    return x


_OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "async_": st.booleans(),
        "retries": st.integers(0, 2),
        "retry_on": st.just(ValueError),
        "timeout": st.just(1.0),
        "executor": st.just("thread"),
        "when": st.just(lambda x: True),
    },
)


@st.composite
def _plans(draw):
    r = rp.Reactor("kinds", inputs=["i"])
    for k in range(draw(st.integers(1, 8))):
        fn = draw(st.sampled_from([_async_step, _sync_step]))
        options = draw(_OPTIONS)
        if fn is _async_step:
            options.pop("executor", None)
        source = draw(st.sampled_from([rp.Input("i"), rp.Input("i", transform=str)]))
        step = r.add(rp.step(fn, name=f"s{k}", args={"x": source}, **options))
        if draw(st.booleans()):
            step.undo(lambda result: None)
        if draw(st.booleans()):
            step.compensate(lambda error: None)
    if draw(st.booleans()):
        child = rp.Reactor("child", inputs=["x"], returns="s")
        child.add(rp.step(_async_step, name="s"))
        r.compose("composite", child, args={"x": rp.Input("i")})
    return r.plan()


@settings(max_examples=200, deadline=None)
@given(plan=_plans(), flags=st.tuples(*[st.booleans()] * 5))
def test_steps_of_one_kind_share_a_row_of_the_same_table(plan, flags):
    """Deriving one row per kind of step (`Step.dispatch_key`, its callbacks, whether
    `fetch` gets its arguments) gives the table that deriving every step on its own does,
    for every kind of run."""
    serial, executor, limited, outer, events = flags
    expected = _one_by_one(plan, serial, executor, limited, outer, events)
    got = modes_of(
        plan, serial=serial, executor=executor, limited=limited, outer=outer, events=events
    )
    assert expected == got
