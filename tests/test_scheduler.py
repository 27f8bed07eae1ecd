"""Superstep semantics (design §1.2-§1.11): serial inboxes, concurrency across
executors, deterministic order, failure, cancellation, reuse, busy runs."""

from __future__ import annotations

import asyncio
import gc
import random
import time
from typing import Any

import pytest

import stepgraph as sg
from tests.conftest import kinds


class Recorder(sg.Executor):
    """Records deliveries and watches for overlapping handler calls."""

    def __init__(self, id: str, delay: float = 0.0) -> None:
        super().__init__(id)
        self.delay = delay
        self.seen: list[Any] = []
        self.active = 0
        self.max_active = 0

    @sg.handler
    async def on_any(self, message: Any, ctx: sg.WorkflowContext[sg.Never, Any]) -> None:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await asyncio.sleep(self.delay)
            self.seen.append(message)
            await ctx.yield_output((self.id, message))
        finally:
            self.active -= 1


class Emit(sg.Executor):
    """Sends each item of a list it receives, optionally after a random pause."""

    def __init__(self, id: str, jitter: float = 0.0) -> None:
        super().__init__(id)
        self.jitter = jitter

    @sg.handler
    async def on_items(self, items: list[str], ctx: sg.WorkflowContext[str]) -> None:
        for item in items:
            if self.jitter:
                await asyncio.sleep(random.random() * self.jitter)
            await ctx.send_message(item)


@sg.executor(id="split")
async def split(batches: dict[str, list[str]], ctx: sg.WorkflowContext[list[str]]) -> None:
    for target, items in batches.items():
        await ctx.send_message(items, target=target)


def two_senders_one_target(jitter: float = 0.0, delay: float = 0.0) -> tuple[sg.Workflow, Recorder]:
    target = Recorder("target", delay=delay)
    a, b = Emit("a", jitter), Emit("b", jitter)
    workflow = (
        sg.WorkflowBuilder(start=split)
        .add_fan_out(split, [a, b])
        .add_edge(a, target)
        .add_edge(b, target)
        .build()
    )
    return workflow, target


async def test_two_senders_never_run_the_target_concurrently() -> None:
    # The race that motivated stepgraph: two upstream executors send to one
    # target in the same superstep and the target's handler awaits.
    workflow, target = two_senders_one_target(delay=0.01)
    result = await workflow.run({"a": ["a1", "a2"], "b": ["b1", "b2"]})
    assert target.max_active == 1
    assert target.seen == ["a1", "a2", "b1", "b2"]
    invoked = [
        e.superstep
        for e in result.events
        if e.kind == "executor_invoked" and e.executor_id == "target"
    ]
    assert invoked == [3, 3, 3, 3]  # all four arrived in one superstep's inbox


async def test_fan_out_targets_run_concurrently() -> None:
    sleepers = [Recorder(f"s{i}", delay=0.2) for i in range(5)]

    @sg.executor(id="go")
    async def go(n: int, ctx: sg.WorkflowContext[int]) -> None:
        await ctx.send_message(n)

    workflow = sg.WorkflowBuilder(start=go).add_fan_out(go, sleepers).build()
    started = time.perf_counter()
    result = await workflow.run(1)
    elapsed = time.perf_counter() - started
    assert sorted(result.outputs) == [(f"s{i}", 1) for i in range(5)]
    assert elapsed < 0.6, f"5 x 0.2 s sleeps took {elapsed:.2f} s: not concurrent"


async def test_per_source_fifo_and_deterministic_order_across_sources() -> None:
    orders = []
    for _ in range(20):
        workflow, target = two_senders_one_target(jitter=0.003)
        await workflow.run({"b": ["b1", "b2", "b3"], "a": ["a1", "a2", "a3"]})
        orders.append(target.seen)
    # a is registered before b, so a's messages come first whatever finished first.
    assert all(order == ["a1", "a2", "a3", "b1", "b2", "b3"] for order in orders)


async def test_schedule_follows_registration_order_not_completion_order() -> None:
    workflow, _ = two_senders_one_target(jitter=0.003)
    result = await workflow.run({"b": ["x"], "a": ["y"]})
    started = [e for e in result.events if isinstance(e, sg.SuperstepStartedEvent)]
    assert [e.executors for e in started] == [("split",), ("a", "b"), ("target",)]


async def test_outputs_come_in_schedule_order_whatever_finished_first() -> None:
    """RunResult.outputs: by superstep, then registration order, a map's
    items in item order, a sub-workflow's as its own run orders them — the
    output events come as they happen."""

    @sg.executor(id="split")
    async def split(n: int, ctx: sg.WorkflowContext[int]) -> None:
        for i in range(n):
            await ctx.send_message(i)

    def yielding(name: str, sends: bool = False) -> Any:
        async def step(i: int, ctx: sg.WorkflowContext[Any, str]) -> None:
            await asyncio.sleep(random.random() * 0.004)
            await ctx.yield_output(f"{name}{i}.1")
            await ctx.yield_output(f"{name}{i}.2")
            if sends:
                await ctx.send_message(i)

        step.__annotations__["ctx"] = sg.WorkflowContext[int if sends else sg.Never, str]
        return sg.executor(id=name)(step)

    @sg.executor(id="sink")
    async def sink(results: list[int], ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.yield_output("end")

    child = (
        sg.WorkflowBuilder(start=split, name="child")
        .add_fan_out(split, [yielding("x"), yielding("y")])
        .build()
    )
    sub = sg.WorkflowExecutor(child, id="sub", forward_outputs=True)
    first = yielding("a", sends=True)
    workflow = (
        sg.WorkflowBuilder(start=split)
        .add_fan_out(split, [first, yielding("b"), sub])
        .add_map(first, yielding("m", sends=True), id="map", to=sink)
        .build()
    )
    two = [f"{i}.{k}" for i in range(3) for k in (1, 2)]
    expected = [
        *(f"a{o}" for o in two),  # superstep 2, in registration order:
        *(f"b{o}" for o in two),
        # the sub-workflow's child runs (for 1, then 2): x's, then y's
        *("x0.1", "x0.2", "y0.1", "y0.2"),
        *("x0.1", "x0.2", "x1.1", "x1.2", "y0.1", "y0.2", "y1.1", "y1.2"),
        *(f"m{o}" for o in two),  # superstep 3: the map's items in item order
        "end",
    ]
    orders = set()
    for _ in range(10):
        result = await workflow.run(3)
        assert result.outputs == expected
        emitted = [
            e.data
            for e in result.events
            if isinstance(e, sg.OutputEvent) and not e.workflow_path  # (the run's own)
        ]
        assert sorted(emitted) == sorted(expected)
        orders.add(tuple(emitted))
    assert len(orders) > 1  # (the events came in different orders: the test can tell)


async def test_slow_target_does_not_delay_a_fast_one() -> None:
    fast_done = asyncio.Event()
    finished: dict[str, float] = {}

    @sg.executor(id="slow")
    async def slow(n: int) -> None:
        await asyncio.wait_for(fast_done.wait(), timeout=2)  # blocks until fast has run
        finished["slow"] = time.perf_counter()

    @sg.executor(id="fast")
    async def fast(n: int) -> None:
        finished["fast"] = time.perf_counter()
        fast_done.set()

    @sg.executor(id="go")
    async def go(n: int) -> int:
        return n

    workflow = sg.WorkflowBuilder(start=go).add_fan_out(go, [slow, fast]).build()
    await workflow.run(1)
    assert finished["fast"] < finished["slow"]


async def test_failure_cancels_siblings_and_discards_the_superstep() -> None:
    sibling_finished = False

    @sg.executor(id="go")
    async def go(n: int) -> int:
        return n

    @sg.executor(id="boom")
    async def boom(n: int, ctx: sg.WorkflowContext[int]) -> None:
        ctx.state.set("written", True)
        await ctx.send_message(n)
        await asyncio.sleep(0.01)
        raise ValueError("boom")

    @sg.executor(id="sibling")
    async def sibling(n: int, ctx: sg.WorkflowContext[int]) -> None:
        nonlocal sibling_finished
        await asyncio.sleep(1)
        sibling_finished = True
        await ctx.send_message(n)

    @sg.executor(id="after")
    async def after(n: int) -> None:
        raise AssertionError("a failed superstep's messages must not be delivered")

    workflow = (
        sg.WorkflowBuilder(start=go)
        .add_fan_out(go, [boom, sibling])
        .add_edge(boom, after)
        .add_edge(sibling, after)
        .build()
    )
    events: list[sg.Event] = []
    with pytest.raises(sg.WorkflowRunError) as raised:
        async for event in workflow.stream(1):
            events.append(event)
    assert raised.value.executor_id == "boom"
    assert raised.value.superstep == 2
    assert isinstance(raised.value.__cause__, ValueError)
    assert "boom" in str(raised.value)
    assert not sibling_finished
    assert kinds(events)[-3:] == ["executor_failed", "failed", "status"]
    assert events[-1] == sg.StatusEvent(status=sg.RunStatus.FAILED)
    assert "executor_invoked" not in [e.kind for e in events if e.executor_id == "after"]
    # The workflow runs again afterwards.
    with pytest.raises(sg.WorkflowRunError):
        await workflow.run(2)


async def test_failure_then_successful_rerun() -> None:
    calls = 0

    @sg.executor(id="flaky")
    async def flaky(n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("first run fails")
        await ctx.yield_output(n)

    workflow = sg.WorkflowBuilder(start=flaky).build()
    with pytest.raises(sg.WorkflowRunError) as raised:
        await workflow.run(1)
    assert isinstance(raised.value.__cause__, RuntimeError)
    result = await workflow.run(2)
    assert result.outputs == [2]


async def test_cancellation_leaves_no_task_and_allows_rerun() -> None:
    started = asyncio.Event()

    @sg.executor(id="go")
    async def go(n: int) -> int:
        return n

    @sg.executor(id="hang")
    async def hang(n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        started.set()
        if n == 1:
            await asyncio.sleep(3600)
        await ctx.yield_output(n)

    @sg.executor(id="other")
    async def other(n: int) -> None:
        if n == 1:
            await asyncio.sleep(3600)

    workflow = sg.WorkflowBuilder(start=go).add_fan_out(go, [hang, other]).build()
    before = asyncio.all_tasks()
    events: list[sg.Event] = []

    async def consume() -> None:
        async for event in workflow.stream(1):
            events.append(event)

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), timeout=2)
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert asyncio.all_tasks() - before == set()
    assert "superstep_started" in kinds(events)

    # The same cancellation through run().
    run_task = asyncio.create_task(workflow.run(1))
    await asyncio.sleep(0.05)
    run_task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run_task
    assert asyncio.all_tasks() - before == set()

    result = await workflow.run(2)
    assert result.outputs == [2]
    assert result.status is sg.RunStatus.IDLE


def test_reuse_across_event_loops() -> None:
    """Successive asyncio.run calls: a fan-out (several tasks per superstep),
    a stream and checkpoints written beside the supersteps (``async``)
    each time; executor attributes carry over. (The property test
    ``property/test_event_loops.py`` does this on random graphs.)"""

    @sg.executor(id="fan")
    async def fan(n: str, ctx: sg.WorkflowContext[str]) -> None:
        await ctx.send_message(n)

    counter, other = Recorder("counter"), Recorder("other")
    store = sg.MemoryCheckpointStore()
    workflow = (
        sg.WorkflowBuilder(start=fan, checkpoints=sg.CheckpointConfig(store, "async"))
        .add_fan_out(fan, [counter, other])
        .build()
    )

    async def streamed(value: str) -> list[Any]:
        async with workflow.stream(value) as events:
            return [e.data async for e in events if isinstance(e, sg.OutputEvent)]

    first = asyncio.run(workflow.run("one"))
    second = asyncio.run(workflow.run("two"))
    third = asyncio.run(streamed("three"))
    assert first.outputs == [("counter", "one"), ("other", "one")]
    assert second.outputs == [("counter", "two"), ("other", "two")]
    assert sorted(third) == [("counter", "three"), ("other", "three")]
    assert counter.seen == ["one", "two", "three"]  # executor state persists across runs
    assert len(asyncio.run(store.runs())) == 3


def test_runs_under_uvloop() -> None:
    import uvloop  # the dev extra installs it; a missing uvloop fails, never skips

    counter = Recorder("counter")
    workflow = sg.WorkflowBuilder(start=counter).build()
    for value in ("a", "b"):
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(workflow.run(value))
        assert result.outputs == [("counter", value)]


async def test_second_concurrent_run_is_busy_at_once() -> None:
    """A workflow that shares an executor instance between its runs runs one
    at a time (one with only factories and functions does not: test_concurrency)."""
    gate = asyncio.Event()

    class Wait(sg.Executor):
        @sg.handler
        async def on(self, n: int) -> None:
            await gate.wait()

    workflow = sg.WorkflowBuilder(start=Wait("wait")).build()
    assert not workflow.concurrent
    first = asyncio.create_task(workflow.run(1))
    await asyncio.sleep(0)
    with pytest.raises(sg.WorkflowBusyError, match=r"already running.*register them as factories"):
        await workflow.run(2)
    with pytest.raises(sg.WorkflowBusyError):
        async for _ in workflow.stream(2):
            pass
    gate.set()
    assert (await first).status is sg.RunStatus.IDLE
    assert (await workflow.run(3)).status is sg.RunStatus.IDLE


async def test_shared_executor_instance_is_busy_across_workflows() -> None:
    gate = asyncio.Event()

    class Waiter(sg.Executor):
        @sg.handler
        async def on(self, n: int) -> None:
            await gate.wait()

    shared = Waiter("shared")
    one = sg.WorkflowBuilder(start=shared, name="one").build()
    two = sg.WorkflowBuilder(start=shared, name="two").build()
    first = asyncio.create_task(one.run(1))
    await asyncio.sleep(0)
    with pytest.raises(sg.WorkflowBusyError, match="'shared'.*running workflow 'one'"):
        await two.run(1)
    gate.set()
    await first
    assert (await two.run(1)).status is sg.RunStatus.IDLE


async def test_convergence_error() -> None:
    @sg.executor(id="loop")
    async def loop(n: int) -> int:
        return n + 1

    workflow = sg.WorkflowBuilder(start=loop, max_supersteps=5).add_edge(loop, loop).build()
    events = []
    with pytest.raises(sg.ConvergenceError, match="max_supersteps=5.*'loop'"):
        async for event in workflow.stream(0):
            events.append(event)
    assert [e.superstep for e in events if e.kind == "superstep_completed"] == [1, 2, 3, 4, 5]
    assert events[-1] == sg.StatusEvent(status=sg.RunStatus.FAILED)


async def test_retry_discards_failed_attempts() -> None:
    attempts = 0
    received: list[int] = []

    @sg.executor(id="flaky", retry=sg.RetryPolicy(attempts=3))
    async def flaky(n: int, ctx: sg.WorkflowContext[int, int]) -> None:
        nonlocal attempts
        attempts += 1
        await ctx.send_message(attempts * 100)
        await ctx.yield_output(attempts)
        ctx.state.set("attempt", attempts)
        if attempts < 3:
            raise ConnectionError(f"attempt {attempts}")

    @sg.executor(id="sink")
    async def sink(n: int, ctx: sg.WorkflowContext[sg.Never, Any]) -> None:
        received.append(n)
        await ctx.yield_output(("state", ctx.state.get("attempt")))

    workflow = sg.WorkflowBuilder(start=flaky).add_edge(flaky, sink).build()
    result = await workflow.run(1)
    assert attempts == 3
    assert received == [300]
    assert result.outputs == [3, ("state", 3)]
    retry_warnings = [e for e in result.events if isinstance(e, sg.WarningEvent)]
    assert len(retry_warnings) == 2 and "attempt 1/3 failed" in retry_warnings[0].message


async def test_retry_gives_up_and_respects_retry_on() -> None:
    calls = 0

    @sg.executor(id="picky", retry=sg.RetryPolicy(attempts=5, retry_on=(ConnectionError,)))
    async def picky(n: int) -> None:
        nonlocal calls
        calls += 1
        raise ValueError("not retryable")

    with pytest.raises(sg.WorkflowRunError) as raised:
        await sg.WorkflowBuilder(start=picky).build().run(1)
    assert calls == 1
    assert isinstance(raised.value.__cause__, ValueError)


async def test_timeout_fails_the_run_naming_the_executor() -> None:
    @sg.executor(id="sleepy", timeout=0.05)
    async def sleepy(n: int) -> None:
        await asyncio.sleep(10)

    started = time.perf_counter()
    with pytest.raises(sg.WorkflowRunError, match=r"'sleepy' timed out.*timeout=0.05") as raised:
        await sg.WorkflowBuilder(start=sleepy).build().run(1)
    assert time.perf_counter() - started < 5
    assert isinstance(raised.value.__cause__, sg.ExecutorTimeoutError)
    assert raised.value.executor_id == "sleepy"


async def test_timeout_is_retried_like_any_failure() -> None:
    calls = 0

    @sg.executor(id="slow_once", timeout=0.05, retry=sg.RetryPolicy(attempts=2))
    async def slow_once(n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(10)
        await ctx.yield_output(n)

    result = await sg.WorkflowBuilder(start=slow_once).build().run(7)
    assert result.outputs == [7] and calls == 2


async def test_an_async_handler_blocking_the_loop_past_its_timeout_is_reported() -> None:
    @sg.executor(id="blocker", timeout=0.1)
    async def blocker(n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        time.sleep(0.5)  # noqa: ASYNC251  (holds the event loop: the timeout cannot fire)
        await ctx.yield_output(n)

    result = await sg.WorkflowBuilder(start=blocker).build().run(1)
    assert result.outputs == [1]  # the call finished; its results are kept
    [warning] = [e for e in result.events if isinstance(e, sg.WarningEvent)]
    assert warning.executor_id == "blocker"
    assert "far beyond its timeout=0.1 s, because it held the event loop" in warning.message


async def test_handler_raising_its_own_timeout_error_is_not_a_timeout() -> None:
    @sg.executor(id="own", timeout=5)
    async def own(n: int) -> None:
        raise TimeoutError("from the handler")

    with pytest.raises(sg.WorkflowRunError) as raised:
        await sg.WorkflowBuilder(start=own).build().run(1)
    assert type(raised.value.__cause__) is TimeoutError


async def test_sync_function_runs_in_a_worker_thread() -> None:
    import threading

    main_thread = threading.get_ident()
    seen: list[int] = []

    @sg.executor(id="blocking")
    def blocking(n: int, ctx: sg.WorkflowContext[int]) -> int:
        seen.append(threading.get_ident())
        time.sleep(0.01)
        ctx.add_event(sg.UserEvent(kind="progress", data=n))
        return n + 1

    @sg.executor(id="sink")
    def sink(n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        ctx.yield_output(n)

    result = await sg.WorkflowBuilder(start=blocking).add_edge(blocking, sink).build().run(1)
    assert result.outputs == [2]
    assert seen and seen[0] != main_thread
    progress = [e for e in result.events if isinstance(e, sg.UserEvent)]
    assert progress == [sg.UserEvent(kind="progress", data=1, executor_id="blocking", superstep=1)]


async def test_invalid_run_input_is_refused_before_running() -> None:
    workflow = sg.WorkflowBuilder(start=Recorder("r")).build()
    with pytest.raises(sg.MessageTypeError, match="needs an input"):
        await workflow.run()

    @sg.executor(id="ints")
    async def ints(n: int) -> None: ...

    with pytest.raises(sg.MessageTypeError, match="'ints'.*no handler for the input, a str"):
        await sg.WorkflowBuilder(start=ints).build().run("text")


async def test_a_backend_or_store_that_is_not_one_is_refused_before_running() -> None:
    # backend="ray" failed inside the scheduler with "AttributeError: 'str'
    # object has no attribute 'run_superstep'" once the run had started.
    workflow = sg.WorkflowBuilder(start=Recorder("r")).build()
    with pytest.raises(
        TypeError, match=r"backend must be a Backend \(sg.LocalBackend\(\), .*str 'ray'"
    ):
        await workflow.run(1, backend="ray")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not str .*a store URL is for the command line's --store"):
        await workflow.run(1, checkpoints="sqlite:runs.db")  # type: ignore[arg-type]
    assert (await workflow.run(1)).status is sg.RunStatus.IDLE  # nothing left busy


async def test_a_refused_input_shows_what_its_items_are() -> None:
    # "no handler for the input list (it handles list[int])" said nothing of
    # why: the item that is not an int is what the message must show.
    @sg.executor(id="numbers")
    async def numbers(values: list[int]) -> None: ...

    workflow = sg.WorkflowBuilder(start=numbers).build()
    with pytest.raises(sg.MessageTypeError) as raised:
        await workflow.run([1, "two"])
    assert "no handler for the input, a list[int | str] (it handles list[int])" in str(raised.value)


async def test_cancelled_run_reports_status_cancelled() -> None:
    # The kernel's own contract: a cancelled run emits status CANCELLED last
    # (a cancelled stream() consumer cannot read it, so observe the kernel).
    from stepgraph._core import LocalBackend, RunScope, RunState, materialize, run_supersteps

    @sg.executor(id="hang")
    async def hang(n: int) -> None:
        await asyncio.sleep(3600)

    workflow = sg.WorkflowBuilder(start=hang).build()
    events: list[sg.Event] = []
    scope = RunScope(
        run_id="r",
        workflow_name="w",
        strict=False,
        emit=lambda item: events.append(materialize(item)),  # events, or call records
        executor_ids=frozenset({"hang"}),
        output_ids=None,
    )
    run = RunState(inboxes={"hang": [("", 1)]})
    task = asyncio.create_task(run_supersteps(workflow.graph, scope, LocalBackend(), run, 10))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert kinds(events) == [
        "run_started",
        "status",
        "superstep_started",
        "executor_invoked",
        "status",
    ]
    assert events[-1] == sg.StatusEvent(status=sg.RunStatus.CANCELLED)


def _counting_loop() -> tuple[sg.Workflow, list[int]]:
    calls: list[int] = []

    @sg.executor(id="tick")
    async def tick(n: int, ctx: sg.WorkflowContext[int, int]) -> None:
        calls.append(n)  # never waits: nothing but the barrier gives the loop a turn
        await ctx.yield_output(n)
        await ctx.send_message(n + 1)

    return sg.WorkflowBuilder(start=tick).add_edge(tick, tick).build(), calls


async def test_leaving_a_stream_early_stops_the_run_at_the_next_barrier() -> None:
    workflow, calls = _counting_loop()
    seen: list[int] = []
    async with workflow.stream(0) as events:
        async for event in events:
            if isinstance(event, sg.OutputEvent):
                seen.append(event.data)
                if len(seen) == 3:
                    break
    assert seen == [0, 1, 2]
    assert calls == [0, 1, 2]  # (not the 100 supersteps max_supersteps allows)


async def test_a_run_whose_handlers_never_wait_does_not_starve_other_tasks() -> None:
    workflow, calls = _counting_loop()
    turns = 0
    running = True

    async def other_task() -> None:
        nonlocal turns
        while running:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.ensure_future(other_task())
    await asyncio.sleep(0)
    before = turns
    with pytest.raises(sg.ConvergenceError):
        await workflow.run(0, max_supersteps=20_000)
    during = turns - before
    running = False
    await other
    assert len(calls) == 20_000
    # The run takes 0.1 s at the very least (5 µs a superstep): the loop had
    # a turn at a barrier every 2 ms of it, so the other task ran many times.
    assert during >= 10, during


async def test_a_stream_left_without_async_with_after_its_run_failed_reports_nothing() -> None:
    workflow, _ = _counting_loop()
    reported: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: reported.append(context))
    stream = workflow.stream(0, max_supersteps=3)
    async for _event in stream:
        await asyncio.sleep(0.1)  # meanwhile the run fails (it does not converge)
        break
    del stream, _event  # left as agents.md's loop leaves it, without aclose()
    gc.collect()
    await asyncio.sleep(0)
    assert reported == []  # (no "Task exception was never retrieved" traceback)


@pytest.mark.parametrize("shape", ["alone", "beside another", "map item"])
async def test_a_cancelled_error_the_run_did_not_ask_for_fails_the_handler(shape: str) -> None:
    """A handler that awaits a future something else cancelled raises
    CancelledError; the run was not cancelled, so it fails naming the
    executor (a caller's cancel still cancels: see the tests above)."""

    @sg.executor(id="victim")
    async def victim(n: int, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        future = asyncio.get_running_loop().create_future()
        future.cancel()  # (by "someone else")
        await future

    @sg.executor(id="fine")
    async def fine(n: int, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await asyncio.sleep(0.01)

    @sg.executor(id="root")
    async def root(n: int, ctx: sg.WorkflowContext[int]) -> None:
        await ctx.send_message(n)
        if shape == "map item":
            await ctx.send_message(n + 1)

    @sg.executor(id="sink")
    async def sink(items: list[Any], ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        pass

    builder = sg.WorkflowBuilder(start=root)
    if shape == "alone":
        builder = sg.WorkflowBuilder(start=victim)
    elif shape == "beside another":
        builder.add_fan_out(root, [victim, fine])
    else:
        builder.add_map(root, victim, id="m", to=sink)
    workflow = builder.build()
    name = "m" if shape == "map item" else "victim"
    with pytest.raises(sg.WorkflowRunError, match=f"'{name}'.*CancelledError though its run"):
        await workflow.run(1)
    seen: list[sg.Event] = []
    with pytest.raises(sg.WorkflowRunError, match=f"'{name}'"):  # (not a quiet CANCELLED)
        async with workflow.stream(1) as stream:
            async for event in stream:
                seen.append(event)
    assert isinstance(seen[-1], sg.StatusEvent) and seen[-1].status is sg.RunStatus.FAILED


async def test_a_huge_error_message_is_cut_in_the_runs_error_not_in_the_exception() -> None:
    @sg.executor(id="loud")
    async def loud(n: int) -> None:
        raise ValueError("x" * 10_000_000)

    workflow = sg.WorkflowBuilder(start=loud).build()
    events: list[sg.Event] = []
    with pytest.raises(sg.WorkflowRunError) as raised:
        async with workflow.stream(1) as stream:
            async for event in stream:
                events.append(event)
    text = str(raised.value)
    assert len(text) < 3_000 and text.endswith("… (9,998,000 more characters)"), text[-80:]
    assert len(str(raised.value.__cause__)) == 10_000_000  # (the exception keeps it all)
    [failed] = [e for e in events if isinstance(e, sg.ExecutorFailedEvent)]
    assert len(failed.error) < 3_000 and failed.exception is raised.value.__cause__


async def test_a_stray_cancelled_error_is_retried_like_any_failure() -> None:
    calls: list[int] = []

    @sg.executor(id="flaky", retry=sg.RetryPolicy(attempts=3, retry_on=(RuntimeError,)))
    async def flaky(n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        calls.append(n)
        if len(calls) < 3:
            future = asyncio.get_running_loop().create_future()
            future.cancel()
            await future
        await ctx.yield_output(len(calls))

    assert (await sg.WorkflowBuilder(start=flaky).build().run(1)).outputs == [3]


@pytest.mark.parametrize("retry", [None, sg.RetryPolicy(attempts=3)])
@pytest.mark.parametrize("mapped", [False, True])
async def test_an_error_a_real_cancel_caused_cancels_the_run_never_retried(
    retry: sg.RetryPolicy | None, mapped: bool
) -> None:
    """A handler that turns its cancellation into an error (a cleanup that
    raises): the run was asked to stop, so it stops — no retry, no failure."""
    attempts: list[int] = []

    @sg.executor(id="converts", retry=retry)
    async def converts(n: int, ctx: sg.WorkflowContext[int]) -> None:
        attempts.append(n)
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed while being cancelled") from None
        await ctx.send_message(n)

    @sg.executor(id="many")
    async def many(n: int, ctx: sg.WorkflowContext[int]) -> None:
        for i in range(n):
            await ctx.send_message(i)

    @sg.executor(id="sink")
    async def sink(items: list[Any], ctx: sg.WorkflowContext[sg.Never, Any]) -> None:
        await ctx.yield_output(items)

    builder = sg.WorkflowBuilder(start=many if mapped else converts)
    if mapped:
        builder.add_map(many, converts, id="m", to=sink)
    task = asyncio.ensure_future(builder.build().run(2))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(attempts) == (2 if mapped else 1)  # (each started once, none again)


class _OwnBase(BaseException):
    """A BaseException of a library's own (pytest.fail's Failed is one)."""


async def test_a_base_exception_of_a_handler_fails_the_run_whatever_the_graph() -> None:
    # It escaped raw with no `failed` event or status - as itself when the
    # handler's inbox ran alone, as a BaseExceptionGroup beside another inbox.
    @sg.executor(id="start")
    async def start(n: int, ctx: sg.WorkflowContext[int]) -> None:
        await ctx.send_message(n)

    @sg.executor(id="raises")
    async def raises(n: int, ctx: sg.WorkflowContext) -> None:
        raise _OwnBase("not an Exception")

    @sg.executor(id="idle")
    async def idle(n: int, ctx: sg.WorkflowContext) -> None:
        await asyncio.sleep(0)

    class Item(sg.Executor):
        @sg.handler
        async def on(self, n: int, ctx: sg.WorkflowContext[int]) -> None:
            raise _OwnBase("not an Exception")

    @sg.executor(id="total")
    async def total(values: list[int], ctx: sg.WorkflowContext) -> None: ...

    alone = sg.WorkflowBuilder(start=start).add_edge(start, raises).build()
    beside = sg.WorkflowBuilder(start=start).add_fan_out(start, [raises, idle]).build()
    mapped = sg.WorkflowBuilder(start=start).add_map(start, Item, id="items", to=total).build()
    for workflow, failing in ((alone, "raises"), (beside, "raises"), (mapped, "items")):
        events: list[sg.Event] = []
        with pytest.raises(sg.WorkflowRunError) as raised:
            async with workflow.stream(1) as stream:
                async for event in stream:
                    events.append(event)
        assert isinstance(raised.value.__cause__, _OwnBase)
        assert raised.value.executor_id == failing and raised.value.superstep == 2
        assert [e.kind for e in events][-3:] == ["executor_failed", "failed", "status"]
        assert events[-1].status is sg.RunStatus.FAILED  # type: ignore[attr-defined]
