"""The rollback marks of child runs (``"\\x1f" + prefix``) under real crashes: each run
goes in a process of its own (`tests.rollback_crash_child`), killed with SIGKILL where a
step or undo hangs (or once it did its work); recoveries run in processes of their own
too (some killed)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import reactorpy as rp

from .killing import kill_when
from .rollback_crash_child import REACTORS, _seen, effects, ledger_lines

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "ledger.txt"
    monkeypatch.setenv("BREAK_LEDGER", str(path))
    for name in ("BREAK_HANG", "BREAK_HANG_AFTER", "BREAK_FAIL", "BREAK_HALT"):
        monkeypatch.delenv(name, raising=False)
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The JSON a process opens the test's journal with (`tests.rollback_crash_child`)."""
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
        [sys.executable, "-m", "tests.rollback_crash_child", spec, *args],
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
    kill_when(child, lambda: _hangs() > before)


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
    return out


def keys() -> set[str]:
    return {line.split()[2] for line in ledger_lines() if line.split()[0] in ("do", "undo")}


# --------------------------------------------------------------------------- findings
@pytest.mark.parametrize("reactor", ["dotted", "dotted2"])
def test_a_step_named_after_a_composite_and_a_dot_is_refused(reactor: str) -> None:
    """Step ``a.b`` (or composite ``a.b``) beside composite ``a``: the rollback mark of
    ``a``'s child (``"\\x1fa."``) would void ``a.b``'s entries, and a forward recovery
    would run it again (found by crashing both, on SQLite and PostgreSQL): `plan()`
    refuses the pair before anything runs."""
    with pytest.raises(rp.DefinitionError, match=r"step 'a\.b' is named after step 'a'"):
        REACTORS[reactor].plan()


def test_a_child_whose_rollback_undo_failed_is_not_run_again_over_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In ``deep_r``, composite ``in`` (retried once) runs ``i1`` then ``i2``; ``i2`` fails
    once, and the rollback's undo of ``i1`` fails once. Retried, the child would run
    ``i1`` again over the effect its failed undo left (after a crash, `recover(undo=True)`
    then undid one of the two, and the run ended ``undone`` with no word of it): neither
    ``in`` nor ``mid`` is retried, the run fails and undoes the rest, and its error holds
    the undo's, the effect left once."""
    monkeypatch.setenv("BREAK_FAIL", "do:i2#1,undo:i1#1")
    _seen.clear()

    async def go() -> tuple[rp.RunFailed, rp.RunRecord]:
        async with rp.SQLiteJournal(tmp_path / "runs.db") as journal:
            with pytest.raises(rp.RunFailed) as failed:
                await REACTORS["deep_r"].run({"n": 1}, journal=journal, run_id="u-1")
            return failed.value, await journal.get("u-1")

    error, record = asyncio.run(go())
    do, undo = effects()
    assert (do["u-1:mid.in.i1"], undo["u-1:mid.in.i1"]) == (1, 0)  # left once, not again
    assert (do["u-1:mid.m1"], undo["u-1:mid.m1"]) == (1, 1)
    assert (do["u-1:d0"], undo["u-1:d0"]) == (1, 1)
    assert record.status == "failed"
    assert "undo i1 failed" in repr(error)
    assert doubles() == []


# --------------------------------------------------------------------------- what holds
def consistent(record: dict[str, Any]) -> None:
    """No effect made twice, no undo of an absent one but the undo the kill cut short
    after it did its work (undo runs at least once: it runs again), and the run's end
    says what is left: completed, every effect there; failed or undone, none of an
    undoable step's."""
    cut = {line.split()[-1] for line in ledger_lines() if line.startswith("hang after undo")}
    assert doubles() == []
    assert set(stray_undos()) <= cut
    left = {key for key in keys() if present(key)}
    if record["status"] == "completed":
        assert left == keys()
    else:
        assert {k for k in left if not k.endswith(".check")} == set()


@pytest.mark.parametrize("undo", [False, True])
def test_a_map_element_killed_in_its_rollback_is_recovered(spec: str, undo: bool) -> None:
    """Element ``[2]`` of a map fails once in ``check``; the process dies once its
    rollback undid ``take``, before that is recorded. Forward, the map runs again and
    completes (``take`` of ``[2]`` again: its completion was voided); undoing, nothing is
    left."""
    crash_run(
        spec,
        "mapped",
        "m-1",
        {"items": [1, 2, 3, 4]},
        FAIL="do:check@[2]#1",
        HANG_AFTER="undo:take@[2]",
    )
    (record,) = recover(spec, "mapped", undo=undo)
    assert record["status"] == ("undone" if undo else "completed")
    consistent(record)


@pytest.mark.parametrize("undo", [False, True])
def test_three_deep_killed_in_the_innermost_rollback_is_recovered(spec: str, undo: bool) -> None:
    """``deep`` (retried at the top) runs ``top``, ``mid``, ``in``; ``i2`` fails once and
    the process dies once the innermost child undid ``i1``, before that is recorded
    (every level rolls back)."""
    crash_run(spec, "deep", "d-1", {"n": 1}, FAIL="do:i2#1", HANG_AFTER="undo:i1#1")
    (record,) = recover(spec, "deep", undo=undo)
    assert record["status"] == ("undone" if undo else "completed")
    consistent(record)


def test_a_recovery_killed_while_it_finishes_a_rollback_is_recovered_again(spec: str) -> None:
    """The process dies as ``in``'s child undoes ``i1``; the recovery that finishes the
    undo dies in it too; a second recovery finishes the run (``i1`` undone at least once
    more, never done twice over its effect)."""
    crash_run(spec, "deep_r", "r-1", {"n": 1}, FAIL="do:i2#1", HANG="undo:i1#1")
    crash_recovery(spec, "deep_r", False, HANG="undo:i1#1")
    (record,) = recover(spec, "deep_r")
    assert record["status"] == "completed"
    consistent(record)


def test_a_rollback_leaves_a_sibling_composite_alone(spec: str) -> None:
    """``sub2`` completes, then ``sub`` fails once and the process dies in its rollback
    (``x`` undone, not yet recorded): the mark of ``sub.`` voids nothing of ``sub2.``
    (it does not run again), and ``sub.x`` runs again."""
    crash_run(spec, "siblings", "s-1", {"n": 1}, FAIL="do:y@:sub.y#1", HANG_AFTER="undo:x@:sub.x")
    (record,) = recover(spec, "siblings")
    assert record["status"] == "completed"
    do, undo = effects()
    assert (do["s-1:sub2.x"], do["s-1:sub2.y"], undo["s-1:sub2.x"]) == (1, 1, 0)
    consistent(record)
