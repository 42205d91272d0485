"""Wiring checked by annotations (`reactorpy._typecheck`, used by ``plan()``): a result that
cannot meet the parameter it feeds is a `TypeMismatchError`; nothing that can is refused."""

from __future__ import annotations

import collections.abc
import pickle
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import (
    Annotated,
    Any,
    Literal,
    NewType,
    Optional,
    Protocol,
    SupportsIndex,
    TypedDict,
    TypeVar,
    Union,
)

import pytest

import reactorpy as rp
from reactorpy._typecheck import NO_TYPE, can_meet, decidable, describe

T = TypeVar("T")
UserId = NewType("UserId", int)


class Animal:
    pass


class Dog(Animal):
    pass


class MyInt(int):
    pass


class Named(Protocol):
    name: str


class Row(TypedDict):
    id: int


def pair(produced: Any, expected: Any, value: Any) -> rp.Reactor[Any]:
    """A reactor whose step `a` (annotated ``-> produced``) returns `value` into step `b`'s
    parameter annotated `expected`."""
    r = rp.Reactor("pair", returns="b")

    def a() -> Any:
        return value

    def b(a: Any) -> Any:
        return a

    a.__annotations__ = {"return": produced}
    b.__annotations__ = {"a": expected}
    r.step(a)
    r.step(b)
    return r


MISMATCHES = [
    (int, str, "int", "str"),
    (dict[str, int], list[int], "dict[str, int]", "list[int]"),
    (None, int, "None", "int"),
    (Optional[int], str, "int | None", "str"),  # noqa: UP045 - the spelling under test
    (int | None, str, "int | None", "str"),
    (float, int, "float", "int"),
    (MyInt, str, "MyInt", "str"),
    (Dog, int, "Dog", "int"),
    (type[int], int, "type[int]", "int"),
    (Literal["a"], int, "Literal['a']", "int"),
    (UserId, str, "UserId", "str"),
]


@pytest.mark.parametrize(("produced", "expected", "shown", "wanted"), MISMATCHES)
def test_results_that_cannot_meet_their_parameter_are_refused_at_plan(
    produced: Any, expected: Any, shown: str, wanted: str
) -> None:
    """plan() names both steps and both types, before anything runs."""
    r = pair(produced, expected, None)
    with pytest.raises(rp.TypeMismatchError) as info:
        r.plan()
    err = info.value
    assert isinstance(err, rp.DefinitionError)
    assert ("b", "a", "a") == (err.step, err.parameter, err.producer)
    assert (shown, wanted) == (err.produced, err.expected)
    assert f"is annotated {wanted}, but step 'a', which feeds it, returns {shown}" in str(err)
    assert "Step 'b': parameter 'a'" in str(err)
    with pytest.raises(rp.TypeMismatchError):
        r.run_sync()
    assert str(err) == str(pickle.loads(pickle.dumps(err)))


def test_an_async_step_is_checked_by_what_it_returns_when_awaited() -> None:
    """``async def ... -> int`` produces an int (not a coroutine) for the check."""
    r = rp.Reactor("async", returns="show")

    @r.step
    async def count() -> int:
        return 3

    @r.step
    def show(count: str) -> str:
        return count

    with pytest.raises(rp.TypeMismatchError, match="'count', which feeds it, returns int"):
        r.plan()


# (produced annotation, parameter annotation, a value that runs through both)
MEETINGS = [
    (int, int, 1),
    (bool, int, True),
    (Dog, Animal, Dog()),
    (Animal, Dog, Dog()),  # a base class may hold the subclass the consumer wants
    (int, float, 1),
    (int, complex, 1),
    (float, complex, 1.5),
    (bytearray, bytes, bytearray(b"x")),
    (memoryview, bytes, memoryview(b"x")),
    (Any, str, "x"),
    (int, Any, 1),
    (object, str, "x"),
    (int, object, 1),
    (T, str, "x"),
    (int, T, 1),
    (str, SupportsIndex, "x"),  # a protocol: not decided
    (str, Named, "x"),
    (dict, Row, {"id": 1}),  # TypedDict: not decided
    ("Unresolvable", int, 1),
    (int, "Unresolvable", 1),
    (int | None, int, 1),
    (Optional[int], int, 1),  # noqa: UP045
    (int, int | None, 1),
    (None, Optional[int], None),  # noqa: UP045
    (None, None, None),
    (Union[int, T], str, "x"),  # noqa: UP007 - an undecided member
    (int | str, str, "x"),
    (list[int], list[str], []),  # generic arguments are not compared
    (list[int], Sequence[int], [1]),
    (dict, Mapping[str, int], {}),
    (list, Iterable, []),
    (list, collections.abc.Sized, []),
    (tuple[int, ...], Sequence[int], (1,)),
    (UserId, int, UserId(1)),
    (int, UserId, 1),
    (Literal["a", "b"], str, "a"),
    (Annotated[int, "meta"], int, 1),
    (int, Annotated[int, "meta"], 1),
    (Callable[[], int], Callable[..., Any], lambda: 1),
    (type[Dog], type[Animal], Dog),
    (Row, dict, {"id": 1}),
]


@pytest.mark.parametrize(("produced", "expected", "value"), MEETINGS)
def test_results_that_can_meet_their_parameter_plan_and_run(
    produced: Any, expected: Any, value: Any
) -> None:
    """Never refused: each of these graphs runs."""
    assert value is pair(produced, expected, value).run_sync()


def test_paths_transforms_inputs_values_and_the_context_are_not_checked() -> None:
    """A path or a transform changes the value; inputs and constants are not annotated."""
    r = rp.Reactor("sources", inputs=["n"], returns="use")

    @r.step
    def make() -> dict[str, int]:
        return {"k": 1}

    @r.step(
        args={
            "k": rp.Result("make", "k"),
            "text": rp.Result("make", transform=str),
            "c": rp.Value(2.5),
        }
    )
    def use(k: int, text: str, c: int, n: str, ctx: rp.Context) -> tuple[Any, ...]:
        return (k, text, c, n)

    assert (1, "{'k': 1}", 2.5, 4) == r.run_sync({"n": 4})


def test_producers_whose_result_may_be_something_else_are_not_checked() -> None:
    """A guard (None when it skips), a compensate (rp.Continue(anything)) or NewSteps."""
    r = rp.Reactor("maybe", inputs=["go"], returns="use")

    @r.step(when=lambda go: go)
    def guarded(go: bool) -> int:
        return 1

    @r.step
    def compensated() -> int:
        raise ValueError

    @compensated.compensate
    def rescue(error: Exception) -> rp.Continue:
        return rp.Continue("rescued")

    @r.step
    def grows() -> rp.NewSteps:
        return rp.NewSteps("grown")

    @r.step
    def use(guarded: str | None, compensated: str, grows: str) -> tuple[Any, ...]:
        return (guarded, compensated, grows)

    assert (None, "rescued", "grown") == r.run_sync({"go": False})


def test_composites_and_unannotated_fakes_are_not_checked() -> None:
    """compose, map and switch results are undecided; so is a lambda fake."""
    from reactorpy.testing import override

    child = rp.Reactor("child", inputs=["x"], returns="inc")

    @child.step
    def inc(x: int) -> int:
        return x + 1

    r = rp.Reactor("parent", inputs=["xs"], returns="show")
    r.map("each", "xs", inc, as_="x")
    r.compose("one", child, args={"x": rp.Value(1)})

    @r.step
    def show(each: str, one: str) -> str:
        return f"{each} {one}"

    assert "[2, 3] 2" == r.run_sync({"xs": [1, 2]})
    fast = override(r, {"one": lambda: "fake"})
    assert "[2, 3] fake" == fast.run_sync({"xs": [1, 2]})


def test_a_fake_is_checked_by_its_own_annotations() -> None:
    """override() wires the fake's own signature: its annotations are what plan() reads."""
    from reactorpy.testing import override

    r = rp.Reactor("faked", returns="b")

    @r.step
    def a() -> int:
        return 1

    @r.step
    def b(a: int) -> int:
        return a

    def wrong() -> str:
        return "x"

    with pytest.raises(rp.TypeMismatchError):
        override(r, {"a": wrong}).plan()


def test_one_unresolvable_annotation_leaves_the_others_checked() -> None:
    """A string that does not resolve is skipped; the other annotations still count."""
    r = rp.Reactor("partly", returns="b")

    @r.step
    def a() -> int:
        return 1

    def b(a: str, other: Missing = None) -> str:  # type: ignore[name-defined]  # noqa: F821
        return a

    r.step(b)
    with pytest.raises(rp.TypeMismatchError):
        r.plan()


def test_helpers() -> None:
    """decidable() reduces once; can_meet() compares; describe() reads like source."""
    assert NO_TYPE is decidable(Any)
    assert NO_TYPE is decidable(Named)
    assert NO_TYPE is decidable(Annotated[T, "x"])
    assert int is decidable(int)
    assert can_meet(NO_TYPE, int)
    assert not can_meet(str, int)
    assert can_meet(Annotated[int, {"unhashable": []}], int)
    assert "Dog" == describe(Dog)
    assert "None" == describe(None)
    assert "dict[str, int]" == describe(dict[str, int])
    # typing caches unions by equality, which ignores order: compare the members.
    shown = describe(Optional[Union[int, str]])  # noqa: UP007, UP045
    assert {"int", "str", "None"} == set(shown.split(" | "))
