"""The `Reactor`: a named set of inputs and steps, and the entry points that run it.

Owns: registration of steps (duplicate and signature checks at decoration), the cached
`Plan`, run option validation, and ``run``/``run_sync``/``resume``/``run_reversible``/``undo``.
Must not import: the CLI.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, Unpack, overload

import attrs

from ._arguments import Source
from ._checkpoint import Checkpoint
from ._checks import check_executor, check_options
from ._composing import Composing
from ._composites import run_new_steps
from ._errors import DefinitionError, DuplicateStepError, ResumeError
from ._events import Middleware
from ._executor import Durable, Run, halted_child
from ._limiter import Limiter
from ._mermaid import flowchart
from ._options import RunKwargs, RunOptions, check_inputs, check_limits, middleware_list
from ._plan import Plan, compile_plan
from ._reversible import Reversible, Reversing
from ._step import Step, hooks_generation, make_step

__all__ = ["Reactor", "Reversible"]

P = ParamSpec("P")
R = TypeVar("R")
if TYPE_CHECKING:
    # PEP 696 defaults (typing has them from 3.13): a bare ``Reactor`` is ``Reactor[Any]``.
    from typing_extensions import TypeVar as _DefaultTypeVar

    T = _DefaultTypeVar("T", default=Any)
else:
    T = TypeVar("T")


class Reactor(Composing, Reversing[T], Generic[T]):
    """A workflow: inputs, steps wired by their arguments, and what to return.

    `Reactor` is generic in what ``run()`` returns, for type checkers:
    ``orders: rp.Reactor[int] = rp.Reactor("orders", inputs=["x"], returns="total")``
    types ``await orders.run(...)`` as ``int``. Unannotated, a reactor with ``returns`` is a
    ``Reactor[Any]``, and one without it a ``Reactor[dict[str, Any]]``.

    Args:
        name: the reactor's name (in errors, traces and diagrams).
        inputs: the names of the inputs every run must be given; or a mapping of those
            names to a transform each (a one-argument callable, or None), applied once per
            run before any step starts (a transform that raises is an `InputError`).
        returns: the step (or input) whose value ``run()`` returns; None returns a dict of
            every step's result.
        max_concurrency: default cap on running steps (an int or a shared `Limiter`).
        limits: default caps per ``concurrency_key``.
        middleware: middleware objects for every run.
        executor: default executor for plain ``def`` steps (``"thread"``, a
            ``concurrent.futures.Executor`` or a dask ``Client``); None runs them on the loop.

    >>> r = Reactor("double", inputs=["x"], returns="twice")
    >>> @r.step
    ... def twice(x):
    ...     return 2 * x
    >>> r.run_sync({"x": 21})
    42
    """

    @overload
    def __init__(
        self: Reactor[dict[str, Any]],
        name: str,
        *,
        inputs: Iterable[str] | Mapping[str, Callable[[Any], Any] | None] = ...,
        returns: None = None,
        max_concurrency: int | Limiter | None = ...,
        limits: Mapping[str, int] | None = ...,
        middleware: Sequence[Any] | None = ...,
        executor: Any = ...,
    ) -> None: ...
    @overload
    def __init__(
        self: Reactor[Any],
        name: str,
        *,
        inputs: Iterable[str] | Mapping[str, Callable[[Any], Any] | None] = ...,
        returns: str,
        max_concurrency: int | Limiter | None = ...,
        limits: Mapping[str, int] | None = ...,
        middleware: Sequence[Any] | None = ...,
        executor: Any = ...,
    ) -> None: ...
    def __init__(
        self,
        name: str,
        *,
        inputs: Iterable[str] | Mapping[str, Callable[[Any], Any] | None] = (),
        returns: str | None = None,
        max_concurrency: int | Limiter | None = None,
        limits: Mapping[str, int] | None = None,
        middleware: Sequence[Any] | None = (),
        executor: Any = None,
    ) -> None:
        self.name = name
        self.inputs: tuple[str, ...] = (inputs,) if isinstance(inputs, str) else tuple(inputs)
        # Input transforms, by input name (the inputs given as a mapping with callables).
        self.input_transforms: dict[str, Callable[[Any], Any]] = {}
        if isinstance(inputs, Mapping):
            for key, transform in inputs.items():
                if transform is None:
                    continue
                if not callable(transform) or inspect.iscoroutinefunction(transform):
                    raise DefinitionError(
                        f"Reactor {name!r}: the transform of input {key!r} must be a plain "
                        f"one-argument function or None, got {transform!r}."
                    )
                self.input_transforms[key] = transform
        if len(set(self.inputs)) != len(self.inputs):
            raise DefinitionError(f"Reactor {name!r} declares an input twice: {self.inputs!r}.")
        self._returns = returns
        self.max_concurrency = max_concurrency
        if limits is not None:
            check_limits(limits, f"Reactor {name!r}")
        self.limits = dict(limits or {})
        self.middleware = middleware_list(middleware, f"Reactor {name!r}")
        if self.middleware:
            Middleware(self.middleware)  # fail early on objects that are not middleware
        if executor is not None:
            check_executor(executor, f"Reactor {name!r}")
        self.executor = executor
        self._steps: dict[str, Step[..., Any]] = {}
        self._version = 0
        self._cached: tuple[Any, Plan, int] | None = None

    def __repr__(self) -> str:
        return f"<Reactor {self.name!r}: {len(self._steps)} steps, inputs {list(self.inputs)}>"

    # ------------------------------------------------------------------ defining
    @property
    def returns(self) -> str | None:
        """The step or input whose value ``run()`` returns (None: every result)."""
        return self._returns

    @returns.setter
    def returns(self, name: str | None) -> None:
        self._returns = name
        self._version += 1

    @property
    def steps(self) -> Mapping[str, Step[..., Any]]:
        """The registered steps by name, in definition order."""
        return dict(self._steps)

    @overload
    def step(self, fn: Callable[P, R], /) -> Step[P, R]: ...
    @overload
    def step(
        self,
        *,
        name: str | None = ...,
        args: Mapping[str, Source] | None = ...,
        wait_for: Iterable[str] | str = ...,
        async_: bool = ...,
        retries: int = ...,
        retry_on: type[BaseException] | Iterable[type[BaseException]] = ...,
        backoff: float | Callable[[int, BaseException], float] | None = ...,
        timeout: float | None = ...,
        executor: Any = ...,
        concurrency_key: str | None = ...,
        when: Callable[..., Any] | None = ...,
        description: str | None = ...,
    ) -> Callable[[Callable[P, R]], Step[P, R]]: ...
    def step(self, fn: Any = None, /, **options: Any) -> Any:  # type: ignore[misc]
        """Define a step and register it; use bare or with options.

        Options (keyword-only): ``name``, ``args`` (``{param: rp.Input/rp.Result/rp.Value}``),
        ``wait_for``, ``async_``, ``retries``, ``retry_on``, ``backoff``, ``timeout``,
        ``executor``, ``concurrency_key``, ``when``, ``description``.

        Returns:
            The `Step`, still callable like the function.

        Raises:
            DuplicateStepError: the name is taken by a step or an input.
            DefinitionError: the options or the signature are wrong.
        """
        check_options(options, "@reactor.step")
        if fn is not None:
            return self.add(make_step(fn, options))

        def decorate(f: Callable[P, R]) -> Step[P, R]:
            return self.add(make_step(f, options))

        return decorate

    def add(
        self,
        step: Step[P, R],
        name: str | None = None,
        args: Mapping[str, Source] | None = None,
    ) -> Step[P, R]:
        """Register a `Step` (made with ``@rp.step``), optionally renamed or rewired.

        Returns the registered step: `step` itself, or a copy when `name` or `args` is given
        (the copy shares `step`'s undo and compensate callbacks).
        """
        if not isinstance(step, Step):
            raise DefinitionError(f"reactor.add() takes a Step (made with @rp.step), got {step!r}.")
        if name is not None or args is not None:
            step = step.evolve(name=name, args=args)
        if step.name in self._steps:
            raise DuplicateStepError(step.name, self.name)
        if step.name in self.inputs:
            raise DuplicateStepError(step.name, self.name, clashes_with="input")
        self._steps[step.name] = step
        self._version += 1
        return step

    # ------------------------------------------------------------------ planning
    def _key(self) -> tuple[Any, ...]:
        return (self._version, tuple(s.version for s in self._steps.values()))

    def _fresh_plan(self) -> Plan | None:
        """The cached plan if nothing changed since it was made (cheap: no scan of steps)."""
        cached = self._cached
        if cached is not None and cached[2] == hooks_generation() and cached[0][0] == self._version:
            return cached[1]
        return None

    def plan(self) -> Plan:
        """Validate the definition and return its (cached) `Plan`.

        Raises:
            UnknownReferenceError: a step or ``returns`` names nothing that exists.
            CycleError: steps depend on each other in a cycle.
            DefinitionError: a parameter matches no input or step.
        """
        fresh = self._fresh_plan()
        if fresh is not None:
            return fresh
        key = self._key()
        generation = hooks_generation()
        cached = self._cached
        if cached is not None and cached[0] == key:
            self._cached = (key, cached[1], generation)
            return cached[1]
        plan = compile_plan(self.name, self.inputs, list(self._steps.values()), self._returns)
        self._cached = (key, plan, generation)
        return plan

    @property
    def graph(self) -> Any:
        """The ``networkx.DiGraph`` of inputs and steps (node attributes ``kind``, ``step``;
        edge attributes ``args``, the parameters the edge feeds, and ``kind``)."""
        return self.plan().graph

    def to_mermaid(self, direction: str = "TD", expand: bool = False) -> str:
        """A Mermaid flowchart of the inputs, steps, argument edges and the return."""
        return flowchart(self, direction=direction, expand=expand)

    def to_dot(self, direction: str = "TB", expand: bool = False) -> str:
        """A Graphviz DOT digraph of the inputs, steps, argument edges and the return.

        Args:
            direction: ``"TB"`` (or ``"TD"``), ``"BT"``, ``"LR"`` or ``"RL"``.
            expand: draw the reactors that composite steps run (compose, map, switch,
                recurse, around) as clusters around those steps.
        """
        from ._mermaid import dot

        return dot(self, direction=direction, expand=expand)

    # ------------------------------------------------------------------ running
    def _limiter(self, options: RunOptions, plan: Plan) -> Limiter | None:
        cap = self.max_concurrency if options.max_concurrency is None else options.max_concurrency
        merged = {**self.limits, **(options.limits or {})}
        if merged:
            unused = sorted(merged.keys() - self._concurrency_keys(plan))
            if unused:
                raise ValueError(
                    f"limits of {self.name!r} name {', '.join(map(repr, unused))}, which no "
                    f"step of it (or of a reactor composed into it) has as its "
                    f"concurrency_key; keys in use: "
                    f"{', '.join(map(repr, sorted(self._concurrency_keys(plan)))) or '(none)'}. "
                    "Keys of steps added at run time go on a shared rp.Limiter instead."
                )
        if isinstance(cap, Limiter):
            cap.check_limits(merged, f"run() of {self.name!r}")
            return cap
        if cap is None and not merged:
            return None
        return Limiter(cap, limits=merged)

    def _concurrency_keys(self, plan: Plan) -> frozenset[str]:
        """The concurrency keys of this reactor's steps and of the reactors composed in."""
        cached = self.__dict__.get("_keys")
        if cached is not None and cached[0] is plan:
            return cached[1]  # type: ignore[no-any-return]
        keys = {s.concurrency_key for s in plan.steps if s.concurrency_key is not None}
        for s in plan.steps:
            for child in getattr(s, "children", {}).values():
                keys |= child._concurrency_keys(child.plan())
        frozen = frozenset(keys)
        self.__dict__["_keys"] = (plan, frozen)
        return frozen

    def _inputs(self, plan: Plan, inputs: Mapping[str, Any] | None) -> dict[str, Any]:
        """A run's inputs, checked (`InputError` naming what is missing or undeclared)."""
        return check_inputs(self.name, plan.inputs, inputs)

    def _prepare(
        self,
        plan: Plan,
        inputs: dict[str, Any],
        options: RunOptions,
        checkpoint: Checkpoint | None = None,
        durable: Durable | None = None,
        run_id: str | None = None,
        root_id: str | None = None,
    ) -> Run:
        """The `Run` of `plan` with these inputs and options (checked already); a journaled
        run has its `Durable` and its id in the journal."""
        mw = [*self.middleware, *options.middleware]
        return Run(
            self,
            plan,
            inputs,
            context=options.context,
            async_=options.async_,
            limiter=self._limiter(options, plan),
            timeout=options.timeout,
            grace=options.grace,
            middleware=Middleware(mw) if mw else None,
            new_steps=run_new_steps,
            checkpoint=checkpoint,
            executor=options.executor if options.executor is not None else self.executor,
            durable=durable,
            run_id=run_id,
            root_id=checkpoint.run_id if checkpoint is not None else root_id,
        )

    async def run(
        self, inputs: Mapping[str, Any] | None = None, /, **options: Unpack[RunKwargs]
    ) -> T:
        """Run the reactor and return the value of ``returns``.

        Args:
            inputs: a value for every declared input, by name.
            **options: keyword-only:

                - ``context``: a dict steps can read through ``rp.Context.data``.
                - ``async_``: False runs one step at a time, in plan order.
                - ``max_concurrency``: cap on running steps (an int, or a `Limiter` shared
                  with other runs); overrides the reactor's default.
                - ``limits``: caps per ``concurrency_key``, added to the reactor's.
                - ``timeout``: seconds after which the run halts (resumable), raising
                  `Halted`.
                - ``grace``: seconds running steps get to finish after an error or halt
                  before they are cancelled (default 5).
                - ``middleware``: middleware for this run, after the reactor's own.
                - ``executor``: where plain ``def`` steps without their own ``executor=``
                  run in this run (overrides the reactor's default).
                - ``journal``: an `rp.SQLiteJournal` or `rp.PostgresJournal`: the run is
                  recorded (its inputs, each completion before what depends on it starts,
                  each undo, its end) and survives a crash: see `recover`.
                - ``run_id``: the run's id in the journal (a str; generated if omitted). An
                  id the journal holds as completed returns its recorded result and runs
                  nothing; as failed raises its recorded failure; as running in a live
                  process raises `OwnershipError`; as running in a dead one continues it.

        Raises:
            InputError: inputs are missing or undeclared (before any step runs).
            DefinitionError: the definition is wrong (before any step runs).
            TypeError, ValueError: an option is unknown or wrong (before any step runs).
            RunFailed: a step's error stood; completed steps were undone first.
            Halted: a step halted or the timeout passed; resume with `resume`.
            OwnershipError: ``run_id`` is running in another live process.
            ResumeError: ``run_id`` is a run of another reactor, or halted (`resume` it).

        >>> import asyncio
        >>> r = Reactor("hello", inputs=["who"], returns="greet")
        >>> @r.step
        ... async def greet(who):
        ...     return f"hello {who}"
        >>> asyncio.run(r.run({"who": "you"}))
        'hello you'
        """
        plan = self.plan()
        checked = RunOptions.of(options, f"run() of {self.name!r}")
        if checked.journal is not None:
            from ._recovery import run_journaled  # (not loaded by runs without a journal)

            journaled: T = await run_journaled(
                self, plan, self._inputs(plan, inputs), checked, self._prepare
            )
            return journaled
        run = self._prepare(plan, self._inputs(plan, inputs), checked)
        result: T = await run.execute()
        return result

    def run_sync(
        self, inputs: Mapping[str, Any] | None = None, /, **options: Unpack[RunKwargs]
    ) -> T:
        """`run` for code with no running event loop (it starts one with ``asyncio.run``).

        Raises:
            RuntimeError: called from a running event loop; there, ``await reactor.run()``.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.run(inputs, **options))
        raise RuntimeError(
            f"run_sync() of {self.name!r} was called from a running event loop; there, "
            "use `await reactor.run(...)` instead."
        )

    async def resume(self, checkpoint: Checkpoint | str, /, **options: Unpack[RunKwargs]) -> T:
        """Continue a halted run from its `Checkpoint`; takes the options of `run`.

        Completed steps are not run again; the halting step runs again unless it halted
        with a ``result``. A checkpoint may be resumed more than once, independently. A
        journaled run that halted resumes by its id, ``resume("order-42", journal=j)``,
        from the checkpoint in the journal, and goes on recording under that id.

        Raises:
            ResumeError: the checkpoint belongs to another reactor, or this one changed;
                the journal's run did not halt.
            LookupError: the journal holds no such run.
        """
        checked = RunOptions.of(options, f"resume() of {self.name!r}")
        if isinstance(checkpoint, str):
            if checked.journal is None:
                raise TypeError(
                    f"resume({checkpoint!r}) of {self.name!r}: a run id resumes a run from its "
                    "journal: give journal= too."
                )
            checked = attrs.evolve(checked, run_id=checkpoint)
            from ._recovery import halted_checkpoint

            checkpoint = await halted_checkpoint(checked.journal, checkpoint)
        if not isinstance(checkpoint, Checkpoint):
            raise ResumeError(
                f"resume() takes a Checkpoint or, with a journal, a run id; got "
                f"{type(checkpoint).__name__}."
            )
        if checkpoint.finished:
            raise ResumeError(
                f"This checkpoint is of a run of {checkpoint.reactor!r} that completed: there "
                "is nothing to resume (undo() reverses it)."
            )
        plan = self._fitting_plan(checkpoint)
        if checked.journal is not None:
            if checked.run_id is None:
                raise TypeError(
                    f"resume() of {self.name!r} with a journal resumes a run of the journal: "
                    "give its id, resume(run_id, journal=...)."
                )
            from ._recovery import resume_journaled

            journaled: T = await resume_journaled(self, plan, checkpoint, checked, self._prepare)
            return journaled
        run = self._prepare(plan, self._inputs(plan, checkpoint.inputs), checked, checkpoint)
        result: T = await run.execute()
        return result

    def _fitting_plan(self, checkpoint: Checkpoint) -> Plan:
        """This reactor's plan, if `checkpoint` fits it, and the checkpoints of composed
        reactors that halted inside fit theirs; else `ResumeError`, before anything runs."""
        plan = self.plan()
        checkpoint.check(self.name, plan.fingerprint, plan.structure)
        for name, inner in checkpoint.inner.items():
            found = halted_child(self, plan.index[name], inner)
            if found is None:  # new steps that had not started a child run
                continue
            child, child_checkpoint, _ = found
            try:
                child._fitting_plan(child_checkpoint)
            except ResumeError as exc:
                raise ResumeError(f"Inside step {name!r} of {self.name!r}: {exc}") from None
        return plan
