"""Transforms: of an argument (``rp.Input``/``rp.Result`` ``transform=``) and of a reactor's
inputs (``Reactor(inputs={name: transform})``)."""

from __future__ import annotations

from typing import Any

import pytest

import reactorpy as rp
from reactorpy.testing import override, run_virtual


@pytest.mark.parametrize("async_", [True, False])
def test_argument_transforms_apply_after_the_path(async_: bool):
    r = rp.Reactor("t", inputs=["user_id", "config"], returns="show")

    @r.step
    def orders():
        return {"items": [1, 2, 3]}

    @r.step(
        args={
            "uid": rp.Input("user_id", transform=int),
            "count": rp.Result("orders", "items", transform=len),
            "limit": rp.Input("config", "limit", transform=float),
        }
    )
    async def show(uid, count, limit):
        return uid, count, limit

    out = run_virtual(r.run({"user_id": "42", "config": {"limit": "2.5"}}, async_=async_))
    assert (42, 3, 2.5) == out


def test_a_transform_runs_per_attempt_and_its_error_is_the_steps():
    """A transform that raises fails the consuming step: retried when retry_on matches,
    with a note naming the argument; compensate is not called (the step never ran)."""
    calls: list[Any] = []

    def flaky(value: int) -> int:
        calls.append(value)
        raise ConnectionError("not yet")

    r = rp.Reactor("t", returns="use")

    @r.step
    def source():
        return 4

    ran: list[Any] = []

    @r.step(args={"v": rp.Result("source", transform=flaky)}, retries=1, retry_on=ConnectionError)
    async def use(v):
        ran.append(v)

    @use.compensate
    def fallback(error):
        ran.append(error)
        return rp.Continue(-1)

    with pytest.raises(rp.RunFailed) as info:
        run_virtual(r.run())
    assert [4, 4] == calls  # two attempts, each resolving the argument again
    assert [] == ran
    [error] = info.value.exceptions
    assert isinstance(error, ConnectionError)
    assert "reactorpy: the transform of argument 'v' of step 'use' raised" in error.__notes__


def test_compensate_gets_the_attempts_transformed_arguments_once():
    calls: list[Any] = []

    def double(value: int) -> int:
        calls.append(value)
        return 2 * value

    r = rp.Reactor("t", inputs=["n"], returns="use")

    @r.step(args={"v": rp.Input("n", transform=double)}, retries=1, retry_on=KeyError)
    async def use(v):
        raise KeyError(v) if len(calls) == 1 else ValueError(v)

    got: list[Any] = []

    @use.compensate
    def fallback(error, v):
        got.append((type(error).__name__, v))
        return rp.Continue(v)

    assert 6 == run_virtual(r.run({"n": 3}))
    assert [3, 3] == calls  # once per attempt, not again for compensate
    assert [("ValueError", 6)] == got


def test_undo_and_guards_get_the_transformed_arguments():
    got: list[Any] = []
    r = rp.Reactor("t", inputs=["n"])

    @r.step(args={"n": rp.Input("n", transform=abs)}, when=lambda n: got.append(("when", n)) or 1)
    async def first(n):
        return n

    @first.undo
    def undo_first(value, n):
        got.append(("undo", value, n))

    @r.step
    def boom(first):
        raise ValueError("boom")

    with pytest.raises(rp.RunFailed):
        run_virtual(r.run({"n": -3}))
    assert [("when", 3), ("undo", 3, 3)] == got


def test_compose_args_take_transforms():
    child = rp.Reactor("child", inputs=["x"], returns="double")

    @child.step
    def double(x):
        return 2 * x

    r = rp.Reactor("parent", returns="c")

    @r.step
    def words():
        return ["a", "b", "c"]

    r.compose("c", child, args={"x": rp.Result("words", transform=len)})
    assert 6 == run_virtual(r.run())


def test_reactor_input_transforms_run_once_before_any_step():
    calls: list[str] = []

    def parse(text: str) -> dict[str, int]:
        calls.append(text)
        key, value = text.split("=")
        return {key: int(value)}

    r = rp.Reactor("t", inputs={"spec": parse, "label": None}, returns="c")

    @r.step
    def a(spec):
        return spec

    @r.step(args={"n": rp.Input("spec", "n")})  # a path reads the transformed value
    def b(n):
        return n

    @r.step
    def c(a, b, label):
        return a, b, label

    assert ("spec", "label") == r.inputs
    assert ({"n": 5}, 5, "x") == run_virtual(r.run({"spec": "n=5", "label": "x"}))
    assert ["n=5"] == calls


def test_a_failing_input_transform_is_an_input_error_before_any_step():
    ran: list[str] = []
    r = rp.Reactor("t", inputs={"user_id": int})

    @r.step
    def step(user_id):
        ran.append("step")

    with pytest.raises(
        rp.InputError, match="Input 'user_id' of reactor 't': its transform"
    ) as info:
        run_virtual(r.run({"user_id": "abc"}))
    assert isinstance(info.value.__cause__, ValueError)
    assert [] == ran


def test_checkpoints_keep_raw_inputs_and_resume_transforms_them_again():
    """The transform is not applied twice on resume: the checkpoint holds the raw input."""
    approved = {"yes": False}
    r = rp.Reactor("t", inputs={"n": lambda n: n + 1}, returns="done")

    @r.step
    def first(n):
        return n

    @r.step
    def done(first, n):
        if not approved["yes"]:
            raise rp.Halt("wait")
        return first, n

    with pytest.raises(rp.Halted) as info:
        run_virtual(r.run({"n": 1}))
    assert {"n": 1} == info.value.checkpoint.inputs
    approved["yes"] = True
    assert (2, 2) == run_virtual(r.resume(info.value.checkpoint))


def test_composed_child_and_override_keep_input_transforms():
    child = rp.Reactor("child", inputs={"x": str.upper}, returns="echo")

    @child.step
    def echo(x):
        return x

    r = rp.Reactor("parent", inputs=["word"], returns="inner")
    r.compose("inner", child, args={"x": rp.Input("word")})
    assert "HI" == run_virtual(r.run({"word": "hi"}))
    fake = override(child, {"echo": lambda x: f"<{x}>"})
    assert "<HI>" == run_virtual(fake.run({"x": "hi"}))


def test_bad_transforms_are_refused_at_definition():
    async def coro_fn(x: Any) -> Any:
        return x

    with pytest.raises(TypeError, match="must be a plain one-argument function"):
        rp.Input("x", transform=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a plain one-argument function"):
        rp.Result("x", transform=coro_fn)
    with pytest.raises(rp.DefinitionError, match="the transform of input 'x'"):
        rp.Reactor("t", inputs={"x": "int"})  # type: ignore[dict-item]
    assert "Result('a', 'b', transform=len)" == repr(rp.Result("a", "b", transform=len))
    assert rp.Input("a", transform=int) == rp.Input("a", transform=int)
    assert rp.Input("a") != rp.Input("a", transform=int)


@pytest.mark.parametrize("is_async", [False, True])
def test_a_step_without_options_resolves_a_transform_once_for_itself_and_its_undo(
    is_async: bool,
):
    """The undo of a plain def or async step gets the very values the step got."""
    calls: list[str] = []

    def tag(value: str) -> str:
        calls.append(value)
        return f"{value}#{len(calls)}"

    def book(item):
        return f"booked {item}"

    async def book_async(item):
        return f"booked {item}"

    undone: list[Any] = []
    r = rp.Reactor("t", inputs=["item"])
    s = r.add(
        rp.step(book_async if is_async else book, name="book"),
        args={"item": rp.Input("item", transform=tag)},
    )
    s.undo(lambda value, item: undone.append((value, item)))

    @r.step
    def fail(book):
        raise ValueError("later")

    with pytest.raises(rp.RunFailed):
        run_virtual(r.run({"item": "a"}))
    assert ["a"] == calls
    assert [("booked a#1", "a#1")] == undone


def test_a_guard_and_a_halt_with_result_share_the_attempts_arguments():
    calls: list[int] = []

    def count(value: int) -> int:
        calls.append(value)
        return value * 10

    r = rp.Reactor("t", inputs=["n"], returns="guarded")

    @r.step(args={"v": rp.Input("n", transform=count)}, when=lambda v: v > 0)
    async def guarded(v):
        return v

    assert 10 == run_virtual(r.run({"n": 1}))
    assert [1] == calls  # the guard's resolution serves the first attempt too

    calls.clear()
    undone: list[Any] = []
    h = rp.Reactor("h", inputs=["n"])

    @h.step(args={"v": rp.Input("n", transform=count)})
    def pause(v):
        raise rp.Halt("wait", result=v + 1)

    pause.undo(lambda value, v: undone.append((value, v)))
    with pytest.raises(rp.Halted) as info:
        run_virtual(h.run({"n": 2}))
    assert [2] == calls
    [record] = info.value.checkpoint.undo_stack
    assert (21, {"v": 20}) == (record.value, record.arguments)


def test_map_over_a_reactor_with_input_transforms_applies_them():
    child = rp.Reactor("child", inputs={"n": int}, returns="double")
    child.add(rp.step(lambda n: n * 2, name="double"))
    r = rp.Reactor("t", inputs=["ns"], returns="out")
    r.map("out", "ns", child)
    assert [2, 4] == run_virtual(r.run({"ns": ["1", "2"]}))
