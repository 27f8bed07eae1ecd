"""Checkpoints at every barrier, resume from any of them, forks, mismatches,
and errors that must be clear (design §5)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

import stepgraph as sg
from tests import resumable


def outputs_after(result: sg.RunResult, superstep: int) -> list[Any]:
    return [
        e.data
        for e in result.events
        if isinstance(e, sg.OutputEvent) and e.superstep is not None and e.superstep > superstep
    ]


async def test_one_checkpoint_per_barrier_chained_by_parent(store: sg.CheckpointStore) -> None:
    result = await resumable.build(store).run(1)
    supersteps = sum(1 for e in result.events if e.kind == "superstep_completed")
    infos = await store.list(result.run_id)
    assert len(infos) == supersteps + 1  # plus the entry checkpoint
    assert [i.superstep for i in infos] == list(range(supersteps + 1))
    assert infos[0].parent_id is None
    assert all(b.parent_id == a.id for a, b in itertools.pairwise(infos))
    assert infos[-1].status == "idle" and infos[0].status == "in_progress"
    assert result.last_checkpoint == infos[-1].id


@pytest.mark.parametrize("durability", ["sync", "async"])
async def test_resume_from_every_checkpoint_yields_the_rest(
    store: sg.CheckpointStore, durability: str
) -> None:
    uninterrupted = await resumable.build(store, durability).run(1)
    assert uninterrupted.outputs[-1] == "history [1, 10, 4]"
    infos = await store.list(uninterrupted.run_id)
    assert len(infos) == 9
    for info in infos:
        fresh = resumable.build(store)  # new executor instances, as in a new process
        resumed = await fresh.run(checkpoint=info.id)
        assert resumed.outputs == outputs_after(uninterrupted, info.superstep), info.superstep
        assert resumed.run_id == uninterrupted.run_id
        assert resumed.status is sg.RunStatus.IDLE


async def test_resuming_an_older_checkpoint_forks(store: sg.CheckpointStore) -> None:
    first = await resumable.build(store).run(1)
    original = await store.list(first.run_id)
    fork_point = original[3]
    resumed = await resumable.build(store).run(checkpoint=fork_point.id)
    everything = await store.list(first.run_id)
    branch = [i for i in everything if i.id not in {o.id for o in original}]
    assert branch[0].parent_id == fork_point.id
    assert all(b.parent_id == a.id for a, b in itertools.pairwise(branch))
    # The original lineage is intact and still resumable.
    assert [i for i in everything if i.id in {o.id for o in original}] == original
    assert resumed.last_checkpoint == branch[-1].id
    again = await resumable.build(store).run(checkpoint=original[-2].id)
    assert again.outputs == outputs_after(first, original[-2].superstep)


async def test_max_supersteps_counts_per_run_call(store: sg.CheckpointStore) -> None:
    workflow = (
        sg.WorkflowBuilder(start=resumable.split, max_supersteps=3, checkpoints=store)
        .add_fan_out(resumable.split, [resumable.fast, resumable.slow1])
        .add_edge(resumable.slow1, resumable.slow2)
        .add_fan_in([resumable.fast, resumable.slow2], resumable.join)
        .add_edge(resumable.join, resumable.Loop())
        .add_edge("loop", "loop")
        .build()
    )
    with pytest.raises(sg.ConvergenceError) as raised:
        await workflow.run(1)
    run_id = (await store.runs())[0].run_id
    outputs: list[Any] = []
    for _ in range(5):
        latest = await store.latest(run_id)
        assert latest is not None
        try:
            result = await workflow.run(checkpoint=latest.id)
        except sg.ConvergenceError:
            continue
        outputs = result.outputs
        break
    assert outputs and outputs[-1] == "history [1, 10, 4]"
    assert "max_supersteps=3" in str(raised.value)


async def test_graph_mismatch_is_refused(store: sg.CheckpointStore) -> None:
    result = await resumable.build(store).run(1)

    @sg.executor(id="split")
    async def other(n: int, ctx: sg.WorkflowContext[int, str]) -> None: ...

    different = sg.WorkflowBuilder(start=other, name="resumable", checkpoints=store).build()
    with pytest.raises(sg.CheckpointMismatchError, match="different graph"):
        await different.run(checkpoint=result.last_checkpoint)


async def test_unknown_checkpoint_and_missing_store(store: sg.CheckpointStore) -> None:
    with pytest.raises(sg.CheckpointNotFoundError, match="'nope'"):
        await resumable.build(store).run(checkpoint="nope")
    with pytest.raises(sg.CheckpointError, match="needs a store"):
        await resumable.build().run(checkpoint="nope")
    with pytest.raises(sg.RequestError, match="not both"):
        await resumable.build(store).run(1, checkpoint="x")


class Opaque:
    """Not encodable."""


async def test_unencodable_state_fails_the_run_cleanly(store: sg.CheckpointStore) -> None:
    @sg.executor(id="first")
    async def first(n: int) -> int:
        return n

    @sg.executor(id="bad")
    async def bad(n: int, ctx: sg.WorkflowContext) -> None:
        ctx.state.set("handle", Opaque())

    workflow = sg.WorkflowBuilder(start=first, checkpoints=store).add_edge(first, bad).build()
    events: list[sg.Event] = []
    with pytest.raises(sg.CheckpointEncodeError, match=r"state\['handle'\]: cannot store .*Opaque"):
        async for event in workflow.stream(1):
            events.append(event)
    assert events[-1] == sg.StatusEvent(status=sg.RunStatus.FAILED)
    [run] = await store.runs()
    assert run.superstep == 1  # the last good checkpoint is still there, resumable


async def test_snapshot_without_restore_is_a_definition_error() -> None:
    class Half(sg.Executor):
        @sg.handler
        async def on(self, n: int) -> None: ...

        def snapshot(self) -> Any:
            return 1

    with pytest.raises(
        sg.WorkflowDefinitionError, match="overrides snapshot\\(\\) but not restore"
    ):
        sg.WorkflowBuilder(start=Half("half")).build()


async def test_registered_types_can_be_checkpointed(tmp_path: Path) -> None:
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Note:
        text: str

    @sg.executor(id="keep")
    async def keep(n: int, ctx: sg.WorkflowContext) -> None:
        ctx.state.set("note", Note("kept"))

    with sg.SqliteCheckpointStore(tmp_path / "db.sqlite") as store:
        plain = sg.WorkflowBuilder(start=keep, checkpoints=store).build()
        with pytest.raises(sg.CheckpointEncodeError, match="Note is neither declared"):
            await plain.run(1)
        registered = sg.WorkflowBuilder(
            start=keep, checkpoints=store, checkpoint_types=[Note]
        ).build()
        result = await registered.run(1)
        loaded = await store.load(result.last_checkpoint or "")
        assert loaded.body["state"].keys() == {"note"}


async def test_unencodable_message_names_its_inbox(store: sg.CheckpointStore) -> None:
    @sg.executor(id="a")
    async def a(n: int, ctx: sg.WorkflowContext[Any]) -> None:
        await ctx.send_message([n, Opaque()])

    @sg.executor(id="b")
    async def b(value: Any) -> None: ...

    workflow = sg.WorkflowBuilder(start=a, checkpoints=store).add_edge(a, b).build()
    with pytest.raises(
        sg.CheckpointEncodeError, match=r"inbox of 'b'\[0\] \(from 'a'\)\[1\]: cannot store"
    ):
        await workflow.run(1)
