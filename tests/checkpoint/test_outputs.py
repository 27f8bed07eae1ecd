"""Checkpoints keep the outputs each superstep yielded (as JSON to show);
``store.outputs`` lists them along a checkpoint's branch — on every store."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

import stepgraph as sg
from stepgraph._checkpoint import _store


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


def _checkpoint(cid: str, parent: str | None, step: int, outputs: list[object]) -> sg.Checkpoint:
    return sg.Checkpoint(
        id=cid,
        run_id="long",
        workflow="w",
        signature="s",
        superstep=step,
        parent_id=parent,
        created_at=1000.0 + step,
        status="in_progress",
        body={"outputs": outputs},
    )


async def _branched_run(store: sg.CheckpointStore) -> tuple[str, str]:
    """A run of 40 checkpoints yielding 0 to 3 outputs each, some saved
    together (one record holding several), and a branch replayed from its
    20th: the ends of both branches."""
    saved: list[sg.Checkpoint] = []
    parent: str | None = None
    for step in range(40):
        cid = f"c{step}"
        saved.append(_checkpoint(cid, parent, step, [f"{step}.{k}" for k in range(step % 4)]))
        parent = cid
    for start in range(0, 40, 7):  # (in batches: several checkpoints a record)
        await store.save(*saved[start : start + 7])
    parent = "c19"
    for step in range(20, 30):
        cid = f"b{step}"
        await store.save(_checkpoint(cid, parent, step, [f"b{step}.{k}" for k in range(3)]))
        parent = cid
    return "c39", parent


@pytest.mark.parametrize("pages", ["grown", "small"])
async def test_a_slice_of_the_outputs_is_the_slice_of_them_all(
    store: sg.CheckpointStore, pages: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``outputs_slice`` counts the outputs ``outputs`` gives and returns
    ``every[offset:][:limit]`` (a negative offset: from the newest), along
    either branch, whether the lineage is read back in a few pages or in
    pages of one record and the slice read again a checkpoint or two at a
    time."""
    if pages == "small":
        monkeypatch.setattr(_store, "_PAGE_BYTES", 1)
        monkeypatch.setattr(_store, "_READ_BACK", 2)
    ends = await _branched_run(store)
    for end in (*ends, "c19", "c0", "c1"):
        every = await store.outputs(end)  # type: ignore[attr-defined]
        n = len(every)
        for offset in sorted({-n - 2, -n, 1 - n, -5, -1, 0, 1, 2, 3, 7, n // 2, n - 1, n, n + 2}):
            for limit in (None, 0, 1, 2, 5, n + 1):
                total, part = await store.outputs_slice(end, offset, limit)  # type: ignore[attr-defined]
                assert (total, part) == (n, every[offset:][:limit]), (end, offset, limit)
    assert (await store.outputs_slice(ends[1], -4))[1] == ["b28.2", "b29.0", "b29.1", "b29.2"]  # type: ignore[attr-defined]
    with pytest.raises(sg.CheckpointNotFoundError, match="no checkpoint 'nope'"):
        await store.outputs_slice("nope", 0, 1)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="limit >= 0"):
        await store.outputs_slice(ends[0], 0, -1)  # type: ignore[attr-defined]
