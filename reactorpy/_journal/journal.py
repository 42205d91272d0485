"""The abstract journal: the API the executor drives, the queries, and what backends share.

Owns: `Journal`, the abstract base the backends implement, with the bookkeeping they share:
its options (serializer, lease, host) and owner identity, the set of runs it owns, decoding
rows into records, the checks of `finish` and `reopen`, and deciding which runs a claim may
take.
Must not import: the backends (`sqlite*`, `postgres*` import it), the executor, the reactor,
the CLI.

A run's life in a journal, as the executor drives it::

    create_run ─► append / mark_undone ... ─► [request_undo ─► mark_undone ...] ─► finish
                 (group commit: what is queued while a commit is in flight goes in the next)

A run is ``running`` until ``finish`` ends it ``completed``, ``failed``, ``halted`` or
``undone``. While it runs it has an owner (a process: host, pid and the pid's start time) and
a lease its journal renews; `Journal.claim` takes over running runs whose owner is gone (a dead
process on this host at once, any other once its lease has expired). Writes to a run are
fenced by its owner: a journal that lost its run to a claim gets `OwnershipError` instead of
writing into it.
"""

from __future__ import annotations

import abc
import socket
from asyncio import Future
from collections.abc import Collection, Iterable, Sequence
from types import TracebackType
from typing import Any, Self

from .batches import Refused
from .owners import owner_alive, process_owner
from .records import ENDED, Entry, OwnershipError, RunRecord, RunStatus, StoredRun
from .serializers import SERIALIZERS, PickleSerializer, Serializer

__all__ = ["Journal"]


class Journal(abc.ABC):
    """Where durable runs are recorded: the API the executor drives, and the queries.

    Use it as an async context manager, or call `aclose`. Writes are group-committed: every
    request queued while a commit is in flight goes into the next single transaction.

    Args:
        serializer: how values and errors become bytes (`PickleSerializer` by default).
        lease: seconds a run stays owned by this process without a renewal; renewed every
            third of it while this journal owns unfinished runs.
        host: the host name in this process's owner identity (see `process_owner`).

    Raises:
        ValueError: ``lease`` is not positive.
    """

    def __init__(
        self,
        *,
        serializer: Serializer | None = None,
        lease: float = 30.0,
        host: str | None = None,
    ) -> None:
        if not lease > 0:
            raise ValueError(f"lease must be a positive number of seconds, not {lease!r}")
        self.serializer: Serializer = PickleSerializer() if serializer is None else serializer
        self.lease = float(lease)
        self.host = socket.gethostname() if host is None else host
        self.owner = process_owner(self.host)
        # Runs this journal owns and has not ended: their leases are renewed while it is
        # open and released by aclose(). Changed only after the commit that made it true.
        self._owned: set[str] = set()
        self._closed = False
        self._commits = 0

    @property
    def commits(self) -> int:
        """How many transactions the writer has committed for requests (group commits
        count once however many requests they carried; lease renewals do not count)."""
        return self._commits

    @property
    def closed(self) -> bool:
        """`aclose` was called."""
        return self._closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"owns {len(self._owned)} unfinished run(s)"
        return f"<{type(self).__name__} {self._where()} {state}>"

    def _where(self) -> str:
        return ""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ----------------------------------------------------------------- the executor's API

    @abc.abstractmethod
    async def create_run(
        self,
        run_id: str,
        reactor: str,
        fingerprint: str,
        inputs: bytes,
        structure: bytes | None = None,
    ) -> RunRecord | None:
        """Record a new run as ``running``, owned by this process, durably.

        Args:
            run_id: the run's id.
            reactor: the reactor's name.
            fingerprint: the fingerprint of the reactor's graph.
            inputs: the serialized inputs.
            structure: an opaque blob kept with the run (e.g. the graph's wiring).

        Returns:
            None when the run was recorded; the existing run's record when the id is
            taken (nothing is changed then).
        """

    @abc.abstractmethod
    def append(
        self, run_id: str, entries: Sequence[Entry], *, redone: Collection[str] = ()
    ) -> Future[None]:
        """Queue step completions for the next group commit.

        Cheap to call from the event loop: nothing waits here.

        Args:
            run_id: the run (running, owned by this process).
            entries: the completions.
            redone: keys of `entries` whose undo was marked done: steps completed again
                after their undo (a composite that runs its child again). Their marks
                are dropped in the same transaction (a mark queued before this append, in
                the same group commit, with them).

        Returns:
            A future that resolves once they are durable, or fails with the database's
            error, or `OwnershipError` if the run is not this process's (any more).

        Raises:
            RuntimeError: the journal is closed.
        """

    @abc.abstractmethod
    def mark_undone(self, run_id: str, key: str) -> Future[None]:
        """Queue the record that a step's undo is done, for the next group commit.

        The mark holds until the key is appended again as ``redone``.

        Args:
            run_id: the run (running, owned by this process).
            key: the step's key.

        Returns:
            A future, as `append`'s.

        Raises:
            RuntimeError: the journal is closed.
        """

    @abc.abstractmethod
    async def request_undo(self, run_id: str, *, error: bytes | None = None) -> None:
        """Record, durably, that the run is being undone (before its first undo runs).

        A recovery then continues the undo whatever it was asked. With ``error`` (the run's
        failure, from ``serializer.dumps_error``) the run is undoing because it failed, and
        ends ``failed`` even if it is `finish`-ed as ``undone`` (by a recovery).

        Args:
            run_id: the run (running, owned by this process).
            error: the failure that caused the undo, if any.

        Raises:
            LookupError: no such run.
            OwnershipError: the run is not this process's, or has ended.
        """

    @abc.abstractmethod
    async def finish(
        self,
        run_id: str,
        status: RunStatus | str,
        *,
        result: bytes | None = None,
        error: bytes | None = None,
        checkpoint: bytes | None = None,
    ) -> None:
        """Record the run's ending, durably.

        A run that has already failed stays ``failed`` (this is then a no-op), and one
        whose undo was requested with an error ends ``failed`` when finished ``undone``.

        Args:
            run_id: the run (running, owned by this process).
            status: ``completed``, ``failed``, ``halted`` or ``undone``.
            result: the serialized result (``completed``).
            error: the serialized failure (``failed``; from ``serializer.dumps_error``).
            checkpoint: the serialized checkpoint (``halted``).

        Raises:
            ValueError: ``status`` is not an ending.
            LookupError: no such run.
            OwnershipError: the run is owned by another process, or has ended other than
                ``failed``.
        """

    @abc.abstractmethod
    async def reopen(self, run_id: str, *, undo: bool = False) -> RunRecord:
        """Take an ended run back to ``running``, owned by this process: to resume a halted
        run, or (``undo=True``) to undo a halted or completed one.

        With ``undo=True`` the undo request is recorded in the same transaction, so a crash
        during the undo is continued by a recovery.

        Args:
            run_id: the run.
            undo: reopen it for undo.

        Returns:
            Its record, now ``running``.

        Raises:
            LookupError: no such run.
            OwnershipError: it is running, failed or undone (or completed, without ``undo``).
        """

    @abc.abstractmethod
    async def claim(
        self, reactor: str, *, limit: int | None = None, run_id: str | None = None
    ) -> list[str]:
        """Take over the unfinished runs of a reactor whose owner is gone, atomically.

        An owner is gone when it is a dead process on this host (seen at once) or its lease
        has expired. Two processes claiming at once never get the same run.

        Args:
            reactor: the reactor's name.
            limit: take at most this many.
            run_id: take only this run (a run started again under its id, whose
                `create_run` returned an unfinished record with a dead owner).

        Returns:
            The ids of the runs now owned by this process (oldest first).
        """

    # ----------------------------------------------------------------- queries

    @abc.abstractmethod
    async def load(self, run_id: str) -> StoredRun:
        """Everything recorded for a run, to continue or undo it.

        Args:
            run_id: the run.

        Returns:
            The `StoredRun`.

        Raises:
            LookupError: no such run.
            ValueError: it was written with another serializer than this journal's.
        """

    @abc.abstractmethod
    async def get(self, run_id: str) -> RunRecord:
        """A run's record.

        Args:
            run_id: the run.

        Returns:
            Its `RunRecord`.

        Raises:
            LookupError: no such run.
        """

    @abc.abstractmethod
    async def runs(
        self,
        *,
        reactor: str | None = None,
        status: RunStatus | str | None = None,
        limit: int | None = None,
    ) -> list[RunRecord]:
        """The records of the runs, newest first.

        Args:
            reactor: only this reactor's.
            status: only runs in this status.
            limit: at most this many.

        Returns:
            The records.

        Raises:
            ValueError: ``status`` is not a `RunStatus`.
        """

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Commit what is queued, release the leases of the runs this journal still owns
        (a recovery may take them at once), and close. Calling it again does nothing."""

    # ----------------------------------------------------------------- shared bookkeeping

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed; open a new one")

    @staticmethod
    def _ending(status: RunStatus | str) -> RunStatus:
        try:
            ending = RunStatus(status)
        except ValueError:
            ending = None
        if ending not in ENDED:
            raise ValueError(
                f"A run ends as one of {sorted(s.value for s in ENDED)}, not {status!r}."
            )
        assert ending is not None
        return ending

    @staticmethod
    def _status_filter(status: RunStatus | str | None) -> str | None:
        if status is None:
            return None
        try:
            return RunStatus(status).value
        except ValueError:
            raise ValueError(
                f"Unknown run status {status!r}; one of {[s.value for s in RunStatus]}."
            ) from None

    def _serializer_for(self, name: str) -> Serializer:
        if name == self.serializer.name:
            return self.serializer
        return SERIALIZERS.get(name, self.serializer)

    def _record(self, row: Sequence[Any]) -> RunRecord:
        """A `RunRecord` from a row of `RECORD_COLUMNS`."""
        row = tuple(row)
        (run_id, reactor, status, result, error, created, updated, ended, owner, undo) = row[:10]
        serializer = self._serializer_for(row[11])
        return RunRecord(
            run_id=run_id,
            reactor=reactor,
            status=RunStatus(status),
            result=None if result is None else serializer.loads(bytes(result)),
            error=None if error is None else serializer.loads_error(bytes(error)),
            created=created,
            updated=updated,
            ended=ended,
            owner=owner,
            undo_requested=bool(undo),
            fingerprint=row[10],
        )

    def _stored(
        self,
        row: Sequence[Any],
        inputs: bytes,
        checkpoint: bytes | None,
        structure: bytes | None,
        entries: Iterable[Sequence[Any]],
        undone: Iterable[str],
    ) -> StoredRun:
        if row[11] != self.serializer.name:
            raise ValueError(
                f"Run {row[0]!r} was recorded with the {row[11]!r} serializer, and this journal "
                f"uses {self.serializer.name!r}; open the journal with serializer="
                f"{type(SERIALIZERS.get(row[11], self.serializer)).__name__}() to continue it."
            )
        return StoredRun(
            record=self._record(row),
            inputs=bytes(inputs),
            entries=tuple(
                Entry(k, s, None if r is None else bytes(r), None if u is None else bytes(u))
                for k, s, r, u in entries
            ),
            undone=frozenset(undone),
            checkpoint=None if checkpoint is None else bytes(checkpoint),
            structure=None if structure is None else bytes(structure),
            serializer=row[11],
        )

    def _claimable(
        self, candidates: Iterable[tuple[str, str, bool]], limit: int | None
    ) -> list[tuple[str, str]]:
        """Of ``(run_id, owner, lease expired)`` candidates (oldest first), those whose owner
        is gone, as ``(run_id, owner)``: the lease has expired, or the owner is a dead
        process on this host."""
        alive: dict[str, bool] = {}
        chosen: list[tuple[str, str]] = []
        for run_id, owner, expired in candidates:
            if limit is not None and len(chosen) >= limit:
                break
            if not expired:
                if owner not in alive:
                    alive[owner] = owner_alive(owner, host=self.host)
                if alive[owner]:
                    continue
            chosen.append((run_id, owner))
        return chosen

    def _final_status(
        self, run_id: str, found: Sequence[Any] | None, ending: RunStatus
    ) -> RunStatus | None:
        """The status `finish` records, from the run's ``(status, owner, has an error)`` row:
        None for a run that has failed (it stays failed); `failed` for an undo after a
        failure. Raises `Refused` when the run is unknown, not ours or has ended."""
        if found is not None and found[0] == RunStatus.FAILED:
            return None
        if found is None or found[0] != RunStatus.RUNNING or found[1] != self.owner:
            raise self._refusal(run_id, found, "finish")
        return RunStatus.FAILED if ending is RunStatus.UNDONE and found[2] else ending

    def _check_reopen(self, run_id: str, found: Sequence[Any] | None, undo: bool) -> None:
        """Raise `Refused` unless a run of this ``(status, owner)`` row can be reopened:
        halted (resume or undo) or completed (undo only)."""
        allowed = (RunStatus.HALTED, RunStatus.COMPLETED) if undo else (RunStatus.HALTED,)
        if found is None or found[0] not in allowed:
            raise self._refusal(run_id, found, "undo" if undo else "resume")

    def _refusal(self, run_id: str, found: Sequence[Any] | None, action: str) -> Refused:
        """The error for a write to ``run_id`` that its conditions refused, from its
        ``(status, owner)`` row (None: no such run)."""
        if found is None:
            return Refused(LookupError(f"No run {run_id!r} in this journal."))
        return Refused(OwnershipError(run_id, found[0], found[1], action))
