"""Trying to break the rollback marks of child runs (``"\\x1f" + prefix``) with real
crashes: each run goes in a process of its own (`tests.break_child`), killed with SIGKILL
where a step or undo hangs; recoveries run in processes of their own too (some killed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .break_child import effects, ledger_lines

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "ledger.txt"
    monkeypatch.setenv("BREAK_LEDGER", str(path))
    for name in ("BREAK_HANG", "BREAK_FAIL", "BREAK_HALT"):
        monkeypatch.delenv(name, raising=False)
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The JSON a process opens the test's journal with (`tests.break_child`)."""
    if request.param == "sqlite":
        yield sqlite_spec(tmp_path)
        return
    from .test_journal import PostgresBackend, postgres_dsn

    pg = PostgresBackend(postgres_dsn())
    try:
        yield pg.spec()
    finally:
        pg.drop()


def sqlite_spec(tmp_path: Path, serializer: str | None = None) -> str:
    spec: dict[str, Any] = {"kind": "sqlite", "path": str(tmp_path / "runs.db")}
    if serializer:
        spec["serializer"] = serializer
    return json.dumps(spec)


def _hangs() -> int:
    return sum(1 for line in ledger_lines() if line.startswith("hang"))


def _process(spec: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BREAK_")}
    environ["BREAK_LEDGER"] = os.environ["BREAK_LEDGER"]
    environ.update({f"BREAK_{k}": v for k, v in env.items()})
    return subprocess.Popen(
        [sys.executable, "-m", "tests.break_child", spec, *args],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def killed_at_hang(spec: str, args: list[str], **env: str) -> None:
    """Run the child; SIGKILL it once it hangs (it must get there)."""
    before = _hangs()
    child = _process(spec, args, env)
    try:
        for _ in range(6000):
            if _hangs() > before:
                break
            if child.poll() is not None:
                raise AssertionError(f"the child ended first: {child.communicate()}")
            time.sleep(0.01)
        else:
            raise AssertionError("the child never hung")
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate()
    assert child.returncode == -signal.SIGKILL


def crash_run(spec: str, reactor: str, run_id: str, inputs: Any, **env: str) -> None:
    killed_at_hang(spec, ["run", reactor, run_id, json.dumps(inputs)], **env)


def crash_recovery(spec: str, reactor: str, undo: bool, **env: str) -> None:
    killed_at_hang(spec, ["recover", reactor, "undo" if undo else "forward"], **env)


def recover(spec: str, reactor: str, undo: bool = False, **env: str) -> list[dict[str, Any]]:
    child = _process(spec, ["recover", reactor, "undo" if undo else "forward"], env)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def run(spec: str, reactor: str, run_id: str, inputs: Any, **env: str) -> str:
    child = _process(spec, ["run", reactor, run_id, json.dumps(inputs)], env)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    return out


def present(key: str) -> bool:
    """Whether the effect of `key` is there: its last call was a do."""
    last = None
    for line in ledger_lines():
        parts = line.split()
        if parts[0] in ("do", "undo") and parts[2] == key:
            last = parts[0]
    return last == "do"


def doubles() -> list[str]:
    """Keys done twice with no undo between (an effect made twice)."""
    state: dict[str, bool] = {}
    out = []
    for line in ledger_lines():
        parts = line.split()
        if parts[0] == "do":
            if state.get(parts[2]):
                out.append(parts[2])
            state[parts[2]] = True
        elif parts[0] == "undo":
            state[parts[2]] = False
    return out


def stray_undos() -> list[str]:
    """Undos of an effect that was not there (undone twice, or never done)."""
    state: dict[str, bool] = {}
    out = []
    for line in ledger_lines():
        parts = line.split()
        if parts[0] == "do":
            state[parts[2]] = True
        elif parts[0] == "undo":
            if not state.get(parts[2]):
                out.append(parts[2])
            state[parts[2]] = False
    return out


def keys() -> set[str]:
    return {line.split()[2] for line in ledger_lines() if line.split()[0] in ("do", "undo")}



# --------------------------------------------------------------------------- findings
def test_a_step_named_after_a_composite_is_not_voided_by_the_composites_rollback(
    spec: str,
) -> None:
    """Step ``a.b`` (with an undo) completes; then composite ``a`` runs its child, which
    fails once and rolls back (mark ``"\x1fa."``), and runs again, completing ``a``; the
    process dies in ``fin``. The mark of the child ``a.`` also covers the key ``a.b``,
    a step of the root run (names may hold dots), older than the mark: the recovery takes
    its completion for void and runs ``a.b`` again (its effect made twice)."""
    crash_run(spec, "dotted", "d-1", {"n": 1}, FAIL="do:y#1", HANG="do:fin")
    do, _ = effects()
    assert do["d-1:a.b"] == 1
    (record,) = recover(spec, "dotted")
    assert record["status"] == "completed"
    do, undo = effects()
    assert (do["d-1:a.b"], undo["d-1:a.b"]) == (1, 0)  # completed before the crash: not again
    assert doubles() == []


def test_a_composite_named_after_another_composite_is_not_rolled_back_by_its_rollback(
    spec: str,
) -> None:
    """Composite ``a.b`` completes (its child's steps ``a.b.x``, ``a.b.y``, with undos);
    then composite ``a`` runs its child, which fails once, rolls back (mark
    ``"\\x1fa."``) and runs again, completing ``a``; the process dies in ``fin``. The mark
    of ``a.`` voids the entries of ``a.b`` too: the forward recovery undoes the completed
    steps of ``a.b`` and runs them again (while ``fin``, after ``a``, which needs ``a.b``,
    already runs): undos of completed steps in a run that completes, and effects made
    twice."""
    crash_run(spec, "dotted2", "d-2", {"n": 1}, FAIL="do:y@:a.y#1", HANG="do:fin")
    (record,) = recover(spec, "dotted2")
    assert record["status"] == "completed"
    do, undo = effects()
    assert (undo["d-2:a.b.x"], undo["d-2:a.b.y"]) == (0, 0)  # completed, never undone
    assert (do["d-2:a.b.x"], do["d-2:a.b.y"]) == (1, 1)  # completed before the crash


def test_a_child_whose_rollback_undo_failed_is_not_run_again_over_it(spec: str) -> None:
    """In ``deep_r``, composite ``in`` (retried once) runs ``i1`` then ``i2``; ``i2`` fails
    once, and the rollback's undo of ``i1`` fails once (raises). The composite retries
    its child all the same: ``i1`` runs again, its new entry replacing the one whose undo
    failed (the mark voided it; nothing keeps it now). The process dies in ``fin``, and
    ``recover(undo=True)`` undoes ``i1`` once: of its two completions, one is never
    undone, and the run ends ``undone`` with no word of it."""
    crash_run(spec, "deep_r", "u-1", {"n": 1}, FAIL="do:i2#1,undo:i1#1", HANG="do:fin")
    (record,) = recover(spec, "deep_r", undo=True)
    do, undo = effects()
    assert do["u-1:mid.in.i1"] == 2  # the retry ran it again over the effect left behind
    assert record["status"] != "undone" or undo["u-1:mid.in.i1"] >= do["u-1:mid.in.i1"]
