"""Planning: wiring, validation errors, generations, critical path and the plan cache."""

from __future__ import annotations

import pickle

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reactorpy as rp
from reactorpy._arguments import NameRef
from reactorpy._wiring import digraph
from tests import reference_plan


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


# -- the planner against its reference (tests/reference_plan.py) ------------------------------


def _p_none():
    return 0


def _p_ab(a, b=1):
    return a


async def _p_typed(a: int, b: str) -> int:
    return a


def _p_context(a, *, k, ctx: rp.Context):
    return a


def _p_kwargs(a, **rest):
    return a


def _p_str(x: str) -> str:
    return x


_FUNCTIONS = [_p_none, _p_ab, _p_typed, _p_context, _p_kwargs, _p_str]
_NAMES = ["a", "b", "x", "s3", "s4", "s5", "s6"]  # some match parameters, some inputs


@st.composite
def _sources(draw, earlier, later, inputs, wrong):
    """A source for an argument: mostly results of earlier steps (some with paths or
    transforms), inputs, values and bare names; with `wrong`, now and then a later step
    (a forward reference, or a cycle) or a name that exists nowhere."""
    pool = [names for names in [earlier] * 8 + ([later, ["nowhere"]] if wrong else []) if names]
    if not pool:
        return rp.Value(None)
    name = draw(st.sampled_from(draw(st.sampled_from(pool))))
    kind = draw(st.sampled_from("rrrrptivvnn"))
    if kind == "r":
        return rp.Result(name)
    if kind == "p":
        return rp.Result(name, "p", 0)
    if kind == "t":
        return rp.Result(name, transform=str)
    if kind == "v" or (kind == "i" and not inputs and not wrong):
        return rp.Value(draw(st.integers(0, 3)))
    if kind == "i" and inputs and (not wrong or draw(st.integers(0, 9))):
        return rp.Input(draw(st.sampled_from(inputs)), *draw(st.sampled_from([(), ("p",)])))
    if kind == "i":
        return rp.Input("nowhere")
    return NameRef(draw(st.sampled_from([*inputs, name])))


@st.composite
def _reactors(draw):
    """A random reactor of up to 12 steps wired every way the planner knows (explicit
    sources, bare names, the Context, defaults, ``**kwargs``, ``wait_for``, guards and
    compensations that make annotations undecided); one in three has mistakes: forward
    references, cycles, names that exist nowhere, parameters that match nothing."""
    wrong = not draw(st.integers(0, 2))
    inputs = draw(st.sampled_from([["i"], ["i", "k"], ["a", "i"], []]))
    names = [f"s{j}" for j in range(draw(st.integers(1, 12)))]
    names += [n for n in draw(st.sampled_from([[], ["a"], ["b", "x"]])) if n not in inputs]
    r = rp.Reactor("random", inputs=inputs)
    for j, name in enumerate(names):
        fn = draw(st.sampled_from(_FUNCTIONS))
        params = [p for p in ("a", "b", "k", "x") if p in fn.__code__.co_varnames]
        if fn is _p_kwargs and draw(st.booleans()):
            params.append("extra")
        bare = {*inputs, *names[:j]} | ({"b"} if fn is _p_ab else set())
        wired = [p for p in params if (p not in bare and not wrong) or draw(st.booleans())]
        earlier, later = names[:j], names[j:]
        args = {p: draw(_sources(earlier, later, inputs, wrong)) for p in wired}
        waits = names if wrong else earlier
        wait_for = draw(st.lists(st.sampled_from(waits), max_size=2)) if waits else []
        if wrong and not draw(st.integers(0, 4)):
            wait_for.append("nowhere")
        options = {"when": (lambda **kw: True)} if not draw(st.integers(0, 4)) else {}
        step = r.add(rp.step(fn, name=name, args=args, wait_for=wait_for, **options))
        if not draw(st.integers(0, 4)):
            step.compensate(lambda error: None)
    returns = [None, *names, *inputs] + (["nowhere"] if wrong else [])
    r.returns = draw(st.sampled_from(returns))
    return r


def _meaning(slot, n, inputs, constants):
    """What a slot holds, whichever order the constants are in."""
    if slot < 0:
        return ("context",)
    if slot < n:
        return ("step", slot)
    if slot < n + len(inputs):
        return ("input", inputs[slot - n])
    return ("value", constants[slot - n - len(inputs)])


def _comparable(fields):
    """A plan's fields with slots replaced by what they hold (the planner numbers the
    constants in definition order, the reference in plan order)."""
    n, inputs, constants = len(fields["order"]), fields["inputs"], fields["constants"]
    out = {k: v for k, v in fields.items() if k not in ("constants", "fetch", "argv", "simple")}
    out["argv"] = [
        [(*a[:1], _meaning(a.slot, n, inputs, constants), *a[2:]) for a in argv]
        for argv in fields["argv"]
    ]
    out["simple"] = [
        None if slots is None else [_meaning(s, n, inputs, constants) for s in slots]
        for slots in fields["simple"]
    ]
    out["return_slot"] = (
        None
        if fields["return_slot"] is None
        else _meaning(fields["return_slot"], n, inputs, constants)
    )
    out["constants"] = sorted(map(repr, constants))
    return out


_FIELDS = [
    "generations", "order", "critical_path", "inputs", "returns", "edges", "defined", "steps",
    "fns", "index", "argv", "simple", "param_names", "reads", "readers", "constants",
    "input_paths", "dependents", "deps", "ndeps", "priority", "ready_order", "return_slot",
    "roots", "input_checks", "no_results", "fingerprint", "structure",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(r=_reactors())
def test_the_planner_compiles_what_the_reference_planner_does(r):
    """`compile_plan` (one pass of wiring, arguments made when first asked for) plans every
    reactor as the straightforward planner it replaced does: the same fields, the same
    graph, or the same error with the same message."""
    steps = list(r.steps.values())
    try:
        expected = reference_plan.compile_plan(r.name, r.inputs, steps, r.returns)
    except rp.DefinitionError as error:
        refused = (type(error), str(error))
    else:
        refused = None
    if refused is not None:
        with pytest.raises(rp.DefinitionError) as info:
            r.plan()
        assert refused == (type(info.value), str(info.value))
        return
    plan = r.plan()
    got = {name: getattr(plan, name) for name in _FIELDS}
    got["argv"] = [plan.argv[i] for i in range(plan.size)]
    got["param_names"] = tuple(plan.param_names[i] for i in range(plan.size))
    assert _comparable(expected) == _comparable(got)
    n = plan.size
    for i in range(n):  # what fetch gets is what the slots say
        slots = plan.simple[i]
        assert (slots is None) == (plan.fetch[i] is None)
        if slots is not None:
            vals = [*range(n + len(plan.inputs)), *plan.constants]
            assert [vals[s] for s in slots] == list(plan.fetch[i](vals))
    graph, before = r.graph, digraph(r.name, r.inputs, steps, expected["edges"])
    assert list(before.nodes(data=True)) == list(graph.nodes(data=True))
    assert list(before.edges(data=True)) == list(graph.edges(data=True))


def test_argument_specs_are_made_once_when_first_read():
    """`Plan.argv` and `Plan.param_names` make a step's argument specs and parameter
    names the first time they are looked up, then give the same ones; an index of no step
    is an IndexError. The graph is drawn once."""
    r = seed_reactor()
    plan = r.plan()
    assert {} == plan.argv
    first = plan.argv[plan.index["aggregate"]]
    assert ["profile", "prefs", "activity"] == [a.param for a in first]
    assert first is plan.argv[plan.index["aggregate"]]
    assert [plan.index["aggregate"]] == list(plan.argv)
    for i in (-1, 4):
        with pytest.raises(IndexError):
            plan.argv[i]
        with pytest.raises(IndexError):
            plan.param_names[i]
    assert {} == plan.param_names  # made apart from argv, when first read
    names = plan.param_names[plan.index["aggregate"]]
    assert ("profile", "prefs", "activity") == names
    assert names is plan.param_names[plan.index["aggregate"]]
    assert r.graph is r.graph
