"""Durable runs' storage: journals that record runs so they survive a crash.

Owns: the persistence layer (`base`: records, serializers, owners, the abstract `Journal`;
`sqlite`: `SQLiteJournal`; `postgres`: `PostgresJournal`, which imports asyncpg only when
one is made).
Must not import: the executor, the reactor, the CLI.
"""

from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
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
    RecordedError,
    RunRecord,
    RunStatus,
):
    _cls.__module__ = "reactorpy"
del _cls


def __getattr__(name: str) -> type:
    """The journals, imported on first use (`sqlite3` and the PostgreSQL driver are not
    loaded by ``import reactorpy`` nor by a run without a journal)."""
    if name == "SQLiteJournal":
        from .sqlite import SQLiteJournal as found
    elif name == "PostgresJournal":
        from .postgres import PostgresJournal as found  # type: ignore[assignment]
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    found.__module__ = "reactorpy"
    globals()[name] = found
    return found
