"""Property tests over random DAGs and random failures: the saga's invariants."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reactorpy as rp
from reactorpy.testing import Recorder, run_virtual
from tests.strategies import dags


class Harness:
    """Builds a reactor from a drawn DAG and records what happens."""

    def __init__(self, dag: Any) -> None:
        self.parents, self.kinds, self.sleeps, self.undoable, self.sync = dag
        self.log: list[tuple[str, int]] = []
        self.completed: list[int] = []
        self.undone: list[int] = []
        self.running = 0
        self.peak = 0
        self.raised: list[BaseException] = []
        self.reactor = self.build()

    def build(self) -> rp.Reactor:
        r = rp.Reactor("random")
        for i, parents in enumerate(self.parents):
            kind = self.kinds[i]
            options: dict[str, Any] = {"wait_for": [f"s{p}" for p in parents]}
            if kind == "retry_then_ok":
                options.update(retries=2, retry_on=ConnectionError, backoff=0.5)
            s = r.add(rp.step(self.make_fn(i), name=f"s{i}", **options))
            if kind == "continue":
                s.compensate(self.make_compensate(i))
            if self.undoable[i]:
                s.undo(self.make_undo(i))
        return r

    def make_fn(self, i: int):
        kind, sleeps = self.kinds[i], self.sleeps[i]
        attempts = [0]

        def outcome():
            attempts[0] += 1
            if kind == "fail":
                err = ValueError(f"s{i}")
                self.raised.append(err)
                raise err
            if kind == "continue":
                raise KeyError(f"s{i}")
            if kind == "retry_then_ok" and attempts[0] == 1:
                raise ConnectionError(f"s{i}")
            self.completed.append(i)
            return i

        if self.sync[i] and kind != "retry_then_ok":

            def sync_fn():
                self.log.append(("start", i))
                try:
                    return outcome()
                finally:
                    self.log.append(("end", i))

            return sync_fn

        async def async_fn():
            self.log.append(("start", i))
            self.running += 1
            self.peak = max(self.peak, self.running)
            try:
                for _ in range(sleeps):
                    await asyncio.sleep(0)
                return outcome()
            finally:
                self.running -= 1
                self.log.append(("end", i))

        return async_fn

    def make_compensate(self, i: int):
        def compensate(error):
            self.completed.append(i)
            return rp.Continue(i)

        return compensate

    def make_undo(self, i: int):
        def undo(value):
            self.undone.append(i)
            if self.kinds[i] == "undo_error":
                err = OSError(f"undo s{i}")
                self.raised.append(err)
                raise err

        return undo

    def check_dependencies(self) -> None:
        ended: set[int] = set()
        for what, i in self.log:
            if what == "start":
                assert set(self.parents[i]) <= ended, f"s{i} started before its parents"
            else:
                ended.add(i)


async def run_and_check(
    h: Harness, limit: int | None, async_: bool, middleware: list[Any] | None = None
) -> Any:
    try:
        result = await h.reactor.run(
            max_concurrency=limit, async_=async_, grace=100, middleware=middleware
        )
    except rp.RunFailed as failed:
        result = failed
    leftover = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
    assert set() == leftover
    return result


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dag=dags(),
    limit=st.one_of(st.none(), st.integers(min_value=1, max_value=4)),
    recorded=st.booleans(),
)
def test_saga_invariants_on_random_dags(dag: Any, limit: int | None, recorded: bool) -> None:
    """Dependencies respected, limit kept, each completed undoable step undone once, newest
    first, exactly the standing errors raised, and no task left behind; with an event
    recorder attached, every attempt that ended was announced first, once."""
    h = Harness(dag)
    recorder = Recorder()
    result = run_virtual(run_and_check(h, limit, True, [recorder] if recorded else None))
    h.check_dependencies()
    if recorded:
        started: set[tuple[str, int]] = set()
        for e in recorder.events:
            key = (e.step, e.attempt)
            if e.kind == "step_start":
                assert key not in started
                started.add(key)
            elif e.kind in ("step_complete", "step_error", "step_retry"):
                assert key in started, e
        # A compensation that continues completes its step with a value of its own.
        ends = ("step_complete", "compensate_continue")
        completed = {e.step for e in recorder.events if e.kind in ends}
        assert completed == {f"s{i}" for i in set(h.completed)}
    if limit is not None:
        assert h.peak <= limit
    failed = any(k == "fail" for k in h.kinds) and isinstance(result, rp.RunFailed)
    if isinstance(result, rp.RunFailed):
        expected_undone = [i for i in reversed(h.completed) if h.undoable[i]]
        assert expected_undone == h.undone
        assert sorted(map(id, h.raised)) == sorted(map(id, result.exceptions))
    else:
        assert not failed
        assert [] == h.undone
        assert len(h.completed) == len(h.kinds)
        assert {f"s{i}": i for i in range(len(h.kinds))} == result


@settings(max_examples=75, deadline=None)
@given(dag=dags(behaviours=("ok", "retry_then_ok", "continue")))
def test_one_at_a_time_gives_the_same_results(dag: Any) -> None:
    """async_=False and concurrent runs of a failure-free DAG give the same results."""
    concurrent = run_virtual(run_and_check(Harness(dag), None, True))
    h = Harness(dag)
    sequential = run_virtual(run_and_check(h, None, False))
    assert concurrent == sequential
    assert h.peak <= 1
    h.check_dependencies()


@st.composite
def wired(draw: st.DrawFn) -> tuple[Any, ...]:
    """A random DAG whose edges are reads (an argument) or waits (wait_for), defined in a
    random order, with some steps sync, one that may halt once, and a returned step."""
    n = draw(st.integers(min_value=1, max_value=10))
    reads = []
    waits = []
    for i in range(n):
        earlier = (
            st.sets(st.integers(min_value=0, max_value=i - 1), max_size=3) if i else st.just(set())
        )
        r = draw(earlier)
        w = draw(earlier) - r
        reads.append(sorted(r))
        waits.append(sorted(w))
    order = draw(st.permutations(range(n)))
    sync = [draw(st.booleans()) for _ in range(n)]
    halting = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=n - 1)))
    returns = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=n - 1)))
    return reads, waits, order, sync, halting, returns


def token(i: int) -> str:
    return f"token-{i}"


def wired_reactor(spec: tuple[Any, ...], seen: list[str]) -> rp.Reactor:
    reads, waits, order, sync, halting, returns = spec
    r = rp.Reactor("wired", returns=None if returns is None else f"s{returns}")
    halted = {"done": False}

    def make(i: int):
        expected = {f"p{j}": token(j) for j in reads[i]}

        def body(kwargs: dict[str, Any]) -> str:
            assert kwargs == expected, f"s{i} got {kwargs}, reads {expected}"
            if i == halting and not halted["done"]:
                halted["done"] = True
                raise rp.Halt("once")
            seen.append(f"s{i}")
            return token(i)

        if sync[i]:

            def sync_step(**kwargs: Any) -> str:
                return body(kwargs)

            return sync_step

        async def async_step(**kwargs: Any) -> str:
            await asyncio.sleep(0)
            return body(kwargs)

        return async_step

    for i in order:
        r.add(
            rp.step(
                make(i),
                name=f"s{i}",
                args={f"p{j}": rp.Result(f"s{j}") for j in reads[i]},
                wait_for=[f"s{j}" for j in waits[i]],
            )
        )
    return r


class AsyncHook:
    async def on_event(self, event: rp.Event) -> None:
        await asyncio.sleep(0)


MODES = ("plain", "serial", "cap1", "cap2", "recorded", "async_hooks", "composed")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=wired(), mode=st.sampled_from(MODES), through=st.sampled_from(["pickle", "json"]))
def test_every_step_gets_exactly_the_values_it_reads(spec: Any, mode: str, through: str) -> None:
    """Whatever the wiring (reads and wait_for edges, any definition order), the run mode
    (one at a time, capped, observed, composed) and a halt and resume on the way, every step
    receives exactly the results it reads: no result is released before its readers got it.
    """
    import pickle

    seen: list[str] = []
    reactor = wired_reactor(spec, seen)
    options: dict[str, Any] = {
        "plain": {},
        "serial": {"async_": False},
        "cap1": {"max_concurrency": 1},
        "cap2": {"max_concurrency": 2},
        "recorded": {"middleware": [Recorder()]},
        "async_hooks": {"middleware": [AsyncHook()]},
        "composed": {},
    }[mode]
    if mode == "composed":
        parent = rp.Reactor("parent", returns="sub")
        parent.compose("sub", reactor)
        reactor = parent

    async def main() -> Any:
        try:
            return await reactor.run(**options)
        except rp.Halted as halted:
            checkpoint = halted.checkpoint
            if through == "pickle":
                checkpoint = pickle.loads(pickle.dumps(checkpoint))
            else:
                checkpoint = rp.Checkpoint.from_json(checkpoint.to_json())
            return await reactor.resume(checkpoint, **options)

    result = run_virtual(main())
    reads, _, _, _, _, returns = spec
    assert sorted(seen) == sorted(f"s{i}" for i in range(len(reads)))
    if returns is not None:
        assert token(returns) == result
    else:
        assert {f"s{i}": token(i) for i in range(len(reads))} == result
