"""Durable runs' storage: journals that record runs so they survive a crash.

Owns: the persistence layer (`base`: records, serializers, owners, the abstract `Journal`;
`sqlite`: `SQLiteJournal`; `postgres`: `PostgresJournal`, which imports asyncpg only when
one is made).
Must not import: the executor, the reactor, the CLI.
"""

from .base import (
    Entry,
    Journal,
    JsonSerializer,
    OwnershipError,
    PickleSerializer,
    RecordedError,
    RunRecord,
    RunStatus,
    Serializer,
    StoredRun,
    owner_alive,
    process_owner,
)
from .postgres import PostgresJournal
from .sqlite import SQLiteJournal

__all__ = [
    "Entry",
    "JsonSerializer",
    "Journal",
    "OwnershipError",
    "PickleSerializer",
    "PostgresJournal",
    "RecordedError",
    "RunRecord",
    "RunStatus",
    "SQLiteJournal",
    "Serializer",
    "StoredRun",
    "owner_alive",
    "process_owner",
]

# Public as reactorpy.X (lazily, see reactorpy/__init__.py): reprs and pickles say so.
for _cls in (
    JsonSerializer,
    Journal,
    OwnershipError,
    PickleSerializer,
    PostgresJournal,
    RecordedError,
    RunRecord,
    RunStatus,
    SQLiteJournal,
):
    _cls.__module__ = "reactorpy"
del _cls
