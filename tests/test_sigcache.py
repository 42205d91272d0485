"""The cache of signature inspections (`_sigcache`): a function is inspected once, and a
cached inspection is never used for a callable whose signature has changed since."""

from __future__ import annotations

import functools
import inspect
import typing
from typing import Any

import pytest

import reactorpy as rp
from reactorpy import _signature
from reactorpy._typecheck import NO_TYPE


@pytest.fixture
def inspections(monkeypatch):
    """The callables inspected for real (not answered from the cache), in order."""
    seen: list[Any] = []
    real = _signature._inspect

    def counting(fn):
        seen.append(fn)
        return real(fn)

    monkeypatch.setattr(_signature, "_inspect", counting)
    return seen


def shape(step):
    """What inspection found: each parameter's name, kind, default and annotation."""
    return (
        [(p.name, p.positional, p.has_default, p.is_context, p.annotation) for p in step.params],
        step.takes_kwargs,
        step.result_type,
    )


def test_a_function_is_inspected_once(inspections):
    """Decorating one function again (or adding it under other names) inspects it once."""

    def price(order: dict, rate: float = 1.0) -> float:
        return 0.0

    first, second = rp.step(price), rp.step(price, name="again")
    assert [price] == inspections
    assert shape(first) == shape(second)
    assert first.params is second.params


def defined(source: str, **names: Any) -> Any:
    """The function `source` defines, its annotations evaluated (as in a module without
    ``from __future__ import annotations``), with `names` as its globals."""
    namespace = dict(names)
    exec(compile(source, "<test>", "exec", dont_inherit=True), namespace)
    return [v for k, v in namespace.items() if k not in names and inspect.isfunction(v)][-1]


def test_closures_of_one_def_share_an_inspection_when_nothing_differs(inspections):
    """Functions made by one def share its code: inspected once while their annotations,
    defaults and attributes are the same; apart when an annotation differs."""
    make = defined(
        "def make(kind):\n"
        "    def convert(value: kind, factor: int = 2) -> kind:\n"
        "        return value\n"
        "    return convert\n"
    )
    ints, ints_too, strs = make(int), make(int), make(str)
    assert shape(rp.step(ints)) == shape(rp.step(ints_too))
    assert 1 == len(inspections)
    assert str is rp.step(strs).params[0].annotation
    assert int is rp.step(ints).params[0].annotation
    assert 2 == len(inspections)


def test_a_new_signature_is_seen(inspections):
    """Setting ``__signature__`` on the function changes what a new step of it wires."""

    def fetch(a, b):
        return a

    assert ["a", "b"] == [p.name for p in rp.step(fetch).params]
    fetch.__signature__ = inspect.Signature(
        [inspect.Parameter("only", inspect.Parameter.KEYWORD_ONLY)]
    )
    (only,) = rp.step(fetch).params
    assert ("only", False) == (only.name, only.positional)
    del fetch.__signature__  # as it was: the first inspection again
    assert ["a", "b"] == [p.name for p in rp.step(fetch).params]
    assert 2 == len(inspections)


def test_changed_annotations_are_seen():
    """Annotations changed in place or replaced are read again."""

    def total(x: int) -> int:
        return x

    assert int is rp.step(total).params[0].annotation
    total.__annotations__["x"] = str
    assert str is rp.step(total).params[0].annotation
    total.__annotations__ = {"x": float, "return": bytes}
    assert (float, bytes) == (rp.step(total).params[0].annotation, rp.step(total).result_type)


def test_changed_defaults_and_code_are_seen():
    """New defaults, keyword-only defaults and code give new parameters."""

    def f(a, b, *, c):
        return a

    def other(x):
        return x

    assert [False, False, False] == [p.has_default for p in rp.step(f).params]
    f.__defaults__ = (1,)
    assert [False, True, False] == [p.has_default for p in rp.step(f).params]
    f.__kwdefaults__ = {"c": 3}
    assert [False, True, True] == [p.has_default for p in rp.step(f).params]
    f.__defaults__ = f.__kwdefaults__ = None
    f.__code__ = other.__code__
    assert ["x"] == [p.name for p in rp.step(f).params]


def test_two_partials_are_two_signatures():
    """Partials of one function binding different arguments wire differently, and a
    partial whose keywords change is read again."""

    def quote(item, qty, rate):
        return item

    by_qty = functools.partial(quote, qty=2)
    by_item = functools.partial(quote, "book")
    assert [("item", True, False), ("qty", False, True), ("rate", False, False)] == [
        (p.name, p.positional, p.has_default) for p in rp.step(by_qty, name="a").params
    ]
    assert ["qty", "rate"] == [p.name for p in rp.step(by_item, name="b").params]
    by_qty.keywords["rate"] = 0.5
    assert [False, True, True] == [p.has_default for p in rp.step(by_qty, name="a").params]


def test_a_name_an_annotation_uses_is_looked_up_again_when_rebound():
    """A string annotation that did not resolve resolves once its name exists, and
    follows the name when it is bound to something else."""
    ship = defined("def ship(order: 'Order') -> list['Order']:\n    return [order]\n")
    namespace = ship.__globals__
    assert NO_TYPE is rp.step(ship).params[0].annotation
    namespace["Order"] = dict
    assert dict is rp.step(ship).params[0].annotation
    namespace["Order"] = tuple
    step = rp.step(ship)
    assert (tuple, list[tuple]) == (step.params[0].annotation, step.result_type)


def test_a_wrapper_follows_what_it_wraps():
    """A ``functools.wraps`` wrapper is read again when the function it wraps changes."""

    def inner(a: int):
        return a

    @functools.wraps(inner)
    def outer(*args, **kwargs):
        return inner(*args, **kwargs)

    assert [("a", int)] == [(p.name, p.annotation) for p in rp.step(outer).params]
    inner.__signature__ = inspect.Signature(
        [inspect.Parameter("b", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    )
    assert ["b"] == [p.name for p in rp.step(outer).params]

    class Shop:
        def sell(self, item: Item) -> Item:  # a name in this module's globals
            return item

    @functools.wraps(Shop().sell)
    def selling(*args, **kwargs):
        return args

    assert [("item", Item)] == [(p.name, p.annotation) for p in rp.step(selling).params]


class Item:
    """Named by an annotation under postponed evaluation (this module's)."""


def test_methods_are_inspected_once_per_function(inspections):
    """Steps on the methods of several instances inspect the method once."""

    class Shop:
        def sell(self, item: str) -> str:
            return item

    first, second = rp.step(Shop().sell), rp.step(Shop().sell)
    assert 1 == len(inspections)
    assert [("item", str)] == [(p.name, p.annotation) for p in second.params]
    assert shape(first) == shape(second)
    Shop.sell.__annotations__["item"] = bytes
    assert bytes is rp.step(Shop().sell).params[0].annotation


def test_callable_instances_are_inspected_every_time(inspections):
    """A callable instance's signature is its class's ``__call__``'s, which may change:
    it is never answered from the cache."""

    class Pricer:
        def __call__(self, item):
            return item

    pricer = Pricer()
    assert ["item"] == [p.name for p in rp.step(pricer).params]

    def __call__(self, sku, qty):
        return sku

    Pricer.__call__ = __call__
    assert ["sku", "qty"] == [p.name for p in rp.step(pricer).params]
    assert [pricer, pricer] == inspections


def test_a_signature_that_cannot_be_read_is_refused_every_time():
    """An unreadable signature is a definition error each time, never a cached answer."""

    def broken(a):
        return a

    broken.__signature__ = "not a signature"
    for _ in range(2):
        with pytest.raises(rp.DefinitionError, match="Cannot read the signature of step"):
            rp.step(broken)
    del broken.__signature__
    assert ["a"] == [p.name for p in rp.step(broken).params]


def test_a_quoted_annotation_under_postponed_evaluation_follows_its_name():
    """Under ``from __future__ import annotations`` (this module's) a quoted annotation is
    a string within a string, resolved twice: its name is watched all the same."""
    namespace: dict[str, Any] = {}
    exec("def ship(order: 'Order'):\n    return order\n", namespace)  # inherits the future
    ship = namespace["ship"]
    assert "'Order'" == ship.__annotations__["order"]
    assert NO_TYPE is rp.step(ship).params[0].annotation
    namespace["Order"] = dict
    assert dict is rp.step(ship).params[0].annotation


def test_annotations_that_cannot_be_compared_or_parsed_are_still_read_right(inspections):
    """An annotation whose ``==`` raises is inspected again when it is another object
    (its stamp cannot be compared); one that is not Python, or a forward reference in a
    generic, is watched by its names."""

    class Odd:
        def __eq__(self, other):
            raise ValueError("no comparing")

        __hash__ = object.__hash__

    def odd(x):
        return x

    odd.__annotations__ = {"x": Odd()}
    rp.step(odd)
    rp.step(odd)  # the same object: the same stamp
    odd.__annotations__ = {"x": Odd()}
    rp.step(odd)
    assert [odd, odd] == inspections

    unparsable = defined("def f(x: 'not python ('):\n    return x\n")
    assert NO_TYPE is rp.step(unparsable).params[0].annotation
    # typing keeps what a ForwardRef object resolved to: a name watched as typing sees it
    forward = defined("import typing\ndef g(x: typing.List['Order']):\n    return x\n")
    assert (typing.ForwardRef("Order"),) == typing.get_args(rp.step(forward).params[0].annotation)
    forward.__globals__["Order"] = dict
    assert (dict,) == typing.get_args(rp.step(forward).params[0].annotation)


def test_what_the_cache_cannot_watch_is_inspected_every_time(inspections):
    """A wrapper around a callable instance, and wrappers nested deeper than the cache
    follows, are inspected each time they are decorated."""

    class Pricer:
        def __call__(self, item):
            return item

    @functools.wraps(Pricer())
    def around_instance(*args, **kwargs):
        return args

    deep = around_instance
    for _ in range(20):
        deep = functools.wraps(deep)(lambda *args, **kwargs: args)
    for fn in (around_instance, deep):
        rp.step(fn, name="s")
        rp.step(fn, name="s")
    assert 4 == len(inspections)


def test_the_cache_does_not_keep_the_classes_annotations_name_alive():
    """Functions annotated with classes made at run time (one def, so one code object):
    once the functions and their steps are gone, the cache keeps at most the few
    inspections it keeps per code object, not every class."""
    import gc
    import weakref

    def make() -> tuple[Any, weakref.ref[type]]:
        local = type("Local", (), {})

        def fn(x):  # type: ignore[no-untyped-def]
            return x

        fn.__annotations__ = {"x": list[local], "return": local}  # objects, not strings
        return fn, weakref.ref(local)

    refs = []
    for _ in range(40):
        fn, ref = make()
        rp.step(fn)
        refs.append(ref)
        del fn
    gc.collect()
    assert sum(1 for ref in refs if ref() is not None) <= 8
