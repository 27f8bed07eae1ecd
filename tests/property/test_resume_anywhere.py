"""Resuming from any checkpoint of a random graph does what the rest of the
uninterrupted run did.

The graphs are those of ``test_random_graphs`` (chains, fan-outs, fan-ins,
switches, conditional edges, maps, cycles), their nodes keeping shared state
(``ctx.state``), executor state of their own (a count of the messages they
handled, in ``snapshot``/``restore``) and yielding an output per message that
shows both. A run is checkpointed at every barrier; Hypothesis picks one of
its checkpoints, and the run resumed from it must yield exactly the outputs
the original yielded after that checkpoint — on every store (memory, SQLite,
PostgreSQL), with ``sync`` and ``async`` durability.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

import stepgraph as sg

from .test_random_graphs import Spec, behaviour, graphs, reference, value_of, wire


class Counting(sg.Executor):
    """A node: counts what it handled (its snapshot), and yields what it saw."""

    def __init__(self, index: int, jitter: random.Random) -> None:
        super().__init__(f"n{index}")
        self.index = index
        self.jitter = jitter
        self.count = 0

    def snapshot(self) -> int:
        return self.count

    def restore(self, snapshot: int) -> None:
        self.count = snapshot

    async def _handle(self, message: Any, ctx: sg.WorkflowContext[int, str]) -> None:
        for _ in range(self.jitter.randrange(3)):
            await asyncio.sleep(0)
        self.count += 1
        seen = ctx.state.get("last")
        await ctx.yield_output(f"n{self.index}:{value_of(message)}:{seen}:{self.count}")
        ctx.state.set("last", [self.index, value_of(message)])
        for value in behaviour(self.index, message):
            await ctx.send_message(value)

    @sg.handler
    async def on_int(self, message: int, ctx: sg.WorkflowContext[int, str]) -> None:
        await self._handle(message, ctx)

    @sg.handler
    async def on_list(self, message: list[int], ctx: sg.WorkflowContext[int, str]) -> None:
        await self._handle(message, ctx)


def build(spec: Spec, store: sg.CheckpointStore, durability: str) -> sg.Workflow:
    jitter = random.Random(spec.jitter_seed)
    nodes = [Counting(i, jitter) for i in range(spec.size)]
    builder = sg.WorkflowBuilder(
        start=nodes[0],
        max_supersteps=1000,
        checkpoints=sg.CheckpointConfig(store, durability),  # type: ignore[arg-type]
    )
    builder.add_executor(*nodes)
    wire(builder, spec, nodes.__getitem__, lambda index: lambda: Counting(index, jitter))
    return builder.build()


async def check(spec: Spec, pick: int, store: sg.CheckpointStore, durability: str) -> None:
    reference(spec)  # (rejects graphs whose cycles run too long, as there)
    workflow = build(spec, store, durability)
    whole = await workflow.run(spec.start_value)
    assert whole.status is sg.RunStatus.IDLE
    checkpoints = await store.list(whole.run_id)
    assert checkpoints[-1].id == whole.last_checkpoint
    chosen = checkpoints[pick % len(checkpoints)]
    before = await store.outputs(chosen.id)
    assert whole.outputs[: len(before)] == before  # (what it had yielded, the whole run did)
    # A fresh workflow of the same graph, as another process would build.
    again = await build(spec, store, durability).run(checkpoint=chosen.id, checkpoints=store)
    assert again.status is sg.RunStatus.IDLE
    assert again.run_id == whole.run_id  # (an older checkpoint: a branch of the same run)
    assert again.outputs == whole.outputs[len(before) :], chosen.superstep
    # Resuming from where the branch ended has nothing left to do.
    ended = await build(spec, store, durability).run(
        checkpoint=again.last_checkpoint, checkpoints=store
    )
    assert ended.outputs == []


@settings(
    max_examples=80,
    deadline=None,
    # One store for every example: each run is a run of its own in it.
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(graphs(), st.integers(0, 10**6), st.sampled_from(["sync", "async"]))
def test_resume_from_any_checkpoint(
    store: sg.CheckpointStore, spec: Spec, pick: int, durability: str
) -> None:
    asyncio.run(check(spec, pick, store, durability))


async def stop_and_go(
    spec: Spec, store: sg.CheckpointStore, before: list[str], after: list[str], steps: int
) -> None:
    reference(spec)
    whole = await build(spec, store, "sync").run(spec.start_value)
    outputs: list[str] = []
    run = build(spec, store, "async")
    call: dict[str, Any] = {"input": spec.start_value}
    for _ in range(2000):  # (each call goes at least one superstep on)
        try:
            part = await run.run(
                **call, interrupt_before=before, interrupt_after=after, max_supersteps=steps
            )
        except sg.ConvergenceError as stopped:
            outputs += stopped.outputs
            assert stopped.last_checkpoint is not None
            call = {"checkpoint": stopped.last_checkpoint, "checkpoints": store}
        else:
            outputs += part.outputs
            if part.status is sg.RunStatus.IDLE:
                break
            assert part.status is sg.RunStatus.PAUSED
            call = {"checkpoint": part.last_checkpoint, "checkpoints": store}
        run = build(spec, store, "async")  # as another process would go on
    else:
        raise AssertionError("the run never ended")
    assert outputs == whole.outputs
    assert await store.outputs(part.last_checkpoint or "") == whole.outputs


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(graphs(), st.data())
def test_stopping_anywhere_and_going_on_yields_what_one_run_yields(
    spec: Spec, data: st.DataObject
) -> None:
    """Breakpoints before and after random executors, and a step limit
    that stops the run every few supersteps, each stop continued by a
    freshly built workflow from its checkpoint: together the calls yield
    what one uninterrupted run yields."""
    nodes = [f"n{i}" for i in range(spec.size + len(spec.maps))]  # (maps too)
    ids = st.lists(st.sampled_from(nodes), max_size=3)
    before, after = data.draw(ids), data.draw(ids)
    steps = data.draw(st.integers(1, 6))
    asyncio.run(stop_and_go(spec, sg.MemoryCheckpointStore(), before, after, steps))


@dataclass(frozen=True)
class Ask:
    value: int


class Asking(Counting):
    """A node that asks for every message whose value is 1 mod 5 (the
    answer: the value plus one, handled as a message would be)."""

    async def _handle(self, message: Any, ctx: sg.WorkflowContext[int, str]) -> None:
        value = value_of(message)
        if value % 5 == 1:
            await ctx.request_info(Ask(value), int)
            await ctx.yield_output(f"n{self.index}:asked:{value}")
            return
        await ctx.yield_output(f"n{self.index}:{value}")
        for sent in behaviour(self.index, message):
            await ctx.send_message(sent)

    @sg.response_handler
    async def answered(self, request: Ask, answer: int, ctx: sg.WorkflowContext[int, str]) -> None:
        await ctx.yield_output(f"n{self.index}:answer:{request.value}={answer}")
        for sent in behaviour(self.index, answer):
            await ctx.send_message(sent)


def asking(spec: Spec, store: sg.CheckpointStore) -> sg.Workflow:
    jitter = random.Random(spec.jitter_seed)
    nodes = [Asking(i, jitter) for i in range(spec.size)]
    builder = sg.WorkflowBuilder(start=nodes[0], max_supersteps=100, checkpoints=store)
    builder.add_executor(*nodes)
    wire(builder, spec, nodes.__getitem__, lambda index: lambda: Counting(index, jitter))
    return builder.build()


async def answer_all(
    spec: Spec,
    store: sg.CheckpointStore,
    data: st.DataObject | None,
    build: Callable[[], sg.Workflow] | None = None,
) -> list[str]:
    """Run and answer every request (each with its value plus one) until
    the run ends: all at once in memory (``data`` None), or as drawn — some
    of them at a time, in memory or from the checkpoint by a freshly built
    workflow, and now and then an answer given again from an older
    checkpoint, which must be refused. ``build`` makes the workflow (by
    default: ``asking``'s)."""
    if build is None:
        build = partial(asking, spec, store)
    workflow = build()
    result = await workflow.run(spec.start_value)
    outputs = list(result.outputs)
    answered: list[tuple[str, str]] = []  # (request id, checkpoint before its answer)
    for _ in range(500):
        if result.status is sg.RunStatus.IDLE:
            return outputs
        assert result.status is sg.RunStatus.IDLE_WITH_PENDING_REQUESTS
        pending = result.pending_requests
        if data is None:
            chosen = pending
        else:
            chosen = data.draw(st.lists(st.sampled_from(pending), min_size=1, unique=True))
            if answered and data.draw(st.booleans()):
                again, at = data.draw(st.sampled_from(answered))
                try:
                    await build().run(responses={again: 0}, checkpoint=at, checkpoints=store)
                except sg.RequestError as refused:
                    assert "already answered" in str(refused)
                else:
                    raise AssertionError(f"request {again} was answered twice")
        responses = {p.request_id: p.request.value + 1 for p in chosen}
        answered += [(r, result.last_checkpoint or "") for r in responses]
        if data is not None and data.draw(st.booleans()):
            workflow = build()  # another process goes on from the checkpoint
            result = await workflow.run(
                responses=responses, checkpoint=result.last_checkpoint, checkpoints=store
            )
        else:
            result = await workflow.run(responses=responses)
        outputs += result.outputs
    raise AssertionError("the run never ended")


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(graphs(), st.data())
def test_answering_in_any_order_and_place_delivers_everything_once(
    store: sg.CheckpointStore, spec: Spec, data: st.DataObject
) -> None:
    """Requests opened at random places of random graphs, answered a few at
    a time — in memory, or from the checkpoint in a workflow built afresh —
    with answers given again from older checkpoints refused: every message
    and every answer is handled exactly once, as when all are answered at
    once."""
    # Without fan-ins and maps, which group messages by the superstep they
    # arrive in: when an answer comes would then change what is sent.
    spec = replace(spec, groups=[g for g in spec.groups if g.kind != "fan_in"], maps=[])
    try:
        expected = asyncio.run(answer_all(spec, sg.MemoryCheckpointStore(), None))
    except sg.ConvergenceError:
        assume(False)  # (a cycle that runs long: not this test's subject)
    got = asyncio.run(answer_all(spec, store, data))
    assert Counter(got) == Counter(expected)


RUNNING = {sg.RunStatus.IN_PROGRESS.value, sg.RunStatus.IN_PROGRESS_PENDING_REQUESTS.value}


async def cancel_and_go_on(
    spec: Spec, store: sg.CheckpointStore, durability: str, turns: int
) -> None:
    """Cancel a run after ``turns`` turns of the loop, then go on from its
    last stored checkpoint: what it had stored and what the rest yields
    are what one uninterrupted run yields."""
    reference(spec)
    uncancelled = build(spec, sg.MemoryCheckpointStore(), "sync")
    whole = await uncancelled.run(spec.start_value)
    end = await uncancelled.get_state(whole.last_checkpoint or "")
    task = asyncio.ensure_future(build(spec, store, durability).run(spec.start_value))
    for _ in range(turns):  # (handlers give the loop a turn now and then)
        await asyncio.sleep(0)
    task.cancel()
    try:
        finished = await task
    except asyncio.CancelledError:
        started = await store.runs()
        if not started:
            event("cancelled before it began")
            return  # (nothing stored, nothing to go on with)
        event("cancelled while running")
        [cancelled] = started
        last = cancelled.last_checkpoint
        # Listed as its last checkpoint says, or cancelled when that one is
        # of a run going on; and no longer held.
        stored = await store.load(last)
        if cancelled.status == "cancelled":
            assert stored.status in RUNNING, (stored.status, cancelled)
        else:
            assert cancelled.status == stored.status, (stored.status, cancelled)
        assert await store.lease_holder(cancelled.run_id) is None
        done = list(await store.outputs(last))
        going_on = build(spec, store, durability)
        rest = await going_on.run(checkpoint=last, checkpoints=store)
        assert rest.status is sg.RunStatus.IDLE
        assert done + rest.outputs == whole.outputs
        # ... and it ends where the uncancelled run ended: state, snapshots.
        ended = await going_on.get_state(rest.last_checkpoint or "")
        assert (ended.superstep, ended.state, ended.snapshots, ended.fan_in) == (
            end.superstep,
            end.state,
            end.snapshots,
            end.fan_in,
        )
    else:
        event("ended before the cancel came")
        assert finished.outputs == whole.outputs


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(
    graphs(),
    st.integers(0, 60),
    st.sampled_from(["sync", "async"]),
    st.sampled_from(["memory", "sqlite"]),
)
def test_a_run_cancelled_anywhere_goes_on_from_its_last_checkpoint(
    spec: Spec, turns: int, durability: str, kind: str
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = (
            sg.MemoryCheckpointStore()
            if kind == "memory"
            else sg.SqliteCheckpointStore(Path(folder) / "runs.sqlite")
        )
        try:
            asyncio.run(cancel_and_go_on(spec, store, durability, turns))
        finally:
            store.close()
