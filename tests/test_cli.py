"""Tests for the command line (`reactorpy.cli`, ``python -m reactorpy``) and the seed demo."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
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
EXTRA = "tests.examples.cli_extra"
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
    assert lines[3].startswith("    total greeting: completed in ")
    assert lines[3].endswith(" s (3 done)")
    assert "{'text': 'HELLO ADA', 'count': 6}" == lines[4]
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
    assert ["done", "failed", "undone", "total"] == [
        line.split()[0] for line in proc.stdout.splitlines() if not line.startswith("released")
    ]
    assert "total broken: failed in " in proc.stdout


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


def run_on_pty(
    *args: str, env: dict[str, str] | None = None, stdout_pipe: bool = False
) -> tuple[str, str, int]:
    """Run ``python -m reactorpy ARGS`` with a pseudo-terminal as its stderr (and stdout,
    unless `stdout_pipe`); return what the terminal showed, stdout if piped, the status."""
    pty = pytest.importorskip("pty", reason="needs a POSIX pseudo-terminal")
    leader, follower = pty.openpty()
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100", "LINES": "40"}
    full_env.pop("NO_COLOR", None)
    full_env.pop("FORCE_COLOR", None)
    full_env["TERM"] = "xterm-256color"
    full_env.update(env or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "reactorpy", *args],
        cwd=ROOT,
        env=full_env,
        stdin=follower,
        stdout=subprocess.PIPE if stdout_pipe else follower,
        stderr=follower,
    )
    os.close(follower)
    try:
        shown = read_pty(leader, proc).decode()
    finally:
        os.close(leader)
        proc.wait(timeout=60)
    piped = ""
    if proc.stdout is not None:
        piped = proc.stdout.read().decode()
        proc.stdout.close()
    return shown, piped, proc.returncode


def test_run_on_a_terminal_draws_a_live_rich_table() -> None:
    """On a terminal, `run` redraws a Rich table in place, ending with every step done and a
    total-time line, then shows the cursor again and prints the result."""
    pytest.importorskip("rich")
    output, _, status = run_on_pty("run", f"{SIMPLE}:greeting", *GREETING_INPUTS)
    assert 0 == status, output
    assert "\x1b[?25l" in output  # cursor hidden while drawing
    assert "\x1b[1A\x1b[2K" in output  # moved up and cleared lines to redraw in place
    final = output.rsplit("\x1b[2K", 1)[1]
    plain = strip_ansi(final)
    assert "greeting  3 done" in plain
    for step in ("hello", "count", "shout"):
        assert re.search(rf"done {step} +\d+\.\d\ds", plain), plain
    assert re.search(r"greeting  completed in \d+\.\d{3} s \(3 done\)", plain)
    assert "\x1b[32m" in final  # done rows in green
    assert final.index("\x1b[?25h") < final.index("{'text': 'HELLO ADA', 'count': 6}")


def test_run_json_on_a_terminal_draws_on_stderr_and_keeps_stdout_json() -> None:
    """With --json, the live table goes to stderr and stdout holds only the JSON result."""
    pytest.importorskip("rich")
    shown, stdout, status = run_on_pty(
        "run", f"{SIMPLE}:greeting", *GREETING_INPUTS, "--json", stdout_pipe=True
    )
    assert 0 == status, shown
    assert {"text": "HELLO ADA", "count": 6} == json.loads(stdout)
    assert "greeting  completed in" in strip_ansi(shown)


def test_term_dumb_gets_plain_lines_without_escape_codes() -> None:
    """TERM=dumb on a terminal: a line per step, no cursor movement, no colour."""
    output, _, status = run_on_pty(
        "run", f"{SIMPLE}:greeting", *GREETING_INPUTS, env={"TERM": "dumb"}
    )
    assert 0 == status, output
    assert "\x1b" not in output
    assert "     done hello in " in output
    assert "    total greeting: completed in " in output


def test_no_color_on_a_terminal_draws_the_table_without_colours() -> None:
    """NO_COLOR keeps the live table but drops every colour."""
    pytest.importorskip("rich")
    output, _, status = run_on_pty(
        "run", f"{SIMPLE}:greeting", *GREETING_INPUTS, env={"NO_COLOR": "1"}
    )
    assert 0 == status, output
    assert "\x1b[1A" in output  # still live
    assert not re.search(r"\x1b\[(\d+;)*3\dm", output)  # no foreground colour at all


def test_force_color_colours_the_plain_lines_of_a_pipe() -> None:
    """FORCE_COLOR on a pipe: still a line per step (no redrawing), but coloured."""
    pytest.importorskip("rich")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FORCE_COLOR": "1", "TERM": "xterm"}
    env.pop("NO_COLOR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "reactorpy", "run", f"{SIMPLE}:greeting", *GREETING_INPUTS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == proc.returncode, proc.stderr
    assert "\x1b[32m     done hello in " in proc.stdout
    assert "\x1b[1A" not in proc.stdout


def strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).replace("\r", "")


def render(display: Any, width: int, height: int = 40) -> list[str]:
    """The lines of one frame of a RichProgress at a terminal size, without colours."""
    from rich.console import Console

    console = Console(width=width, height=height, record=True, color_system=None)
    console.print(display)
    return console.export_text().splitlines()


def failing_reactor() -> rp.Reactor[Any]:
    """A long-named reactor: one undoable step, one failing step, one slow step the failure
    cancels, and one step that never starts."""
    r = rp.Reactor("broken_" + "x" * 40, inputs=["n"])

    @r.step
    def first_step_with_a_rather_long_name_indeed(n: int) -> int:
        return n

    @first_step_with_a_rather_long_name_indeed.undo
    def _undo(value: int) -> None:
        pass

    @r.step
    async def second(first_step_with_a_rather_long_name_indeed: int) -> int:
        await asyncio.sleep(1)
        raise ValueError("nope " * 20)

    @r.step
    async def slow(n: int) -> int:
        await asyncio.sleep(60)
        return n

    @r.step
    def never(second: int) -> int:
        return second

    return r


def test_rich_display_fits_the_width_and_marks_skipped_and_cancelled_steps() -> None:
    """Long names and errors are cut with an ellipsis, never wrapped; after a failure the
    step that never started is skipped, the one stopped is cancelled; a total line ends it."""
    pytest.importorskip("rich")
    from rich.console import Console

    display = cli.RichProgress(Console(width=50, record=True))
    with pytest.raises(rp.RunFailed):
        run_virtual(failing_reactor().run({"n": 1}, middleware=[display], grace=0))
    for width in (50, 32):  # the next frame follows a resized terminal
        lines = render(display, width)
        assert all(len(line) <= width for line in lines), lines
        text = "\n".join(lines)
        assert "…" in text
        assert re.search(r"failed seco", text)
        assert re.search(r"undone firs", text)
        assert re.search(r"cancelled slow", text)
        assert re.search(r"skipped never", text)
    assert lines[-1].startswith("broken_x")
    assert "…" in lines[-1]  # the long reactor name is cut in the middle
    assert render(display, 200)[-1].startswith(f"broken_{'x' * 40}  failed in 1.000 s")


def test_rich_display_shows_what_needs_attention_when_rows_do_not_fit() -> None:
    """More steps than terminal lines: failures first, then '... and N more'."""
    pytest.importorskip("rich")
    from rich.console import Console

    display = cli.RichProgress(Console(width=80, record=True))
    with pytest.raises(rp.RunFailed):
        run_virtual(failing_reactor().run({"n": 1}, middleware=[display], grace=0))
    lines = render(display, 80, height=4)
    assert 4 == len(lines)
    assert "failed second" in lines[1]
    assert "... and 3 more" in lines[2]
    assert "failed in" in lines[3]


def test_without_rich_progress_is_one_line_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """An install without the cli extra prints plain lines even on a terminal."""
    import io

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.delenv("NO_COLOR", raising=False)
    if importlib.util.find_spec("rich") is not None:
        assert isinstance(cli.progress_for(Terminal()), cli.RichProgress)
    monkeypatch.setitem(sys.modules, "rich", None)
    monkeypatch.setitem(sys.modules, "rich.console", None)
    display = cli.progress_for(Terminal())
    assert isinstance(display, cli.PlainProgress)
    assert display.console is None


def test_progress_printers_survive_a_closed_stream() -> None:
    """A stream that goes away silences the display; the run goes on and ends normally."""
    import io

    stream = io.StringIO()
    display = cli.PlainProgress(stream)
    stream.close()
    r = rp.Reactor("quiet", returns="a")
    r.step(lambda: 1, name="a")
    assert 1 == run_virtual(r.run(middleware=[display]))
    assert display.closed


@pytest.mark.parametrize("target", [f"{EXTRA}:many", f"{SIMPLE}:broken"])
def test_a_closed_stdout_neither_hangs_nor_hides_the_runs_own_error(target: str) -> None:
    """`run ... | head -1`: the command exits; a failing run still says why on stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "reactorpy", "run", target]
        + (["-i", "n=2"] if target.endswith("broken") else []),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.close()  # the reader went away before the first line
    with proc.stderr:
        err = proc.stderr.read()
    status = proc.wait(timeout=60)
    assert "Traceback" not in err
    assert "Exception ignored" not in err
    if target.endswith("broken"):
        assert 1 == status
        assert "ValueError: boom 2" in err
    else:
        assert 0 == status, err


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


def test_trace_path_is_checked_before_the_run_starts(
    in_root: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --trace path that cannot be written stops the command before any step runs."""
    touched = tmp_path / "ran"
    argv = ["run", f"{EXTRA}:marker", "-i", f"path={touched}", "-q"]
    assert 2 == cli.main([*argv, "--trace", str(tmp_path / "no-dir" / "t.json")])
    assert "nothing was run" in capsys.readouterr().err
    assert not touched.exists()
    assert 2 == cli.main([*argv, "--trace", str(tmp_path)])  # a directory
    assert not touched.exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_trace_that_fails_to_write_never_hides_the_runs_own_error(
    in_root: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Writing the trace fails (a full disk): a failed run still reports its own error;
    a run that worked prints its result, then exits 2 saying the trace was not written."""
    assert 1 == cli.main(["run", f"{SIMPLE}:broken", "-i", "n=1", "-q", "--trace", "/dev/full"])
    err = capsys.readouterr().err
    assert "warning: cannot write the trace to /dev/full" in err
    assert "failed in step(s) explode" in err
    assert "ValueError: boom 1" in err
    argv = ["run", f"{SIMPLE}:greeting", *GREETING_INPUTS, "-q", "--trace", "/dev/full"]
    assert 2 == cli.main(argv)
    captured = capsys.readouterr()
    assert "{'text': 'HELLO ADA', 'count': 6}" in captured.out
    assert "error: cannot write the trace to /dev/full" in captured.err


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    """`--version` prints the program and version and exits 0."""
    assert 0 == cli.main(["--version"])
    assert f"reactorpy {rp.__version__}\n" == capsys.readouterr().out


def composed() -> rp.Reactor[Any]:
    """compose, map and switch around the seed reactor, for the expanded pictures."""
    from reactorpy.examples.seed import user_data

    users = rp.Reactor("users", inputs=["user_ids", "user_id"], returns="all_users")
    users.map("all_users", "user_ids", user_data)
    users.compose("one", user_data)
    users.switch("route", "user_id", [(lambda u: u > 0, user_data)])
    return users


def test_graph_expand_draws_composed_reactors_in_mermaid_and_dot(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`graph --expand` draws the reactors composite steps run, in both formats."""
    module = type(sys)("expand_target")
    module.users = composed()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "expand_target", module)
    assert 0 == cli.main(["graph", "expand_target:users", "--expand"])
    mermaid = capsys.readouterr().out
    assert 'subgraph s_all_users ["all_users"]' in mermaid
    assert 'subgraph s_one__one ["one: async_user_data"]' in mermaid
    assert "s_all_users__all_users__s_fetch_profile" in mermaid
    assert 0 == cli.main(["graph", "expand_target:users", "--expand", "--format", "dot"])
    dot = capsys.readouterr().out
    assert "compound=true;" in dot
    assert 'subgraph "cluster_1" {' in dot
    assert 'label="all_users: async_user_data";' in dot
    assert (
        '"all_users/all_users/fetch_profile" [shape=box, style=rounded, label="fetch_profile"'
        in dot
    )
    assert 0 == cli.main(["graph", "expand_target:users", "--format", "dot"])
    assert "cluster" not in capsys.readouterr().out


def test_internal_parameter_names_never_appear_in_pictures() -> None:
    """map's and switch's internal parameters are drawn as 'over' and 'on'."""
    users = composed()
    for picture in (
        users.to_mermaid(),
        users.to_mermaid(expand=True),
        users.to_dot(),
        users.to_dot(expand=True),
    ):
        assert not re.search(r"(?<![A-Za-z0-9])_(items|on)\b", picture)
    assert 'i_user_ids -->|"over"| s_all_users' in users.to_mermaid()
    assert '"user_id" -> "route" [label="on, user_id"];' in users.to_dot()
    trace = rp.Trace()
    run_virtual(users.run({"user_ids": [1], "user_id": 2}, middleware=[trace]))
    gantt = trace.to_mermaid_gantt()
    assert not re.search(r"(?<![A-Za-z0-9])_(items|on)\b", gantt)


def test_long_step_names_are_cut_in_the_middle_so_they_stay_apart() -> None:
    """Names that differ only at their ends (``fetch_..._1``, ``fetch_..._2``) stay told
    apart in a narrow terminal: the ellipsis goes in the middle."""
    pytest.importorskip("rich")
    from rich.console import Console

    r = rp.Reactor("names")
    for k in (1, 2):
        r.step(lambda: None, name=f"fetch_something_with_a_very_long_descriptive_name_{k}")
    display = cli.RichProgress(Console(width=40, record=True))
    run_virtual(r.run(middleware=[display]))
    rows = render(display, 40)[1:3]
    assert all("…" in row for row in rows)
    assert rows[0].split()[1].endswith("_1")
    assert rows[1].split()[1].endswith("_2")
    assert all(row.split()[1].startswith("fetch_") for row in rows)


def test_demo_into_a_closed_pipe_exits_quietly() -> None:
    """`python -m reactorpy demo | head -3`: no error message, no traceback, status 0."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "reactorpy", "demo"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.close()
    with proc.stderr:
        err = proc.stderr.read()
    assert 0 == proc.wait(timeout=60)
    assert "" == err
