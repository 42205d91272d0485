"""The mutable state of one run: per-step arrays and the run's flags.

Owns: `RunState` and the step statuses. Everything a run changes while it runs lives here
(the definition and the plan never change), so one reactor can run many times at once.
Must not import: the rest of the executor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Final

from .._errors import _UNSET

__all__ = ["DONE", "PENDING", "QUEUED", "RUNNING", "RunState"]

# Step statuses.
PENDING: Final = 0  # not started (not ready, held back, waiting for a slot, or put back)
QUEUED: Final = 1  # ready and handed to a worker, which has not started it yet
RUNNING: Final = 2  # started: its call or attempts are under way
DONE: Final = 3  # completed: its result is in ``vals[i]`` (until released)

_NAMES: Final = ("pending", "queued", "running", "done")


class RunState:
    """Per-step arrays (indexed by plan position ``i``, ``n`` steps) and the run's flags.

    Invariants, between scheduler calls:
    - ``remaining[i]``: dependencies of ``i`` not done yet; a step starts only at 0.
    - ``readers_left[i]``: steps that read ``i``'s result and have not completed; once it
      is 0 the result is released (``vals[i] = None``) unless ``keep[i]`` (the run returns
      it, or returns every result).
    - ``status[i]`` is one of `PENDING`, `QUEUED`, `RUNNING`, `DONE`; ``n_done`` counts
      `DONE`. A step is started once per run, unless it went back to `PENDING` (the run
      stopped before it ran, or it halted or waits to retry when the run halts).
    - ``holding[i]``: 1 while step ``i`` holds a slot of the run's limiter (from the moment
      it is handed a slot until it ends or is put back), 0 otherwise.
    - ``workers``: the live worker tasks, by a key of their own. The run's coordinator is
      woken when every step is done and no worker is left, or when the run is stopping and
      no worker is left.
    - ``waiting``: steps of this run queued in the limiter for a slot (a run whose steps
      all wait for slots another run holds is idle, not stuck).
    - ``writes``: completions appended to the run's journal and not yet durable; the steps
      each made ready start when it is, and the run does not end before every one is.
      ``handoff``: the last of them that made steps ready, appended alone, while no worker
      has claimed it (a worker left with nothing to start waits for it and starts them
      itself). ``batch``: while a worker starts steps one after another, the completions
      not yet appended (they go in one request when it stops); None otherwise.
    - ``gate``: running steps with ``async_=False``; while it is > 0 no new step starts,
      and ready steps wait in ``held`` (those holding a slot keep it).
    - Once ``stopping`` is set (an error stood, a step halted, the timeout passed, or the
      run was cancelled) no step starts and no attempt begins.
    - ``linked``: the running child runs of new steps (`rp.NewSteps`) of this run; when it
      halts they halt too (``follows`` is set on theirs), keeping what they completed.
    """

    __slots__ = (
        "abandoned",
        "attempts",
        "batch",
        "errors",
        "failed_steps",
        "fatal",
        "follows",
        "gate",
        "gated",
        "halt_reason",
        "halt_step",
        "handoff",
        "held",
        "holding",
        "hook_errors",
        "left",
        "lent",
        "linked",
        "n_done",
        "ran",
        "readers_left",
        "remaining",
        "status",
        "stop_waiters",
        "stopping",
        "vals",
        "waiting",
        "wakeup",
        "workers",
        "writes",
    )

    def __init__(self, vals: list[Any], ndeps: Any, readers: Any, n: int) -> None:
        self.vals = vals
        self.remaining = list(ndeps)
        self.readers_left = list(readers)
        self.status = bytearray(n)
        self.attempts = [0] * n
        self.holding = bytearray(n)
        self.lent = [0] * n  # nested runs borrowing step i's slot (see `Run.lend`)
        self.gated = bytearray(n)  # 1 while async_=False step i holds back new starts
        self.n_done = 0
        self.ran = 0  # steps started so far (workers let the loop run every so many)
        self.gate = 0
        self.held: list[int] = []
        self.waiting = 0  # steps of this run in the limiter's queue
        self.writes = 0  # completions written to the journal, not yet durable
        self.handoff: Any = None  # a `durable.Write` a worker may wait for
        self.batch: Any = None  # the `durable.Write` a worker's pass fills, if any
        self.workers: dict[int, asyncio.Task[None]] = {}
        self.stopping = False
        self.errors: list[BaseException] = []  # standing step errors, in order
        self.failed_steps: list[str] = []  # the step of each of `errors`
        self.fatal: BaseException | None = None  # a BaseException to re-raise after undo
        self.halt_reason: Any = _UNSET
        self.halt_step: str | None = None
        self.hook_errors: list[BaseException] = []  # middleware failures in ending paths
        self.abandoned: list[str] = []  # steps left running in threads or processes
        self.stop_waiters: set[asyncio.Future[None]] = set()  # backoffs to cut short
        self.wakeup: asyncio.Future[None] | None = None
        self.linked: set[Any] = set()  # child runs of new steps, halting with this one
        self.follows = False  # a run of new steps: it halts when its parent does
        # Composite steps whose children's undo failed: never retried (they would run again
        # over what it left), whatever error it came with (a cancellation's note, say).
        self.left: set[int] = set()

    def fail_halt_over_left(self, names: Sequence[str]) -> None:
        """A run that halts while a composite step whose children's undo failed is pending
        (`left`: cut by the halt, their rollback failed) fails instead: resumed, the step
        would run again over what the failed undo left. `names`: the steps' names."""
        if not self.left or not self.halting:
            return
        for i in sorted(self.left):
            if self.status[i] != DONE:
                self.errors.append(
                    RuntimeError(
                        f"step {names[i]!r} was cut short by the halt and its children could "
                        "not undo what they did: it cannot run again on resume"
                    )
                )
                self.failed_steps.append(names[i])

    @property
    def halting(self) -> bool:
        """Whether the run stops for a halt (a step halted, or the timeout passed), not
        for an error."""
        return self.halt_reason is not _UNSET and not self.errors and self.fatal is None

    def __repr__(self) -> str:
        counts = [0, 0, 0, 0]
        for s in self.status:
            counts[s] += 1
        flags = []
        if self.stopping:
            flags.append("stopping")
        if self.errors:
            flags.append(f"{len(self.errors)} errors")
        if self.fatal is not None:
            flags.append(f"fatal={self.fatal!r}")
        if self.halt_reason is not _UNSET:
            flags.append(f"halting={self.halt_reason!r}")
        if self.gate:
            flags.append(f"gate={self.gate}")
        steps = ", ".join(f"{c} {name}" for c, name in zip(counts, _NAMES, strict=True) if c)
        return (
            f"<RunState {steps or 'no steps'}; {len(self.workers)} workers, "
            f"{sum(self.holding)} slots held{'; ' if flags else ''}{', '.join(flags)}>"
        )
