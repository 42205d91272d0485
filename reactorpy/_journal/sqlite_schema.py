"""The SQLite journal's database: its schema, its statements, and opening a connection.

Owns: the schema (``SCHEMA``, versioned by ``PRAGMA user_version``: `SCHEMA_VERSION`,
`ensure_schema`), the statements the journal and its writer share (the fence included),
`connect` (WAL mode, ``synchronous``), `checkpoint` and `rollback`.
Must not import: the rest of the journal package but `records`; the executor, the reactor,
the CLI.
"""

from __future__ import annotations

import logging
import sqlite3

from .records import RECORD_COLUMNS

__all__ = [
    "DELETE_UNDONE",
    "FENCE",
    "FENCED_ENTRY",
    "INSERT_RUN",
    "INSERT_UNDONE",
    "RENEW",
    "SCHEMA",
    "SCHEMA_VERSION",
    "SELECT_RECORD",
    "SELECT_STATE",
    "UPSERT_ENTRY",
    "checkpoint",
    "connect",
    "ensure_schema",
    "rollback",
]

_log = logging.getLogger("reactorpy.journal")

SCHEMA_VERSION = 1
SCHEMA = (
    """CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        reactor TEXT NOT NULL,
        status TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        owner TEXT NOT NULL,
        lease_expires REAL NOT NULL,
        undo_requested INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        ended REAL,
        serializer TEXT NOT NULL,
        inputs BLOB NOT NULL,
        structure BLOB,
        result BLOB,
        error BLOB,
        checkpoint BLOB
    )""",
    "CREATE INDEX runs_by_reactor ON runs (reactor, status)",
    "CREATE INDEX runs_by_status ON runs (status, created)",
    # Entries and undo marks cluster by run (WITHOUT ROWID): a run's rows are read together.
    """CREATE TABLE entries (
        run_id TEXT NOT NULL,
        key TEXT NOT NULL,
        seq INTEGER NOT NULL,
        result BLOB,
        undo BLOB,
        PRIMARY KEY (run_id, key)
    ) WITHOUT ROWID""",
    """CREATE TABLE undone (
        run_id TEXT NOT NULL,
        key TEXT NOT NULL,
        PRIMARY KEY (run_id, key)
    ) WITHOUT ROWID""",
)

INSERT_RUN = (
    "INSERT INTO runs (run_id, reactor, status, fingerprint, owner, lease_expires, created, "
    "updated, serializer, inputs, structure) VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (run_id) DO NOTHING"
)
SELECT_RECORD = f"SELECT {RECORD_COLUMNS} FROM runs WHERE run_id = ?"
SELECT_STATE = "SELECT status, owner FROM runs WHERE run_id = ?"
# The fence: a run's rows are written only while this process owns it and it runs. A read,
# not an update: the run's row stays out of the commit (a page less to write per commit).
FENCE = "SELECT 1 FROM runs WHERE run_id = ? AND owner = ? AND status = 'running'"
UPSERT_ENTRY = (
    "INSERT INTO entries (run_id, key, seq, result, undo) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (run_id, key) DO UPDATE SET seq = excluded.seq, result = excluded.result, "
    "undo = excluded.undo"
)
# A chain's append (one request, one entry) as one statement in autocommit: fence and write
# in one call, with no BEGIN and COMMIT calls (each a round trip through the GIL).
FENCED_ENTRY = (
    "INSERT INTO entries (run_id, key, seq, result, undo) SELECT ?, ?, ?, ?, ? "
    "WHERE EXISTS (SELECT 1 FROM runs WHERE run_id = ? AND owner = ? AND status = 'running') "
    "ON CONFLICT (run_id, key) DO UPDATE SET seq = excluded.seq, result = excluded.result, "
    "undo = excluded.undo"
)
INSERT_UNDONE = "INSERT INTO undone (run_id, key) VALUES (?, ?) ON CONFLICT DO NOTHING"
# The mark of a step completed again after its undo (`Journal.append`'s ``redone``).
DELETE_UNDONE = "DELETE FROM undone WHERE run_id = ? AND key = ?"
RENEW = "UPDATE runs SET lease_expires = ? WHERE run_id = ? AND owner = ? AND status = 'running'"


def connect(path: str, synchronous: str, busy_timeout: float) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise ValueError(f"{path!r} cannot be put in WAL mode (it is in {mode!r} mode)")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
    except BaseException:
        conn.close()
        raise
    return conn


def ensure_schema(conn: sqlite3.Connection, path: str) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            for statement in SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        elif version > SCHEMA_VERSION:
            raise ValueError(
                f"{path!r} holds a journal of schema version {version}; this reactorpy knows "
                f"versions up to {SCHEMA_VERSION}: upgrade reactorpy to open it."
            )
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise


def checkpoint(conn: sqlite3.Connection) -> None:
    """Checkpoint the WAL into the database file, as far as no reader holds it back."""
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    except sqlite3.Error:
        _log.warning("could not checkpoint the WAL", exc_info=True)


def rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            _log.warning("rollback failed", exc_info=True)
