"""Checkpoints of a run, and a run rebuilt from one.

Owns: `make_checkpoint` (a halted run), `finished_checkpoint` (a completed run, for undo
later), `revert` (undo what a checkpoint records: `Reactor.undo`), and `restore` (a run's
state from a checkpoint: completed steps and their results, counters, attempts, the undo
stack, and the records of children that halted inside steps (composites, new steps), kept
where they halted so that a failure before those steps resume still undoes them).
Must not import: the scheduler, the composites.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .._checkpoint import Checkpoint, UndoRecord
from .._errors import RunFailed
from .attempts import shielded
from .observe import run_info
from .scope import checkpoint_records, inner_records
from .state import DONE, PENDING

if TYPE_CHECKING:
    from .run import Run

__all__ = [
    "finished_checkpoint",
    "make_checkpoint",
    "restore",
    "resumable",
    "revert",
    "undo_records",
]


def make_checkpoint(run: Run) -> Checkpoint:
    """The checkpoint of a halted run: what resuming it needs."""
    plan = run.plan
    st = run.st
    done = [name for name, s in zip(plan.order, st.status, strict=True) if s == DONE]
    results = {}
    for name in done:
        i = plan.index[name]
        if run.keep[i] or st.readers_left[i] > 0:
            results[name] = st.vals[i]
    return Checkpoint(
        reactor=plan.reactor,
        fingerprint=plan.fingerprint,
        structure=dict(plan.structure),
        inputs=dict(run.inputs),
        completed=tuple(done),
        results=results,
        undo_stack=tuple(run.ledger.records()),
        attempts={name: a for name, a in zip(plan.order, st.attempts, strict=True) if a},
        reason=st.halt_reason,
        halted_step=st.halt_step,
        inner=dict(run.inner),
        inner_marks={
            plan.order[i]: mark
            for i, mark in run.ledger.marks.items()
            if plan.order[i] in run.inner
        },
        run_id=run.root_id,
    )


def finished_checkpoint(run: Run) -> Checkpoint:
    """What undoing a completed run needs (`Reactor.run_reversible`): its undo stack."""
    plan = run.plan
    st = run.st
    return Checkpoint(
        reactor=plan.reactor,
        fingerprint=plan.fingerprint,
        structure=dict(plan.structure),
        inputs=dict(run.inputs),
        completed=tuple(n for n, s in zip(plan.order, st.status, strict=True) if s == DONE),
        results={},
        undo_stack=tuple(run.ledger.records()),
        attempts={name: a for name, a in zip(plan.order, st.attempts, strict=True) if a},
        finished=True,
        run_id=run.root_id,
    )


def restore(run: Run, checkpoint: Checkpoint) -> None:
    """Rebuild `run`'s state from `checkpoint` (which fits its plan: checked before)."""
    plan = run.plan
    st = run.st
    index = plan.index
    completed = [index[name] for name in checkpoint.completed]
    for i in completed:
        st.status[i] = DONE
        st.vals[i] = checkpoint.results.get(plan.order[i])
    st.n_done = len(completed)
    for i in completed:
        for d in plan.dependents[i]:
            st.remaining[d] -= 1
        for j in plan.reads[i]:
            st.readers_left[j] -= 1
    for name, attempts in checkpoint.attempts.items():
        if name in index:
            st.attempts[index[name]] = attempts  # numbering goes on; budgets restart
    run.ledger.entries = list(checkpoint.undo_stack)
    run.inner = dict(checkpoint.inner)
    for name, inner in checkpoint.inner.items():
        i = index[name]
        records = inner_records(run.reactor, i, inner)
        run.ledger.hold_halted(i, records, checkpoint.inner_marks.get(name))


def resumable(run: Run) -> list[int]:
    """The pending steps whose dependencies are all done, most critical first."""
    st = run.st
    ready = [i for i in range(run.n) if st.status[i] == PENDING and st.remaining[i] == 0]
    ready.sort(key=run.order_key)
    return ready


async def revert(run: Run, checkpoint: Checkpoint) -> None:
    """Undo what `checkpoint` records (`Reactor.undo`), newest first at every depth;
    raise `RunFailed` with the undo errors. Shielded: once started, it finishes."""
    run.loop = asyncio.get_running_loop()
    run.clock = run.loop.time
    records = checkpoint_records(run.reactor, checkpoint)
    errors, cancelled = await shielded(undo_records(run, records))
    if cancelled:
        raise asyncio.CancelledError
    if errors:
        raise errors[0]


async def undo_records(run: Run, records: list[UndoRecord]) -> list[BaseException]:
    """Undo `records` (oldest first) newest first, as a run middleware sees whose events
    are the undos; returns one `RunFailed` of the undo errors, if any."""
    info = run_info(run)
    if run.mw is not None:
        await run.mw.call("on_run_start", info)
    errors = await run.undoer.undo_all(list(reversed(records)))
    failed: list[BaseException] = []
    if errors:
        steps = ", ".join(dict.fromkeys(run.undoer.failed))
        excs = [e if isinstance(e, Exception) else RuntimeError(repr(e)) for e in errors]
        message = f"undoing reactor {run.plan.reactor!r} failed in step(s) {steps}"
        failed = [
            RunFailed(
                message,
                excs,
                reactor=run.plan.reactor,
                undo_failed=list(dict.fromkeys(run.undoer.failed)),
            )
        ]
    if run.mw is not None:
        if failed:
            await run.mw.call("on_run_error", info, failed[0])
        else:
            await run.mw.replace("on_run_complete", info, None)
    return failed
