"""Mermaid flowcharts of reactor definitions (`Reactor.to_mermaid`)."""

from __future__ import annotations

from typing import Any

import pytest

import reactorpy as rp
from reactorpy._mermaid import flowchart, label, node_id
from tests.examples.seed_reactor import seed

SEED_CHART = """\
flowchart TD
    i_user_id[/"user_id"/]
    s_fetch_profile["fetch_profile"]
    s_fetch_preferences["fetch_preferences"]
    s_fetch_activity["fetch_activity"]
    s_aggregate_data["aggregate_data"]
    r_return(["return"])
    i_user_id -->|"user_id"| s_fetch_profile
    i_user_id -->|"user_id"| s_fetch_preferences
    i_user_id -->|"user_id"| s_fetch_activity
    s_fetch_profile -->|"fetch_profile"| s_aggregate_data
    s_fetch_preferences -->|"fetch_preferences"| s_aggregate_data
    s_fetch_activity -->|"fetch_activity"| s_aggregate_data
    s_aggregate_data --> r_return"""


def test_seed_reactor_chart():
    """The seed reactor draws as its input, four boxes, labelled edges and the return."""
    assert SEED_CHART == seed().to_mermaid()


def test_to_mermaid_is_flowchart_and_deterministic():
    """`Reactor.to_mermaid` is `flowchart`, and drawing twice gives the same text."""
    r = seed()
    assert flowchart(r, direction="LR") == r.to_mermaid("LR") == r.to_mermaid(direction="LR")


@pytest.mark.parametrize("direction", ["TD", "TB", "BT", "LR", "RL", "lr"])
def test_directions(direction: str):
    """Every Mermaid direction is accepted, in any case, and written in upper case."""
    assert seed().to_mermaid(direction).splitlines()[0] == f"flowchart {direction.upper()}"


@pytest.mark.parametrize("direction", ["XY", "", "left", None])
def test_bad_direction(direction: Any):
    """An unknown direction is a ValueError naming the valid ones."""
    with pytest.raises(ValueError, match=r"direction must be one of 'TD', 'TB', 'BT', 'LR', 'RL'"):
        seed().to_mermaid(direction)


def test_descriptions_are_a_second_line():
    """A step's description (its docstring's first line) is shown under its name, escaped."""
    r = rp.Reactor("d", inputs=["x"], returns="f")

    @r.step
    def f(x: int) -> int:
        """Double <x> "quickly" #1."""
        return 2 * x

    chart = r.to_mermaid()
    assert '    s_f["f<br/><small>Double #lt;x#gt; #quot;quickly#quot; #35;1.</small>"]' in chart


def test_explicit_args_label_parameters_and_wait_for_is_dotted():
    """Edges carry the parameter names they feed; wait_for edges are dotted."""
    r = rp.Reactor("w", inputs=["n"], returns="c")

    @r.step
    def a(n: int) -> int:
        return n

    @r.step(args={"left": rp.Result("a"), "right": rp.Result("a")})
    def b(left: int, right: int) -> int:
        return left + right

    @r.step(wait_for="a")
    def c(b: int) -> int:
        return b

    lines = r.to_mermaid().splitlines()
    assert '    s_a -->|"left, right"| s_b' in lines
    assert '    s_a -.->|"wait_for"| s_c' in lines
    assert '    s_b -->|"b"| s_c' in lines


def test_returns_none_feeds_return_from_every_sink():
    """Without `returns`, every step nothing depends on feeds the return node."""
    r = rp.Reactor("sinks", inputs=["n"])

    @r.step
    def a(n: int) -> int:
        return n

    @r.step
    def b(a: int) -> int:
        return a

    @r.step
    def c(n: int) -> int:
        return n

    lines = r.to_mermaid().splitlines()
    assert [line for line in lines if line.endswith("--> r_return")] == [
        "    s_b --> r_return",
        "    s_c --> r_return",
    ]


def test_returns_an_input():
    """A reactor returning one of its inputs draws the input feeding the return."""
    r = rp.Reactor("echo", inputs=["x"], returns="x")
    assert r.to_mermaid().splitlines()[-1] == "    i_x --> r_return"


def test_unsafe_names_become_unique_safe_ids():
    """Names with punctuation get sanitised ids, made unique deterministically."""
    r = rp.Reactor("odd", inputs=["in put"], returns="a.b")

    @r.step(name="a.b", args={"v": rp.Input("in put")})
    def first(v: int) -> int:
        return v

    @r.step(name="a_b", args={"v": rp.Result("a.b")})
    def second(v: int) -> int:
        return v

    chart = r.to_mermaid()
    assert '    i_in_put[/"in put"/]' in chart
    assert '    s_a_b["a.b"]' in chart
    assert '    s_a_b_2["a_b"]' in chart
    assert '    s_a_b -->|"v"| s_a_b_2' in chart
    assert chart == r.to_mermaid()


def test_node_id_and_label_helpers():
    """Ids keep only [0-9A-Za-z_]; labels escape quotes, angle brackets, # and newlines."""
    used: set[str] = set()
    assert [node_id(n, used, "s_") for n in ["a-b", "a b", "end"]] == ["s_a_b", "s_a_b_2", "s_end"]
    assert label('a "b"\n<c> #d') == '"a #quot;b#quot; #lt;c#gt; #35;d"'


def composite(r: rp.Reactor, name: str, children: dict[str, rp.Reactor]) -> None:
    """Mark step `name` of `r` as a composite step with `children` (as the engine does)."""
    r.steps[name].children = children  # type: ignore[attr-defined]


def test_expand_draws_children_as_subgraphs():
    """expand=True draws each child reactor of a composite step as a nested subgraph."""
    child = rp.Reactor("payment", inputs=["amount"], returns="charge")

    @child.step
    def charge(amount: int) -> int:
        return amount

    parent = rp.Reactor("order", inputs=["amount"], returns="pay")

    @parent.step
    def pay(amount: int) -> int:
        return amount

    composite(parent, "pay", {"pay": child})
    assert parent.to_mermaid(expand=True) == (
        "flowchart TD\n"
        '    i_amount[/"amount"/]\n'
        '    subgraph s_pay ["pay"]\n'
        '        subgraph s_pay__pay ["pay: payment"]\n'
        '            s_pay__pay__i_amount[/"amount"/]\n'
        '            s_pay__pay__s_charge["charge"]\n'
        '            s_pay__pay__r_return(["return"])\n'
        '            s_pay__pay__i_amount -->|"amount"| s_pay__pay__s_charge\n'
        "            s_pay__pay__s_charge --> s_pay__pay__r_return\n"
        "        end\n"
        "    end\n"
        '    r_return(["return"])\n'
        '    i_amount -->|"amount"| s_pay\n'
        "    s_pay --> r_return"
    )
    assert "subgraph" not in parent.to_mermaid()


def test_expand_is_recursive_and_stops_at_self_reference():
    """Grandchildren are expanded too; a reactor inside itself is drawn once, as a box."""
    inner = rp.Reactor("inner", returns="leaf")

    @inner.step
    def leaf() -> int:
        return 1

    middle = rp.Reactor("middle", returns="hop")

    @middle.step
    def hop() -> int:
        return 1

    outer = rp.Reactor("outer", returns="top")

    @outer.step
    def top() -> int:
        return 1

    composite(outer, "top", {"0: middle": middle})
    composite(middle, "hop", {"inner": inner, "again": middle})
    chart = outer.to_mermaid(expand=True)
    assert '        subgraph s_top__0__middle ["0: middle"]' in chart
    assert 's_top__0__middle__s_hop__inner__s_leaf["leaf"]' in chart
    assert 's_top__0__middle__s_hop__again["again: middle (recursive)"]' in chart
    lines = [line.strip() for line in chart.splitlines()]
    assert lines.count("end") == sum(line.startswith("subgraph ") for line in lines) == 4


def test_definition_errors_surface():
    """Drawing plans the reactor, so an unknown reference is reported, not drawn."""
    r = rp.Reactor("bad", returns="nowhere")
    with pytest.raises(rp.UnknownReferenceError):
        r.to_mermaid()


def test_expand_draws_recurse_and_around_children():
    child = rp.Reactor("halve", inputs=["n"], returns="half")
    child.add(rp.step(lambda n: {"n": n // 2}, name="half"))

    async def wrapper(run_child, inputs):
        return await run_child()

    r = rp.Reactor("halving", inputs=["n"])
    r.recurse("loop", child, until=lambda out: out["n"] <= 1)
    r.around("txn", child, wrapper)
    chart = r.to_mermaid(expand=True)
    assert '        subgraph s_loop__repeated ["repeated: halve"]' in chart
    assert '        subgraph s_txn__wrapped ["wrapped: halve"]' in chart
    assert '            s_txn__wrapped__s_half["half"]' in chart
