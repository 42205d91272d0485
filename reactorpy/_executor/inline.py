"""Driving a coroutine inside a context of its own, without a task of its own.

Owns: `start`, which runs a step's coroutine up to its first suspension inside the step's
own ``contextvars`` context, and `InContext`, which drives a suspended one to its end from
the task that started it. Steps, map elements and the batch workers of the scheduler all
start coroutines this way: most steps finish without ever suspending, and pay for nothing
more than ``ctx.run(coro.send, None)``.
Must not import: the rest of the executor (it is the bottom layer of it).
"""

from __future__ import annotations

import contextvars
from collections.abc import Coroutine, Generator
from typing import Any, Final

__all__ = ["SUSPENDED", "InContext", "start"]


class _Suspended:
    """What `start` returns in place of a result when the coroutine suspended."""

    __slots__ = ("yielded",)

    def __init__(self) -> None:
        self.yielded: Any = None


SUSPENDED: Final = _Suspended  # the type: `type(out) is SUSPENDED`


def start(coro: Coroutine[Any, Any, Any], ctx: contextvars.Context) -> Any:
    """Run `coro` inside `ctx` until it returns or first suspends.

    Returns its value, or a `SUSPENDED` instance holding what it yielded (for
    `InContext` to go on from). What it raises, raises here.
    """
    try:
        yielded = ctx.run(coro.send, None)
    except StopIteration as stop:
        return stop.value
    suspended = _Suspended()
    suspended.yielded = yielded
    return suspended


class InContext:
    """Await a suspended coroutine with every resumption inside `ctx` (its own context).

    The awaiting task forwards what it is sent and thrown (cancellation, mostly) into the
    coroutine, so ``asyncio.current_task()``, ``asyncio.timeout`` and ``TaskGroup`` inside
    it see the task that started it, as if it were that task's own coroutine.
    """

    __slots__ = ("coro", "ctx", "yielded")

    def __init__(
        self, coro: Coroutine[Any, Any, Any], ctx: contextvars.Context, yielded: Any
    ) -> None:
        self.coro = coro
        self.ctx = ctx
        self.yielded = yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        run = self.ctx.run
        send = self.coro.send
        throw = self.coro.throw
        yielded = self.yielded
        while True:
            try:
                value = yield yielded
            except BaseException as exc:  # forwarded into the coroutine
                try:
                    yielded = run(throw, exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    yielded = run(send, value)
                except StopIteration as stop:
                    return stop.value
