"""Durable runs (issue 14, DESIGN 1.8), against both journals: what a journaled run records,
running again under a run id, resume and undo from the journal, and recovery after a real
SIGKILL of the process that ran it (``tests/durable_child.py``)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import reactorpy as rp

from . import durable_child
from .durable_child import ledger_lines, order, outer, payment
from .killing import kill_when
from .test_journal import ROOT, Backend, Opener, backend, open_journal

__all__ = ["backend", "open_journal"]  # the fixtures, shared with test_journal


@pytest.fixture(autouse=True)
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "ledger.txt"
    monkeypatch.setenv("REACTORPY_TEST_LEDGER", str(path))
    monkeypatch.delenv("REACTORPY_TEST_HANG", raising=False)
    monkeypatch.delenv("REACTORPY_TEST_FAIL", raising=False)
    monkeypatch.delenv("REACTORPY_TEST_FAIL_ONCE", raising=False)
    durable_child._failed_once.clear()  # (a step failing once fails once per test)
    return path


@pytest.fixture
async def journal(open_journal: Opener) -> AsyncIterator[rp.Journal]:
    return open_journal()


def described(error: BaseException | None) -> str:
    """An error and what it groups, as text."""
    inner = getattr(error, "exceptions", ())
    return " ".join([repr(error), *(described(e) for e in inner)])


def calls(what: str, name: str) -> int:
    return sum(1 for line in ledger_lines() if line.split()[:2] == [what, name])


# --------------------------------------------------------------------------- one process


async def test_a_completed_run_is_recorded_and_a_second_run_returns_its_result(
    journal: rp.Journal,
) -> None:
    assert await payment.run({"amount": 5}, journal=journal, run_id="o-1") == "charge-5-shipped"
    record = await journal.get("o-1")
    assert (record.status, record.result, record.reactor) == (
        "completed",
        "charge-5-shipped",
        "payment",
    )
    stored = await journal.load("o-1")
    assert sorted(e.key for e in stored.entries) == ["charge", "reserve", "ship"]

    again = await payment.run({"amount": 5}, journal=journal, run_id="o-1")
    assert again == "charge-5-shipped"
    assert calls("do", "ship") == 1  # nothing ran again


async def test_a_run_without_a_run_id_gets_one(journal: rp.Journal) -> None:
    await payment.run({"amount": 1}, journal=journal)
    (record,) = await journal.runs(reactor="payment")
    assert record.status == "completed"
    assert record.run_id


async def test_a_failed_run_is_undone_recorded_failed_and_raises_again(
    journal: rp.Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REACTORPY_TEST_FAIL", "ship")
    with pytest.raises(rp.RunFailed) as caught:
        await payment.run({"amount": 5}, journal=journal, run_id="o-2")
    assert "ship failed" in described(caught.value)
    assert [line.split()[1] for line in ledger_lines() if line.startswith("undo")] == [
        "refund",
        "release",
    ]
    record = await journal.get("o-2")
    assert record.status == "failed"
    assert record.undo_requested
    assert "ship failed" in described(record.error)
    assert (await journal.load("o-2")).undone == {"charge", "reserve"}

    monkeypatch.delenv("REACTORPY_TEST_FAIL")
    with pytest.raises(rp.RunFailed) as again:
        await payment.run({"amount": 5}, journal=journal, run_id="o-2")
    assert "ship failed" in described(again.value)
    assert calls("do", "reserve") == 1


async def test_a_run_id_running_in_this_live_process_is_refused(journal: rp.Journal) -> None:
    gate, started = asyncio.Event(), asyncio.Event()
    r: rp.Reactor[int] = rp.Reactor("slow", inputs=["x"], returns="wait")

    @r.step
    async def wait(x: int) -> int:
        started.set()
        await gate.wait()
        return x

    first = asyncio.create_task(r.run({"x": 1}, journal=journal, run_id="busy"))
    await started.wait()
    with pytest.raises(rp.OwnershipError, match="busy"):
        await r.run({"x": 1}, journal=journal, run_id="busy")
    gate.set()
    assert await first == 1


async def test_each_completion_is_durable_before_its_dependents_start(
    journal: rp.Journal, open_journal: Opener
) -> None:
    """A dependent step reads the journal through another connection: the completion of
    the step it depends on is there already."""
    reader = open_journal()
    seen: list[list[str]] = []
    r: rp.Reactor[int] = rp.Reactor("chain", inputs=["x"], returns="c")

    async def keys() -> list[str]:
        return sorted(e.key for e in (await reader.load("chain-1")).entries)

    @r.step
    async def a(x: int) -> int:
        return x + 1

    @r.step
    async def b(a: int) -> int:
        seen.append(await keys())
        return a + 1

    @r.step
    async def c(b: int) -> int:
        seen.append(await keys())
        return b + 1

    assert await r.run({"x": 1}, journal=journal, run_id="chain-1") == 4
    assert seen == [["a"], ["a", "b"]]


async def test_siblings_that_complete_together_share_commits(journal: rp.Journal) -> None:
    """Group commit: 50 independent steps complete in far fewer commits than 50."""
    r = rp.Reactor("fan", inputs=["x"])
    for i in range(50):

        async def leaf(x: int) -> int:
            return x

        r.add(rp.step(leaf), name=f"leaf{i}")
    before = journal.commits
    await r.run({"x": 1}, journal=journal, run_id="fan-1")
    assert len((await journal.load("fan-1")).entries) == 50
    assert journal.commits - before < 25


async def test_a_value_that_cannot_be_recorded_fails_its_step_naming_it(
    journal: rp.Journal,
) -> None:
    r: rp.Reactor[Any] = rp.Reactor("lock", inputs=["x"], returns="make")
    undone: list[str] = []

    @r.step
    async def first(x: int) -> int:
        return x

    @first.undo
    async def unfirst(value: int) -> None:
        undone.append("first")

    @r.step
    async def make(first: int) -> Any:
        return threading.Lock()

    with pytest.raises(rp.RunFailed) as caught:
        await r.run({"x": 1}, journal=journal, run_id="lock-1")
    text = repr(caught.value.exceptions)
    assert "step 'make'" in text
    assert "lock" in text
    assert undone == ["first"]
    assert (await journal.get("lock-1")).status == "failed"


async def test_an_input_that_cannot_be_recorded_is_an_input_error_before_any_step(
    journal: rp.Journal,
) -> None:
    with pytest.raises(rp.InputError, match=r"amount.*context="):
        await payment.run({"amount": threading.Lock()}, journal=journal, run_id="x")
    assert ledger_lines() == []
    with pytest.raises(LookupError):
        await journal.get("x")


async def test_the_idempotency_key_is_the_same_on_every_attempt(journal: rp.Journal) -> None:
    keys: list[str] = []
    r: rp.Reactor[int] = rp.Reactor("flaky", inputs=["x"], returns="call")

    @r.step(retries=2, retry_on=ConnectionError)
    async def call(x: int, ctx: rp.Context) -> int:
        keys.append(ctx.idempotency_key)
        if len(keys) < 3:
            raise ConnectionError("again")
        return x

    assert await r.run({"x": 3}, journal=journal, run_id="flaky-1") == 3
    assert keys == ["flaky-1:call"] * 3


async def test_a_halted_run_resumes_and_undoes_from_the_journal(journal: rp.Journal) -> None:
    approved: dict[str, bool] = {}
    r: rp.Reactor[str] = rp.Reactor("approve", inputs=["amount"], returns="pay")
    undone: list[str] = []

    @r.step
    async def hold(amount: int) -> str:
        return f"hold-{amount}"

    @hold.undo
    async def unhold(value: str) -> None:
        undone.append(value)

    @r.step
    async def pay(hold: str, ctx: rp.Context) -> str:
        if not approved.get(ctx.run_id):
            raise rp.Halt("waiting for approval")
        return f"paid {hold}"

    for run_id in ("ok", "no"):
        with pytest.raises(rp.Halted):
            await r.run({"amount": 7}, journal=journal, run_id=run_id)
        assert (await journal.get(run_id)).status == "halted"
    assert await r.recover(journal) == []  # halted runs are left alone

    approved["ok"] = True
    assert await r.resume("ok", journal=journal) == "paid hold-7"
    assert (await journal.get("ok")).status == "completed"
    with pytest.raises(rp.ResumeError, match="completed"):
        await r.resume("ok", journal=journal)

    await r.undo("no", journal=journal)
    assert undone == ["hold-7"]
    assert (await journal.get("no")).status == "undone"
    await r.undo("ok", journal=journal)  # a completed run, too
    assert undone == ["hold-7", "hold-7"]
    assert (await journal.get("ok")).status == "undone"
    with pytest.raises(rp.ResumeError, match="undone"):
        await r.undo("ok", journal=journal)
    with pytest.raises(LookupError):
        await r.undo("nobody", journal=journal)


async def test_options_name_what_is_wrong(journal: rp.Journal) -> None:
    with pytest.raises(TypeError, match=r"journal=rp\.SQLiteJournal"):
        await payment.run({"amount": 1}, run_id="o")
    with pytest.raises(TypeError, match="journal must be"):
        await payment.run({"amount": 1}, journal="runs.db")
    with pytest.raises(TypeError, match="run_id must be"):
        await payment.run({"amount": 1}, journal=journal, run_id="")
    with pytest.raises(TypeError, match="give journal= too"):
        await payment.resume("o")


# --------------------------------------------------------------------------- crashes


def crash(backend: Backend, reactor: str, run_id: str, **env: str) -> None:
    """Run `reactor` as `run_id` in a process of its own and kill it with SIGKILL once the
    step or undo named by ``env["REACTORPY_TEST_HANG"]`` has started (it then waits)."""
    environ = {**os.environ, **{f"REACTORPY_TEST_{k}": v for k, v in env.items()}}
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.durable_child", backend.spec(), reactor, run_id, "5"],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    kill_when(child, lambda: any(line.startswith("hang") for line in ledger_lines()))


def test_a_crashed_run_is_recovered_forward(backend: Backend) -> None:
    crash(backend, "payment", "c-1", HANG="ship")
    assert (calls("do", "reserve"), calls("do", "charge"), calls("do", "ship")) == (1, 1, 1)

    async def recover() -> list[rp.RunRecord]:
        async with backend.open() as journal:
            assert (await journal.get("c-1")).status == "running"
            return await payment.recover(journal)

    (record,) = asyncio.run(recover())
    assert (record.run_id, record.status, record.result) == ("c-1", "completed", "charge-5-shipped")
    # completed steps never run again; the step in flight runs again, with the same key
    assert (calls("do", "reserve"), calls("do", "charge"), calls("do", "ship")) == (1, 1, 2)
    assert {line.split()[2] for line in ledger_lines() if " ship " in line} == {"c-1:ship"}


def test_a_crashed_run_is_recovered_by_undoing_it(backend: Backend) -> None:
    crash(backend, "payment", "c-2", HANG="ship")

    async def recover() -> list[rp.RunRecord]:
        async with backend.open() as journal:
            return await payment.recover(journal, undo=True)

    (record,) = asyncio.run(recover())
    assert record.status == "undone"
    undos = [line.split()[1] for line in ledger_lines() if line.startswith("undo")]
    assert undos == ["refund", "release"]  # newest first
    assert calls("do", "ship") == 1


def test_a_run_that_crashed_while_undoing_goes_on_undoing(backend: Backend) -> None:
    """``ship`` fails; ``refund`` is undone, then the crash comes in ``release``: a forward
    recovery continues the undo (``release`` again, ``refund`` not) and the run stays
    failed with its failure."""
    crash(backend, "payment", "c-3", HANG="release", FAIL="ship")
    assert (calls("undo", "refund"), calls("undo", "release")) == (1, 1)

    async def recover() -> list[rp.RunRecord]:
        async with backend.open() as journal:
            return await payment.recover(journal)

    (record,) = asyncio.run(recover())
    assert record.status == "failed"
    assert "ship failed" in described(record.error)
    assert (calls("undo", "refund"), calls("undo", "release")) == (1, 2)
    assert calls("do", "ship") == 1


def test_a_crash_inside_a_composed_reactor_is_recovered(backend: Backend) -> None:
    crash(backend, "order", "c-4", HANG="ship")

    async def recover() -> list[rp.RunRecord]:
        async with backend.open() as journal:
            return await order.recover(journal)

    (record,) = asyncio.run(recover())
    assert record.result == "confirmed charge-5-shipped"
    assert (calls("do", "reserve"), calls("do", "ship"), calls("do", "confirm")) == (1, 2, 1)


def test_a_composite_rolled_back_after_a_recovery_runs_again_in_full(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crash comes in ``shop.check``, after ``shop.pay`` (a composite in the composite)
    completed. In the recovery ``check`` fails once: the child undoes ``pay`` (``refund``,
    ``release``) and ``shop`` runs it again. ``pay``'s entry is void then (the child's
    rollback is in the journal): ``pay`` runs again (it was taken for completed, its
    effects undone, and the run completed without them)."""
    crash(backend, "outer", "c-9", HANG="check")
    monkeypatch.setenv("REACTORPY_TEST_FAIL_ONCE", "check")

    async def recover() -> list[rp.RunRecord]:
        async with backend.open() as journal:
            return await outer.recover(journal)

    (record,) = asyncio.run(recover())
    assert (record.status, record.result) == ("completed", "checked charge-5-shipped")
    assert (calls("undo", "refund"), calls("undo", "release")) == (1, 1)
    assert (calls("do", "reserve"), calls("do", "charge"), calls("do", "ship")) == (2, 2, 2)
    assert calls("do", "check") == 3  # in flight at the crash, failed once, then done


def test_running_a_crashed_run_id_again_continues_it(backend: Backend) -> None:
    crash(backend, "payment", "c-5", HANG="charge")

    async def again() -> str:
        async with backend.open() as journal:
            return await payment.run({"amount": 5}, journal=journal, run_id="c-5")

    assert asyncio.run(again()) == "charge-5-shipped"
    assert (calls("do", "reserve"), calls("do", "charge")) == (1, 2)


def test_a_rewired_reactor_is_not_recovered_and_says_which_steps(backend: Backend) -> None:
    crash(backend, "payment", "c-6", HANG="ship")
    changed: rp.Reactor[str] = rp.Reactor("payment", inputs=["amount"], returns="ship")

    @changed.step
    async def reserve(amount: int) -> str:
        return "another body is fine"

    @changed.step
    async def charge(reserve: str) -> str:  # rewired: amount is gone
        return reserve

    @changed.step
    async def ship(charge: str) -> str:
        return charge

    async def recover() -> None:
        async with backend.open() as journal:
            with pytest.raises(ExceptionGroup) as caught:
                await changed.recover(journal)
            (error,) = caught.value.exceptions
            assert isinstance(error, rp.ResumeError)
            assert "'charge'" in str(error)
            assert "'reserve'" not in str(error)

    asyncio.run(recover())


def _order_with_rewired_payment() -> rp.Reactor[str]:
    """`order` as deployed later: its composed ``payment`` has ``charge`` rewired."""
    pay: rp.Reactor[str] = rp.Reactor("payment", inputs=["amount"], returns="ship")

    @pay.step
    async def reserve(amount: int) -> str:
        return f"hold-{amount}"

    @pay.step
    async def charge(reserve: str) -> str:  # rewired: amount is gone
        return "charge-0"

    @pay.step
    async def ship(charge: str) -> str:
        return f"{charge}-shipped"

    later: rp.Reactor[str] = rp.Reactor("order", inputs=["amount"], returns="confirm")
    later.compose("pay", pay, args={"amount": rp.Input("amount")})

    @later.step
    async def confirm(pay: str) -> str:
        return f"confirmed {pay}"

    return later


def test_a_reactor_composed_in_a_step_is_compared_when_the_run_completed_steps_in_it(
    backend: Backend,
) -> None:
    """The crash comes in ``pay.ship``, after ``pay.reserve`` and ``pay.charge``; the
    reactor composed in ``pay`` is rewired since: the run is not continued (its restored
    ``pay.charge`` would not be what the new ``charge`` makes), and the error names
    ``pay``. Crashed before ``pay`` completed anything, the same change is fine."""
    crash(backend, "order", "c-11", HANG="ship")
    later = _order_with_rewired_payment()

    async def recover() -> Any:
        async with backend.open() as journal:
            with pytest.raises(ExceptionGroup) as caught:
                await later.recover(journal)
            return caught.value.exceptions

    (error,) = asyncio.run(recover())
    assert isinstance(error, rp.ResumeError)
    assert "the reactors composed in 'pay' changed since it ran them" in str(error)


def test_a_reactor_composed_in_a_step_may_change_before_the_run_completes_steps_in_it(
    backend: Backend,
) -> None:
    crash(backend, "order", "c-12", HANG="reserve")
    later = _order_with_rewired_payment()

    async def recover() -> list[rp.RunRecord]:
        async with backend.open() as journal:
            return await later.recover(journal)

    (record,) = asyncio.run(recover())
    assert (record.status, record.result) == ("completed", "confirmed charge-0-shipped")


def test_running_again_a_run_that_crashed_while_undoing_finishes_it_and_raises(
    backend: Backend,
) -> None:
    crash(backend, "payment", "c-7", HANG="release", FAIL="ship")

    async def again() -> None:
        async with backend.open() as journal:
            with pytest.raises(rp.RunFailed) as caught:
                await payment.run({"amount": 5}, journal=journal, run_id="c-7")
            assert "ship failed" in described(caught.value)
            assert (await journal.get("c-7")).status == "failed"

    asyncio.run(again())
    assert (calls("undo", "refund"), calls("undo", "release"), calls("do", "ship")) == (1, 2, 1)


def test_a_recovered_run_whose_on_run_start_fails_undoes_what_it_completed(
    backend: Backend,
) -> None:
    crash(backend, "payment", "c-8", HANG="ship")

    class Broken:
        def on_run_start(self, info: rp.RunInfo) -> None:
            raise RuntimeError("tracer down")

    async def recover() -> list[rp.RunRecord]:
        async with backend.open() as journal:
            return await payment.recover(journal, middleware=[Broken()])

    (record,) = asyncio.run(recover())
    assert record.status == "failed"
    assert (calls("undo", "refund"), calls("undo", "release"), calls("do", "ship")) == (1, 1, 1)
