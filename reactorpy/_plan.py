"""Planning: validate a reactor's steps, compile a `Plan`, and draw its `networkx.DiGraph`.

Owns: reference resolution (parameter names to inputs or steps), cycle and unknown-name checks,
topological generations, per-step priorities, and the compact integer-indexed arrays the
executor runs from. A `Plan` is immutable and cached by the reactor until its definition changes.
Must not import: asyncio, the executor.

Planning is one pass of wiring over the steps (`_wiring.wire_steps`), the generations,
one pass over the steps in plan order for the arrays, and the priorities. What a run does
not need is made the first time it is asked for, and kept: the DiGraph and its edges
(drawing, graph queries), `structure` and `fingerprint` (checkpoints, middleware), and a
step's ``argv[i]`` (a step whose arguments ``fetch[i]`` gets never needs it). So a reactor
built per request pays for what its runs use (``benchmarks/bench_build.py``).

The arrays, for step index ``i`` (indices follow ``Plan.order``):

- ``slots``: one value array holds step results at ``[0, n)``, inputs at ``[n, n + k)`` and
  constant `Value` arguments after them, so resolving an argument is one index.
- ``argv[i]``: ``(param, slot, path, source, positional, transform)`` per wired parameter
  (an `Argv`, a dict by plan index: made for step ``i`` the first time it is looked up).
- ``param_names[i]``: the parameter names of ``argv[i]``, in order (a `ParamNames`,
  made for step ``i`` the first time it is looked up, as ``argv[i]``).
- ``simple[i]``: the slots to pass positionally when no argument has a path or a transform
  or is keyword-only (the common case, resolved by a single list comprehension), else None.
- ``fetch[i]``: for a ``simple`` step, ``fetch[i](values)`` returns those arguments: an
  ``operator.itemgetter``, much cheaper per call than a comprehension (over a one-item slice
  for a single argument, and an empty slice for none, so it always returns a sequence).
- ``dependents[i]``, ``ndeps[i]``: the graphlib-style counters of the scheduler (argument
  and ``wait_for`` edges alike).
- ``reads[i]``: the steps whose results step ``i`` reads (argument edges only: a
  ``wait_for`` dependency orders, it reads nothing); ``readers[j]``: how many steps read
  ``j``'s result. A result is released when its last reader completes.
- ``priority[i]``: the length of the longest chain of steps from ``i`` to a sink.
- ``ready_order[i]``: ``dependents[i]`` most critical first (``-priority``, then index), so
  the scheduler never sorts the steps a completion makes ready.
- ``no_results``: ``{name: None}`` for every step, in plan order: a run that returns every
  result copies it and fills it in, which costs half of building the dict anew (no growing,
  no inserting) for large reactors.
- ``fns[i]``: the step's function (what a plain step calls, without touching the `Step`).
- ``modes``: a cache for the execution layer, which derives how each step runs (inline,
  batched, through its attempts; whether it takes a slot) from the steps and the run's
  options, once per plan and kind of run (and for durable runs, which keep the wiring
  serialized with each run in the journal). The plan itself holds facts about the graph.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import attrs

from ._arguments import Input, Result, Source
from ._errors import (
    CycleError,
    DefinitionError,
    TypeMismatchError,
    UnknownReferenceError,
)
from ._typecheck import describe
from ._wiring import Wire, Wired, digraph, edges_of, find_cycle, wire_steps

if TYPE_CHECKING:
    from ._step import Step

__all__ = ["ArgSpec", "Argv", "ParamNames", "Plan", "compile_plan"]


class ArgSpec(NamedTuple):
    """One wired parameter: where its value comes from (a tuple: plans hold many)."""

    param: str
    slot: int  # index into the run's value array; -1 for the Context
    path: tuple[Any, ...]
    source: Source | None  # None: the run Context
    positional: bool
    transform: Callable[[Any], Any] | None = None  # the source's, applied after the path


@attrs.frozen(eq=False)
class Plan:
    """The validated, compiled form of a reactor: what a run executes.

    Attributes:
        generations: topological generations of step names (each list in definition order).
        order: the steps in plan order (generations, then definition order).
        critical_path: the longest chain of dependent steps, by number of steps.
        inputs: the reactor's declared inputs.
        returns: the step or input whose value ``run()`` returns (None: every result).
    """

    reactor: str
    generations: tuple[tuple[str, ...], ...]
    order: tuple[str, ...]
    critical_path: tuple[str, ...]
    inputs: tuple[str, ...]
    returns: str | None
    defined: tuple[Step[..., Any], ...] = attrs.field(repr=False)  # definition order
    # -- compiled arrays (see the module docstring) --
    steps: tuple[Step[..., Any], ...] = attrs.field(repr=False)
    fns: tuple[Callable[..., Any], ...] = attrs.field(repr=False)
    index: dict[str, int] = attrs.field(repr=False)
    argv: Argv = attrs.field(repr=False)
    simple: tuple[tuple[int, ...] | None, ...] = attrs.field(repr=False)
    param_names: ParamNames = attrs.field(repr=False)
    fetch: tuple[Callable[[Sequence[Any]], Sequence[Any]] | None, ...] = attrs.field(repr=False)
    dependents: tuple[tuple[int, ...], ...] = attrs.field(repr=False)
    deps: tuple[tuple[int, ...], ...] = attrs.field(repr=False)
    ndeps: tuple[int, ...] = attrs.field(repr=False)
    reads: tuple[tuple[int, ...], ...] = attrs.field(repr=False)
    readers: tuple[int, ...] = attrs.field(repr=False)
    priority: tuple[int, ...] = attrs.field(repr=False)
    ready_order: tuple[tuple[int, ...], ...] = attrs.field(repr=False)
    constants: tuple[Any, ...] = attrs.field(repr=False)
    input_paths: tuple[tuple[str, str, Input], ...] = attrs.field(repr=False)
    return_slot: int | None = attrs.field(repr=False)
    roots: tuple[int, ...] = attrs.field(repr=False)
    # Steps that check inputs they are wired to before any step runs (map: an iterable).
    input_checks: tuple[int, ...] = attrs.field(repr=False)
    input_index: dict[str, int] = attrs.field(repr=False)  # input name -> its position
    no_results: dict[str, None] = attrs.field(repr=False)  # every step's name, plan order
    # The execution layer's per-plan cache (see the module docstring).
    modes: dict[Any, Any] = attrs.field(factory=dict, repr=False)
    # What is made the first time it is asked for (`edges`, `graph`, `structure`,
    # `fingerprint`): a holder, as the plan itself is frozen.
    _made: dict[str, Any] = attrs.field(factory=dict, repr=False, alias="_made")

    @property
    def size(self) -> int:
        """The number of steps."""
        return len(self.steps)

    @property
    def edges(self) -> dict[tuple[str, str], dict[str, Any]]:
        """The edges of `graph` with their data (see `_wiring.edges_of`)."""
        edges = self._made.get("edges")
        if edges is None:
            edges = self._made["edges"] = edges_of(self.inputs, self.defined)
        return edges

    @property
    def graph(self) -> Any:
        """The ``networkx.DiGraph`` of inputs and steps, built the first time it is asked
        for: running needs only the compiled arrays, so networkx is imported by the first
        drawing or graph query, not by planning."""
        graph = self._made.get("graph")
        if graph is None:
            graph = digraph(self.reactor, self.inputs, self.defined, self.edges)
            self._made["graph"] = graph
        return graph

    @property
    def structure(self) -> dict[str, tuple[str, ...]]:
        """Each step's dependencies, steps and inputs, by name (sorted), in plan order:
        what a checkpoint records of the reactor it was made by."""
        structure = self._made.get("structure")
        if structure is None:
            structure = self._made["structure"] = {
                name: _needs(self.argv[i], step.wait_for)
                for i, (name, step) in enumerate(zip(self.order, self.steps, strict=True))
            }
        return structure

    @property
    def fingerprint(self) -> str:
        """A digest of the inputs and `structure`: a checkpoint fits a plan with the same."""
        fingerprint = self._made.get("fingerprint")
        if fingerprint is None:
            fingerprint = self._made["fingerprint"] = _fingerprint(self.inputs, self.structure)
        return fingerprint


def _needs(argv: tuple[ArgSpec, ...], wait_for: tuple[str, ...]) -> tuple[str, ...]:
    """The names a step depends on: the inputs and steps it reads, the steps it waits for."""
    names = set(wait_for)
    for a in argv:
        if isinstance(a.source, Result):
            names.add(a.source.step)
        elif isinstance(a.source, Input):
            names.add(a.source.name)
    return tuple(sorted(names))


def compile_plan(
    reactor: str,
    inputs: Sequence[str],
    steps: Sequence[Step[..., Any]],
    returns: str | None,
) -> Plan:
    """Validate and compile. Raises `DefinitionError` subclasses for what is wrong: in
    definition order, what wiring finds (`_wiring.wire_steps`); then a step named after
    another and a dot; an unknown ``returns``; a cycle; and the first wiring in plan order
    whose annotations cannot meet."""
    wired = wire_steps(inputs, steps)
    _check_child_names(reactor, wired.position)
    if returns is not None and returns not in inputs and returns not in wired.position:
        raise UnknownReferenceError(
            "returns", returns, [*inputs, *(s.name for s in steps)], what="step or input"
        )
    generations, order_pos = _generations(steps, wired.preds)
    n = len(steps)
    if len(order_pos) < n:
        raise CycleError(find_cycle(reactor, steps, edges_of(inputs, steps)), reactor)
    index_of_pos = [0] * n  # definition position -> plan index
    for i, k in enumerate(order_pos):
        index_of_pos[k] = i
    if wired.mismatches:
        _, step, param, producer = min(wired.mismatches, key=lambda m: index_of_pos[m[0]])
        raise TypeMismatchError(
            step.name,
            param.name,
            describe(param.annotation),
            producer.name,
            describe(producer.result_type),
        )
    ordered_steps = tuple(map(steps.__getitem__, order_pos))
    order = tuple([s.name for s in ordered_steps])
    index = dict(zip(order, range(n), strict=True))
    args = _compile_arguments(wired, order_pos, index_of_pos, len(inputs))
    deps = args.deps
    dependents, priority, critical, ready_order = _priorities(deps, order)

    return_slot = None
    if returns is not None:
        return_slot = index[returns] if returns in index else n + inputs.index(returns)
    return Plan(
        reactor=reactor,
        generations=generations,
        order=order,
        critical_path=critical,
        inputs=tuple(inputs),
        returns=returns,
        defined=tuple(steps),
        steps=ordered_steps,
        fns=tuple([s.fn for s in ordered_steps]),
        index=index,
        argv=args.argv,
        simple=args.simple,
        param_names=args.param_names,
        fetch=args.fetch,
        dependents=dependents,
        deps=deps,
        ndeps=tuple(map(len, deps)),
        reads=args.reads,
        readers=args.readers,
        priority=priority,
        ready_order=ready_order,
        constants=tuple(wired.constants),
        input_paths=tuple(
            (steps[k].name, param, source)
            for k, param, source in sorted(wired.input_paths, key=lambda e: index_of_pos[e[0]])
        ),
        return_slot=return_slot,
        roots=tuple([i for i in range(n) if not deps[i]]),
        input_checks=tuple([i for i, s in enumerate(ordered_steps) if s.input_checks]),
        input_index={name: k for k, name in enumerate(inputs)},
        # From `index`: fromkeys of a dict reuses its hashes and size, no key is touched.
        no_results=dict.fromkeys(index),
    )


def _check_child_names(reactor: str, position: dict[str, int]) -> None:
    """No step is named after another step of the reactor and a dot (``sub.x`` beside
    ``sub``): the steps of a step's child runs (a composed reactor, map elements, new
    steps) are named so, in events and in the journal, which would take one for the other.

    Raises:
        DefinitionError: naming both steps.
    """
    for name in [n for n in position if "." in n]:
        head = name
        while (dot := head.rfind(".")) > 0:
            head = head[:dot]
            if head in position:
                raise DefinitionError(
                    f"Reactor {reactor!r}: step {name!r} is named after step {head!r} "
                    f"and a dot, as the steps of {head!r}'s child runs are (a composed "
                    "reactor's, map elements', new steps'); rename one of them."
                )


class _Arguments(NamedTuple):
    """Each step's compiled arguments (see the module docstring), by plan index."""

    argv: Argv
    simple: tuple[tuple[int, ...] | None, ...]
    param_names: ParamNames
    fetch: tuple[Callable[[Sequence[Any]], Sequence[Any]] | None, ...]
    deps: tuple[tuple[int, ...], ...]
    reads: tuple[tuple[int, ...], ...]
    readers: tuple[int, ...]


_param = itemgetter(0)


def _compile_arguments(
    wired: Wired, order_pos: list[int], index_of_pos: list[int], n_inputs: int
) -> _Arguments:
    """Each step's wiring as slots, and the steps it waits for and reads, by plan index,
    in one pass over the steps (a pass per field would walk many scattered objects several
    times over). A step with no ``wait_for`` reads what it waits for: one sorted tuple."""
    n = len(order_pos)
    # A wire's slot -> the plan's: results move to their plan index; inputs and constants
    # stay; the Context's -1 is the last item.
    slot_of = [*index_of_pos, *range(n, n + n_inputs + len(wired.constants)), -1]
    plan_index = index_of_pos.__getitem__
    simple: list[tuple[int, ...] | None] = []
    fetch: list[Callable[[Sequence[Any]], Sequence[Any]] | None] = []
    deps: list[tuple[int, ...]] = []
    reads: list[tuple[int, ...]] = []
    readers = [0] * n
    all_preds, all_reads = wired.preds, wired.reads
    for k in order_pos:
        if wired.simple[k]:
            wires = wired.wires[k]
            slots = (
                (slot_of[wires[0][1]],)
                if len(wires) == 1
                else tuple([slot_of[wire[1]] for wire in wires])
            )
            simple.append(slots)
            fetch.append(_fetcher(slots))
        else:
            simple.append(None)
            fetch.append(None)
        preds = all_preds[k]
        waits = tuple(sorted(map(plan_index, preds))) if preds else ()
        deps.append(waits)
        mine = waits
        if all_reads[k] is not preds:  # (`wire_steps` gives the same list when no wait_for)
            mine = tuple(sorted(map(plan_index, all_reads[k])))
        for j in mine:
            readers[j] += 1
        reads.append(mine)
    return _Arguments(
        Argv(wired.wires, order_pos, slot_of),
        tuple(simple),
        ParamNames(wired.wires, order_pos),
        tuple(fetch),
        tuple(deps),
        tuple(reads),
        tuple(readers),
    )


_T = TypeVar("_T")


class _ByStep(dict[int, _T], metaclass=ABCMeta):
    """A value per step by plan index, made from the step's wires (by `_make`, which each
    kind says) the first time it is looked up (by ``__missing__``: after that, a lookup is
    a dict's)."""

    __slots__ = ("_order", "_wires")

    def __init__(self, wires: list[list[Wire]], order: list[int]) -> None:
        super().__init__()
        self._wires = wires  # by definition position, slots as `wire_steps` left them
        self._order = order  # plan index -> definition position

    def __missing__(self, i: int) -> _T:
        if not 0 <= i < len(self._order):
            raise IndexError(f"no step has plan index {i!r}")
        made = self[i] = self._make(self._wires[self._order[i]])
        return made

    @abstractmethod
    def _make(self, wires: list[Wire]) -> _T:
        """The value of the step whose wires are `wires`."""


class Argv(_ByStep[tuple[ArgSpec, ...]]):
    """`Plan.argv`: each step's `ArgSpec` tuple by plan index, made the first time it is
    looked up. Most steps never are: a run gets their arguments through ``fetch``."""

    __slots__ = ("_slot_of",)

    def __init__(self, wires: list[list[Wire]], order: list[int], slot_of: list[int]) -> None:
        super().__init__(wires, order)
        self._slot_of = slot_of  # the slots of `wire_steps` -> the plan's

    def _make(self, wires: list[Wire]) -> tuple[ArgSpec, ...]:
        slot_of = self._slot_of
        return tuple(
            [
                ArgSpec(param, slot_of[slot], path, source, positional, transform)
                for param, slot, path, source, positional, transform in wires
            ]
        )


class ParamNames(_ByStep[tuple[str, ...]]):
    """`Plan.param_names`: the parameter names of each step's ``argv``, in order, by plan
    index, made the first time they are looked up: only callbacks and composites that take
    a step's arguments by name ask."""

    __slots__ = ()

    def _make(self, wires: list[Wire]) -> tuple[str, ...]:
        return tuple(map(_param, wires))


def _priorities(
    deps: Sequence[Sequence[int]], order: tuple[str, ...]
) -> tuple[
    tuple[tuple[int, ...], ...], tuple[int, ...], tuple[str, ...], tuple[tuple[int, ...], ...]
]:
    """Each step's dependents, its priority (the longest chain of steps from it to a
    sink), the critical path, and each step's dependents most critical first."""
    n = len(deps)
    dependents: list[Sequence[int]] = [()] * n  # a list only for a step with some
    for i, ds in enumerate(deps):
        for j in ds:
            if dependents[j]:
                dependents[j].append(i)  # type: ignore[attr-defined]
            else:
                dependents[j] = [i]
    priority = [1] * n
    of = priority.__getitem__
    for i in range(n - 1, -1, -1):
        if dependents[i]:
            priority[i] = 1 + max(map(of, dependents[i]))
    critical: list[str] = []
    if n:
        i = priority.index(max(priority))  # the first of the most critical
        while True:
            critical.append(order[i])
            if not dependents[i]:
                break
            i = min(dependents[i], key=lambda k: (-priority[k], k))
    # Most critical first (stable: ties stay in index order, as dependents is ascending).
    negated = [-p for p in priority]
    ready_order = tuple(
        [tuple(d) if len(d) < 2 else tuple(sorted(d, key=negated.__getitem__)) for d in dependents]
    )
    return tuple(map(tuple, dependents)), tuple(priority), tuple(critical), ready_order


def _generations(
    steps: Sequence[Step[..., Any]], preds: list[list[int]]
) -> tuple[tuple[tuple[str, ...], ...], list[int]]:
    """The graph's topological generations (as ``networkx.topological_generations``), each
    in definition order, and the positions of the steps in that order; steps on a cycle
    are left out, so the caller can tell.

    Kahn's algorithm on definition positions (lists of ints, no dict of names).
    """
    indegree = [len(ps) for ps in preds]
    succs: list[Sequence[int]] = [()] * len(preds)  # a list only for a step with some
    for k, ps in enumerate(preds):
        for p in ps:
            if succs[p]:
                succs[p].append(k)  # type: ignore[attr-defined]
            else:
                succs[p] = [k]
    current = [k for k, d in enumerate(indegree) if not d]
    generations = []
    order: list[int] = []
    while current:
        generations.append(tuple([steps[k].name for k in current]))
        order.extend(current)
        after = []
        for k in current:
            for d in succs[k]:
                indegree[d] -= 1
                if not indegree[d]:
                    after.append(d)
        after.sort()
        current = after
    return tuple(generations), order


def _fetcher(slots: tuple[int, ...]) -> Callable[[Sequence[Any]], Sequence[Any]]:
    if len(slots) > 1:
        return itemgetter(*slots)
    if slots:
        return itemgetter(slice(slots[0], slots[0] + 1))
    return itemgetter(slice(0, 0))


def _fingerprint(inputs: Iterable[str], structure: dict[str, tuple[str, ...]]) -> str:
    import hashlib

    text = repr((sorted(inputs), sorted(structure.items())))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
