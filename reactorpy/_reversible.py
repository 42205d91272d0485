"""What a run leaves to undo or finish later: a completed run that can still be undone
(`Reactor.run_reversible`), `Reactor.undo`, and `Reactor.recover` after a crash.

Owns: `Reversible`, and `Reversing` (the part of `Reactor` with ``run_reversible``, ``undo``
and ``recover``; journaled undo and recovery are in `reactorpy._recovery`).
Must not import: the executor, the reactor module (which builds on this; a `Reversible`
holds a reactor, typed only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar, Unpack

import attrs

from ._checkpoint import Checkpoint
from ._errors import ReactorError
from ._options import RunKwargs, RunOptions

if TYPE_CHECKING:
    from ._executor import Durable, Run
    from ._journal import RunRecord
    from ._plan import Plan
    from ._reactor import Reactor

__all__ = ["Reversible", "Reversing"]

T = TypeVar("T")


@attrs.define(eq=False)
class Reversible(Generic[T]):
    """A completed run that can still be undone (from `Reactor.run_reversible`).

    Attributes:
        result: what the run returned.
        checkpoint: a picklable `Checkpoint` of its undo stack, for `Reactor.undo`.
        reactor: the reactor that ran.
        undone: whether `undo` was called.
    """

    result: T
    checkpoint: Checkpoint = attrs.field(repr=False)
    reactor: Reactor[T] = attrs.field(repr=False)
    undone: bool = False

    async def undo(
        self,
        *,
        context: dict[str, Any] | None = None,
        middleware: Sequence[Any] | None = (),
    ) -> None:
        """Undo the run (see `Reactor.undo`); a second call raises `ReactorError`."""
        if self.undone:
            raise ReactorError(f"This run of {self.reactor.name!r} was already undone.")
        self.reactor._fitting_plan(self.checkpoint)  # if the reactor changed, nothing is undone
        self.undone = True
        await self.reactor.undo(self.checkpoint, context=context, middleware=middleware)


class Reversing(Generic[T]):
    """Adds ``run_reversible``, ``undo`` and ``recover`` to a reactor (`Reactor` is made
    of this)."""

    if TYPE_CHECKING:
        name: str

        def plan(self) -> Plan: ...
        def _inputs(self, plan: Plan, inputs: Mapping[str, Any] | None) -> dict[str, Any]: ...
        def _fitting_plan(self, checkpoint: Checkpoint) -> Plan: ...
        def _prepare(
            self,
            plan: Plan,
            inputs: dict[str, Any],
            options: RunOptions,
            checkpoint: Checkpoint | None = None,
            durable: Durable | None = None,
            run_id: str | None = None,
            root_id: str | None = None,
        ) -> Run: ...

    async def run_reversible(
        self, inputs: Mapping[str, Any] | None = None, /, **options: Unpack[RunKwargs]
    ) -> Reversible[T]:
        """Run like `run` (same options), and keep what undoing the run later needs.

        Returns a `Reversible`: ``.result`` is what `run` would have returned,
        ``await .undo()`` undoes every completed step that has an undo, newest completion
        first, and ``.checkpoint`` is the same as a picklable `Checkpoint` for `undo`, in
        this or another process. A run that fails or halts raises as `run` does.

        >>> import asyncio
        >>> import reactorpy as rp
        >>> r = rp.Reactor("book", inputs=["room"], returns="reserve")
        >>> @r.step
        ... def reserve(room):
        ...     return f"booking-{room}"
        >>> @reserve.undo
        ... def cancel(booking):
        ...     print("cancelled", booking)
        >>> async def main():
        ...     done = await r.run_reversible({"room": 7})
        ...     print(done.result)
        ...     await done.undo()
        >>> asyncio.run(main())
        booking-7
        cancelled booking-7
        """
        plan = self.plan()
        checked = RunOptions.of(options, f"run_reversible() of {self.name!r}")
        if checked.journal is not None:
            raise TypeError(
                f"run_reversible() of {self.name!r} keeps what undoing needs in memory; a "
                "journaled run is undone by its id: run(..., journal=j, run_id=i), then "
                "undo(i, journal=j)."
            )
        run = self._prepare(plan, self._inputs(plan, inputs), checked)
        result = await run.execute()
        return Reversible(result, run.finished_checkpoint(), self)  # type: ignore[arg-type]

    async def undo(
        self,
        checkpoint: Checkpoint | str,
        /,
        *,
        context: dict[str, Any] | None = None,
        middleware: Sequence[Any] | None = (),
        journal: Any = None,
    ) -> None:
        """Undo what a run did: every completed step that has an undo, newest completion
        first, each once, as a failed run would have.

        `checkpoint` is a `Reversible`'s (a completed run) or a `Halted` error's (a halted
        run you give up on: steps that halted inside composed reactors are undone first).
        Undo callbacks get the step's result and arguments as recorded. Middleware sees a
        run whose events are the undos. Once started, the undo finishes even if the caller
        is cancelled. Each call undoes again: keep a checkpoint you undid, or use
        `Reversible.undo`, which refuses a second time.

        A journaled run that completed or halted is undone by its id,
        ``undo("order-42", journal=j)``, from the journal's records; it ends ``undone``, and
        a crash during the undo is continued by `recover`.

        Raises:
            ResumeError: the checkpoint belongs to another reactor, or this one changed; the
                journal's run is not completed or halted.
            LookupError: the journal holds no such run.
            RunFailed: undo callbacks failed (the others still ran), one error each.
        """
        checked = RunOptions.of(
            {"context": context, "middleware": middleware, "journal": journal},
            f"undo() of {self.name!r}",
        )
        if isinstance(checkpoint, str) and journal is not None:
            from ._recovery import undo_journaled  # (not loaded by runs without a journal)

            await undo_journaled(self, journal, checkpoint, checked, self._prepare)
            return
        if not isinstance(checkpoint, Checkpoint):
            raise TypeError(
                f"undo() takes a Checkpoint (a Reversible's .checkpoint, or a Halted error's), "
                f"or a run id with journal=; got {type(checkpoint).__name__}."
            )
        plan = self._fitting_plan(checkpoint)
        run = self._prepare(plan, dict(checkpoint.inputs), checked, root_id=checkpoint.run_id)
        await run.revert(checkpoint)

    async def recover(
        self, journal: Any, /, *, undo: bool = False, **options: Unpack[RunKwargs]
    ) -> list[RunRecord]:
        """Finish this reactor's unfinished runs in `journal` whose owner is gone (a dead
        process on this host at once; elsewhere once its lease expires).

        Each run is claimed by this process in one transaction (two recoveries never take
        the same run) and goes on forward from what it completed: completed steps never
        run again, steps that were in flight at the crash run again (at least once; pass
        ``rp.Context.idempotency_key`` to external APIs). With ``undo=True`` its completed
        steps are undone instead, newest first. A run that crashed while undoing continues
        its undo either way. Halted runs are left alone (`resume` them). Takes the options
        of `run` (not ``journal``/``run_id``).

        Returns:
            The `RunRecord` of each run it ended, oldest first.

        Raises:
            ExceptionGroup: of `ResumeError`s, for runs whose completed steps were removed
                or rewired since (the others are still recovered).
        """
        if "run_id" in options:
            raise TypeError(
                f"recover() of {self.name!r} takes every unfinished run whose owner is gone; "
                "to continue one run, run it again by its id: run(inputs, journal=j, run_id=i)."
            )
        checked = RunOptions.of({**options, "journal": journal}, f"recover() of {self.name!r}")
        from ._recovery import recover

        return await recover(self, journal, checked, self._prepare, undo=undo)
