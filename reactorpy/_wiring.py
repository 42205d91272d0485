"""Wiring: each step's parameters matched to inputs and results, and the graph they make.

Owns: `wire` (one step: explicit ``args`` first, then the run Context, then an input or a
step of the parameter's name), `wire_steps` (every step, every reference checked, in the
slots the planner compiles), the edges and the ``networkx.DiGraph`` drawn from them
(`edges_of`, `digraph`, made only when something asks for them: networkx is half of
``import reactorpy``'s time), and the path of a cycle.
Must not import: the planner, asyncio, the executor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence, Set
from typing import TYPE_CHECKING, Any, NamedTuple

from ._arguments import Input, NameRef, Result, Source, Value
from ._errors import DefinitionError, UnknownReferenceError, did_you_mean
from ._typecheck import NO_TYPE, can_meet

if TYPE_CHECKING:
    from ._signature import Param
    from ._step import Step

__all__ = [
    "Wire",
    "Wired",
    "digraph",
    "edges_of",
    "find_cycle",
    "wire",
    "wire_steps",
]


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
            raise _unmatched(step, p.name, inputs, steps)
    for extra in step.args:  # only for functions taking **kwargs
        if extra not in wiring:
            wiring[extra] = step.args[extra]
    for param, source in wiring.items():
        if isinstance(source, NameRef) and source.name not in inputs:
            wiring[param] = Result(source.name, *source.path, transform=source.transform)
        elif isinstance(source, NameRef):
            wiring[param] = Input(source.name, *source.path, transform=source.transform)
    return wiring


# One wired parameter, as `wire_steps` leaves it: an `ArgSpec`'s fields, with the slot of a
# result still the producer's definition position (the planner maps it to a plan index).
Wire = tuple[str, int, tuple[Any, ...], "Source | None", bool, "Callable[[Any], Any] | None"]


class Wired(NamedTuple):
    """Every step's wiring, by definition position (see `wire_steps`)."""

    wires: list[list[Wire]]
    simple: list[bool]  # every argument positional, with no path or transform
    preds: list[list[int]]  # the steps each step waits for (argument and wait_for edges)
    reads: list[list[int]]  # the steps whose results each step reads (argument edges)
    constants: list[Any]  # the `Value`s, in slot order
    input_paths: list[tuple[int, str, Input]]  # (position, parameter, source) with a path
    # The first wiring of each step whose annotations cannot meet: (position, step,
    # parameter, producer); the planner reports the first in plan order.
    mismatches: list[tuple[int, Step[..., Any], Param, Step[..., Any]]]
    position: dict[str, int]  # each step's position, by name


def wire_steps(inputs: Sequence[str], steps: Sequence[Step[..., Any]]) -> Wired:
    """Wire every step (`wire`), checking every reference, in one pass over each step's
    parameters: raise the first error in definition order (within a step: a parameter
    that matches nothing, then an unknown reference in wiring order, then an unknown
    ``wait_for``), or return what the planner compiles.

    Slots: a result's is the producer's position in `steps` (the planner maps it to a
    plan index); an input's ``n + k``; a `Value`'s ``n + len(inputs) + c``; the Context's -1.
    """
    n = len(steps)
    input_slot = {name: n + k for k, name in enumerate(inputs)}
    position = {s.name: k for k, s in enumerate(steps)}
    out = Wired([], [], [], [], [], [], [], position)
    constants = out.constants
    first_constant = n + len(inputs)
    where = position.get
    # can_meet's answers, by the identities of the annotations (alive while the steps are).
    answers: dict[tuple[int, int], bool] = {}
    add_wires, add_simple, add_preds, add_reads = (
        out.wires.append,
        out.simple.append,
        out.preds.append,
        out.reads.append,
    )
    for k, s in enumerate(steps):
        wires: list[Wire] = []
        preds: list[int] = []  # results read, then wait_for: reads is preds until then
        unknown: UnknownReferenceError | None = None
        positional_ok = simple = True
        for name, source, p in _wiring(s, input_slot, position, inputs):
            positional = positional_ok = positional_ok and p is not None and p.positional
            if source is None:  # the run Context
                wires.append((name, -1, (), None, positional, None))
                simple = False
                continue
            if type(source) is NameRef:  # the input of that name, else the step
                source = _by_name(source, input_slot)
            if isinstance(source, Result):
                path, transform = source.path, source.transform
                slot = where(source.step, -1)
                if slot < 0:
                    unknown = unknown or UnknownReferenceError(
                        s.name, source.step, position.keys() - {s.name}
                    )
                    continue
                if slot not in preds:
                    preds.append(slot)
                if (
                    p is not None
                    and (expected := p.annotation) is not NO_TYPE
                    and not path
                    and transform is None
                    and (not out.mismatches or out.mismatches[-1][0] != k)
                ):
                    producer = steps[slot]
                    produced = producer.result_type
                    if produced is not NO_TYPE:
                        # Most wirings pair a few annotations: one answer per pair.
                        pair = (id(produced), id(expected))
                        met = answers.get(pair)
                        if met is None:
                            met = answers[pair] = can_meet(produced, expected)
                        if not (met or _undecided(producer)):
                            out.mismatches.append((k, s, p, producer))
            elif isinstance(source, Value):
                wires.append((name, first_constant + len(constants), (), source, positional, None))
                constants.append(source.value)
                simple = simple and positional
                continue
            else:
                path, transform = source.path, source.transform
                slot = input_slot.get(source.name, -1)
                if slot < 0:
                    unknown = unknown or UnknownReferenceError(
                        s.name, source.name, inputs, what="input"
                    )
                    continue
                if path:
                    out.input_paths.append((k, name, source))
            simple = simple and positional and not path and transform is None
            wires.append((name, slot, path, source, positional, transform))
        if unknown is not None:
            raise unknown
        reads = preds
        if s.wait_for:
            reads = preds.copy()
            for dep in s.wait_for:
                slot = position.get(dep, -1)
                if slot < 0:
                    raise UnknownReferenceError(s.name, dep, position.keys() - {s.name})
                if slot not in preds:
                    preds.append(slot)
        add_wires(wires)
        add_simple(simple)
        add_preds(preds)
        add_reads(reads)
    return out


def _wiring(
    step: Step[..., Any],
    input_slot: dict[str, int],
    position: dict[str, int],
    inputs: Sequence[str],
) -> list[tuple[str, Source | None, Param | None]]:
    """`wire` of one step, as (parameter, source, `Param` or None for ``**kwargs``),
    bare names (`NameRef`) left to the caller."""
    args = step.args
    params = step.params
    if len(args) == len(params):  # as a step built at run time: args= names every one
        try:
            return [(p.name, args[p.name], p) for p in params]
        except KeyError:  # a parameter wired by its name, and an extra for **kwargs
            pass
    out: list[tuple[str, Source | None, Param | None]] = []
    explicit = 0
    for p in params:
        name = p.name
        source: Source | None
        if name in args:
            source = args[name]
            explicit += 1
        elif p.is_context:
            source = None
        elif name in input_slot:
            source = Input(name)
        elif name in position and name != step.name:
            source = Result(name)
        elif not p.has_default:
            raise _unmatched(step, name, set(inputs), position.keys())
        else:
            continue
        out.append((name, source, p))
    if explicit < len(args):  # only for functions taking **kwargs
        known = {name for name, _, _ in out}
        out.extend((extra, source, None) for extra, source in args.items() if extra not in known)
    return out


def _by_name(ref: NameRef, inputs: Mapping[str, Any]) -> Source:
    kind = Input if ref.name in inputs else Result
    return kind(ref.name, *ref.path, transform=ref.transform)


def _unmatched(
    step: Step[..., Any], name: str, inputs: set[str], steps: Set[str]
) -> DefinitionError:
    available = sorted(inputs | steps - {step.name})
    return DefinitionError(
        f"Step {step.name!r}: parameter {name!r} matches no input or step and has "
        f"no default.{did_you_mean(name, available)} Wire it with "
        f"args={{{name!r}: ...}}; available: "
        f"{', '.join(map(repr, available)) or '(none)'}."
    )


def _undecided(producer: Step[..., Any]) -> bool:
    """Whether the plan's annotation check of a wiring from `producer` cannot refuse it
    (see `compile_plan`): its result may be something else than its annotation says (a
    guard skips it with another value, a compensate returns one)."""
    return producer.when is not None or producer.compensate_callback is not None


def edges_of(inputs: Sequence[str], steps: Sequence[Step[..., Any]]) -> dict[tuple[str, str], Any]:
    """The edges of the graph of `steps` (which `wire_steps` has checked), in the order they
    are drawn, each with its data: ``args`` (the parameters the edge feeds, empty for
    ordering only) and ``kind`` (``"argument"`` or ``"wait_for"``)."""
    input_set = set(inputs)
    step_names = {s.name for s in steps}
    edges: dict[tuple[str, str], dict[str, Any]] = {}
    for s in steps:
        for param, source in wire(s, input_set, step_names).items():
            if isinstance(source, Input):
                src = source.name
            elif isinstance(source, Result):
                src = source.step
            else:
                continue
            data = edges.get((src, s.name))
            if data is None:
                edges[src, s.name] = {"args": [param], "kind": "argument"}
            else:
                data["args"].append(param)
        for dep in s.wait_for:
            edges.setdefault((dep, s.name), {"args": [], "kind": "wait_for"})
    return edges


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
