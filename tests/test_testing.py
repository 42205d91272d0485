"""Tests for `reactorpy.testing`: the event `Recorder`, `override` and the fakes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import reactorpy as rp
from reactorpy.testing import Recorder, override, raises, returns, run_virtual


def make_order_flow() -> tuple[rp.Reactor, list[str]]:
    """A reactor: reserve and charge in parallel, then ship (which may fail); log undos."""
    log: list[str] = []
    r = rp.Reactor("order", inputs=["order_id", "fail"], returns="ship")

    @r.step
    async def reserve(order_id: int) -> str:
        await asyncio.sleep(1)
        return f"r{order_id}"

    @reserve.undo
    def unreserve(value: str) -> None:
        log.append(f"unreserve {value}")

    @r.step(retries=2, retry_on=ConnectionError)
    async def charge(order_id: int) -> str:
        await asyncio.sleep(2)
        return f"c{order_id}"

    @charge.undo
    def refund(value: str, order_id: int) -> None:
        log.append(f"refund {value} {order_id}")

    @r.step
    async def ship(reserve: str, charge: str, fail: bool) -> str:
        if fail:
            raise RuntimeError("truck broke down")
        return f"{reserve}+{charge}"

    return r, log


# ---------------------------------------------------------------------------------- Recorder
def test_recorder_collects_events_in_order() -> None:
    """The recorder keeps every event and run in order; kinds/order/of query them."""
    r, _ = make_order_flow()
    rec = Recorder()
    assert "r1+c1" == run_virtual(r.run({"order_id": 1, "fail": False}, middleware=[rec]))
    assert ["step_start", "step_complete"] == rec.kinds("ship")
    assert ["reserve", "charge", "ship"] == rec.order()
    assert ["reserve", "charge", "ship"] == rec.completed
    assert rec.started == rec.order("step_start")
    assert [1.0, 2.0] == [e.time for e in rec.of(kind="step_complete")][:2]
    assert ["r1+c1"] == rec.results
    assert ["order"] == [run.reactor for run in rec.runs]
    assert 2 == rec.peak_concurrency
    assert "step_complete" in rec.timeline()
    rec.clear()
    assert ([], [], []) == (rec.events, rec.runs, rec.results)


def test_assert_before_passes_for_dependencies_and_fails_otherwise() -> None:
    """assert_before(a, b) holds when a finished before b started, and fails if not."""
    r, _ = make_order_flow()
    rec = Recorder()
    run_virtual(r.run({"order_id": 1, "fail": False}, middleware=[rec]))
    rec.assert_before("charge", "ship")
    rec.assert_before("reserve", "ship")
    with pytest.raises(AssertionError, match="Expected 'ship' to finish before 'reserve'"):
        rec.assert_before("ship", "reserve")
    with pytest.raises(AssertionError, match="to finish before"):
        rec.assert_before("reserve", "charge")  # they overlap
    with pytest.raises(AssertionError, match="'nope' has no step_start event"):
        rec.assert_before("ship", "nope")


def test_assert_overlap_distinguishes_concurrent_from_sequential_runs() -> None:
    """assert_overlap holds for steps that ran at once, and fails for async_=False runs."""
    r, _ = make_order_flow()
    rec = Recorder()
    run_virtual(r.run({"order_id": 1, "fail": False}, middleware=[rec]))
    rec.assert_overlap("reserve", "charge")
    seq = Recorder()
    run_virtual(r.run({"order_id": 1, "fail": False}, async_=False, middleware=[seq]))
    with pytest.raises(AssertionError, match="to overlap"):
        seq.assert_overlap("reserve", "charge")
    seq.assert_before("reserve", "charge")


def test_assert_undone_in_order_checks_exact_order() -> None:
    """assert_undone_in_order checks exactly which steps were undone, newest first."""
    r, log = make_order_flow()
    rec = Recorder()
    with pytest.raises(rp.RunFailed):
        run_virtual(r.run({"order_id": 1, "fail": True}, middleware=[rec]))
    rec.assert_undone_in_order(["charge", "reserve"])
    assert ["refund c1 1", "unreserve r1"] == log
    assert ["charge", "reserve"] == rec.undone
    assert 1 == len(rec.errors)
    with pytest.raises(AssertionError, match=r"Expected the undo order \['reserve', 'charge'\]"):
        rec.assert_undone_in_order(["reserve", "charge"])
    with pytest.raises(AssertionError, match="undo order"):
        rec.assert_undone_in_order(["charge"])


def test_assert_undone_in_order_fails_when_an_undo_fails() -> None:
    """An undo that started but raised does not count as undone."""
    r = rp.Reactor("u", returns="b")

    @r.step
    def a() -> int:
        return 1

    @a.undo
    def bad_undo(value: int) -> None:
        raise OSError("cannot undo")

    @r.step
    def b(a: int) -> int:
        raise ValueError("fail")

    rec = Recorder()
    with pytest.raises(rp.RunFailed):
        run_virtual(r.run(middleware=[rec]))
    with pytest.raises(AssertionError, match=r"The undo of \['a'\] did not complete"):
        rec.assert_undone_in_order(["a"])


def test_assert_not_started_and_halts_are_recorded() -> None:
    """assert_not_started fails for steps that started; halts record their checkpoint."""
    r = rp.Reactor("h", returns="after")

    @r.step
    def gate() -> None:
        raise rp.Halt("wait")

    @r.step
    def after(gate: None) -> int:
        return 1

    rec = Recorder()
    with pytest.raises(rp.Halted):
        run_virtual(r.run(middleware=[rec]))
    rec.assert_not_started("after")
    with pytest.raises(AssertionError, match=r"Expected \['gate'\] not to start"):
        rec.assert_not_started("gate")
    assert 1 == len(rec.checkpoints)
    assert ["step_start", "step_halt"] == rec.kinds("gate")


# ---------------------------------------------------------------------------------- override
def test_override_swaps_functions_and_leaves_the_original_untouched() -> None:
    """override returns a new reactor with fakes; the original still runs its own steps."""
    r, _ = make_order_flow()
    original_charge = r.steps["charge"]
    fake = override(r, {"charge": lambda order_id: f"fake{order_id}"})
    assert fake is not r
    assert "r2+fake2" == run_virtual(fake.run({"order_id": 2, "fail": False}))
    assert "r2+c2" == run_virtual(r.run({"order_id": 2, "fail": False}))
    assert original_charge is r.steps["charge"]
    assert list(r.steps) == list(fake.steps)
    assert (r.name, r.inputs, r.returns) == (fake.name, fake.inputs, fake.returns)


def test_override_keeps_options_and_callbacks() -> None:
    """A faked step keeps the original's options (retries) and its undo."""
    r, log = make_order_flow()
    flaky = raises(ConnectionError("blip"), times=2, then="c-late")
    fake = override(r, {"charge": flaky, "reserve": returns("r-fake")})
    rec = Recorder()
    assert "r-fake+c-late" == run_virtual(
        fake.run({"order_id": 3, "fail": False}, middleware=[rec])
    )
    assert [{"order_id": 3}] * 3 == flaky.calls  # type: ignore[attr-defined]
    assert 2 == len(rec.of("charge", "step_retry"))
    assert 2 == fake.steps["charge"].retries
    with pytest.raises(rp.RunFailed):
        run_virtual(fake.run({"order_id": 3, "fail": True}))
    assert ["refund c-late 3", "unreserve r-fake"] == log


def test_override_replaces_or_drops_callbacks_without_touching_the_original() -> None:
    """undo= replaces or drops undo callbacks on the copy only."""
    r, log = make_order_flow()
    seen: list[Any] = []
    fake = override(
        r,
        {},
        undo={"charge": lambda value: seen.append(value), "reserve": None},
        compensate={"ship": lambda error: rp.Continue("rescued")},
    )
    assert "rescued" == run_virtual(fake.run({"order_id": 4, "fail": True}))
    fake2 = override(r, {}, undo={"reserve": None}, compensate={"ship": None})
    with pytest.raises(rp.RunFailed):
        run_virtual(fake2.run({"order_id": 4, "fail": True}))
    assert ["refund c4 4"] == log
    assert fake2.steps["reserve"].undo_callback is None
    assert r.steps["reserve"].undo_callback is not None
    assert r.steps["ship"].compensate_callback is None
    fake.steps["ship"].undo(lambda value: None)
    assert r.steps["ship"].undo_callback is None
    assert [] == seen


def test_override_keeps_explicit_wiring_with_paths() -> None:
    """A fake receives what the original's explicit args (with paths) resolve to."""
    r = rp.Reactor("w", inputs=["user"], returns="greet")

    @r.step(args={"who": rp.Input("user", "name")})
    def greet(who: str) -> str:
        return f"hi {who}"

    fake = override(r, {"greet": lambda who: who.upper()})
    assert "ADA" == run_virtual(fake.run({"user": {"name": "Ada"}}))


def test_fake_taking_fewer_arguments_still_waits_for_its_dependencies() -> None:
    """A fake that ignores a result argument still runs after the step producing it."""
    r = rp.Reactor("dep", returns="second")

    @r.step
    async def first() -> int:
        await asyncio.sleep(5)
        return 1

    @r.step
    def second(first: int) -> int:
        return first + 1

    fake = override(r, {"second": lambda: 99})
    rec = Recorder()
    assert 99 == run_virtual(fake.run(middleware=[rec]))
    rec.assert_before("first", "second")


def test_fake_with_delay_shapes_virtual_time() -> None:
    """returns(delay=...) sleeps on the virtual clock, so timelines are exact and instant."""
    r, _ = make_order_flow()
    fake = override(r, {"reserve": returns("r", delay=10)})

    async def timed() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await fake.run({"order_id": 1, "fail": False})
        return loop.time() - start

    assert 10.0 == run_virtual(timed())


def test_override_unknown_step_suggests_the_close_name() -> None:
    """An unknown step name raises UnknownReferenceError with a "Did you mean"."""
    r, _ = make_order_flow()
    with pytest.raises(rp.UnknownReferenceError, match="Did you mean 'charge'") as info:
        override(r, {"chrge": returns(1)})
    assert "chrge" == info.value.reference
    assert ["charge", "reserve", "ship"] == info.value.available
    with pytest.raises(rp.UnknownReferenceError, match="Did you mean 'ship'"):
        override(r, {}, undo={"shp": None})


def test_raises_always_raises_without_times() -> None:
    """raises(error) without times raises on every call."""
    r = rp.Reactor("x", returns="s")

    @r.step(retries=1)
    def s() -> int:
        return 1

    fake = override(r, {"s": raises(KeyError)})
    with pytest.raises(rp.RunFailed) as info:
        run_virtual(fake.run())
    assert isinstance(info.value.exceptions[0], KeyError)


def test_override_takes_step_objects_as_keys() -> None:
    """Steps can be named by their Step objects, in fakes, undo= and compensate=."""
    r = rp.Reactor("keys", inputs=["x"], returns="b")

    @r.step
    async def a(x: int) -> int:
        raise RuntimeError("real a")

    @r.step
    def b(a: int) -> int:
        return a + 1

    fast = override(r, {a: returns(41)}, undo={b: lambda value: None})
    assert 42 == run_virtual(fast.run({"x": 0}))
    assert fast.steps["b"].undo_callback is not None
    assert r.steps["b"].undo_callback is None


def test_override_finds_a_step_added_under_another_name() -> None:
    """A reusable @rp.step added under a new name is found by its function."""

    @rp.step
    def base(x: int) -> int:
        raise RuntimeError("real")

    r = rp.Reactor("renamed", inputs=["x"], returns="renamed")
    r.add(base, name="renamed")
    assert 7 == run_virtual(override(r, {base: lambda x: x}).run({"x": 7}))
    with pytest.raises(rp.UnknownReferenceError):
        override(rp.Reactor("empty"), {base: lambda x: x})


def test_override_keeps_the_real_undo_unless_told() -> None:
    """By default a fake keeps the real undo (called with the fake's result); undo= fakes
    it in the same call, and keep_callbacks=False drops it."""
    r, log = make_order_flow()
    inputs = {"order_id": 5, "fail": True}
    kept = override(r, {"charge": returns("fake-charge")})
    with pytest.raises(rp.RunFailed):
        run_virtual(kept.run(inputs))
    assert "refund fake-charge 5" in log

    log.clear()
    refunds: list[str] = []
    faked = override(
        r, {"charge": returns("fake-charge")}, undo={"charge": lambda v: refunds.append(v)}
    )
    with pytest.raises(rp.RunFailed):
        run_virtual(faked.run(inputs))
    assert ["fake-charge"] == refunds
    assert ["unreserve r5"] == log

    log.clear()
    dropped = override(r, {"charge": returns("fake-charge")}, keep_callbacks=False)
    assert dropped.steps["charge"].undo_callback is None
    assert dropped.steps["reserve"].undo_callback is not None  # not faked: kept
    with pytest.raises(rp.RunFailed):
        run_virtual(dropped.run(inputs))
    assert ["unreserve r5"] == log


def test_override_wires_like_the_planner() -> None:
    """A fake gets exactly what the planner would give the original: explicit args, the
    Context, and inputs or steps by name."""
    r = rp.Reactor("wiring", inputs=["x", "y"], returns="use")

    @r.step
    def make() -> int:
        return 10

    @r.step(args={"b": rp.Input("y", 0)})
    def use(x: int, make: int, b: int, ctx: rp.Context, unused: int = 3) -> int:
        raise RuntimeError("real")

    seen: list[Any] = []

    def fake(**kwargs: Any) -> int:
        seen.append(kwargs)
        return 1

    assert 1 == run_virtual(override(r, {"use": fake}).run({"x": 1, "y": [2]}))
    assert [{"x": 1, "make": 10, "b": 2}] == seen


def test_the_pinned_pytest_asyncio_has_the_loop_factories_hook() -> None:
    """pyproject.toml allows only pytest-asyncio versions with the hook testing.py documents."""
    import importlib.metadata
    import re
    import tomllib
    from pathlib import Path

    import pytest_asyncio.plugin

    root = Path(__file__).resolve().parent.parent
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    pins = [req for req in extras["test"] if req.startswith("pytest-asyncio")]
    assert ["pytest-asyncio>=1.4"] == pins
    installed = importlib.metadata.version("pytest-asyncio")
    major, minor = (int(x) for x in re.findall(r"\d+", installed)[:2])
    assert (major, minor) >= (1, 4)
    assert hasattr(pytest_asyncio.plugin.PytestAsyncioSpecs, "pytest_asyncio_loop_factories")
    import reactorpy.testing

    assert "pytest-asyncio 1.4 or newer" in " ".join((reactorpy.testing.__doc__ or "").split())
