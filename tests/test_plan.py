"""Planning: wiring, validation errors, generations, critical path and the plan cache."""

from __future__ import annotations

import pickle

import networkx as nx
import pytest

import reactorpy as rp


def seed_reactor() -> rp.Reactor:
    r = rp.Reactor("seed", inputs=["user_id"], returns="aggregate")

    @r.step
    async def profile(user_id):
        return user_id

    @r.step
    async def prefs(user_id):
        return user_id

    @r.step
    async def activity(user_id):
        return user_id

    @r.step
    def aggregate(profile, prefs, activity):
        return (profile, prefs, activity)

    return r


def test_generations_order_and_critical_path():
    """The plan lists topological generations in definition order, and the longest chain."""
    plan = seed_reactor().plan()
    assert (("profile", "prefs", "activity"), ("aggregate",)) == plan.generations
    assert ("profile", "prefs", "activity", "aggregate") == plan.order
    assert ("profile", "aggregate") == plan.critical_path


def test_graph_is_a_digraph_with_inputs_steps_and_labelled_edges():
    """reactor.graph is a networkx DiGraph of inputs and steps; edges name the parameters."""
    g = seed_reactor().graph
    assert isinstance(g, nx.DiGraph)
    assert "input" == g.nodes["user_id"]["kind"]
    assert "step" == g.nodes["aggregate"]["kind"]
    assert isinstance(g.nodes["aggregate"]["step"], rp.Step)
    assert ["user_id"] == g.edges["user_id", "profile"]["args"]
    assert ["prefs"] == g.edges["prefs", "aggregate"]["args"]


def test_forward_references_are_allowed():
    """A step may name a step defined after it."""
    r = rp.Reactor("fwd", returns="a")

    @r.step
    def a(b):
        return b + 1

    @r.step
    def b():
        return 1

    assert ("b", "a") == r.plan().order
    assert 2 == r.run_sync()


def test_unknown_reference_suggests_a_close_name():
    """An unknown wiring reference names the step, the reference and a close match."""
    r = rp.Reactor("typo", inputs=["user_id"])

    @r.step(args={"x": rp.Result("fetch_profle")})
    def use(x):
        return x

    @r.step
    def fetch_profile(user_id):
        return user_id

    with pytest.raises(rp.UnknownReferenceError) as info:
        r.plan()
    assert "fetch_profle" == info.value.reference
    assert "use" == info.value.step
    assert "Did you mean 'fetch_profile'?" in str(info.value)
    assert isinstance(info.value, TypeError)


def test_unmatched_parameter_is_a_definition_error_with_suggestion():
    """A parameter that matches no input or step, and has no default, is reported."""
    r = rp.Reactor("unmatched", inputs=["user_id"])

    @r.step
    def s(usr_id):
        return usr_id

    with pytest.raises(rp.DefinitionError, match=r"'usr_id'.*Did you mean 'user_id'"):
        r.plan()


def test_parameter_with_default_may_stay_unwired():
    """An unmatched parameter with a default keeps its default."""
    r = rp.Reactor("defaults", returns="s")

    @r.step
    def s(x=5):
        return x

    assert 5 == r.run_sync()


def test_cycle_is_shown_as_a_path():
    """A cycle error carries the cycle as data, first node repeated at the end."""
    r = rp.Reactor("cyc")

    @r.step
    def a(c):
        return c

    @r.step
    def b(a):
        return a

    @r.step
    def c(b):
        return b

    with pytest.raises(rp.CycleError) as info:
        r.plan()
    cycle = info.value.cycle
    assert cycle[0] == cycle[-1]
    assert {"a", "b", "c"} == set(cycle)
    assert " -> ".join(cycle) in str(info.value)


def test_duplicate_names_fail_at_decoration():
    """A second step with a taken name, or a step named like an input, fails at once."""
    r = rp.Reactor("dup", inputs=["x"])

    @r.step
    def a():
        return 1

    with pytest.raises(rp.DuplicateStepError):

        @r.step(name="a")
        def other():
            return 2

    with pytest.raises(rp.DuplicateStepError, match="input"):

        @r.step
        def x():
            return 3


def test_bad_args_key_fails_at_decoration():
    """args naming a parameter the function lacks is a definition error at decoration."""
    r = rp.Reactor("badargs")
    with pytest.raises(rp.DefinitionError, match="'nope'"):

        @r.step(args={"nope": rp.Value(1)})
        def s(x):
            return x


def test_returns_must_name_something():
    """A returns naming no step or input is reported by plan()."""
    r = rp.Reactor("ret", returns="missing")

    @r.step
    def mising():
        return 1

    with pytest.raises(rp.UnknownReferenceError, match="Did you mean 'mising'"):
        r.plan()


def test_plan_is_cached_until_the_definition_changes():
    """plan() returns the same object until a step or returns changes."""
    r = seed_reactor()
    first = r.plan()
    assert first is r.plan()

    @r.step
    def extra(aggregate):
        return aggregate

    second = r.plan()
    assert second is not first
    r.returns = "extra"
    third = r.plan()
    assert third is not second
    assert "extra" == third.returns


def test_registering_an_undo_replans():
    """Adding an undo callback to a step counts as a definition change."""
    r = seed_reactor()
    first = r.plan()

    @r.steps["profile"].undo
    def release(value):
        return None

    assert r.plan() is not first


def test_step_stays_callable_and_pickles_by_reference():
    """A decorated step is still the function, and pickles as a reference."""
    from tests.examples import plain_steps

    assert 6 == plain_steps.double(3)
    clone = pickle.loads(pickle.dumps(plain_steps.double))
    assert clone is plain_steps.double


def test_async_step_cannot_have_an_executor():
    """An async def sent to an executor is a definition error."""
    with pytest.raises(rp.DefinitionError, match="async def"):

        @rp.step(executor="thread")
        async def s():
            return 1


def test_reusable_step_added_to_two_reactors_under_new_names():
    """One rp.step may be added to several reactors, renamed and rewired."""

    @rp.step
    def inc(x):
        return x + 1

    r1 = rp.Reactor("r1", inputs=["x"], returns="inc")
    r1.add(inc)
    r2 = rp.Reactor("r2", inputs=["y"], returns="plus")
    r2.add(inc, name="plus", args={"x": rp.Input("y")})
    assert 2 == r1.run_sync({"x": 1})
    assert 11 == r2.run_sync({"y": 10})
