"""What a journal records: a run's status and record, its completions, and its errors.

Owns: `RunStatus` (and `ENDED`, the statuses a run ends in), `RunRecord`, `Entry`,
`StoredRun`, `RECORD_COLUMNS` (the columns a backend selects for a `RunRecord`), and the
errors a journal raises: `OwnershipError`, `RecordedError`.
Must not import: the rest of the journal package (it is the bottom layer of it), the
executor, the reactor, the CLI (it may import `_errors`).
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from .._errors import ReactorError

__all__ = [
    "ENDED",
    "RECORD_COLUMNS",
    "Entry",
    "OwnershipError",
    "RecordedError",
    "RunRecord",
    "RunStatus",
    "StoredRun",
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
        elif action in ("resume", "undo", "run again"):
            why = f"it is still running, in a live process ({owner!r})"
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
