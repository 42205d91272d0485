"""Fault injection for reactorpy: random nested reactors, random faults, and the saga's
invariants checked after each case. Shared by ``tests/test_fuzz.py``,
``tests/test_equivalence.py`` and ``benchmarks/fuzz.py``; it uses the public API only
(``reactorpy`` and ``reactorpy.testing``), so it stays valid across executor rewrites.

A case is a `CaseSpec`: plain data drawn from a seed (`spec_from_seed`) or from a Hypothesis
draw (`Chooser`), printable with `describe`. `run_case` builds the reactors, runs them on a
virtual clock under a real-time watchdog and returns the violations found.

What a case may contain: plain steps (async and sync) and composites (compose, map, switch,
recurse, around) nested up to three deep; steps returning `rp.NewSteps` (alongside, or
replacing the step); per-attempt faults in steps (errors, `rp.Retry`, `rp.Halt` with and
without ``result=``, exceptions that refuse notes, a module-level exception instance raised
again and again, errors wrapped in an ``ExceptionGroup``, a step raising ``CancelledError``);
faults in every callback (compensate returning None / `rp.Continue` / raising `rp.Retry` /
raising; undo raising, raising `rp.Retry` a few times or for ever, raising
``CancelledError``; ``when=`` guards that skip or raise; argument transforms that mark or
raise; middleware hooks, sync and async, that raise); retries with backoff; ``timeout=`` on
steps and on runs; ``wait_for``; ``concurrency_key`` limits; ``async_=False`` steps and runs;
caps 1-4, given as an int or as a `rp.Limiter` shared by up to three concurrent runs; halts
followed by resumes through pickle, through ``Checkpoint.to_json``/``from_json`` or directly,
or by giving up with ``reactor.undo(checkpoint)``; ``run_reversible`` then ``undo()``;
cancellation of the task running ``run()`` after k loop iterations or at a virtual time.

The harness owns a ledger per run (a "chain": the first run and its resumes). Every step that
completes does its side effect by adding an entry under a fresh execution id, and returns a
token ``"<step>#<digest>!<exec id>"`` whose digest is computed from the data of the arguments
it received, so the value of every step is known in advance (`evaluate`). Every undo call
names the execution it undoes and is logged with a global order counter.

Invariants checked after each case (the violation kinds of `Violation.kind`):

- ``undo_twice``: an execution is undone at most once (no undo call after one that
  succeeded or failed for good; at most 5 calls for undos that keep raising `rp.Retry`).
- ``undo_lost``: when a chain fails, is cancelled, or is undone (``reactor.undo`` after a
  halt, ``Reversible.undo``), every completed undoable execution is undone, and an undo that
  asked to be retried fewer than 5 times is retried to success (``undo_retry_abandoned``).
- ``undo_on_success``: when a chain succeeds, no execution is undone unless a later execution
  of the same step instance replaced it (a retried composite, a map/recurse/around re-run
  after a halt, as the README documents) or a compensate/around wrapper absorbed its
  child's failure; ``duplicate_effect``: and at most one undoable execution per step
  instance is left in the ledger.
- ``undo_order``: undo goes newest first, as a partial order: steps of one run by completion
  order, a composite's children as a unit placed at the composite's completion (known for
  sure only when a dependent step started after it, or a sibling completed before the
  children did), a step that returned new steps at its return and its new steps as a unit
  at its completion, recurse iterations and map batches in order; concurrent completions
  are incomparable.
- ``rerun_on_resume``: a step completed before a halt is not run again after a resume,
  unless its earlier execution was undone first, or it sits inside a map, recurse or around
  step (re-run by design), or a composite that failed and stayed pending. A step that
  returned new steps, and the new steps that completed, are not run again either: resume
  continues new steps that halted.
- ``wrong_value``: each step receives exactly the values of the steps it reads (checked
  against `evaluate` for its own inputs, and against the ledger: no value of an undone or
  unknown execution); ``wrong_undo_args``: undo gets the arguments the step got;
  ``wrong_result``: a chain that succeeds returns `evaluate`'s value.
- ``cap_exceeded``: the async steps running at once stay within the run's cap (1 for
  ``async_=False`` runs), the shared limiter's cap and each ``concurrency_key``'s limit.
- ``limiter_leak``: after every run, the shared limiter has no slot taken and nobody waiting.
- ``task_leak``: no task started by a run is alive after it returns.
- ``unexpected_exception``: only `rp.RunFailed`, `rp.Halted` and (when the case cancelled
  the run) ``CancelledError`` escape ``run()``; ``spurious_cancel``: a ``CancelledError``
  nobody asked for; ``swallowed_cancel``: the run was cancelled and did not raise it;
  ``spurious_failure``/``spurious_halt``: a failure or halt with nothing injected;
  ``wrong_blame``: `RunFailed` names a step that did not fail.
- ``middleware_ending``: each run that started gets exactly one ending hook.
- ``hang``: the case did not end within the virtual-time bound; ``hang_real``: the loop did
  not end within the real-time watchdog (it is then stopped).
- ``harness_error``: the harness itself broke (a bug in this module, not the library).

Before trusting it, the library was broken on purpose in a scratch copy (never committed),
one sabotage at a time; ``benchmarks/fuzz.py --cases 400 --seed 100000`` reported the kinds
below as "unexplained" (no known bug's shape explains them), and the Hypothesis properties
(``--hypothesis-seed=1``) named failed:

- skip every third undo (``Run._undo_all``): undo_lost (19 cases); fuzz property.
- undo twice (``Run._undo_one`` calls the callback again): undo_twice (91); fuzz property.
- undo oldest first (``Run._undo_all`` pops the bottom): undo_order (39); fuzz property.
- leak the slot of some steps (``Run._release``): limiter_leak (49), hang (18); both
  properties.
- release a result one reader early (``Run._record``): wrong_value (23), wrong_result (4);
  equivalence property.
- drop tasks (``Run._cancel_tasks`` cancels nothing): task_leak (60), undo_order (10),
  undo_lost (8), rerun_on_resume (6) and more; the script only.
- ignore the cap (``Limiter._free`` always true): cap_exceeded (83); fuzz property.
- resume redoes some completed steps (``Run._restore``): rerun_on_resume (56),
  duplicate_effect (21); both properties.
- swallow outside cancellation (``Run.execute`` returns): wrong_result (36),
  undo_on_success (15) [1]_; fuzz property.
- never tell a run its last step completed (``Run._wake_coordinator``): hang (34); both
  properties.
- one more retry when events are observed (``Run._attempts``): not compared by the script;
  equivalence property.

.. [1] and swallowed_cancel (35), counted as the known bug ``shielded_swallows_cancel``:
   a known bug explains its kinds in every case of its shape.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import inspect
import itertools
import json
import pickle
import random
import threading
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import reactorpy as rp
from reactorpy.testing import Recorder, VirtualClockLoop

T = TypeVar("T")

# Bounds: a case that runs longer than this on the virtual clock is a hang; the real-time
# watchdog stops a loop that does not end (nothing waits on a timer any more, or it spins).
VIRTUAL_BOUND = 5_000.0
REAL_BOUND = 20.0
MAX_PHASES = 4  # a chain resumes at most MAX_PHASES - 1 times, then gives up (undo)
UNDO_ATTEMPTS = 5  # what the README promises an undo raising rp.Retry


# ------------------------------------------------------------------------ injected faults
class Boom(ValueError):
    """A step's injected error."""


class Flaky(ConnectionError):
    """A step's injected error that ``retry_on`` matches."""


class UndoBoom(OSError):
    """An undo callback's injected error."""


class CompensateBoom(ValueError):
    """A compensate callback's injected error."""


class GuardBoom(ValueError):
    """A ``when=`` guard's injected error."""


class TransformBoom(ValueError):
    """An argument transform's injected error."""


class WrapperBoom(ValueError):
    """An around wrapper's injected error."""


class HookBoom(RuntimeError):
    """A middleware hook's injected error."""


@dataclasses.dataclass(frozen=True)
class Declined(Exception):
    """An exception that refuses notes: ``add_note`` raises ``FrozenInstanceError``."""

    code: str


# One instance, raised by different steps in different runs (notes must not pile up on it,
# nor say which step failed).
SHARED = LookupError("not found (a module-level instance)")

INJECTED = (
    Boom,
    Flaky,
    UndoBoom,
    CompensateBoom,
    GuardBoom,
    TransformBoom,
    WrapperBoom,
    HookBoom,
    Declined,
    TimeoutError,
    rp.Retry,
)


# ------------------------------------------------------------------------------- choosing
class Chooser:
    """Random choices from a seed; `DrawChooser` makes the same ones from a Hypothesis draw
    (so Hypothesis shrinks a case towards the first option and towards "no fault")."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def int(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def choice(self, options: Sequence[T]) -> T:
        return options[self.rng.randrange(len(options))]

    def chance(self, p: float) -> bool:
        return self.rng.random() < p


class DrawChooser(Chooser):
    """`Chooser` over a Hypothesis ``draw``."""

    def __init__(self, draw: Callable[[Any], Any]) -> None:
        from hypothesis import strategies as st

        self.draw = draw
        self.st = st

    def int(self, lo: int, hi: int) -> int:
        return int(self.draw(self.st.integers(lo, hi)))

    def choice(self, options: Sequence[T]) -> T:
        return options[self.draw(self.st.integers(0, len(options) - 1))]

    def chance(self, p: float) -> bool:
        if p <= 0:
            return False
        # Shrinks towards 0, that is towards False.
        return bool(self.draw(self.st.integers(0, 999)) >= 1000 * (1 - p))


# ---------------------------------------------------------------------------------- specs
@dataclass
class Read:
    """A parameter of a step: where it comes from, and how."""

    param: str
    source: str  # a step of the same reactor, or an input ("x", "seed")
    transform: str = "none"  # "none" | "mark" (a known change) | "raise"
    explicit: bool = False  # args={param: rp.Result/rp.Input(source)} rather than by name


@dataclass
class NewSpec:
    """A step made at run time (`rp.NewSteps`)."""

    name: str
    is_async: bool
    outcomes: list[str]
    undo: str | None  # None | "ok" | "async_ok" | "raise"
    reads_previous: bool = False  # reads the new step made before it


@dataclass
class SpawnSpec:
    """What a step returns instead of a value: new steps alongside it, or a replacement."""

    mode: str  # "side" | "replace"
    new: list[NewSpec] = field(default_factory=list)
    depth: int = 1  # for "replace": how many replacements before the value


@dataclass
class Leaf:
    """A step running a function of ours."""

    name: str
    is_async: bool = True
    reads: list[Read] = field(default_factory=list)
    wait_for: list[str] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)  # attempt k (from 1): outcomes[k-1]
    sleeps: list[float] = field(default_factory=list)  # before each attempt's outcome
    error: str = "boom"  # what "fail" raises: boom|flaky|declined|shared|group
    retries: int = 0
    retry_on: bool = False  # retry_on=Flaky
    backoff: Any = None  # None | seconds | "fn"
    timeout: float | None = None
    undo: str | None = None
    undo_async: bool = False
    undo_reads: list[str] = field(default_factory=list)
    compensate: str | None = None  # None|"none"|"continue"|"retry"|"raise"
    compensate_async: bool = False
    compensate_sleep: float = 0.0
    when: str | None = None  # None|"pass"|"skip"|"raise"
    key: str | None = None  # concurrency_key="k"
    exclusive: bool = False  # async_=False
    shape: str = "token"  # "token" | "list:<n>" | "dict"
    spawn: SpawnSpec | None = None
    kind: str = "leaf"

    def outcome(self, attempt: int) -> str:
        return self.outcomes[attempt - 1] if attempt <= len(self.outcomes) else "ok"

    def sleep(self, attempt: int) -> float | None:
        if not self.is_async:
            return None
        return self.sleeps[attempt - 1] if attempt <= len(self.sleeps) else None


@dataclass
class Composite:
    """compose, map, switch, recurse or around."""

    name: str
    kind: str
    x_from: str  # where the child's input x comes from (map: the list to map over)
    x_transform: bool = False
    wait_for: list[str] = field(default_factory=list)
    children: list[Any] = field(default_factory=list)  # ReactorSpec | Leaf (map, switch)
    batch_size: int = 100
    max_iterations: int = 1
    until: bool = False
    wrapper: str = "plain"  # plain|sleep|catch|raise_after|raise_before
    on: str = ""  # switch: the value the predicates look at
    default: bool = False  # switch: the last child is the default
    retries: int = 0  # retry_on=rp.RunFailed
    compensate: str | None = None  # None | "continue"
    timeout: float | None = None


@dataclass
class ReactorSpec:
    name: str
    steps: list[Any]  # Leaf | Composite, in definition order
    returns: str | None
    child: bool  # child reactors take one input, x; the top one "seed" and "items"
    items: int = 0


@dataclass
class HookSpec:
    """A middleware object: ``kind`` is recorder|trace|sync|async|async_yield; ``raise_on``
    names the hook (``on_event:<kind>`` or ``on_run_start`` ...) and the call that raises
    first; ``persist`` keeps raising from then on (a closed pipe)."""

    kind: str
    raise_on: str | None = None
    nth: int = 1
    persist: bool = False
    error: str = "hook"  # "hook" | "declined"
    where: str = "run"  # "run" (run(middleware=)) | "reactor" (Reactor(middleware=))


@dataclass
class CaseSpec:
    seed: int | None
    top: ReactorSpec
    runs: int = 1
    shared: int | None = None  # a Limiter(shared) given to every run
    cap: int | None = None  # each run's own cap (when not shared)
    cap_as_limiter: bool = False
    key_limit: int | None = None  # limits={"k": n}
    async_: bool = True
    grace: float = 5.0
    run_timeout: float | None = None
    hooks: list[HookSpec] = field(default_factory=list)
    resume: list[str] = field(default_factory=list)  # per halt: pickle|json|direct|giveup
    cancel: tuple[int, str, float] | None = None  # (run, "iterations"|"time", amount)
    reversible: str | None = None  # None | "keep" | "undo" | "undo_json"
    mode: str = "fuzz"


@dataclass(frozen=True)
class Profile:
    """Probabilities of the generator (the Hypothesis test lowers the known bugs' ones)."""

    composite: float = 0.35
    fault: float = 0.35
    undo: float = 0.6
    compensate: float = 0.2
    guard: float = 0.15
    transform: float = 0.2
    wait_for: float = 0.3
    spawn: float = 0.1
    hooks: float = 0.35
    hook_raise: float = 0.3
    cancel: float = 0.2
    declined: float = 0.05
    self_cancel: float = 0.02
    groups: float = 0.03
    undo_cancel: float = 0.03
    shared_error: float = 0.05
    max_leaves: int = 22


FUZZ = Profile()
# The Hypothesis property's: the features of known bugs (which it skips) are rarer.
HYPOTHESIS = Profile(
    wait_for=0.12,
    spawn=0.06,
    compensate=0.12,
    declined=0.0,
    self_cancel=0.0,
    groups=0.0,
    undo_cancel=0.0,
    shared_error=0.0,
    max_leaves=14,
)


# ----------------------------------------------------------------------------- generating
class _Gen:
    def __init__(self, ch: Chooser, profile: Profile, mode: str) -> None:
        self.ch = ch
        self.p = profile
        self.mode = mode
        self.count = 0
        self.leaves = 0

    def fresh(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def sample(self, items: Sequence[T], most: int, p: float) -> list[T]:
        out = [x for x in items if self.ch.chance(p)]
        return out[:most]

    # -- leaves --------------------------------------------------------------------------
    def outcomes(self, leaf: Leaf, tail: bool, unit: bool) -> None:
        """Per-attempt outcomes (and the options they need)."""
        ch, p = self.ch, self.p
        equiv = self.mode == "equiv"
        n = ch.int(1, 3)
        outs: list[str] = []
        for k in range(n):
            if not ch.chance(p.fault if k == 0 else p.fault / 2):
                outs.append("ok")
                break
            options = ["fail", "retry"]
            if not equiv or tail:
                options += ["halt", "halt_result"]
            if not equiv:
                if ch.chance(p.self_cancel):
                    options.append("cancel")
                if ch.chance(p.groups):
                    options += ["group_halt", "group_retry"]
            outs.append(ch.choice(options))
        leaf.outcomes = outs
        leaf.error = "boom"
        if "fail" in outs:
            errors = ["boom", "flaky"]
            if ch.chance(p.declined):
                errors.append("declined")
            if ch.chance(p.shared_error):
                errors.append("shared")
            if ch.chance(p.groups):
                errors.append("group")
            leaf.error = ch.choice(errors)
        faults = [o for o in outs if o != "ok"]
        if faults and ch.chance(0.6):
            leaf.retries = ch.int(1, 3)
            leaf.retry_on = leaf.error == "flaky" or ch.chance(0.3)
            leaf.backoff = ch.choice([None, 0.5, 1.0, "fn"])
        if equiv and tail and ch.chance(0.25):
            # A step that runs out of retries (how many attempts an observer sees, and
            # what the step's error is then, must not depend on the observer).
            leaf.retries = ch.int(1, 2)
            leaf.retry_on = True
            leaf.error = "flaky"
            leaf.outcomes = [ch.choice(["retry", "fail"]) for _ in range(leaf.retries + 1)]
            faults = list(leaf.outcomes)
        if equiv and not tail:
            # Nothing fails before the tail: every attempt that fails is retried, or
            # compensated with a value.
            if faults:
                leaf.retries = max(leaf.retries, len(faults))
                if leaf.error != "flaky":
                    leaf.error = "flaky"
                leaf.retry_on = True
        if leaf.is_async:
            leaf.sleeps = [ch.choice([0.0, 0.0, 1.0, 2.0, 3.0]) for _ in leaf.outcomes]
            if ch.chance(0.15) and not equiv:
                leaf.timeout = ch.choice([1.5, 2.5, 10.0])

    def leaf(
        self,
        avail: list[str],
        child: bool,
        *,
        shape: str = "token",
        unit: bool = False,
        tail: bool = True,
        producers: Sequence[str] = (),
    ) -> Leaf:
        ch, p = self.ch, self.p
        equiv = self.mode == "equiv"
        self.leaves += 1
        leaf = Leaf(self.fresh("s"), is_async=ch.chance(0.65), shape=shape)
        plain_unit = unit and ch.chance(0.4)
        if child:
            if unit:
                leaf.reads.append(Read("x", "x"))
            else:
                t = "mark" if ch.chance(p.transform / 2) else "none"
                leaf.reads.append(Read("x", "x", t, explicit=t != "none" or ch.chance(0.2)))
        elif ch.chance(0.3):
            leaf.reads.append(Read("seed", "seed", explicit=ch.chance(0.3)))
        if not unit:
            for src in self.sample(avail, 3, 0.35):
                t = "none"
                if ch.chance(p.transform):
                    t = "mark" if (equiv and not tail) or ch.chance(0.8) else "raise"
                explicit = t != "none" or ch.chance(0.3)
                param = f"p_{src}" if explicit else src
                leaf.reads.append(Read(param, src, t, explicit))
            read = {r.source for r in leaf.reads}
            leaf.wait_for = self.sample([a for a in avail if a not in read], 2, p.wait_for)
        if plain_unit:
            leaf.outcomes = ["ok"] if not ch.chance(p.fault) else [ch.choice(["fail", "halt"])]
            if equiv:
                leaf.outcomes = ["ok"]
            if leaf.is_async:
                leaf.sleeps = [ch.choice([0.0, 1.0])]
            return leaf
        self.outcomes(leaf, tail, unit)
        if ch.chance(p.undo):
            modes = ["ok", "ok", "ok", "raise", "retry1", "retry2", "retry_forever"]
            if not equiv and ch.chance(p.declined):
                modes.append("declined")
            if not equiv and ch.chance(p.undo_cancel):
                modes.append("cancel")
            leaf.undo = ch.choice(modes)
            leaf.undo_async = ch.chance(0.4)
            leaf.undo_reads = [r.param for r in leaf.reads if ch.chance(0.5)]
        if ch.chance(p.compensate) or (equiv and not tail and leaf.outcomes[0] == "fail"):
            leaf.compensate = ch.choice(["continue", "none", "retry", "raise"])
            if equiv and not tail:
                leaf.compensate = "continue"
            leaf.compensate_async = ch.chance(0.4)
            if leaf.compensate_async and ch.chance(0.5):
                leaf.compensate_sleep = 1.0
        if ch.chance(p.guard) and shape == "token" and leaf.name not in producers:
            leaf.when = ch.choice(
                ["pass", "skip", "raise"] if not (equiv and not tail) else ["pass", "skip"]
            )
        if leaf.is_async and ch.chance(0.2) and not unit:
            leaf.key = "k"
        if ch.chance(0.08) and not unit:
            leaf.exclusive = True
        if ch.chance(p.spawn) and shape == "token" and not unit and leaf.when != "skip":
            leaf.spawn = self.spawn()
        return leaf

    def barrier(
        self, steps: list[Leaf | Composite], child: bool, after: Leaf | Composite | None
    ) -> Leaf:
        """A step that does nothing but read every step so far (so it runs after them)."""
        b = Leaf(self.fresh("s"), is_async=False, outcomes=["ok"])
        if child:
            b.reads.append(Read("x", "x"))
        b.reads += [Read(f"after_{s.name}", s.name, explicit=True) for s in steps]
        return b

    def spawn(self) -> SpawnSpec:
        ch = self.ch
        equiv = self.mode == "equiv"
        if ch.chance(0.5):
            return SpawnSpec("replace", depth=ch.int(1, 2))
        new = []
        for k in range(ch.int(1, 2)):
            outs = ["ok"]
            if not equiv and ch.chance(self.p.fault / 2):
                outs = [ch.choice(["fail", "halt"])]
            new.append(
                NewSpec(
                    name=f"n{k}",
                    is_async=ch.chance(0.6),
                    outcomes=outs,
                    undo=ch.choice(
                        [None, "ok", "async_ok", "raise"] if not equiv else [None, "ok"]
                    ),
                    reads_previous=k > 0 and ch.chance(0.5),
                )
            )
        return SpawnSpec("side", new=new)

    # -- composites ----------------------------------------------------------------------
    def composite(
        self,
        depth: int,
        avail: list[Leaf | Composite],
        child: bool,
        tail: bool,
        after: str | None = None,
    ) -> list[Leaf | Composite]:
        """A composite (and the step making its input, if it needs one); `after`: a step
        it must start after (its input, or what its input step reads)."""
        ch = self.ch
        equiv = self.mode == "equiv"
        kind = ch.choice(["compose", "map", "switch", "recurse", "around"])
        made: list[Leaf | Composite] = []
        # x comes from a step whose value is a token (never None): a leaf, no skip guard.
        sources = [s.name for s in avail if isinstance(s, Leaf) and s.when != "skip"]
        if kind == "map":
            n = ch.int(1, 3)
            if not child and after is None and ch.chance(0.4):
                x_from = "items"
            else:
                producer = self.leaf([s.name for s in avail], child, shape=f"list:{n}", tail=tail)
                producer.spawn = None
                if after is not None and after not in {r.source for r in producer.reads}:
                    producer.reads.append(Read(f"after_{after}", after, explicit=True))
                made.append(producer)
                x_from = producer.name
        elif after is not None:
            x_from = after
        elif sources or not child:
            x_from = ch.choice(sources) if sources and ch.chance(0.8) else "seed"
            if child and x_from == "seed":
                x_from = sources[0]
        else:
            first = self.leaf([s.name for s in avail], child, tail=tail)
            first.when = None
            first.spawn = None
            made.append(first)
            x_from = first.name
        c = Composite(self.fresh("c"), kind, x_from)
        c.x_transform = kind != "map" and ch.chance(self.p.transform / 2)
        inner_tail = tail
        if kind == "compose":
            c.children = [self.reactor(depth + 1, "compose", tail=inner_tail)]
        elif kind == "recurse":
            c.children = [self.reactor(depth + 1, "recurse", tail=inner_tail)]
            c.max_iterations = ch.int(1, 3)
            c.until = ch.chance(0.3)
        elif kind == "around":
            c.children = [self.reactor(depth + 1, "around", tail=inner_tail)]
            c.wrapper = ch.choice(["plain", "sleep", "catch", "raise_after", "raise_before"])
            if equiv and not tail:
                c.wrapper = ch.choice(["plain", "sleep"])
        elif kind == "switch":
            branches = ch.int(1, 2)
            for _ in range(branches):
                if ch.chance(0.5):
                    c.children.append(self.reactor(depth + 1, "switch", tail=inner_tail))
                else:
                    c.children.append(self.leaf([], True, unit=True, tail=inner_tail))
            c.default = ch.chance(0.5)
            names = [s.name for s in avail if isinstance(s, Leaf) and s.shape == "token"]
            c.on = ch.choice(names) if names and ch.chance(0.5) else c.x_from
        else:  # map
            if ch.chance(0.5):
                c.children = [self.leaf([], True, unit=True, tail=inner_tail and not equiv)]
            else:
                c.children = [self.reactor(depth + 1, "map", tail=inner_tail and not equiv)]
            c.batch_size = ch.choice([1, 2, 100])
        if kind != "switch" or True:
            prior = [s.name for s in avail if s.name != c.x_from]
            c.wait_for = self.sample(prior, 1, self.p.wait_for / 2)
        if ch.chance(0.15) and not (equiv and not tail):
            c.retries = 1
        if ch.chance(0.1) and not equiv:
            c.compensate = "continue"
        if ch.chance(0.05) and not equiv:
            c.timeout = ch.choice([2.0, 50.0])
        made.append(c)
        return made

    # -- reactors ------------------------------------------------------------------------
    def reactor(self, depth: int, role: str, tail: bool = True) -> ReactorSpec:
        ch, p = self.ch, self.p
        child = role != "top"
        equiv = self.mode == "equiv"
        name = self.fresh("r")
        most = 5 if not child else (3 if depth < 3 else 2)
        n = ch.int(1, most)
        steps: list[Leaf | Composite] = []
        # In "equiv" mode: steps before the tail never fail; the tail is a chain after them,
        # where steps may fail or halt (if `tail`: the composite running this reactor is
        # in its parent's tail, so nothing else runs meanwhile). Each tail step reads the
        # one before it (wait_for edges would have the shape of a known bug), the first
        # one a barrier step that reads every step before the tail.
        n_tail = ch.int(0, 2) if equiv else 0
        prev: Leaf | Composite | None = None
        for k in range(n + n_tail):
            in_tail = not equiv or (k >= n and tail)
            if equiv and k >= n and (prev is None or not _usable_input(prev)):
                prev = self.barrier(steps, child, after=prev)
                steps.append(prev)
            if depth < 3 and self.leaves < p.max_leaves and ch.chance(p.composite / (depth + 1)):
                after = prev.name if equiv and k >= n and prev is not None else None
                made = self.composite(depth, steps, child, in_tail if equiv else tail, after)
            else:
                leaf = self.leaf([s.name for s in steps], child, tail=in_tail if equiv else tail)
                if equiv and k >= n and prev is not None:
                    if prev.name not in {r.source for r in leaf.reads}:
                        leaf.reads.append(Read(f"after_{prev.name}", prev.name, explicit=True))
                    leaf.wait_for = []
                made = [leaf]
            if equiv and k >= n:
                prev = made[-1]
            steps.extend(made)
        returns: str | None
        if role == "recurse":
            ret = self.leaf([s.name for s in steps], True, shape="dict", tail=tail)
            ret.spawn = None
            ret.when = None
            if equiv:  # it returns after every other step: it reads them all
                read = {r.source for r in ret.reads}
                ret.reads += [
                    Read(f"after_{s.name}", s.name, explicit=True)
                    for s in steps
                    if s.name not in read
                ]
                ret.wait_for = []
            steps.append(ret)
            returns = ret.name
        elif child:
            returns = ch.choice([s.name for s in steps])
        else:
            returns = ch.choice([None, *[s.name for s in steps]])
        order = list(steps)
        if ch.chance(0.5):
            random.Random(ch.int(0, 1 << 30)).shuffle(order)
        return ReactorSpec(name, order, returns, child, items=ch.int(1, 3) if not child else 0)


def _usable_input(s: Leaf | Composite) -> bool:
    """Whether a composite may take its input from `s` (a token that is never None)."""
    return isinstance(s, Leaf) and s.shape == "token" and s.when != "skip"


def generate(ch: Chooser, profile: Profile = FUZZ, mode: str = "fuzz") -> CaseSpec:
    """A random case (``mode="equiv"``: one whose outcome does not depend on scheduling)."""
    g = _Gen(ch, profile, mode)
    top = g.reactor(0, "top")
    case = CaseSpec(seed=None, top=top, mode=mode)
    if mode == "equiv":
        case.resume = [ch.choice(["pickle", "json", "direct"]) for _ in range(MAX_PHASES)]
        return case
    case.runs = ch.choice([1, 1, 2, 3])
    if ch.chance(0.4):
        case.shared = ch.int(1, 4)
    elif ch.chance(0.6):
        case.cap = ch.int(1, 4)
        case.cap_as_limiter = ch.chance(0.5)
    if ch.chance(0.3) and any(leaf.key == "k" for leaf in leaves(top)):
        case.key_limit = ch.int(1, 2)  # limits naming no step's key are refused
    case.async_ = not ch.chance(0.2)
    case.grace = ch.choice([5.0, 5.0, 0.5, 0.0])
    if ch.chance(0.15):
        case.run_timeout = ch.choice([1.5, 4.0])
    if ch.chance(profile.hooks):
        for _ in range(ch.int(1, 2)):
            kind = ch.choice(["recorder", "sync", "async", "async_yield", "trace"])
            hook = HookSpec(kind, where=ch.choice(["run", "reactor"]))
            if kind in ("sync", "async", "async_yield") and ch.chance(profile.hook_raise):
                hook.raise_on = ch.choice(
                    [
                        "on_event:step_start",
                        "on_event:step_complete",
                        "on_event:step_error",
                        "on_event:undo_start",
                        "on_event:compensate_continue",
                        "on_event:any",
                        "on_run_start",
                        "on_run_complete",
                        "on_run_error",
                        "on_run_halt",
                    ]
                )
                hook.nth = ch.int(1, 4)
                hook.persist = ch.chance(0.3)
                hook.error = "declined" if ch.chance(profile.declined) else "hook"
            case.hooks.append(hook)
    case.resume = [ch.choice(["pickle", "json", "direct", "giveup"]) for _ in range(MAX_PHASES)]
    if ch.chance(profile.cancel):
        case.cancel = (
            ch.int(0, case.runs - 1),
            ch.choice(["iterations", "time"]),
            float(ch.int(0, 30)) if ch.chance(0.5) else float(ch.int(0, 6)),
        )
    if ch.chance(0.15):
        case.reversible = ch.choice(["keep", "undo", "undo_json"])
    return case


def spec_from_seed(seed: int, profile: Profile = FUZZ, mode: str = "fuzz") -> CaseSpec:
    """The case of `seed` (what ``benchmarks/fuzz.py --replay SEED`` runs)."""
    case = generate(Chooser(seed), profile, mode)
    case.seed = seed
    return case


# ----------------------------------------------------------------------------- describing
def _leaf_line(s: Leaf) -> str:
    bits = [f"{s.name}: {'async' if s.is_async else 'def'}"]
    if s.reads:
        reads = []
        for r in s.reads:
            t = "" if r.transform == "none" else f"~{r.transform}"
            how = "=" if r.explicit else ""
            reads.append(f"{r.param}{how}{'<-' + r.source if r.explicit else ''}{t}")
        bits.append(f"reads({', '.join(reads)})")
    if s.wait_for:
        bits.append(f"wait_for={s.wait_for}")
    if s.outcomes != ["ok"]:
        bits.append(f"attempts={s.outcomes}")
    if s.error != "boom" and "fail" in s.outcomes:
        bits.append(f"error={s.error}")
    if any(s.sleeps):
        bits.append(f"sleeps={s.sleeps}")
    if s.retries:
        bits.append(f"retries={s.retries}" + (" retry_on=Flaky" if s.retry_on else ""))
        if s.backoff is not None:
            bits.append(f"backoff={s.backoff}")
    if s.timeout is not None:
        bits.append(f"timeout={s.timeout}")
    if s.undo:
        bits.append(f"undo={s.undo}{'(async)' if s.undo_async else ''}")
        if s.undo_reads:
            bits.append(f"undo_reads={s.undo_reads}")
    if s.compensate:
        how = f"(async, sleeps {s.compensate_sleep:g})" if s.compensate_async else ""
        bits.append(f"compensate={s.compensate}{how}")
    if s.when:
        bits.append(f"when={s.when}")
    if s.key:
        bits.append("key=k")
    if s.exclusive:
        bits.append("async_=False")
    if s.shape != "token":
        bits.append(f"returns {s.shape}")
    if s.spawn:
        if s.spawn.mode == "replace":
            bits.append(f"NewSteps(replace x{s.spawn.depth})")
        else:
            new = ", ".join(
                f"{n.name}:{'async' if n.is_async else 'def'} {n.outcomes} undo={n.undo}"
                + (" reads previous" if n.reads_previous else "")
                for n in s.spawn.new
            )
            bits.append(f"NewSteps(alongside: {new})")
    return " ".join(bits)


def _describe_reactor(r: ReactorSpec, indent: str, out: list[str]) -> None:
    inputs = "x" if r.child else f"seed, items[{r.items}]"
    out.append(f"{indent}reactor {r.name}({inputs}) returns={r.returns}")
    for s in r.steps:
        if isinstance(s, Leaf):
            out.append(f"{indent}  {_leaf_line(s)}")
            continue
        bits = [f"{s.name}: {s.kind} x<-{s.x_from}{'~mark' if s.x_transform else ''}"]
        if s.wait_for:
            bits.append(f"wait_for={s.wait_for}")
        if s.kind == "map":
            bits.append(f"batch_size={s.batch_size}")
        if s.kind == "recurse":
            bits.append(f"max_iterations={s.max_iterations}" + (" until=False" if s.until else ""))
        if s.kind == "around":
            bits.append(f"wrapper={s.wrapper}")
        if s.kind == "switch":
            bits.append(f"on={s.on}" + (" (last is default)" if s.default else ""))
        if s.retries:
            bits.append(f"retries={s.retries}")
        if s.compensate:
            bits.append(f"compensate={s.compensate}")
        if s.timeout is not None:
            bits.append(f"timeout={s.timeout}")
        out.append(f"{indent}  {' '.join(bits)}")
        for c in s.children:
            if isinstance(c, ReactorSpec):
                _describe_reactor(c, indent + "    ", out)
            else:
                out.append(f"{indent}    unit {_leaf_line(c)}")


def describe(case: CaseSpec) -> str:
    """The case as text: the run options, then the reactors as an indented tree."""
    opts = [f"runs={case.runs}"]
    if case.shared:
        opts.append(f"shared=Limiter({case.shared})")
    if case.cap:
        opts.append(f"max_concurrency={case.cap}" + (" (a Limiter)" if case.cap_as_limiter else ""))
    if case.key_limit:
        opts.append(f"limits={{'k': {case.key_limit}}}")
    if not case.async_:
        opts.append("async_=False")
    opts.append(f"grace={case.grace}")
    if case.run_timeout:
        opts.append(f"timeout={case.run_timeout}")
    if case.cancel:
        run, how, amount = case.cancel
        unit = "loop iterations" if how == "iterations" else "virtual s"
        opts.append(f"cancel run {run} after {amount:g} {unit}")
    if case.reversible:
        opts.append(f"run_reversible then {case.reversible}")
    opts.append(f"on halt: {case.resume}")
    out = [f"case seed={case.seed} mode={case.mode}: " + " ".join(opts)]
    for h in case.hooks:
        line = f"middleware {h.kind} ({h.where})"
        if h.raise_on:
            line += f" raises {h.error} on {h.raise_on} call #{h.nth}" + (
                " and after" if h.persist else ""
            )
        out.append(line)
    _describe_reactor(case.top, "", out)
    return "\n".join(out)


# ------------------------------------------------------------------------- values & data
def exec_of(value: Any) -> str | None:
    """The execution id a value carries (None for inputs and for None)."""
    if isinstance(value, str):
        return value.rsplit("!", 1)[1] if "!" in value else None
    if isinstance(value, list) and value:
        return exec_of(value[0])
    if isinstance(value, dict) and "x" in value:
        return exec_of(value["x"])
    return None


def data(value: Any) -> Any:
    """A value with its execution ids removed: what `evaluate` predicts."""
    if isinstance(value, str):
        return value.split("!", 1)[0]
    if isinstance(value, list):
        return [data(v) for v in value]
    if isinstance(value, dict):
        return {k: data(v) for k, v in value.items()}
    if value is None:
        return None
    return f"<unexpected {type(value).__name__}: {value!r:.60}>"


def mark(value: Any) -> Any:
    """The ``mark`` transform: a known change to a value (before its execution id)."""
    if isinstance(value, str):
        head, sep, tail = value.partition("!")
        return f"{head}~t{sep}{tail}"
    if isinstance(value, list):
        return [mark(v) for v in value]
    if isinstance(value, dict):
        return {k: mark(v) for k, v in value.items()}
    return value


def refuse(value: Any) -> Any:
    """The ``raise`` transform."""
    raise TransformBoom("transform refused")


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def digest(label: str, args: dict[str, Any]) -> str:
    text = label + canonical(args)
    return hashlib.blake2b(text.encode(), digest_size=5).hexdigest()


def key_of(x: Any) -> str:
    """The instance key of a child run: the data of its input x, without marks or items."""
    d = data(x)
    return canonical(d) if not isinstance(d, str) else d.replace("~t", "")


def pick(on: Any, n: int) -> int:
    """The switch branch for a value (n: branches, the last may be the default)."""
    h = hashlib.blake2b(canonical(data(on)).encode(), digest_size=2).digest()
    return (h[0] * 256 + h[1]) % n


def _switch_choice(c: Composite, on: Any) -> int | None:
    branches = len(c.children) - (1 if c.default else 0)
    k = pick(on, branches + 1)
    if k < branches:
        return k
    return len(c.children) - 1 if c.default else None


def leaf_value(s: Leaf, args: dict[str, Any], label: str | None = None) -> Any:
    """What leaf `s` returns for `args` (data only)."""
    if s.when == "skip":
        return None
    label = label or s.name
    d = f"{label}#{digest(label, args)}"
    if s.shape.startswith("list:"):
        return [f"{d}/{k}" for k in range(int(s.shape[5:]))]
    if s.shape == "dict":
        return {"x": d}
    return d


def _deps(s: Leaf | Composite) -> set[str]:
    if isinstance(s, Leaf):
        return {r.source for r in s.reads} | set(s.wait_for)
    out = {s.x_from, *s.wait_for}
    if s.kind == "switch":
        out.add(s.on)
    return out


def topo(r: ReactorSpec) -> list[Leaf | Composite]:
    names = {s.name: s for s in r.steps}
    done: set[str] = set()
    order: list[Leaf | Composite] = []

    def visit(s: Leaf | Composite) -> None:
        if s.name in done:
            return
        done.add(s.name)
        for d in sorted(_deps(s)):
            if d in names:
                visit(names[d])
        order.append(s)

    for s in r.steps:
        visit(s)
    return order


def evaluate(r: ReactorSpec, inputs: dict[str, Any]) -> dict[str, Any]:
    """The value of every step of `r` (data only) for these inputs, when nothing fails."""
    vals: dict[str, Any] = dict(inputs)
    for s in topo(r):
        if isinstance(s, Leaf):
            args = {}
            for rd in s.reads:
                v = vals[rd.source]
                args[rd.param] = mark(v) if rd.transform == "mark" else v
            vals[s.name] = leaf_value(s, args)
            continue
        x = vals[s.x_from]
        if s.x_transform:
            x = mark(x)
        vals[s.name] = composite_value(s, x, vals.get(s.on))
    return vals


def unit_value(unit: Leaf | ReactorSpec, x: Any) -> Any:
    if isinstance(unit, Leaf):
        return leaf_value(unit, {"x": x})
    return evaluate(unit, {"x": x})[unit.returns]  # type: ignore[index]


def composite_value(c: Composite, x: Any, on: Any = None) -> Any:
    if c.kind in ("compose", "around"):
        return unit_value(c.children[0], x)
    if c.kind == "map":
        return [unit_value(c.children[0], e) for e in x]
    if c.kind == "switch":
        k = _switch_choice(c, on)
        return None if k is None else unit_value(c.children[k], x)
    out = None
    for _ in range(c.max_iterations):  # recurse
        out = unit_value(c.children[0], x)
        x = out["x"]
    return out


def top_inputs(r: ReactorSpec) -> dict[str, Any]:
    return {"seed": "seed", "items": [f"i{k}" for k in range(r.items)]}


def expected_result(r: ReactorSpec) -> Any:
    vals = evaluate(r, top_inputs(r))
    if r.returns is None:
        return {s.name: vals[s.name] for s in r.steps}
    return vals[r.returns]


# ---------------------------------------------------------------------------- the ledger
@dataclass
class Violation:
    kind: str
    message: str
    chain: int = 0

    def __str__(self) -> str:
        return f"[{self.kind}] (run {self.chain}) {self.message}"


@dataclass
class Exec:
    """One completed execution of a step: its side effect is in the ledger until undone."""

    id: str
    step: str
    slot: tuple[str, str]
    chain: tuple[tuple[str, str], ...]  # the child runs it is in: (composite, instance key)
    phase: int
    c: int  # global completion order
    undoable: bool
    undo_mode: str | None
    delayed: bool  # the engine records it an await after our counter (async compensate)
    args: dict[str, Any]
    calls: list[tuple[int, int, str]] = field(default_factory=list)  # (counter, phase, outcome)
    ambiguous: bool = False
    t: float = 0.0  # the loop's (virtual) time when it completed

    @property
    def undone(self) -> bool:
        return any(o == "ok" for _, _, o in self.calls)

    @property
    def final(self) -> bool:
        """Undone, or its undo failed for good."""
        if not self.calls:
            return False
        o = self.calls[-1][2]
        return o != "retry" or len(self.calls) >= UNDO_ATTEMPTS


_LEDGERS: dict[str, Chain] = {}


class Chain:
    """The ledger of one run and its resumes, and the builder of its reactors."""

    def __init__(self, case: Case, index: int) -> None:
        self.case = case
        self.index = index
        self.key = f"{id(case)}:{index}"
        _LEDGERS[self.key] = self
        self.execs: dict[str, Exec] = {}
        self.attempts: Counter[tuple[str, str]] = Counter()
        self.phase = 0
        self.running = 0
        self.peak = 0
        self.key_running = 0
        self.key_peak = 0
        self.injected_failures = 0
        self.injected_halts = 0
        self.raised_by: set[str] = set()  # steps that raised an error of ours
        self.hook_failed_on: set[str] = set()  # steps whose completion event a hook failed
        # Our counters may not follow the engine's order of completions: an async hook
        # that yields before a completion is recorded, or steps in threads.
        self.loose_order = False
        self.static_faults = False  # a composite with a timeout may fail with TimeoutError
        self.starts: Counter[str] = Counter()
        self.ends: dict[str, list[str]] = {}
        self.start_failed: set[str] = set()
        self.clock: Callable[[], float] = lambda: 0.0  # the loop's time (also from threads)
        self.ref_cache: dict[tuple[str, str], dict[str, Any]] = {}

    def violate(self, kind: str, message: str) -> None:
        self.case.violations.append(Violation(kind, message, self.index))

    def tick(self) -> int:
        return next(self.case.counter)

    # -- steps ---------------------------------------------------------------------------
    def reference(self, r: ReactorSpec, x: Any) -> dict[str, Any]:
        k = (r.name, canonical(data(x)))
        found = self.ref_cache.get(k)
        if found is None:
            inputs = {"x": data(x)} if r.child else top_inputs(r)
            found = self.ref_cache[k] = evaluate(r, inputs)
        return found

    def check_args(self, owner: ReactorSpec, s: Leaf, got: dict[str, Any]) -> None:
        x = _input_x(s, got) if owner.child else None
        expected = self.reference(owner, x)
        for r in s.reads:
            value = got.get(r.param, "<missing>")
            want = expected.get(r.source, "<unknown>")
            if r.transform == "mark":
                want = mark(want)
            if data(value) != want:
                self.violate(
                    "wrong_value",
                    f"step {s.name!r} got {r.param}={data(value)!r} from {r.source!r}; "
                    f"expected {want!r}",
                )
            self.check_live(s.name, r.param, value)

    def check_live(self, step: str, param: str, value: Any) -> None:
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, dict):
                v = v.get("x")
            e = exec_of(v)
            if e is None:
                continue
            ex = self.execs.get(e)
            if ex is None:
                self.violate("wrong_value", f"step {step!r} got {param}={v!r}: no such execution")
            elif ex.undone:
                self.violate(
                    "wrong_value",
                    f"step {step!r} got {param}={v!r}, a value whose step was undone",
                )

    def new_exec(
        self,
        step: str,
        slot: tuple[str, str],
        chain: tuple[tuple[str, str], ...],
        undo: str | None,
        args: dict[str, Any],
        *,
        delayed: bool = False,
    ) -> str:
        c = self.tick()
        eid = f"e{self.index}.{c}"
        self.execs[eid] = Exec(
            eid, step, slot, chain, self.phase, c, undo is not None, undo, delayed,
            {k: data(v) for k, v in args.items()}, t=self.clock(),
        )  # fmt: skip
        return eid

    def parent_chain(self, x: Any, depth: int) -> tuple[tuple[str, str], ...]:
        """The child runs above one at `depth` whose input is `x`: those of the execution
        that made x, down to the parent's level."""
        e = exec_of(x)
        if e is None or e not in self.execs:
            return ()
        return self.execs[e].chain[: depth - 1]

    def slot_start(self, s: Leaf | NewSpec) -> None:
        self.running += 1
        self.peak = max(self.peak, self.running)
        case = self.case
        if case.shared_limiter is not None:
            case.shared_running += 1
            case.shared_peak = max(case.shared_peak, case.shared_running)
        if getattr(s, "key", None):
            if case.shared_limiter is not None:
                case.shared_key_running += 1
                case.shared_key_peak = max(case.shared_key_peak, case.shared_key_running)
            self.key_running += 1
            self.key_peak = max(self.key_peak, self.key_running)

    def slot_end(self, s: Leaf | NewSpec) -> None:
        self.running -= 1
        case = self.case
        if case.shared_limiter is not None:
            case.shared_running -= 1
        if getattr(s, "key", None):
            if case.shared_limiter is not None:
                case.shared_key_running -= 1
            self.key_running -= 1

    # -- undo ----------------------------------------------------------------------------
    def undo_call(self, step: str, value: Any, named: dict[str, Any]) -> str:
        """Log an undo call; return what it does: ok | retry | raise | declined | cancel."""
        c = self.tick()
        e = exec_of(value)
        ex = self.execs.get(e) if e else None
        if ex is None:
            self.violate("undo_unknown", f"undo of {step!r} called with {value!r}")
            return "ok"
        if ex.step != step and not ex.step.startswith(step):
            self.violate("undo_unknown", f"undo of {step!r} called with {ex.step!r}'s value")
        if ex.calls and ex.final:
            self.violate(
                "undo_twice",
                f"undo of {step!r} ({ex.id}) called again after {ex.calls[-1][2]!r} "
                f"(calls so far: {len(ex.calls)})",
            )
        for k, v in named.items():
            if k in ex.args and data(v) != ex.args[k]:
                self.violate(
                    "wrong_undo_args",
                    f"undo of {step!r} got {k}={data(v)!r}; the step got {ex.args[k]!r}",
                )
        n = len(ex.calls) + 1
        mode = ex.undo_mode or "ok"
        if mode.startswith("retry") and mode != "retry_forever":
            outcome = "retry" if n <= int(mode[5:]) else "ok"
        elif mode == "retry_forever":
            outcome = "retry"
        elif mode in ("ok", "async_ok"):
            outcome = "ok"
        else:
            outcome = mode
        ex.calls.append((c, self.phase, "ok" if outcome == "ok" else outcome))
        if outcome not in ("ok", "retry") or (outcome == "retry" and n >= UNDO_ATTEMPTS):
            self.injected_failures += 1
        return outcome


def unmark(value: Any) -> Any:
    """Undo one `mark` (the reactor input a step read through the ``mark`` transform)."""
    if isinstance(value, str):
        head, sep, tail = value.partition("!")
        return f"{head.removesuffix('~t')}{sep}{tail}"
    if isinstance(value, list):
        return [unmark(v) for v in value]
    if isinstance(value, dict):
        return {k: unmark(v) for k, v in value.items()}
    return value


def _input_x(s: Leaf, got: dict[str, Any]) -> Any:
    """The input x of the child run step `s` is in, from what it received."""
    for r in s.reads:
        if r.source == "x":
            x = got.get(r.param)
            return unmark(x) if r.transform == "mark" else x
    return None


def _undo_outcome(outcome: str, step: str) -> None:
    if outcome == "ok":
        return
    if outcome == "retry":
        raise rp.Retry(f"undo of {step} not yet")
    if outcome == "declined":
        raise Declined(f"undo-{step}")
    if outcome == "cancel":
        raise asyncio.CancelledError
    raise UndoBoom(f"undo of {step} failed")


def _sig(fn: Callable[..., Any], params: Sequence[str], leading: str | None = None) -> None:
    kinds = inspect.Parameter.POSITIONAL_OR_KEYWORD
    ps = [inspect.Parameter(leading, kinds)] if leading else []
    ps += [inspect.Parameter(p, kinds) for p in params]
    fn.__signature__ = inspect.Signature(ps)  # type: ignore[attr-defined]


def _bind(params: Sequence[str], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    got = dict(zip(params, args, strict=False))
    got.update(kwargs)
    return got


def _error(name: str, error: str, chain: Chain) -> BaseException:
    chain.raised_by.add(name)
    if error == "flaky":
        return Flaky(f"{name} flaked")
    if error == "declined":
        return Declined(name)
    if error == "shared":
        return SHARED
    if error == "group":
        return ExceptionGroup(f"{name} group", [Boom(f"{name} in a group")])
    return Boom(f"{name} failed")


# New steps' undo callbacks travel in checkpoints (pickle): module-level, by ledger key.
def _new_undo(key: str, step: str, value: Any) -> None:
    chain = _LEDGERS[key]
    _undo_outcome(chain.undo_call(step, value, {}), step)


async def _new_undo_async(key: str, step: str, value: Any) -> None:
    await asyncio.sleep(0)
    chain = _LEDGERS[key]
    _undo_outcome(chain.undo_call(step, value, {}), step)


def _new_step_done(
    key: str,
    n: NewSpec,
    name: str,
    params: tuple[str, ...],
    here: tuple[Any, ...],
    element: str,
    got: dict[str, Any],
) -> Any:
    """What a new step does once called (its outcome for this attempt)."""
    chain = _LEDGERS[key]
    slot = (name, element)
    chain.attempts[slot] += 1
    outcome = n.outcomes[min(chain.attempts[slot], len(n.outcomes)) - 1]
    if chain.attempts[slot] > len(n.outcomes):
        outcome = "ok"
    if outcome == "fail":
        chain.injected_failures += 1
        raise _error(name, "boom", chain)
    if outcome == "halt":
        chain.injected_halts += 1
        raise rp.Halt(f"{name} halts")
    for p in params:
        chain.check_live(name, p, got.get(p))
    eid = chain.new_exec(name, slot, here, n.undo, got)
    return f"{name}#{digest(name, {'key': element})}!{eid}"


def _new_step_sync(
    key: str,
    n: NewSpec,
    name: str,
    params: tuple[str, ...],
    here: tuple[Any, ...],
    element: str,
    *args: Any,
    **kwargs: Any,
) -> Any:
    return _new_step_done(key, n, name, params, here, element, _bind(params, args, kwargs))


async def _new_step_async(
    key: str,
    n: NewSpec,
    name: str,
    params: tuple[str, ...],
    here: tuple[Any, ...],
    element: str,
    *args: Any,
    **kwargs: Any,
) -> Any:
    chain = _LEDGERS[key]
    got = _bind(params, args, kwargs)
    chain.slot_start(n)
    try:
        await asyncio.sleep(0)
        return _new_step_done(key, n, name, params, here, element, got)
    finally:
        chain.slot_end(n)


class _Builder:
    """Builds the reactors of one chain from the spec: every function is bound to the
    chain's ledger."""

    def __init__(self, chain: Chain, case: CaseSpec) -> None:
        self.chain = chain
        self.case = case
        self.executor = None

    # -- leaves --------------------------------------------------------------------------
    def leaf_fn(self, s: Leaf, owner: ReactorSpec, site: tuple[str, ...]) -> Callable[..., Any]:
        chain = self.chain
        params = [r.param for r in s.reads]
        depth = len(site)

        def begin(got: dict[str, Any]) -> tuple[int, tuple[str, str], tuple[Any, ...]]:
            try:
                chain.check_args(owner, s, got)
                x = _input_x(s, got)
                key = key_of(x) if owner.child else ""
                slot = (s.name, key)
                here = (*chain.parent_chain(x, depth), (site[-1], key)) if owner.child else ()
            except Exception:
                chain.violate("harness_error", traceback.format_exc())
                slot, here = (s.name, "?"), ()
            chain.attempts[slot] += 1
            return chain.attempts[slot], slot, here

        def finish(
            got: dict[str, Any], attempt: int, slot: tuple[str, str], here: tuple[Any, ...]
        ) -> Any:
            outcome = s.outcome(attempt)
            if outcome == "fail":
                chain.injected_failures += 1
                raise _error(s.name, s.error, chain)
            if outcome == "retry":
                chain.injected_failures += 1
                chain.raised_by.add(s.name)
                raise rp.Retry(f"{s.name} asks for a retry")
            if outcome == "halt":
                chain.injected_halts += 1
                raise rp.Halt(f"{s.name} halts")
            if outcome == "cancel":
                chain.injected_failures += 1
                chain.raised_by.add(s.name)  # a step raising CancelledError fails (blamed)
                raise asyncio.CancelledError
            if outcome == "group_halt":
                chain.injected_halts += 1
                chain.raised_by.add(s.name)
                raise ExceptionGroup("halt in a task group", [rp.Halt(f"{s.name} halts")])
            if outcome == "group_retry":
                chain.injected_failures += 1
                chain.raised_by.add(s.name)
                raise ExceptionGroup("retry in a task group", [rp.Retry(f"{s.name}")])
            args = {r.param: got.get(r.param) for r in s.reads}
            value_data = leaf_value(s, {k: data(v) for k, v in args.items()})
            if s.spawn is not None and s.spawn.mode == "replace":
                return self.replacement(s, args, slot, here, 1)
            eid = chain.new_exec(s.name, slot, here, s.undo, args)
            value = _with_exec(value_data, eid)
            if outcome == "halt_result":
                chain.injected_halts += 1
                raise rp.Halt(f"{s.name} halts with a result", result=value)
            if s.spawn is not None:
                return rp.NewSteps(value, steps=self.new_steps(s, slot, here))
            return value

        if s.is_async:

            async def fn(*args: Any, **kwargs: Any) -> Any:
                got = _bind(params, args, kwargs)
                attempt, slot, here = begin(got)
                chain.slot_start(s)
                try:
                    pause = s.sleep(attempt)
                    if pause is not None:
                        if s.timeout is not None and pause >= s.timeout:
                            chain.injected_failures += 1  # it will time out
                            chain.raised_by.add(s.name)
                        await asyncio.sleep(pause)
                    return finish(got, attempt, slot, here)
                finally:
                    chain.slot_end(s)

        else:

            def fn(*args: Any, **kwargs: Any) -> Any:
                got = _bind(params, args, kwargs)
                attempt, slot, here = begin(got)
                return finish(got, attempt, slot, here)

        fn.__name__ = fn.__qualname__ = s.name
        _sig(fn, params)
        return fn

    def replacement(
        self,
        s: Leaf,
        args: dict[str, Any],
        slot: tuple[str, str],
        here: tuple[Any, ...],
        level: int,
    ) -> rp.NewSteps:
        """A NewSteps replacing step `s` with a step of its own name (`level` of them)."""
        chain = self.chain

        def replace() -> Any:
            if level < s.spawn.depth:  # type: ignore[union-attr]
                return self.replacement(s, args, slot, here, level + 1)
            value_data = leaf_value(s, {k: data(v) for k, v in args.items()})
            eid = chain.new_exec(s.name, slot, here, s.undo, args)
            return _with_exec(value_data, eid)

        replace.__name__ = s.name
        return rp.NewSteps(steps=[rp.step(replace, name=s.name)])

    def new_steps(
        self, s: Leaf, slot: tuple[str, str], here: tuple[Any, ...]
    ) -> list[rp.Step[..., Any]]:
        assert s.spawn is not None
        out: list[rp.Step[..., Any]] = []
        inner = (*here, (f"{s.name}:new", slot[1]))
        previous: str | None = None
        for n in s.spawn.new:
            name = f"{s.name}_{n.name}"
            params = [previous] if (n.reads_previous and previous) else []
            out.append(self.new_step(n, name, params, inner, slot[1]))
            previous = name
        return out

    def new_step(
        self, n: NewSpec, name: str, params: list[str], here: tuple[Any, ...], key: str
    ) -> rp.Step[..., Any]:
        chain = self.chain
        # Module-level functions, bound by ledger key: a checkpoint of a run halted while
        # new steps ran keeps them, and pickles (resume continues them).
        call = _new_step_async if n.is_async else _new_step_sync
        fn = functools.partial(call, chain.key, n, name, tuple(params), here, key)
        _sig(fn, params)
        st = rp.step(fn, name=name)
        if n.undo is not None:
            if n.undo == "async_ok":
                st.undo(functools.partial(_new_undo_async, chain.key, name))
            else:
                st.undo(functools.partial(_new_undo, chain.key, name))
        return st

    def undo_fn(self, s: Leaf) -> Callable[..., Any]:
        chain = self.chain
        names = list(s.undo_reads)

        if s.undo_async:

            async def undo(value: Any, **named: Any) -> None:
                await asyncio.sleep(0)
                _undo_outcome(chain.undo_call(s.name, value, named), s.name)

        else:

            def undo(value: Any, **named: Any) -> None:
                _undo_outcome(chain.undo_call(s.name, value, named), s.name)

        _sig(undo, names, leading="value")
        return undo

    def compensate_fn(
        self, s: Leaf, owner: ReactorSpec, site: tuple[str, ...]
    ) -> Callable[..., Any]:
        chain = self.chain
        params = [r.param for r in s.reads]
        depth = len(site)

        def decide(error: BaseException, named: dict[str, Any]) -> Any:
            mode = s.compensate
            if mode == "none":
                return None
            if mode == "retry":
                raise rp.Retry(f"compensate of {s.name} asks for a retry")
            if mode == "raise":
                chain.raised_by.add(s.name)
                raise CompensateBoom(f"compensate of {s.name} failed")
            x = _input_x(s, named)
            key = key_of(x) if owner.child else ""
            here = (*chain.parent_chain(x, depth), (site[-1], key)) if owner.child else ()
            value_data = leaf_value(s, {k: data(v) for k, v in named.items()})
            if value_data is None:  # (a skip guard never gets here)
                return rp.Continue(None)
            eid = chain.new_exec(
                s.name, (s.name, key), here, s.undo, named, delayed=s.compensate_async
            )
            return rp.Continue(_with_exec(value_data, eid))

        if s.compensate_async:

            async def compensate(error: BaseException, **named: Any) -> Any:
                await asyncio.sleep(s.compensate_sleep)
                return decide(error, named)

        else:

            def compensate(error: BaseException, **named: Any) -> Any:
                return decide(error, named)

        _sig(compensate, params, leading="error")
        return compensate

    def guard_fn(self, s: Leaf) -> Callable[..., Any]:
        chain = self.chain

        def when(**named: Any) -> bool:
            if s.when == "raise":
                chain.injected_failures += 1
                chain.raised_by.add(s.name)
                raise GuardBoom(f"guard of {s.name} failed")
            return s.when == "pass"

        _sig(when, [r.param for r in s.reads][:1])
        return when

    def leaf(self, s: Leaf, owner: ReactorSpec, site: tuple[str, ...]) -> rp.Step[..., Any]:
        options: dict[str, Any] = {}
        args = {}
        for r in s.reads:
            if not r.explicit:
                continue
            t = {"none": None, "mark": mark, "raise": refuse}[r.transform]
            if r.transform == "raise":
                self.chain.static_faults = True
            if r.source in ("x", "seed"):
                args[r.param] = rp.Input(r.source, transform=t)
            else:
                args[r.param] = rp.Result(r.source, transform=t)
        if args:
            options["args"] = args
        if s.wait_for:
            options["wait_for"] = list(s.wait_for)
        if s.retries:
            options["retries"] = s.retries
            if s.retry_on:
                options["retry_on"] = Flaky
            if s.backoff == "fn":
                options["backoff"] = _backoff
            elif s.backoff is not None:
                options["backoff"] = s.backoff
        if s.timeout is not None:
            options["timeout"] = s.timeout
        if s.when is not None:
            options["when"] = self.guard_fn(s)
        if s.key:
            options["concurrency_key"] = "k"
        if s.exclusive:
            options["async_"] = False
        st = rp.step(self.leaf_fn(s, owner, site), name=s.name, **options)
        if s.undo is not None:
            st.undo(self.undo_fn(s))
        if s.compensate is not None:
            st.compensate(self.compensate_fn(s, owner, site))
        return st

    # -- composites and reactors ---------------------------------------------------------
    def unit(self, u: Leaf | ReactorSpec, site: tuple[str, ...]) -> Any:
        if isinstance(u, ReactorSpec):
            return self.reactor(u, site)
        holder = ReactorSpec(f"unit-{u.name}", [u], u.name, True)
        return self.leaf(u, holder, site)

    def composite(
        self, c: Composite, owner: ReactorSpec, r: rp.Reactor, site: tuple[str, ...]
    ) -> None:
        here = (*site, c.name)
        src: Any
        if c.x_from in ("seed", "items") and not owner.child:
            src = rp.Input(c.x_from, transform=mark if c.x_transform else None)
        else:
            src = rp.Result(c.x_from, transform=mark if c.x_transform else None)
        options: dict[str, Any] = {}
        if c.wait_for:
            options["wait_for"] = list(c.wait_for)
        if c.retries:
            options["retries"] = c.retries
            options["retry_on"] = rp.RunFailed
        if c.timeout is not None:
            options["timeout"] = c.timeout
            self.chain.static_faults = True
        if c.kind == "compose":
            st = r.compose(c.name, self.reactor(c.children[0], here), args={"x": src}, **options)
        elif c.kind == "recurse":
            st = r.recurse(
                c.name,
                self.reactor(c.children[0], here),
                args={"x": src},
                until=(lambda out: False) if c.until else None,
                max_iterations=c.max_iterations,
                **options,
            )
        elif c.kind == "around":
            st = r.around(
                c.name,
                self.reactor(c.children[0], here),
                self.wrapper(c, owner, site),
                args={"x": src},
                **options,
            )
        elif c.kind == "map":
            st = r.map(
                c.name,
                c.x_from,
                self.unit(c.children[0], here),
                as_="x",
                batch_size=c.batch_size,
                **options,
            )
        else:
            units = [self.unit(u, here) for u in c.children]
            branches = len(c.children) - (1 if c.default else 0)
            cases = [
                (functools.partial(_is_branch, k, branches + 1), units[k]) for k in range(branches)
            ]
            st = r.switch(
                c.name,
                c.on,
                cases,
                default=units[-1] if c.default else None,
                args={"x": src},
                **options,
            )
        if c.compensate == "continue":
            st.compensate(self.composite_compensate(c, owner, site))

    def composite_compensate(
        self, c: Composite, owner: ReactorSpec, site: tuple[str, ...]
    ) -> Callable[..., Any]:
        """A compensate that absorbs the composite's failure with the value it would have
        had (an execution of its own, with no undo)."""
        chain = self.chain

        def compensate(error: BaseException, **named: Any) -> Any:
            x = named.get("_items") if c.kind == "map" else named.get("x")
            want = composite_value(c, data(x), data(named.get("_on")))
            here = (*chain.parent_chain(x, len(site) + 1), (c.name, key_of(x)))
            eid = chain.new_exec(
                f"{c.name}:fallback", (f"{c.name}:fallback", key_of(x)), here, None, {}
            )
            return rp.Continue(_with_exec(want, eid))

        return compensate

    def wrapper(
        self, c: Composite, owner: ReactorSpec, site: tuple[str, ...]
    ) -> Callable[..., Any]:
        chain = self.chain
        mode = c.wrapper

        async def wrapper(run_child: Callable[..., Any], inputs: dict[str, Any]) -> Any:
            if set(inputs) != {"x"}:
                chain.violate("wrong_value", f"around {c.name!r} got inputs {sorted(inputs)}")
            if mode == "raise_before":
                chain.injected_failures += 1
                chain.raised_by.add(c.name)
                raise WrapperBoom(f"{c.name} refuses")
            if mode == "sleep":
                await asyncio.sleep(1)
            if mode == "catch":
                try:
                    return await run_child()
                except rp.RunFailed:
                    # A fallback with the value the child would have had.
                    x = inputs["x"]
                    here = (*chain.parent_chain(x, len(site) + 1), (c.name, key_of(x)))
                    eid = chain.new_exec(
                        f"{c.name}:fallback", (f"{c.name}:fallback", key_of(x)), here, None, {}
                    )
                    return _with_exec(unit_value(c.children[0], data(x)), eid)
            out = await run_child()
            if mode == "sleep":
                await asyncio.sleep(1)
            if mode == "raise_after":
                chain.injected_failures += 1
                chain.raised_by.add(c.name)
                raise WrapperBoom(f"{c.name} fails after its child")
            return out

        return wrapper

    def reactor(self, spec: ReactorSpec, site: tuple[str, ...], middleware: Any = ()) -> rp.Reactor:
        inputs = ["x"] if spec.child else ["seed", "items"]
        r = rp.Reactor(spec.name, inputs=inputs, returns=spec.returns, middleware=list(middleware))
        for s in spec.steps:
            if isinstance(s, Leaf):
                r.add(self.leaf(s, spec, site))
            else:
                self.composite(s, spec, r, site)
        return r


def _is_branch(k: int, n: int, on: Any) -> bool:
    return pick(on, n) == k


def _backoff(attempt: int, error: BaseException) -> float:
    return 0.25 * attempt


def _with_exec(value: Any, eid: str | None) -> Any:
    """`value` (data) as the step returns it: each token carries its execution id."""
    if eid is None:
        eid = "fallback"
    if isinstance(value, str):
        return f"{value}!{eid}"
    if isinstance(value, list):
        return [_with_exec(v, eid) for v in value]
    if isinstance(value, dict):
        return {k: _with_exec(v, eid) for k, v in value.items()}
    return value


# ----------------------------------------------------------------------------- middleware
class _Hook:
    """Middleware of ours: records every run's start and ending, may raise (`HookSpec`)."""

    def __init__(self, spec: HookSpec, chain: Chain) -> None:
        self.spec = spec
        self.chain = chain
        self.calls: Counter[str] = Counter()
        self.raising = False

    def _maybe_raise(self, hook: str, event: rp.Event | None = None) -> None:
        spec = self.spec
        if spec.raise_on is None:
            return
        if spec.raise_on == "on_event:any" and hook.startswith("on_event"):
            name = "on_event:any"
        else:
            name = hook
        if name != spec.raise_on:
            return
        self.calls[name] += 1
        if self.calls[name] == spec.nth or (spec.persist and self.calls[name] > spec.nth):
            if event is not None and event.kind in (
                "step_complete",
                "compensate_continue",
                "step_halt",
            ):
                self.chain.hook_failed_on.add(event.step.rsplit(".", 1)[-1])
            if event is not None:
                self.chain.raised_by.add(event.step.rsplit(".", 1)[-1])
            self.chain.injected_failures += 1
            if spec.error == "declined":
                raise Declined(f"hook {hook}")
            raise HookBoom(f"middleware failed on {hook}")

    def _start(self, run: rp.RunInfo) -> None:
        self.chain.starts[f"{run.run_id}/{id(self):x}"] += 1
        try:
            self._maybe_raise("on_run_start")
        except BaseException:
            self.chain.start_failed.add(run.run_id)
            raise

    def _end(self, run: rp.RunInfo, how: str) -> None:
        self.chain.ends.setdefault(f"{run.run_id}/{id(self):x}", []).append(how)
        self._maybe_raise(f"on_run_{how}")

    def _event(self, event: rp.Event) -> None:
        self._maybe_raise(f"on_event:{event.kind}", event)


class _SyncHook(_Hook):
    def on_run_start(self, run: rp.RunInfo) -> None:
        self._start(run)

    def on_event(self, event: rp.Event) -> None:
        self._event(event)

    def on_run_complete(self, run: rp.RunInfo, result: Any) -> None:
        self._end(run, "complete")

    def on_run_error(self, run: rp.RunInfo, error: BaseException) -> None:
        self._end(run, "error")

    def on_run_halt(self, run: rp.RunInfo, checkpoint: Any) -> None:
        self._end(run, "halt")


class _AsyncHook(_Hook):
    yields = False

    async def on_run_start(self, run: rp.RunInfo) -> None:
        if self.yields:
            await asyncio.sleep(0)
        self._start(run)

    async def on_event(self, event: rp.Event) -> None:
        if self.yields:
            await asyncio.sleep(0)
        self._event(event)

    async def on_run_complete(self, run: rp.RunInfo, result: Any) -> None:
        if self.yields:
            await asyncio.sleep(0)
        self._end(run, "complete")

    async def on_run_error(self, run: rp.RunInfo, error: BaseException) -> None:
        if self.yields:
            await asyncio.sleep(0)
        self._end(run, "error")

    async def on_run_halt(self, run: rp.RunInfo, checkpoint: Any) -> None:
        if self.yields:
            await asyncio.sleep(0)
        self._end(run, "halt")


class _YieldingHook(_AsyncHook):
    yields = True


def _middleware(spec: HookSpec, chain: Chain) -> Any:
    if spec.kind == "recorder":
        return Recorder()
    if spec.kind == "trace":
        return rp.Trace()
    if spec.kind == "sync":
        return _SyncHook(spec, chain)
    if spec.kind == "async":
        return _AsyncHook(spec, chain)
    chain.loose_order = True
    return _YieldingHook(spec, chain)


# ---------------------------------------------------------------------------------- cases
class Case:
    """One case being run: its chains, the shared limiter, counters and violations."""

    def __init__(self, spec: CaseSpec) -> None:
        self.spec = spec
        self.counter = itertools.count(1)
        self.violations: list[Violation] = []
        self.shared_limiter: rp.Limiter | None = None
        if spec.shared:
            self.shared_limiter = rp.Limiter(
                spec.shared, limits={"k": spec.key_limit} if spec.key_limit else None
            )
        self.shared_running = 0
        self.shared_peak = 0
        self.shared_key_running = 0
        self.shared_key_peak = 0
        self.chains = [Chain(self, k) for k in range(spec.runs)]
        self.outcomes: list[str] = []
        self.log: list[str] = []


@dataclass
class Report:
    """What `run_case` found."""

    spec: CaseSpec
    violations: list[Violation]
    outcomes: list[str]
    log: list[str] = field(default_factory=list)
    ledgers: list[str] = field(default_factory=list)

    @property
    def kinds(self) -> set[str]:
        return {v.kind for v in self.violations}


def _run_options(case: CaseSpec, c: Case, chain: Chain, hooks: list[Any]) -> dict[str, Any]:
    options: dict[str, Any] = {"async_": case.async_, "grace": case.grace}
    # A limit naming no step's key is refused (a shrunk case may have lost the step).
    keyed = case.key_limit and any(leaf.key == "k" for leaf in leaves(case.top))
    if c.shared_limiter is not None:
        options["max_concurrency"] = c.shared_limiter
    elif case.cap is not None:
        limits = {"k": case.key_limit} if keyed else None
        options["max_concurrency"] = (
            rp.Limiter(case.cap, limits=limits) if case.cap_as_limiter else case.cap
        )
        chain.own_limiter = options["max_concurrency"]  # type: ignore[attr-defined]
    if keyed and c.shared_limiter is None and not case.cap_as_limiter:
        options["limits"] = {"k": case.key_limit}  # (a Limiter given is never changed)
    if case.run_timeout is not None:
        options["timeout"] = case.run_timeout
    run_hooks = [h for spec, h in hooks if spec.where == "run"]
    if run_hooks:
        options["middleware"] = run_hooks
    return options


async def _chain_main(c: Case, chain: Chain) -> str:
    """Run one chain: the run, its resumes, and what ends it. Returns its disposition:
    success | failed | cancelled | undone | unexpected | hang."""
    spec = c.spec
    chain.clock = asyncio.get_running_loop().time
    hooks = [(h, _middleware(h, chain)) for h in spec.hooks]
    builder = _Builder(chain, spec)
    reactor_mw = [h for s, h in hooks if s.where == "reactor"]
    reactor = builder.reactor(spec.top, (), middleware=reactor_mw)
    options = _run_options(spec, c, chain, hooks)
    inputs = top_inputs(spec.top)
    checkpoint: Any = None
    for phase in range(MAX_PHASES):
        chain.phase = phase
        c.log.append(f"run {chain.index} phase {phase}")
        try:
            if checkpoint is None:
                if spec.reversible and phase == 0:
                    done = await reactor.run_reversible(inputs, **options)
                    result = done.result
                    chain.check_result(result)
                    if spec.reversible == "keep":
                        return "success"
                    chain.phase = phase + 1
                    try:
                        if spec.reversible == "undo":
                            await done.undo()
                        else:
                            try:
                                cp = rp.Checkpoint.from_json(done.checkpoint.to_json())
                            except TypeError:  # records of new steps: pickle only
                                cp = pickle.loads(pickle.dumps(done.checkpoint))
                            await reactor.undo(cp)
                    except rp.RunFailed:
                        pass  # undo errors of ours
                    return "undone"
                result = await reactor.run(inputs, **options)
            else:
                result = await reactor.resume(checkpoint, **options)
        except rp.Halted as halted:
            if chain.injected_halts == 0 and spec.run_timeout is None:
                chain.violate("spurious_halt", f"Halted ({halted.reason!r}) with no halt injected")
            how = spec.resume[phase] if phase + 1 < MAX_PHASES else "giveup"
            checkpoint = halted.checkpoint
            c.log.append(f"run {chain.index} halted ({halted.reason!r}); then {how}")
            if how == "json":
                try:
                    checkpoint = rp.Checkpoint.from_json(checkpoint.to_json())
                except TypeError:
                    checkpoint = pickle.loads(pickle.dumps(checkpoint))
            elif how == "pickle":
                checkpoint = pickle.loads(pickle.dumps(checkpoint))
            elif how == "giveup":
                chain.phase = phase + 1
                try:
                    await reactor.undo(checkpoint)
                except rp.RunFailed:
                    pass
                return "undone"
            continue
        except rp.RunFailed as failed:
            c.log.append(f"run {chain.index} failed: {_leaf_errors(failed)}")
            chain.check_failed(failed)
            return "failed"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            chain.violate(
                "unexpected_exception",
                f"run() raised {type(exc).__name__}: {exc!r:.200}",
            )
            return "unexpected"
        chain.check_result(result)
        return "success"
    raise AssertionError("unreachable")  # pragma: no cover


def _leaf_errors(error: BaseException) -> list[str]:
    """The exceptions inside a (nested) exception group, as short strings."""
    if isinstance(error, BaseExceptionGroup):
        return [x for e in error.exceptions for x in _leaf_errors(e)]
    return [f"{type(error).__name__}({str(error)[:60]!r})"]


def _check_result(self: Chain, result: Any) -> None:
    want = expected_result(self.case.spec.top)
    if data(result) != want:
        self.violate("wrong_result", f"run() returned {data(result)!r}; expected {want!r}")


def _check_failed(self: Chain, failed: rp.RunFailed) -> None:
    if self.injected_failures == 0 and not self.static_faults:
        self.violate("spurious_failure", f"RunFailed with nothing injected: {failed!r:.300}")
    for name in _blamed(str(failed)):
        if name.rsplit(".", 1)[-1].split("_n")[0] not in self.raised_by and not _excused_blame(
            self, name
        ):
            self.violate("wrong_blame", f"RunFailed blames {name!r}: {str(failed)[:200]}")


def _excused_blame(chain: Chain, name: str) -> bool:
    """A step may fail without raising itself: its transform, its timeout, its child."""
    leaf = name.rsplit(".", 1)[-1]
    spec = _find(chain.case.spec.top, leaf)
    if spec is None:
        return True  # (new steps, replacements)
    if isinstance(spec, Composite) or spec.spawn is not None:
        return True  # its child failed
    return bool(
        spec.timeout is not None
        or any(r.transform == "raise" for r in spec.reads)
        or leaf in chain.hook_failed_on
        or chain.case.spec.hooks
    )


def _find(r: ReactorSpec, name: str) -> Leaf | Composite | None:
    for s in r.steps:
        if s.name == name:
            return s
        if isinstance(s, Composite):
            for u in s.children:
                if isinstance(u, Leaf) and u.name == name:
                    return u
                if isinstance(u, ReactorSpec):
                    found = _find(u, name)
                    if found is not None:
                        return found
    return None


def _blamed(message: str) -> list[str]:
    head = message.split("\n", 1)[0]
    if "failed in step(s) " not in head:
        return []
    tail = head.split("failed in step(s) ", 1)[1].split(";")[0].split(" (")[0]
    return [n.strip() for n in tail.split(",") if n.strip()]


Chain.check_result = _check_result  # type: ignore[attr-defined]
Chain.check_failed = _check_failed  # type: ignore[attr-defined]


async def _cancel_later(task: asyncio.Task[Any], how: str, amount: float) -> bool:
    if how == "iterations":
        for _ in range(int(amount)):
            await asyncio.sleep(0)
    else:
        await asyncio.sleep(amount)
    return task.cancel()


async def _case_main(c: Case) -> None:
    spec = c.spec
    me = asyncio.current_task()
    before = {t for t in asyncio.all_tasks() if t is not me}
    tasks = [asyncio.ensure_future(_chain_main(c, chain)) for chain in c.chains]
    cancellers: dict[int, asyncio.Task[bool]] = {}
    if spec.cancel is not None:
        k, how, amount = spec.cancel
        cancellers[k] = asyncio.ensure_future(_cancel_later(tasks[k], how, amount))
    _, late = await asyncio.wait(tasks, timeout=VIRTUAL_BOUND)
    hung = {k for k, t in enumerate(tasks) if t in late}
    for k in sorted(hung):
        c.violations.append(
            Violation("hang", f"run() not done after {VIRTUAL_BOUND:g} virtual seconds", k)
        )
        tasks[k].cancel()
    if late:
        await asyncio.wait(late)
    cancelled_by_us: dict[int, bool] = {}
    for k, canceller in cancellers.items():
        if not canceller.done():
            canceller.cancel()
            await asyncio.wait([canceller])
            cancelled_by_us[k] = False
        else:
            cancelled_by_us[k] = not canceller.cancelled() and canceller.result()
    for k, t in enumerate(tasks):
        chain = c.chains[k]
        if k in hung:
            c.outcomes.append("hang")
            continue
        if t.cancelled():
            if cancelled_by_us.get(k):
                c.outcomes.append("cancelled")
            else:
                chain.violate(
                    "spurious_cancel", "run() raised CancelledError; nothing cancelled it"
                )
                c.outcomes.append("unexpected")
            continue
        exc = t.exception()
        if exc is not None:
            chain.violate(
                "harness_error" if isinstance(exc, AssertionError) else "unexpected_exception",
                f"{type(exc).__name__}: {exc!r:.300}\n"
                + "".join(traceback.format_exception(exc))[-1500:],
            )
            c.outcomes.append("unexpected")
            continue
        outcome = t.result()
        if cancelled_by_us.get(k):
            chain.violate(
                "swallowed_cancel",
                f"the run was cancelled, yet the chain ended {outcome!r} without CancelledError",
            )
        c.outcomes.append(outcome)
    # Let callbacks scheduled by the runs' last moments (done callbacks) run first.
    await asyncio.sleep(0)
    leftover = {t for t in asyncio.all_tasks() if t is not me and not t.done()} - before
    if leftover:
        names = sorted(repr(t.get_coro())[:80] for t in leftover)
        c.violations.append(Violation("task_leak", f"{len(leftover)} task(s) alive: {names[:3]}"))
        for t in leftover:
            t.cancel()
        await asyncio.wait(leftover, timeout=1)


def _check_case(c: Case) -> None:
    spec = c.spec
    lim = c.shared_limiter
    if lim is not None:
        if lim.running != 0 or "waiting=0" not in repr(lim):
            c.violations.append(Violation("limiter_leak", f"after every run: {lim!r}"))
        if c.shared_peak > spec.shared:  # type: ignore[operator]
            c.violations.append(
                Violation("cap_exceeded", f"{c.shared_peak} steps ran under Limiter({spec.shared})")
            )
        if spec.key_limit and c.shared_key_peak > spec.key_limit:
            c.violations.append(
                Violation(
                    "cap_exceeded",
                    f"{c.shared_key_peak} 'k' steps ran under limit {spec.key_limit}",
                )
            )
    for chain, outcome in zip(c.chains, c.outcomes, strict=False):
        own = getattr(chain, "own_limiter", None)
        if isinstance(own, rp.Limiter) and (own.running != 0 or "waiting=0" not in repr(own)):
            chain.violate("limiter_leak", f"after the run: {own!r}")
        cap = 1 if not spec.async_ else (spec.cap if lim is None else None)
        if cap is not None and chain.peak > cap:
            chain.violate("cap_exceeded", f"{chain.peak} steps ran at once under a cap of {cap}")
        if spec.key_limit and lim is None and chain.key_peak > spec.key_limit:
            chain.violate(
                "cap_exceeded", f"{chain.key_peak} 'k' steps ran at once; limit {spec.key_limit}"
            )
        if outcome == "hang":
            continue
        check_ledger(chain, outcome)
        check_endings(chain)


def check_endings(chain: Chain) -> None:
    for run_id, n in chain.starts.items():
        if run_id.split("/")[0] in chain.start_failed:
            continue
        ends = chain.ends.get(run_id, [])
        if n != 1 or len(ends) != 1:
            chain.violate(
                "middleware_ending",
                f"run {run_id}: {n} on_run_start, endings {ends} (exactly one expected)",
            )


# ------------------------------------------------------------------------------- checking
def _static_sites(r: ReactorSpec, path: tuple[str, ...], out: dict[Any, Any]) -> None:
    out[path] = r
    for s in r.steps:
        if isinstance(s, Composite):
            out[(*path, s.name, "#kind")] = s
            for u in s.children:
                if isinstance(u, ReactorSpec):
                    _static_sites(u, (*path, s.name), out)


def _closure(r: ReactorSpec) -> dict[str, set[str]]:
    """Each step of `r` and the steps it depends on, transitively."""
    deps = {s.name: _deps(s) & {t.name for t in r.steps} for s in r.steps}
    out: dict[str, set[str]] = {}

    def visit(n: str) -> set[str]:
        if n in out:
            return out[n]
        out[n] = set()
        acc: set[str] = set()
        for d in deps[n]:
            acc |= {d} | visit(d)
        out[n] = acc
        return acc

    for n in deps:
        visit(n)
    return out


RERUN_KINDS = ("map", "recurse", "around")


def check_ledger(chain: Chain, outcome: str) -> None:
    """The ledger invariants of one chain, once it ended with `outcome`."""
    spec = chain.case.spec
    sites: dict[Any, Any] = {}
    _static_sites(spec.top, (), sites)
    execs = list(chain.execs.values())
    for ex in execs:
        if ex.step in chain.hook_failed_on and not ex.calls:
            ex.ambiguous = True
    site_kind = {k[-2]: v.kind for k, v in sites.items() if k and k[-1] == "#kind"}
    composite = {k[-2]: v for k, v in sites.items() if k and k[-1] == "#kind"}

    def ancestors(ex: Exec) -> list[str]:
        return [s for s, _ in ex.chain]

    def rerun_site(ex: Exec) -> bool:
        for s in ancestors(ex):
            if site_kind.get(s) in RERUN_KINDS:
                return True
        return False

    def absorbing(ex: Exec) -> bool:
        for s in ancestors(ex):
            c = composite.get(s)
            if c is not None and (c.compensate or (c.kind == "around" and c.wrapper == "catch")):
                return True
        return False

    def in_a_composite(ex: Exec) -> bool:
        # A composite that failed (its children undone) and stays pending across a halt
        # runs its children again on resume.
        return bool(ex.chain)

    # At most once: counted as calls arrive (`Chain.undo_call`); retries within 5.
    for ex in execs:
        if len(ex.calls) > UNDO_ATTEMPTS:
            chain.violate("undo_twice", f"undo of {ex.step} ({ex.id}) called {len(ex.calls)} times")
    by_slot: dict[tuple[str, str], list[Exec]] = {}
    for ex in execs:
        by_slot.setdefault(ex.slot, []).append(ex)
    if outcome in ("failed", "cancelled", "undone"):
        for ex in execs:
            if not ex.undoable or ex.ambiguous:
                continue
            if not ex.calls:
                chain.violate(
                    "undo_lost",
                    f"{ex.step} ({ex.id}, phase {ex.phase}, in {_where(ex)}) completed and was "
                    f"never undone; the chain ended {outcome}",
                )
            elif not ex.final:
                chain.violate(
                    "undo_retry_abandoned",
                    f"undo of {ex.step} ({ex.id}) asked for a retry and was not called again "
                    f"({len(ex.calls)} calls)",
                )
    if outcome == "success":
        for ex in execs:
            if not ex.calls:
                continue
            later = [o for o in by_slot[ex.slot] if o.c > ex.c]
            if later or absorbing(ex):
                continue
            chain.violate(
                "undo_on_success",
                f"{ex.step} ({ex.id}, in {_where(ex)}) was undone though the run succeeded",
            )
        for slot, group in by_slot.items():
            live = [e for e in group if e.undoable and not e.calls and not e.ambiguous]
            if len(live) > 1:
                chain.violate(
                    "duplicate_effect",
                    f"{slot[0]} has {len(live)} effects left in the ledger "
                    f"({', '.join(e.id + ' phase ' + str(e.phase) for e in live)})",
                )
    # Completed steps are not re-run on resume.
    for group in by_slot.values():
        group.sort(key=lambda e: e.c)
        for a, b in itertools.pairwise(group):
            if a.phase == b.phase:
                continue
            if a.undoable:
                undone_before = any(k < b.c for k, _, _ in a.calls)
                if undone_before or a.ambiguous:
                    continue
            elif rerun_site(a) or in_a_composite(a) or absorbing(a):
                continue
            chain.violate(
                "rerun_on_resume",
                f"{a.step} ({_where(a)}) completed in phase {a.phase} ({a.id}) and ran again "
                f"in phase {b.phase} ({b.id})",
            )
    check_order(chain, execs, sites)


def ledger_text(chain: Chain) -> str:
    """Every execution of a chain, in completion order, with its undo calls."""
    lines = [f"run {chain.index}:"]
    for ex in sorted(chain.execs.values(), key=lambda e: e.c):
        calls = ", ".join(f"{o}@{k}(phase {p})" for k, p, o in ex.calls) or "-"
        flags = ("undoable " if ex.undoable else "") + ("ambiguous " if ex.ambiguous else "")
        lines.append(
            f"  {ex.c:4d} {ex.id:8} {ex.step:12} phase {ex.phase} {flags}in {_where(ex)}; "
            f"undo: {calls}"
        )
    return "\n".join(lines)


def _where(ex: Exec) -> str:
    if not ex.chain:
        return "the top reactor"
    return " > ".join(f"{s}[{k[:18]}]" for s, k in ex.chain)


def check_order(chain: Chain, execs: list[Exec], sites: dict[Any, Any]) -> None:
    """Undo newest first, as the partial order the README promises."""
    undone = [e for e in execs if e.calls and not e.ambiguous]
    if len(undone) < 2:
        return
    trusted = not chain.loose_order
    closures: dict[tuple[str, ...], dict[str, set[str]]] = {}
    reactors: dict[tuple[str, ...], ReactorSpec] = {
        k: v for k, v in sites.items() if isinstance(v, ReactorSpec)
    }
    kinds = {k[-2]: v for k, v in sites.items() if k and k[-1] == "#kind"}

    def closure(path: tuple[str, ...]) -> dict[str, set[str]] | None:
        if path not in closures:
            r = reactors.get(path)
            if r is None:
                return None
            closures[path] = _closure(r)
        return closures[path]

    # Every execution under an item of each instance, for the bounds. A step that returned
    # new steps is undone as of its return, and its new steps as a unit as of its
    # completion ("s2:new"), as the README says.
    def item_of(ex: Exec, m: int) -> str:
        if len(ex.chain) > m:
            return ex.chain[m][0]
        return ex.step.split("_n")[0] if "_n" in ex.step else ex.step

    members: dict[tuple[Any, ...], list[Exec]] = {}
    for ex in execs:
        for m in range(len(ex.chain) + 1):
            members.setdefault((ex.chain[:m], item_of(ex, m)), []).append(ex)

    def static_path(inst: tuple[tuple[str, str], ...]) -> tuple[str, ...] | None:
        names = tuple(s for s, _ in inst)
        if any(n.endswith(":new") for n in names):
            return None
        return names

    def alive(e: Exec, start: int, end: int) -> bool:
        """Completed before the sweep began, and not undone before both completed (an
        execution of an attempt that failed earlier is another world)."""
        return e.c < start and not (e.calls and e.calls[0][0] < end)

    def bounds(inst: tuple[Any, ...], item: str, start: int, end: int) -> tuple[float, float]:
        """When `item` of instance `inst` completed: at least lo, at most hi."""
        group = [e for e in members.get((inst, item), []) if alive(e, start, end)]
        lo = max((e.c for e in group), default=0)
        exact = (
            len(group) == 1
            and len(group[0].chain) == len(inst)
            and trusted
            and not group[0].delayed
        )
        hi: float = lo if exact else float("inf")
        path = static_path(inst)
        deps = closure(path) if path is not None else None
        if deps is not None:
            for other, needs in deps.items():
                if item in needs:
                    for e in members.get((inst, other), []):
                        if e.c > lo and alive(e, start, end):
                            hi = min(hi, e.c)
        return lo, hi

    def older(a: Exec, b: Exec, start: int, end: int) -> bool | None:
        """True if a's unit certainly completed before b's; None if it cannot be told."""
        m = 0
        while m < len(a.chain) and m < len(b.chain) and a.chain[m] == b.chain[m]:
            m += 1
        inst = a.chain[:m]
        ia, ib = item_of(a, m), item_of(b, m)
        if ia == ib:
            if len(a.chain) > m and len(b.chain) > m:
                site = a.chain[m][0]
                c = kinds.get(site)
                if c is not None and c.kind == "recurse":
                    ga = [
                        e
                        for e in execs
                        if e.chain[: m + 1] == a.chain[: m + 1] and alive(e, start, end)
                    ]
                    gb = [
                        e
                        for e in execs
                        if e.chain[: m + 1] == b.chain[: m + 1] and alive(e, start, end)
                    ]
                    if ga and gb and max(e.c for e in ga) < min(e.c for e in gb):
                        return True
                    if ga and gb and max(e.c for e in gb) < min(e.c for e in ga):
                        return False
                if c is not None and c.kind == "map" and c.batch_size < 100:
                    ka, kb = _element(a.chain[m][1]), _element(b.chain[m][1])
                    if ka is not None and kb is not None:
                        if ka // c.batch_size < kb // c.batch_size:
                            return True
                        if kb // c.batch_size < ka // c.batch_size:
                            return False
            return None
        lo_a, hi_a = bounds(inst, ia, start, end)
        lo_b, hi_b = bounds(inst, ib, start, end)
        if hi_a <= lo_b and hi_a != float("inf"):
            return True
        if hi_b <= lo_a and hi_b != float("inf"):
            return False
        return None

    for a, b in itertools.combinations(undone, 2):
        ua, ub = a.calls[0], b.calls[0]
        start, end = min(ua[0], ub[0]), max(a.c, b.c)
        if start < end:
            continue  # one was undone before the other completed: different sweeps
        o = older(a, b, start, end)
        if o is None:
            continue
        first, second = (a, b) if o else (b, a)  # first completed first: undone last
        if first.calls[0][0] < second.calls[0][0]:
            chain.violate(
                "undo_order",
                f"{first.step} ({first.id}, in {_where(first)}) completed before "
                f"{second.step} ({second.id}, in {_where(second)}) but was undone first",
            )


def _element(key: str) -> int | None:
    """The index of a map element from its instance key ("...#d/2" or "i2")."""
    if "/" in key:
        tail = key.rsplit("/", 1)[1]
        return int(tail) if tail.isdigit() else None
    if key.startswith("i") and key[1:].isdigit():
        return int(key[1:])
    return None


# ------------------------------------------------------------------------------- running
def run_case(spec: CaseSpec, *, real_bound: float = REAL_BOUND) -> Report:
    """Run a case on a fresh virtual-clock loop under a real-time watchdog."""
    c = Case(spec)
    loop = VirtualClockLoop()
    stopped = threading.Event()

    def stop() -> None:
        stopped.set()
        loop.stop()

    def handler(loop: Any, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        what = f"{type(exc).__name__}: {exc}" if exc is not None else context.get("message")
        c.violations.append(
            Violation(
                "lost_error", f"{context.get('message')}: {what} ({context.get('future')!r:.120})"
            )
        )

    loop.set_exception_handler(handler)
    watchdog = threading.Timer(real_bound, lambda: loop.call_soon_threadsafe(stop))
    watchdog.daemon = True
    watchdog.start()
    main = loop.create_task(_case_main(c))
    try:
        loop.run_until_complete(main)
    except RuntimeError:
        if not stopped.is_set():
            raise
        c.violations.append(
            Violation("hang_real", f"the loop was still running after {real_bound:g} real seconds")
        )
        main.cancel()
    except BaseException as exc:  # the harness itself
        c.violations.append(Violation("harness_error", "".join(traceback.format_exception(exc))))
    finally:
        watchdog.cancel()
        if not main.done():
            c.outcomes = ["hang"] * len(c.chains)
        else:
            try:
                _check_case(c)
            except Exception:
                c.violations.append(Violation("harness_error", traceback.format_exc()))
        try:
            for t in asyncio.all_tasks(loop):
                t.cancel()
            if not stopped.is_set():
                loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
        for chain in c.chains:
            _LEDGERS.pop(chain.key, None)
    return Report(spec, c.violations, c.outcomes, c.log, [ledger_text(ch) for ch in c.chains])


class Hang(AssertionError):
    """A coroutine given to `run_bounded` did not end within its bounds."""


def run_bounded(main: Callable[[], Any], *, virtual: float = 1_000.0, real: float = 10.0) -> Any:
    """Run ``main()`` on a virtual-clock loop; raise `Hang` if it is not done after
    `virtual` seconds of virtual time or `real` seconds of real time (then the loop is
    stopped, whatever it was waiting for)."""
    loop = VirtualClockLoop()
    stopped = threading.Event()

    def stop() -> None:
        stopped.set()
        loop.stop()

    async def bounded() -> Any:
        if virtual is None:
            return await main()
        try:
            async with asyncio.timeout(virtual):
                return await main()
        except TimeoutError as exc:
            if exc.__context__ is not None and isinstance(exc.__context__, asyncio.CancelledError):
                raise Hang(f"not done after {virtual:g} virtual seconds") from None
            raise

    watchdog = threading.Timer(real, lambda: loop.call_soon_threadsafe(stop))
    watchdog.daemon = True
    watchdog.start()
    task = loop.create_task(bounded())
    try:
        return loop.run_until_complete(task)
    except RuntimeError:
        if stopped.is_set():
            raise Hang(f"not done after {real:g} real seconds") from None
        raise
    finally:
        watchdog.cancel()
        for t in asyncio.all_tasks(loop):
            t.cancel()
        loop.close()


def run_seed(seed: int, profile: Profile = FUZZ) -> Report:
    return run_case(spec_from_seed(seed, profile))


def leaves(r: ReactorSpec) -> Iterator[Leaf]:
    for s in r.steps:
        if isinstance(s, Leaf):
            yield s
        else:
            for u in s.children:
                if isinstance(u, Leaf):
                    yield u
                else:
                    yield from leaves(u)


def composites(r: ReactorSpec) -> Iterator[tuple[Composite, int]]:
    def walk(r: ReactorSpec, depth: int) -> Iterator[tuple[Composite, int]]:
        for s in r.steps:
            if isinstance(s, Composite):
                yield s, depth
                for u in s.children:
                    if isinstance(u, ReactorSpec):
                        yield from walk(u, depth + 1)

    return walk(r, 0)


# ---------------------------------------------------------------------------- known bugs
def _reactors(r: ReactorSpec) -> Iterator[ReactorSpec]:
    yield r
    for s in r.steps:
        if isinstance(s, Composite):
            for u in s.children:
                if isinstance(u, ReactorSpec):
                    yield from _reactors(u)


@dataclass(frozen=True)
class KnownBug:
    """A bug the fuzzer finds on today's code, and the shape of the cases that show it.

    The Hypothesis property skips (``assume``) the cases of the shape of a bug with
    ``kinds=None``, and ignores the violations of ``kinds`` in the cases of the shape of the
    others, so that new bugs still surface; each has a named regression test in
    ``tests/test_fuzz.py``, marked ``xfail(strict=True)``, that flips when it is fixed.
    ``remove`` takes the bug's features out of a case (``benchmarks/fuzz.py`` attributes a
    violation to the bugs whose removal makes it go away).
    """

    name: str
    reason: str
    shape: Callable[[CaseSpec], bool]
    remove: Callable[[CaseSpec], None]
    # The violation kinds it explains in a case of its shape; None: any (the property then
    # skips such cases altogether: a hang or a dead worker makes every other check moot).
    kinds: frozenset[str] | None = None


# The one list of the known bugs: empty, since the 21 it found (12 of issue 12's, 9 new
# ones; see git history) are fixed; each has a regression test `test_fixed_*` in test_fuzz.py.
KNOWN_BUGS: tuple[KnownBug, ...] = ()
BUGS = {b.name: b for b in KNOWN_BUGS}


def known_bugs(case: CaseSpec) -> list[KnownBug]:
    """The known bugs whose shape `case` has."""
    return [b for b in KNOWN_BUGS if b.shape(case)]


def skipped(case: CaseSpec) -> bool:
    """Whether the Hypothesis property skips `case`: it has the shape of a known bug that
    may explain any violation."""
    return any(b.kinds is None for b in known_bugs(case))


def unexplained(report: Report) -> list[Violation]:
    """The violations of `report` that no known bug of the case's shape explains."""
    bugs = known_bugs(report.spec)
    if any(b.kinds is None for b in bugs):
        return []
    explained = {k for b in bugs for k in (b.kinds or ())}
    return [v for v in report.violations if v.kind not in explained]


def without(case: CaseSpec, *bugs: KnownBug) -> CaseSpec:
    """A copy of `case` with the features of `bugs` taken out."""
    import copy

    case = copy.deepcopy(case)
    for b in bugs:
        b.remove(case)
    return case


def without_known(case: CaseSpec) -> CaseSpec:
    """A copy of `case` with the features of every known bug of its shape taken out."""
    return without(case, *known_bugs(case))


def attribute(report: Report) -> dict[str, str]:
    """The cause of each violation kind of `report`: the known bugs whose removal alone
    makes it go away ("a / b"), all of them together ("a + b"), or "unexplained"."""
    bugs = known_bugs(report.spec)
    runs: dict[str, set[str]] = {}
    out: dict[str, str] = {}
    for kind in sorted(report.kinds):
        candidates = [b for b in bugs if b.kinds is None or kind in b.kinds]
        alone = []
        for b in candidates:
            if b.name not in runs:
                runs[b.name] = run_case(without(report.spec, b), real_bound=10.0).kinds
            if kind not in runs[b.name]:
                alone.append(b.name)
        if alone:
            out[kind] = " / ".join(alone)
            continue
        if len(candidates) > 1:
            key = "+".join(b.name for b in candidates)
            if key not in runs:
                runs[key] = run_case(without(report.spec, *candidates), real_bound=10.0).kinds
            if kind not in runs[key]:
                out[kind] = " + ".join(b.name for b in candidates)
                continue
        out[kind] = "unexplained"
    return out


# ------------------------------------------------------------------------------ shrinking
def valid(case: CaseSpec) -> bool:
    """Whether `case` still builds (after a shrinking step)."""
    try:
        c = Case(case)
        r = _Builder(c.chains[0], case).reactor(case.top, ())
        r.plan()
        expected_result(case.top)
        for chain in c.chains:
            _LEDGERS.pop(chain.key, None)
    except Exception:
        return False
    return True


def _drop_step(r: ReactorSpec, k: int) -> bool:
    gone = r.steps[k]
    name = gone.name
    for s in r.steps:
        if isinstance(s, Composite) and name in (s.x_from, s.on):
            return False
    if r.returns == name:
        if r.child:
            others = [s for s in r.steps if s.name != name]
            if not others or (isinstance(gone, Leaf) and gone.shape == "dict"):
                return False
            r.returns = others[0].name
        else:
            r.returns = None
    del r.steps[k]
    for s in r.steps:
        s.wait_for = [w for w in s.wait_for if w != name]
        if isinstance(s, Leaf):
            s.reads = [x for x in s.reads if x.source != name]
    return bool(r.steps)


def _mutations(case: CaseSpec) -> Iterator[Callable[[CaseSpec], bool]]:
    """Ways to make `case` smaller, each applied to a copy (False: not applicable)."""

    def setter(attr: str, value: Any) -> Callable[[CaseSpec], bool]:
        def apply(c: CaseSpec) -> bool:
            if getattr(c, attr) == value:
                return False
            setattr(c, attr, value)
            return True

        return apply

    for attr, value in [
        ("runs", 1), ("cancel", None), ("reversible", None), ("shared", None), ("cap", None),
        ("key_limit", None), ("async_", True), ("grace", 5.0), ("run_timeout", None),
    ]:  # fmt: skip
        yield setter(attr, value)
    for k in range(len(case.hooks)):
        yield lambda c, k=k: bool(c.hooks.pop(k))
    for k in range(MAX_PHASES):
        yield (
            lambda c, k=k: (
                c.resume[k] != "direct" and bool(c.resume.__setitem__(k, "direct") or True)
            )
        )
    n_reactors = len(list(_reactors(case.top)))
    for ri in range(n_reactors):
        r = list(_reactors(case.top))[ri]
        for si in range(len(r.steps)):
            yield lambda c, ri=ri, si=si: _drop_step(list(_reactors(c.top))[ri], si)
    for ri in range(n_reactors):
        r = list(_reactors(case.top))[ri]
        for si, step in enumerate(r.steps):

            def on(c: CaseSpec, ri: int = ri, si: int = si) -> Any:
                return list(_reactors(c.top))[ri].steps[si]

            if isinstance(step, Composite):
                yield lambda c, ri=ri, si=si: _flatten(list(_reactors(c.top))[ri], si)
                for attr, value in [
                    ("retries", 0), ("compensate", None), ("timeout", None), ("wait_for", []),
                    ("x_transform", False), ("max_iterations", 1), ("until", False),
                    ("wrapper", "plain"), ("batch_size", 100), ("default", False),
                ]:  # fmt: skip
                    yield lambda c, on=on, a=attr, v=value: _set(on(c), a, v)
                for ui in range(len(step.children)):
                    yield (
                        lambda c, on=on, ui=ui: (
                            len(on(c).children) > 1 and bool(on(c).children.pop(ui))
                        )
                    )
                for ui, u in enumerate(step.children):
                    if isinstance(u, Leaf):
                        yield from _leaf_mutations(lambda c, on=on, ui=ui: on(c).children[ui], u)
                continue
            yield from _leaf_mutations(on, step)


def _flatten(r: ReactorSpec, k: int) -> bool:
    """Replace composite k of `r` by a plain step of the same name."""
    c = r.steps[k]
    if not isinstance(c, Composite):
        return False
    leaf = Leaf(c.name, is_async=False, wait_for=list(c.wait_for))
    if r.child:
        leaf.reads.append(Read("x", "x"))
    if c.x_from not in ("x", "seed", "items"):
        leaf.reads.append(Read(f"p_{c.x_from}", c.x_from, explicit=True))
    r.steps[k] = leaf
    return True


def _set(obj: Any, attr: str, value: Any) -> bool:
    if getattr(obj, attr) == value:
        return False
    setattr(obj, attr, value)
    return True


def _leaf_mutations(
    on: Callable[[CaseSpec], Any], leaf: Leaf
) -> Iterator[Callable[[CaseSpec], bool]]:
    for attr, value in [
        ("outcomes", ["ok"]), ("sleeps", []), ("retries", 0), ("retry_on", False),
        ("backoff", None), ("timeout", None), ("undo", None),
        ("undo_async", False), ("undo_reads", []), ("compensate", None),
        ("compensate_async", False), ("when", None), ("key", None), ("exclusive", False),
        ("spawn", None), ("error", "boom"), ("wait_for", []), ("is_async", False),
    ]:  # fmt: skip
        yield lambda c, a=attr, v=value: _set(on(c), a, v)
    if leaf.undo not in (None, "ok"):
        yield lambda c: _set(on(c), "undo", "ok")
    for k in range(len(leaf.outcomes)):
        yield lambda c, k=k: len(on(c).outcomes) > 1 and bool(on(c).outcomes.pop(k))
    for k, read in enumerate(leaf.reads):
        yield lambda c, k=k: _set(on(c).reads[k], "transform", "none")
        if read.explicit and read.transform == "none" and read.source != "x":
            yield (
                lambda c, k=k: (
                    _set(on(c).reads[k], "explicit", False)
                    and _set(on(c).reads[k], "param", on(c).reads[k].source)
                )
            )
        if read.source != "x":
            yield lambda c, k=k: bool(on(c).reads.pop(k))
    if leaf.spawn is not None:
        for k in range(len(leaf.spawn.new)):
            yield lambda c, k=k: len(on(c).spawn.new) > 1 and bool(on(c).spawn.new.pop(k))
        yield lambda c: _set(on(c).spawn, "depth", 1)


def shrink(
    case: CaseSpec,
    still: Callable[[Any], bool],
    *,
    budget: int = 400,
    runner: Callable[[CaseSpec], Any] | None = None,
) -> tuple[CaseSpec, int]:
    """A smaller case for which ``still(runner(case))`` holds, greedily (by default
    `runner` is `run_case`); and the number of runs it took."""
    import copy

    tries = 0
    progress = True
    while progress and tries < budget:
        progress = False
        for mutate in list(_mutations(case)):
            if tries >= budget:
                break
            candidate = copy.deepcopy(case)
            try:
                changed = mutate(candidate)
            except (IndexError, AttributeError):
                continue
            if not changed or not valid(candidate):
                continue
            tries += 1
            outcome = runner(candidate) if runner else run_case(candidate, real_bound=10.0)
            if still(outcome):
                case = candidate
                progress = True
    return case, tries


def size(case: CaseSpec) -> int:
    """The number of steps and units in `case` (how big a reproduction is)."""
    return sum(len(r.steps) for r in _reactors(case.top)) + sum(
        1 for c, _ in composites(case.top) for u in c.children if isinstance(u, Leaf)
    )


# ---------------------------------------------------------------------------- equivalence
@dataclass(frozen=True)
class Variant:
    """One way of running a case for the equivalence property (issue 13): the same
    reactor under another observer, cap, ``async_`` or executor."""

    name: str
    observer: str | None = None  # None | "recorder" | "async" | "trace"
    cap: int | None = None
    async_: bool = True
    executor: str | None = None


VARIANTS: tuple[Variant, ...] = (
    Variant("plain"),
    Variant("recorder", "recorder"),
    Variant("async on_event", "async"),
    Variant("trace", "trace"),
    *(Variant(f"max_concurrency={k}", "recorder", cap=k) for k in (1, 2, 3, 4)),
    Variant("async_=False", "recorder", async_=False),
    Variant('executor="thread"', "recorder", executor="thread"),
)


class _AsyncRecorder:
    """An async on_event hook that records, and lets the loop run once per event."""

    def __init__(self) -> None:
        self.events: list[rp.Event] = []

    async def on_event(self, event: rp.Event) -> None:
        self.events.append(event)
        await asyncio.sleep(0)


# How each ending event closes a span (what `rp.Trace` records), for comparing the two.
_CLOSES = {
    "step_complete": ("step", "complete"),
    "step_error": ("step", "error"),
    "step_retry": ("step", "retry"),
    "step_halt": ("step", "halt"),
    "guard_skip": ("step", "skip"),
    "compensate_complete": ("compensate", "complete"),
    "compensate_continue": ("compensate", "continue"),
    "compensate_retry": ("compensate", "retry"),
    "compensate_error": ("compensate", "error"),
    "undo_complete": ("undo", "complete"),
    "undo_retry": ("undo", "retry"),
    "undo_error": ("undo", "error"),
}


@dataclass
class Outcome:
    """What one variant of a case did: comparable across variants."""

    variant: Variant
    phases: list[str]  # "halted" per halt, then "done" | "failed"
    result: Any  # the data of the result, or the sorted errors of RunFailed
    executions: dict[str, int]  # completed executions per step instance
    undone: list[str]  # step instances undone (first call), in order
    units: list[str]  # the top-level step each undone one is in (itself, or its composite)
    completed: dict[str, float]  # when each top-level step completed (observed runs)
    events: dict[str, list[str]] | None  # event kinds per step, where observed
    spans: dict[str, list[tuple[str, str]]] | None  # Trace's (phase, outcome) per step
    violations: list[Violation]


def undo_groups(o: Outcome, timing: Outcome) -> list[tuple[float, tuple[str, ...]]]:
    """The undo order of `o` as groups of steps whose top-level steps completed at the
    same virtual instant in `timing` (a run that observed its events): the order inside a
    group may differ between variants (ties, and units under one top-level step)."""
    groups: list[tuple[float, tuple[str, ...]]] = []
    for name, unit in zip(o.undone, o.units, strict=True):
        t = timing.completed.get(unit, -1.0)
        if groups and groups[-1][0] == t:
            groups[-1] = (t, tuple(sorted((*groups[-1][1], name))))
        else:
            groups.append((t, (name,)))
    return groups


def _slot_name(ex: Exec) -> str:
    return f"{ex.slot[0]}[{ex.slot[1][:24]}]" if ex.slot[1] else ex.slot[0]


def run_variant(spec: CaseSpec, variant: Variant) -> Outcome:
    """Run `spec` (a ``mode="equiv"`` case) as `variant`; resume through the checkpoint
    route of each halt, up to `MAX_PHASES` runs."""
    import copy

    spec = copy.deepcopy(spec)
    spec.runs, spec.hooks, spec.cancel, spec.reversible = 1, [], None, None
    c = Case(spec)
    chain = c.chains[0]
    observer: Any = None
    if variant.observer == "recorder":
        observer = Recorder()
    elif variant.observer == "async":
        observer = _AsyncRecorder()
    elif variant.observer == "trace":
        observer = rp.Trace()
    options: dict[str, Any] = {"async_": variant.async_, "grace": 5.0}
    if variant.cap is not None:
        options["max_concurrency"] = variant.cap
    if variant.executor is not None:
        options["executor"] = variant.executor
        chain.loose_order = True
    if observer is not None:
        options["middleware"] = [observer]
    phases: list[str] = []
    result: Any = None

    async def main() -> None:
        nonlocal result
        chain.clock = asyncio.get_running_loop().time
        reactor = _Builder(chain, spec).reactor(spec.top, ())
        checkpoint: Any = None
        for phase in range(MAX_PHASES):
            chain.phase = phase
            try:
                if checkpoint is None:
                    value = await reactor.run(top_inputs(spec.top), **options)
                else:
                    value = await reactor.resume(checkpoint, **options)
            except rp.Halted as halted:
                phases.append("halted")
                checkpoint = _travel(halted.checkpoint, spec.resume[phase])
                continue
            except rp.RunFailed as failed:
                phases.append("failed")
                result = sorted(_leaf_errors(failed))
                return
            phases.append("done")
            result = data(value)
            return

    try:
        run_bounded(main, virtual=None if variant.executor else 1_000.0)
        outcome = {"done": "success", "failed": "failed", "halted": "halted"}[phases[-1]]
        if outcome == "success":
            chain.check_result(result)  # type: ignore[attr-defined]
        if outcome != "halted":
            check_ledger(chain, outcome)
    except Hang as hang:
        c.violations.append(Violation("hang", str(hang)))
    except Exception as exc:
        c.violations.append(
            Violation("unexpected_exception", f"{type(exc).__name__}: {exc!r:.300}")
        )
    finally:
        _LEDGERS.pop(chain.key, None)
    execs = sorted(chain.execs.values(), key=lambda e: e.c)
    undone = sorted((e for e in execs if e.calls), key=lambda e: e.calls[0][0])
    events = spans = None
    completed: dict[str, float] = {}
    if isinstance(observer, (Recorder, _AsyncRecorder)):
        events = {}
        for ev in observer.events:
            events.setdefault(ev.step, []).append(ev.kind)
            if ev.kind in ("step_complete", "compensate_continue") and "." not in ev.step:
                completed[ev.step] = ev.time
    if isinstance(observer, rp.Trace):
        spans = {}
        for sp in observer.spans:
            spans.setdefault(sp.step, []).append((sp.phase, sp.outcome))
        spans = {k: sorted(v) for k, v in spans.items()}
    return Outcome(
        variant,
        phases,
        result,
        dict(Counter(_slot_name(e) for e in execs)),
        [_slot_name(e) for e in undone],
        [e.chain[0][0].split(":")[0] if e.chain else e.step for e in undone],
        completed,
        events,
        spans,
        c.violations,
    )


def _travel(checkpoint: rp.Checkpoint, how: str) -> rp.Checkpoint:
    """The checkpoint after the route `how` (pickle, JSON when it can, or as it is)."""
    if how == "json":
        try:
            return rp.Checkpoint.from_json(checkpoint.to_json())
        except TypeError:
            return pickle.loads(pickle.dumps(checkpoint))  # type: ignore[no-any-return]
    if how == "pickle":
        return pickle.loads(pickle.dumps(checkpoint))  # type: ignore[no-any-return]
    return checkpoint


def spans_of(events: dict[str, list[str]]) -> dict[str, list[tuple[str, str]]]:
    """The (phase, outcome) of every span the events close, per step (as `rp.Trace`)."""
    out = {
        step: sorted(_CLOSES[k] for k in kinds if k in _CLOSES) for step, kinds in events.items()
    }
    return {k: v for k, v in out.items() if v}
