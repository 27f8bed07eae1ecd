"""Checkpoints keep the outputs each superstep yielded (as JSON to show);
``store.outputs`` lists them along a checkpoint's branch — on every store."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

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


async def test_outputs_after_an_ancestor(store: sg.CheckpointStore) -> None:
    """``after=`` gives only what was yielded past a checkpoint of the
    lineage, reading the run back only that far; a checkpoint off the
    lineage (another branch, another run) is refused."""
    result = await build(store).run(1)
    infos = await store.list(result.run_id)
    at = {i.superstep: i.id for i in infos}
    outputs = store.outputs  # type: ignore[attr-defined]
    whole = await outputs(result.last_checkpoint)
    for cid in at.values():
        assert await outputs(cid) + await outputs(result.last_checkpoint, after=cid) == whole
    assert await outputs(result.last_checkpoint, after=result.last_checkpoint) == []
    replay = await build(store).run(checkpoint=at[1])
    # The replay's lineage goes through superstep 1 but not the first branch's 2 and 3.
    tail = await outputs(replay.last_checkpoint, after=at[1])
    assert tail == whole[1:]
    with pytest.raises(sg.CheckpointNotFoundError, match="not on the lineage"):
        await outputs(replay.last_checkpoint, after=at[2])
    other = await build(store).run(1)
    with pytest.raises(sg.CheckpointNotFoundError, match="not on the lineage"):
        await outputs(other.last_checkpoint, after=at[1])


async def test_outputs_after_across_many_records(store: sg.CheckpointStore) -> None:
    """A long run stored a record per checkpoint (sync): ``after=`` reads
    back across pages of records, and agrees with the whole lineage."""

    @sg.executor(id="tick")
    async def tick(n: int, ctx: sg.WorkflowContext[int, int]) -> None:
        await ctx.yield_output(n)
        if n < 150:
            await ctx.send_message(n + 1)

    flow = (
        sg.WorkflowBuilder(start=tick, checkpoints=store, max_supersteps=1000)
        .add_edge(tick, tick)
        .build()
    )
    result = await flow.run(1)
    infos = await store.list(result.run_id)
    assert len(infos) == 151  # (the entry, then one per superstep)
    outputs = store.outputs  # type: ignore[attr-defined]
    assert await outputs(result.last_checkpoint) == list(range(1, 151))
    assert await outputs(result.last_checkpoint, after=infos[3].id) == list(range(4, 151))
    assert await outputs(infos[100].id, after=infos[2].id) == list(range(3, 101))
