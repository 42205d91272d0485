"""Module-level steps used by tests that pickle steps by reference."""

import reactorpy as rp


@rp.step
def double(x: int) -> int:
    """Twice x."""
    return 2 * x
