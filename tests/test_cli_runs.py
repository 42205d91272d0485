"""Tests for the durable-run commands (`reactorpy._cli_runs`): ``python -m reactorpy runs``
and ``recover``, on real SQLite files (and a PostgreSQL server when the suite has one), with
runs left unfinished by processes that really died (``tests/examples/journaled.py``)."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import reactorpy as rp
from reactorpy import cli
from tests.examples.journaled import orders

ROOT = Path(__file__).resolve().parent.parent
TARGET = "tests.examples.journaled:orders"
DSN_VARIABLE = "REACTORPY_TEST_POSTGRES_DSN"


def run_cli(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m reactorpy ARGS``, capturing its output."""
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1", **env}
    environ.pop("REACTORPY_JOURNAL", None)
    return subprocess.run(
        [sys.executable, "-m", "reactorpy", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def crash(journal: str, run_id: str, n: int, *schema: str) -> None:
    """Start order `n` as `run_id` in a process that dies in ``ship``, after ``reserve``
    completed: the run stays ``running`` in `journal`, its owner dead."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CRASH_IN_SHIP": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.examples.journaled", journal, run_id, str(n), *schema],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 17 == proc.returncode, proc.stderr  # os._exit(17) in ship


async def ended_runs(journal: rp.Journal) -> None:
    """A completed run (``ok``), then a failed one (``bad``)."""
    await orders.run({"n": 1}, journal=journal, run_id="ok")
    with pytest.raises(rp.RunFailed):
        await orders.run({"n": -1}, journal=journal, run_id="bad")


@pytest.fixture
def journal_file(tmp_path: Path) -> Path:
    """An SQLite journal holding, oldest first: ``ok`` (completed), ``bad`` (failed) and
    ``lost`` (running, its process dead)."""

    async def fill() -> None:
        async with rp.SQLiteJournal(tmp_path / "runs.db") as journal:
            await ended_runs(journal)

    asyncio.run(fill())
    crash(str(tmp_path / "runs.db"), "lost", 3)
    return tmp_path / "runs.db"


@pytest.fixture
def quiet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process CLI calls: plain uncoloured lines, no journal from the environment."""
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("REACTORPY_JOURNAL", raising=False)


async def records(path: Path) -> dict[str, rp.RunRecord]:
    async with rp.SQLiteJournal(path) as journal:
        return {r.run_id: r for r in await journal.runs()}


# ---------------------------------------------------------------------------------- runs
def test_runs_prints_a_line_per_run_newest_first(journal_file: Path) -> None:
    """Off a terminal, `runs` prints one aligned line per run, newest first: its id,
    reactor, status, start, duration and what it came to (result, error, owner)."""
    proc = run_cli("runs", "--journal", str(journal_file))
    assert (0, "") == (proc.returncode, proc.stderr)
    lines = proc.stdout.splitlines()
    assert ["lost", "bad", "ok"] == [line.split()[0] for line in lines]
    assert ["running", "failed", "completed"] == [line.split()[2] for line in lines]
    lost, bad, ok = lines
    assert re.search(r"running in [^ ]+:\d+, which is gone: recover takes it$", lost)
    assert bad.endswith(" s  ValueError: cannot ship order -1")
    assert ok.endswith(" s  -> 'shipped 1 (hold-1)'")
    assert len({line.index(line.split()[2]) for line in lines}) == 1  # aligned columns
    assert "\x1b" not in proc.stdout


def test_runs_filters_by_status_and_reactor_and_limits(
    journal_file: Path, quiet_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """--status, --reactor and --limit select what `journal.runs()` selects."""
    journal = ["--journal", str(journal_file)]
    assert 0 == cli.main(["runs", *journal, "--status", "failed"])
    assert ["bad"] == [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert 0 == cli.main(["runs", *journal, "--limit", "2"])
    assert ["lost", "bad"] == [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert 0 == cli.main(["runs", *journal, "--reactor", "orders", "--status", "halted"])
    out, err = capsys.readouterr()
    assert ("", "reactorpy: no runs with --status halted --reactor orders.\n") == (out, err)
    assert 0 == cli.main(["runs", *journal, "--reactor", "elsewhere", "--json"])
    assert [] == json.loads(capsys.readouterr().out)


def test_runs_json_is_what_the_journal_records(journal_file: Path) -> None:
    """`runs --json` prints each record: status, times (ISO 8601), owner, the result, and
    the error with the step errors of a RunFailed."""
    proc = run_cli("runs", "--journal", str(journal_file), "--json")
    assert 0 == proc.returncode, proc.stderr
    listed = {item["run_id"]: item for item in json.loads(proc.stdout)}
    held = asyncio.run(records(journal_file))
    assert set(held) == set(listed)
    for run_id, record in held.items():
        item = listed[run_id]
        assert record.status.value == item["status"]
        assert record.owner == item["owner"]
        assert record.undo_requested == item["undo_requested"]
        created = datetime.datetime.fromisoformat(item["created"])
        assert record.created == pytest.approx(created.timestamp(), abs=1e-3)
    assert "shipped 1 (hold-1)" == listed["ok"]["result"]
    assert listed["lost"]["ended"] is None
    assert {
        "type": "reactorpy.RunFailed",
        "message": "reactor 'orders' failed in step(s) ship",
        "exceptions": [{"type": "ValueError", "message": "cannot ship order -1"}],
    } == listed["bad"]["error"]


def test_runs_draws_a_table_as_wide_as_the_terminal(
    journal_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal, `runs` draws a Rich table with a header; in a narrow one the detail is
    cut with an ellipsis, then the start time is left out, and run ids stay whole."""
    pytest.importorskip("rich")

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.delenv("NO_COLOR", raising=False)
    for width in (120, 70, 40):
        monkeypatch.setenv("COLUMNS", str(width))
        screen = Terminal()
        monkeypatch.setattr(sys, "stdout", screen)
        assert 0 == cli.main(["runs", "--journal", str(journal_file)])
        lines = re.sub(r"\x1b\[[0-9;]*m", "", screen.getvalue()).splitlines()
        assert ["run", "reactor", "status"] == lines[0].split()[:3]
        assert ["lost", "bad", "ok"] == [line.split()[0] for line in lines[1:]]
        assert all(len(line) <= width for line in lines)
        assert ("started" in lines[0]) == (width >= 70)
        if width == 120:
            assert "ValueError: cannot ship order -1" in lines[2]
        else:
            assert "…" in lines[1]


def test_runs_colours_the_status_when_asked(journal_file: Path) -> None:
    """FORCE_COLOR colours the status of the plain lines (as it does the run progress)."""
    pytest.importorskip("rich")
    proc = run_cli("runs", "--journal", str(journal_file), FORCE_COLOR="1", NO_COLOR="")
    assert 0 == proc.returncode, proc.stderr
    assert "\x1b[" in proc.stdout
    plain = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout)
    assert ["lost", "bad", "ok"] == [line.split()[0] for line in plain.splitlines()]


def test_runs_reads_the_journal_named_by_the_environment(
    journal_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --journal, REACTORPY_JOURNAL names the journal (a DSN stays off the command
    line, and out of `ps`)."""
    monkeypatch.setenv("REACTORPY_JOURNAL", str(journal_file))
    monkeypatch.setenv("NO_COLOR", "1")
    assert 0 == cli.main(["runs", "--status", "completed"])
    assert "ok" == capsys.readouterr().out.split()[0]


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (None, "no such file"),
        (lambda p: p.mkdir(), "is not a file"),
        (lambda p: p.write_bytes(b""), "is an SQLite database but not a reactorpy journal"),
        (lambda p: p.write_text("not sql"), "cannot read"),
        (
            lambda p: sqlite3.connect(p).execute("CREATE TABLE orders (id)").connection.commit(),
            "is an SQLite database but not a reactorpy journal",
        ),
    ],
)
def test_runs_and_recover_never_create_a_journal(
    tmp_path: Path, make: Any, fragment: str, quiet_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing file, a directory, or a file that holds no journal is an error (exit 2),
    and is left as it was: listing or recovering never creates a database."""
    path = tmp_path / "runs.db"
    if make is not None:
        make(path)
    before = sorted(tmp_path.rglob("*"))
    content = path.read_bytes() if path.is_file() else None
    assert 2 == cli.main(["runs", "--journal", str(path)])
    assert 2 == cli.main(["recover", TARGET, "--journal", str(path)])
    for line in capsys.readouterr().err.splitlines():
        assert line.startswith("reactorpy: error: --journal: ")
        assert fragment in line
    assert before == sorted(tmp_path.rglob("*"))
    if content is not None:
        assert content == path.read_bytes()


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--status", "runing"], "invalid choice: 'runing'"),
        (["--limit", "0"], "--limit must be at least 1, got 0."),
        ([], "the following arguments are required: --journal"),
    ],
)
def test_runs_usage_errors_exit_2(
    journal_file: Path,
    argv: list[str],
    fragment: str,
    quiet_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An unknown status, a limit below 1, no journal at all: exit 2, one message."""
    journal = [] if not argv else ["--journal", str(journal_file)]
    assert 2 == cli.main(["runs", *journal, *argv])
    assert fragment in capsys.readouterr().err


def test_runs_says_how_to_read_values_of_the_projects_own_classes(tmp_path: Path) -> None:
    """A result whose class is not importable where `runs` runs: exit 2, saying to run it
    from the project's directory; from there, it is listed."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "shop.py").write_text(
        "import dataclasses\n"
        "import reactorpy as rp\n\n"
        "@dataclasses.dataclass\n"
        "class Receipt:\n"
        "    order: int\n\n"
        "shop = rp.Reactor('shop', inputs=['n'], returns='pay')\n\n"
        "@shop.step\n"
        "def pay(n):\n"
        "    return Receipt(n)\n"
    )
    script = (
        "import asyncio, reactorpy as rp, shop\n"
        "async def main():\n"
        "    async with rp.SQLiteJournal('runs.db') as j:\n"
        "        await shop.shop.run({'n': 7}, journal=j, run_id='paid')\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=project, check=True, timeout=60)
    elsewhere = run_cli("runs", "--journal", str(project / "runs.db"), cwd=tmp_path)
    assert 2 == elsewhere.returncode
    assert "No module named 'shop'" in elsewhere.stderr
    assert "run this from your project's directory" in elsewhere.stderr
    here = run_cli("runs", "--journal", "runs.db", cwd=project)
    assert 0 == here.returncode, here.stderr
    assert here.stdout.rstrip().endswith("-> Receipt(order=7)")


# ---------------------------------------------------------------------------------- recover
def test_recover_finishes_the_runs_whose_process_died(
    journal_file: Path, quiet_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """`recover MODULE:ATTR` finishes the runs of that reactor whose process died and prints
    how each ended (exit 0); run again, there is nothing left to recover."""
    crash(str(journal_file), "lost-too", 4)
    assert 0 == cli.main(["recover", TARGET, "--journal", str(journal_file)])
    out, err = capsys.readouterr()
    assert "" == err
    held = asyncio.run(records(journal_file))
    assert ["lost", "lost-too"] == [line.split()[0] for line in out.splitlines()]  # oldest first
    for line in out.splitlines():
        record = held[line.split()[0]]
        assert rp.RunStatus.COMPLETED == record.status
        assert line.endswith(f"-> {record.result!r}")
    assert "shipped 3 (hold-3)" == held["lost"].result
    assert 0 == cli.main(["recover", TARGET, "--journal", str(journal_file), "--json"])
    out, err = capsys.readouterr()
    assert [] == json.loads(out)
    assert "nothing to recover: no unfinished run of 'orders' has lost its process" in err


def test_recover_undo_undoes_them(
    journal_file: Path, quiet_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """`recover --undo` undoes what the runs completed; they end ``undone``."""
    assert 0 == cli.main(["recover", TARGET, "--journal", str(journal_file), "--undo", "--json"])
    (item,) = json.loads(capsys.readouterr().out)
    assert ("lost", "undone") == (item["run_id"], item["status"])
    held = asyncio.run(records(journal_file))
    assert rp.RunStatus.UNDONE == held["lost"].status
    assert rp.RunStatus.COMPLETED == held["ok"].status  # ended runs are left alone


def test_recover_exits_1_when_a_recovered_run_fails(
    tmp_path: Path, quiet_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A recovered run whose step fails ends ``failed`` (its completed steps undone): it is
    listed, and the command exits 1 naming it."""
    path = tmp_path / "runs.db"
    crash(str(path), "doomed", -2)
    assert 1 == cli.main(["recover", TARGET, "--journal", str(path)])
    out, err = capsys.readouterr()
    assert out.startswith("doomed  orders  failed")
    assert out.rstrip().endswith("ValueError: cannot ship order -2")
    assert "reactorpy: error: recovered runs that did not complete: 'doomed'.\n" == err


def test_recover_names_the_runs_a_changed_reactor_cannot_continue(
    tmp_path: Path,
    quiet_env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Runs whose completed steps were rewired since cannot be continued: each is named on
    stderr, and the command exits 1."""
    path = tmp_path / "runs.db"
    crash(str(path), "old", 5)
    changed = rp.Reactor("orders", inputs=["n"], returns="ship")
    changed.step(lambda: "hold", name="reserve")  # no longer reads n
    changed.step(lambda n, reserve: n, name="ship")
    module = type(sys)("changed_orders")
    module.orders = changed  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "changed_orders", module)
    assert 1 == cli.main(["recover", "changed_orders:orders", "--journal", str(path)])
    first, last = capsys.readouterr().err.splitlines()
    assert first.startswith(
        "reactorpy: error: recovering run 'old': ResumeError: Run 'old' of 'orders' cannot be "
        "continued: the steps it completed were removed or rewired since: 'reserve'."
    )
    assert first.endswith("Recover it with the code it was started with.")
    assert "the other runs of 'orders' were recovered" in last


def test_recover_reports_a_journal_of_another_serializer(
    tmp_path: Path, quiet_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Runs recorded as JSON need --serializer json; without it, exit 1 saying so."""
    path = tmp_path / "runs.db"

    async def lose() -> None:  # a run recorded as JSON, whose owner is gone
        async with rp.SQLiteJournal(path, serializer=rp.JsonSerializer(), host="gone") as j:
            ser = j.serializer
            await j.create_run("j", "orders", orders.plan().fingerprint, ser.dumps({"n": 6}))

    asyncio.run(lose())  # closing released the lease: claimable at once
    assert 1 == cli.main(["recover", TARGET, "--journal", str(path)])
    assert "give --serializer json" in capsys.readouterr().err
    assert 0 == cli.main(["recover", TARGET, "--journal", str(path), "--serializer", "json"])
    assert capsys.readouterr().out.startswith("j  orders  completed")


def test_recover_of_a_target_that_is_not_a_reactor_exits_2(
    journal_file: Path, quiet_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """`recover` loads its target as `run` does: a wrong one is a usage error."""
    argv = ["recover", "tests.examples.journaled:nope", "--journal", str(journal_file)]
    assert 2 == cli.main(argv)
    assert "has no attribute 'nope'" in capsys.readouterr().err
    held = asyncio.run(records(journal_file))
    assert rp.RunStatus.RUNNING == held["lost"].status


# ---------------------------------------------------------------------------------- postgres
@pytest.fixture
def postgres_schema() -> Iterator[tuple[str, str]]:
    """A DSN and a fresh schema (dropped afterwards); skips without a server, as
    tests/test_journal.py does."""
    dsn = os.environ.get(DSN_VARIABLE)
    if not dsn:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {DSN_VARIABLE} is not (see .ci/postgres.sh)")
        pytest.skip(f"{DSN_VARIABLE} is unset: no PostgreSQL server to test against")
    schema = f"cli_{uuid.uuid4().hex[:12]}"
    yield dsn, schema
    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


def test_runs_and_recover_with_a_postgres_dsn(
    postgres_schema: tuple[str, str], quiet_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--journal postgresql://...` (with --schema) lists and recovers as with SQLite; a
    schema without a journal is an error, and none is created in it."""
    dsn, schema = postgres_schema
    target = ["--journal", dsn, "--schema", schema]
    assert 2 == cli.main(["runs", *target])
    assert f"schema {schema!r} of" in capsys.readouterr().err
    crash(dsn, "lost", 8, schema)
    assert 0 == cli.main(["runs", *target])
    assert capsys.readouterr().out.startswith("lost  orders  running")
    assert 0 == cli.main(["recover", TARGET, *target])
    assert capsys.readouterr().out.startswith("lost  orders  completed")
    assert 0 == cli.main(["runs", *target, "--json"])
    (item,) = json.loads(capsys.readouterr().out)
    assert "shipped 8 (hold-8)" == item["result"]


def test_an_unreachable_postgres_exits_2_without_showing_the_password(
    quiet_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database that cannot be reached is one message, exit 2, with the password hidden."""
    pytest.importorskip("asyncpg")
    dsn = "postgresql://app:s3cret@127.0.0.1:1/app"
    assert 2 == cli.main(["runs", "--journal", dsn])
    err = capsys.readouterr().err
    assert "cannot connect to postgresql://app:***@127.0.0.1:1/app" in err
    assert "s3cret" not in err


def test_the_other_commands_load_no_journal() -> None:
    """`run` and `graph` never import the journal's modules, sqlite3 or asyncpg (the
    parser names the statuses itself): only opening a journal does."""
    code = (
        "import sys\n"
        "from reactorpy import cli\n"
        "assert 0 == cli.main(['graph', 'reactorpy.examples.seed:user_data'])\n"
        "loaded = {'sqlite3', 'asyncpg', 'reactorpy._journal', 'reactorpy._recovery'}\n"
        "print(sorted(loaded & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.endswith("[]\n")


def test_the_status_choices_are_the_run_statuses() -> None:
    """`runs --status` offers exactly `rp.RunStatus`'s values."""
    from reactorpy._cli_runs import STATUSES

    assert tuple(s.value for s in rp.RunStatus) == STATUSES
