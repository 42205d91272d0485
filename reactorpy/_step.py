"""The `Step`: a user's function plus its options and its undo/compensate callbacks.

Owns: `Step`, the `step` decorator, signature inspection at decoration, and the rules for which
arguments a callback receives.
Must not import: the planner or the executor.
"""

from __future__ import annotations

import concurrent.futures
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, ParamSpec, TypeVar, cast, overload

import attrs

from ._arguments import Context, Input, Result, Source, Value
from ._errors import DefinitionError
from ._typecheck import NO_TYPE, decidable

__all__ = ["Callback", "Continue", "NewSteps", "Param", "Step", "step"]

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])


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


def inspect_params(fn: Callable[..., Any], what: str) -> tuple[list[Param], bool]:
    """Return the wirable parameters of `fn` and whether it takes ``**kwargs``."""
    params, var_kw, _ = inspect_step(fn, what)
    return params, var_kw


def inspect_step(fn: Callable[..., Any], what: str) -> tuple[list[Param], bool, Any]:
    """`inspect_params`, and the annotation of what `fn` returns (awaited, for an ``async
    def``) when the plan's wiring check can decide about it, else `NO_TYPE`."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise DefinitionError(f"Cannot read the signature of {what}: {exc}") from None
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
    return params, var_kw, result_type


def _mentions_new_steps(annotation: Any) -> bool:
    if annotation is NewSteps:
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


# Bumped whenever any step's callbacks change: a reactor whose plan was made at the current
# generation need not look at its steps to know the plan is still good.
_generation = [0]


def hooks_generation() -> int:
    """A counter of callback registrations on any step (for plan caches)."""
    return _generation[0]


class _Hooks:
    """The callbacks of a step, shared by every copy of it (see `Step.evolve`)."""

    __slots__ = ("compensate", "undo", "version")

    def __init__(self) -> None:
        self.undo: Callback | None = None
        self.compensate: Callback | None = None
        self.version = 0


_EXECUTOR_STRINGS = ("thread",)


def _check_sources(name: str, args: Mapping[str, Any]) -> dict[str, Source]:
    out: dict[str, Source] = {}
    for param, source in args.items():
        if not isinstance(source, Input | Result | Value):
            raise DefinitionError(
                f"Step {name!r}: args[{param!r}] is {source!r}; use rp.Input(...), "
                "rp.Result(...) or rp.Value(...)."
            )
        out[param] = source
    return out


class Step(Generic[P, R]):
    """A function registered as a step, still callable like the function itself.

    Create one with ``@reactor.step`` (registered) or ``@rp.step`` (reusable, then
    ``reactor.add(step)``). Its options are read-only; ``@s.undo`` and ``@s.compensate``
    attach callbacks.

    >>> @step
    ... def double(x: int) -> int:
    ...     return 2 * x
    >>> double(21)
    42
    """

    __slots__ = (
        "__dict__",
        "_hooks",
        "args",
        "async_",
        "backoff",
        "concurrency_key",
        "description",
        "executor",
        "fn",
        "is_async",
        "name",
        "params",
        "result_type",
        "retries",
        "retry_on",
        "takes_kwargs",
        "timeout",
        "wait_for",
        "when",
    )

    composite = False  # compose/map/switch steps (see _composite.py) set it

    # Set per instance in __init__ (in __dict__), like functools.wraps would.
    __name__: str
    __qualname__: str
    __wrapped__: Callable[P, R]

    fn: Callable[P, R]
    name: str
    args: dict[str, Source]
    wait_for: tuple[str, ...]
    async_: bool
    retries: int
    retry_on: tuple[type[BaseException], ...]
    backoff: float | Callable[[int, BaseException], float] | None
    timeout: float | None
    executor: Any
    concurrency_key: str | None
    when: Callback | None
    description: str | None
    params: tuple[Param, ...]
    takes_kwargs: bool
    is_async: bool
    result_type: Any  # for the plan's wiring check: decidable, else NO_TYPE

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        args: Mapping[str, Source] | None = None,
        wait_for: Iterable[str] | str = (),
        async_: bool = True,
        retries: int = 0,
        retry_on: type[BaseException] | Iterable[type[BaseException]] = (),
        backoff: float | Callable[[int, BaseException], float] | None = None,
        timeout: float | None = None,
        executor: Any = None,
        concurrency_key: str | None = None,
        when: Callable[..., Any] | None = None,
        description: str | None = None,
        _hooks: _Hooks | None = None,
        _inspected: tuple[list[Param], bool] | tuple[list[Param], bool, Any] | None = None,
    ) -> None:
        if not callable(fn):
            raise DefinitionError(f"A step needs a function, got {fn!r}.")
        self.fn = fn
        self.name = name if name is not None else getattr(fn, "__name__", None) or repr(fn)
        if not isinstance(self.name, str) or not self.name:
            raise DefinitionError(f"A step name must be a non-empty string, got {self.name!r}.")
        self.is_async = inspect.iscoroutinefunction(fn)
        if _inspected is None:  # signatures are inspected once, at decoration
            _inspected = inspect_step(fn, f"step {self.name!r}")
        params, self.takes_kwargs, *result_type = _inspected
        self.result_type = result_type[0] if result_type else NO_TYPE
        self.params = tuple(params)
        self.args = _check_sources(self.name, args or {})
        known = {p.name for p in params}
        for param in self.args:
            if param not in known and not self.takes_kwargs:
                raise DefinitionError(
                    f"Step {self.name!r}: args names {param!r}, which is not a parameter of "
                    f"{getattr(fn, '__qualname__', fn)!r}. Parameters: "
                    f"{', '.join(repr(p) for p in sorted(known)) or '(none)'}."
                )
        self.wait_for = (wait_for,) if isinstance(wait_for, str) else tuple(wait_for)
        self.async_ = bool(async_)
        if not isinstance(retries, int) or retries < 0:
            raise DefinitionError(f"Step {self.name!r}: retries must be an int >= 0.")
        self.retries = retries
        self.retry_on = (retry_on,) if isinstance(retry_on, type) else tuple(retry_on)
        if backoff is not None and not callable(backoff) and backoff < 0:
            raise DefinitionError(f"Step {self.name!r}: backoff must be >= 0 seconds.")
        self.backoff = backoff
        if timeout is not None and timeout <= 0:
            raise DefinitionError(f"Step {self.name!r}: timeout must be > 0 seconds.")
        self.timeout = timeout
        if executor is not None:
            if self.is_async:
                raise DefinitionError(
                    f"Step {self.name!r} is an async def and cannot be sent to an executor; "
                    "make it a plain def, or drop executor=."
                )
            check_executor(executor, f"Step {self.name!r}")
        self.executor = executor
        self.concurrency_key = concurrency_key
        self.when = (
            Callback.of(when, leading=False, what=f"the when= guard of {self.name!r}")
            if when is not None
            else None
        )
        self.description = description if description is not None else _summary(fn)
        self._hooks = _hooks if _hooks is not None else _Hooks()
        # So the step pickles by reference and reads like the function in tracebacks.
        self.__dict__["__module__"] = getattr(fn, "__module__", None)
        self.__dict__["__qualname__"] = getattr(fn, "__qualname__", self.name)
        self.__dict__["__name__"] = getattr(fn, "__name__", self.name)
        self.__dict__["__doc__"] = getattr(fn, "__doc__", None)
        self.__dict__["__wrapped__"] = fn

    # -- calling -----------------------------------------------------------------------------
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled by reference: module-level steps go to process pools and clusters as names.
        return (_load_step, (self.__dict__["__module__"], self.__dict__["__qualname__"]))

    def __repr__(self) -> str:
        return f"<Step {self.name!r} of {getattr(self.fn, '__qualname__', self.fn)!r}>"

    # -- callbacks ---------------------------------------------------------------------------
    @property
    def undo_callback(self) -> Callback | None:
        """The registered undo callback, if any."""
        return self._hooks.undo

    @property
    def compensate_callback(self) -> Callback | None:
        """The registered compensate callback, if any."""
        return self._hooks.compensate

    @property
    def version(self) -> int:
        """Bumped whenever a callback is registered, so reactors re-plan."""
        return self._hooks.version

    def undo(self, fn: F) -> F:
        """Register `fn(result, **named_args)` to reverse this step when a later step fails.

        It may be sync or async, and may raise `rp.Retry` (at most 5 attempts in all).
        Returns `fn` unchanged.
        """
        self._hooks.undo = Callback.of(fn, leading=True, what=f"the undo of {self.name!r}")
        self._hooks.version += 1
        _generation[0] += 1
        return fn

    def compensate(self, fn: F) -> F:
        """Register `fn(error, **named_args)`, called once per failed attempt of this step.

        It returns None (the error stands), returns `rp.Continue(value)` (the step succeeds
        with `value`) or raises `rp.Retry` (another attempt, while attempts remain).
        Returns `fn` unchanged.
        """
        self._hooks.compensate = Callback.of(
            fn, leading=True, what=f"the compensate of {self.name!r}"
        )
        self._hooks.version += 1
        _generation[0] += 1
        return fn

    def evolve(
        self, *, name: str | None = None, args: Mapping[str, Source] | None = None
    ) -> Step[P, R]:
        """A copy under another name or wiring that shares this step's callbacks."""
        copy = self._replace(
            name=name if name is not None else self.name,
            args={**self.args, **(args or {})},
        )
        return cast("Step[P, R]", copy)  # same function, same signature

    def _replace(self, **changes: Any) -> Step[..., Any]:
        """A copy with some constructor arguments changed; it shares this step's callbacks
        unless ``_hooks`` is given, and its inspected signature unless ``fn`` is."""
        options: dict[str, Any] = {
            "fn": self.fn,
            "name": self.name,
            "args": self.args,
            "wait_for": self.wait_for,
            "async_": self.async_,
            "retries": self.retries,
            "retry_on": self.retry_on,
            "backoff": self.backoff,
            "timeout": self.timeout,
            "executor": self.executor,
            "concurrency_key": self.concurrency_key,
            "when": self.when.fn if self.when else None,
            "description": self.description,
            "_hooks": self._hooks,
        }
        if "fn" not in changes:
            options["_inspected"] = (list(self.params), self.takes_kwargs, self.result_type)
        options.update(changes)
        return Step(options.pop("fn"), **options)

    @property
    def has_features(self) -> bool:
        """Whether running it needs more than a plain call (retries, guard, executor, ...)."""
        return bool(
            self.retries
            or self.retry_on
            or self.timeout is not None
            or self.executor is not None
            or self.when is not None
            or self._hooks.compensate is not None
        )


def check_executor(executor: Any, where: str) -> None:
    """Raise DefinitionError unless `executor` is something steps can be sent to."""
    if not (
        (isinstance(executor, str) and executor in _EXECUTOR_STRINGS)
        or isinstance(executor, concurrent.futures.Executor)
        or hasattr(executor, "submit")
    ):
        raise DefinitionError(
            f"{where}: executor must be 'thread', a concurrent.futures.Executor or a dask "
            f"Client, got {executor!r}."
        )


def _load_step(module: str, qualname: str) -> Any:
    import importlib

    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _summary(fn: Any) -> str | None:
    doc = inspect.getdoc(fn)
    return doc.strip().splitlines()[0] if doc else None


@overload
def step(fn: Callable[P, R], /) -> Step[P, R]: ...
@overload
def step(
    *,
    name: str | None = ...,
    args: Mapping[str, Source] | None = ...,
    wait_for: Iterable[str] | str = ...,
    async_: bool = ...,
    retries: int = ...,
    retry_on: type[BaseException] | Iterable[type[BaseException]] = ...,
    backoff: float | Callable[[int, BaseException], float] | None = ...,
    timeout: float | None = ...,
    executor: Any = ...,
    concurrency_key: str | None = ...,
    when: Callable[..., Any] | None = ...,
    description: str | None = ...,
) -> Callable[[Callable[P, R]], Step[P, R]]: ...
def step(fn: Any = None, /, **options: Any) -> Any:
    """Make a reusable, unregistered `Step`; register it with ``reactor.add(step)``.

    Use bare (``@rp.step``) or with options (``@rp.step(retries=2)``); the options are
    those of ``Reactor.step``.

    >>> @step(name="greet")
    ... def hello(who: str) -> str:
    ...     return f"hello {who}"
    >>> hello.name, hello("you")
    ('greet', 'hello you')
    """
    if fn is not None:
        return Step(fn, **options)

    def decorate(f: Callable[P, R]) -> Step[P, R]:
        return Step(f, **options)

    return decorate


@attrs.frozen
class Continue:
    """Returned by a compensate callback: the step succeeds with `value` after all.

    >>> Continue("cached")
    Continue(value='cached')
    """

    value: Any


@attrs.frozen(init=False)
class NewSteps:
    """Returned by a step to add steps to the running graph.

    A new step with the returning step's own name replaces it: the replacement's result
    becomes the step's result (how loops and recursion are written). Other new steps run
    alongside it and may use each other's results and any earlier result or input.

    Args:
        value: the step's result when no new step replaces it.
        steps: the new `Step` objects.
    """

    value: Any
    steps: tuple[Step[..., Any], ...]

    def __init__(self, value: Any = None, steps: Iterable[Step[..., Any]] = ()) -> None:
        self.__attrs_init__(value, tuple(steps))
