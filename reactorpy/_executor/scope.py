"""How composite steps run children: the one protocol they use, `ChildScope`.

Owns: `ChildScope` (run a child reactor and get back its value and undo records, undo
records, keep records, hand over a halt, read what a step may use), `ChildRun` (what a
child run returned), the naming of a child's undo records as records of its parent
(`parent_records`), with the route to each step so that undo finds its callback again
after a checkpoint went through JSON, and the child that halted inside a step, from what a
checkpoint keeps of it (`halted_child`, `inner_records`): a composite's, or new steps'
(`inflight.NewStepsHalted`).
Must not import: the composites (they import this protocol's users' side: nothing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from .._arguments import Context
from .._checkpoint import BY_REFERENCE, Checkpoint, UndoRecord
from .._errors import Halted
from .inflight import NewStepsHalted
from .state import DONE

if TYPE_CHECKING:
    from .._limiter import Limiter
    from .._plan import Plan
    from .._reactor import Reactor
    from .run import Run

__all__ = [
    "MISSING",
    "ChildRun",
    "ChildScope",
    "checkpoint_records",
    "child_key",
    "halted_child",
    "inner_records",
    "parent_records",
]

#: What `ChildScope.lookup` returns for a name it does not hold.
MISSING: Any = type("_Missing", (), {"__repr__": lambda self: "<missing>"})()


@attrs.frozen
class ChildRun:
    """What a child run gave its composite.

    Attributes:
        value: its result (None if it halted).
        records: its undo records, named as records of the parent run, oldest first (for
            a child that halted: what it completed, at every depth).
        halted: the child's `Halted`, if it halted; its checkpoint resumes it.
    """

    value: Any
    records: list[UndoRecord]
    halted: Halted | None = None


class ChildScope:
    """What composite step `i` of a run may do with that run.

    Composites (compose, map, switch, recurse, around, new steps) talk to their run only
    through this: they never touch the run's state.
    """

    __slots__ = ("i", "run")

    def __init__(self, run: Run, i: int) -> None:
        self.run = run
        self.i = i

    def __repr__(self) -> str:
        return f"<ChildScope of step {self.name!r}>"

    @property
    def name(self) -> str:
        """The step's name in its reactor."""
        return self.run.plan.order[self.i]

    @property
    def path(self) -> str:
        """The step's name as its events name it (``parent.child`` when composed)."""
        return self.run.names[self.i]

    @property
    def reactor_name(self) -> str:
        """The name of the reactor this step belongs to."""
        return self.run.plan.reactor

    def new_reactor(self, name: str, *, inputs: list[str], returns: str | None) -> Any:
        """An empty reactor of the run's own kind (for steps added at run time)."""
        return type(self.run.reactor)(name, inputs=inputs, returns=returns)

    @property
    def limiter(self) -> Limiter | None:
        """The limiter children's steps share: the run's (one step at a time: the
        caller's, if it gave one)."""
        run = self.run
        return run.limiter if run.async_ else run.outer_limiter

    @property
    def async_(self) -> bool:
        """False when the run goes one step at a time: children do too."""
        return self.run.async_

    @property
    def executor(self) -> Any:
        """The run's executor for plain defs (None: the loop)."""
        return self.run.default_executor

    @property
    def observed(self) -> bool:
        """Whether middleware wants the events of steps (children's steps report theirs)."""
        mw = self.run.mw
        return mw is not None and bool(mw.event_kinds)

    def fresh_context(self) -> Any:
        """A copy of the run's context, for a child element run in a task of its own."""
        return self.run.base_ctx.copy()

    def resumed(self) -> Any:
        """What this step's child that halted inside it left, to resume inside, taken
        once: its checkpoint (compose, switch), or a `NewStepsHalted` (new steps); None
        when the step starts afresh. Its records leave the run's undo stack: the resumed
        child undoes them itself if it fails."""
        inner = self.run.inner.pop(self.name, None)
        self.run.ledger.take_halted(self.i)
        return inner

    @property
    def halting(self) -> bool:
        """Whether the run is halting (so nothing new starts)."""
        return self.run.st.halting

    @property
    def keeps_new_steps(self) -> bool:
        """Whether the run's checkpoint may keep new steps that halted, to continue them
        on resume: not when its journal writes checkpoints as JSON, which cannot hold
        steps (they are undone then, and the step that returned them runs again)."""
        durable = self.run.durable
        return durable is None or durable.serializer.name != "json"

    async def run_child(
        self,
        reactor: Reactor,
        inputs: dict[str, Any],
        label: str,
        *,
        checkpoint: Checkpoint | None = None,
        serial: bool = False,
        linked: bool = False,
    ) -> ChildRun:
        """Run `reactor` as a child of this step; its steps are named ``path.label...``;
        `serial`: one step at a time (a run that goes one step at a time runs its children
        so anyway); `linked`: the child halts when this run halts (new steps), rather than
        running on through the grace and being cancelled, undone, at its end.

        Returns:
            A `ChildRun`: completed, or halted (the caller decides what a halt means).

        Raises:
            RunFailed: the child failed (it undid what it completed).
            CancelledError: the child was cancelled (it undid what it completed).
        """
        child = child_run(self.run, self.i, reactor, inputs, label, checkpoint, serial)
        linked_to = self.run.st.linked
        if linked:
            child.st.follows = True
            linked_to.add(child)
        try:
            value = await child.execute()
        except Halted as halted:
            records = parent_records(self.run, self.i, child, label, with_halted=True)
            return ChildRun(None, records, halted)
        finally:
            linked_to.discard(child)
            # An undo failed in the child, or a composite of its own was left so (at any
            # depth, however it ended: cancelled, its error is only a note).
            if child.undoer.failed or child.st.left:
                self.run.st.left.add(self.i)
        return ChildRun(value, parent_records(self.run, self.i, child, label))

    async def undo(self, records: Sequence[UndoRecord]) -> list[BaseException]:
        """Undo `records` (oldest first, as given), newest first; return the undo errors
        (the step is then never retried: `RunState.left`). Not shielded: the caller
        shields it together with what goes before it."""
        undoer = self.run.undoer
        failed = len(undoer.failed)
        errors = await undoer.undo_all(list(reversed(records)))
        if len(undoer.failed) > failed:  # (an undo failed, not a hook watching it)
            self.run.st.left.add(self.i)
        return errors

    def keep(self, records: Sequence[UndoRecord]) -> None:
        """These records join the run's undo stack when this step completes."""
        if records:
            self.run.kept.setdefault(self.i, []).extend(records)

    def halted_inside(self, inner: Any, records: list[UndoRecord]) -> None:
        """The child halted inside this step: keep `inner` (its checkpoint, in the
        composite's own form) to resume inside on resume, and what it completed, undone if
        this run fails instead."""
        self.run.inner[self.name] = inner
        self.run.ledger.hold_halted(self.i, records)

    def arguments(self) -> dict[str, Any]:
        """This step's arguments by name (as its last attempt got them)."""
        run = self.run
        return run.named_args(self.i, run.st.attempts[self.i] or 1)

    def lookup(self, name: str) -> Any:
        """A run input, or a result the run still holds, by name (`MISSING` if neither)."""
        run = self.run
        plan = run.plan
        k = plan.input_index.get(name)
        if k is not None:
            return run.st.vals[run.n + k]
        j = plan.index.get(name)
        st = run.st
        if j is not None and st.status[j] == DONE and (run.keep[j] or st.readers_left[j] > 0):
            return st.vals[j]
        return MISSING

    def names(self) -> list[str]:
        """The names `lookup` may find (for messages)."""
        plan = self.run.plan
        return [*plan.inputs, *plan.order]

    def context(self) -> Context:
        """The `rp.Context` of this step."""
        return self.run.context(self.i, self.run.st.attempts[self.i] or 1)

    def available(self) -> dict[str, Any]:
        """What steps added by this step may use: held results, inputs, its own arguments
        (not its `rp.Context`: a new step that asks for one gets its own, and the
        checkpoint of new steps that halt, which keeps what they were given, never holds
        one)."""
        run = self.run
        plan = run.plan
        st = run.st
        out = {
            name: st.vals[j]
            for j, name in enumerate(plan.order)
            if st.status[j] == DONE and (run.keep[j] or st.readers_left[j] > 0)
        }
        out.update(zip(plan.inputs, st.vals[run.n : run.n + len(plan.inputs)], strict=True))
        named = run.named_args(self.i, st.attempts[self.i] or 1)
        out.update((k, v) for k, v in named.items() if type(v) is not Context)
        return out


def parent_records(
    run: Run, i: int, child: Run, label: str, *, with_halted: bool = False
) -> list[UndoRecord]:
    """`child`'s undo records (with those of its children that halted inside, if
    `with_halted`), named and called as records of composite step `i` of `run`."""
    return rename(run.plan, i, child.reactor, child.plan, child.ledger.records(with_halted), label)


def rename(
    plan: Plan,
    i: int,
    reactor: Reactor,
    child_plan: Plan,
    records: Sequence[UndoRecord],
    label: str,
) -> list[UndoRecord]:
    """Records of a child run of `reactor`, as records of composite step `i` of `plan`:
    named ``composite.label.step``, with their callbacks, and with the route to their step
    from the parent's reactor (None for steps the child made while running)."""
    composite = plan.order[i]
    key = child_key(plan.steps[i], reactor)
    out = []
    for rec in records:
        undo, inner = rec.undo, rec.route
        if undo is None and inner is None:  # a step of the child itself
            index = child_plan.index.get(rec.step)
            if index is not None:
                undo, inner = child_plan.steps[index].undo_callback, (rec.step,)
        route = None if key is None or inner is None else (composite, key, *inner)
        if inner and inner[0] == BY_REFERENCE:  # (where the function is, at any depth)
            route = inner
        out.append(
            UndoRecord(f"{composite}.{label}{rec.step}", rec.value, rec.arguments, undo, route)
        )
    return out


def checkpoint_records(reactor: Reactor, checkpoint: Checkpoint) -> list[UndoRecord]:
    """Every undo record a checkpoint holds, oldest first, at every depth: its own, and
    those of children that halted inside steps, where they halted."""
    plan = reactor.plan()
    records = list(checkpoint.undo_stack)
    marks = checkpoint.inner_marks
    top = len(records)
    for name in sorted(checkpoint.inner, key=lambda n: -marks.get(n, top)):
        inner = inner_records(reactor, plan.index[name], checkpoint.inner[name])
        mark = marks.get(name, top)
        records[mark:mark] = inner
    return records


def inner_records(reactor: Reactor, i: int, inner: Any) -> list[UndoRecord]:
    """The undo records of the child that halted inside step `i` of `reactor` (`inner`,
    its entry in `Checkpoint.inner`), at every depth, as records of `reactor`'s run,
    oldest first (for new steps, those of the rounds before it first)."""
    done = list(inner.done) if isinstance(inner, NewStepsHalted) else []
    found = halted_child(reactor, i, inner)
    if found is None:
        return done
    child, child_checkpoint, label = found
    plan = reactor.plan()
    records = checkpoint_records(child, child_checkpoint)
    return done + rename(plan, i, child, child.plan(), records, label)


def halted_child(reactor: Reactor, i: int, inner: Any) -> tuple[Reactor, Checkpoint, str] | None:
    """The child that halted inside step `i` of `reactor` (`inner`, its entry in
    `Checkpoint.inner`): its reactor, its checkpoint and the label its steps are named
    with; None for new steps that had no child run (`NewStepsHalted.checkpoint`)."""
    if isinstance(inner, NewStepsHalted):
        if inner.checkpoint is None:
            return None
        return inner.child(type(reactor)), inner.checkpoint, ""
    found: tuple[Reactor, Checkpoint, str] = reactor.plan().steps[i].halted_child(inner)  # type: ignore[attr-defined]
    return found


def child_key(step: Any, reactor: Reactor) -> str | None:
    """The key of `reactor` among the children of composite `step` (None: a reactor the
    step made while running, from `NewSteps`)."""
    children: Mapping[str, Any] = getattr(step, "children", {})
    for key, child in children.items():
        if child is reactor:
            return str(key)
    return None


def child_run(
    run: Run,
    i: int,
    reactor: Reactor,
    inputs: dict[str, Any],
    label: str,
    checkpoint: Checkpoint | None,
    serial: bool = False,
) -> Run:
    """A run of `reactor` inside composite step `i` of `run`, named as its steps are in
    `run`, sharing its limiter, middleware, context and journal (`serial`: one step at a
    time)."""
    key = child_key(run.plan.steps[i], reactor)
    # The route from the root reactor to the child's steps (None: made at run time).
    route = None if run.route is None or key is None else (*run.route, run.plan.order[i], key)
    return type(run)(
        reactor,
        reactor.plan(),
        inputs,
        context=run.data,
        async_=run.async_ and not serial,
        # One step at a time: the child gets its own one slot, under the caller's.
        limiter=run.limiter if run.async_ else run.outer_limiter,
        timeout=None,
        grace=run.grace,
        middleware=run.mw,
        new_steps=run.new_steps_runner,
        prefix=f"{run.names[i]}.{label}",
        parent=run.run_id,
        checkpoint=checkpoint,
        executor=run.default_executor,
        durable=run.durable,
        route=route,
        root_id=run.root_id,
    )
