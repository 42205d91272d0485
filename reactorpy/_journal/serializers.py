"""How a journal turns values and errors into bytes, and back.

Owns: `Serializer` (the interface, with the error encoding every serializer can fall back
on: type, message, args and notes as JSON), `PickleSerializer` (the default),
`JsonSerializer`, and `SERIALIZERS` (one of each by its recorded name, to read a run written
with another serializer than the journal's).
Must not import: the rest of the journal package but `records`; the executor, the reactor,
the CLI (it may import `_errors`: `RunFailed` comes back as itself).
"""

from __future__ import annotations

import abc
import builtins
import json
import pickle
from typing import Any, ClassVar

import attrs

from .records import RecordedError

__all__ = ["SERIALIZERS", "JsonSerializer", "PickleSerializer", "Serializer"]


class Serializer(abc.ABC):
    """How a journal turns values (results, inputs, undo records) and errors into bytes.

    Attributes:
        name: recorded with each run, so the journal can tell a reader that a run was written
            with another serializer.
    """

    name: ClassVar[str]

    @abc.abstractmethod
    def dumps(self, obj: Any) -> bytes:
        """Serialize a value.

        Args:
            obj: the value.

        Returns:
            Its bytes.

        Raises:
            TypeError: the value cannot be serialized; the message names its type (callers
                add the step's name).
        """

    @abc.abstractmethod
    def loads(self, data: bytes) -> Any:
        """Deserialize what `dumps` made.

        Args:
            data: the bytes.

        Returns:
            The value.
        """

    def dumps_error(self, error: BaseException) -> bytes:
        """Serialize an error; this never fails (what cannot be kept exactly is summarised).

        Args:
            error: the exception.

        Returns:
            Bytes that `loads_error` turns back into an exception.
        """
        return json.dumps(_error_to_data(error), separators=(",", ":")).encode()

    def loads_error(self, data: bytes) -> BaseException:
        """Deserialize what `dumps_error` made.

        Args:
            data: the bytes.

        Returns:
            The error: itself where its class can be rebuilt, else a `RecordedError`.
        """
        try:
            return _error_from_data(json.loads(data))
        except Exception as exc:
            return RecordedError("<unreadable error>", f"{type(exc).__name__}: {exc}")


@attrs.frozen
class PickleSerializer(Serializer):
    """The default: any picklable value, with `pickle` at the given protocol.

    Only open journals you trust with it: unpickling runs code named by the data.

    Args:
        protocol: the pickle protocol (the highest by default).

    >>> s = PickleSerializer()
    >>> s.loads(s.dumps({"amount": 42, "items": ("a", "b")}))
    {'amount': 42, 'items': ('a', 'b')}
    """

    name: ClassVar[str] = "pickle"
    protocol: int = pickle.HIGHEST_PROTOCOL

    def dumps(self, obj: Any) -> bytes:
        """Pickle a value.

        Args:
            obj: the value.

        Returns:
            Its pickle.

        Raises:
            TypeError: it cannot be pickled (a lock, a generator, a local function...).
        """
        try:
            return pickle.dumps(obj, self.protocol)
        except Exception as exc:
            raise _not_serializable(obj, "pickle", exc) from exc

    def loads(self, data: bytes) -> Any:
        """Unpickle a value.

        Args:
            data: a pickle.

        Returns:
            The value.
        """
        return pickle.loads(data)

    def dumps_error(self, error: BaseException) -> bytes:
        """Pickle an error if it unpickles again, else a `RecordedError` summarising it.

        Args:
            error: the exception.

        Returns:
            A pickle.
        """
        try:
            data = pickle.dumps(error, self.protocol)
            pickle.loads(data)  # an error class whose __init__ takes other args fails here
        except Exception:
            return pickle.dumps(_summary(error), self.protocol)
        return data

    def loads_error(self, data: bytes) -> BaseException:
        """Unpickle an error (a `RecordedError` if that fails, e.g. its class is gone).

        Args:
            data: what `dumps_error` made.

        Returns:
            The error.
        """
        try:
            error = pickle.loads(data)
        except Exception as exc:
            return RecordedError("<unreadable error>", f"{type(exc).__name__}: {exc}")
        if isinstance(error, BaseException):
            return error
        return RecordedError("<not an error>", repr(error))


@attrs.frozen
class JsonSerializer(Serializer):
    """JSON: readable, portable, and safe to load from a shared database.

    Values must be JSON types: tuples come back as lists, dict keys as strings. Errors are
    kept as their type, message and notes (see `RecordedError`).

    >>> s = JsonSerializer()
    >>> s.dumps({"amount": 42})
    b'{"amount":42}'
    >>> s.loads(b'{"amount":42}')
    {'amount': 42}
    """

    name: ClassVar[str] = "json"

    def dumps(self, obj: Any) -> bytes:
        """Encode a value as compact UTF-8 JSON.

        Args:
            obj: the value.

        Returns:
            Its JSON.

        Raises:
            TypeError: it holds something JSON has no type for (a set, a datetime...), or
                a circular reference.
        """
        try:
            return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
        except (TypeError, ValueError) as exc:
            raise _not_serializable(obj, "JSON", exc) from exc

    def loads(self, data: bytes) -> Any:
        """Decode JSON.

        Args:
            data: JSON bytes.

        Returns:
            The value.
        """
        return json.loads(data)


def _not_serializable(obj: Any, what: str, exc: Exception) -> TypeError:
    name = _qualified(type(obj))
    return TypeError(f"A value of type {name!r} cannot be serialized with {what}: {exc}")


def _qualified(kind: type) -> str:
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def _type_name(error: BaseException) -> str:
    return _qualified(type(error))


def _summary(error: BaseException) -> RecordedError:
    summary = RecordedError(_type_name(error), str(error))
    for note in getattr(error, "__notes__", ()):
        summary.add_note(str(note))
    return summary


def _error_to_data(error: BaseException) -> dict[str, Any]:
    if isinstance(error, RecordedError):
        data: dict[str, Any] = {"type": error.type_name, "message": error.message, "recorded": True}
    else:
        data = {"type": _type_name(error), "message": str(error)}
        try:
            json.dumps(error.args)
            data["args"] = list(error.args)
        except (TypeError, ValueError):
            pass
    notes = getattr(error, "__notes__", None)
    if notes:
        data["notes"] = [str(n) for n in notes]
    if isinstance(error, BaseExceptionGroup):
        data["message"] = error.message
        data["exceptions"] = [_error_to_data(e) for e in error.exceptions]
        data["reactor"] = getattr(error, "reactor", "")
    return data


def _error_from_data(data: dict[str, Any]) -> BaseException:
    type_name, message = data["type"], data["message"]
    members = [_error_from_data(d) for d in data.get("exceptions", ())]
    kind = getattr(builtins, type_name, None) if "." not in type_name else None
    error: BaseException
    if data.get("recorded"):
        error = RecordedError(type_name, message)
    elif type_name in ("reactorpy.RunFailed", "reactorpy._errors.RunFailed") and members:
        from .._errors import RunFailed

        error = RunFailed(message, members, reactor=data.get("reactor", ""))  # type: ignore[arg-type]
    elif isinstance(kind, type) and issubclass(kind, BaseExceptionGroup) and members:
        error = kind(message, members)
    elif isinstance(kind, type) and issubclass(kind, BaseException):
        try:
            error = kind(*data["args"]) if "args" in data else kind(message)
        except Exception:
            error = RecordedError(type_name, message)
    else:
        error = RecordedError(type_name, message)
    for note in data.get("notes", ()):
        error.add_note(note)
    return error


SERIALIZERS: dict[str, Serializer] = {"pickle": PickleSerializer(), "json": JsonSerializer()}
