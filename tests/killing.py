"""Killing a child process with SIGKILL at the moment a test chooses (the durable-run tests
crash their runs so: `kill_when`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["calls", "crash_child", "kill_when", "lines"]


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


def lines(ledger: Path) -> list[str]:
    """The lines of a child's ledger file (none before it exists)."""
    return ledger.read_text().splitlines() if ledger.exists() else []


def calls(ledger: Path, what: str, name: str) -> int:
    """How many ``what name`` lines the ledger holds (calls of a step or an undo)."""
    return sum(1 for line in lines(ledger) if line.split() == [what, name])


def crash_child(
    module: str, db: Path, ledger: Path, reactor: str, run_id: str, prefix: str, **env: str
) -> None:
    """Run `reactor` as `run_id` on the SQLite journal `db` in a process of its own
    (``python -m module SPEC REACTOR RUN_ID``, with ``prefix + key`` set to each of `env`),
    and SIGKILL it once it writes one more ``hang`` line to the ledger."""
    hangs = sum(1 for line in lines(ledger) if line.startswith("hang"))
    environ = {**os.environ, **{f"{prefix}{k}": v for k, v in env.items()}}
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            module,
            json.dumps({"kind": "sqlite", "path": str(db)}),
            reactor,
            run_id,
        ],
        cwd=Path(__file__).resolve().parents[1],
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    kill_when(child, lambda: sum(1 for ln in lines(ledger) if ln.startswith("hang")) > hangs)
