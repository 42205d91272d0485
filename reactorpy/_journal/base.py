"""What every journal is: its records, its serializers, who owns a run, and the abstract API.

Owns: `RunStatus`, `RunRecord`, `Entry`, `StoredRun`, the serializers (`PickleSerializer`,
`JsonSerializer`), owner identities and `owner_alive`, the journal's errors
(`OwnershipError`, `RecordedError`), and `Journal`, the abstract base the backends implement
(with the bookkeeping they share: decoding rows, deciding which runs a claim may take, the
set of runs this journal owns).
Must not import: the executor, the reactor, the CLI (persistence sits below them; it may import
`_errors`).

A run's life in a journal, as the executor drives it::

    create_run ─► append / mark_undone ... ─► [request_undo ─► mark_undone ...] ─► finish
                 (group commit: what is queued while a commit is in flight goes in the next)

A run is ``running`` until ``finish`` ends it ``completed``, ``failed``, ``halted`` or
``undone``. While it runs it has an owner (a process: host, pid and the pid's start time) and
a lease its journal renews; `Journal.claim` takes over running runs whose owner is gone (a dead
process on this host at once, any other once its lease has expired). Writes to a run are
fenced by its owner: a journal that lost its run to a claim gets `OwnershipError` instead of
writing into it.
"""

from __future__ import annotations

import abc
import builtins
import enum
import json
import os
import pickle
import socket
from asyncio import Future
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, ClassVar, Self

import attrs

from .._errors import ReactorError

__all__ = [
    "Entry",
    "JsonSerializer",
    "Journal",
    "OwnershipError",
    "PickleSerializer",
    "RecordedError",
    "RunRecord",
    "RunStatus",
    "Serializer",
    "StoredRun",
    "owner_alive",
    "process_owner",
]


class RunStatus(enum.StrEnum):
    """Where a journaled run stands; a `str`, so ``record.status == "failed"`` works."""

    RUNNING = "running"
    """Unfinished: going forward, or undoing (see `RunRecord.undo_requested`)."""
    COMPLETED = "completed"
    """Every step completed; `RunRecord.result` is the run's result."""
    FAILED = "failed"
    """A step failed (its completed steps were undone); `RunRecord.error` is the failure."""
    HALTED = "halted"
    """Paused by a halt; its checkpoint is in the journal and `recover` leaves it alone."""
    UNDONE = "undone"
    """Its completed steps were undone on request."""


ENDED = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.HALTED, RunStatus.UNDONE})


# --------------------------------------------------------------------------- errors


class OwnershipError(ReactorError, RuntimeError):
    """A journal was asked to change a run that is not this process's to change.

    Raised (or set on the future of an `Journal.append`) when the run is owned by another
    process (this one's lease expired and the run was claimed), has ended, or, for
    `Journal.reopen`, is not in a state that can be taken back.

    Attributes:
        run_id: the run.
        status: its status in the journal.
        owner: its owner in the journal.
        action: what was refused (``"append"``, ``"finish"``, ...).
    """

    def __init__(self, run_id: str, status: str, owner: str, action: str) -> None:
        self.run_id = run_id
        self.status = str(status)
        self.owner = owner
        self.action = action
        if self.status != RunStatus.RUNNING:
            why = f"it has ended as {self.status!r}"
        elif action in ("resume", "undo"):
            why = f"it is still running, owned by {owner!r}"
        else:
            why = (
                f"it is owned by {owner!r}, not by this process (a run passes to another "
                "process when its owner's lease expires); stop working on it here"
            )
        super().__init__(f"Cannot {action} run {run_id!r}: {why}.")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.run_id, self.status, self.owner, self.action))


class RecordedError(ReactorError):
    """An error read back from a journal whose own class could not be rebuilt.

    The JSON serializer records errors as their type, message and notes; builtin exceptions
    (and `RunFailed`, `ExceptionGroup`) come back as themselves, any other as this.

    Attributes:
        type_name: the original error's qualified class name (``"billing.CardDeclined"``).
        message: ``str()`` of the original error.
    """

    def __init__(self, type_name: str, message: str) -> None:
        self.type_name = type_name
        self.message = message
        super().__init__(f"{type_name}: {message}" if message else type_name)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_recorded, (self.type_name, self.message, getattr(self, "__notes__", [])))


def _rebuild_recorded(type_name: str, message: str, notes: list[str]) -> RecordedError:
    err = RecordedError(type_name, message)
    for note in notes:
        err.add_note(note)
    return err


# --------------------------------------------------------------------------- serializers


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


# --------------------------------------------------------------------------- records


@attrs.frozen
class RunRecord:
    """What a journal holds about a run, as `Journal.get` and `Journal.runs` return it.

    Attributes:
        run_id: the run's id.
        reactor: the reactor's name.
        status: a `RunStatus` (a `str`).
        result: the run's result (deserialized) once completed, else None.
        error: the run's failure (an exception) once it failed; while an undo after a
            failure is under way, the failure that caused it. Else None.
        created: when the run was recorded (UNIX time, seconds).
        updated: when its record last changed (created, claimed, reopened, undo requested,
            ended); step completions do not touch it (they stay off the run's row, a page
            less to write per commit).
        ended: when it ended, or None while it runs.
        owner: the process that runs (or last ran) it: ``"host:pid:start"``.
        undo_requested: its undo was requested (or it is undoing after a failure): a
            recovery continues the undo.
        fingerprint: the fingerprint of the reactor's graph it was started with.
    """

    run_id: str
    reactor: str
    status: RunStatus
    result: Any
    error: BaseException | None
    created: float
    updated: float
    ended: float | None
    owner: str
    undo_requested: bool
    fingerprint: str


@attrs.frozen
class Entry:
    """A step's completion as the journal records it.

    Attributes:
        key: the step's path in the run (``"charge_card"``, ``"sub.book"``,
            ``"items.[3].square"``). Recording a key again replaces its entry.
        seq: its completion order in the run (undo goes newest first by it).
        result: the serialized result, or None.
        undo: the serialized undo record, or None when the step has nothing to undo.
    """

    key: str
    seq: int
    result: bytes | None = None
    undo: bytes | None = None


@attrs.frozen
class StoredRun:
    """Everything a journal holds to continue (or undo) a run.

    Attributes:
        record: the run's `RunRecord`.
        inputs: the serialized inputs.
        entries: the completions, ordered by ``seq``.
        undone: the keys whose undo is recorded as done.
        checkpoint: the serialized checkpoint of a halted run, else None.
        structure: the opaque blob the executor stored with the run, or None.
        serializer: the name of the serializer the run was written with.
    """

    record: RunRecord
    inputs: bytes
    entries: tuple[Entry, ...]
    undone: frozenset[str]
    checkpoint: bytes | None
    structure: bytes | None
    serializer: str


# The columns a backend selects for a RunRecord, in this order (see `Journal._record`).
RECORD_COLUMNS = (
    "run_id, reactor, status, result, error, created, updated, ended, owner, undo_requested, "
    "fingerprint, serializer"
)


# --------------------------------------------------------------------------- owners


def _start_time(pid: int) -> tuple[str, bool] | None:
    """The start time of process ``pid`` as a token, and whether it is a zombie; None if
    there is no such process or no /proc to read it from."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: fields start after the last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return fields[19].decode(), fields[0] in (b"Z", b"X")


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()[:8]
    except OSError:
        return ""


_BOOT_ID = _boot_id()
_OWNERS: dict[tuple[int, str], str] = {}


def process_owner(host: str | None = None) -> str:
    """This process's owner identity: ``"host:pid:start"``.

    ``start`` is the boot id and the pid's start time from ``/proc/<pid>/stat`` on Linux (so
    a pid reused after this process died, or after a reboot, is not taken for it), empty
    elsewhere.

    Args:
        host: the host name to use (``socket.gethostname()`` by default); give each pid
            namespace its own (containers that share a host name).

    Returns:
        The identity.
    """
    host = socket.gethostname() if host is None else host
    pid = os.getpid()
    owner = _OWNERS.get((pid, host))
    if owner is None:
        started = _start_time(pid)
        start = f"{_BOOT_ID}.{started[0]}" if started else ""
        owner = _OWNERS[(pid, host)] = f"{host}:{pid}:{start}"
    return owner


def parse_owner(owner: str) -> tuple[str, int, str]:
    """Split an owner identity into host, pid and start token.

    Args:
        owner: ``"host:pid:start"``.

    Returns:
        ``(host, pid, start)``.

    Raises:
        ValueError: it is not an owner identity.
    """
    host, pid, start = owner.rsplit(":", 2)
    return host, int(pid), start


def owner_alive(owner: str, *, host: str | None = None) -> bool:
    """Whether the process that owns a run is alive, as far as this host can tell.

    An owner on this host is alive while its pid exists, is not a zombie, and (on Linux)
    started when the owner says. An owner on another host cannot be seen from here (nor any
    on Windows): this returns True, and its lease decides.

    Args:
        owner: an identity from `process_owner`.
        host: this host's name as the journal uses it (``socket.gethostname()`` by default).

    Returns:
        False if the owner is certainly gone.
    """
    try:
        owner_host, pid, start = parse_owner(owner)
    except ValueError:
        return True  # not ours to judge: its lease decides
    if owner_host != (socket.gethostname() if host is None else host) or os.name == "nt":
        return True  # (Windows: os.kill(pid, 0) would terminate the process)
    if pid == os.getpid():
        return owner == process_owner(owner_host)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    started = _start_time(pid)
    if started is None:
        return not start  # no /proc: trust the pid (unless the owner was recorded with /proc)
    token, zombie = started
    if zombie:
        return False
    return not start or start == f"{_BOOT_ID}.{token}"


# --------------------------------------------------------------------------- the journal


class Refused(Exception):
    """Raised inside a backend's write job to refuse that one request (the error goes to
    its caller; the rest of the batch commits)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


class Journal(abc.ABC):
    """Where durable runs are recorded: the API the executor drives, and the queries.

    Use it as an async context manager, or call `aclose`. Writes are group-committed: every
    request queued while a commit is in flight goes into the next single transaction.

    Args:
        serializer: how values and errors become bytes (`PickleSerializer` by default).
        lease: seconds a run stays owned by this process without a renewal; renewed every
            third of it while this journal owns unfinished runs.
        host: the host name in this process's owner identity (see `process_owner`).

    Raises:
        ValueError: ``lease`` is not positive.
    """

    def __init__(
        self,
        *,
        serializer: Serializer | None = None,
        lease: float = 30.0,
        host: str | None = None,
    ) -> None:
        if not lease > 0:
            raise ValueError(f"lease must be a positive number of seconds, not {lease!r}")
        self.serializer: Serializer = PickleSerializer() if serializer is None else serializer
        self.lease = float(lease)
        self.host = socket.gethostname() if host is None else host
        self.owner = process_owner(self.host)
        # Runs this journal owns and has not ended: their leases are renewed while it is
        # open and released by aclose(). Changed only after the commit that made it true.
        self._owned: set[str] = set()
        self._closed = False
        self._commits = 0

    @property
    def commits(self) -> int:
        """How many transactions the writer has committed for requests (group commits
        count once however many requests they carried; lease renewals do not count)."""
        return self._commits

    @property
    def closed(self) -> bool:
        """`aclose` was called."""
        return self._closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"owns {len(self._owned)} unfinished run(s)"
        return f"<{type(self).__name__} {self._where()} {state}>"

    def _where(self) -> str:
        return ""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ----------------------------------------------------------------- the executor's API

    @abc.abstractmethod
    async def create_run(
        self,
        run_id: str,
        reactor: str,
        fingerprint: str,
        inputs: bytes,
        structure: bytes | None = None,
    ) -> RunRecord | None:
        """Record a new run as ``running``, owned by this process, durably.

        Args:
            run_id: the run's id.
            reactor: the reactor's name.
            fingerprint: the fingerprint of the reactor's graph.
            inputs: the serialized inputs.
            structure: an opaque blob kept with the run (e.g. the graph's wiring).

        Returns:
            None when the run was recorded; the existing run's record when the id is
            taken (nothing is changed then).
        """

    @abc.abstractmethod
    def append(self, run_id: str, entries: Sequence[Entry]) -> Future[None]:
        """Queue step completions for the next group commit.

        Cheap to call from the event loop: nothing waits here.

        Args:
            run_id: the run (running, owned by this process).
            entries: the completions.

        Returns:
            A future that resolves once they are durable, or fails with the database's
            error, or `OwnershipError` if the run is not this process's (any more).

        Raises:
            RuntimeError: the journal is closed.
        """

    @abc.abstractmethod
    def mark_undone(self, run_id: str, key: str) -> Future[None]:
        """Queue the record that a step's undo is done, for the next group commit.

        Args:
            run_id: the run (running, owned by this process).
            key: the step's key.

        Returns:
            A future, as `append`'s.

        Raises:
            RuntimeError: the journal is closed.
        """

    @abc.abstractmethod
    async def request_undo(self, run_id: str, *, error: bytes | None = None) -> None:
        """Record, durably, that the run is being undone (before its first undo runs).

        A recovery then continues the undo whatever it was asked. With ``error`` (the run's
        failure, from ``serializer.dumps_error``) the run is undoing because it failed, and
        ends ``failed`` even if it is `finish`-ed as ``undone`` (by a recovery).

        Args:
            run_id: the run (running, owned by this process).
            error: the failure that caused the undo, if any.

        Raises:
            LookupError: no such run.
            OwnershipError: the run is not this process's, or has ended.
        """

    @abc.abstractmethod
    async def finish(
        self,
        run_id: str,
        status: RunStatus | str,
        *,
        result: bytes | None = None,
        error: bytes | None = None,
        checkpoint: bytes | None = None,
    ) -> None:
        """Record the run's ending, durably.

        A run that has already failed stays ``failed`` (this is then a no-op), and one
        whose undo was requested with an error ends ``failed`` when finished ``undone``.

        Args:
            run_id: the run (running, owned by this process).
            status: ``completed``, ``failed``, ``halted`` or ``undone``.
            result: the serialized result (``completed``).
            error: the serialized failure (``failed``; from ``serializer.dumps_error``).
            checkpoint: the serialized checkpoint (``halted``).

        Raises:
            ValueError: ``status`` is not an ending.
            LookupError: no such run.
            OwnershipError: the run is owned by another process, or has ended other than
                ``failed``.
        """

    @abc.abstractmethod
    async def reopen(self, run_id: str, *, undo: bool = False) -> RunRecord:
        """Take an ended run back to ``running``, owned by this process: to resume a halted
        run, or (``undo=True``) to undo a halted or completed one.

        With ``undo=True`` the undo request is recorded in the same transaction, so a crash
        during the undo is continued by a recovery.

        Args:
            run_id: the run.
            undo: reopen it for undo.

        Returns:
            Its record, now ``running``.

        Raises:
            LookupError: no such run.
            OwnershipError: it is running, failed or undone (or completed, without ``undo``).
        """

    @abc.abstractmethod
    async def claim(
        self, reactor: str, *, limit: int | None = None, run_id: str | None = None
    ) -> list[str]:
        """Take over the unfinished runs of a reactor whose owner is gone, atomically.

        An owner is gone when it is a dead process on this host (seen at once) or its lease
        has expired. Two processes claiming at once never get the same run.

        Args:
            reactor: the reactor's name.
            limit: take at most this many.
            run_id: take only this run (a run started again under its id, whose
                `create_run` returned an unfinished record with a dead owner).

        Returns:
            The ids of the runs now owned by this process (oldest first).
        """

    # ----------------------------------------------------------------- queries

    @abc.abstractmethod
    async def load(self, run_id: str) -> StoredRun:
        """Everything recorded for a run, to continue or undo it.

        Args:
            run_id: the run.

        Returns:
            The `StoredRun`.

        Raises:
            LookupError: no such run.
            ValueError: it was written with another serializer than this journal's.
        """

    @abc.abstractmethod
    async def get(self, run_id: str) -> RunRecord:
        """A run's record.

        Args:
            run_id: the run.

        Returns:
            Its `RunRecord`.

        Raises:
            LookupError: no such run.
        """

    @abc.abstractmethod
    async def runs(
        self,
        *,
        reactor: str | None = None,
        status: RunStatus | str | None = None,
        limit: int | None = None,
    ) -> list[RunRecord]:
        """The records of the runs, newest first.

        Args:
            reactor: only this reactor's.
            status: only runs in this status.
            limit: at most this many.

        Returns:
            The records.

        Raises:
            ValueError: ``status`` is not a `RunStatus`.
        """

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Commit what is queued, release the leases of the runs this journal still owns
        (a recovery may take them at once), and close. Calling it again does nothing."""

    # ----------------------------------------------------------------- shared bookkeeping

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed; open a new one")

    @staticmethod
    def _ending(status: RunStatus | str) -> RunStatus:
        try:
            ending = RunStatus(status)
        except ValueError:
            ending = None
        if ending not in ENDED:
            raise ValueError(
                f"A run ends as one of {sorted(s.value for s in ENDED)}, not {status!r}."
            )
        assert ending is not None
        return ending

    @staticmethod
    def _status_filter(status: RunStatus | str | None) -> str | None:
        if status is None:
            return None
        try:
            return RunStatus(status).value
        except ValueError:
            raise ValueError(
                f"Unknown run status {status!r}; one of {[s.value for s in RunStatus]}."
            ) from None

    def _serializer_for(self, name: str) -> Serializer:
        if name == self.serializer.name:
            return self.serializer
        return SERIALIZERS.get(name, self.serializer)

    def _record(self, row: Sequence[Any]) -> RunRecord:
        """A `RunRecord` from a row of `RECORD_COLUMNS`."""
        row = tuple(row)
        (run_id, reactor, status, result, error, created, updated, ended, owner, undo) = row[:10]
        serializer = self._serializer_for(row[11])
        return RunRecord(
            run_id=run_id,
            reactor=reactor,
            status=RunStatus(status),
            result=None if result is None else serializer.loads(bytes(result)),
            error=None if error is None else serializer.loads_error(bytes(error)),
            created=created,
            updated=updated,
            ended=ended,
            owner=owner,
            undo_requested=bool(undo),
            fingerprint=row[10],
        )

    def _stored(
        self,
        row: Sequence[Any],
        inputs: bytes,
        checkpoint: bytes | None,
        structure: bytes | None,
        entries: Iterable[Sequence[Any]],
        undone: Iterable[str],
    ) -> StoredRun:
        if row[11] != self.serializer.name:
            raise ValueError(
                f"Run {row[0]!r} was recorded with the {row[11]!r} serializer, and this journal "
                f"uses {self.serializer.name!r}; open the journal with serializer="
                f"{type(SERIALIZERS.get(row[11], self.serializer)).__name__}() to continue it."
            )
        return StoredRun(
            record=self._record(row),
            inputs=bytes(inputs),
            entries=tuple(
                Entry(k, s, None if r is None else bytes(r), None if u is None else bytes(u))
                for k, s, r, u in entries
            ),
            undone=frozenset(undone),
            checkpoint=None if checkpoint is None else bytes(checkpoint),
            structure=None if structure is None else bytes(structure),
            serializer=row[11],
        )

    def _claimable(
        self, candidates: Iterable[tuple[str, str, bool]], limit: int | None
    ) -> list[tuple[str, str]]:
        """Of ``(run_id, owner, lease expired)`` candidates (oldest first), those whose owner
        is gone, as ``(run_id, owner)``: the lease has expired, or the owner is a dead
        process on this host."""
        alive: dict[str, bool] = {}
        chosen: list[tuple[str, str]] = []
        for run_id, owner, expired in candidates:
            if limit is not None and len(chosen) >= limit:
                break
            if not expired:
                if owner not in alive:
                    alive[owner] = owner_alive(owner, host=self.host)
                if alive[owner]:
                    continue
            chosen.append((run_id, owner))
        return chosen

    def _final_status(
        self, run_id: str, found: Sequence[Any] | None, ending: RunStatus
    ) -> RunStatus | None:
        """The status `finish` records, from the run's ``(status, owner, has an error)`` row:
        None for a run that has failed (it stays failed); `failed` for an undo after a
        failure. Raises `Refused` when the run is unknown, not ours or has ended."""
        if found is not None and found[0] == RunStatus.FAILED:
            return None
        if found is None or found[0] != RunStatus.RUNNING or found[1] != self.owner:
            raise self._refusal(run_id, found, "finish")
        return RunStatus.FAILED if ending is RunStatus.UNDONE and found[2] else ending

    def _check_reopen(self, run_id: str, found: Sequence[Any] | None, undo: bool) -> None:
        """Raise `Refused` unless a run of this ``(status, owner)`` row can be reopened:
        halted (resume or undo) or completed (undo only)."""
        allowed = (RunStatus.HALTED, RunStatus.COMPLETED) if undo else (RunStatus.HALTED,)
        if found is None or found[0] not in allowed:
            raise self._refusal(run_id, found, "undo" if undo else "resume")

    def _refusal(self, run_id: str, found: Sequence[Any] | None, action: str) -> Refused:
        """The error for a write to ``run_id`` that its conditions refused, from its
        ``(status, owner)`` row (None: no such run)."""
        if found is None:
            return Refused(LookupError(f"No run {run_id!r} in this journal."))
        return Refused(OwnershipError(run_id, found[0], found[1], action))


# One outcome of a batch: the future, and its result or its error.
Outcome = tuple["Future[Any]", Any, BaseException | None]


def settle(outcomes: Sequence[Outcome]) -> None:
    """Resolve the futures of a committed batch (on their event loop: the one callback a
    backend schedules per batch and loop). Futures whose caller gave up are left alone."""
    for future, result, error in outcomes:
        if future.done():
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
