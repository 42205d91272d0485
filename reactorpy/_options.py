"""Run options: what ``run``, ``resume``, ``run_reversible`` and ``undo`` accept, checked once.

Owns: `RunOptions` (frozen, validated when made) and `RunKwargs` (the same options as keyword
arguments, for the signatures of the entry points).
Must not import: the executor, the CLI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import attrs

from ._checks import check_executor, seconds
from ._errors import InputError, did_you_mean
from ._limiter import Limiter

__all__ = ["RunKwargs", "RunOptions", "check_inputs", "check_limits", "middleware_list"]


class RunKwargs(TypedDict, total=False):
    """The keyword options of ``Reactor.run`` (and ``resume``, ``run_reversible``)."""

    context: dict[str, Any] | None
    async_: bool
    max_concurrency: int | Limiter | None
    limits: Mapping[str, int] | None
    timeout: float | None
    grace: float
    middleware: Sequence[Any] | None
    executor: Any
    journal: Any
    run_id: str | None


_NAMES = tuple(RunKwargs.__annotations__)


@attrs.frozen
class RunOptions:
    """The options of one run, checked: see ``Reactor.run`` for what each means.

    Raises (from `of`):
        TypeError: an unknown option, or an option of the wrong type.
        ValueError: an option out of range (a negative grace, a cap of 0, ...).
    """

    context: dict[str, Any] | None = None
    async_: bool = True
    max_concurrency: int | Limiter | None = None
    limits: Mapping[str, int] | None = None
    timeout: float | None = None
    grace: float = 5.0
    middleware: tuple[Any, ...] = ()
    executor: Any = None
    journal: Any = None
    run_id: str | None = None

    @classmethod
    def of(cls, options: Mapping[str, Any], where: str) -> RunOptions:
        """Check `options` (keyword arguments given to `where`, e.g. ``"run() of 'r'"``)."""
        for key in options:
            if key not in _NAMES:
                raise TypeError(
                    f"{where} got an unknown option {key!r}.{did_you_mean(key, _NAMES)} "
                    f"Options: {', '.join(_NAMES)}."
                )
        context = options.get("context")
        if context is not None and not isinstance(context, dict):
            raise TypeError(
                f"{where}: context must be a dict (steps read it as rp.Context.data), got "
                f"{type(context).__name__}."
            )
        async_ = options.get("async_", True)
        if not isinstance(async_, bool):
            raise TypeError(f"{where}: async_ must be True or False, got {async_!r}.")
        cap = options.get("max_concurrency")
        if cap is not None and not isinstance(cap, Limiter):
            if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
                raise ValueError(
                    f"{where}: max_concurrency must be an int >= 1, an rp.Limiter or None, "
                    f"got {cap!r}."
                )
        limits = options.get("limits")
        if limits is not None:
            check_limits(limits, where)
        timeout = seconds(options.get("timeout"), f"{where}: timeout", positive=True)
        grace = seconds(options.get("grace", 5.0), f"{where}: grace", positive=False)
        if grace is None:
            raise TypeError(f"{where}: grace must be a number of seconds >= 0, got None.")
        middleware = middleware_list(options.get("middleware", ()), where)
        executor = options.get("executor")
        if executor is not None:
            check_executor(executor, where)
        journal = options.get("journal")
        if journal is not None and not all(
            callable(getattr(journal, name, None)) for name in ("create_run", "append", "claim")
        ):
            raise TypeError(
                f"{where}: journal must be an rp.SQLiteJournal, an rp.PostgresJournal or "
                f"another rp.Journal, got {type(journal).__name__}."
            )
        run_id = options.get("run_id")
        if run_id is not None and (not isinstance(run_id, str) or not run_id):
            raise TypeError(f"{where}: run_id must be a non-empty str, got {run_id!r}.")
        if run_id is not None and journal is None:
            raise TypeError(
                f"{where}: run_id= names a run in a journal; give the journal too: "
                "journal=rp.SQLiteJournal('runs.db')."
            )
        return cls(
            journal=journal,
            run_id=run_id,
            context=context,
            async_=async_,
            max_concurrency=cap,
            limits=dict(limits) if limits is not None else None,
            timeout=timeout,
            grace=grace,
            middleware=tuple(middleware),
            executor=executor,
        )


def check_inputs(
    reactor: str, declared: tuple[str, ...], inputs: Mapping[str, Any] | None
) -> dict[str, Any]:
    """A run's `inputs` of `reactor`, as a new dict, if they are its `declared` inputs.

    Raises:
        InputError: not a mapping, or inputs missing or undeclared (all of them named).
    """
    if inputs is None:
        inputs = {}
    if not isinstance(inputs, Mapping):
        raise InputError(
            f"Reactor {reactor!r} takes its inputs as a mapping, got {type(inputs).__name__}.",
            reactor=reactor,
            available=declared,
        )
    missing = [name for name in declared if name not in inputs]
    unexpected = [name for name in inputs if name not in declared]
    if missing or unexpected:
        raise InputError(
            reactor=reactor, missing=missing, unexpected=unexpected, available=declared
        )
    return dict(inputs)


def middleware_list(middleware: Any, where: str) -> list[Any]:
    """``middleware=`` as a list: None is none; one object on its own is a mistake worth
    a clear message (iterating it would fail obscurely, or walk the wrong thing)."""
    if middleware is None:
        return []
    if not isinstance(middleware, Sequence) or isinstance(middleware, str):
        raise TypeError(
            f"{where}: middleware must be a list of middleware objects, got "
            f"{type(middleware).__name__}; wrap it: middleware=[...]."
        )
    return list(middleware)


def check_limits(limits: Any, where: str) -> None:
    """Raise unless `limits` maps ``concurrency_key`` strings to caps (ints >= 1)."""
    if not isinstance(limits, Mapping):
        raise TypeError(
            f"{where}: limits must map concurrency keys to caps, e.g. {{'db': 2}}, got "
            f"{type(limits).__name__}."
        )
    for key, value in limits.items():
        if not isinstance(key, str):
            raise TypeError(f"{where}: limits keys are concurrency_key strings, got {key!r}.")
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{where}: limits[{key!r}] must be an int >= 1, got {value!r}.")
