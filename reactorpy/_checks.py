"""Checks of option values shared by step options and run options.

Owns: what counts as a number of seconds and as an executor.
Must not import: anything of the package but `_errors`.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

from ._errors import DefinitionError

__all__ = ["check_executor", "seconds"]

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
