"""Small reactors for the CLI tests: one that succeeds, one that fails and undoes, one that
halts, plus objects that are not reactors.

Owns: test fixtures only. Must not import: reactorpy's private modules.
"""

from __future__ import annotations

import asyncio
from typing import Any

import reactorpy as rp

greeting = rp.Reactor("greeting", inputs=["name", "times"], returns="shout")


@greeting.step
async def hello(name: str) -> str:
    """Say hello."""
    await asyncio.sleep(0.01)
    return f"hello {name}"


@greeting.step
async def count(times: int) -> int:
    """Double the count."""
    await asyncio.sleep(0.01)
    return times * 2


@greeting.step
def shout(hello: str, count: int) -> dict[str, Any]:
    """Combine both."""
    return {"text": hello.upper(), "count": count}


broken = rp.Reactor("broken", inputs=["n"], returns="explode")


@broken.step
async def reserve(n: int) -> int:
    """Something to undo."""
    return n


@reserve.undo
def release(value: int) -> None:
    print(f"released {value}", flush=True)


@broken.step
def explode(reserve: int) -> int:
    """Always fails."""
    raise ValueError(f"boom {reserve}")


pausing = rp.Reactor("pausing", returns="wait")


@pausing.step
def wait() -> None:
    """Halts the run."""
    raise rp.Halt("waiting for approval")


cyclic = rp.Reactor("cyclic")


@cyclic.step
def ping(pong: int) -> int:
    return pong


@cyclic.step
def pong(ping: int) -> int:
    return ping


not_a_reactor = 42
