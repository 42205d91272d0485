"""Durable runs' storage: journals that record runs so they survive a crash.

Owns: the persistence layer, in layers (each module imports only those below it):

- `sqlite` (`SQLiteJournal`), `postgres` (`PostgresJournal`, which imports asyncpg only
  when one is made): the backends' APIs and queries;
- `sqlite_writer`, `postgres_writer`: their writing halves (a writer thread; connections,
  a writer task and a renewal task): group commit, the fence, leases;
- `sqlite_schema`, `postgres_schema`: their schemas and statements;
- `journal`: the abstract `Journal` and the bookkeeping the backends share;
- `batches` (a batch's refusals and futures), `serializers`, `owners` (who owns a run);
- `records`: what is recorded (`RunStatus`, `RunRecord`, `Entry`, `StoredRun`) and the
  journal's errors.

Must not import: the executor, the reactor, the CLI.
"""

from typing import TYPE_CHECKING

from .journal import Journal
from .owners import owner_alive, process_owner
from .records import Entry, OwnershipError, RecordedError, RunRecord, RunStatus, StoredRun
from .serializers import JsonSerializer, PickleSerializer, Serializer

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
