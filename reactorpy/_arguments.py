"""Where a step's arguments come from: `Input`, `Result`, `Value`, and the run `Context`.

Owns: the argument source types, path lookup into values, and the `Context` a step may ask for.
Must not import: the planner or the executor.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from ._errors import ReactorError

__all__ = ["Context", "Input", "NameRef", "PathError", "Result", "Source", "Value", "dig"]


@attrs.frozen(init=False, repr=False)
class Input:
    """The run input `name`, optionally indexed by `path` (keys, indices or attributes),
    then passed through ``transform`` (a one-argument callable) if given.

    >>> Input("order", "items", 0)
    Input('order', 'items', 0)
    >>> Input("user_id", transform=int)
    Input('user_id', transform=int)
    """

    name: str
    path: tuple[Any, ...]
    transform: Callable[[Any], Any] | None

    def __init__(
        self, name: str, *path: Any, transform: Callable[[Any], Any] | None = None
    ) -> None:
        self.__attrs_init__(name, path, _checked(transform, name))

    def __repr__(self) -> str:
        return _repr("Input", self.name, self.path, self.transform)


@attrs.frozen(init=False, repr=False)
class Result:
    """The result of step `step`, optionally indexed by `path`, then passed through
    ``transform`` if given.

    >>> Result("fetch_profile", "id")
    Result('fetch_profile', 'id')
    >>> Result("fetch_orders", transform=len)
    Result('fetch_orders', transform=len)
    """

    step: str
    path: tuple[Any, ...]
    transform: Callable[[Any], Any] | None

    def __init__(
        self, step: str, *path: Any, transform: Callable[[Any], Any] | None = None
    ) -> None:
        self.__attrs_init__(step, path, _checked(transform, step))

    def __repr__(self) -> str:
        return _repr("Result", self.step, self.path, self.transform)


def _checked(transform: Any, name: str) -> Callable[[Any], Any] | None:
    if transform is not None and (
        not callable(transform) or inspect.iscoroutinefunction(transform)
    ):
        raise TypeError(
            f"transform= for {name!r} must be a plain one-argument function, got {transform!r}"
        )
    return transform  # type: ignore[no-any-return]


def _repr(kind: str, name: str, path: tuple[Any, ...], transform: Any) -> str:
    parts = [repr(name), *map(repr, path)]
    if transform is not None:
        parts.append(f"transform={getattr(transform, '__qualname__', transform)}")
    return f"{kind}({', '.join(parts)})"


@attrs.frozen
class Value:
    """A constant argument.

    >>> Value(3)
    Value(value=3)
    """

    value: Any


class NameRef(Input):
    """A bare name that means the input of that name, or else the step of that name."""


Source = Input | Result | Value


class PathError(ReactorError, LookupError):
    """A path into an input or a step's result does not exist.

    Attributes:
        step: the step whose argument it is.
        argument: the parameter name.
        source: the `Input` or `Result` that holds the path.
        at: the path item that failed.
    """

    def __init__(self, step: str, argument: str, source: Any, at: Any, value: Any) -> None:
        self.step = step
        self.argument = argument
        self.source = source
        self.at = at
        super().__init__(
            f"Step {step!r}, argument {argument!r}: {source!r} has no item {at!r} "
            f"(it got a {type(value).__name__}); check the path."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_path_error, (self.args, self.__dict__.copy()))


def _rebuild_path_error(args: tuple[Any, ...], state: dict[str, Any]) -> PathError:
    err = PathError.__new__(PathError)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


_MISSING = object()


def dig(value: Any, path: Sequence[Any], step: str, argument: str, source: Any) -> Any:
    """Follow `path` into `value`: mapping keys, sequence indices, then attributes."""
    for item in path:
        got = _MISSING
        if isinstance(value, Mapping):
            got = value.get(item, _MISSING)
        elif isinstance(value, Sequence) and isinstance(item, int):
            if -len(value) <= item < len(value):
                got = value[item]
        elif isinstance(item, str):
            got = getattr(value, item, _MISSING)
        if got is _MISSING:
            raise PathError(step, argument, source, item, value)
        value = got
    return value


@attrs.define(slots=True)
class Context:
    """What a step may know about its run; annotate a parameter with `Context` to get it.

    Attributes:
        run_id: a unique id for this run.
        step: the running step's name.
        attempt: the attempt number, from 1.
        data: the ``context=`` dict given to ``run()``.
        reactor: the name of the reactor being run.
        idempotency_key: the same for every attempt of this step in this run, and for
            every run of it again after a crash or a resume (``run id:step``): pass it to
            external APIs so that at-least-once steps, and undos, take effect once.
    """

    run_id: str
    step: str
    attempt: int
    data: dict[str, Any]
    reactor: str
    idempotency_key: str = ""
