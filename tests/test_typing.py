"""Static types: decorated steps keep their function's signature (checked by mypy in CI).

mypy runs on this file with ``warn_unused_ignores``: if decoration lost the signature, the
``type: ignore`` comments below would be unused and mypy would fail.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, assert_type

import reactorpy as rp
from reactorpy._step import Callback
from reactorpy.testing import Fake, override, raises, returns, run_virtual

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


# -------------------------------------------------------------------- what a run returns
orders: rp.Reactor[int] = rp.Reactor("orders", inputs=["x"], returns="total")


@orders.step
def total(x: int) -> int:
    return x + 1


untyped = rp.Reactor("untyped", inputs=["x"], returns="total")
everything = rp.Reactor("everything", inputs=["x"])


async def _runs() -> None:
    """Checked by mypy only: what the entry points return, typed from the reactor."""
    assert_type(await orders.run({"x": 1}), int)
    assert_type(orders.run_sync({"x": 1}), int)
    assert_type(await untyped.run({"x": 1}), Any)
    assert_type(await everything.run({"x": 1}), dict[str, Any])
    try:
        await orders.run({"x": 1})
    except rp.Halted as halted:
        assert_type(halted.checkpoint, rp.Checkpoint)
        assert_type(await orders.resume(halted.checkpoint), int)
    done = await orders.run_reversible({"x": 1})
    assert_type(done, rp.Reversible[int])
    assert_type(done.result, int)
    assert_type(done.checkpoint, rp.Checkpoint)


def _wrong_results() -> None:
    """Never called: a reactor without ``returns`` returns a dict, not an int."""
    not_an_int: rp.Reactor[int] = rp.Reactor("d", inputs=["x"])  # type: ignore[assignment]
    assert not_an_int


def bare_reactors_are_reactors_of_any(r: rp.Reactor) -> rp.Reactor[Any]:
    """A bare ``rp.Reactor`` annotation is ``Reactor[Any]`` (no missing-parameter error)."""
    return r


def test_typed_reactors_run() -> None:
    """The annotated reactor above runs as it is typed."""
    assert 3 == orders.run_sync({"x": 2})


# -------------------------------------------------------------------- reactorpy.testing
def test_fakes_keep_the_type_of_what_they_fake() -> None:
    """override keeps the reactor's type; returns(v) is a Fake[type of v] with .calls."""
    fake = returns(5)
    fast = override(orders, {total: fake})
    assert_type(fast, rp.Reactor[int])
    assert_type(fake, Fake[int])
    assert_type(fake.calls, list[dict[str, Any]])
    assert_type(raises(KeyError).calls, list[dict[str, Any]])
    assert 5 == run_virtual(fast.run({"x": 0}))
    assert [{"x": 0}] == fake.calls


# -------------------------------------------------------------------- what a Step exposes
def test_steps_expose_what_the_docs_promise() -> None:
    """The attributes the docs use are typed."""
    assert_type(total.name, str)
    assert_type(total.retries, int)
    assert_type(total.description, str | None)
    fn: Callable[[int], int] = total.fn
    wrapped: Callable[[int], int] = total.__wrapped__
    assert_type(total.__name__, str)
    assert_type(total.__qualname__, str)
    assert_type(total.undo_callback, Callback | None)
    assert "total" == total.__name__
    assert wrapped is fn
