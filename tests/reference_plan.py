"""The planner as it was before reactors built per request made it fast (issue 16): a
plain copy of ``compile_plan`` and ``wire_all`` at 5e2bd8b, kept as the reference that
`test_plan.py`'s property test compares the planner with. It returns the plan's fields as
a dict; nothing in the package uses it."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from reactorpy._arguments import Input, NameRef, Result, Source, Value
from reactorpy._errors import CycleError, TypeMismatchError, UnknownReferenceError
from reactorpy._plan import ArgSpec
from reactorpy._typecheck import NO_TYPE, can_meet, describe
from reactorpy._wiring import find_cycle, wire


def wire_all(reactor: str, inputs: Sequence[str], steps: Sequence[Any]) -> tuple[Any, ...]:
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


def compile_plan(
    reactor: str, inputs: Sequence[str], steps: Sequence[Any], returns: str | None
) -> dict[str, Any]:
    edges, wirings, preds, preds_pos = wire_all(reactor, inputs, steps)
    if returns is not None and returns not in inputs and all(s.name != returns for s in steps):
        raise UnknownReferenceError(
            "returns", returns, [*inputs, *(s.name for s in steps)], what="step or input"
        )
    generations, order_pos = _generations(steps, preds_pos)
    if len(order_pos) < len(steps):
        raise CycleError(find_cycle(reactor, steps, edges), reactor)
    ordered = tuple(steps[k] for k in order_pos)
    order = tuple(s.name for s in ordered)
    index = {name: i for i, name in enumerate(order)}
    index_of_pos = [0] * len(order_pos)
    for i, k in enumerate(order_pos):
        index_of_pos[k] = i
    n = len(order)
    input_slot = {name: n + k for k, name in enumerate(inputs)}
    args = _compile_arguments(ordered, wirings, index, input_slot, len(inputs))
    deps = [tuple(sorted(index_of_pos[k] for k in preds_pos[order_pos[i]])) for i in range(n)]
    dependents, priority, critical, ready_order = _priorities(deps, order)
    return_slot = None
    if returns is not None:
        return_slot = index[returns] if returns in index else input_slot[returns]
    structure = {name: tuple(sorted(preds[name])) for name in order}
    text = repr((sorted(inputs), sorted(structure.items())))
    return {
        "generations": generations,
        "order": order,
        "critical_path": critical,
        "inputs": tuple(inputs),
        "returns": returns,
        "edges": edges,
        "defined": tuple(steps),
        "steps": ordered,
        "fns": tuple(s.fn for s in ordered),
        "index": index,
        **args,
        "dependents": tuple(tuple(d) for d in dependents),
        "deps": tuple(deps),
        "ndeps": tuple(len(d) for d in deps),
        "priority": priority,
        "ready_order": ready_order,
        "return_slot": return_slot,
        "roots": tuple(i for i in range(n) if not deps[i]),
        "input_checks": tuple(i for i, s in enumerate(ordered) if s.input_checks),
        "no_results": dict.fromkeys(index),
        "fingerprint": hashlib.sha256(text.encode()).hexdigest()[:16],
        "structure": structure,
    }


def _compile_arguments(steps, wirings, index, input_slot, n_inputs):  # type: ignore[no-untyped-def]
    n = len(steps)
    constants: list[Any] = []
    argv, simple, reads, input_paths, param_names = [], [], [], [], []
    readers = [0] * n
    for s in steps:
        specs = []
        positional_ok = True
        read = set()
        params = {p.name: p for p in s.params}
        for param, source in wirings[s.name].items():
            positional = param in params and params[param].positional and positional_ok
            if not positional:
                positional_ok = False
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
        simple.append(tuple(a.slot for a in specs) if is_simple else None)
        param_names.append(tuple(a.param for a in specs))
    return {
        "argv": tuple(argv),
        "simple": tuple(simple),
        "param_names": tuple(param_names),
        "reads": tuple(reads),
        "readers": tuple(readers),
        "constants": tuple(constants),
        "input_paths": tuple(input_paths),
    }


def _priorities(deps, order):  # type: ignore[no-untyped-def]
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
        i = priority.index(max(priority))
        while True:
            critical.append(order[i])
            if not dependents[i]:
                break
            i = min(dependents[i], key=lambda k: (-priority[k], k))
    ready_order = tuple(tuple(sorted(d, key=lambda k: (-priority[k], k))) for d in dependents)
    return dependents, tuple(priority), tuple(critical), ready_order


def _check_types(step, param, source, producer):  # type: ignore[no-untyped-def]
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


def _generations(steps, preds):  # type: ignore[no-untyped-def]
    indegree = [len(ps) for ps in preds]
    succs: list[list[int]] = [[] for _ in preds]
    for k, ps in enumerate(preds):
        for p in ps:
            succs[p].append(k)
    current = [k for k, d in enumerate(indegree) if not d]
    generations, order = [], []
    while current:
        generations.append(tuple(steps[k].name for k in current))
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


__all__ = ["NameRef", "compile_plan", "wire_all"]
