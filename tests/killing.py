"""Killing a child process with SIGKILL at the moment a test chooses (the durable-run tests
crash their runs so: `kill_when`)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable

__all__ = ["kill_when"]


def kill_when(child: subprocess.Popen[str], reached: Callable[[], bool]) -> None:
    """SIGKILL `child` once `reached()` (polled every 10 ms, for at most a minute); a child
    that ends first, or never gets there, fails the test."""
    try:
        for _ in range(6000):
            if reached():
                break
            if child.poll() is not None:
                raise AssertionError(f"the child ended first: {child.communicate()}")
            time.sleep(0.01)
        else:
            raise AssertionError("the child never got where the test kills it")
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate()
    assert child.returncode == -signal.SIGKILL
