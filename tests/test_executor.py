"""Running: concurrency, limits, ordering, contexts, inputs, results and clean shutdown."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import threading
import weakref

import pytest

import reactorpy as rp
from reactorpy.testing import run_virtual
from tests.loop_turns import LoopTurns


def leftover_tasks() -> set[asyncio.Task]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def test_independent_steps_overlap():
    """Independent async steps run at once: they all meet at one barrier."""
    barrier = asyncio.Barrier(3)
    r = rp.Reactor("meet", inputs=["x"], returns="join")

    async def meet(x):
        await barrier.wait()
        return x

    for name in ("a", "b", "c"):
        r.add(rp.step(meet), name=name)

    @r.step
    def join(a, b, c):
        return a + b + c

    async with asyncio.timeout(5):
        assert 3 == await r.run({"x": 1})


async def test_no_generation_barrier():
    """A step starts when its own dependencies are done, not when its generation is."""
    slow_may_finish = asyncio.Event()
    r = rp.Reactor("skew", returns="sink")

    @r.step
    async def slow():
        await slow_may_finish.wait()
        return 1

    @r.step
    async def fast():
        return 2

    @r.step
    async def after_fast(fast):
        # Only reachable while `slow` (same generation as `fast`) is still running.
        slow_may_finish.set()
        return fast

    @r.step
    def sink(slow, after_fast):
        return slow + after_fast

    async with asyncio.timeout(5):
        assert 3 == await r.run()


async def test_max_concurrency_caps_running_steps():
    """No more than max_concurrency async steps run at once, and the cap is reached."""
    running = peak = 0
    gate = asyncio.Event()
    reached = asyncio.Event()
    r = rp.Reactor("capped")

    async def work(i):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if peak == 3:
            reached.set()
        await gate.wait()
        running -= 1
        return i

    for i in range(20):
        r.add(rp.step(work), name=f"w{i}", args={"i": rp.Value(i)})

    async def open_gate():
        await reached.wait()
        for _ in range(10):
            await asyncio.sleep(0)
        gate.set()

    async with asyncio.timeout(5):
        opener = asyncio.create_task(open_gate())
        result = await r.run(max_concurrency=3)
        await opener
    assert 3 == peak
    assert list(range(20)) == [result[f"w{i}"] for i in range(20)]


async def test_concurrency_key_limits():
    """Steps with a concurrency_key are capped by limits= in addition to the overall cap."""
    running = {"db": 0, "other": 0}
    peak = {"db": 0, "other": 0}
    r = rp.Reactor("keys", limits={"db": 2})

    async def work(kind):
        running[kind] += 1
        peak[kind] = max(peak[kind], running[kind])
        for _ in range(5):
            await asyncio.sleep(0)
        running[kind] -= 1

    for i in range(6):
        r.add(rp.step(concurrency_key="db")(work), name=f"db{i}", args={"kind": rp.Value("db")})
        r.add(rp.step(work), name=f"o{i}", args={"kind": rp.Value("other")})
    async with asyncio.timeout(5):
        await r.run()
    assert 2 == peak["db"]
    assert 6 == peak["other"]


async def test_saturated_limiter_starts_critical_path_first():
    """With one slot, the ready step with the longest chain after it starts first."""
    log: list[str] = []
    r = rp.Reactor("priority")

    async def s(name):
        log.append(name)

    r.add(rp.step(s), name="short", args={"name": rp.Value("short")})
    r.add(rp.step(s), name="long1", args={"name": rp.Value("long1")})
    r.add(
        rp.step(s),
        name="long2",
        args={"name": rp.Value("long2")},
    )
    r.add(rp.step(s, wait_for="long1"), name="long2b", args={"name": rp.Value("long2b")})
    r.add(rp.step(s, wait_for="long2b"), name="long3", args={"name": rp.Value("long3")})
    await r.run(max_concurrency=1)
    assert "long1" == log[0]
    assert log.index("long1") < log.index("long2b") < log.index("long3")


async def test_run_async_false_is_plan_order_one_at_a_time():
    """async_=False runs one step at a time, in plan order."""
    log: list[str] = []
    running = peak = 0
    r = rp.Reactor("seq")

    async def s(name):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        log.append(name)
        await asyncio.sleep(0)
        running -= 1

    for name, deps in [("a", ()), ("b", ()), ("c", ("a",)), ("d", ("b",)), ("e", ())]:
        r.add(rp.step(s, wait_for=deps), name=name, args={"name": rp.Value(name)})
    await r.run(async_=False)
    assert list(r.plan().order) == log
    assert 1 == peak


async def test_step_async_false_holds_back_new_starts():
    """A step with async_=False is awaited inline: nothing new starts until it ends."""
    log: list[str] = []
    r = rp.Reactor("inline")

    @r.step(async_=False)
    async def critical():
        log.append("critical start")
        for _ in range(5):
            await asyncio.sleep(0)
        log.append("critical end")

    @r.step
    async def first():
        return 1

    @r.step
    async def later(first):
        log.append("later")

    await r.run()
    assert ["critical start", "critical end", "later"] == log


async def test_plain_def_runs_on_the_loop_thread():
    """A plain def step runs on the event loop's thread; executor='thread' does not."""
    loop_thread = threading.get_ident()
    r = rp.Reactor("threads")

    @r.step
    def on_loop():
        return threading.get_ident()

    @r.step(executor="thread")
    def in_thread():
        return threading.get_ident()

    result = await r.run()
    assert loop_thread == result["on_loop"]
    assert loop_thread != result["in_thread"]


VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


async def test_each_step_gets_its_own_context_copy():
    """A step sees the caller's context variables; what it sets is seen by no other step."""
    VAR.set("caller")
    seen: dict[str, str] = {}
    r = rp.Reactor("ctx")

    async def setter(name):
        seen[name] = VAR.get()
        VAR.set(name)
        await asyncio.sleep(0)
        return name

    r.add(rp.step(setter), name="a", args={"name": rp.Value("a")})
    r.add(
        rp.step(setter),
        name="b",
        args={"name": rp.Value("b")},
    )
    # c and d run after a, c continued inline by a's worker.
    r.add(rp.step(setter, wait_for="a"), name="c", args={"name": rp.Value("c")})
    r.add(rp.step(setter, wait_for="a"), name="d", args={"name": rp.Value("d")})

    @r.step(wait_for=["c", "d"])
    def sync_reader():
        seen["sync"] = VAR.get()

    @r.step(wait_for="sync_reader", executor="thread")
    def thread_reader():
        seen["thread"] = VAR.get()

    await r.run()
    assert all(v == "caller" for v in seen.values()), seen
    assert "caller" == VAR.get()


async def test_inputs_missing_and_unexpected_all_named():
    """Missing and undeclared inputs raise InputError naming all of them, before any step."""
    ran = []
    r = rp.Reactor("inp", inputs=["user_id", "region"])

    @r.step
    def s(user_id, region):
        ran.append(1)

    with pytest.raises(rp.InputError) as info:
        await r.run({"usr_id": 1})
    assert ["region", "user_id"] == info.value.missing
    assert ["usr_id"] == info.value.unexpected
    assert "Did you mean 'user_id'?" in str(info.value)
    assert isinstance(info.value, ValueError)
    assert [] == ran


async def test_returns_none_gives_every_result():
    """A reactor without returns returns a dict of every step's result."""
    r = rp.Reactor("all", inputs=["x"])

    @r.step
    def a(x):
        return x + 1

    @r.step
    async def b(a):
        return a * 2

    assert {"a": 2, "b": 4} == await r.run({"x": 1})


async def test_returns_may_name_an_input():
    """returns may name an input."""
    r = rp.Reactor("echo", inputs=["x"], returns="x")

    @r.step
    def a(x):
        return x

    assert 7 == await r.run({"x": 7})


async def test_sources_paths_values_and_context():
    """Input/Result paths index into values; Value passes constants; Context describes the run."""
    r = rp.Reactor("paths", inputs=["order"], returns="use")

    @r.step
    def totals(order):
        return {"sum": sum(order["items"]), "items": order["items"]}

    @r.step(
        args={
            "first": rp.Input("order", "items", 0),
            "total": rp.Result("totals", "sum"),
            "factor": rp.Value(10),
        }
    )
    def use(first, total, factor, ctx: rp.Context):
        return (first, total * factor, ctx.step, ctx.attempt, ctx.data["who"], ctx.reactor)

    got = await r.run({"order": {"items": [3, 4]}}, context={"who": "test"})
    assert (3, 70, "use", 1, "test", "paths") == got


async def test_missing_input_path_is_an_input_error_before_any_step():
    """A path into an input that does not exist is an InputError naming step and argument."""
    ran = []
    r = rp.Reactor("badpath", inputs=["order"])

    @r.step
    def early():
        ran.append(1)

    @r.step(args={"first": rp.Input("order", "itemz", 0)})
    def use(first):
        return first

    with pytest.raises(rp.InputError) as info:
        await r.run({"order": {"items": [1]}})
    assert ("use", "first") == (info.value.step, info.value.argument)
    assert [] == ran


async def test_missing_result_path_fails_the_consumer():
    """A path into a result that does not exist fails the consuming step with PathError."""
    r = rp.Reactor("badresult")

    @r.step
    def producer():
        return {"a": 1}

    @r.step(args={"b": rp.Result("producer", "b")})
    def consumer(b):
        return b

    with pytest.raises(rp.RunFailed) as info:
        await r.run()
    [err] = info.value.exceptions
    assert isinstance(err, rp.PathError)
    assert ("consumer", "b") == (err.step, err.argument)


async def test_wait_for_orders_without_passing_values():
    """wait_for makes a step wait for another without receiving its result."""
    log = []
    r = rp.Reactor("wait")

    @r.step
    async def first():
        await asyncio.sleep(0)
        log.append("first")

    @r.step(wait_for="first")
    async def second():
        log.append("second")

    await r.run()
    assert ["first", "second"] == log


async def test_first_error_stops_new_starts_and_raises_run_failed():
    """After an error no new step starts; RunFailed is an ExceptionGroup with notes."""
    started = []
    r = rp.Reactor("fail")

    @r.step
    async def boom():
        raise ValueError("no")

    @r.step
    async def after(boom):
        started.append("after")

    with pytest.raises(rp.RunFailed) as info:
        await r.run()
    assert isinstance(info.value, ExceptionGroup)
    [err] = info.value.exceptions
    assert isinstance(err, ValueError)
    assert any("'boom'" in note for note in err.__notes__)
    assert [] == started


async def test_except_star_reaches_the_original_error():
    """except* catches the original exception type inside RunFailed."""
    r = rp.Reactor("star")

    @r.step
    def boom():
        raise KeyError("k")

    caught = []
    try:
        await r.run()
    except* KeyError as group:
        caught.extend(group.exceptions)
    assert 1 == len(caught)


async def test_running_steps_get_grace_then_are_cancelled():
    """On error, running steps finish within grace, else are cancelled; nothing leaks."""
    finished, cancelled = [], []
    r = rp.Reactor("grace")

    @r.step
    async def quick_sibling():
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        finished.append("quick")

    @r.step
    async def stuck():
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append("stuck")
            raise

    @r.step
    async def boom():
        await asyncio.sleep(0)
        raise RuntimeError("x")

    with pytest.raises(rp.RunFailed):
        await r.run(grace=0.05)
    assert ["quick"] == finished
    assert ["stuck"] == cancelled
    assert set() == leftover_tasks()


async def test_cancel_from_outside_cancels_steps_and_leaves_nothing():
    """Cancelling run() cancels running steps, re-raises CancelledError, leaks no task."""
    started = asyncio.Event()
    cancelled = []
    r = rp.Reactor("cancel")

    @r.step
    async def forever():
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(1)
            raise

    task = asyncio.create_task(r.run())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [1] == cancelled
    assert set() == leftover_tasks()


async def test_timeout_around_run_surfaces_as_timeout_error():
    """asyncio.timeout around run() cancels it and the caller sees TimeoutError."""
    r = rp.Reactor("t")

    @r.step
    async def forever():
        await asyncio.Event().wait()

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await r.run()
    assert set() == leftover_tasks()


async def test_intermediate_results_are_released():
    """A result no remaining step needs is dropped when its last consumer completes."""

    class Big:
        pass

    refs: list[weakref.ref] = []
    observed = []
    r = rp.Reactor("release", returns="c")

    @r.step
    def a():
        big = Big()
        refs.append(weakref.ref(big))
        return big

    @r.step
    def b(a):
        return 1

    @r.step
    async def c(b):
        gc.collect()
        observed.append(refs[0]() is None)
        return b

    assert 1 == await r.run()
    assert [True] == observed


async def test_one_reactor_runs_concurrently_with_itself():
    """Several runs of one reactor at once share nothing."""
    r = rp.Reactor("many", inputs=["x"], returns="out")

    @r.step
    async def mid(x):
        await asyncio.sleep(0)
        return x * 2

    @r.step
    async def out(mid):
        return mid + 1

    results = await asyncio.gather(*(r.run({"x": i}) for i in range(50)))
    assert [2 * i + 1 for i in range(50)] == results


async def test_shared_limiter_caps_several_runs_together():
    """A Limiter passed to several runs gives them one budget."""
    running = peak = 0
    limiter = rp.Limiter(2)
    r = rp.Reactor("shared")

    async def work():
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        for _ in range(3):
            await asyncio.sleep(0)
        running -= 1

    for i in range(4):
        r.add(rp.step(work), name=f"w{i}")
    await asyncio.gather(*(r.run(max_concurrency=limiter) for _ in range(3)))
    assert 2 == peak
    assert 0 == limiter.running


def test_run_sync_without_a_loop():
    """run_sync runs a reactor from plain synchronous code."""
    r = rp.Reactor("sync", inputs=["x"], returns="a")

    @r.step
    async def a(x):
        return x + 1

    assert 2 == r.run_sync({"x": 1})


async def test_long_chain_runs_inline_and_yields():
    """A long chain of ready steps completes (continued inline) and still lets others run."""
    r = rp.Reactor("chain", returns="s999")

    async def inc(x):
        return x + 1

    r.add(rp.step(inc), name="s0", args={"x": rp.Value(0)})
    for i in range(1, 1000):
        r.add(rp.step(inc), name=f"s{i}", args={"x": rp.Result(f"s{i - 1}")})
    async with LoopTurns() as turns:
        assert 1000 == await r.run()
    assert turns.during >= 1000 // 64


async def test_bad_run_options_are_rejected():
    """Nonsense run options raise before anything runs."""
    r = rp.Reactor("opts")

    @r.step
    def a():
        return 1

    with pytest.raises(ValueError, match="timeout"):
        await r.run(timeout=0)
    with pytest.raises(ValueError, match="grace"):
        await r.run(grace=-1)
    with pytest.raises(ValueError, match="max_concurrency"):
        await r.run(max_concurrency=0)
    with pytest.raises(rp.InputError):
        await r.run([1, 2])  # type: ignore[arg-type]


async def test_bad_executor_is_a_definition_error_everywhere():
    """A typo in executor= is reported for a step, a reactor and a run alike."""
    with pytest.raises(rp.DefinitionError, match="executor must be"):
        rp.step(executor="threads")(lambda: 1)
    with pytest.raises(rp.DefinitionError, match="Reactor 'r'"):
        rp.Reactor("r", executor="threads")
    r = rp.Reactor("ok")
    r.step(lambda: 1, name="one")
    with pytest.raises(rp.DefinitionError, match="run\\(\\) of 'ok'"):
        await r.run(executor=object())


async def test_long_chain_of_plain_defs_still_yields_to_the_loop():
    """A long chain of plain def steps does not hold the event loop for its whole length."""
    r = rp.Reactor("sync-chain", returns="s499")

    def inc(x):
        return x + 1

    r.add(rp.step(inc), name="s0", args={"x": rp.Value(0)})
    for i in range(1, 500):
        r.add(rp.step(inc), name=f"s{i}", args={"x": rp.Result(f"s{i - 1}")})
    async with LoopTurns() as turns:
        assert 500 == await r.run()
    assert turns.during >= 500 // 64


@pytest.mark.parametrize("fail", [False, True])
def test_gate_holds_back_steps_given_a_slot_while_it_runs(fail: bool):
    """Under a limiter, steps queued for a slot before an async_=False step started do not
    start while it runs, even when a slot frees; a failure returns held slots."""
    log: list[tuple[str, str]] = []
    limiter = rp.Limiter(2)
    r = rp.Reactor("gated")

    def make(name, duration, deps=(), **options):
        async def body():
            log.append(("start", name))
            await asyncio.sleep(duration)
            log.append(("end", name))
            if fail and name == "gate":
                raise ValueError("gate failed")

        return r.add(rp.step(body, name=name, wait_for=deps, **options))

    # Priorities: chains r1 and r2 first, then the gate's chain, then w.
    make("r1", 1)
    make("r1b", 0, ["r1"])
    make("r1c", 0, ["r1b"])
    make("r1d", 0, ["r1c"])
    make("r2", 3)
    make("r2b", 0, ["r2"])
    make("r2c", 0, ["r2b"])
    make("r2d", 0, ["r2c"])
    make("gate", 5, async_=False)
    make("g2", 0, ["gate"])
    make("g3", 0, ["g2"])
    make("w", 1)

    async def main():
        if fail:
            with pytest.raises(rp.RunFailed):
                await r.run(max_concurrency=limiter)
        else:
            await r.run(max_concurrency=limiter)
        return leftover_tasks()

    assert set() == run_virtual(main())
    inside = log[log.index(("start", "gate")) + 1 : log.index(("end", "gate"))]
    assert [] == [e for e in inside if e[0] == "start"]
    assert 0 == limiter.running


def test_timeout_at_a_completion_leaves_the_limiter_drained():
    """A run cancelled in the instant its dependents were spawned gives back every slot."""
    limiter = rp.Limiter(4)
    r = rp.Reactor("instant")

    @r.step
    async def a():
        await asyncio.sleep(1)

    async def dep():
        await asyncio.sleep(1)

    for name in "bcd":
        r.add(rp.step(dep, name=name, wait_for="a"))

    async def main():
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1):
                await r.run(max_concurrency=limiter)
        await asyncio.sleep(0)
        return leftover_tasks()

    assert set() == run_virtual(main())
    assert 0 == limiter.running


def test_cancelled_run_leaves_no_waiters_in_a_shared_limiter():
    """Cancelling a run takes its queued steps out of a shared limiter."""
    limiter = rp.Limiter(1)
    holder = rp.Reactor("holder")

    @holder.step
    async def hold():
        await asyncio.sleep(5)

    crowd = rp.Reactor("crowd")

    async def work():
        await asyncio.sleep(0)

    for k in range(200):
        crowd.add(rp.step(work, name=f"w{k}"))

    async def main():
        first = asyncio.create_task(holder.run(max_concurrency=limiter))
        await asyncio.sleep(0)
        second = asyncio.create_task(crowd.run(max_concurrency=limiter))
        await asyncio.sleep(1)
        queued = repr(limiter)
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        after_cancel = repr(limiter)
        await first
        return queued, after_cancel

    queued, after_cancel = run_virtual(main())
    assert "waiting=200" in queued
    assert "waiting=0" in after_cancel
    assert 0 == limiter.running


def test_a_runs_limits_never_change_a_shared_limiter():
    """limits= given with a shared rp.Limiter that lacks them is refused (the limiter is
    every run's; its caps are given where it is made); caps it already has are fine."""
    limiter = rp.Limiter(100, limits={"db": 1})
    r = rp.Reactor("r")
    r.add(rp.step(lambda: None, name="s", concurrency_key="db"))
    with pytest.raises(ValueError, match="would change the shared Limiter"):
        run_virtual(r.run(max_concurrency=limiter, limits={"db": 2}))
    other = rp.Reactor("other", limits={"db": 3})
    other.add(rp.step(lambda: None, name="s", concurrency_key="db"))
    with pytest.raises(ValueError, match="would change the shared"):
        run_virtual(other.run(max_concurrency=limiter))
    run_virtual(r.run(max_concurrency=limiter, limits={"db": 1}))
    assert {"db": 1} == limiter.limits


def test_a_shared_limiters_key_cap_counts_the_steps_of_every_run():
    """A shared limiter's cap per key counts the steps of all its runs at once."""
    limiter = rp.Limiter(100, limits={"db": 1})
    peak = running = 0
    first = rp.Reactor("first")
    second = rp.Reactor("second")

    async def step():
        nonlocal peak, running
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(1)
        running -= 1

    for k in range(3):
        first.add(rp.step(step, name=f"e{k}", concurrency_key="db"))
        second.add(rp.step(step, name=f"l{k}", concurrency_key="db"))

    async def main():
        await asyncio.gather(
            first.run(max_concurrency=limiter), second.run(max_concurrency=limiter)
        )

    run_virtual(main())
    assert 1 == peak
    assert 0 == limiter.running


async def test_no_plain_def_starts_after_an_error_stood():
    """Plain def steps made ready together stop starting once one of them fails."""
    ran: list[str] = []
    r = rp.Reactor("sync-fail")

    @r.step
    async def root():
        return 1

    def make(name, fail):
        def body(root):
            ran.append(name)
            if fail:
                raise ValueError(name)

        return body

    # Most critical first: 'boom' (with a dependent) runs before the others.
    r.add(rp.step(make("boom", True), name="boom"))
    r.add(rp.step(lambda boom: None, name="after_boom"))
    for k in range(5):
        r.add(rp.step(make(f"quiet{k}", False), name=f"quiet{k}"))
    with pytest.raises(rp.RunFailed):
        await r.run()
    assert ["boom"] == ran


async def test_results_are_released_while_a_worker_runs_down_a_chain():
    """A worker continuing down a chain keeps no reference to results already consumed."""

    class Big:
        pass

    refs: dict[str, weakref.ref] = {}
    alive_later: list[bool] = []
    r = rp.Reactor("chain-release", returns="g")

    @r.step
    async def a():
        big = Big()
        refs["a"] = weakref.ref(big)
        return big

    @r.step
    async def b(a):
        return 1

    for name, dep in [("c", "b"), ("d", "c"), ("e", "d"), ("f", "e")]:

        async def link(x):
            gc.collect()
            alive_later.append(refs["a"]() is not None)
            return x

        r.add(rp.step(link, name=name, args={"x": rp.Result(dep)}))

    @r.step
    async def g(f):
        return f

    assert 1 == await r.run()
    assert [False, False, False, False] == alive_later


def test_one_at_a_time_honours_a_shared_limiter():
    """run(async_=False) with a shared Limiter waits for it, composed children included."""
    limiter = rp.Limiter(1)
    running = peak = 0

    async def busy(seconds: float) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(seconds)
        running -= 1

    holder = rp.Reactor("holder")
    holder.add(rp.step(busy), name="hold", args={"seconds": rp.Value(1.0)})
    child = rp.Reactor("child")
    child.add(rp.step(busy), name="inner", args={"seconds": rp.Value(0.5)})
    seq = rp.Reactor("seq")
    seq.add(rp.step(busy), name="own", args={"seconds": rp.Value(0.5)})
    seq.compose("sub", child)

    async def main():
        first = asyncio.create_task(holder.run(max_concurrency=limiter))
        await asyncio.sleep(0)
        await seq.run(max_concurrency=limiter, async_=False)
        await first
        return asyncio.get_running_loop().time()

    assert 2.0 == run_virtual(main())
    assert 1 == peak
    assert 0 == limiter.running


async def test_wide_fan_out_of_no_op_steps_yields_to_the_loop():
    """Steps that finish without waiting run back to back in one worker, which still lets
    the loop run other tasks regularly."""
    r = rp.Reactor("wide")
    r.step(lambda: 0, name="root")

    async def leaf(root):
        return root + 1

    for i in range(1000):
        r.add(rp.step(leaf), name=f"leaf{i}")
    async with LoopTurns() as turns:
        result = await r.run()
    assert all(result[f"leaf{i}"] == 1 for i in range(1000))
    assert turns.during >= 1000 // 64


async def test_a_step_that_waits_is_driven_by_the_task_that_started_it():
    """Siblings start one after another in one worker; one that waits keeps that worker
    (so asyncio.timeout and TaskGroup inside it see the right task) while the others go on,
    each in a task of its own, and all of them overlap."""
    n = 5
    barrier = asyncio.Barrier(n)
    tasks: dict[str, tuple[object, object]] = {}
    r = rp.Reactor("siblings")

    @r.step
    async def root():
        return 0

    async def leaf(name, root):
        before = asyncio.current_task()
        await barrier.wait()  # all n must be waiting at once
        tasks[name] = (before, asyncio.current_task())
        try:
            async with asyncio.timeout(0):
                await asyncio.Event().wait()
        except TimeoutError:
            return name  # only this task was cancelled, by its own timeout

    for i in range(n):
        r.add(rp.step(leaf), name=f"leaf{i}", args={"name": rp.Value(f"leaf{i}")})
    async with asyncio.timeout(5):
        result = await r.run()
    assert {f"leaf{i}": f"leaf{i}" for i in range(n)}.items() <= result.items()
    assert all(before is after for before, after in tasks.values())
    assert n == len({after for _, after in tasks.values()})
    assert not leftover_tasks()


async def test_async_false_step_holds_back_siblings_made_ready_with_it():
    """A plain sibling made ready together with an async_=False step, but after it in
    start order, does not start until that step ends."""
    log: list[str] = []
    r = rp.Reactor("inline-siblings")

    @r.step
    async def root():
        return 0

    async def plain_leaf(name, root):
        log.append(name)

    for i in range(3):
        r.add(rp.step(plain_leaf), name=f"leaf{i}", args={"name": rp.Value(f"leaf{i}")})

    @r.step(async_=False)
    async def alone(root):
        log.append("alone start")
        for _ in range(5):
            await asyncio.sleep(0)
        log.append("alone end")

    await r.run()
    assert log.index("alone end") == log.index("alone start") + 1


@pytest.mark.parametrize("is_async", [False, True])
@pytest.mark.parametrize("async_", [True, False])
async def test_keyword_only_parameters_are_passed_by_keyword(is_async: bool, async_: bool):
    """A step whose parameters are keyword-only gets them (a plain def run inline used to
    drop them)."""
    r = rp.Reactor("kw", inputs=["x"], returns="s")

    def s(*, x, scale=3):
        return x * scale

    async def s_async(*, x, scale=3):
        return x * scale

    r.add(rp.step(s_async if is_async else s, name="s"))
    assert 6 == await r.run({"x": 2}, async_=async_)


@pytest.mark.parametrize("async_", [True, False])
def test_a_step_that_only_waits_for_another_does_not_release_its_result(async_: bool):
    """wait_for orders without reading: a waiter's completion leaves the result for the
    step that reads it (issue 12: it used to get None)."""
    r = rp.Reactor("r", returns="use")

    @r.step
    async def doable():
        return "mcfly"

    @r.step(wait_for="doable")
    async def waiter():
        return "w"

    @r.step
    async def use(doable):
        return doable

    assert "mcfly" == r.run_sync(async_=async_)


def test_a_future_cancelled_by_someone_else_fails_the_step():
    """A step whose awaited future is cancelled by someone else (nobody cancelled the run)
    fails with RunFailed; the caller does not get a bare CancelledError."""
    r = rp.Reactor("foreign", returns="wait")

    @r.step
    async def wait():
        future = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(future.cancel)
        return await future

    async def main():
        with pytest.raises(rp.RunFailed) as info:
            await r.run()
        # Inside a caller's TaskGroup the failed saga arrives in the group, not lost.
        with pytest.raises(ExceptionGroup) as group:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(r.run())
        assert group.group_contains(rp.RunFailed)
        return info

    failed = run_virtual(main())
    assert failed.group_contains(RuntimeError, match="cancelled, but not by its run")
