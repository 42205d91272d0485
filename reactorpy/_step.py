"""The `Step`: a user's function plus its options and its undo/compensate callbacks.

Owns: `Step`, the `step` decorator, the checks of step options at decoration, and what a
step may return (`Continue`, `NewSteps`). What its function is (signature, name, async or
not) is `_signature`'s.
Must not import: the planner or the executor.
"""

from __future__ import annotations

import inspect
import types
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, ParamSpec, TypeVar, cast, overload

import attrs

from ._arguments import Source
from ._checks import check_executor, check_options, exception_types, option_seconds, step_names
from ._errors import DefinitionError
from ._signature import (
    Callback,
    Param,
    check_name,
    check_sources,
    inspect_step,
    is_async_callable,
    remember_undo,
    step_name,
)

__all__ = ["Callback", "Continue", "NewSteps", "Param", "Skip", "Step", "make_step", "step"]

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])


# Bumped whenever any step's callbacks change: a reactor whose plan was made at the current
# generation need not look at its steps to know the plan is still good.
_generation = [0]


def hooks_generation() -> int:
    """A counter of callback registrations on any step (for plan caches)."""
    return _generation[0]


_kinds: dict[tuple[Any, ...], int] = {}  # `Step.dispatch_key` by what it stands for


class _Hooks:
    """The callbacks of a step, shared by every copy of it (see `Step.evolve`)."""

    __slots__ = ("compensate", "undo", "version")

    def __init__(self) -> None:
        self.undo: Callback | None = None
        self.compensate: Callback | None = None
        self.version = 0


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
        "__weakref__",
        "_hooks",
        "_identity",
        "_names",
        "args",
        "async_",
        "backoff",
        "concurrency_key",
        "description",
        "dispatch_key",
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

    composite = False  # compose/map/switch steps (see _composites) set it
    #: Checks of the inputs a parameter is wired to, made before any step runs: by
    #: parameter, a function of the value returning what is wrong with it, or None.
    input_checks: Mapping[str, Callable[[Any], str | None]] = {}

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
    dispatch_key: int

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
        _inspected: tuple[tuple[Param, ...], bool, Any] | None = None,
    ) -> None:
        self.fn = fn
        self.name = step_name(fn, name)
        self.is_async = is_async_callable(fn)
        if _inspected is None:  # signatures are inspected once per function
            _inspected = inspect_step(fn, f"step {self.name!r}")
        params, self.takes_kwargs, self.result_type = _inspected
        self.params = tuple(params)
        self._names = frozenset([p.name for p in params])
        self.args = check_sources(self.name, args, self._names, self.takes_kwargs, fn)
        self.wait_for = step_names(wait_for, "wait_for", self.name)
        self.async_ = bool(async_)
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise DefinitionError(
                f"Step {self.name!r}: retries must be an int >= 0 (the attempts after the "
                f"first), got {retries!r}."
            )
        self.retries = retries
        self.retry_on = exception_types(retry_on, self.name)
        if not callable(backoff):
            backoff = option_seconds(
                backoff, f"Step {self.name!r}: backoff", False, " or a callable(attempt, error)"
            )
        self.backoff = backoff
        self.timeout = option_seconds(timeout, f"Step {self.name!r}: timeout", True)
        if executor is not None:
            if self.is_async:
                raise DefinitionError(
                    f"Step {self.name!r} is an async def and cannot be sent to an executor; "
                    "make it a plain def, or drop executor=."
                )
            check_executor(executor, f"Step {self.name!r}")
        if concurrency_key is not None and not isinstance(concurrency_key, str):
            raise DefinitionError(
                f"Step {self.name!r}: concurrency_key must be a str (a key of limits=), got "
                f"{concurrency_key!r}."
            )
        if when is not None and not callable(when):
            raise DefinitionError(
                f"Step {self.name!r}: when= must be a callable given the step's arguments, "
                f"got {when!r}."
            )
        self.executor = executor
        self.concurrency_key = concurrency_key
        self.when = (
            Callback.of(when, leading=False, what=f"the when= guard of {self.name!r}")
            if when is not None
            else None
        )
        self.description = description if description is not None else _summary(fn)
        self._hooks = _hooks if _hooks is not None else _Hooks()
        # Which of its options decide how a run starts it (its kind, the callbacks aside), as
        # a small int: steps with equal keys share a row of the executor's dispatch table.
        timed, guarded = self.timeout is not None, self.when is not None
        kind: tuple[Any, ...] = (type(self), self.is_async, self.executor is not None, self.async_)
        kind += (timed, bool(self.retries), bool(self.retry_on), guarded)
        self.dispatch_key = _kinds.setdefault(kind, len(_kinds))
        # So the step pickles by reference and reads like the function in tracebacks
        # (`_identity`: what of it comes from the function, for copies under other names).
        self._identity = {"__module__": getattr(fn, "__module__", None)}
        self._identity.update(__doc__=getattr(fn, "__doc__", None), __wrapped__=fn)
        self._identity.update({k: getattr(fn, k) for k in _NAMES if hasattr(fn, k)})
        self.__dict__.update(_identified(self._identity, self.name))

    # -- calling -----------------------------------------------------------------------------
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __set_name__(self, owner: type, attribute: str) -> None:
        self.__dict__["_attribute"] = attribute

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        """A step defined on a class, read from an instance, is that instance's step: its
        function is bound (``self`` is not wired) and it shares this step's callbacks, so
        ``reactor.add(service.fetch)`` works like a step on a plain function."""
        if obj is None or not inspect.isfunction(self.fn):
            return self
        bound = self._replace(fn=self.fn.__get__(obj, objtype))
        attribute = self.__dict__.get("_attribute")
        if attribute is not None:
            try:  # the same Step each time it is read from this instance
                obj.__dict__[attribute] = bound
            except (AttributeError, TypeError):  # no instance __dict__ (slots)
                pass
        return bound

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
        remember_undo(fn)
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
        name = name if name is not None else self.name
        merged = {**self.args, **(args or {})}
        if type(self) is Step:
            return cast("Step[P, R]", self._renamed(name, merged, own=True))
        copy = self._replace(name=name, args=merged)
        return cast("Step[P, R]", copy)  # same function, same signature

    def _replace(self, **changes: Any) -> Step[..., Any]:
        """A copy with some constructor arguments changed; it shares this step's callbacks
        unless ``_hooks`` is given, and its inspected signature unless ``fn`` is."""
        name = changes.get("name", self.name)
        if type(self) is Step and changes.keys() <= {"name", "args"} and name is not None:
            return self._renamed(name, changes.get("args", self.args))
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
            options["_inspected"] = (self.params, self.takes_kwargs, self.result_type)
        options.update(changes)
        return Step(options.pop("fn"), **options)

    def _renamed(self, name: Any, args: Any, *, own: bool = False) -> Step[..., Any]:
        """What ``_replace(name=name, args=args)`` returns, without checking again what the
        constructor checked of this step (its function and signature, its options): the
        copy that ``reactor.add(step, name=..., args=...)`` and `evolve` make, for a tenth
        of the constructor's cost. `test_step.py` compares the two."""
        if not (type(name) is str and name and name.isprintable()):
            check_name(name)  # (raises)
        new: Step[..., Any] = object.__new__(Step)
        new.fn = self.fn
        new.name = name
        new.args = check_sources(name, args, self._names, self.takes_kwargs, self.fn, own=own)
        new.wait_for = self.wait_for
        new.async_ = self.async_
        new.retries = self.retries
        new.retry_on = self.retry_on
        new.backoff = self.backoff
        new.timeout = self.timeout
        new.executor = self.executor
        new.concurrency_key = self.concurrency_key
        new.when = self.when
        new.description = self.description
        new.params = self.params
        new._names = self._names
        new.takes_kwargs = self.takes_kwargs
        new.is_async = self.is_async
        new.result_type = self.result_type
        new._hooks = self._hooks
        new.dispatch_key = self.dispatch_key
        new._identity = self._identity
        new.__dict__ = _identified(self._identity, name)
        return new

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


def _identified(identity: dict[str, Any], name: str) -> dict[str, Any]:
    """A step's ``__dict__``: its function's identity, named after the step where the
    function has no name of its own (a partial, a callable instance)."""
    out = identity.copy()
    if len(out) < 5:
        out.setdefault("__qualname__", name)
        out.setdefault("__name__", name)
    return out


def _load_step(module: str, qualname: str) -> Any:
    import importlib

    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _summary(fn: Any) -> str | None:
    return doc.strip().splitlines()[0] if (doc := inspect.getdoc(fn)) else None


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
    check_options(options, "@rp.step")
    if fn is not None:
        return make_step(fn, options)

    def decorate(f: Callable[P, R]) -> Step[P, R]:
        return cast("Step[P, R]", make_step(f, options))

    return decorate


# The last step made of each plain function given only a name and arguments (`make_step`),
# weakly: it holds the function, which must not live on here (a closure made per request).
_made: weakref.WeakKeyDictionary[Any, tuple[Any, ...]] = weakref.WeakKeyDictionary()
_RENAMING = frozenset(("name", "args"))
_NAMES = ("__qualname__", "__name__")  # (a step's own name stands in for those missing)


def make_step(fn: Any, options: Mapping[str, Any]) -> Any:
    """``Step(fn, **options)``; for a plain function made a step before, given at most a
    name and args, unchanged since (signature, code, names, docstring), a copy of that
    step with callbacks of its own (`Step._renamed`, `test_step.py`): half the cost."""
    name = options.get("name", fn.__name__ if type(fn) is types.FunctionType else None)
    if type(fn) is not types.FunctionType or not name or not options.keys() <= _RENAMING:
        return Step(fn, **options)  # (a function named "" is refused there)
    inspection = inspect_step(fn, f"step {name!r}")  # (a new one if its __dict__ changed)
    seen = (fn.__code__, fn.__name__, fn.__qualname__, fn.__module__, fn.__doc__)
    before = _made.get(fn)
    template = before[2]() if before and before[0] is inspection and before[1] == seen else None
    if template is not None:
        made = template._renamed(name, options.get("args"))
        made._hooks = _Hooks()
        return made
    made = Step(fn, _inspected=inspection, **options)
    _made[fn] = (inspection, seen, weakref.ref(made))
    return made


@attrs.frozen
class Continue:
    """Returned by a compensate callback: the step succeeds with `value` after all.

    >>> Continue("cached")
    Continue(value='cached')
    """

    value: Any


@attrs.frozen
class Skip:
    """Returned by a ``when=`` guard: skip the step with `value` as its result (a cache hit,
    say), where a falsy guard skips it with None. A skipped step is never undone.

    >>> Skip(42)
    Skip(value=42)
    """

    value: Any = None


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
