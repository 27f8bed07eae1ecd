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
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
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
    before = Counter(await store.outputs(chosen.id))
    assert not before - Counter(whole.outputs)  # (what it had yielded, the whole run did)
    # A fresh workflow of the same graph, as another process would build.
    again = await build(spec, store, durability).run(checkpoint=chosen.id, checkpoints=store)
    assert again.status is sg.RunStatus.IDLE
    assert again.run_id == whole.run_id  # (an older checkpoint: a branch of the same run)
    assert Counter(again.outputs) == Counter(whole.outputs) - before, chosen.superstep
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
