"""Event sequences (design §2): whole sequences where order is the contract,
and live streaming."""

from __future__ import annotations

import asyncio

import pytest

import stepgraph as sg
from tests.conftest import kinds


@sg.executor(id="a")
async def a(n: int) -> int:
    return n + 1


@sg.executor(id="b")
async def b(n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
    await ctx.yield_output(n * 10)


async def test_whole_event_sequence_of_a_chain() -> None:
    result = await sg.WorkflowBuilder(start=a, name="chain").add_edge(a, b).build().run(1)
    assert kinds(result.events) == [
        "run_started",
        "status",
        "superstep_started",
        "executor_invoked",
        "executor_completed",
        "superstep_completed",
        "superstep_started",
        "executor_invoked",
        "output",
        "executor_completed",
        "superstep_completed",
        "status",
    ]
    started = result.events[0]
    assert isinstance(started, sg.RunStartedEvent)
    assert started.workflow == "chain" and started.run_id == result.run_id
    assert [getattr(e, "status", None) for e in result.events if e.kind == "status"] == [
        sg.RunStatus.IN_PROGRESS,
        sg.RunStatus.IDLE,
    ]
    stamped = [(e.kind, e.executor_id, e.superstep) for e in result.events[2:-1]]
    assert stamped == [
        ("superstep_started", None, 1),
        ("executor_invoked", "a", 1),
        ("executor_completed", "a", 1),
        ("superstep_completed", None, 1),
        ("superstep_started", None, 2),
        ("executor_invoked", "b", 2),
        ("output", "b", 2),
        ("executor_completed", "b", 2),
        ("superstep_completed", None, 2),
    ]
    assert result.outputs == [20]


async def test_stream_yields_the_same_sequence_as_run() -> None:
    workflow = sg.WorkflowBuilder(start=a).add_edge(a, b).build()
    streamed = [e async for e in workflow.stream(1)]
    ran = (await workflow.run(1)).events
    assert kinds(streamed) == kinds(ran)


async def test_events_are_live_before_the_run_ends() -> None:
    gate = asyncio.Event()

    @sg.executor(id="first")
    async def first(n: int, ctx: sg.WorkflowContext[int]) -> None:
        await ctx.add_event(sg.UserEvent(kind="first_done"))
        await ctx.send_message(n)

    @sg.executor(id="second")
    async def second(n: int) -> None:
        await gate.wait()  # only the test's reaction to the event releases it

    workflow = sg.WorkflowBuilder(start=first).add_edge(first, second).build()
    seen = []
    async for event in workflow.stream(1):
        seen.append(event.kind)
        if event.kind == "first_done":
            gate.set()
    assert seen[-1] == "status" and "first_done" in seen


async def test_leaving_the_stream_early_cancels_the_run() -> None:
    calls: list[int] = []

    @sg.executor(id="count")
    async def count(n: int) -> int | None:
        calls.append(n)
        await asyncio.sleep(0.001)
        return n + 1 if n < 30 else None

    workflow = sg.WorkflowBuilder(start=count).add_edge(count, count).build()
    before = asyncio.all_tasks()
    stream = workflow.stream(0)
    steps = 0
    async for event in stream:
        if event.kind == "superstep_completed":
            steps += 1
            break
    await stream.aclose()
    assert steps == 1
    assert len(calls) <= 3  # cancelled, not run to its end (31 calls)
    assert asyncio.all_tasks() - before == set()
    result = await workflow.run(0)  # released: not busy
    assert result.status is sg.RunStatus.IDLE
    assert sum(1 for e in result.events if e.kind == "superstep_completed") == 31


def test_events_are_frozen() -> None:
    event = sg.OutputEvent(data=1)
    with pytest.raises(AttributeError):
        event.data = 2  # type: ignore[misc]


def test_events_the_kernel_builds_field_by_field_equal_constructed_ones() -> None:
    """Call records and the superstep events skip the dataclass __init__:
    each field set (equality reads them all; a field left unset would raise),
    the same event as constructed, and one that pickles (the Ray backend)."""
    import pickle

    from stepgraph._core._events import materialize, superstep_completed, superstep_started

    built = [
        superstep_started(3, ("a", "b")),
        superstep_completed(3),
        materialize((sg.ExecutorInvokedEvent, "a", 2)),
        materialize((sg.ExecutorCompletedEvent, "a", 2, 0.5, 1)),
    ]
    assert built == [
        sg.SuperstepStartedEvent(superstep=3, executors=("a", "b")),
        sg.SuperstepCompletedEvent(superstep=3),
        sg.ExecutorInvokedEvent(executor_id="a", superstep=2),
        sg.ExecutorCompletedEvent(executor_id="a", superstep=2, duration=0.5, item=1),
    ]
    assert [pickle.loads(pickle.dumps(e)) for e in built] == built
    assert [repr(e) for e in built[:2]] == [
        "SuperstepStartedEvent(executor_id=None, superstep=3, workflow_path=(), "
        "workflow_items=(), item=None, executors=('a', 'b'))",
        "SuperstepCompletedEvent(executor_id=None, superstep=3, workflow_path=(), "
        "workflow_items=(), item=None)",
    ]


async def test_run_result_repr_leaves_out_the_events() -> None:
    # asyncio (3.11) reprs the main task's result when asyncio.run finishes;
    # a long run's events must not make that cost grow with the run.
    result = await sg.WorkflowBuilder(start=a).add_edge(a, b).build().run(1)
    text = repr(result)
    assert "events" not in text and "outputs=[20]" in text and len(result.events) == 12


async def test_leaving_an_async_with_block_cancels_the_run_at_once() -> None:
    calls: list[int] = []

    @sg.executor(id="count")
    async def count(n: int) -> int | None:
        calls.append(n)
        await asyncio.sleep(0.001)
        return n + 1 if n < 30 else None

    workflow = sg.WorkflowBuilder(start=count).add_edge(count, count).build()
    before = asyncio.all_tasks()
    seen = 0
    async with workflow.stream(0) as events:
        async for event in events:
            if event.kind == "superstep_completed":
                seen += 1
                if seen == 2:
                    break
    assert len(calls) <= 4  # cancelled, not run to its end (31 calls)
    # Nothing left running, and the workflow is free for the next run.
    assert asyncio.all_tasks() - before == set()
    assert (await workflow.run(0)).status is sg.RunStatus.IDLE
    # An exception inside the block cancels it too, and is not swallowed.
    with pytest.raises(KeyError):
        async with workflow.stream(0) as events:
            async for _event in events:
                raise KeyError("stop")
    assert asyncio.all_tasks() - before == set()


async def test_a_dropped_stream_cancels_its_run() -> None:
    calls = 0

    @sg.executor(id="count")
    async def count(n: int) -> int | None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.001)
        return n + 1 if n < 1_000 else None

    workflow = sg.WorkflowBuilder(start=count, max_supersteps=2_000).add_edge(count, count).build()
    async for event in workflow.stream(0):
        if event.kind == "superstep_completed":
            break  # the stream object is dropped here, without aclose()
    for _ in range(100):
        try:
            result = await workflow.run(999)
            break
        except sg.WorkflowBusyError:
            await asyncio.sleep(0.001)
    assert result.outputs == [] and calls < 100  # the first run stopped early


async def test_a_stream_that_never_starts_runs_nothing() -> None:
    ran = []

    @sg.executor(id="once")
    async def once(n: int) -> None:
        ran.append(n)

    workflow = sg.WorkflowBuilder(start=once).build()
    stream = workflow.stream(1)
    await stream.aclose()
    del stream
    assert (await workflow.run(2)).status is sg.RunStatus.IDLE
    assert ran == [2]


async def test_a_stream_closed_before_it_began_ends_at_once_and_never_runs() -> None:
    # Iterating (or entering) a stream after aclose() raised a bare
    # AssertionError; the run it never started must simply not happen.
    calls: list[int] = []

    @sg.executor(id="never")
    async def never(n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        calls.append(n)

    workflow = sg.WorkflowBuilder(start=never).build()
    stream = workflow.stream(1)
    await stream.aclose()
    assert [event async for event in stream] == []
    entered = workflow.stream(2)
    await entered.aclose()
    async with entered as events:
        assert [event async for event in events] == []
    assert calls == [] and stream.drain() == [] and stream.last_checkpoint is None
    assert (await workflow.run(3)).status is sg.RunStatus.IDLE and calls == [3]
