"""The cache of signature inspections: a function is inspected once, not at every ``rp.step``.

Owns: `cached` (an inspection of a callable, or the one made before of a callable it cannot
tell apart) and the stamps it tells them apart by.
Must not import: anything of the package (it knows callables, not steps).

An inspection is kept under its function's code object, so closures made by one ``def``
share it, with a stamp of everything else it read; a later look reuses it only when the
callable's stamp is equal now:

- a function: how many defaults and which keyword-only ones it has, its
  ``__annotations__``, the global (or builtin) value of every name its string annotations
  use (``"Order"``, ``"dict[str, Any]"``, nested ones included), its ``__type_params__``,
  its ``__dict__`` (``__signature__``, ``__wrapped__`` and markers live there) and the
  stamp of what ``__wrapped__`` names;
- a bound method: its function's stamp (binding drops the first parameter, nothing else);
- a ``functools.partial`` (kept under the partial itself): its function's stamp, how many
  arguments it binds, the names of the keywords it binds, and its ``__dict__``.

Anything else (a callable instance, a class, a builtin) is inspected every time: what
its signature depends on (its class, the class's ``__call__``, its own attributes) is
not something a stamp can watch cheaply. So are callables whose stamp cannot be compared.
Not watched: an attribute of a name an annotation uses (``"models.Order"`` after
``models.Order = Other``); rebinding the name itself (``Order = Other``) is.
"""

from __future__ import annotations

import builtins
import functools
import sys
import types
import typing
import weakref
from collections.abc import Callable
from typing import Any, Final, TypeVar

__all__ = ["cached"]

T = TypeVar("T")

_KEPT: Final = 8  # inspections kept per code object (closures of one def that differ)
_DEPTH: Final = 16  # how deep wrappers and partials may nest for a stamp

# Code object (or partial) -> [(stamp, inspection)], most recent last.
_inspections: weakref.WeakKeyDictionary[Any, list[tuple[Any, Any]]] = weakref.WeakKeyDictionary()


def cached(fn: Any, inspect: Callable[[Any], T]) -> T:
    """``inspect(fn)``, or what it returned before for a callable with `fn`'s key and an
    equal stamp (see the module docstring). What raises is never kept."""
    stamped = _stamp(fn, 0)
    if stamped is None:
        return inspect(fn)
    key, stamp = stamped
    entries = _inspections.get(key)
    if entries is not None:
        for old, inspection in reversed(entries):
            try:
                if old == stamp:
                    return inspection  # type: ignore[no-any-return]
            except Exception:  # a value whose == raises: compare no further
                return inspect(fn)
    inspection = inspect(fn)
    if entries is None:
        entries = _inspections[key] = []
    entries.append((stamp, inspection))
    del entries[:-_KEPT]
    return inspection


def _stamp(fn: Any, depth: int) -> tuple[Any, tuple[Any, ...]] | None:
    """(key, stamp) of `fn`, or None when it is not cached."""
    if depth > _DEPTH:
        return None
    kind = type(fn)
    if kind is types.FunctionType:
        own = fn.__dict__
        inner = None
        if "__wrapped__" in own:
            inner = _stamp(own["__wrapped__"], depth + 1)
            if inner is None:
                return None
        annotations = fn.__annotations__
        values = tuple(annotations.values())
        return fn.__code__, (
            len(fn.__defaults__ or ()),
            tuple(fn.__kwdefaults__ or ()),
            tuple(annotations),
            values,
            _bindings(fn, values),
            fn.__type_params__ if _TYPE_PARAMS else (),
            tuple(own.items()) if own else (),
            inner,
        )
    if kind is types.MethodType:
        inner = _stamp(fn.__func__, depth + 1)
        return None if inner is None else (inner[0], ("bound", inner[1]))
    if kind is functools.partial:
        inner = _stamp(fn.func, depth + 1)
        if inner is None:
            return None
        return fn, (inner, len(fn.args), tuple(fn.keywords), tuple(fn.__dict__.items()))
    return None


_MISSING: Final[Any] = object()
_TYPE_PARAMS: Final = sys.version_info >= (3, 12)  # PEP 695: names hints may resolve to


def _bindings(fn: Any, annotations: tuple[Any, ...]) -> tuple[Any, ...]:
    """The values of the names `fn`'s `annotations` (their values) use, as resolving them
    would find them: in the globals of the function at the end of its ``__wrapped__``
    chain, else builtins."""
    # Kept only for strings (``from __future__ import annotations``): a key holding objects
    # would keep them alive (classes made at run time, what they hold), or be unhashable.
    texts = all(type(a) is str for a in annotations)
    names = _names_of_annotations.get(annotations) if texts else None
    if names is None:
        names = _names_in(annotations)
        if texts and len(_names_of_annotations) < 10_000:
            _names_of_annotations[annotations] = names
    if not names:
        return ()
    inner = fn
    for _ in range(_DEPTH):
        if type(inner) is types.FunctionType:
            wrapped = inner.__dict__.get("__wrapped__")
        else:
            wrapped = getattr(inner, "__wrapped__", None)
        if wrapped is None:
            break
        inner = wrapped
    namespace = getattr(inner, "__globals__", None) or {}
    builtin = builtins.__dict__
    return tuple(  # by name: the names follow from the annotations, compared already
        [namespace[name] if name in namespace else builtin.get(name, _MISSING) for name in names]
    )


def _names_in(annotations: tuple[Any, ...]) -> tuple[str, ...]:
    names: tuple[str, ...] = ()
    for annotation in annotations:
        if not isinstance(annotation, type):  # a class uses no name
            names += _names(annotation)
    return names


# The names a function's annotations use, by its annotations when they are all strings
# (equal annotations use the same names), and by the text of a string annotation.
_names_of_annotations: dict[tuple[Any, ...], tuple[str, ...]] = {}
_names_of_text: dict[str, tuple[str, ...]] = {}


def _names(annotation: Any) -> tuple[str, ...]:
    """The names evaluating `annotation` may look up: those of its strings and forward
    references, at any depth (``list["Order"]``)."""
    if isinstance(annotation, str):
        found = _names_of_text.get(annotation)
        if found is None:
            try:
                code = compile(annotation, "<annotation>", "eval", dont_inherit=True)
            except SyntaxError:  # never resolves, whatever the globals: no name to watch
                found = ()
            else:  # a string in it is a forward reference too ("'Order'", "list['Order']")
                found = code.co_names
                for text in code.co_consts:
                    if isinstance(text, str) and text != annotation:
                        found += _names(text)
            if len(_names_of_text) < 10_000:
                _names_of_text[annotation] = found
        return found
    if isinstance(annotation, typing.ForwardRef):
        return _names(annotation.__forward_arg__)
    names: tuple[str, ...] = ()
    for arg in getattr(annotation, "__args__", None) or ():
        if not isinstance(arg, type):
            names += _names(arg)
    return names
