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
