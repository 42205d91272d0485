"""Fakes for tests: `override` (a copy of a reactor with steps swapped for fakes) and the
ready-made fakes `returns` and `raises` (`reactorpy.testing` is where users import them).

Owns: the copy of a reactor a test runs, fakes wired as the planner wires the originals,
and what a fake records of its calls.
Must not import: the executor's internals.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, Protocol, TypeVar, cast

from ._arguments import Result
from ._errors import UnknownReferenceError
from ._reactor import Reactor
from ._step import Step, _Hooks
from ._wiring import wire

__all__ = ["Fake", "StepKey", "override", "raises", "returns"]

T = TypeVar("T")
V = TypeVar("V")
T_co = TypeVar("T_co", covariant=True)


class Fake(Protocol[T_co]):
    """The type of the fakes `returns` and `raises` make: an ``async def`` step function
    that takes any arguments by name, and records them.

    Attributes:
        calls: the keyword arguments of each call, in order.
    """

    calls: list[dict[str, Any]]

    def __call__(self, **kwargs: Any) -> Coroutine[Any, Any, T_co]: ...


# ---------------------------------------------------------------------------------- override
def _rebuild(
    step: Step[..., Any],
    fn: Callable[..., Any],
    *,
    args: Mapping[str, Any],
    wait_for: Iterable[str],
    executor: Any,
    hooks: _Hooks,
) -> Step[..., Any]:
    return step._replace(
        fn=fn, args=args, wait_for=tuple(wait_for), executor=executor, _hooks=hooks
    )


def _copy_hooks(step: Step[..., Any]) -> _Hooks:
    hooks = _Hooks()
    hooks.undo = step.undo_callback
    hooks.compensate = step.compensate_callback
    return hooks


def _fake(
    original: Step[..., Any],
    fake: Callable[..., Any],
    inputs: Iterable[str],
    steps: Iterable[str],
    *,
    keep_callbacks: bool,
) -> Step[..., Any]:
    """`original` with `fake` as its function: same name, wiring and options; its undo and
    compensate callbacks when `keep_callbacks`."""
    probe = Step(fake, name=original.name)  # reads the fake's signature, once
    accepted = {p.name for p in probe.params}
    args: dict[str, Any] = {}
    wait_for = list(original.wait_for)
    # The planner's own wiring of the original: explicit args, then inputs and steps by name.
    for param, source in wire(original, set(inputs), set(steps)).items():
        if source is None:  # the run Context: the fake gets it through its own annotation
            continue
        if param in accepted or probe.takes_kwargs:
            args[param] = source
        elif isinstance(source, Result) and source.step not in wait_for:
            # The fake does not take this argument; keep the dependency, so order is kept.
            wait_for.append(source.step)
    # An async fake cannot be sent to a thread or process; it runs on the loop instead.
    executor = None if probe.is_async else original.executor
    return _rebuild(
        original,
        fake,
        args=args,
        wait_for=wait_for,
        executor=executor,
        hooks=_copy_hooks(original) if keep_callbacks else _Hooks(),
    )


StepKey = str | Step[..., Any]


def _step_name(reactor: Reactor[Any], key: StepKey) -> str:
    """The name, in `reactor`, of the step `key` names or is."""
    if isinstance(key, Step):
        registered = reactor.steps
        for name, step in registered.items():
            if step is key:
                return name
        # `reactor.add(s, name=...)` registers a copy: find it by its function.
        same_fn = [name for name, step in registered.items() if step.fn is key.fn]
        key = same_fn[0] if len(same_fn) == 1 else key.name
    if key not in reactor.steps:
        raise UnknownReferenceError("override", key, list(reactor.steps), what="step")
    return key


def _by_name(reactor: Reactor[Any], mapping: Mapping[Any, V] | None) -> dict[str, V]:
    return {_step_name(reactor, key): value for key, value in (mapping or {}).items()}


def override(
    reactor: Reactor[T],
    fakes: Mapping[str, Callable[..., Any]]
    | Mapping[Step[..., Any], Callable[..., Any]]
    | Mapping[StepKey, Callable[..., Any]],
    *,
    undo: Mapping[str, Callable[..., Any] | None]
    | Mapping[Step[..., Any], Callable[..., Any] | None]
    | Mapping[StepKey, Callable[..., Any] | None]
    | None = None,
    compensate: Mapping[str, Callable[..., Any] | None]
    | Mapping[Step[..., Any], Callable[..., Any] | None]
    | Mapping[StepKey, Callable[..., Any] | None]
    | None = None,
    keep_callbacks: bool = True,
) -> Reactor[T]:
    """A new `Reactor` like `reactor` with some steps' functions replaced by fakes.

    The copy has the same name, inputs, ``returns``, options and middleware, and a copy of
    every step. A faked step keeps the original's name, wiring (explicit ``args`` and the
    parameters the planner wires by name), and options (retries, timeout, guard, ...); the
    fake receives the original's arguments that its own signature names (all of them if it
    takes ``**kwargs``), and still waits for the steps whose results it does not take. An
    ``async def`` fake of a step with ``executor=`` runs on the event loop. `reactor` itself
    is left untouched, and callbacks registered on the copy's steps do not reach it.

    **Undo and compensate.** By default a faked step keeps the original's *real* undo and
    compensate callbacks: if a later step fails, the real undo is called with the fake's
    result. Fake them in the same call with ``undo={"charge": fake_refund}`` (None drops
    one), or pass ``keep_callbacks=False`` to drop the callbacks of every faked step (the
    steps that are not faked keep theirs). ``undo=`` and ``compensate=`` also work on steps
    that are not faked.

    Args:
        reactor: the reactor to copy.
        fakes: the steps to fake (by name, or the `Step` objects themselves) and their fake
            functions (sync or async).
        undo: steps (names or `Step` objects) to a replacement undo callback, or None to
            drop the step's undo.
        compensate: steps to a replacement compensate callback, or None to drop it.
        keep_callbacks: False drops the real undo and compensate of every faked step
            (before ``undo=`` and ``compensate=`` are applied).

    Returns:
        The new reactor.

    Raises:
        UnknownReferenceError: a name is not a step of `reactor` (with a "Did you mean").

    >>> import reactorpy as rp
    >>> from reactorpy.testing import run_virtual
    >>> r = rp.Reactor("r", inputs=["x"], returns="slow")
    >>> @r.step
    ... async def slow(x):
    ...     raise RuntimeError("no network in tests")
    >>> fast = override(r, {slow: lambda x: x * 10})
    >>> run_virtual(fast.run({"x": 4}))
    40
    >>> fast is not r and r.steps["slow"].fn is slow.fn
    True
    """
    names = list(reactor.steps)
    fake_fns = _by_name(reactor, fakes)
    undos = _by_name(reactor, undo)
    compensates = _by_name(reactor, compensate)
    copy = cast(
        "Reactor[T]",
        Reactor(
            reactor.name,
            inputs={name: reactor.input_transforms.get(name) for name in reactor.inputs},
            returns=reactor.returns,
            max_concurrency=reactor.max_concurrency,
            limits=reactor.limits,
            middleware=reactor.middleware,
            executor=reactor.executor,
        ),
    )
    for name, step in reactor.steps.items():
        if name in fake_fns:
            new = _fake(step, fake_fns[name], reactor.inputs, names, keep_callbacks=keep_callbacks)
        elif type(step) is Step:
            new = _rebuild(
                step,
                step.fn,
                args=step.args,
                wait_for=step.wait_for,
                executor=step.executor,
                hooks=_copy_hooks(step),
            )
        else:  # a composite step (compose, map, switch): shared, it holds no test state
            new = step
        copy.add(new)
        _replace_callback(new, "undo", undos, name)
        _replace_callback(new, "compensate", compensates, name)
    return copy


def _replace_callback(
    step: Step[..., Any], which: str, given: Mapping[str, Any], name: str
) -> None:
    """Give `step` the undo or compensate (`which`) that `given` has for it: a callback,
    or None to drop it; a step `given` does not name keeps its own."""
    if name not in given:
        return
    if given[name] is None:
        setattr(step._hooks, which, None)
    else:
        getattr(step, which)(given[name])


# ---------------------------------------------------------------------------------- fakes
def returns(value: T, *, delay: float = 0.0) -> Fake[T]:
    """A fake step function that returns `value` whatever its arguments.

    Args:
        value: what the step returns.
        delay: seconds to ``asyncio.sleep`` first (free on the virtual clock), to shape
            the run's timeline.

    The fake keeps the arguments of each call in ``fake.calls`` (a list of dicts).
    """
    calls: list[dict[str, Any]] = []

    async def fake(**kwargs: Any) -> T:
        calls.append(kwargs)
        if delay:
            await asyncio.sleep(delay)
        return value

    fake.__name__ = fake.__qualname__ = f"returns({value!r})"
    fake.calls = calls  # type: ignore[attr-defined]
    return cast("Fake[T]", fake)


def raises(
    error: BaseException | type[BaseException],
    *,
    times: int | None = None,
    then: Any = None,
    delay: float = 0.0,
) -> Fake[Any]:
    """A fake step function that raises `error`: always, or its first `times` calls.

    Args:
        error: the exception (instance or class) to raise.
        times: raise only on the first `times` calls, then return `then` (to test retries).
        then: the value returned once `times` calls have raised.
        delay: seconds to ``asyncio.sleep`` before each call's outcome.

    The fake keeps the arguments of each call in ``fake.calls`` (a list of dicts).
    """
    calls: list[dict[str, Any]] = []

    async def fake(**kwargs: Any) -> Any:
        calls.append(kwargs)
        if delay:
            await asyncio.sleep(delay)
        if times is None or len(calls) <= times:
            raise error
        return then

    fake.__name__ = fake.__qualname__ = f"raises({error!r})"
    fake.calls = calls  # type: ignore[attr-defined]
    return cast("Fake[Any]", fake)
