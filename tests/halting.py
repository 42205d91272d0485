"""A helper for tests of halts inside composed reactors: a reactor that does one undoable
step, then halts."""

from __future__ import annotations

import asyncio
from typing import Any

import reactorpy as rp


def halting(name: str, log: list[str], *, gate: dict[str, bool] | None = None, delay: float = 0):
    """Reactor `name` over input ``x``: ``first(x)`` logs ``"do first"`` (its undo logs
    ``"undo first"``) and returns ``x``; then ``wait`` sleeps `delay` seconds and halts,
    unless ``gate["open"]``, when it returns ``{"x": first}``. It returns ``wait``.
    """
    r = rp.Reactor(name, inputs=["x"], returns="wait")

    @r.step
    def first(x: Any) -> Any:
        log.append("do first")
        return x

    first.undo(lambda value: log.append("undo first"))

    @r.step
    async def wait(first: Any) -> dict[str, Any]:
        if delay:
            await asyncio.sleep(delay)
        if gate is None or not gate["open"]:
            raise rp.Halt("wait")
        return {"x": first}

    return r
