"""Offloading sync steps to threads, process pools and dask clusters.

Owns: how one call of a step is submitted to an executor, how its result comes back, and
`OffloadError`, the clear error when a step, its arguments, its result or its exception
cannot travel between processes.
Must not import: the executor (it is called by it).

Where a call goes, by the ``executor=`` a step or run was given:

- ``"thread"`` or a ``ThreadPoolExecutor``: the step's function itself runs in a worker
  thread, inside the step's own ``contextvars`` context. Nothing is pickled.
- a ``dask.distributed.Client``: the same as its ``get_executor(pure=False)``.
- any other ``concurrent.futures.Executor`` (a ``ProcessPoolExecutor``, a dask client's
  executor, ...): the call is pickled here, once, into bytes, so an argument that cannot be
  pickled is reported by name before anything is submitted. The worker runs `_Remote`,
  which unpickles the call, runs it, and pickles the result itself: a result or exception
  that could not travel back is reported as an `OffloadError` naming the step, instead of
  breaking the pool (an exception that pickles but does not unpickle would break a
  ``ProcessPoolExecutor`` for good).

The future returned is a `concurrent.futures.Future` whose ``cancel()`` cancels the
submitted call where the engine allows it (a call not yet started in a pool; a dask task at
any time) and returns False when it cannot (a call already running in a thread or process,
which the run then reports as abandoned).
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import pickle
import threading
import traceback
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from ._errors import ReactorError

__all__ = ["OffloadError", "is_dask_client", "submit"]

_PROTOCOL = pickle.HIGHEST_PROTOCOL

_thread_pool: concurrent.futures.ThreadPoolExecutor | None = None
_lock = threading.Lock()
# (module, qualname) -> the function a step was checked to pickle by reference to. Keeping
# the function (not a flag) means a cached answer is only ever reused for that function.
_by_reference: dict[tuple[str, str], Callable[..., Any]] = {}
_dask_executors: weakref.WeakKeyDictionary[Any, concurrent.futures.Executor] = (
    weakref.WeakKeyDictionary()
)


class OffloadError(ReactorError, TypeError):
    """A step, one of its arguments, its result or its error cannot cross to another process.

    Attributes:
        step: the step's name.
        problem: what could not be sent, and why.
        argument: the offending argument's parameter name, when an argument is at fault.
    """

    def __init__(self, step: str, problem: str, *, argument: str | None = None) -> None:
        self.step = step
        self.problem = problem
        self.argument = argument
        super().__init__(
            f"Step {step!r} cannot run in another process: {problem}. Define the step at "
            "module level and pass it picklable values, or run it with executor='thread'."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # The third item carries __notes__ (and any other attributes) across processes.
        return (_offload_error, (self.step, self.problem, self.argument), self.__dict__)


def _offload_error(step: str, problem: str, argument: str | None) -> OffloadError:
    return OffloadError(step, problem, argument=argument)


def is_dask_client(executor: Any) -> bool:
    """Whether `executor` looks like a ``dask.distributed.Client`` (without importing dask)."""
    return hasattr(executor, "get_executor") and hasattr(executor, "scheduler_info")


def submit(
    executor: Any, step: Any, pos: list[Any], kw: dict[str, Any], name: str
) -> concurrent.futures.Future[Any]:
    """Submit one call of `step` to `executor` and return a future of its result.

    Args:
        executor: ``"thread"``, a ``concurrent.futures.Executor`` or a dask ``Client``.
        step: the `Step` (pickled by reference when the call leaves this process).
        pos: positional arguments.
        kw: keyword arguments.
        name: the step's name in this run, for error messages.

    Raises:
        OffloadError: the step or an argument cannot be pickled; nothing was submitted.
    """
    if executor == "thread":
        executor = _threads()
    if isinstance(executor, concurrent.futures.ThreadPoolExecutor):
        # Threads share memory: pass the function itself, inside the step's context.
        ctx = contextvars.copy_context()
        return executor.submit(ctx.run, step.fn, *pos, **kw)
    if is_dask_client(executor):
        executor = _dask_executor(executor)
    payload = _pickled_call(step, pos, kw, name)
    return _Relay(executor.submit(_Remote(name), payload), name)


def _threads() -> concurrent.futures.ThreadPoolExecutor:
    global _thread_pool
    with _lock:
        if _thread_pool is None:
            _thread_pool = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="reactorpy")
        return _thread_pool


def _dask_executor(client: Any) -> concurrent.futures.Executor:
    try:
        return _dask_executors[client]
    except KeyError:
        pass
    except TypeError:  # pragma: no cover - a client-like object that is not weak-referenceable
        return client.get_executor(pure=False)  # type: ignore[no-any-return]
    executor: concurrent.futures.Executor = client.get_executor(pure=False)
    _dask_executors[client] = executor
    return executor


# -------------------------------------------------------------------------- the parent side
def _pickled_call(step: Any, pos: list[Any], kw: dict[str, Any], name: str) -> bytes:
    """Pickle ``(step, pos, kw)``, or raise an `OffloadError` naming what is at fault."""
    _check_by_reference(step, name)
    try:
        return pickle.dumps((step, pos, kw), _PROTOCOL)
    except Exception as exc:
        for param, value in _named(step, pos, kw):
            try:
                pickle.dumps(value, _PROTOCOL)
            except Exception as why:
                raise OffloadError(
                    name,
                    f"argument {param!r} ({_short(value)}) cannot be pickled ({_say(why)})",
                    argument=param,
                ) from why
        raise OffloadError(name, f"its call cannot be pickled ({_say(exc)})") from exc


def _check_by_reference(step: Any, name: str) -> None:
    """A step pickles as (module, qualname): check that this names `step` in a fresh process.

    Only the name travels, so a local function, or a module attribute rebound to something
    else, would fail in the worker or, worse, run another function there.
    """
    fn = step.fn
    key = (getattr(step, "__module__", None) or "?", getattr(step, "__qualname__", "?"))
    if _by_reference.get(key) is fn:
        return
    where = f"{key[0]}.{key[1]}"
    try:
        loaded = pickle.loads(pickle.dumps(step, _PROTOCOL))
    except Exception as exc:
        raise OffloadError(
            name, f"its function {where!r} cannot be pickled by reference ({_say(exc)})"
        ) from exc
    if not (loaded is step or loaded is fn or getattr(loaded, "fn", None) is fn):
        raise OffloadError(
            name,
            f"{where!r} is another object ({_short(loaded)}), so a worker would not find "
            "this step's function under its name",
        )
    _by_reference[key] = fn


def _named(step: Any, pos: list[Any], kw: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    params = [p.name for p in step.params if p.positional]
    for index, value in enumerate(pos):
        yield (params[index] if index < len(params) else f"#{index}"), value
    yield from kw.items()


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _say(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class _Relay(concurrent.futures.Future[Any]):
    """The parent's view of a submitted call: unpickles the result; cancels the call."""

    def __init__(self, inner: concurrent.futures.Future[Any], name: str) -> None:
        super().__init__()
        self._inner = inner
        self._name = name
        inner.add_done_callback(self._settle)

    def cancel(self) -> bool:
        # Only as cancellable as the submitted call; `_settle` marks this one cancelled.
        return self._inner.cancel() and super().cancel()

    def _settle(self, inner: concurrent.futures.Future[Any]) -> None:
        # Runs in the executor's thread (or at once, if `inner` is already done).
        if inner.cancelled():
            super().cancel()
            return
        exc = inner.exception()
        try:
            if exc is not None:
                self.set_exception(exc)
                return
            try:
                value = pickle.loads(inner.result())
            except Exception as why:
                self.set_exception(
                    OffloadError(self._name, f"its result cannot be unpickled here ({_say(why)})")
                )
                return
            self.set_result(value)
        except concurrent.futures.InvalidStateError:  # pragma: no cover - cancelled meanwhile
            pass


# -------------------------------------------------------------------------- the worker side
class _Remote:
    """Runs one pickled call in a worker and pickles its result there.

    Named after the step (``__name__``), so a dask dashboard shows the step's name.
    """

    __slots__ = ("step",)

    def __init__(self, step: str) -> None:
        self.step = step

    @property
    def __name__(self) -> str:
        return self.step

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Remote, (self.step,))

    def __call__(self, payload: bytes) -> bytes:
        try:
            fn, pos, kw = pickle.loads(payload)
        except Exception as exc:
            raise OffloadError(
                self.step, f"its call cannot be unpickled in the worker ({_say(exc)})"
            ) from None
        try:
            value = fn(*pos, **kw)
        except Exception as exc:
            try:
                pickle.loads(pickle.dumps(exc, _PROTOCOL))
            except Exception as why:
                error = OffloadError(
                    self.step,
                    f"it raised {_say(exc)}, which cannot be sent back ({_say(why)})",
                )
                error.add_note("".join(traceback.format_exception(exc)).rstrip())
                raise error from None
            raise
        try:
            return pickle.dumps(value, _PROTOCOL)
        except Exception as exc:
            raise OffloadError(
                self.step,
                f"its result ({_short(value)}) cannot be pickled ({_say(exc)})",
            ) from None
