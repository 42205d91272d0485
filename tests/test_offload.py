"""Offloading: steps in threads, a process pool and a dask.distributed cluster.

Step functions that cross processes live in `tests.examples.cpu_steps`, an importable module,
because a step travels by reference. Nothing here asserts wall time: overlap is detected by the
steps themselves through files, and waits are bounded conditions, not measurements.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import multiprocessing
import os
import pickle
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import reactorpy as rp
from tests.examples import cpu_steps

distributed = pytest.importorskip("distributed")

PID = os.getpid()


class CountingExecutor(concurrent.futures.Executor):
    """A fake that forwards to a real executor and counts what was submitted."""

    def __init__(self, inner: concurrent.futures.Executor) -> None:
        self.inner = inner
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        self.submitted += 1
        return self.inner.submit(fn, *args, **kwargs)


@pytest.fixture(scope="module")
def pool() -> Iterator[concurrent.futures.ProcessPoolExecutor]:
    # spawn: the dask client's threads live in this process too, and fork copies no threads.
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as executor:
        yield executor


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    cluster = distributed.LocalCluster(
        n_workers=2,
        processes=True,
        threads_per_worker=1,
        dashboard_address=":0",  # None still binds 8787, and warns when taken
        silence_logs=logging.ERROR,
    )
    with cluster, distributed.Client(cluster) as c:
        yield c


def single(name: str, fn: Callable[..., Any], **options: Any) -> rp.Reactor:
    """A reactor of one step wrapping `fn`, returning its result."""
    r = rp.Reactor(
        name, inputs=list(fn.__code__.co_varnames[: fn.__code__.co_argcount]), returns=fn.__name__
    )
    r.add(rp.step(fn, **options))
    return r


def error_in(failed: rp.RunFailed, kind: type[BaseException]) -> BaseException:
    """The one member of `failed` of type `kind`."""
    matching = [e for e in failed.exceptions if isinstance(e, kind)]
    assert len(matching) == 1, failed.exceptions
    return matching[0]


# ------------------------------------------------------------------------------ results
async def test_process_pool_runs_steps_in_other_processes(
    pool: concurrent.futures.ProcessPoolExecutor,
) -> None:
    """Steps sent to a ProcessPoolExecutor return their results, computed in a worker."""
    r = rp.Reactor("math", inputs=["n", "tag"])
    r.add(rp.step(cpu_steps.square, executor=pool))
    r.add(rp.step(cpu_steps.add, executor=pool))
    r.add(rp.step(cpu_steps.whoami, executor=pool))

    out = await r.run({"n": 7, "tag": "t"})

    assert {"square": 49, "add": 56} == {k: out[k] for k in ("square", "add")}
    tag, pid = out["whoami"]
    assert "t" == tag
    assert PID != pid


async def test_decorated_module_level_step_pickles_by_reference(
    pool: concurrent.futures.ProcessPoolExecutor,
) -> None:
    """A step decorated at module level is sent by reference and runs in the pool."""
    assert cpu_steps.cube is pickle.loads(pickle.dumps(cpu_steps.cube))
    r = rp.Reactor("cube", inputs=["n"], returns="cube", executor=pool)
    r.add(cpu_steps.cube)

    assert 27 == await r.run({"n": 3})


@pytest.mark.parametrize("how", ["client", "client_executor"])
async def test_dask_runs_steps_on_workers(client: Any, how: str) -> None:
    """A dask Client, or its executor, runs steps on the cluster's worker processes."""
    executor = client if how == "client" else client.get_executor(pure=False)
    r = rp.Reactor("dask", inputs=["n", "tag"])
    r.add(rp.step(cpu_steps.square, executor=executor))
    r.add(rp.step(cpu_steps.add, executor=executor))
    r.add(rp.step(cpu_steps.whoami, executor=executor))

    out = await r.run({"n": 5, "tag": how})

    assert (25, 30) == (out["square"], out["add"])
    tag, pid = out["whoami"]
    assert how == tag
    worker_pids = set(client.run(os.getpid).values())
    assert pid in worker_pids
    assert PID not in worker_pids


async def test_dask_shows_the_step_name_as_the_task_name(client: Any) -> None:
    """A step sent to dask appears on the cluster under the step's own name."""

    def keys(dask_scheduler: Any) -> list[str]:
        return [str(entry[0]) for entry in dask_scheduler.transition_log]

    await single("named", cpu_steps.noop, executor=client).run()

    assert any(k.startswith("noop-") for k in client.run_on_scheduler(keys))


# ------------------------------------------------------------------------------ where it runs
async def test_step_executor_overrides_reactor_and_run_defaults(
    pool: concurrent.futures.ProcessPoolExecutor,
) -> None:
    """Per-step executor wins over the run's, which wins over the reactor's default."""
    r = rp.Reactor("where", executor="thread")
    r.add(rp.step(cpu_steps.where, executor="thread", name="own"))
    r.add(rp.step(cpu_steps.where, name="default"))

    by_reactor = await r.run()
    by_run = await r.run(executor=pool)

    for pid, thread in (by_reactor["own"], by_reactor["default"], by_run["own"]):
        assert PID == pid
        assert thread.startswith("reactorpy")
    assert PID != by_run["default"][0]


async def test_reactor_executor_sends_plain_steps_to_the_pool(
    pool: concurrent.futures.ProcessPoolExecutor,
) -> None:
    """Reactor(executor=pool) sends plain def steps away; async steps stay on the loop."""
    r = rp.Reactor("default", inputs=["tag"], executor=pool)
    r.add(rp.step(cpu_steps.whoami))

    @r.step
    async def on_loop(whoami: tuple[str, int]) -> int:
        return os.getpid()

    out = await r.run({"tag": "y"})

    assert PID != out["whoami"][1]
    assert PID == out["on_loop"]


async def test_thread_step_runs_in_its_own_context_copy() -> None:
    """A thread step sees the caller's context variables in its own copy of the context."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var")
    var.set("outer")
    r = rp.Reactor("ctx", returns="read")

    @r.step(executor="thread")
    def read() -> str:
        value = var.get()
        var.set("inner")
        return value

    assert "outer" == await r.run()
    assert "outer" == var.get()


# ------------------------------------------------------------------------------ limiter
@pytest.mark.parametrize(
    ("limit", "key"), [({"max_concurrency": 1}, None), ({"limits": {"cpu": 1}}, "cpu")]
)
async def test_process_steps_take_limiter_slots(
    pool: concurrent.futures.ProcessPoolExecutor,
    tmp_path: Path,
    limit: dict[str, Any],
    key: str | None,
) -> None:
    """Under a limit of one, two process steps never run at the same time."""
    r = rp.Reactor("limited", inputs=["folder", "wait"])
    for tag in ("a", "b"):
        r.add(
            rp.step(cpu_steps.alone, executor=pool, concurrency_key=key, name=tag),
            args={"tag": rp.Value(tag)},
        )

    out = await r.run({"folder": str(tmp_path), "wait": 0.3}, **limit)

    assert {"a": True, "b": True} == out


async def test_process_steps_overlap_without_a_limit(
    pool: concurrent.futures.ProcessPoolExecutor, tmp_path: Path
) -> None:
    """The control for the limiter test: unlimited, the two process steps see each other."""
    r = rp.Reactor("unlimited", inputs=["folder", "wait"])
    for tag in ("a", "b"):
        r.add(rp.step(cpu_steps.alone, executor=pool, name=tag), args={"tag": rp.Value(tag)})

    out = await r.run({"folder": str(tmp_path), "wait": 30.0})

    assert {"a": False, "b": False} == out


# ------------------------------------------------------------------------------ failures
async def test_thread_step_timeout_stands() -> None:
    """A thread step that overruns its timeout fails the run with TimeoutError."""
    release = threading.Event()
    r = rp.Reactor("slow", returns="slow")

    @r.step(executor="thread", timeout=0.05)
    def slow() -> bool:
        return release.wait(30)

    try:
        with pytest.raises(rp.RunFailed) as info:
            await r.run(grace=0)
    finally:
        release.set()
    error_in(info.value, TimeoutError)


async def test_dask_timeout_cancels_the_remote_task(client: Any, tmp_path: Path) -> None:
    """A dask step's timeout cancels its task on the cluster; it is not reported abandoned."""
    r = single("remote", cpu_steps.wait_for_file, executor=client, timeout=0.2)

    def processing() -> list[str]:
        return [str(k) for keys in client.processing().values() for k in keys]

    try:
        with pytest.raises(rp.RunFailed) as info:
            await r.run({"folder": str(tmp_path), "name": "never"})
        error_in(info.value, TimeoutError)
        assert [] == info.value.abandoned
        # Bounded wait for the scheduler to forget the task (it is never released here).
        for _ in range(500):
            if not any(k.startswith("wait_for_file-") for k in processing()):
                break
            await asyncio.sleep(0.02)
        assert not any(k.startswith("wait_for_file-") for k in processing())
    finally:
        (tmp_path / "never").touch()


async def test_process_step_retries(
    pool: concurrent.futures.ProcessPoolExecutor, tmp_path: Path
) -> None:
    """A process step that fails once succeeds on its retry."""
    r = single("flaky", cpu_steps.fails_once, executor=pool, retries=1, retry_on=ValueError)

    pid = await r.run({"folder": str(tmp_path)})

    assert PID != pid
    assert (tmp_path / "failed-once").exists()


async def test_process_step_compensates_and_undoes_on_the_loop(
    pool: concurrent.futures.ProcessPoolExecutor,
) -> None:
    """Compensate and undo of a process step run on the event loop thread."""
    r = rp.Reactor("saga", inputs=["n"])
    square = r.add(rp.step(cpu_steps.square, executor=pool))
    failing = r.add(rp.step(cpu_steps.always_fails, executor=pool), args={"n": rp.Result("square")})
    calls: list[tuple[str, Any, int]] = []

    @failing.compensate
    def recover(error: Exception, n: int) -> None:
        calls.append(("compensate", str(error), threading.get_ident()))

    @square.undo
    def unsquare(value: int, n: int) -> None:
        calls.append(("undo", (value, n), threading.get_ident()))

    with pytest.raises(rp.RunFailed) as info:
        await r.run({"n": 3})

    error_in(info.value, ValueError)
    me = threading.get_ident()
    assert [("compensate", "no good: 9", me), ("undo", (9, 3), me)] == calls


# ------------------------------------------------------------------------------ pickling
@pytest.mark.parametrize("bad", [lambda: 1, threading.Lock()], ids=["lambda", "lock"])
async def test_unpicklable_argument_is_named_before_submitting(
    pool: concurrent.futures.ProcessPoolExecutor, bad: Any
) -> None:
    """An argument that cannot be pickled is an OffloadError naming step and argument."""
    counting = CountingExecutor(pool)
    r = rp.Reactor("bad_arg", inputs=["tag"])
    r.add(rp.step(cpu_steps.whoami, executor=counting, name="who"))

    with pytest.raises(rp.RunFailed) as info:
        await r.run({"tag": bad})

    error = error_in(info.value, rp.OffloadError)
    assert isinstance(error, rp.OffloadError)
    assert ("who", "tag") == (error.step, error.argument)
    assert "'who'" in str(error)
    assert "argument 'tag'" in str(error)
    assert 0 == counting.submitted


async def test_local_function_is_an_offload_error(
    pool: concurrent.futures.ProcessPoolExecutor,
) -> None:
    """A step defined inside a function cannot go to a process: OffloadError names it."""
    counting = CountingExecutor(pool)
    r = rp.Reactor("local", returns="inner")

    @r.step(executor=counting)
    def inner() -> int:
        return 1

    with pytest.raises(rp.RunFailed) as info:
        await r.run()

    error = error_in(info.value, rp.OffloadError)
    assert isinstance(error, rp.OffloadError)
    assert "inner" == error.step
    assert "'inner'" in str(error)
    assert "<locals>" in str(error)
    assert 0 == counting.submitted


async def test_local_function_is_an_offload_error_for_dask_too(client: Any) -> None:
    """A dask Client gets the same early OffloadError for a step that is not at module level."""
    r = rp.Reactor("local_dask", returns="inner")

    @r.step(executor=client)
    def inner() -> int:
        return 1

    with pytest.raises(rp.RunFailed) as info:
        await r.run()

    assert "inner" == error_in(info.value, rp.OffloadError).step  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("fn", "says"),
    [(cpu_steps.returns_lock, "its result"), (cpu_steps.raises_stubborn, "Stubborn")],
)
async def test_what_cannot_come_back_is_an_offload_error_and_the_pool_survives(
    pool: concurrent.futures.ProcessPoolExecutor, fn: Callable[..., Any], says: str
) -> None:
    """An unpicklable result or exception names the step, and the pool stays usable."""
    r = single("back", fn, executor=pool)

    with pytest.raises(rp.RunFailed) as info:
        await r.run()

    error = error_in(info.value, rp.OffloadError)
    assert fn.__name__ == error.step  # type: ignore[attr-defined]
    assert says in str(error)
    assert 16 == await single("after", cpu_steps.square, executor=pool).run({"n": 4})


def test_offload_error_pickles() -> None:
    """OffloadError survives pickling with its fields and notes."""
    error = rp.OffloadError("s", "argument 'x' (1) cannot be pickled", argument="x")
    error.add_note("a note")

    copy = pickle.loads(pickle.dumps(error))

    assert (str(error), "s", "x", ["a note"]) == (
        str(copy),
        copy.step,
        copy.argument,
        copy.__notes__,
    )
    assert isinstance(copy, TypeError)


def test_async_step_with_executor_is_a_definition_error() -> None:
    """An async def step cannot be given an executor: a DefinitionError at decoration."""

    async def fetch() -> int:
        return 1

    with pytest.raises(rp.DefinitionError, match="'fetch' is an async def"):
        rp.step(fetch, executor="thread")


# ------------------------------------------------------------------------------ abandoned
async def test_running_thread_step_is_reported_abandoned() -> None:
    """When a run fails, a thread step still running after grace is named as abandoned."""
    started = threading.Event()
    release = threading.Event()
    r = rp.Reactor("abandon")

    @r.step(executor="thread")
    def blocker() -> bool:
        started.set()
        return release.wait(30)

    @r.step
    async def boom() -> None:
        await asyncio.to_thread(started.wait, 30)
        raise RuntimeError("boom")

    try:
        with pytest.raises(rp.RunFailed) as info:
            await r.run(grace=0.1)
    finally:
        release.set()

    error_in(info.value, RuntimeError)
    assert ["blocker"] == info.value.abandoned
    assert any("abandoned: blocker" in note for note in info.value.__notes__)


def test_cpu_steps_spin_is_deterministic() -> None:
    """The benchmark's CPU burner returns the same total for the same loop count."""
    assert cpu_steps.spin(70) == cpu_steps.spin(70) == sum(i % 7 for i in range(70))
