"""Review of 654bd68 (`make_step`): rp.step on a function made a step before copies that
step; the copy must be what the constructor would make of the function as it is now."""

from __future__ import annotations

import reactorpy as rp
from reactorpy._step import Step


async def _async_target(x: int) -> int:
    return x


def test_a_copy_sees_a_wrapped_function_set_since() -> None:
    """``__wrapped__`` set on the function after its first step (what ``update_wrapper``
    or a hand-written decorator does) makes it an async step for the constructor; the
    copy of the earlier step keeps ``is_async`` False (the template check compares the
    inspection by value, and the code, names and docstring, not what ``__wrapped__`` says)."""

    def f(x: int) -> int:
        return _async_target(x)  # type: ignore[return-value]

    first = rp.step(f)  # (held: the template is held weakly)
    assert first.is_async is False
    f.__wrapped__ = _async_target  # type: ignore[attr-defined]
    assert Step(f).is_async is True
    assert rp.step(f).is_async is True


def test_a_copy_refuses_a_generator_wrapper_as_the_constructor_does() -> None:
    """The fast path skips the constructor's generator check: a function whose
    ``__wrapped__`` became a generator function since its first step is accepted by
    rp.step, refused by Step() (the two paths answer differently)."""

    def g(x: int) -> int:
        return x

    def gen(x: int):  # type: ignore[no-untyped-def]
        yield x

    first = rp.step(g)  # (held: the template is held weakly)
    g.__wrapped__ = gen  # type: ignore[attr-defined]
    errors = []
    for make in (lambda: Step(g), lambda: rp.step(g)):
        try:
            make()
            errors.append(None)
        except rp.DefinitionError as exc:
            errors.append(str(exc))
    assert errors[0] is not None
    assert "generator function" in errors[0]
    assert errors[1] == errors[0]
    assert first.name == "g"
