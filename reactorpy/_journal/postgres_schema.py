"""The PostgreSQL journal's database: its tables and its statements.

Owns: `Sql` (every statement, with the tables qualified by the journal's schema: tables
``reactorpy_*`` in a schema of its choice), `SCHEMA_VERSION` (kept in ``reactorpy_meta``)
and `ensure_schema`. Times in the statements are the server's clock (``_NOW``), so machines
with skewed clocks agree on leases.
Must not import: the rest of the journal package but `records`; asyncpg (the connections
come from `postgres_writer`); the executor, the reactor, the CLI.
"""

from __future__ import annotations

from typing import Any

from .records import RECORD_COLUMNS

__all__ = ["SCHEMA_VERSION", "Sql", "ensure_schema"]

SCHEMA_VERSION = 1
_NOW = "extract(epoch from statement_timestamp())::float8"


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


class Sql:
    """The statements, with the tables qualified by the journal's schema."""

    def __init__(self, schema: str) -> None:
        s = _quote(schema)
        runs, entries, undone = (
            f"{s}.reactorpy_runs",
            f"{s}.reactorpy_entries",
            f"{s}.reactorpy_undone",
        )
        self.meta = f"{s}.reactorpy_meta"
        self.schema = (
            f"CREATE SCHEMA IF NOT EXISTS {s}",
            f"CREATE TABLE IF NOT EXISTS {self.meta} (name text PRIMARY KEY, value text NOT NULL)",
        )
        self.tables = _tables(runs, entries, undone)
        self.insert_run = (
            f"INSERT INTO {runs} (run_id, reactor, status, fingerprint, owner, lease_expires, "
            "created, updated, serializer, inputs, structure) "
            f"VALUES ($1, $2, 'running', $3, $4, {_NOW} + $5, {_NOW}, {_NOW}, $6, $7, $8) "
            "ON CONFLICT (run_id) DO NOTHING RETURNING run_id"
        )
        self.record = f"SELECT {RECORD_COLUMNS} FROM {runs} WHERE run_id = $1"
        self.state = f"SELECT status, owner FROM {runs} WHERE run_id = $1"
        self.states = f"SELECT run_id, status, owner FROM {runs} WHERE run_id = ANY($1::text[])"
        # One statement, one round trip: fence, entries, undo marks. FOR SHARE keeps a
        # concurrent claim (FOR UPDATE SKIP LOCKED) off these runs until it has committed.
        # With the marks of redone keys to delete, a statement with one CTE more (rare:
        # the CTE cost every statement 12-18 µs, a few % of a chain's commit).
        self.stretch = _stretch(runs, entries, undone, redone=False)
        self.stretch_redone = _stretch(runs, entries, undone, redone=True)
        self.request_undo = (
            f"UPDATE {runs} SET undo_requested = true, error = coalesce($3, error), "
            f"updated = {_NOW} WHERE run_id = $1 AND owner = $2 AND status = 'running' "
            "RETURNING run_id"
        )
        self.finish_state = (
            f"SELECT status, owner, error IS NOT NULL FROM {runs} WHERE run_id = $1 FOR UPDATE"
        )
        self.finish = (
            f"UPDATE {runs} SET status = $2, result = $3, error = coalesce($4, error), "
            f"checkpoint = $5, ended = {_NOW}, updated = {_NOW} WHERE run_id = $1"
        )
        self.reopen_state = f"SELECT status, owner FROM {runs} WHERE run_id = $1 FOR UPDATE"
        self.reopen = (
            f"UPDATE {runs} SET status = 'running', owner = $2, lease_expires = {_NOW} + $3, "
            f"ended = NULL, undo_requested = $4, updated = {_NOW} WHERE run_id = $1 "
            f"RETURNING {RECORD_COLUMNS}"
        )
        # Candidates only: expired leases, or owners on this host (whose pids are checked);
        # live owners elsewhere are not even locked.
        self.candidates = (
            f"SELECT run_id, owner, lease_expires < {_NOW} FROM {runs} "
            "WHERE reactor = $1 AND status = 'running' AND ($3::text IS NULL OR run_id = $3) "
            f"AND (lease_expires < {_NOW} OR left(owner, length($2) + 1) = $2 || ':') "
            "ORDER BY created, run_id FOR UPDATE SKIP LOCKED"
        )
        # Compare-and-set on the owners read above.
        self.take = (
            f"UPDATE {runs} AS r SET owner = $1, lease_expires = {_NOW} + $2, updated = {_NOW} "
            "FROM unnest($3::text[], $4::text[]) AS c(run_id, owner) "
            "WHERE r.run_id = c.run_id AND r.owner = c.owner AND r.status = 'running' "
            "RETURNING r.run_id"
        )
        self.renew = (
            f"UPDATE {runs} SET lease_expires = {_NOW} + $3 "
            "WHERE run_id = ANY($1::text[]) AND owner = $2 AND status = 'running'"
        )
        self.release = (
            f"UPDATE {runs} SET lease_expires = 0 "
            "WHERE run_id = ANY($1::text[]) AND owner = $2 AND status = 'running'"
        )
        self.load_run = (
            f"SELECT {RECORD_COLUMNS}, inputs, checkpoint, structure FROM {runs} WHERE run_id = $1"
        )
        self.load_entries = (
            f"SELECT key, seq, result, undo FROM {entries} WHERE run_id = $1 ORDER BY seq, key"
        )
        self.load_undone = f"SELECT key FROM {undone} WHERE run_id = $1"
        self.runs = f"SELECT {RECORD_COLUMNS} FROM {runs}"


def _tables(runs: str, entries: str, undone: str) -> tuple[str, ...]:
    """The tables and indexes of schema version 1, given their qualified names."""
    return (
        f"""CREATE TABLE {runs} (
                run_id text PRIMARY KEY,
                reactor text NOT NULL,
                status text NOT NULL,
                fingerprint text NOT NULL,
                owner text NOT NULL,
                lease_expires float8 NOT NULL,
                undo_requested boolean NOT NULL DEFAULT false,
                created float8 NOT NULL,
                updated float8 NOT NULL,
                ended float8,
                serializer text NOT NULL,
                inputs bytea NOT NULL,
                structure bytea,
                result bytea,
                error bytea,
                checkpoint bytea
            )""",
        f"CREATE INDEX ON {runs} (reactor, status)",
        f"CREATE INDEX ON {runs} (status, created)",
        f"""CREATE TABLE {entries} (
                run_id text NOT NULL,
                key text NOT NULL,
                seq bigint NOT NULL,
                result bytea,
                undo bytea,
                PRIMARY KEY (run_id, key)
            )""",
        f"""CREATE TABLE {undone} (
                run_id text NOT NULL,
                key text NOT NULL,
                PRIMARY KEY (run_id, key)
            )""",
    )


def _stretch(runs: str, entries: str, undone: str, *, redone: bool) -> str:
    """A stretch of appends and undo marks as one statement: the fence, then every
    entry, with `redone` the deletion of the undo marks of steps completed again after
    their undo ($10, $11), and the new marks ($8, $9), from arrays (the last two never hold
    the same key: see `PostgresWriter._write_stretch`); it returns the runs it could
    write."""
    unmarked = f"""), unmarked AS (
                DELETE FROM {undone} u
                USING unnest($10::text[], $11::text[]) AS e(run_id, key)
                WHERE u.run_id = e.run_id AND u.key = e.key
                    AND e.run_id IN (SELECT run_id FROM ok)
            """
    return f"""
            WITH ok AS (
                SELECT run_id FROM {runs}
                WHERE run_id = ANY($1::text[]) AND owner = $2 AND status = 'running'
                FOR SHARE
            ), written AS (
                INSERT INTO {entries} (run_id, key, seq, result, undo)
                SELECT e.run_id, e.key, e.seq, e.result, e.undo
                FROM unnest($3::text[], $4::text[], $5::int8[], $6::bytea[], $7::bytea[])
                    AS e(run_id, key, seq, result, undo)
                WHERE e.run_id IN (SELECT run_id FROM ok)
                ON CONFLICT (run_id, key) DO UPDATE
                SET seq = excluded.seq, result = excluded.result, undo = excluded.undo
            {unmarked if redone else ""}), marked AS (
                INSERT INTO {undone} (run_id, key)
                SELECT m.run_id, m.key FROM unnest($8::text[], $9::text[]) AS m(run_id, key)
                WHERE m.run_id IN (SELECT run_id FROM ok)
                ON CONFLICT DO NOTHING
            )
            SELECT run_id FROM ok"""


async def ensure_schema(conn: Any, sql: Sql, schema: str) -> None:
    """Create the schema's tables if it has none; refuse a newer schema version."""
    async with conn.transaction():
        # Processes opening a new database at once: one creates, the others wait.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "reactorpy:" + schema)
        for statement in sql.schema:
            await conn.execute(statement)
        version = await conn.fetchval(f"SELECT value FROM {sql.meta} WHERE name = 'schema_version'")
        if version is None:
            for statement in sql.tables:
                await conn.execute(statement)
            await conn.execute(
                f"INSERT INTO {sql.meta} (name, value) VALUES ('schema_version', $1)",
                str(SCHEMA_VERSION),
            )
        elif int(version) > SCHEMA_VERSION:
            raise ValueError(
                f"Schema {schema!r} holds a journal of schema version {version}; "
                f"this reactorpy knows versions up to {SCHEMA_VERSION}: upgrade reactorpy "
                "to open it."
            )
