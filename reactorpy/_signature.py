"""What a step's function is: its parameters, its name, whether calling it gives a coroutine.

Owns: signature inspection (`inspect_params`, done once when a step is defined), `Param`,
`Callback` (a compensate, undo or guard function and the step arguments it asks for),
`default_name`, `is_async_callable`.
Must not import: the planner, the executor, `_step` (which builds on this).
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
import weakref
from collections.abc import Callable, Collection, Mapping
from typing import Any

import attrs

from ._arguments import Context, Input, Result, Source, Value
from ._errors import DefinitionError
from ._sigcache import cached
from ._typecheck import NO_TYPE, decidable

__all__ = [
    "Callback",
    "is_undo",
    "remember_undo",
    "Param",
    "check_name",
    "check_sources",
    "default_name",
    "inspect_params",
    "inspect_step",
    "is_async_callable",
    "is_generator",
    "step_name",
]


@attrs.frozen
class Param:
    """One parameter of a step function, as inspected at decoration."""

    name: str
    positional: bool  # may be passed positionally
    has_default: bool
    is_context: bool
    # The resolved annotation when the plan's wiring check can decide about it, else NO_TYPE.
    annotation: Any = attrs.field(default=NO_TYPE, eq=False)


def _is_context_annotation(annotation: Any) -> bool:
    if annotation is Context:
        return True
    if isinstance(annotation, str):
        return annotation == "Context" or annotation.endswith(".Context")
    return False


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """The resolved annotations of `fn`; one that does not resolve is left a string (the
    others still resolve), and a callable without annotations has none."""
    try:
        return typing.get_type_hints(fn)
    except Exception:
        pass
    raw = getattr(fn, "__annotations__", None)
    if not isinstance(raw, dict):
        return {}
    globalns = getattr(inspect.unwrap(fn), "__globals__", None) or {}
    hints: dict[str, Any] = {}
    for name, annotation in raw.items():
        holder = types.SimpleNamespace(__annotations__={name: annotation})
        try:
            hints[name] = typing.get_type_hints(holder, globalns=globalns)[name]
        except Exception:
            hints[name] = annotation
    return hints


def inspect_params(fn: Callable[..., Any], what: str) -> tuple[tuple[Param, ...], bool]:
    """Return the wirable parameters of `fn` and whether it takes ``**kwargs``."""
    params, var_kw, _ = inspect_step(fn, what)
    return params, var_kw


def inspect_step(fn: Callable[..., Any], what: str) -> tuple[tuple[Param, ...], bool, Any]:
    """`inspect_params`, and the annotation of what `fn` returns (awaited, for an ``async
    def``) when the plan's wiring check can decide about it, else `NO_TYPE`. Inspected
    once per function (`_sigcache`: again when what it read has changed).

    Raises:
        DefinitionError: the signature cannot be read.
    """
    try:
        return cached(fn, _inspect)
    except _Unreadable as exc:
        raise DefinitionError(f"Cannot read the signature of {what}: {exc}") from None


class _Unreadable(Exception):
    """`inspect.signature` refused the function (the message is its)."""


def _inspect(fn: Callable[..., Any]) -> tuple[tuple[Param, ...], bool, Any]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise _Unreadable(str(exc)) from None
    hints = _type_hints(fn)
    params: list[Param] = []
    var_kw = False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
            continue
        if p.kind is p.VAR_POSITIONAL:
            continue
        ann = hints.get(p.name, p.annotation)
        is_context = _is_context_annotation(ann)
        params.append(
            Param(
                name=p.name,
                positional=p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD),
                has_default=p.default is not p.empty,
                is_context=is_context,
                annotation=NO_TYPE if is_context or ann is p.empty else decidable(ann),
            )
        )
    returned = hints.get("return", NO_TYPE)
    if returned is NO_TYPE or _mentions_new_steps(returned):
        result_type = NO_TYPE  # a NewSteps result becomes another step's value: undecided
    else:
        result_type = decidable(returned)
    return tuple(params), var_kw, result_type


def _mentions_new_steps(annotation: Any) -> bool:
    """Whether `annotation` is, or holds, `rp.NewSteps` (known by name: it is defined above
    this module, in `_step`)."""
    if getattr(annotation, "__qualname__", None) == "NewSteps" and str(
        getattr(annotation, "__module__", "")
    ).startswith("reactorpy"):
        return True
    return any(_mentions_new_steps(arg) for arg in typing.get_args(annotation))


@attrs.define(slots=True)
class Callback:
    """A compensate, undo or guard function and the step arguments it asks for."""

    fn: Callable[..., Any]
    leading: bool  # takes a leading positional value (the error or the result)
    names: frozenset[str] | None  # None: every argument (it takes **kwargs)
    wants_context: str | None
    is_async: bool

    @classmethod
    def of(cls, fn: Callable[..., Any], *, leading: bool, what: str) -> Callback:
        params, var_kw = inspect_params(fn, what)
        ctx = next((p.name for p in params if p.is_context), None)
        rest = [p for p in params if not p.is_context]
        if leading:
            if not rest or not rest[0].positional:
                raise DefinitionError(
                    f"{what} must take the {'error' if 'compensate' in what else 'result'} "
                    "as its first positional parameter."
                )
            rest = rest[1:]
        return cls(
            fn=fn,
            leading=leading,
            names=None if var_kw else frozenset(p.name for p in rest),
            wants_context=ctx,
            is_async=inspect.iscoroutinefunction(fn),
        )

    def kwargs(self, arguments: Mapping[str, Any], context: Context | None) -> dict[str, Any]:
        """The keyword arguments to call this callback with."""
        if self.names is None:
            kw = dict(arguments)
        else:
            kw = {k: v for k, v in arguments.items() if k in self.names}
        if self.wants_context is not None:
            kw[self.wants_context] = context
        return kw


# Every function registered as an undo callback in this process (`Step.undo`), weakly: the
# only functions a journal may name as one (`_checkpoint.by_reference`).
_undo_functions: weakref.WeakSet[Any] = weakref.WeakSet()


def remember_undo(fn: Any) -> None:
    """Note that `fn` is registered as an undo callback (a plain function only)."""
    if type(fn) is types.FunctionType:
        _undo_functions.add(fn)


def is_undo(fn: Any) -> bool:
    """Whether `fn` was registered as an undo callback in this process."""
    return type(fn) is types.FunctionType and fn in _undo_functions


def _unwrapped(fn: Any) -> Any:
    """The function behind `fn`: through ``functools.partial`` and ``functools.wraps``."""
    seen = 0
    while seen < 100:
        seen += 1
        if isinstance(fn, functools.partial):
            fn = fn.func
        elif getattr(fn, "__wrapped__", None) is not None:
            fn = fn.__wrapped__
        else:
            return fn
    return fn  # pragma: no cover - a __wrapped__ loop


def default_name(fn: Any) -> str | None:
    """A step's default name: the function's ``__name__``; a partial's function's; a
    callable instance's class's. Never a ``repr`` (it would hold a memory address, and a
    halted run could not be resumed in another process)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    name = getattr(fn, "__name__", None)
    if isinstance(name, str) and name:
        return name
    if not inspect.isroutine(fn):
        return type(fn).__name__
    return None


def is_async_callable(fn: Any) -> bool:
    """Whether calling `fn` returns a coroutine: an ``async def``, a partial of one, a
    ``functools.wraps`` wrapper around one, or an instance whose ``__call__`` is one."""
    if inspect.iscoroutinefunction(fn):
        return True
    inner = _unwrapped(fn)
    if inner is not fn and inspect.iscoroutinefunction(inner):
        return True
    if not inspect.isroutine(inner) and not isinstance(inner, type):
        call = getattr(type(inner), "__call__", None)  # noqa: B004 - the class's method
        return call is not None and inspect.iscoroutinefunction(call)
    return False


def is_generator(fn: Any) -> bool:
    """Whether `fn` (through partials, wrappers and ``__call__``) is a generator function."""
    inner = _unwrapped(fn)
    if not inspect.isroutine(inner) and not isinstance(inner, type):
        inner = getattr(type(inner), "__call__", inner)  # noqa: B004
    return inspect.isasyncgenfunction(inner) or inspect.isgeneratorfunction(inner)


def check_name(name: Any) -> None:
    """A step name is a non-empty string of printable characters (the journal keeps its
    own marks under keys that start with a control character).

    Raises:
        DefinitionError: otherwise.
    """
    if not isinstance(name, str) or not name:
        raise DefinitionError(f"A step name must be a non-empty string, got {name!r}.")
    if not name.isprintable():
        raise DefinitionError(
            f"A step name must be printable (no newline, tab or other control character), "
            f"got {name!r}."
        )


def step_name(fn: Any, name: str | None) -> str:
    """The name of a step of `fn` (checked; a generator function is refused)."""
    if not callable(fn):
        raise DefinitionError(f"A step needs a function, got {fn!r}.")
    if name is None:
        name = default_name(fn)
        if name is None:
            raise DefinitionError(f"Cannot name the step {fn!r}: give it one with name=...")
    check_name(name)
    if is_generator(fn):
        raise DefinitionError(
            f"Step {name!r} is a generator function: a step returns its result once. "
            "Return a list (or collect the items in the step) instead of yielding."
        )
    return name


def check_sources(
    name: str, args: Any, known: Collection[str], takes_kwargs: bool, fn: Any, *, own: bool = False
) -> dict[str, Source]:
    """A step's ``args=``: sources (`Input`, `Result`, `Value`) for its parameters (whose
    names are `known`), in a dict of its own (`args` itself if the caller made it: `own`)."""
    if args is None:
        return {}
    if type(args) is dict:
        out: dict[str, Source] = args if own else args.copy()
    elif isinstance(args, Mapping):
        out = dict(args.items())
    else:
        raise DefinitionError(
            f"Step {name!r}: args must be a mapping of parameter names to "
            f"rp.Input/rp.Result/rp.Value, got {args!r}."
        )
    for param, source in out.items():
        if type(source) not in _SOURCE_TYPES and not isinstance(source, _SOURCE_TYPES):
            raise DefinitionError(
                f"Step {name!r}: args[{param!r}] is {source!r}; use rp.Input(...), "
                "rp.Result(...) or rp.Value(...)."
            )
        if param not in known and not takes_kwargs:
            raise DefinitionError(
                f"Step {name!r}: args names {param!r}, which is not a parameter of "
                f"{getattr(fn, '__qualname__', fn)!r}. Parameters: "
                f"{', '.join(repr(p) for p in sorted(known)) or '(none)'}."
            )
    return out


_SOURCE_TYPES = (Input, Result, Value)
