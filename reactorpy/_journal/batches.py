"""What the backends' writers share about a batch: one group commit of queued requests.

Owns: `Refused` (a job refusing its own request, while the rest of its batch commits),
`Outcome` (a request's future, with its result or its error) and `settle` (resolving the
futures of a committed batch on their event loop).
Must not import: the rest of the journal package (the backends' writers import it), the
executor, the reactor, the CLI.
"""

from __future__ import annotations

from asyncio import Future
from collections.abc import Sequence
from typing import Any

__all__ = ["Outcome", "Refused", "settle"]


class Refused(Exception):
    """Raised inside a backend's write job to refuse that one request (the error goes to
    its caller; the rest of the batch commits)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


# One outcome of a batch: the future, and its result or its error.
Outcome = tuple["Future[Any]", Any, BaseException | None]


def settle(outcomes: Sequence[Outcome]) -> None:
    """Resolve the futures of a committed batch (on their event loop: the one callback a
    backend schedules per batch and loop). Futures whose caller gave up are left alone."""
    for future, result, error in outcomes:
        if future.done():
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
