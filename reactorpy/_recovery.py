"""Durable runs from the outside: a run started with a journal, its ending recorded, and
the recovery of runs whose process died.

Owns: `run_journaled` (``run(journal=...)``: record the run before its first step; a run id
the journal holds already returns its recorded result, raises its recorded failure, is
continued if its owner is dead, or is refused if its owner lives; record how it ended),
`resume_journaled`, and `recover` (``reactor.recover(journal, undo=...)``: claim the runs
whose owner is gone and finish them forward, or undo them; a run that crashed during its
undo continues its undo).
Must not import: the composites, the CLI.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._checkpoint import Checkpoint
from ._errors import Halted, InputError, ResumeError, RunFailed, annotate
from ._executor import Durable, shielded, undo_from_journal
from ._journal import OwnershipError, RunRecord, RunStatus

if TYPE_CHECKING:
    from ._executor import Run
    from ._journal import Journal, Serializer, StoredRun
    from ._options import RunOptions
    from ._plan import Plan

__all__ = [
    "dump_checkpoint",
    "halted_checkpoint",
    "load_checkpoint_bytes",
    "recover",
    "resume_journaled",
    "run_journaled",
    "undo_journaled",
]

#: Makes the `Run` of a reactor: `Reactor._prepare` (plan, inputs, options, checkpoint,
#: durable, run id).
Prepare = Callable[..., "Run"]
_RECOVER_AT_ONCE = 32  # runs a recovery drives at the same time


async def run_journaled(
    reactor: Any, plan: Plan, inputs: dict[str, Any], options: RunOptions, prepare: Prepare
) -> Any:
    """``reactor.run(inputs, journal=..., run_id=...)``: see `Reactor.run`."""
    journal = options.journal
    assert journal is not None
    run_id = options.run_id or uuid.uuid4().hex
    ser = journal.serializer
    existing, cancelled = await shielded(
        journal.create_run(
            run_id,
            reactor.name,
            plan.fingerprint,
            _dumped_inputs(ser, inputs, reactor.name),
            _dumped_structure(plan, ser),
        )
    )
    if cancelled:  # cancelled before any step ran: a run recorded now ends failed
        if existing is None:
            stopped = asyncio.CancelledError()
            await _ended(journal, run_id, stopped, RunStatus.FAILED, error=ser.dumps_error(stopped))
        raise asyncio.CancelledError
    if existing is None:
        run = prepare(plan, inputs, options, None, Durable(journal, run_id), run_id)
        return await _drive(journal, run_id, run)
    _check_reactor(reactor, existing)  # another reactor's result or failure is not this one's
    if RunStatus(existing.status) is RunStatus.COMPLETED:
        return existing.result  # nothing runs: the recorded result
    stored = await _taken_over(reactor, journal, existing)
    result = await _continue(reactor, plan, journal, stored, options, prepare, undo=False)
    if stored.record.undo_requested:  # it crashed while undoing: its undo is finished now
        raise _failure(await journal.get(run_id))
    return result


async def halted_checkpoint(journal: Journal, run_id: str) -> Checkpoint:
    """The checkpoint of a run that halted, from `journal`.

    Raises:
        LookupError: no such run. ResumeError: it did not halt.
    """
    stored = await journal.load(run_id)
    if RunStatus(stored.record.status) is not RunStatus.HALTED:
        raise ResumeError(
            f"Run {run_id!r} is {RunStatus(stored.record.status).value!r} in the journal: "
            "only a halted run resumes."
        )
    if stored.checkpoint is None:
        raise ResumeError(
            f"Run {run_id!r} halted with a checkpoint its journal could not keep (its "
            "Halted error said why): resume it with that error's checkpoint and "
            f"run_id={run_id!r}."
        )
    return load_checkpoint_bytes(journal.serializer, stored.checkpoint)


async def resume_journaled(
    reactor: Any, plan: Plan, checkpoint: Checkpoint, options: RunOptions, prepare: Prepare
) -> Any:
    """``reactor.resume(..., journal=..., run_id=...)``: the halted run in the journal goes
    on under its id, recording as it goes."""
    journal = options.journal
    assert journal is not None
    assert options.run_id is not None
    run_id = options.run_id
    record = await journal.get(run_id)
    if record.reactor != reactor.name or (checkpoint.run_id not in (None, run_id)):
        raise ResumeError(
            f"Run {run_id!r} of the journal is a run of {record.reactor!r}; this checkpoint "
            f"is of run {checkpoint.run_id!r} of {checkpoint.reactor!r}: resume a run with "
            "its own checkpoint (or by its id alone)."
        )
    await journal.reopen(run_id)
    stored = await journal.load(run_id)
    durable = Durable(journal, run_id, stored)
    run = prepare(plan, dict(checkpoint.inputs), options, checkpoint, durable, run_id)
    return await _drive(journal, run_id, run)


async def recover(
    reactor: Any, journal: Journal, options: RunOptions, prepare: Prepare, *, undo: bool
) -> list[RunRecord]:
    """``reactor.recover(journal, undo=...)``: see `Reactor.recover`."""
    plan = reactor.plan()
    ids = await journal.claim(reactor.name)
    gate = asyncio.Semaphore(_RECOVER_AT_ONCE)
    problems: list[Exception] = []
    ended: dict[str, RunRecord] = {}

    async def one(run_id: str) -> None:
        async with gate:
            try:
                stored = await journal.load(run_id)  # (another serializer's run: ValueError)
                await _continue(reactor, plan, journal, stored, options, prepare, undo=undo)
            except (RunFailed, Halted):
                pass  # the run ended so; its record says how
            except Exception as exc:  # this run could not be recovered; the others go on
                annotate(exc, f"reactorpy: recovering run {run_id!r}")
                problems.append(exc)
                return
        # Read while the others go on (one after another once all had ended, the reads
        # of 1,000 runs took as long as recovering them).
        ended[run_id] = await journal.get(run_id)

    await asyncio.gather(*(one(run_id) for run_id in ids))
    if problems:
        raise ExceptionGroup(f"recovering runs of {reactor.name!r}: some could not be", problems)
    return [ended[run_id] for run_id in ids]


# ---------------------------------------------------------------------- the run itself


async def _drive(journal: Journal, run_id: str, run: Run) -> Any:
    """Run `run` and record how it ended: completed (the result), halted (the
    checkpoint), failed (the failure, a cancellation too)."""
    ser = journal.serializer
    try:
        result = await run.execute()
    except Halted as halted:
        try:
            data: bytes | None = dump_checkpoint(ser, halted.checkpoint)
        except Exception as exc:  # the caller still has it, on the Halted
            data = None
            annotate(halted, f"reactorpy: the journal cannot keep this checkpoint: {exc}")
        await _ended(journal, run_id, halted, RunStatus.HALTED, checkpoint=data)
        raise
    except BaseException as exc:
        await _ended(journal, run_id, exc, RunStatus.FAILED, error=ser.dumps_error(exc))
        raise
    await _ended(journal, run_id, None, RunStatus.COMPLETED, result=ser.dumps(result))
    return result


async def _ended(
    journal: Journal, run_id: str, outcome: BaseException | None, status: RunStatus, **data: Any
) -> None:
    """Record the ending (shielded: a cancellation lets it finish); `outcome` is what the
    run raises, if anything. A journal failing here is raised for a completed run, and a
    note on the run's own error otherwise."""
    try:
        _, cancelled = await shielded(journal.finish(run_id, status, **data))
    except Exception as exc:
        if outcome is None:
            raise
        annotate(outcome, f"reactorpy: the journal could not record the run's end: {exc!r}")
        return
    if cancelled:  # the caller's cancellation goes on; the run's own ending as a note
        stopped = asyncio.CancelledError()
        if outcome is not None:
            annotate(stopped, f"reactorpy: cancelled as the run ended with {outcome!r}")
        raise stopped


async def _taken_over(reactor: Any, journal: Journal, record: RunRecord) -> StoredRun:
    """A run id the journal holds, not completed: its failure is raised; a halted run is
    to be resumed; an unfinished one whose owner is dead is claimed and returned, to go on;
    one whose owner lives is refused."""
    status = RunStatus(record.status)
    if status in (RunStatus.FAILED, RunStatus.UNDONE):
        raise _failure(record)
    if status is RunStatus.HALTED:
        raise ResumeError(
            f"Run {record.run_id!r} halted: resume it with "
            f"await reactor.resume({record.run_id!r}, journal=journal)."
        )
    claimed = await journal.claim(reactor.name, run_id=record.run_id)
    if not claimed:
        raise OwnershipError(record.run_id, status.value, record.owner, "run again")
    return await journal.load(record.run_id)


def _failure(record: RunRecord) -> BaseException:
    """What running a failed or undone run again raises: its recorded `RunFailed`; a
    failure recorded before the run's end (when a crash came during its undo) is wrapped
    in one."""
    error = record.error
    if isinstance(error, RunFailed):
        return error
    status = RunStatus(record.status).value
    if isinstance(error, Exception):
        causes = [error]
    elif error is not None:
        causes = [RuntimeError(repr(error))]
    else:
        causes = [ResumeError(f"it was {status}; run it under another run_id to run it again")]
    return RunFailed(
        f"run {record.run_id!r} of {record.reactor!r} ended {status!r}",
        causes,
        reactor=record.reactor,
    )


async def _continue(
    reactor: Any,
    plan: Plan,
    journal: Journal,
    stored: StoredRun,
    options: RunOptions,
    prepare: Prepare,
    *,
    undo: bool,
) -> Any:
    """Finish a claimed run: forward from what it completed, or undo what it completed
    (asked, or its undo was under way at the crash)."""
    run_id = stored.record.run_id
    _check_versions(reactor, plan, journal.serializer, stored)
    _check_readable(reactor, journal.serializer, stored)
    inputs = journal.serializer.loads(stored.inputs)
    durable = Durable(journal, run_id, stored)
    if undo or stored.record.undo_requested:
        if not stored.record.undo_requested:
            await journal.request_undo(run_id)
        await _undo_stored(prepare(plan, inputs, options, None, durable, run_id))
        return None
    return await _drive(journal, run_id, prepare(plan, inputs, options, None, durable, run_id))


async def undo_journaled(
    reactor: Any, journal: Journal, run_id: str, options: RunOptions, prepare: Prepare
) -> None:
    """``reactor.undo(run_id, journal=...)``: undo a completed or halted run of the
    journal, newest completion first; it ends ``undone``."""
    record = await journal.get(run_id)
    status = RunStatus(record.status)
    if status not in (RunStatus.COMPLETED, RunStatus.HALTED):
        raise ResumeError(
            f"Run {run_id!r} is {status.value!r} in the journal: undo() takes a completed or "
            "halted run (an unfinished one is undone by reactor.recover(journal, undo=True))."
        )
    _check_reactor(reactor, record)
    plan = reactor.plan()
    _check_versions(reactor, plan, journal.serializer, await journal.load(run_id))
    await journal.reopen(run_id, undo=True)
    stored = await journal.load(run_id)
    inputs = journal.serializer.loads(stored.inputs)
    durable = Durable(journal, run_id, stored)
    await _undo_stored(prepare(plan, inputs, options, None, durable, run_id))


async def _undo_stored(run: Run) -> None:
    """Undo what `run`'s journal holds as completed and not undone, and record the end:
    ``undone`` (``failed`` if the run had failed), or ``failed`` with the undo errors."""
    durable = run.durable
    assert durable is not None
    journal, run_id = durable.journal, durable.run_id
    errors = await undo_from_journal(run)
    if errors:
        failed = errors[0]
        data = journal.serializer.dumps_error(failed)
        await _ended(journal, run_id, failed, RunStatus.FAILED, error=data)
        raise failed
    await _ended(journal, run_id, None, RunStatus.UNDONE)


def _check_reactor(reactor: Any, record: RunRecord) -> None:
    """`ResumeError` unless the journal's run is a run of `reactor`."""
    if record.reactor != reactor.name:
        raise ResumeError(
            f"Run {record.run_id!r} is a run of {record.reactor!r}, not of {reactor.name!r}."
        )


def _check_versions(reactor: Any, plan: Plan, ser: Serializer, stored: StoredRun) -> None:
    """A run is continued when the steps it completed still exist with the same wiring
    (code inside step bodies may change), and so do the reactors composed in steps it
    completed steps in; otherwise `ResumeError` names them."""
    then: dict[str, Any] = ser.loads(stored.structure) if stored.structure else {}
    composed_then = then.pop(COMPOSED, None)  # (None: recorded before they were kept)
    composed = _composed(plan) if composed_then is not None else None
    if stored.record.fingerprint == plan.fingerprint and composed_then == composed:
        return
    # (an entry with no result: a step that returned new steps, which runs again)
    completed = {e.key for e in stored.entries if e.key in then and e.result is not None}
    changed = sorted(
        k for k in completed if k not in plan.structure or list(plan.structure[k]) != list(then[k])
    )
    inside = sorted(  # composites whose reactors changed, with steps completed in them
        name
        for name, children in (composed_then or {}).items()
        if children != (composed or {}).get(name)
        and any(e.key.startswith(f"{name}.") for e in stored.entries)
    )
    why = []
    if changed:
        why.append(f"the steps it completed were removed or rewired since: {_names(changed)}")
    if inside:
        why.append(f"the reactors composed in {_names(inside)} changed since it ran them")
    if why:
        raise ResumeError(
            f"Run {stored.record.run_id!r} of {reactor.name!r} cannot be continued: "
            f"{'; '.join(why)}."
        )


def _names(names: list[str]) -> str:
    return ", ".join(map(repr, names))


# The entry of a run's recorded structure that holds the fingerprints of the reactors its
# composite steps run (no step is named so: names are printable).
COMPOSED = "\x1fcomposed"


def _composed(plan: Plan, seen: frozenset[int] = frozenset()) -> dict[str, str]:
    """A digest of the reactors each composite step of `plan` runs (their fingerprints and,
    nested, their composed reactors'), by step: strings, which every serializer gives back
    as they were (a reactor inside itself counts by its name)."""
    out: dict[str, str] = {}
    for name, step in zip(plan.order, plan.steps, strict=True):
        children = getattr(step, "children", None)
        if not children:
            continue
        kept: list[tuple[str, str, dict[str, str]]] = []
        for key, child in sorted(children.items(), key=lambda kv: str(kv[0])):
            if id(child) in seen:
                kept.append((str(key), child.name, {}))
                continue
            try:
                inner = child.plan()
            except Exception as exc:  # (the run fails there, as it would)
                kept.append((str(key), f"cannot plan: {exc}", {}))
                continue
            kept.append((str(key), inner.fingerprint, _composed(inner, seen | {id(child)})))
        out[name] = hashlib.sha256(repr(kept).encode()).hexdigest()
    return out


def _check_readable(reactor: Any, ser: Serializer, stored: StoredRun) -> None:
    """What the run recorded can be read back here (a class renamed or moved since is
    not): otherwise `ResumeError`, before anything runs or is recorded (the run stays
    unfinished, for a recovery once the code reads it again)."""
    for entry in stored.entries:
        for what, data in (("result", entry.result), ("undo record", entry.undo)):
            if data is None:
                continue
            try:
                ser.loads(data)
            except Exception as exc:
                raise ResumeError(
                    f"Run {stored.record.run_id!r} of {reactor.name!r} cannot be continued: "
                    f"the {what} of step {entry.key!r} cannot be read back ({exc!r}); "
                    "make its class importable as it was, then recover again."
                ) from exc


def _dumped_inputs(ser: Serializer, inputs: dict[str, Any], reactor: str) -> bytes:
    try:
        return ser.dumps(inputs)
    except TypeError as exc:
        bad = next((k for k, v in inputs.items() if not _serializable(ser, v)), "?")
        raise InputError(
            f"Reactor {reactor!r}: input {bad!r} cannot be recorded in the journal "
            f"({type(inputs.get(bad)).__name__}: {exc}); clients, sessions and pools go in "
            "run(context=...), which is not recorded.",
            reactor=reactor,
        ) from exc


def _dumped_structure(plan: Plan, ser: Serializer) -> bytes:
    """The plan's wiring, and the fingerprints of the reactors its composite steps run, as
    the journal keeps them with each run (`_check_versions` reads them back); serialized
    once per plan, serializer and composed reactors' fingerprints (the plan alone costs
    about 0.5 µs per step)."""
    has = plan.modes.get("journal: composites")
    if has is None:
        has = plan.modes["journal: composites"] = any(s.composite for s in plan.steps)
    composed = _composed(plan) if has else {}
    key = ("journal structure", ser, tuple(composed.items()))
    try:
        found: bytes | None = plan.modes.get(key)
    except TypeError:  # a serializer that cannot be a key: not cached
        return _structure_bytes(plan, ser, composed)
    if found is None:
        found = plan.modes[key] = _structure_bytes(plan, ser, composed)
    return found


def _structure_bytes(plan: Plan, ser: Serializer, composed: dict[str, Any]) -> bytes:
    structure: dict[str, Any] = {k: list(v) for k, v in plan.structure.items()}
    if composed:
        structure[COMPOSED] = composed
    return ser.dumps(structure)


def _serializable(ser: Serializer, value: Any) -> bool:
    try:
        ser.dumps(value)
    except TypeError:
        return False
    return True


def dump_checkpoint(ser: Serializer, checkpoint: Checkpoint) -> bytes:
    """A halted run's checkpoint for the journal (as JSON under the JSON serializer)."""
    if ser.name == "json":
        return ser.dumps(json.loads(checkpoint.to_json()))
    return ser.dumps(checkpoint)


def load_checkpoint_bytes(ser: Serializer, data: bytes) -> Checkpoint:
    """What `dump_checkpoint` wrote."""
    loaded = ser.loads(data)
    return loaded if isinstance(loaded, Checkpoint) else Checkpoint.from_json(loaded)
