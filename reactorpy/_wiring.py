"""Wiring: each step's parameters matched to inputs and results, and the graph they make.

Owns: `wire` (one step: explicit ``args`` first, then the run Context, then an input or a
step of the parameter's name), `wire_all` (every step, every reference checked), the
``networkx.DiGraph`` drawn from them (`digraph`, built only when something asks for it:
networkx is half of ``import reactorpy``'s time), and the path of a cycle.
Must not import: the planner, asyncio, the executor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._arguments import Input, NameRef, Result, Source
from ._errors import DefinitionError, UnknownReferenceError, did_you_mean

if TYPE_CHECKING:
    from ._step import Step

__all__ = ["build_graph", "digraph", "find_cycle", "wire", "wire_all"]


def wire(step: Step[..., Any], inputs: set[str], steps: set[str]) -> dict[str, Source | None]:
    """Map each parameter of `step` to its source (None for the Context): explicit ``args``
    first, then the run Context, then an input or a step of the parameter's name.

    Raises:
        DefinitionError: a parameter without a default matches nothing.
    """
    wiring: dict[str, Source | None] = {}
    for p in step.params:
        if p.name in step.args:
            wiring[p.name] = step.args[p.name]
        elif p.is_context:
            wiring[p.name] = None
        elif p.name in inputs:
            wiring[p.name] = Input(p.name)
        elif p.name in steps and p.name != step.name:
            wiring[p.name] = Result(p.name)
        elif not p.has_default:
            available = sorted(inputs | steps - {step.name})
            raise DefinitionError(
                f"Step {step.name!r}: parameter {p.name!r} matches no input or step and has "
                f"no default.{did_you_mean(p.name, available)} Wire it with "
                f"args={{{p.name!r}: ...}}; available: "
                f"{', '.join(map(repr, available)) or '(none)'}."
            )
    for extra in step.args.keys() - wiring.keys():  # only for functions taking **kwargs
        wiring[extra] = step.args[extra]
    for param, source in wiring.items():
        if isinstance(source, NameRef) and source.name not in inputs:
            wiring[param] = Result(source.name, *source.path, transform=source.transform)
        elif isinstance(source, NameRef):
            wiring[param] = Input(source.name, *source.path, transform=source.transform)
    return wiring


def build_graph(
    reactor: str, inputs: Sequence[str], steps: Sequence[Step[..., Any]]
) -> tuple[Any, dict[str, dict[str, Source | None]], dict[str, list[str]], list[list[int]]]:
    """Build the DiGraph of inputs and steps, checking every reference; returns it, the
    wiring of each step, the predecessors of each step (the graph's, as lists of names),
    and each step's step predecessors as positions in `steps`."""
    edges, wirings, preds, preds_pos = wire_all(reactor, inputs, steps)
    return digraph(reactor, inputs, steps, edges), wirings, preds, preds_pos


def wire_all(
    reactor: str, inputs: Sequence[str], steps: Sequence[Step[..., Any]]
) -> tuple[
    dict[tuple[str, str], dict[str, Any]],
    dict[str, dict[str, Source | None]],
    dict[str, list[str]],
    list[list[int]],
]:
    """Wire every step, checking every reference; return the graph's edges, the wiring of
    each step, the predecessors of each step (as lists of names), and each step's step
    predecessors as positions in `steps`.

    Edges carry ``args`` (the parameters they feed, empty for ordering only) and ``kind``
    (``"argument"`` or ``"wait_for"``).
    """
    input_set = set(inputs)
    step_names = {s.name for s in steps}
    position = {s.name: k for k, s in enumerate(steps)}
    wirings: dict[str, dict[str, Source | None]] = {}
    edges: dict[tuple[str, str], dict[str, Any]] = {}
    preds: dict[str, list[str]] = {}
    preds_pos: list[list[int]] = []
    for s in steps:
        wiring = wire(s, input_set, step_names)
        wirings[s.name] = wiring
        mine = preds[s.name] = []
        mine_pos: list[int] = []
        preds_pos.append(mine_pos)
        for param, source in wiring.items():
            k = -1
            if isinstance(source, Input):
                if source.name not in input_set:
                    raise UnknownReferenceError(s.name, source.name, inputs, what="input")
                src = source.name
            elif isinstance(source, Result):
                k = position.get(source.step, -1)
                if k < 0:
                    raise UnknownReferenceError(s.name, source.step, step_names - {s.name})
                src = source.step
            else:
                continue
            data = edges.get((src, s.name))
            if data is None:
                edges[src, s.name] = {"args": [param], "kind": "argument"}
                mine.append(src)
                if k >= 0:
                    mine_pos.append(k)
            else:
                data["args"].append(param)
        for dep in s.wait_for:
            k = position.get(dep, -1)
            if k < 0:
                raise UnknownReferenceError(s.name, dep, step_names - {s.name})
            if (dep, s.name) not in edges:
                edges[dep, s.name] = {"args": [], "kind": "wait_for"}
                mine.append(dep)
                mine_pos.append(k)
    return edges, wirings, preds, preds_pos


def digraph(
    reactor: str,
    inputs: Sequence[str],
    steps: Sequence[Step[..., Any]],
    edges: dict[tuple[str, str], dict[str, Any]],
) -> Any:
    """The ``networkx.DiGraph``: nodes carry ``kind`` (``"input"`` or ``"step"``) and
    ``step`` (the `Step`), edges the data of `edges`. Built in bulk: one networkx call per
    kind of item."""
    import networkx as nx  # here, not at import: it is half of `import reactorpy`'s time

    graph = nx.DiGraph(name=reactor)
    graph.add_nodes_from(inputs, kind="input")
    graph.add_nodes_from((s.name, {"kind": "step", "step": s}) for s in steps)
    graph.add_edges_from((u, v, d) for (u, v), d in edges.items())
    return graph


def find_cycle(
    reactor: str, steps: Sequence[Step[..., Any]], edges: dict[tuple[str, str], dict[str, Any]]
) -> list[str]:
    import networkx as nx

    names = {s.name for s in steps}
    graph = nx.DiGraph()
    graph.add_nodes_from(s.name for s in steps)  # the search starts from the first step
    graph.add_edges_from((u, v) for u, v in edges if u in names)
    cycle = nx.find_cycle(graph)
    path = [edge[0] for edge in cycle]
    return [*path, path[0]]
