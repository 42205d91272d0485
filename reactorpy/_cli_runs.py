"""The command line's durable-run commands: ``runs`` lists a journal's runs, ``recover``
finishes (or undoes) the runs of a reactor whose process died.

Owns: opening the journal ``--journal`` names (an SQLite file that must already be a
journal, or a ``postgresql://`` DSN whose schema must hold one: listing never creates a
database), describing `RunRecord`s as a Rich table on a terminal, aligned plain lines
otherwise (the conventions of `reactorpy._progress`), or JSON; the two commands' arguments
(`add_commands`, called by `reactorpy.cli` as it builds its parser) and exit statuses.
Must not import: the executor; the journal backends, sqlite3 and asyncpg at import time
(they load when a journal is opened, so ``run`` and ``graph`` never load them).

Exit status: 0 when the listing was printed, or every recovered run completed or was undone
(nothing to recover included); 1 when a recovered run failed or halted, or some runs could
not be recovered (their reactor changed, or another serializer wrote them); 2 for usage
errors (no such journal file, a file that is no journal, a database that cannot be reached,
an unknown status).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import sys
import urllib.parse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, TextIO

from ._errors import ResumeError
from ._progress import STYLES, console_for, silence
from .cli import PROG, UsageError, load_reactor

if TYPE_CHECKING:  # loaded when a journal is opened: `run` and `graph` never load them
    from ._journal import Journal, RecordedError, RunRecord

__all__ = [
    "add_commands",
    "describe",
    "open_journal",
    "record_json",
    "recover_command",
    "runs_command",
]

# `rp.RunStatus`'s values (a test checks): the parser does not load the journal's modules.
STATUSES: Final = ("running", "completed", "failed", "halted", "undone")
STATUS_STYLES: Final = {
    "running": STYLES["running"],
    "completed": STYLES["done"],
    "failed": STYLES["failed"],
    "halted": STYLES["halted"],
    "undone": STYLES["undone"],
}
_POSTGRES: Final = ("postgresql://", "postgres://")
_PLAIN_DETAIL: Final = 100  # characters of a result or an error in a plain line


# ---------------------------------------------------------------------------------- opening
def is_dsn(spec: str) -> bool:
    """Whether ``--journal`` names a PostgreSQL database rather than an SQLite file."""
    return spec.startswith(_POSTGRES)


def redacted(dsn: str) -> str:
    """`dsn` without its password, for messages."""
    parts = urllib.parse.urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _check_sqlite(path: str) -> None:
    """Raise `UsageError` unless `path` is an SQLite file holding a journal (read only:
    nothing is created or changed)."""
    if not os.path.exists(path):
        raise UsageError(
            f"--journal: no such file {path!r}; give the SQLite file the runs were recorded "
            "in (rp.SQLiteJournal(path)), or a postgresql:// DSN."
        )
    if not os.path.isfile(path):
        raise UsageError(f"--journal: {path!r} is not a file.")
    import sqlite3  # here: listing and recovering only

    uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runs'"
            ).fetchone()
    except sqlite3.Error as exc:
        raise UsageError(f"--journal: cannot read {path!r} as an SQLite database: {exc}.") from None
    if found is None:
        raise UsageError(f"--journal: {path!r} is an SQLite database but not a reactorpy journal.")


async def _check_postgres(dsn: str, schema: str) -> None:
    """Raise `UsageError` unless the database can be reached and `schema` holds a journal
    (PostgresJournal would create one)."""
    try:
        import asyncpg
    except ImportError:
        raise UsageError(
            "--journal: a postgresql:// journal needs the asyncpg driver: "
            "pip install 'reactorpy[postgres]'."
        ) from None
    try:
        conn = await asyncpg.connect(dsn)
    except Exception as exc:
        raise UsageError(
            f"--journal: cannot connect to {redacted(dsn)}: {type(exc).__name__}: {exc}"
        ) from None
    try:
        table = '"' + schema.replace('"', '""') + '".reactorpy_runs'
        found = await conn.fetchval("SELECT to_regclass($1)", table)
    finally:
        await conn.close()
    if found is None:
        raise UsageError(
            f"--journal: schema {schema!r} of {redacted(dsn)} holds no reactorpy journal "
            "(give --schema if its tables are in another schema)."
        )


async def open_journal(spec: str, *, schema: str = "public", serializer: str = "pickle") -> Any:
    """The journal ``--journal`` names, opened; it must exist already.

    Args:
        spec: an SQLite file's path, or a ``postgresql://`` DSN.
        schema: the PostgreSQL schema of the journal's tables.
        serializer: ``"pickle"`` or ``"json"``: what the runs to recover were written with.

    Raises:
        UsageError: no such file, a file or database that holds no journal, a database
            that cannot be reached, asyncpg missing for a DSN.
    """
    from . import _journal

    chosen = _journal.JsonSerializer() if serializer == "json" else _journal.PickleSerializer()
    if is_dsn(spec):
        await _check_postgres(spec, schema)
        journal = _journal.PostgresJournal(spec, schema=schema, serializer=chosen)
        try:
            return await journal.__aenter__()
        except Exception as exc:
            await journal.aclose()
            raise UsageError(
                f"--journal: cannot open the journal in {redacted(spec)}: "
                f"{type(exc).__name__}: {exc}"
            ) from None
    _check_sqlite(spec)
    import sqlite3

    try:
        return _journal.SQLiteJournal(spec, serializer=chosen)
    except (sqlite3.Error, ValueError) as exc:
        raise UsageError(f"--journal: cannot open {spec!r}: {exc}") from None


# ---------------------------------------------------------------------------------- describing
def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.isoformat(timespec="milliseconds")


def took(record: RunRecord) -> str:
    """How long the run took (empty while it runs): ``0.052 s``, ``3 min 5 s``, ``2 h 5 min``."""
    if record.ended is None:
        return ""
    seconds = max(record.ended - record.created, 0.0)
    if seconds < 60:
        return f"{seconds:.3f} s"
    minutes, second = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {second} s"
    hours, minute = divmod(minutes, 60)
    return f"{hours} h {minute} min"


def _recorded(error: BaseException) -> RecordedError | None:
    """`error` if it is an `rp.RecordedError` (what a journal keeps of an error whose class
    it could not rebuild: its ``type_name`` and ``message``), else None."""
    from ._journal import RecordedError

    return error if isinstance(error, RecordedError) else None


def _error_name(error: BaseException) -> str:
    recorded = _recorded(error)
    return type(error).__name__ if recorded is None else recorded.type_name.rpartition(".")[2]


def _message(error: BaseException) -> str:
    recorded = _recorded(error)
    return str(error) if recorded is None else recorded.message


def _error_text(error: BaseException) -> str:
    """``ValueError: no carrier``; a group, by its members (a `RunFailed`'s step errors)."""
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(_error_text(member) for member in error.exceptions)
    message = _message(error)
    return f"{_error_name(error)}: {message}" if message else _error_name(error)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(record: RunRecord, *, host: str | None = None) -> str:
    """The detail of a run in a listing: its result, its error, who owns it, what to do."""
    from ._journal import owner_alive

    if record.status == "completed":
        return f"-> {record.result!r}"
    if record.status == "failed":
        return _error_text(record.error) if record.error is not None else ""
    if record.status == "halted":
        return "resume or undo it by its id"
    if record.status == "undone":
        return "undone on request"
    owner = record.owner.rsplit(":", 1)[0]  # host:pid (the start time is for machines)
    doing = "undoing" if record.undo_requested else "running"
    if owner_alive(record.owner, host=host):
        return f"{doing} in {owner}"
    return f"{doing} in {owner}, which is gone: recover takes it"


def _qualified(error: BaseException) -> str:
    """``ValueError``, ``reactorpy.RunFailed``, ``billing.CardDeclined``."""
    recorded = _recorded(error)
    if recorded is not None:
        return recorded.type_name
    kind = type(error)
    module = "" if kind.__module__ == "builtins" else kind.__module__ + "."
    return module + kind.__qualname__


def _error_json(error: BaseException) -> dict[str, Any]:
    kind = _qualified(error)
    if isinstance(error, BaseExceptionGroup):
        return {
            "type": kind,
            "message": error.message,
            "exceptions": [_error_json(member) for member in error.exceptions],
        }
    return {"type": kind, "message": _message(error)}


def record_json(record: RunRecord) -> dict[str, Any]:
    """A `RunRecord` as JSON-ready data (times in ISO 8601, UTC)."""
    return {
        "run_id": record.run_id,
        "reactor": record.reactor,
        "status": str(record.status),
        "created": _iso(record.created),
        "updated": _iso(record.updated),
        "ended": _iso(record.ended),
        "owner": record.owner,
        "undo_requested": record.undo_requested,
        "result": record.result,
        "error": None if record.error is None else _error_json(record.error),
    }


def _row(record: RunRecord, host: str | None) -> tuple[str, ...]:
    return (
        record.run_id,
        record.reactor,
        str(record.status),
        _when(record.created),
        took(record),
        describe(record, host=host),
    )


def print_records(
    records: Sequence[RunRecord], *, as_json: bool, out: TextIO, host: str | None = None
) -> None:
    """Print `records`: JSON, a Rich table on a terminal, else one aligned line each
    (coloured when the stream takes colours: ``FORCE_COLOR``)."""
    try:
        if as_json:
            data = [record_json(r) for r in records]
            out.write(json.dumps(data, indent=2, default=repr) + "\n")
            out.flush()
            return
        if not records:
            return
        console, terminal = console_for(out)
        rows = [_row(r, host) for r in records]
        if terminal and console is not None:
            _print_table(rows, console)
        else:
            _print_lines(rows, out, console)
    except (BrokenPipeError, ValueError):  # a reader that went away (`| head -1`)
        silence(out)


_HEADERS: Final = ("run", "reactor", "status", "started", "took", "")


def _print_table(rows: list[tuple[str, ...]], console: Any) -> None:
    """A table as wide as the terminal: run ids are what one copies from it, so the
    detail is cut (with an ellipsis) first, then the start time left out."""
    from rich.table import Table
    from rich.text import Text

    widths = [max(len(_HEADERS[k]), *(len(row[k]) for row in rows)) for k in range(5)]
    shown = [0, 1, 2, 3, 4]
    if console.width - (sum(widths) + 2 * 5) < 12:
        shown.remove(3)  # the start time: a narrow terminal needs the room more
    room = max(console.width - sum(widths[k] + 2 for k in shown), 1)
    table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 2, 0, 0))
    for k in shown:
        table.add_column(
            _HEADERS[k], no_wrap=True, width=widths[k], justify="right" if k == 4 else "left"
        )
    table.add_column("", no_wrap=True, overflow="ellipsis", width=room, style="dim")
    for row in rows:
        cells: list[Any] = [row[k] for k in shown]
        cells[2] = Text(row[2], style=STATUS_STYLES.get(row[2], ""))
        table.add_row(*cells, row[5])
    console.print(table)


def _print_lines(rows: list[tuple[str, ...]], out: TextIO, console: Any) -> None:
    widths = [max((len(row[k]) for row in rows), default=0) for k in range(5)]
    for row in rows:
        cells = [row[k].ljust(widths[k]) for k in range(4)]
        if widths[4]:  # no run has ended: no column of durations
            cells.append(row[4].rjust(widths[4]))
        line = "  ".join([*cells, _short(row[5], _PLAIN_DETAIL)]).rstrip()
        if console is None:
            print(line, file=out, flush=True)
        else:
            from rich.text import Text

            text = Text(line)
            start = len(cells[0]) + len(cells[1]) + 4
            text.stylize(STATUS_STYLES.get(row[2], ""), start, start + len(row[2]))
            console.print(text, soft_wrap=True)


# ---------------------------------------------------------------------------------- commands
def _importable_here() -> None:
    """Like ``python -m``: the current directory is importable, so that values recorded
    as instances of the project's own classes can be read back."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


async def _listed(args: argparse.Namespace) -> tuple[list[RunRecord], str]:
    journal: Journal = await open_journal(args.journal, schema=args.schema)
    async with journal:
        try:
            records = await journal.runs(reactor=args.reactor, status=args.status, limit=args.limit)
        except (ImportError, AttributeError) as exc:
            raise UsageError(
                f"cannot read back a recorded value: {type(exc).__name__}: {exc}; run this "
                "from your project's directory (or set PYTHONPATH) so its modules import."
            ) from None
    return records, journal.host


def runs_command(args: argparse.Namespace) -> int:
    """``reactorpy runs``: list the journal's runs, newest first."""
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be at least 1, got {args.limit}.")
    _importable_here()
    records, host = asyncio.run(_listed(args))
    if not records:
        asked = [f"--{name} {v}" for name in ("status", "reactor") if (v := getattr(args, name))]
        print(f"{PROG}: no runs{' with ' + ' '.join(asked) if asked else ''}.", file=sys.stderr)
    print_records(records, as_json=args.json, out=sys.stdout, host=host)
    return 0


async def _recovered(args: argparse.Namespace, reactor: Any) -> tuple[list[RunRecord], str]:
    journal: Journal = await open_journal(
        args.journal, schema=args.schema, serializer=args.serializer
    )
    async with journal:
        records: list[RunRecord] = await reactor.recover(journal, undo=args.undo)
    return records, journal.host


def _not_recovered(group: ExceptionGroup[Exception], reactor: str) -> int:
    """Report the runs `recover()` could not recover (the others were): each error, with
    the run it was recovering and what to do about it; exit status 1."""
    for error in group.exceptions:
        notes = [n.removeprefix("reactorpy: ") for n in getattr(error, "__notes__", ())]
        where = f"{notes[-1]}: " if notes else ""
        hint = ""
        if isinstance(error, ValueError) and "serializer" in str(error):
            hint = " On the command line, give --serializer json (or pickle)."
        elif isinstance(error, ResumeError):
            hint = " Recover it with the code it was started with."
        print(f"{PROG}: error: {where}{type(error).__name__}: {error}{hint}", file=sys.stderr)
    print(
        f"{PROG}: the other runs of {reactor!r} were recovered: "
        f"`{PROG} runs --journal ... --reactor {reactor}` lists them.",
        file=sys.stderr,
    )
    return 1


def recover_command(args: argparse.Namespace) -> int:
    """``reactorpy recover``: finish, or undo, the runs of a reactor whose process died."""
    reactor = load_reactor(args.target)
    reactor.plan()  # definition errors before the journal is touched
    try:
        records, host = asyncio.run(_recovered(args, reactor))
    except ExceptionGroup as group:  # the runs that could not be recovered (the others were)
        return _not_recovered(group, reactor.name)
    if not records:
        print(
            f"{PROG}: nothing to recover: no unfinished run of {reactor.name!r} has lost its "
            "process.",
            file=sys.stderr,
        )
    print_records(records, as_json=args.json, out=sys.stdout, host=host)
    bad = [r.run_id for r in records if r.status in ("failed", "halted")]
    if bad:
        listed = ", ".join(map(repr, bad))
        print(f"{PROG}: error: recovered runs that did not complete: {listed}.", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------------- parsing
def _journal_options(parser: argparse.ArgumentParser) -> None:
    """``--journal`` (``$REACTORPY_JOURNAL`` by default), ``--schema`` and ``--json``."""
    default = os.environ.get("REACTORPY_JOURNAL") or None
    parser.add_argument(
        "--journal",
        metavar="PATH|DSN",
        default=default,
        required=default is None,
        help="the journal: an SQLite file (rp.SQLiteJournal), or a postgresql:// DSN "
        "(rp.PostgresJournal, needs reactorpy[postgres]); default: $REACTORPY_JOURNAL",
    )
    parser.add_argument(
        "--schema",
        default="public",
        help="the PostgreSQL schema of the journal's tables (default: public)",
    )
    parser.add_argument("--json", action="store_true", help="print the runs as JSON")


def add_commands(sub: Any) -> None:
    """Add the ``runs`` and ``recover`` commands to the CLI's subparsers `sub`."""
    runs = sub.add_parser(
        "runs",
        help="list the runs of a journal",
        description="List the runs a journal holds, newest first: a table on a terminal "
        "(with reactorpy[cli]), else one line per run. The journal must exist; nothing is "
        "created or changed.",
    )
    _journal_options(runs)
    runs.add_argument("--status", choices=STATUSES, help="only the runs in this status")
    runs.add_argument("--reactor", metavar="NAME", help="only the runs of this reactor")
    runs.add_argument("--limit", type=int, metavar="N", help="at most N runs (the newest)")
    runs.set_defaults(handler=runs_command)

    recover = sub.add_parser(
        "recover",
        help="finish (or undo) the runs of a reactor whose process died",
        description="Recover the unfinished runs of the reactor MODULE:ATTR whose process "
        "is gone (a dead process on this host at once; elsewhere once its lease expires): "
        "each goes on from what it completed, or is undone with --undo. Prints how each "
        "recovered run ended.",
    )
    recover.add_argument("target", metavar="MODULE:ATTR", help="e.g. package.flows:checkout")
    _journal_options(recover)
    recover.add_argument(
        "--undo", action="store_true", help="undo the runs instead of finishing them"
    )
    recover.add_argument(
        "--serializer",
        choices=("pickle", "json"),
        default="pickle",
        help="what the runs were recorded with (default: pickle)",
    )
    recover.set_defaults(handler=recover_command)
