"""Checkpoints keep the outputs each superstep yielded (as JSON to show);
``store.outputs`` lists them along a checkpoint's branch — on every store."""

from __future__ import annotations

from dataclasses import dataclass

import stepgraph as sg


@dataclass(frozen=True)
class Item:
    n: int
    note: str


class NotJson:
    def __repr__(self) -> str:
        return "<not json>"


@sg.executor(id="count")
async def count(n: int, ctx: sg.WorkflowContext[int, object]) -> None:
    await ctx.yield_output(Item(n, "ü [x] <y>"))
    if n == 2:
        await ctx.yield_output(NotJson())  # (no codec needed: kept as its display)
    if n < 3:
        await ctx.send_message(n + 1)


def build(store: sg.CheckpointStore) -> sg.Workflow:
    return sg.WorkflowBuilder(start=count, checkpoints=store).add_edge(count, count).build()


async def test_outputs_along_the_branch(store: sg.CheckpointStore) -> None:
    result = await build(store).run(1)
    shown = [
        {"n": 1, "note": "ü [x] <y>"},
        {"n": 2, "note": "ü [x] <y>"},
        "<not json>",
        {"n": 3, "note": "ü [x] <y>"},
    ]
    assert await store.outputs(result.last_checkpoint) == shown  # type: ignore[attr-defined]
    infos = await store.list(result.run_id)
    at_two = next(i for i in infos if i.superstep == 2)
    assert await store.outputs(at_two.id) == shown[:3]  # type: ignore[attr-defined]
    # A replay from superstep 1 is a branch of its own: its outputs, once.
    at_one = next(i for i in infos if i.superstep == 1)
    replay = await build(store).run(checkpoint=at_one.id)
    assert replay.run_id == result.run_id
    assert await store.outputs(replay.last_checkpoint) == shown  # type: ignore[attr-defined]
    fork = await build(store).run(checkpoint=at_two.id, fork=True)
    assert await store.outputs(fork.last_checkpoint) == [shown[3]]  # type: ignore[attr-defined]
