"""Tests for the command line (`reactorpy.cli`, ``python -m reactorpy``) and the seed demo."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import reactorpy as rp
from reactorpy import cli
from reactorpy.examples import seed
from reactorpy.testing import run_virtual

ROOT = Path(__file__).resolve().parent.parent
SIMPLE = "tests.examples.simple"
GREETING_INPUTS = ("-i", "name=Ada", "-i", "times=3")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m reactorpy ARGS`` from the project root, capturing its output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "reactorpy", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def in_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in-process CLI calls from the project root, as a user would."""
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))


def assert_one_clean_error(proc: subprocess.CompletedProcess[str], status: int) -> str:
    """Assert the exit status and a single-message stderr without a traceback."""
    assert status == proc.returncode, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("reactorpy: error: ")
    return proc.stderr


# ---------------------------------------------------------------------------------- run
def test_run_prints_steps_and_result_when_not_a_terminal() -> None:
    """`run` off a terminal prints one plain line per finished step, then the result."""
    proc = run_cli("run", f"{SIMPLE}:greeting", "--input", "name=Ada", "--input", "times=3")
    assert 0 == proc.returncode, proc.stderr
    lines = proc.stdout.splitlines()
    assert {"hello", "count", "shout"} == {line.split()[1] for line in lines[:3]}
    assert all(line.split()[0] == "done" for line in lines[:3])
    assert "\x1b" not in proc.stdout
    assert "{'text': 'HELLO ADA', 'count': 6}" == lines[3]
    assert "" == proc.stderr


def test_run_json_keeps_stdout_pure_json() -> None:
    """`run --json` prints only the JSON result on stdout; progress goes to stderr."""
    proc = run_cli("run", f"{SIMPLE}:greeting", "-i", "name=Ada", "-i", "times=3", "--json")
    assert 0 == proc.returncode, proc.stderr
    assert {"text": "HELLO ADA", "count": 6} == json.loads(proc.stdout)
    assert "done shout" in " ".join(proc.stderr.split())


def test_run_loads_a_file_path(in_root: None, capsys: pytest.CaptureFixture[str]) -> None:
    """`run path/to/file.py:ATTR` loads the reactor from a file."""
    status = cli.main(
        ["run", "tests/examples/simple.py:greeting", "-i", "name=x", "-i", "times=1", "-q"]
    )
    out = capsys.readouterr()
    assert (0, "{'text': 'HELLO X', 'count': 2}\n") == (status, out.out)


def test_run_module_with_one_reactor_needs_no_attr(
    in_root: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run MODULE` picks the module's reactor when it has exactly one."""
    status = cli.main(["run", "reactorpy.examples.seed", "-q", "--json", "-i", "user_id=7"])
    assert 0 == status
    assert "User 7 has 42 logins" == json.loads(capsys.readouterr().out)["summary"]


def test_run_max_concurrency_is_passed(in_root: None, capsys: pytest.CaptureFixture[str]) -> None:
    """`--max-concurrency 1` runs the reactor with a cap of one step at a time."""
    status = cli.main(
        ["run", f"{SIMPLE}:greeting", "-i", "name=a", "-i", "times=2", "--max-concurrency", "1"]
    )
    assert 0 == status
    assert "'count': 4" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        (["n=3"], {"n": 3}),
        (["s=Ada"], {"s": "Ada"}),
        (['s="3"'], {"s": "3"}),
        (["xs=[1, 2]", "m={}"], {"xs": [1, 2], "m": {}}),
        (["b=true", "z=null", "e="], {"b": True, "z": None, "e": ""}),
        (["eq=a=b"], {"eq": "a=b"}),
    ],
)
def test_inputs_are_json_when_valid_else_strings(
    pairs: list[str], expected: dict[str, Any]
) -> None:
    """--input values are decoded as JSON when they are valid JSON, else kept as strings."""
    assert expected == cli.parse_inputs(pairs)


@pytest.mark.parametrize("pairs", [["novalue"], ["=1"], ["a=1", "a=2"]])
def test_malformed_inputs_are_usage_errors(pairs: list[str]) -> None:
    """An --input without '=', with an empty key, or given twice is a usage error."""
    with pytest.raises(cli.UsageError, match="--input"):
        cli.parse_inputs(pairs)


# ---------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        ("tests.examples.nope:greeting", "No module named 'tests.examples.nope'"),
        (f"{SIMPLE}:greting", "Did you mean 'greeting'?"),
        (f"{SIMPLE}:not_a_reactor", "is an int, not a reactorpy.Reactor"),
        (SIMPLE, "has 4 reactors"),
        (f"{SIMPLE}:", "Expected MODULE:ATTR"),
        ("tests/examples/missing.py:x", "No such file"),
        (f"{SIMPLE}:cyclic", "ping -> pong -> ping"),
    ],
)
def test_bad_targets_exit_2_with_one_message(
    in_root: None, capsys: pytest.CaptureFixture[str], target: str, fragment: str
) -> None:
    """A target that cannot be loaded, is not a Reactor, or is defined wrongly exits 2."""
    status = cli.main(["run", target])
    err = capsys.readouterr().err
    assert 2 == status
    assert fragment in err
    assert 1 == len(err.strip().splitlines())


def test_bad_module_path_exits_2_without_traceback() -> None:
    """A module that does not exist gives one message on stderr and exit status 2."""
    err = assert_one_clean_error(run_cli("run", "no_such_module:flow"), 2)
    assert "No module named 'no_such_module'" in err


def test_missing_attribute_exits_2_without_traceback() -> None:
    """A missing attribute exits 2 and suggests the close name and the reactors available."""
    err = assert_one_clean_error(run_cli("graph", f"{SIMPLE}:greting"), 2)
    assert "Did you mean 'greeting'?" in err
    assert "'broken', 'cyclic', 'greeting', 'pausing'" in err


def test_unknown_and_missing_inputs_exit_2() -> None:
    """Unknown or missing inputs (rp.InputError) exit 2 naming them and how to pass them."""
    proc = run_cli("run", f"{SIMPLE}:greeting", "-i", "nme=Ada")
    err = assert_one_clean_error(proc, 2)
    assert "missing input(s) 'name', 'times'" in err
    assert "Did you mean 'name'?" in err
    assert "--input KEY=VALUE" in err
    assert "" == proc.stdout


def test_failed_run_exits_1_after_undo() -> None:
    """A failing run (rp.RunFailed) undoes, then exits 1 naming the step and its error."""
    proc = run_cli("run", f"{SIMPLE}:broken", "-i", "n=7")
    err = assert_one_clean_error(proc, 1)
    assert "failed in step(s) explode" in err
    assert "ValueError: boom 7" in err
    assert "released 7" in proc.stdout
    assert ["done", "failed", "undone"] == [
        line.split()[0] for line in proc.stdout.splitlines() if not line.startswith("released")
    ]


def test_halted_run_exits_1(in_root: None, capsys: pytest.CaptureFixture[str]) -> None:
    """A halted run (rp.Halted) exits 1 with the halting step and reason."""
    status = cli.main(["run", f"{SIMPLE}:pausing"])
    err = capsys.readouterr().err
    assert 1 == status
    assert "halted by step 'wait': 'waiting for approval'" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """No command, or a bad option, is an argparse usage error with exit status 2."""
    assert 2 == cli.main([])
    assert 2 == cli.main(["run", "x:y", "--max-concurrency", "many"])
    assert 2 == cli.main(["run", f"{SIMPLE}:greeting", "--max-concurrency", "0"])
    assert "usage: reactorpy" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- trace
def test_trace_writes_chrome_trace_json(
    in_root: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--trace FILE` writes the run's timeline as trace-event JSON."""
    pytest.importorskip("reactorpy._trace", reason="reactorpy._trace (rp.Trace) is not written yet")
    out = tmp_path / "trace.json"
    argv = ["run", f"{SIMPLE}:greeting", "-i", "name=a", "-i", "times=1", "-q", "--trace"]
    assert 0 == cli.main([*argv, str(out)])
    trace = json.loads(out.read_text())
    assert "traceEvents" in trace
    assert {"hello", "count", "shout"} <= {e.get("name") for e in trace["traceEvents"]}


def test_trace_is_written_for_failed_runs_too(
    in_root: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failed run still writes its trace before exiting 1."""
    pytest.importorskip("reactorpy._trace", reason="reactorpy._trace (rp.Trace) is not written yet")
    out = tmp_path / "trace.json"
    assert 1 == cli.main(["run", f"{SIMPLE}:broken", "-i", "n=1", "-q", "--trace", str(out)])
    assert "traceEvents" in json.loads(out.read_text())


# ---------------------------------------------------------------------------------- graph
def test_graph_dot_draws_inputs_steps_edges_and_return(
    in_root: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """`graph --format dot` prints a DOT digraph of inputs, steps, labelled edges, return."""
    assert 0 == cli.main(["graph", "reactorpy.examples.seed:user_data", "--format", "dot"])
    dot = capsys.readouterr().out
    assert dot.startswith('digraph "async_user_data" {\n  rankdir=TB;')
    assert '"user_id" [shape=ellipse, style=dashed];' in dot
    assert '"user_id" -> "fetch_profile" [label="user_id"];' in dot
    assert '"fetch_activity" -> "aggregate_data" [label="fetch_activity"];' in dot
    assert '"aggregate_data" -> "__return__";' in dot
    assert dot.rstrip().endswith("}")


def test_dot_escapes_quotes_and_dashes_wait_for() -> None:
    """DOT ids are quoted and escaped, and wait_for edges are dashed."""
    r = rp.Reactor('say "hi"', returns="b")

    @r.step(name='a"1')
    def a() -> int:
        return 1

    @r.step(wait_for='a"1')
    def b() -> int:
        return 2

    dot = cli.to_dot(r, direction="LR")
    assert 'digraph "say \\"hi\\"" {' in dot
    assert '"a\\"1" -> "b" [style=dashed];' in dot
    assert "rankdir=LR;" in dot


def test_graph_mermaid(in_root: None, capsys: pytest.CaptureFixture[str]) -> None:
    """`graph` prints the reactor's Mermaid flowchart by default."""
    pytest.importorskip("reactorpy._mermaid", reason="reactorpy._mermaid is not written yet")
    assert 0 == cli.main(["graph", "reactorpy.examples.seed:user_data"])
    out = capsys.readouterr().out
    assert "fetch_profile" in out
    assert "aggregate_data" in out


# ---------------------------------------------------------------------------------- live
def read_pty(fd: int, proc: subprocess.Popen[bytes]) -> bytes:
    """Read everything the child writes to the pseudo-terminal until it exits."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    return b"".join(chunks)


def test_run_on_a_terminal_redraws_progress_in_place() -> None:
    """On a terminal, `run` redraws a step table in place with ANSI codes, ending all done."""
    pty = pytest.importorskip("pty", reason="needs a POSIX pseudo-terminal")
    leader, follower = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100", "LINES": "40"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "reactorpy", "run", f"{SIMPLE}:greeting", *GREETING_INPUTS],
        cwd=ROOT,
        env=env,
        stdin=follower,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    try:
        output = read_pty(leader, proc).decode()
    finally:
        os.close(leader)
        proc.wait(timeout=60)
    assert 0 == proc.returncode, output
    assert "\x1b[?25l" in output  # cursor hidden while drawing
    assert "\x1b[4F" in output  # moved up over the 4-line table (header + 3 steps) to redraw
    assert "\x1b[2K" in output  # each line cleared before it is rewritten
    final = output.rsplit("\x1b[4F", 1)[1]
    assert "greeting:  3 done" in final
    for step in ("hello", "count", "shout"):
        assert f"done  {step}" in final
    assert "\x1b[32m" in final  # done rows in green
    assert final.index("\x1b[?25h") < final.index("{'text': 'HELLO ADA', 'count': 6}")


def test_live_progress_shows_failures_and_truncates(monkeypatch: pytest.MonkeyPatch) -> None:
    """The live table marks failed and undone steps and never wraps a line."""
    import io

    monkeypatch.setenv("COLUMNS", "30")
    monkeypatch.setenv("LINES", "10")
    stream = io.StringIO()
    live = cli.LiveProgress(stream, colour=False)
    r = rp.Reactor("broken_" + "x" * 40, inputs=["n"])

    @r.step
    def first_step_with_a_long_name(n: int) -> int:
        return n

    @first_step_with_a_long_name.undo
    def _undo(value: int) -> None:
        pass

    @r.step
    def second(first_step_with_a_long_name: int) -> int:
        raise ValueError("nope")

    with pytest.raises(rp.RunFailed):
        run_virtual(r.run({"n": 1}, middleware=[live]))
    live.close()
    final = stream.getvalue().rsplit("\x1b[3F", 1)[1]
    assert all(len(line.replace("\x1b[2K", "")) <= 29 for line in final.splitlines()[:-1])
    assert "failed  second" in final
    assert "undone  first_step" in final


# ---------------------------------------------------------------------------------- demo
def test_demo_command_prints_both_times_and_the_result() -> None:
    """`demo` prints the concurrent and sequential wall times and the aggregated result."""
    proc = run_cli("demo")
    assert 0 == proc.returncode, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("concurrent run:")
    assert lines[0].split()[2].replace(".", "").isdigit()
    assert lines[1].startswith("sequential run (async_=False):")
    assert "summary: User 123 has 42 logins" == lines[2]
    result = json.loads("\n".join(lines[3:]))
    assert {"profile", "preferences", "activity", "summary"} == set(result)


def test_demo_on_the_virtual_clock_takes_the_critical_path_then_the_sum(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """On a virtual clock the demo's runs take exactly 0.30 s and 0.65 s of loop time."""
    result = run_virtual(seed.demo(5))
    out = capsys.readouterr().out.splitlines()
    assert "0.30 s" == " ".join(out[0].split()[2:4])
    assert "0.65 s" == " ".join(out[1].split()[3:5])
    assert {
        "profile": {"id": 5, "name": "User 5", "email": "user5@example.com"},
        "preferences": {"user_id": 5, "theme": "light", "language": "en"},
        "summary": "User 5 has 42 logins",
    } == {k: v for k, v in result.items() if k != "activity"}
    assert 42 == result["activity"]["login_count"]
    assert "+00:00" in result["activity"]["last_login"]


def test_seed_steps_run_concurrently_and_in_sequence() -> None:
    """The seed fetches overlap in a normal run and never overlap with async_=False."""
    from reactorpy.testing import Recorder

    rec = Recorder()
    run_virtual(seed.user_data.run({"user_id": 1}, middleware=[rec]))
    rec.assert_overlap("fetch_profile", "fetch_activity")
    rec.assert_before("fetch_activity", "aggregate_data")
    seq = Recorder()
    run_virtual(seed.user_data.run({"user_id": 1}, async_=False, middleware=[seq]))
    seq.assert_before("fetch_profile", "fetch_preferences")
    seq.assert_before("fetch_preferences", "fetch_activity")


def test_import_failures_exit_2_with_the_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A module that raises, or needs a missing package, exits 2 saying why."""
    (tmp_path / "raising_flow.py").write_text("raise RuntimeError('bad config')\n")
    (tmp_path / "needy_flow.py").write_text("import not_installed_pkg\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert 2 == cli.main(["run", str(tmp_path / "raising_flow.py") + ":flow"])
    assert 2 == cli.main(["run", "raising_flow:flow"])
    assert 2 == cli.main(["run", "needy_flow:flow"])
    err = capsys.readouterr().err.splitlines()
    assert "raised RuntimeError: bad config" in err[0]
    assert "raised RuntimeError: bad config" in err[1]
    assert "No module named 'not_installed_pkg'" in err[2]
    assert "needs something missing" in err[2]


def test_unwritable_trace_file_exits_2(
    in_root: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --trace path that cannot be written is reported in one line, exit 2."""
    pytest.importorskip("reactorpy._trace", reason="reactorpy._trace (rp.Trace) is not written yet")
    bad = tmp_path / "missing-dir" / "t.json"
    argv = ["run", f"{SIMPLE}:greeting", "-q", "-i", "name=a", "-i", "times=1"]
    assert 2 == cli.main([*argv, "--trace", str(bad)])
    assert f"cannot write {bad}" in capsys.readouterr().err


def test_plain_progress_reports_retries_and_skips() -> None:
    """Plain progress prints a line for each retry and each skipped step."""
    import io

    r = rp.Reactor("retrying", returns="flaky")
    calls: list[int] = []

    @r.step(retries=1, retry_on=ConnectionError)
    def flaky() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("blip")
        return 1

    @r.step(when=lambda: False)
    def skipped() -> int:
        return 2

    stream = io.StringIO()
    assert 1 == run_virtual(r.run(middleware=[cli.PlainProgress(stream)]))
    lines = [line.split()[:2] for line in stream.getvalue().splitlines()]
    assert ["retrying", "flaky:"] in lines  # followed by the error
    assert ["done", "flaky"] in lines
    assert ["skipped", "skipped"] in lines
    assert "ConnectionError: blip" in stream.getvalue()
    assert "(attempt 2)" in stream.getvalue()
