"""Module-level step functions for tests and benchmarks that send steps to other processes.

They live in an importable module because a step travels to a process pool or a dask worker
by reference (its module and qualified name). Cross-process coordination goes through files
in a directory the test passes in; a `threading.Barrier` cannot cross processes.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import reactorpy as rp


def square(n: int) -> int:
    """n squared."""
    return n * n


def add(square: int, n: int) -> int:
    """The square plus n."""
    return square + n


def whoami(tag: str) -> tuple[str, int]:
    """The tag and the id of the process the step ran in."""
    return tag, os.getpid()


def where() -> tuple[int, str]:
    """The id of the process and the name of the thread the step ran in."""
    return os.getpid(), threading.current_thread().name


def noop() -> None:
    """Nothing at all: measures the cost of a round trip."""


@rp.step
def cube(n: int) -> int:
    """n cubed (a decorated module-level step: pickles by reference to this Step)."""
    return n * n * n


def spin(loops: int) -> int:
    """Burn CPU in pure Python for `loops` iterations."""
    total = 0
    for i in range(loops):
        total += i % 7
    return total


def alone(tag: str, folder: str, wait: float) -> bool:
    """Whether no other step ran at any moment while this one ran.

    Each call leaves ``start-<tag>`` when it begins and ``end-<tag>`` when it returns. It
    waits up to `wait` seconds for another call that had not ended before this one began;
    seeing one means the two overlapped. Under a limit of one there is never such a call,
    so it returns True whatever the timing; without a limit both calls see each other.
    """
    here = Path(folder)
    ended_before = {p.name[4:] for p in here.glob("end-*")}
    (here / f"start-{tag}").touch()

    def others() -> set[str]:
        started = {p.name[6:] for p in here.glob("start-*")}
        return started - ended_before - {tag}

    try:
        deadline = time.monotonic() + wait
        while not others() and time.monotonic() < deadline:
            time.sleep(0.005)
        return not others()
    finally:
        (here / f"end-{tag}").touch()


def fails_once(folder: str) -> int:
    """Fail with ValueError on the first call, leaving a marker file; return the pid after."""
    marker = Path(folder) / "failed-once"
    if not marker.exists():
        marker.touch()
        raise ValueError("first attempt fails")
    return os.getpid()


def always_fails(n: int) -> int:
    """Fail with ValueError, for compensation and undo tests."""
    raise ValueError(f"no good: {n}")


def wait_for_file(folder: str, name: str) -> str:
    """Block until `folder/name` exists (at most 60 s), so a test controls when it returns."""
    path = Path(folder) / name
    deadline = time.monotonic() + 60
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return name


class Stubborn(Exception):
    """An exception that pickles but does not unpickle (its __init__ takes two arguments)."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}-{b}")


def raises_stubborn() -> None:
    """Raise an exception that cannot be sent back to the parent."""
    raise Stubborn(1, 2)


def returns_lock() -> threading.Lock:
    """Return a value that cannot be pickled."""
    return threading.Lock()
