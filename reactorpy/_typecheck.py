"""Wiring checked by annotations: can a step's result meet the parameter it feeds?

Owns: `decidable` (an annotation reduced, once per step at decoration, to the classes a
value of it may be, or `NO_TYPE` when that cannot be decided) and `can_meet` (the plan-time
comparison of two decided annotations).
Must not import: the planner, the executor, the steps (this module only reads annotations).

The check is conservative: it refuses a wiring only when no value of the producer's type
can be given to the parameter. Two classes meet when either is a subclass of the other (a
producer annotated with a base class may return the subclass the consumer wants); ``int``
also meets ``float`` and ``complex``, and ``bytearray`` and ``memoryview`` meet ``bytes``
(the promotions of PEP 484). Generics are compared by their origin (``list[int]`` meets
``list[str]``: the arguments are not checked), unions and ``Optional`` when every member is
decided (they meet when any two members do), ``Literal`` by its values' classes, ``NewType``
by its supertype, ``Annotated`` by what it annotates. Everything else is undecided and never
refused: ``Any``, ``object``, type variables, protocols, ``TypedDict``, strings that do not
resolve, special forms.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Final

__all__ = ["NO_TYPE", "can_meet", "decidable", "describe"]


class _NoType:
    """The annotation of a parameter or result that cannot be checked."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_TYPE"


NO_TYPE: Final[Any] = _NoType()

# PEP 484's implicit promotions: a value of the key's type is accepted where one of the
# value's types is expected.
_PROMOTIONS: Final[dict[type, tuple[type, ...]]] = {
    int: (float, complex),
    float: (complex,),
    bytearray: (bytes,),
    memoryview: (bytes,),
}


def decidable(annotation: Any) -> Any:
    """`annotation` if the check can decide anything about it, else `NO_TYPE`.

    >>> decidable(int), decidable(typing.Any), decidable("Unresolved")
    (<class 'int'>, NO_TYPE, NO_TYPE)
    """
    return NO_TYPE if _classes(annotation) is None else annotation


def _classes(annotation: Any) -> tuple[type, ...] | None:
    """The classes a value of `annotation` may be an instance of; None if undecidable."""
    if annotation is None or annotation is type(None):
        return (type(None),)
    supertype = getattr(annotation, "__supertype__", None)  # typing.NewType
    if supertype is not None:
        return _classes(supertype)
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _classes(annotation.__origin__)
    if origin is typing.Union or origin is types.UnionType:
        found: list[type] = []
        for member in typing.get_args(annotation):
            classes = _classes(member)
            if classes is None:
                return None
            found.extend(classes)
        return tuple(found)
    if origin is typing.Literal:
        return tuple({type(value): None for value in typing.get_args(annotation)})
    if origin is not None:
        annotation = origin
    if not isinstance(annotation, type) or annotation is object or annotation is typing.Any:
        return None  # Any, TypeVars, strings that did not resolve, special forms
    if getattr(annotation, "_is_protocol", False) or typing.is_typeddict(annotation):
        return None  # structural: no issubclass to ask
    return (annotation,)


def _meet(produced: type, expected: type) -> bool:
    if expected in _PROMOTIONS.get(produced, ()):
        return True
    try:
        return issubclass(produced, expected) or issubclass(expected, produced)
    except TypeError:  # a class that refuses subclass checks: undecidable, so no refusal
        return True


_cache: dict[tuple[Any, Any], bool] = {}
# The same answers by the annotations' identities (which keep them alive, so an id is
# never reused while its entry is here): ``dict[str, Any]`` hashes its arguments each
# time, and a plan asks once per wired parameter.
_by_id: dict[tuple[int, int], tuple[Any, Any, bool]] = {}


def can_meet(produced: Any, expected: Any) -> bool:
    """False only when no value of the `produced` annotation can be an `expected` one.

    Both come from `decidable` (`NO_TYPE` always meets).

    >>> can_meet(int, str), can_meet(int, float), can_meet(int | None, int)
    (False, True, True)
    """
    known = _by_id.get((id(produced), id(expected)))
    if known is not None and known[0] is produced and known[1] is expected:
        return known[2]
    try:
        answer = _cache[produced, expected]
    except KeyError:
        answer = _cache[produced, expected] = _decide(produced, expected)
    except TypeError:  # unhashable (Annotated metadata, say): decide without the cache
        return _decide(produced, expected)
    _by_id[id(produced), id(expected)] = (produced, expected, answer)
    return answer


def _decide(produced: Any, expected: Any) -> bool:
    left, right = _classes(produced), _classes(expected)
    if left is None or right is None:
        return True
    return any(_meet(p, e) for p in left for e in right)


def describe(annotation: Any) -> str:
    """`annotation` as a reader writes it: ``int``, ``list[str]``, ``Order``, ``int | None``.

    >>> describe(int), describe(list[str]), describe(typing.Optional[int])
    ('int', 'list[str]', 'int | None')
    """
    if annotation is None or annotation is type(None):
        return "None"
    if annotation is Ellipsis:
        return "..."
    if isinstance(annotation, list):  # the parameters of a Callable
        return "[" + ", ".join(describe(a) for a in annotation) + "]"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(describe(a) for a in args)
    if origin is typing.Literal:
        return f"Literal[{', '.join(map(repr, args))}]"
    if origin is not None and args:
        name = getattr(origin, "__qualname__", None) or repr(origin).replace("typing.", "")
        return f"{name}[{', '.join(describe(a) for a in args)}]"
    name = getattr(annotation, "__qualname__", None)  # classes, and NewTypes
    if isinstance(name, str) and (
        isinstance(annotation, type) or hasattr(annotation, "__supertype__")
    ):
        return name
    return repr(annotation).replace("typing.", "")
