"""Planning: validate a reactor's steps, compile a `Plan`, and draw its `networkx.DiGraph`.

Owns: reference resolution (parameter names to inputs or steps), cycle and unknown-name checks,
topological generations, per-step priorities, and the compact integer-indexed arrays the
executor runs from. A `Plan` is immutable and cached by the reactor until its definition changes.
Must not import: asyncio, the executor.

The arrays, for step index ``i`` (indices follow ``Plan.order``):

- ``slots``: one value array holds step results at ``[0, n)``, inputs at ``[n, n + k)`` and
  constant `Value` arguments after them, so resolving an argument is one index.
- ``argv[i]``: ``(param, slot, path, source, positional, transform)`` per wired parameter.
- ``param_names[i]``: the parameter names of ``argv[i]``, in order.
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
  options, once per plan and kind of run. The plan itself holds facts about the graph.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any, NamedTuple

import attrs

from ._arguments import Input, Result, Source, Value
from ._errors import (
    CycleError,
    TypeMismatchError,
    UnknownReferenceError,
)
from ._typecheck import NO_TYPE, can_meet, describe
from ._wiring import digraph, find_cycle, wire_all

if TYPE_CHECKING:
    from ._step import Param, Step

__all__ = ["ArgSpec", "Plan", "compile_plan"]


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
    edges: dict[tuple[str, str], dict[str, Any]] = attrs.field(repr=False)  # of `graph`
    defined: tuple[Step[..., Any], ...] = attrs.field(repr=False)  # definition order
    # -- compiled arrays (see the module docstring) --
    steps: tuple[Step[..., Any], ...] = attrs.field(repr=False)
    fns: tuple[Callable[..., Any], ...] = attrs.field(repr=False)
    index: dict[str, int] = attrs.field(repr=False)
    argv: tuple[tuple[ArgSpec, ...], ...] = attrs.field(repr=False)
    simple: tuple[tuple[int, ...] | None, ...] = attrs.field(repr=False)
    param_names: tuple[tuple[str, ...], ...] = attrs.field(repr=False)
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
    fingerprint: str = attrs.field(repr=False)
    structure: dict[str, tuple[str, ...]] = attrs.field(repr=False)
    # The execution layer's per-plan cache (see the module docstring).
    modes: dict[Any, Any] = attrs.field(factory=dict, repr=False)
    # The DiGraph, once `graph` has built it (a holder: the plan itself is frozen).
    _graph: list[Any] = attrs.field(factory=list, repr=False, alias="_graph")

    @property
    def size(self) -> int:
        """The number of steps."""
        return len(self.steps)

    @property
    def graph(self) -> Any:
        """The ``networkx.DiGraph`` of inputs and steps, built the first time it is asked
        for: running needs only the compiled arrays, so networkx is imported by the first
        drawing or graph query, not by planning."""
        if not self._graph:
            self._graph.append(digraph(self.reactor, self.inputs, self.defined, self.edges))
        return self._graph[0]


def compile_plan(
    reactor: str,
    inputs: Sequence[str],
    steps: Sequence[Step[..., Any]],
    returns: str | None,
) -> Plan:
    """Validate and compile. Raises `DefinitionError` subclasses for what is wrong."""
    edges, wirings, preds, preds_pos = wire_all(reactor, inputs, steps)
    if returns is not None and returns not in inputs and all(s.name != returns for s in steps):
        raise UnknownReferenceError(
            "returns", returns, [*inputs, *(s.name for s in steps)], what="step or input"
        )
    generations, order_pos = _generations(steps, preds_pos)
    if len(order_pos) < len(steps):
        raise CycleError(find_cycle(reactor, steps, edges), reactor)
    ordered_steps = tuple([steps[k] for k in order_pos])
    order = tuple([s.name for s in ordered_steps])
    index = {name: i for i, name in enumerate(order)}
    index_of_pos = [0] * len(order_pos)  # definition position -> plan index
    for i, k in enumerate(order_pos):
        index_of_pos[k] = i
    n = len(order)
    input_slot = {name: n + k for k, name in enumerate(inputs)}

    args = _compile_arguments(ordered_steps, wirings, index, input_slot, len(inputs))
    deps = [tuple(sorted([index_of_pos[k] for k in preds_pos[order_pos[i]]])) for i in range(n)]
    dependents_l, priority, critical, ready_order = _priorities(deps, order)

    return_slot = None
    if returns is not None:
        return_slot = index[returns] if returns in index else input_slot[returns]
    structure = {name: tuple(sorted(preds[name])) for name in order}
    return Plan(
        reactor=reactor,
        generations=generations,
        order=order,
        critical_path=critical,
        inputs=tuple(inputs),
        returns=returns,
        edges=edges,
        defined=tuple(steps),
        steps=ordered_steps,
        fns=tuple([s.fn for s in ordered_steps]),
        index=index,
        argv=args.argv,
        simple=args.simple,
        param_names=args.param_names,
        fetch=args.fetch,
        dependents=tuple(tuple(d) for d in dependents_l),
        deps=tuple(deps),
        ndeps=tuple(len(d) for d in deps),
        reads=args.reads,
        readers=args.readers,
        priority=priority,
        ready_order=ready_order,
        constants=args.constants,
        input_paths=args.input_paths,
        return_slot=return_slot,
        roots=tuple(i for i in range(n) if not deps[i]),
        input_checks=tuple(i for i, s in enumerate(ordered_steps) if s.input_checks),
        input_index={name: k for k, name in enumerate(inputs)},
        # From `index`: fromkeys of a dict reuses its hashes and size, no key is touched.
        no_results=dict.fromkeys(index),
        fingerprint=_fingerprint(inputs, structure),
        structure=structure,
    )


class _Arguments(NamedTuple):
    """Each step's compiled arguments (see the module docstring), by plan index."""

    argv: tuple[tuple[ArgSpec, ...], ...]
    simple: tuple[tuple[int, ...] | None, ...]
    param_names: tuple[tuple[str, ...], ...]
    fetch: tuple[Callable[[Sequence[Any]], Sequence[Any]] | None, ...]
    reads: tuple[tuple[int, ...], ...]
    readers: tuple[int, ...]
    constants: tuple[Any, ...]
    input_paths: tuple[tuple[str, str, Input], ...]


def _compile_arguments(
    steps: Sequence[Step[..., Any]],
    wirings: dict[str, dict[str, Source | None]],
    index: dict[str, int],
    input_slot: dict[str, int],
    n_inputs: int,
) -> _Arguments:
    """Compile each step's wiring into argument specs and slots, in one pass over the
    steps (a pass per field would walk many scattered objects several times over)."""
    n = len(steps)
    constants: list[Any] = []
    argv: list[tuple[ArgSpec, ...]] = []
    simple: list[tuple[int, ...] | None] = []
    reads: list[tuple[int, ...]] = []
    readers = [0] * n
    input_paths: list[tuple[str, str, Input]] = []
    param_names: list[tuple[str, ...]] = []
    fetch: list[Callable[[Sequence[Any]], Sequence[Any]] | None] = []
    for s in steps:
        specs: list[ArgSpec] = []
        positional_ok = True
        read: set[int] = set()
        params = {p.name: p for p in s.params}
        for param, source in wirings[s.name].items():
            positional = param in params and params[param].positional and positional_ok
            if not positional:
                positional_ok = False  # everything after a keyword-only goes by keyword
            if source is None:
                specs.append(ArgSpec(param, -1, (), None, positional))
                continue
            if isinstance(source, Input):
                slot, path = input_slot[source.name], source.path
                if path:
                    input_paths.append((s.name, param, source))
            elif isinstance(source, Result):
                slot, path = index[source.step], source.path
                read.add(slot)
                if param in params and params[param].annotation is not NO_TYPE:
                    _check_types(s, params[param], source, steps[slot])
            else:
                assert isinstance(source, Value)
                slot, path = n + n_inputs + len(constants), ()
                constants.append(source.value)
            transform = None if isinstance(source, Value) else source.transform
            specs.append(ArgSpec(param, slot, path, source, positional, transform))
        for j in read:
            readers[j] += 1
        reads.append(tuple(sorted(read)))
        argv.append(tuple(specs))
        is_simple = all(
            a.positional and not a.path and a.source is not None and a.transform is None
            for a in specs
        )
        slots = tuple(a.slot for a in specs) if is_simple else None
        simple.append(slots)
        param_names.append(tuple(a.param for a in specs))
        fetch.append(None if slots is None else _fetcher(slots))
    return _Arguments(
        tuple(argv),
        tuple(simple),
        tuple(param_names),
        tuple(fetch),
        tuple(reads),
        tuple(readers),
        tuple(constants),
        tuple(input_paths),
    )


def _priorities(
    deps: list[tuple[int, ...]], order: tuple[str, ...]
) -> tuple[list[list[int]], tuple[int, ...], tuple[str, ...], tuple[tuple[int, ...], ...]]:
    """Each step's dependents, its priority (the longest chain of steps from it to a
    sink), the critical path, and each step's dependents most critical first."""
    n = len(deps)
    dependents: list[list[int]] = [[] for _ in range(n)]
    for i, ds in enumerate(deps):
        for j in ds:
            dependents[j].append(i)
    priority = [1] * n
    for i in range(n - 1, -1, -1):
        if dependents[i]:
            priority[i] = 1 + max(priority[j] for j in dependents[i])
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
        tuple(d) if len(d) < 2 else tuple(sorted(d, key=negated.__getitem__)) for d in dependents
    )
    return dependents, tuple(priority), tuple(critical), ready_order


def _check_types(
    step: Step[..., Any], param: Param, source: Result, producer: Step[..., Any]
) -> None:
    """Raise `TypeMismatchError` if `producer`'s result cannot meet `param`'s annotation.

    Undecided, so never refused: a path or a transform (they change the value), a producer
    without a decidable return annotation, or one whose result may be something else: a
    ``when=`` guard (None when it skips) or a compensate (``rp.Continue(value)``).
    """
    produced = producer.result_type
    if (
        produced is NO_TYPE
        or source.path
        or source.transform is not None
        or producer.when is not None
        or producer.compensate_callback is not None
        or can_meet(produced, param.annotation)
    ):
        return
    raise TypeMismatchError(
        step.name, param.name, describe(param.annotation), producer.name, describe(produced)
    )


def _generations(
    steps: Sequence[Step[..., Any]], preds: list[list[int]]
) -> tuple[tuple[tuple[str, ...], ...], list[int]]:
    """The graph's topological generations (as ``networkx.topological_generations``), each
    in definition order, and the positions of the steps in that order; steps on a cycle
    are left out, so the caller can tell.

    Kahn's algorithm on definition positions (lists of ints, no dict of names).
    """
    indegree = [len(ps) for ps in preds]
    succs: list[list[int]] = [[] for _ in preds]
    for k, ps in enumerate(preds):
        for p in ps:
            succs[p].append(k)
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
