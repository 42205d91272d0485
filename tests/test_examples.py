"""The runnable examples under reactorpy/examples do what the README says."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

import reactorpy as rp
from reactorpy.examples import payment


async def test_payment_saga_ships_or_releases_stock():
    """A good order ships; a declined card charges nothing and releases the stock."""
    payment.LEDGER.clear()
    good = {"id": 1, "sku": "mug", "card": "ok", "amount": 12}
    assert "shipped order 1" == await payment.checkout.run({"order": good})
    payment.LEDGER.clear()
    bad = {"id": 2, "sku": "tea", "card": "declined", "amount": 7}
    with pytest.raises(rp.RunFailed) as info:
        await payment.checkout.run({"order": bad})
    assert [payment.CardDeclined] == [type(e) for e in info.value.exceptions]
    assert ["reserved tea", "released tea (hold-2)"] == payment.LEDGER


def test_approval_example_halts_then_resumes_in_a_new_process(tmp_path: Path):
    """The approval example halts in one process and publishes from another."""
    root = Path(__file__).resolve().parent.parent
    env_path = {"PYTHONPATH": str(root)}
    cmd = [sys.executable, "-m", "reactorpy.examples.approval"]
    first = subprocess.run(
        [*cmd, "start", "doc.pdf"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**env_path, "PATH": ""},
    )
    assert first.stdout.startswith("halted: waiting for approval of doc.pdf"), first.stderr
    second = subprocess.run(
        [*cmd, "approve", "doc.pdf"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**env_path, "PATH": ""},
    )
    assert "published doc.pdf (rendered), approved" == second.stdout.strip(), second.stderr


def test_booking_example_is_cancelled_from_json_in_a_new_process(tmp_path: Path):
    """The booking example books (a composed hotel included), keeps its undo stack as JSON,
    and a second process undoes every booking, newest first."""
    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "reactorpy.examples.booking"]
    env = {"PYTHONPATH": str(root), "PATH": ""}
    run = functools.partial(
        subprocess.run, cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env
    )
    first = run([*cmd, "book", "Lisbon"])
    expected = {"car": "CAR-LIS-7", "flight": "FL-LIS-7", "hotel": "RM-LIS-12+BF"}
    assert expected == json.loads(first.stdout), first.stderr
    assert (tmp_path / "booking.json").exists()
    second = run([*cmd, "cancel"])
    lines = second.stdout.splitlines()
    assert {
        "returned car CAR-LIS-7",
        "cancelled flight FL-LIS-7",
        "dropped breakfast RM-LIS-12+BF",
        "released room RM-LIS-12",
    } == set(lines), second.stderr
    assert len(lines) == 4
    # Newest first: the car came after the flight, breakfast after the room.
    assert lines.index("returned car CAR-LIS-7") < lines.index("cancelled flight FL-LIS-7")
    assert lines.index("dropped breakfast RM-LIS-12+BF") < lines.index("released room RM-LIS-12")
    assert not (tmp_path / "booking.json").exists()


async def test_scoring_example_sends_scores_to_a_process_pool():
    """The scaling-out example scores each user in a process pool, in user order."""
    from concurrent.futures import ProcessPoolExecutor

    from reactorpy.examples import scoring
    from reactorpy.examples.seed import user_data

    with ProcessPoolExecutor(2) as pool:
        scores = await scoring.score_users([3, 1, 2], pool)
    expected = [scoring.cpu_score(await user_data.run({"user_id": u})) for u in (3, 1, 2)]
    assert expected == scores


def run_durable(folder: Path, *options: str) -> list[str]:
    """Run the durable example with its journal and ledger in `folder`; its output lines."""
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, "-m", "reactorpy.examples.durable", "--dir", str(folder), *options],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(root), "PATH": ""},
        check=False,
    )
    assert 0 == proc.returncode, proc.stderr
    assert "" == proc.stderr
    return proc.stdout.splitlines()


async def journal_state(folder: Path) -> tuple[rp.RunRecord, list[str], frozenset[str]]:
    """What the example's journal holds of its run: record, completed keys, undone keys."""
    from reactorpy.examples import durable

    async with rp.SQLiteJournal(folder / durable.JOURNAL) as journal:
        stored = await journal.load(durable.RUN_ID)
    return stored.record, [e.key for e in stored.entries], stored.undone


def section(lines: list[str], number: int) -> list[str]:
    """The lines of the example's numbered part `number` (its heading included)."""
    start = next(k for k, line in enumerate(lines) if line.startswith(f"{number}. "))
    end = next(
        (k for k, line in enumerate(lines) if line.startswith(f"{number + 1}. ")), len(lines)
    )
    return lines[start:end]


@pytest.mark.parametrize("undo", [False, True])
async def test_durable_example_recovers_a_killed_run_in_a_new_process(
    tmp_path: Path, undo: bool
) -> None:
    """The child is killed with SIGKILL while shipping: what it completed is in the journal
    and the ledger; a new process finishes the run (ships once) or undoes it (refunds and
    releases, newest first); what the example prints is what the journal and ledger hold."""
    from reactorpy.examples import durable

    lines = run_durable(tmp_path, *(["--undo"] if undo else []))
    crash = section(lines, 1)
    assert ["    reserved mug", "    charged 12", "    waiting for the carrier..."] == crash[1:]
    left = section(lines, 2)
    assert "  the journal holds order-42 as 'running'" in left  # the child never ended it
    assert "  steps completed: reserve_stock, charge_card" in left
    assert "  the ledger: reserved mug; charged 12" in left

    record, completed, undone = await journal_state(tmp_path)
    ledger = [entry["what"] for entry in durable.read_ledger(tmp_path / durable.LEDGER)]
    # Each effect once, under its step's idempotency key (run id:step).
    keys = [entry["key"] for entry in durable.read_ledger(tmp_path / durable.LEDGER)]
    assert len(keys) == len(set(keys))
    assert keys[:2] == ["order-42:reserve_stock", "order-42:charge_card"]
    recovered = section(lines, 3)
    ended = section(lines, 4)
    assert f"  the journal holds order-42 as {record.status.value!r}" in ended
    assert f"  steps completed: {', '.join(completed)}" in ended
    assert f"  the ledger: {'; '.join(ledger)}" in ended
    assert f"    recover() ended order-42 as {record.status.value!r}" == recovered[-1]
    if undo:
        assert rp.RunStatus.UNDONE == record.status
        assert ["reserve_stock", "charge_card"] == completed
        assert {"reserve_stock", "charge_card"} == undone
        assert [
            "reserved mug",
            "charged 12",
            "refunded 12 (charge-42)",
            "released mug (hold-42)",
        ] == ledger
        assert "  steps undone (newest first): charge_card, reserve_stock" in ended
    else:
        assert rp.RunStatus.COMPLETED == record.status
        assert "shipped order 42" == record.result
        assert ["reserve_stock", "charge_card", "ship"] == completed
        assert frozenset() == undone
        assert ["reserved mug", "charged 12", "shipped order 42"] == ledger
        assert "  result: 'shipped order 42'" in ended


def test_durable_example_refuses_a_directory_that_holds_a_journal(tmp_path: Path) -> None:
    """Run twice into one --dir, the example refuses rather than mix two demonstrations."""
    (tmp_path / "runs.db").write_bytes(b"")
    proc = subprocess.run(
        [sys.executable, "-m", "reactorpy.examples.durable", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 2 == proc.returncode
    assert "holds a journal or a ledger already" in proc.stderr


def test_durable_example_effects_are_idempotent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The ledger takes an effect once per idempotency key: a step that runs again after a
    crash (same key) changes nothing."""
    from reactorpy.examples import durable

    monkeypatch.setattr(durable, "ledger_path", tmp_path / "ledger.jsonl")
    durable.effect("order-1:ship", "shipped order 1")
    durable.effect("order-1:ship", "shipped order 1")
    assert [{"key": "order-1:ship", "what": "shipped order 1"}] == durable.read_ledger(
        tmp_path / "ledger.jsonl"
    )
    assert "    shipped order 1\n    (already done: shipped order 1)\n" == capsys.readouterr().out


def test_durable_example_by_hand_with_the_command_line(tmp_path: Path) -> None:
    """The by-hand steps of the example's docstring: `start` waits for the carrier, is
    killed with SIGKILL; `reactorpy runs` shows the run left running, `reactorpy recover`
    ships it from another process."""
    import signal

    root = Path(__file__).resolve().parent.parent
    env = {"PYTHONPATH": str(root), "PATH": "", "NO_COLOR": "1"}
    start = subprocess.Popen(
        [sys.executable, "-m", "reactorpy.examples.durable", "start"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert start.stdout is not None
    with start.stdout:
        seen = [start.stdout.readline() for _ in range(3)]
        assert "    waiting for the carrier...\n" == seen[-1], seen
        start.send_signal(signal.SIGKILL)
    assert -signal.SIGKILL == start.wait(timeout=60)
    cli = functools.partial(
        subprocess.run, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    listed = cli([sys.executable, "-m", "reactorpy", "runs", "--journal", "runs.db"])
    assert listed.stdout.startswith("order-42  checkout  running"), listed.stderr
    assert "which is gone: recover takes it" in listed.stdout
    target = "reactorpy.examples.durable:checkout"
    recovered = cli([sys.executable, "-m", "reactorpy", "recover", target, "--journal", "runs.db"])
    assert 0 == recovered.returncode, recovered.stderr
    assert ["    shipped order 42"] == recovered.stdout.splitlines()[:1]  # the step's own line
    assert recovered.stdout.splitlines()[1].startswith("order-42  checkout  completed")
    from reactorpy.examples import durable

    ledger = durable.read_ledger(tmp_path / "ledger.jsonl")
    assert ["reserved mug", "charged 12", "shipped order 42"] == [e["what"] for e in ledger]
