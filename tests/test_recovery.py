"""Durable runs from the outside (`reactorpy._recovery`): what ``run(journal=, run_id=)``
does with a run id the journal holds already."""

from __future__ import annotations

from pathlib import Path

import pytest

import reactorpy as rp


def adder(name: str) -> rp.Reactor:
    """A one-step reactor named `name` that returns ``n + 1`` (or fails for a negative n)."""
    r = rp.Reactor(name, inputs=["n"], returns="add")

    @r.step
    def add(n: int) -> int:
        if n < 0:
            raise ValueError(f"negative: {n}")
        return n + 1

    return r


async def test_a_run_id_of_another_reactor_is_refused(tmp_path: Path) -> None:
    """A run id the journal holds for another reactor neither returns that reactor's result
    nor raises its failure: it is refused, naming both reactors, and nothing runs."""
    first, second = adder("first"), adder("second")
    async with rp.SQLiteJournal(tmp_path / "runs.db") as journal:
        assert 2 == await first.run({"n": 1}, journal=journal, run_id="done")
        with pytest.raises(rp.RunFailed):
            await first.run({"n": -1}, journal=journal, run_id="failed")
        for run_id in ("done", "failed"):
            with pytest.raises(rp.ResumeError, match="is a run of 'first', not of 'second'"):
                await second.run({"n": 5}, journal=journal, run_id=run_id)
        assert ["first", "first"] == [r.reactor for r in await journal.runs()]
        assert 2 == await first.run({"n": 1}, journal=journal, run_id="done")


async def test_recover_goes_on_when_a_run_cannot_be_loaded(tmp_path: Path) -> None:
    """A run this journal cannot load (recorded with another serializer) is reported in the
    ExceptionGroup, naming it; the other runs are still recovered."""
    r = adder("adder")
    fingerprint = r.plan().fingerprint
    path = tmp_path / "runs.db"
    for run_id, serializer in (("as-json", rp.JsonSerializer()), ("as-pickle", None)):
        # A run whose process is gone: closing the journal released its lease.
        async with rp.SQLiteJournal(path, serializer=serializer, host="gone") as lost:
            await lost.create_run(run_id, "adder", fingerprint, lost.serializer.dumps({"n": 1}))
    async with rp.SQLiteJournal(path) as journal:
        with pytest.raises(ExceptionGroup) as info:
            await r.recover(journal)
        (error,) = info.value.exceptions
        assert isinstance(error, ValueError)
        assert "'json' serializer" in str(error)
        assert "reactorpy: recovering run 'as-json'" in error.__notes__
        assert rp.RunStatus.COMPLETED == (await journal.get("as-pickle")).status
        assert 2 == (await journal.get("as-pickle")).result
