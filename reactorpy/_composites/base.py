"""What every composite step shares: `CompositeStep`, and the reactor a step unit runs as.

Owns: `CompositeStep` (a step whose call runs children through a `ChildScope`), the
one-step reactor a plain `Step` becomes when a map or a switch runs it (`child_reactor`),
and the checks of the reactors composites are given.
Must not import: the executor's state (composites reach a run through `ChildScope`), the
reactor module (reactors are made through the factory they are given).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._arguments import Input, NameRef, Result, Source
from .._checks import check_options
from .._errors import DefinitionError
from .._step import Step

if TYPE_CHECKING:
    from .._checkpoint import Checkpoint
    from .._executor.scope import ChildScope

__all__ = ["CompositeStep", "ReactorLike", "by_name", "child_reactor", "is_reactor", "wiring_for"]

#: A reactor, as composites see one (`reactorpy.Reactor`; they never import it).
ReactorLike = Any


def is_reactor(obj: Any) -> bool:
    """Whether `obj` is a reactor (duck-typed: composites never import the class)."""
    return (
        not isinstance(obj, Step)
        and callable(getattr(obj, "plan", None))
        and hasattr(obj, "inputs")
    )


def by_name(name: str) -> Source:
    """A bare name: the input of that name, or else the step."""
    return NameRef(name)


def _signature_fn(name: str, params: Sequence[str]) -> Callable[..., Any]:
    """A placeholder function whose signature names the composite's wired parameters."""

    async def composite(**kwargs: Any) -> Any:  # pragma: no cover - never called directly
        raise TypeError(f"composite step {name!r} runs only inside a reactor")

    composite.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in params]
    )
    composite.__name__ = name
    composite.__qualname__ = name
    return composite


class CompositeStep(Step[..., Any]):
    """A step that runs other steps or reactors (made by compose, map, switch, recurse
    and around). Its `call` gets a `ChildScope` and the step's arguments by name."""

    composite = True

    def __init__(
        self,
        name: str,
        params: Sequence[str],
        call: Callable[[ChildScope, dict[str, Any]], Any],
        children: dict[str, ReactorLike],
        args: Mapping[str, Source] | None = None,
        **options: Any,
    ) -> None:
        check_options(options, f"Composite step {name!r}")
        for bad in ("executor", "async_"):
            if bad in options:
                raise DefinitionError(
                    f"Composite step {name!r} does not take {bad}="
                    + (
                        " (compose does: async_=False runs its child one step at a time)."
                        if bad == "async_"
                        else "."
                    )
                )
        super().__init__(_signature_fn(name, params), name=name, args=args, **options)
        self.call = call
        self.children = children
        # For a child that halted inside this step (its entry in `Checkpoint.inner`): the
        # child reactor, its checkpoint and the label its steps are named with.
        self.halted_child: Callable[[Any], tuple[ReactorLike, Checkpoint, str]] = _no_inner

    @property
    def has_features(self) -> bool:
        return True


def _no_inner(inner: Any) -> tuple[ReactorLike, Checkpoint, str]:  # pragma: no cover
    raise AssertionError("only compose and switch keep a halted child")


def child_reactor(unit: Step[..., Any] | ReactorLike, factory: Callable[..., Any]) -> Any:
    """The reactor to run for `unit`: itself, or a one-step reactor (made by `factory`,
    the reactor class) around a step.

    A step's parameters wired by name become the child's inputs, in order. So do the
    inputs and results its own ``args=`` name (``rp.Result("outer", "id")``): the child gets
    an input of that name, which the composite wires from the parent by name, while the
    path and transform stay on the step (``outer_sources`` lists those inputs). Its
    ``wait_for`` becomes the composite's (``outer_wait_for``).
    """
    if is_reactor(unit):
        return unit
    if not isinstance(unit, Step):
        raise DefinitionError(f"Expected a Step or a Reactor, got {unit!r}.")
    cached = getattr(unit, "_as_reactor", None)
    if cached is not None and cached[0] == unit.version:
        return cached[1]
    wired = [p.name for p in unit.params if not p.is_context and p.name not in unit.args]
    args: dict[str, Source] = {p: Input(p) for p in wired}
    extra: list[str] = []
    for param, source in unit.args.items():
        if isinstance(source, Result):
            outer, path = source.step, source.path
        elif isinstance(source, Input):
            outer, path = source.name, source.path
        else:
            continue
        if outer not in wired and outer not in extra:
            extra.append(outer)
        args[param] = Input(outer, *path, transform=source.transform)
    r = factory(unit.name, inputs=[*wired, *extra], returns=unit.name)
    r.add(unit.evolve(args=args)._replace(wait_for=()))
    r.outer_sources = tuple(extra)
    r.outer_wait_for = unit.wait_for
    unit.__dict__["_as_reactor"] = (unit.version, r)
    return r


def outer(child: ReactorLike, attribute: str) -> tuple[str, ...]:
    """What `child_reactor` noted on a step's one-step reactor (nothing for a reactor)."""
    return tuple(getattr(child, attribute, ()))


def with_wait_for(
    options: dict[str, Any], children: Iterable[ReactorLike | None]
) -> dict[str, Any]:
    """The composite's options with the ``wait_for`` of the steps it runs added: a step in
    a branch or a map element waits for steps of the parent through its composite."""
    extra = [w for c in children if c is not None for w in outer(c, "outer_wait_for")]
    if not extra:
        return options
    own = options.get("wait_for", ())
    own = (own,) if isinstance(own, str) else tuple(own)
    return {**options, "wait_for": (*own, *(w for w in extra if w not in own))}


def wiring_for(reactor: ReactorLike, args: Mapping[str, Source] | None) -> dict[str, Source]:
    """`args` for a child reactor's inputs; names that are not its inputs are an error."""
    args = dict(args or {})
    unknown = set(args) - set(reactor.inputs)
    if unknown:
        raise DefinitionError(
            f"args names {sorted(unknown)!r}, which are not inputs of reactor "
            f"{reactor.name!r}; its inputs: {list(reactor.inputs)!r}."
        )
    return args


def check_reactor(kind: str, name: str, child: Any) -> None:
    """`child` must be a reactor for compose, recurse and around."""
    if not is_reactor(child):
        raise DefinitionError(f"{kind}({name!r}, ...) takes a Reactor, got {child!r}.")
