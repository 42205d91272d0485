"""The README and the documentation say what the code does: the quick start runs as a
script and in ``python -m asyncio``, the testing set-ups pass under pytest, the captured CLI
frames and help texts are what the CLI draws and prints, and nothing the README used to say
was lost on the way into the documentation.

(Every Python block of README.md and docs/ also runs as a test of its own, through Sybil:
see the repository's root ``conftest.py``.)
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from reactorpy import cli
from reactorpy.examples.seed import user_data
from reactorpy.testing import run_virtual

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def blocks(path: Path, language: str | None = None) -> list[str]:
    """The fenced code blocks of a Markdown file (of one `language`, if given)."""
    found = re.findall(r"^```(\w*)\n(.*?)^```$", path.read_text(), flags=re.M | re.S)
    return [body for lang, body in found if language is None or lang == language]


def block_after(path: Path, marker: str, language: str) -> str:
    """The first `language` block after the line containing `marker`."""
    text = path.read_text()
    start = text.index(marker)
    match = re.search(rf"^```{language}\n(.*?)^```$", text[start:], flags=re.M | re.S)
    assert match is not None, f"no {language} block after {marker!r} in {path}"
    return match.group(1)


def same_lines(expected: str, actual: str) -> None:
    assert [line.rstrip() for line in expected.strip("\n").splitlines()] == [
        line.rstrip() for line in actual.strip("\n").splitlines()
    ]


# ------------------------------------------------------------------------ the two commands
def test_the_readmes_first_shell_block_is_the_two_commands() -> None:
    """A newcomer's first two commands, exactly, first in the README."""
    assert blocks(README, "sh")[0] == (
        "pip install . && python -m reactorpy demo\npip install -e '.[test]' && python -m pytest\n"
    )


# ------------------------------------------------------------------------ the quick start
def quick_start() -> str:
    return block_after(README, "## Quick start", "python")


def test_the_quick_start_runs_pasted_into_a_file(tmp_path: Path) -> None:
    """Pasted into quickstart.py and run as a script, it prints the result and both times."""
    (tmp_path / "quickstart.py").write_text(quick_start())
    proc = subprocess.run(
        [sys.executable, "quickstart.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == proc.returncode, proc.stderr
    first, second = proc.stdout.splitlines()
    assert re.fullmatch(r"\{'summary': 'User 123 has 42 logins'\} in 0\.3\d s", first), first
    assert re.fullmatch(r"one step at a time: 0\.6\d s", second), second
    printed = block_after(README, "It prints:", "text")
    assert ["{'summary': 'User 123 has 42 logins'} in 0.30 s", "one step at a time: 0.65 s"] == (
        printed.splitlines()
    )


def test_the_docs_home_page_has_the_same_quick_start() -> None:
    """One quick start: the documentation's home page shows the README's, to the letter."""
    assert quick_start() == block_after(DOCS / "index.md", "## Quick start", "python")
    assert block_after(README, "python -m asyncio", "pycon") == block_after(
        DOCS / "index.md", "python -m asyncio", "pycon"
    )


def test_the_interactive_session_works_in_python_m_asyncio() -> None:
    """The ``python -m asyncio`` session of the README gives what it shows."""
    session = block_after(README, "python -m asyncio", "pycon")
    lines = [line[4:] for line in session.splitlines() if line.startswith(">>> ")]
    proc = subprocess.run(
        [sys.executable, "-m", "asyncio"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == proc.returncode, proc.stderr
    expected = session.splitlines()[-1]
    assert expected == "'User 123 has 42 logins'"
    assert expected in proc.stdout + proc.stderr  # the REPL echoes on stderr or stdout


# ------------------------------------------------------------------------ testing set-ups
def files_of(path: Path, section: str) -> dict[str, str]:
    """The blocks after `section` whose first line names a file: ``# conftest.py``."""
    text = path.read_text()
    text = text[text.index(section) :]
    files = {}
    for body in re.findall(r"^```\w*\n(.*?)^```$", text, flags=re.M | re.S):
        match = re.match(r"# ([\w.]+\.(?:py|toml))\b", body)
        if match:
            files.setdefault(match.group(1), body)
    return files


@pytest.mark.parametrize(
    ("page", "section", "names"),
    [
        (README, "## Testing your reactors", {"pyproject.toml", "conftest.py"}),
        (DOCS / "how-to" / "testing.md", "## Set up", {"pyproject.toml", "checkout.py"}),
    ],
)
def test_the_documented_pytest_set_up_passes(
    tmp_path: Path, page: Path, section: str, names: set[str]
) -> None:
    """The configuration, conftest and tests shown, written to files, pass under pytest
    (with the pytest-asyncio that pyproject.toml allows)."""
    files = files_of(page, section)
    assert names <= set(files)
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert 0 == proc.returncode, proc.stdout + proc.stderr
    tests = sum(1 for body in files.values() for _ in re.finditer(r"^async def test_", body, re.M))
    assert f"{tests} passed" in proc.stdout


# ------------------------------------------------------------------------ the CLI's pictures
def rich_frames(reactor: object, inputs: dict[str, object], at: float | None) -> list[str]:
    """Frames of the live table for a run on the virtual clock: at `at` s, and the last."""
    pytest.importorskip("rich")
    from rich.console import Console

    console = Console(width=72, height=20, record=True, color_system=None)
    display = cli.RichProgress(console)

    async def main() -> None:
        if at is not None:
            asyncio.get_running_loop().call_at(at, lambda: console.print(display))
        try:
            await reactor.run(inputs, middleware=[display])  # type: ignore[attr-defined]
        except Exception:
            pass
        console.print(display)

    run_virtual(main())
    text = console.export_text()
    height = len(display.rows) + 2
    lines = text.splitlines()
    return ["\n".join(lines[k : k + height]) for k in range(0, len(lines), height)]


def test_the_captured_frames_are_what_the_live_table_draws() -> None:
    """The frames in the README and the CLI page are the display's own output."""
    middle, last = rich_frames(user_data, {"user_id": 123}, at=0.25)
    same_lines(block_after(README, "a frame captured at 0.25 s", "text"), middle)
    page = DOCS / "how-to" / "command-line.md"
    same_lines(block_after(page, "Mid-run, and at the end", "text"), middle)
    texts = blocks(page, "text")
    same_lines(texts[1], last)
    sys.path.insert(0, str(ROOT))
    from tests.examples.simple import broken

    (failed,) = rich_frames(broken, {"n": 3}, at=None)
    shown = block_after(page, "Here a reactor whose step", "text").splitlines()
    same_lines("\n".join(shown[:4]), failed)


def test_the_plain_lines_shown_are_what_the_plain_display_prints() -> None:
    """The CI-log lines on the CLI page are PlainProgress's own output."""
    stream = io.StringIO()
    run_virtual(user_data.run({"user_id": 123}, middleware=[cli.PlainProgress(stream)]))
    page = DOCS / "how-to" / "command-line.md"
    same_lines(block_after(page, "as a CI log shows them", "text"), stream.getvalue())


def test_the_cli_reference_shows_the_current_help() -> None:
    """docs/reference/cli.md holds the CLI's --help texts as they are (at 80 columns)."""
    page = (DOCS / "reference" / "cli.md").read_text()
    env = {**os.environ, "COLUMNS": "80"}
    env.pop("REACTORPY_JOURNAL", None)  # it would make --journal optional in the usage lines
    for command in ([], ["run"], ["graph"], ["runs"], ["recover"], ["demo"]):
        out = subprocess.run(
            [sys.executable, "-m", "reactorpy", *command, "--help"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=True,
        ).stdout
        title = " ".join(["reactorpy", *command])
        same_lines(block_after(DOCS / "reference" / "cli.md", f"## `{title}`", "text"), out)
    assert "| 130 |" in page


# ------------------------------------------------------------------------ durable runs
def test_the_durable_examples_output_is_what_the_docs_show() -> None:
    """The how-to shows what `python -m reactorpy.examples.durable` prints, and the README
    an excerpt of it (the example prints no pids, paths or times, so it is the same on
    every machine)."""
    proc = subprocess.run(
        [sys.executable, "-m", "reactorpy.examples.durable"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    page = DOCS / "how-to" / "durable-runs.md"
    same_lines(
        block_after(page, "python -m reactorpy.examples.durable --undo", "text"), proc.stdout
    )
    excerpt = block_after(README, "kills it with SIGKILL while it ships", "text")
    assert excerpt in proc.stdout


# ------------------------------------------------------------------------ the site
def nav_pages() -> set[str]:
    return set(re.findall(r"([\w/-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M))


def test_every_page_is_in_the_navigation_and_exists() -> None:
    """mkdocs.yml lists every page under docs/, and only pages that exist."""
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert pages == nav_pages()


def test_project_urls_agree_with_the_site() -> None:
    """pyproject.toml's URLs and mkdocs.yml's point at the same places."""
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    assert {"Documentation", "Source", "Changelog", "Issues"} == set(urls)
    config = (ROOT / "mkdocs.yml").read_text()
    assert f"site_url: {urls['Documentation']}" in config
    assert f"repo_url: {urls['Source']}" in config
    assert urls["Changelog"].startswith(urls["Source"] + "/")
    assert urls["Issues"] == urls["Source"] + "/issues"


def test_the_docs_extra_and_ci_build_the_site() -> None:
    """`pip install -e '.[docs]'` brings the site's tools, and CI builds it strictly."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    names = {re.split(r"[<>=\[ ]", req)[0] for req in extras["docs"]}
    assert {"mkdocs", "mkdocs-material", "mkdocstrings"} <= names
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -q -e '.[docs]'" in ci
    assert "mkdocs build --strict" in ci


# What the README said before the documentation site existed, each now in the docs.
MOVED = [
    'rp.Input("order", "items", 0)',
    "PathError",
    "wait_for=",
    "transform=f",
    'inputs={"user_id": int, "note": None}',
    "generation barrier",
    "every 64 steps",
    "on_run_start",
    "live frontier",
    "critical path first",
    "rp.Limiter(n, limits=...)",
    "Did you mean",
    ".critical_path",
    "rp.Retry(reason, delay=s)",
    "rp.Continue(value)",
    "grace",
    "KeyboardInterrupt",
    "run_reversible",
    "UndoRecord.route",
    "Resuming a completed run's checkpoint raises",
    "python -m reactorpy.examples.booking cancel",
    "oldest first",
    "Reactor abandons them",
    "rp.Halt(reason, result=value)",
    "run(timeout=s)",
    "ResumeError",
    "python -m reactorpy.examples.approval approve report.pdf",
    "batch_size",
    "max_iterations",
    "await wrapper(run_child, inputs)",
    "rp.NewSteps(value, steps=[...])",
    "items.[3].child",
    "event_kinds",
    "RunInfo.dependencies",
    "to_chrome_trace",
    "LoggingMiddleware(logger=None, level=logging.INFO)",
    "OpenTelemetryMiddleware",
    "Recorder()",
    "assert_undone_in_order",
    "returns(value",
    "raises(error",
    "OffloadError",
    "RunFailed.abandoned",
    "python -m reactorpy.examples.scoring --users 8 --dask",
    "fully_reversible?",
    "collect",
    "1.4 µs",
]


@pytest.mark.parametrize("phrase", MOVED)
def test_nothing_the_readme_said_was_lost(phrase: str) -> None:
    """Each thing the old README explained is said somewhere in the documentation."""
    docs = "\n".join(p.read_text() for p in DOCS.rglob("*.md"))
    assert phrase in docs


def test_the_changelog_tells_users_what_changed() -> None:
    """CHANGELOG.md's Unreleased section has this work in Added, Changed and Fixed."""
    text = (ROOT / "CHANGELOG.md").read_text()
    unreleased = text[text.index("## [Unreleased]") :]
    sections = re.split(r"^### ", unreleased, flags=re.M)
    by_name = {part.split("\n", 1)[0]: part for part in sections[1:]}
    assert {"Added", "Changed", "Fixed"} <= set(by_name)
    for phrase in ("rp.Reactor` is generic", "TypeMismatchError", "keep_callbacks=False"):
        assert phrase in by_name["Added"]
    for phrase in ("pytest-asyncio 1.4", "import reactorpy", "`over`, `on`"):
        assert phrase in by_name["Changed"]
    for phrase in ("run(context=...)", "| head -1", "--trace PATH"):
        assert phrase in by_name["Fixed"]


def test_docstring_examples_are_fenced_for_the_site() -> None:
    """The site's griffe extension shows doctests as code, and leaves fences alone."""
    pytest.importorskip("griffe")
    sys.path.insert(0, str(DOCS / "_ext"))
    from doctest_fences import fence

    text = "Summary.\n\n    >>> 1 + 1\n    2\n\nAfter.\n\n```python\n>>> x\n```"
    assert fence(text) == (
        "Summary.\n\n    ```pycon\n    >>> 1 + 1\n    2\n    ```\n\nAfter.\n\n```python\n>>> x\n```"
    )
