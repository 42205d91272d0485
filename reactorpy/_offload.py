"""Offloading sync steps to threads, process pools and dask clusters.

Owns: how a step call is submitted to an executor, and the clear error when the step or its
arguments cannot be sent to another process.
Must not import: the executor (it is called by it).
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import pickle
import threading
from typing import Any

__all__ = ["OffloadError", "submit"]

_thread_pool: concurrent.futures.ThreadPoolExecutor | None = None
_lock = threading.Lock()
_picklable: dict[int, bool] = {}


class OffloadError(TypeError):
    """A step or one of its arguments cannot be sent to another process."""


def _threads() -> concurrent.futures.ThreadPoolExecutor:
    global _thread_pool
    with _lock:
        if _thread_pool is None:
            _thread_pool = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="reactorpy")
        return _thread_pool


def is_dask_client(executor: Any) -> bool:
    """Whether `executor` looks like a ``dask.distributed.Client``."""
    return hasattr(executor, "get_executor") and hasattr(executor, "scheduler_info")


def submit(
    executor: Any, step: Any, pos: list[Any], kw: dict[str, Any], name: str
) -> concurrent.futures.Future[Any]:
    """Submit one call of `step` to `executor`; returns a concurrent future."""
    if executor == "thread":
        executor = _threads()
    if isinstance(executor, concurrent.futures.ThreadPoolExecutor):
        # Threads share memory: pass the function itself, inside the step's context.
        ctx = contextvars.copy_context()
        return executor.submit(ctx.run, step.fn, *pos, **kw)
    if is_dask_client(executor):
        executor = executor.get_executor(pure=False)
    _check_step_picklable(step, name)
    future: concurrent.futures.Future[Any] = executor.submit(step, *pos, **kw)
    return _explain_pickling(future, step, pos, kw, name)


def _check_step_picklable(step: Any, name: str) -> None:
    key = id(step)
    ok = _picklable.get(key)
    if ok is None:
        try:
            pickle.loads(pickle.dumps(step))
            ok = True
        except Exception as exc:
            raise OffloadError(
                f"Step {name!r} cannot be sent to another process: its function "
                f"{getattr(step.fn, '__qualname__', step.fn)!r} does not pickle by reference "
                f"({exc}). Define it at module level, or use executor='thread'."
            ) from exc
        _picklable[key] = ok


def _explain_pickling(
    future: concurrent.futures.Future[Any], step: Any, pos: list[Any], kw: dict[str, Any],
    name: str,
) -> concurrent.futures.Future[Any]:
    """Replace a pickling failure of the arguments with an error naming the argument."""
    out: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def done(f: concurrent.futures.Future[Any]) -> None:
        if f.cancelled():
            out.set_exception(concurrent.futures.CancelledError())
            return
        exc = f.exception()
        if exc is None:
            out.set_result(f.result())
            return
        if isinstance(exc, pickle.PicklingError | AttributeError | TypeError):
            culprit = _unpicklable(pos, kw, step)
            if culprit is not None:
                err = OffloadError(
                    f"Step {name!r} cannot be sent to another process: argument {culprit[0]} "
                    f"({culprit[1]!r:.80}) cannot be pickled ({exc})."
                )
                err.__cause__ = exc
                out.set_exception(err)
                return
        out.set_exception(exc)

    out.set_running_or_notify_cancel()
    # Cancelling the outer future cancels the submitted one where the executor allows.
    future.add_done_callback(done)
    out.cancel = future.cancel  # type: ignore[method-assign]
    return out


def _unpicklable(pos: list[Any], kw: dict[str, Any], step: Any) -> tuple[str, Any] | None:
    params = [p.name for p in step.params if p.positional]
    named = list(zip(params, pos, strict=False)) + list(kw.items())
    for param, value in named:
        try:
            pickle.dumps(value)
        except Exception:
            return repr(param), value
    return None
