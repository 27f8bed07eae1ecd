"""Breakpoints, per-call limits, and cancelling a run from another process
(design §1.17): each stop leaves a checkpoint the run goes on from."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import stepgraph as sg
from tests.conftest import ROOT, kinds


@sg.executor(id="plan")
async def plan(n: int, ctx: sg.WorkflowContext[int]) -> None:
    ctx.state.set("planned", n)
    await ctx.send_message(n + 1)


@sg.executor(id="act")
async def act(n: int, ctx: sg.WorkflowContext[int]) -> None:
    await ctx.send_message(n * 10)


@sg.executor(id="report")
async def report(n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
    await ctx.yield_output(n)


def pipeline(store: sg.CheckpointStore | None = None, **options: object) -> sg.Workflow:
    return (
        sg.WorkflowBuilder(start=plan, checkpoints=store, **options)  # type: ignore[arg-type]
        .add_chain([plan, act, report])
        .build()
    )


async def test_break_before_stops_at_the_barrier_then_goes_on(store: sg.CheckpointStore) -> None:
    paused = await pipeline(store, interrupt_before=["act"]).run(1)
    assert paused.status is sg.RunStatus.PAUSED and paused.outputs == []
    assert kinds(paused.events)[-1] == "status"
    assert [e.executors for e in paused.events if e.kind == "superstep_started"] == [("plan",)]  # type: ignore[attr-defined]
    snapshot = await pipeline(store).get_state(paused.last_checkpoint or "")
    assert snapshot.status == "paused" and snapshot.messages == {"act": [2]}
    [run] = await store.runs()
    assert run.status == "paused"
    # Going on skips the breakpoint it stopped at, and only that one time.
    done = await pipeline(store, interrupt_before=["act"]).run(checkpoint=paused.last_checkpoint)
    assert done.status is sg.RunStatus.IDLE and done.outputs == [20]


async def test_break_after_and_per_call_breakpoints(store: sg.CheckpointStore) -> None:
    workflow = pipeline(store)
    after = await workflow.run(1, interrupt_after=[act])
    assert after.status is sg.RunStatus.PAUSED
    assert (await workflow.get_state(after.last_checkpoint or "")).messages == {"report": [20]}
    assert (await workflow.run(checkpoint=after.last_checkpoint)).outputs == [20]
    before_start = await workflow.run(1, interrupt_before=["plan"])
    assert before_start.status is sg.RunStatus.PAUSED
    assert [e.kind for e in before_start.events if e.kind == "superstep_started"] == []
    with pytest.raises(sg.WorkflowDefinitionError, match="interrupt_before names 'nope'"):
        await workflow.run(1, interrupt_before=["nope"])


async def test_max_supersteps_per_call() -> None:
    workflow = pipeline()
    with pytest.raises(sg.ConvergenceError, match="max_supersteps=2"):
        await workflow.run(1, max_supersteps=2)
    assert (await workflow.run(1, max_supersteps=3)).outputs == [20]
    # What the run yielded before the limit, and where it goes on from.
    store = sg.MemoryCheckpointStore()
    with pytest.raises(sg.ConvergenceError) as raised:
        await pipeline(store).run(1, max_supersteps=2)
    assert raised.value.outputs == [] and raised.value.run_id is not None
    rest = await pipeline(store).run(checkpoint=raised.value.last_checkpoint)
    assert rest.outputs == [20] and rest.run_id == raised.value.run_id
    with pytest.raises(ValueError, match="max_supersteps must be a positive int"):
        await workflow.run(1, max_supersteps=0)


async def test_a_run_stopped_by_its_limit_keeps_what_it_yielded() -> None:
    @sg.executor(id="count")
    async def count(n: int, ctx: sg.WorkflowContext[int, int]) -> None:
        await ctx.yield_output(n)
        await ctx.send_message(n + 1)

    forever = sg.WorkflowBuilder(start=count).add_edge(count, count).build()
    with pytest.raises(sg.ConvergenceError) as raised:
        await forever.run(0, max_supersteps=4)
    assert raised.value.outputs == [0, 1, 2, 3] and raised.value.last_checkpoint is None


RESUME = """
import asyncio, json, sys
import stepgraph as sg
from tests.test_pauses import pipeline
store = sg.SqliteCheckpointStore(sys.argv[1])
result = asyncio.run(pipeline(store).run(checkpoint=sys.argv[2]))
print(json.dumps([result.status.value, result.outputs]))
"""


async def test_a_paused_run_goes_on_in_another_process(tmp_path: Path) -> None:
    path = tmp_path / "paused.sqlite"
    with sg.SqliteCheckpointStore(path) as store:
        paused = await pipeline(store).run(1, interrupt_after=["plan"])
    assert paused.status is sg.RunStatus.PAUSED
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", RESUME, str(path), paused.last_checkpoint or ""],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["idle", [20]]


@sg.executor(id="loop")
async def loop(n: int, ctx: sg.WorkflowContext[int, int]) -> None:
    await asyncio.sleep(0.02)
    if n < (ctx.context or 10_000):  # the run context can end it sooner
        await ctx.send_message(n + 1)
    else:
        await ctx.yield_output(n)


def looping(store: sg.CheckpointStore) -> sg.Workflow:
    return (
        sg.WorkflowBuilder(start=loop, checkpoints=store, max_supersteps=20_000)
        .add_edge(loop, loop)
        .build()
    )


CANCEL = """
import asyncio, sys
import stepgraph as sg
async def main():
    with sg.SqliteCheckpointStore(sys.argv[1]) as store:
        print(await store.request_cancel(sys.argv[2]))
asyncio.run(main())
"""


@pytest.mark.parametrize("durability", ["sync", "async"])
async def test_a_run_is_cancelled_from_another_process_then_resumed(
    tmp_path: Path, durability: str
) -> None:
    path = tmp_path / "cancel.sqlite"
    store = sg.SqliteCheckpointStore(path)
    config = sg.CheckpointConfig(store, durability)  # type: ignore[arg-type]
    events: list[sg.Event] = []

    async def consume() -> None:
        async for event in looping(config).stream(0):  # type: ignore[arg-type]
            events.append(event)

    task = asyncio.create_task(consume())
    while not any(e.kind == "superstep_completed" for e in events):
        await asyncio.sleep(0.01)
    run_id = next(e.run_id for e in events if isinstance(e, sg.RunStartedEvent))
    asked = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", CANCEL, str(path), run_id],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert asked.stdout.strip() == "True", asked.stderr
    await asyncio.wait_for(task, timeout=30)  # stopped at a barrier, not by force
    assert events[-1] == sg.StatusEvent(status=sg.RunStatus.CANCELLED)
    steps = sum(1 for e in events if e.kind == "superstep_completed")
    [run] = await store.runs()
    assert run.status == "cancelled" and run.superstep == steps
    # The flag is spent: going on runs to the end.
    resumed = await looping(store).run(checkpoint=run.last_checkpoint, context=steps + 3)
    assert (resumed.status, resumed.outputs) == (sg.RunStatus.IDLE, [steps + 3])
    assert not store.cancel_requested(run_id, 0.0)
    store.close()


async def test_breakpoints_without_a_store_are_refused_before_the_run() -> None:
    with pytest.raises(sg.CheckpointError, match="breakpoints but no checkpoint store"):
        await pipeline(interrupt_before=["act"]).run(1)
    with pytest.raises(sg.CheckpointError, match="pass checkpoints="):
        await pipeline().run(1, interrupt_after=["plan"])
    store = sg.MemoryCheckpointStore()
    paused = await pipeline().run(1, interrupt_before=["act"], checkpoints=store)
    assert paused.status is sg.RunStatus.PAUSED and paused.last_checkpoint is not None


async def test_one_breakpoint_id_on_its_own_is_not_split_into_characters(
    store: sg.CheckpointStore,
) -> None:
    @sg.executor(id="pa")
    async def pa(n: int, ctx: sg.WorkflowContext[int]) -> None:
        await ctx.send_message(n)

    @sg.executor(id="p")
    async def p(n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        await ctx.yield_output(n)

    def build(**options: object) -> sg.Workflow:
        builder = sg.WorkflowBuilder(start=plan, checkpoints=store, **options)  # type: ignore[arg-type]
        return builder.add_chain([plan, pa, p]).build()

    by_call = await build().run(1, interrupt_before="pa")
    assert (await build().get_state(by_call.last_checkpoint or "")).messages == {"pa": [2]}
    by_builder = await build(interrupt_before="pa").run(1)
    assert (await build().get_state(by_builder.last_checkpoint or "")).messages == {"pa": [2]}


async def test_update_state_wants_a_list_of_messages_per_executor(
    store: sg.CheckpointStore,
) -> None:
    paused = await pipeline(store, interrupt_before=["act"]).run(1)
    with pytest.raises(TypeError, match="messages for 'act' must be a list of messages, not a str"):
        await pipeline(store).update_state(paused.last_checkpoint or "", messages={"act": "12"})
    with pytest.raises(TypeError, match="pass \\[message\\]"):
        await pipeline(store).update_state(paused.last_checkpoint or "", messages={"act": 12})


def test_a_sub_workflow_with_breakpoints_is_refused() -> None:
    child = pipeline(sg.MemoryCheckpointStore(), interrupt_before=["act"])
    with pytest.raises(sg.WorkflowDefinitionError, match="does not stop at"):
        sg.WorkflowExecutor(child, id="sub")


async def test_a_break_after_the_last_superstep_ends_the_run(store: sg.CheckpointStore) -> None:
    done = await pipeline(store).run(1, interrupt_after=["report"])
    assert done.status is sg.RunStatus.IDLE and done.outputs == [20]
    stops = await pipeline(store, interrupt_before=["act"]).run(1, interrupt_before=["report"])
    assert (await pipeline(store).get_state(stops.last_checkpoint or "")).messages == {
        "report": [20]
    }  # the call's list replaced the builder's


@sg.executor(id="long")
async def long_step(n: int, ctx: sg.WorkflowContext[int, int]) -> None:
    await ctx.yield_output(n)
    if n == 1:
        await asyncio.sleep(30)  # a long superstep: a model streaming, a slow tool
    await ctx.send_message(n + 1)


async def test_a_long_superstep_is_stopped_from_another_process(tmp_path: Path) -> None:
    path = tmp_path / "long.sqlite"
    store = sg.SqliteCheckpointStore(path)
    workflow = (
        sg.WorkflowBuilder(start=long_step, checkpoints=store)
        .add_edge(long_step, long_step)
        .build()
    )
    task = asyncio.create_task(workflow.run(0))
    while len(await store.list()) < 2:  # the entry and the first barrier: the long step runs
        await asyncio.sleep(0.02)
    [run] = await store.runs()
    asked = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", CANCEL, str(path), run.run_id],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert asked.stdout.strip() == "True", asked.stderr
    started = time.perf_counter()
    result = await asyncio.wait_for(task, timeout=10)
    assert time.perf_counter() - started < 3  # within a poll or two, not after the 30 s
    assert result.status is sg.RunStatus.CANCELLED and result.outputs == [0]  # (1: never returned)
    [run] = await store.runs()
    assert run.status == "cancelled" and run.superstep == 1  # the cut superstep left nothing
    assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    store.close()
