"""Static types: decorated steps keep their function's signature (checked by mypy in CI).

mypy runs on this file with ``warn_unused_ignores``: if decoration lost the signature, the
``type: ignore`` comments below would be unused and mypy would fail.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, assert_type

import reactorpy as rp

r = rp.Reactor("typed", inputs=["x"], returns="double")


@r.step
def double(x: int) -> int:
    return 2 * x


@r.step(retries=1)
async def fetch(x: int, label: str = "n") -> str:
    return f"{label}{x}"


@rp.step
def free(a: float, b: float) -> float:
    return a + b


def test_steps_keep_their_signatures() -> None:
    """A Step is typed as its function: parameters and return type survive decoration."""
    assert_type(double(2), int)
    assert_type(free(1.0, 2.0), float)
    as_function: Callable[[int], int] = double
    coroutine_function: Callable[[int, str], Coroutine[Any, Any, str]] = fetch
    assert 4 == as_function(2)
    assert callable(coroutine_function)


def _misuse() -> None:
    """Never called: wrong calls the type checker must reject."""
    double("two")  # type: ignore[arg-type]
    free(1.0)  # type: ignore[call-arg]


def test_callbacks_return_the_function_unchanged() -> None:
    """@step.undo returns the callback itself, with its own type."""

    def release(value: int, x: int) -> None:
        return None

    registered = double.undo(release)
    assert_type(registered(1, 2), None)
    assert registered is release
