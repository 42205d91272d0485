"""Checks of option values shared by step options and run options.

Owns: what counts as a number of seconds and as an executor, and the checks of step
options (unknown names, ``wait_for``, ``retry_on``, durations) made at decoration.
Must not import: anything of the package but `_errors`.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterable, Mapping
from typing import Any

from ._errors import DefinitionError, did_you_mean

__all__ = [
    "check_executor",
    "check_options",
    "exception_types",
    "option_seconds",
    "seconds",
    "step_names",
]

_EXECUTOR_STRINGS = ("thread",)


def seconds(value: Any, what: str, *, positive: bool, extra: str = "") -> float | None:
    """`value` as a float number of seconds (None stays None).

    Args:
        value: what the user gave.
        what: the option and where, for the message (``"Step 'a': timeout"``).
        positive: whether 0 is refused (a timeout) or allowed (a backoff, a grace).
        extra: other accepted forms, for the message (``" or a callable(attempt, error)"``).

    Raises:
        TypeError: not a number (a string, a bool).
        ValueError: out of range.
    """
    if value is None:
        return None
    bound = "> 0" if positive else ">= 0"
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"{what} must be a number of seconds {bound}{extra}, got {value!r}.")
    if not (value > 0 if positive else value >= 0):
        raise ValueError(f"{what} must be a number of seconds {bound}{extra}, got {value!r}.")
    return float(value)


def check_executor(executor: Any, where: str) -> None:
    """Raise `DefinitionError` unless `executor` is something steps can be sent to."""
    if not (
        (isinstance(executor, str) and executor in _EXECUTOR_STRINGS)
        or isinstance(executor, concurrent.futures.Executor)
        or hasattr(executor, "submit")
    ):
        raise DefinitionError(
            f"{where}: executor must be 'thread', a concurrent.futures.Executor or a dask "
            f"Client, got {executor!r}."
        )


_OPTIONS = (
    "name",
    "args",
    "wait_for",
    "async_",
    "retries",
    "retry_on",
    "backoff",
    "timeout",
    "executor",
    "concurrency_key",
    "when",
    "description",
)

# What people coming from other libraries write, and what it is called here.
_ALIASES = {
    "retry": "retries",
    "max_retries": "retries",
    "attempts": "retries",
    "async": "async_",
    "depends_on": "wait_for",
    "after": "wait_for",
    "key": "concurrency_key",
    "guard": "when",
}


def check_options(options: Mapping[str, Any], where: str) -> None:
    """Raise a `TypeError` naming any unknown step option, with the closest known one.

    `where` says what was called (``"@reactor.step"``, ``"reactor.map('m', ...)"``).
    """
    for key in options:
        if key not in _OPTIONS:
            hint = (
                f" Did you mean {_ALIASES[key]!r}?"
                if key in _ALIASES
                else did_you_mean(key, _OPTIONS)
            )
            raise TypeError(
                f"{where} got an unknown option {key!r}.{hint} Step options: {', '.join(_OPTIONS)}."
            )


def option_seconds(value: Any, what: str, positive: bool, extra: str = "") -> float | None:
    """`seconds`, with its errors as definition errors (they are found at decoration)."""
    try:
        return seconds(value, what, positive=positive, extra=extra)
    except (TypeError, ValueError) as exc:
        raise DefinitionError(str(exc)) from None


def step_names(value: Any, option: str, step: str) -> tuple[str, ...]:
    """Check `wait_for`: a step name or names (strings), given as a str or an iterable."""
    if isinstance(value, str):
        return (value,)
    try:
        names = tuple(value)
    except TypeError:
        names = (value,)
    for name in names:
        if not isinstance(name, str):
            raise DefinitionError(
                f"Step {step!r}: {option} takes step names (a str, or a list of str), got "
                f"{value!r}; name the step: {option}='fetch' or {option}=['a', 'b']."
            )
    return names


def exception_types(value: Any, step: str) -> tuple[type[BaseException], ...]:
    """Check `retry_on`: an exception class, or an iterable of them."""
    if isinstance(value, type):
        value = (value,)
    elif isinstance(value, str | BaseException) or not isinstance(value, Iterable):
        raise DefinitionError(
            f"Step {step!r}: retry_on takes exception classes, got {value!r}; write "
            f"retry_on={type(value).__name__ if isinstance(value, BaseException) else 'ValueError'}"
            " or retry_on=(ValueError, OSError)."
        )
    types_ = tuple(value)
    for t in types_:
        if not (isinstance(t, type) and issubclass(t, BaseException)):
            raise DefinitionError(
                f"Step {step!r}: retry_on takes exception classes, got {t!r} in {value!r}."
            )
    return types_
