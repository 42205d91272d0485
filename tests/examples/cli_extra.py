"""More reactors for the CLI tests: many quick steps (to fill a closed pipe), and one that
leaves a file behind (to prove a run started).

Owns: test fixtures only. Must not import: reactorpy's private modules.
"""

from __future__ import annotations

import asyncio

import reactorpy as rp

many = rp.Reactor("many")

for _k in range(300):

    async def _quick(k: int = _k) -> int:
        await asyncio.sleep(0)
        return k

    many.step(_quick, name=f"step_{_k:03d}")

marker = rp.Reactor("marker", inputs=["path"], returns="touch")


@marker.step
def touch(path: str) -> str:
    """Leaves a file behind: proves that the run started."""
    with open(path, "w") as fh:
        fh.write("ran")
    return path
