"""A middleware hook that raises while reporting a step's failure (a progress printer whose
pipe closed, say) must still let the run end. Found while making the CLI survive
``| head -1``; the CLI's printers no longer raise, but any user middleware could."""

from __future__ import annotations

import asyncio

import pytest

import reactorpy as rp
from reactorpy._events import Event
from reactorpy.testing import run_virtual


class RaisingHook:
    """Raises at every step_complete and step_error, as a print to a closed pipe would."""

    def on_event(self, event: Event) -> None:
        if event.kind in ("step_complete", "step_error"):
            raise OSError("the hook's stream is closed")


def test_a_hook_raising_at_every_step_end_still_ends_the_run() -> None:
    """The run ends with RunFailed (the hook's error as the step's), instead of hanging."""
    many = rp.Reactor("many")
    for k in range(20):

        async def quick(k: int = k) -> int:
            await asyncio.sleep(0)
            return k

        many.step(quick, name=f"s{k}")

    async def main() -> None:
        # On the virtual clock a stuck run reaches this timeout at once.
        await asyncio.wait_for(many.run(middleware=[RaisingHook()]), 60)

    with pytest.raises(rp.RunFailed):
        run_virtual(main())
