"""A completed run that can still be undone (`Reactor.run_reversible`).

Owns: `Reversible`.
Must not import: the executor, the reactor module (it holds a reactor, typed only).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs

from ._checkpoint import Checkpoint
from ._errors import ReactorError

if TYPE_CHECKING:
    from ._reactor import Reactor

__all__ = ["Reversible"]

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
