"""Steps: what counts as a step, how it is named, and which options it takes."""

from __future__ import annotations

import functools
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reactorpy as rp
from reactorpy.testing import run_virtual


async def double(x):
    return 2 * x


class AsyncCallable:
    async def __call__(self, x):
        return x + 1


def test_a_callable_instance_with_async_call_is_awaited():
    """An instance whose __call__ is an async def is an async step: its value is awaited."""
    r = rp.Reactor("r", inputs=["x"], returns="AsyncCallable")
    r.add(rp.step(AsyncCallable()))
    assert 2 == r.run_sync({"x": 1})


def test_a_wraps_wrapper_around_an_async_def_is_awaited():
    """A functools.wraps sync wrapper around an async def returns a coroutine: awaited."""

    @functools.wraps(double)
    def wrapper(*args, **kwargs):
        return double(*args, **kwargs)

    r = rp.Reactor("r", inputs=["x"], returns="double")
    r.add(rp.step(wrapper))
    assert 6 == r.run_sync({"x": 3})


def test_a_partial_of_an_async_def_is_awaited_and_named_after_it():
    """A functools.partial of an async def is awaited, and takes its function's name."""
    s = rp.step(functools.partial(double))
    assert "double" == s.name
    r = rp.Reactor("r", inputs=["x"], returns="double")
    r.add(s)
    assert 8 == r.run_sync({"x": 4})


def test_default_names_never_hold_a_memory_address():
    """A callable instance is named after its class; names are the same in every process."""
    assert "AsyncCallable" == rp.step(AsyncCallable()).name
    assert "double" == rp.step(functools.partial(functools.partial(double))).name
    assert "0x" not in rp.step(functools.partial(print)).name


@pytest.mark.parametrize("kind", ["async generator", "generator"])
def test_generator_functions_are_a_definition_error_naming_the_step(kind):
    """A step yields nothing: generator and async generator functions are refused."""
    if kind == "generator":

        def items(x):
            yield x

    else:

        async def items(x):
            yield x

    with pytest.raises(rp.DefinitionError, match="Step 'items' is a generator function"):
        rp.step(items)


class Shop:
    def __init__(self, tax: int) -> None:
        self.tax = tax

    @rp.step
    async def price(self, amount):
        return amount + self.tax


def test_a_step_on_a_method_is_bound_to_the_instance():
    """@rp.step on a method: read from an instance it wires without self."""
    shop = Shop(tax=5)
    r = rp.Reactor("r", inputs=["amount"], returns="price")
    r.add(shop.price)
    assert 15 == r.run_sync({"amount": 10})
    assert shop.price is shop.price  # one bound step per instance
    assert [p.name for p in shop.price.params] == ["amount"]
    assert isinstance(Shop.price, rp.Step)


def test_a_bound_step_shares_the_callbacks_of_its_method():
    """Undo registered on the method's step applies to each instance's step."""
    undone = []

    class Booking:
        @rp.step
        def book(self, room):
            return f"b-{room}"

        @book.undo
        def cancel(booking):
            undone.append(booking)

    r = rp.Reactor("r", inputs=["room"])
    r.add(Booking().book)

    @r.step
    def fail(book):
        raise ValueError("no")

    with pytest.raises(rp.RunFailed):
        r.run_sync({"room": 7})
    assert ["b-7"] == undone


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"wait_for": 123}, "wait_for takes step names.*got 123"),
        ({"wait_for": ["a", 1]}, "wait_for takes step names"),
        ({"backoff": "1"}, "backoff must be a number of seconds >= 0.*got '1'"),
        ({"backoff": -1}, "backoff must be a number of seconds >= 0"),
        ({"timeout": "1"}, "timeout must be a number of seconds > 0.*got '1'"),
        ({"timeout": 0}, "timeout must be a number of seconds > 0"),
        ({"retry_on": "ValueError"}, "retry_on takes exception classes.*'ValueError'"),
        ({"retry_on": ValueError()}, "retry_on takes exception classes.*ValueError()"),
        ({"retry_on": [ValueError, "x"]}, "retry_on takes exception classes"),
        ({"retries": -1}, "retries must be an int >= 0"),
        ({"retries": True}, "retries must be an int >= 0"),
        ({"concurrency_key": 3}, "concurrency_key must be a str"),
        ({"when": True}, "when= must be a callable"),
        ({"args": ["x"]}, "args must be a mapping"),
    ],
)
def test_bad_step_options_are_a_definition_error_naming_option_and_value(options, message):
    """Each bad option is refused at decoration with its name, its value and the fix."""
    with pytest.raises(rp.DefinitionError, match=message):
        rp.step(double, **options)


@pytest.mark.parametrize(
    ("where", "make"),
    [
        ("@rp.step", lambda: rp.step(retry=3)),
        ("@reactor.step", lambda: rp.Reactor("r").step(retry=3)),
        (
            "Composite step 'm'",
            lambda: rp.Reactor("r", inputs=["xs"]).map("m", "xs", rp.step(double), retry=3),
        ),
    ],
)
def test_an_unknown_option_is_a_type_error_with_a_suggestion(where, make):
    """`retry=3` is a TypeError naming `retry` and suggesting `retries`."""
    with pytest.raises(
        TypeError, match=f"{where} got an unknown option 'retry'. Did you mean 'retries'"
    ):
        make()


def test_a_partial_step_of_another_process_resumes():
    """An unnamed partial's name is stable, so its halted run resumes from a pickle."""
    calls = {"n": 0}

    def gate(x, limit):
        calls["n"] += 1
        if calls["n"] == 1:
            raise rp.Halt("wait")
        return x + limit

    r = rp.Reactor("r", inputs=["x"], returns="gate")
    r.add(rp.step(functools.partial(gate, limit=1)))
    with pytest.raises(rp.Halted) as info:
        run_virtual(r.run({"x": 1}))
    checkpoint = pickle.loads(pickle.dumps(info.value.checkpoint))
    assert 2 == run_virtual(r.resume(checkpoint))


def test_a_plain_def_returning_a_coroutine_is_awaited():
    """A plain def that returns a coroutine (say, a lambda calling an async def): its value
    is what the coroutine returns, never the coroutine itself."""
    r = rp.Reactor("r", inputs=["x"], returns="later")
    r.add(rp.step(lambda x: double(x), name="later"))
    assert 6 == run_virtual(r.run({"x": 3}))
    assert 6 == run_virtual(r.run({"x": 3}, async_=False))


def _state(step):
    """Everything a step holds: its slots (callbacks by what they are) and its __dict__."""
    out = {
        name: getattr(step, name)
        for cls in type(step).__mro__
        for name in getattr(cls, "__slots__", ())
        if name != "__dict__"
    }
    out["__dict__"] = dict(step.__dict__)
    return out


def _constructed(step, name, args):
    """The copy the constructor makes (the general path of `Step._replace`)."""
    return rp.Step(
        step.fn,
        name=name,
        args=args,
        wait_for=step.wait_for,
        async_=step.async_,
        retries=step.retries,
        retry_on=step.retry_on,
        backoff=step.backoff,
        timeout=step.timeout,
        executor=step.executor,
        concurrency_key=step.concurrency_key,
        when=step.when.fn if step.when else None,
        description=step.description,
        _hooks=step._hooks,
    )


async def _annotated(record: dict, factor: int = 2, *, ctx: rp.Context) -> dict:
    """Annotated, with a default, a keyword-only Context."""
    return record


def _takes_kwargs(a, **rest):
    return a


_OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "wait_for": st.sampled_from(["x", ("x", "y")]),
        "async_": st.booleans(),
        "retries": st.integers(0, 3),
        "retry_on": st.sampled_from([ValueError, (KeyError, OSError)]),
        "backoff": st.sampled_from([0.5, lambda attempt, error: 0.1]),
        "timeout": st.sampled_from([1, 2.5]),
        "concurrency_key": st.just("db"),
        "when": st.just(lambda record: True),
        "description": st.just("described"),
    },
)
_SOURCES = st.sampled_from(
    [rp.Input("i"), rp.Input("i", "k", transform=str), rp.Result("s", 0), rp.Value([1])]
)


@settings(max_examples=60, deadline=None)
@given(
    fn=st.sampled_from([double, _annotated, _takes_kwargs, functools.partial(_annotated)]),
    options=_OPTIONS,
    args=st.dictionaries(st.sampled_from(["x", "record", "factor", "a", "extra"]), _SOURCES),
    name=st.sampled_from(["copy", "double"]),
    undo=st.booleans(),
)
def test_a_renamed_copy_is_the_step_the_constructor_makes(fn, options, args, name, undo):
    """`evolve` and `reactor.add(step, name=, args=)` copy a step without checking its
    function and options again (`Step._renamed`): the copy holds what the constructor
    would give it, and refuses the args the constructor refuses, with the same message."""
    step = rp.step(fn, **options)
    if undo:
        step.undo(lambda result: None)
    merged = {**step.args, **args}
    try:
        expected = _state(_constructed(step, name, merged))
    except rp.DefinitionError as error:
        refused = str(error)
    else:
        refused = None
    if refused is not None:
        with pytest.raises(rp.DefinitionError) as info:
            step.evolve(name=name, args=args)
        assert refused == str(info.value)
        return
    for copy in (step.evolve(name=name, args=args), step._replace(name=name, args=merged)):
        assert expected == _state(copy)
        assert copy.args is not step.args
    added = rp.Reactor("r", inputs=["i", "x"]).add(step, name=name, args=args)
    assert expected == _state(added)


@pytest.mark.parametrize("name", ["", 3])
def test_a_renamed_copy_refuses_a_name_the_constructor_refuses(name):
    """A step name must be a non-empty string, in a copy as in the constructor; a copy
    named None is named after its function, as a step made without a name is."""
    with pytest.raises(rp.DefinitionError, match="A step name must be a non-empty string"):
        rp.step(double)._replace(name=name)
    with pytest.raises(rp.DefinitionError, match="A step name must be a non-empty string"):
        rp.step(double).evolve(name=name)
    assert "double" == rp.step(double, name="other")._replace(name=None).name


@pytest.mark.parametrize("name", ["two\nlines", "tab\there", "\x1fsub."])
def test_a_step_name_must_be_printable(name):
    """No newline, tab or other control character in a step name, made or copied: the
    journal keeps its own marks under keys that start with one."""
    for make in (
        lambda: rp.step(double, name=name),
        lambda: rp.step(double).evolve(name=name),
        lambda: rp.Reactor("r").add(rp.step(double), name=name),
    ):
        with pytest.raises(rp.DefinitionError, match="A step name must be printable"):
            make()


def _without_hooks(step):
    state = _state(step)
    assert state.pop("_hooks").undo is None  # callbacks of its own, none yet
    return state


def test_a_function_made_a_step_again_is_the_step_the_constructor_makes():
    """``rp.step(fn, name=, args=)`` and ``reactor.step`` on a function made a step before
    copy that step (`make_step`): the copy holds what the constructor gives, and its
    callbacks are its own."""

    async def fetch(key: str, *, ctx: rp.Context) -> dict:
        """Fetch one record."""
        return {"key": key}

    first = rp.step(fetch, name="a", args={"key": rp.Value("x")})
    first.undo(lambda result: None)
    for name, args in (("b", {"key": rp.Input("k")}), ("c", None), (None, None)):
        again = rp.step(fetch, name=name, args=args)
        assert _without_hooks(rp.Step(fetch, name=name, args=args)) == _without_hooks(again)
        assert again.undo_callback is None
        assert again.version == 0
    r = rp.Reactor("r", inputs=["k"])
    made = r.step(fetch, name="d")
    assert _without_hooks(rp.Step(fetch, name="d")) == _without_hooks(made)
    assert first.undo_callback is not None
    with pytest.raises(
        rp.DefinitionError, match="args names 'nope', which is not a parameter"
    ) as refused:
        rp.step(fetch, name="e", args={"nope": rp.Value(1)})
    with pytest.raises(rp.DefinitionError) as constructed:
        rp.Step(fetch, name="e", args={"nope": rp.Value(1)})
    assert str(constructed.value) == str(refused.value)
    for bad in ("", "two\nlines", 3):
        with pytest.raises(rp.DefinitionError) as refused:
            rp.step(fetch, name=bad)
        with pytest.raises(rp.DefinitionError) as constructed:
            rp.Step(fetch, name=bad)
        assert str(constructed.value) == str(refused.value)


def test_a_function_changed_since_it_was_made_a_step_is_inspected_again():
    """What the copy would take from the function is compared first: a new docstring,
    name, signature or code makes the step anew."""

    async def fetch(key: str) -> dict:
        """Fetch one record."""
        return {"key": key}

    assert "Fetch one record." == rp.step(fetch, name="a").description
    fetch.__doc__ = "Fetch it again."
    assert "Fetch it again." == rp.step(fetch, name="b").description
    fetch.__name__ = "get"
    assert "get" == rp.step(fetch, name="c").__name__
    fetch.__annotations__ = {"key": int, "return": dict}
    assert int is rp.step(fetch, name="d").params[0].annotation

    def sync(key: str) -> dict:
        return {"key": key}

    fetch.__code__ = sync.__code__
    assert not rp.step(fetch, name="e").is_async


def test_a_function_made_a_step_is_not_kept_alive_by_it():
    """The steps `make_step` copies are held weakly: a closure made per request, made a
    step and dropped, is freed."""
    import gc
    import weakref

    def request() -> weakref.ref:
        async def handle(order: str) -> str:
            return order

        rp.step(handle, name="one")
        rp.step(handle, name="two")
        return weakref.ref(handle)

    gone = request()
    gc.collect()
    assert gone() is None


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
    assert rp.Step(f).is_async is True
    assert rp.step(f).is_async is True


def test_a_copy_refuses_a_generator_wrapper_as_the_constructor_does() -> None:
    """The fast path skips the constructor's generator check: a function whose
    ``__wrapped__`` became a generator function since its first step is accepted by
    rp.step, refused by rp.Step() (the two paths answer differently)."""

    def g(x: int) -> int:
        return x

    def gen(x: int):  # type: ignore[no-untyped-def]
        yield x

    first = rp.step(g)  # (held: the template is held weakly)
    g.__wrapped__ = gen  # type: ignore[attr-defined]
    errors = []
    for make in (lambda: rp.Step(g), lambda: rp.step(g)):
        try:
            make()
            errors.append(None)
        except rp.DefinitionError as exc:
            errors.append(str(exc))
    assert errors[0] is not None
    assert "generator function" in errors[0]
    assert errors[1] == errors[0]
    assert first.name == "g"
