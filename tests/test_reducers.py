"""State reducers (design §1.16): parallel writes to a reduced key are folded
at the barrier in schedule order then write order — no conflict; a handler
reads the committed value folded with its own writes."""

from __future__ import annotations

import operator
from typing import Any

import pytest

import stepgraph as sg
from tests.conftest import warnings


def writer(name: str, *values: Any) -> sg.FunctionExecutor:
    async def write(n: int, ctx: sg.WorkflowContext[int]) -> None:
        seen = []
        for value in values:
            ctx.state.set("notes", [f"{name}:{value}"])
            ctx.state.set("count", 1)
            ctx.state.set("seen", {value})
            seen.append(ctx.state.get("notes"))
        ctx.state.set("plain", name)
        ctx.state.set("own_view", seen)
        await ctx.send_message(n)

    return sg.executor(id=name)(write)


@sg.executor(id="go")
async def go(n: int) -> int:
    return n


@sg.executor(id="read")
async def read(values: list[int], ctx: sg.WorkflowContext[sg.Never, Any]) -> None:
    await ctx.yield_output({k: ctx.state.get(k) for k in ("notes", "count", "seen", "plain")})


def build(store: sg.CheckpointStore | None = None) -> sg.Workflow:
    a, b = writer("a", 1, 2), writer("b", 3)
    return (
        sg.WorkflowBuilder(
            start=go,
            checkpoints=store,
            reducers={"notes": operator.add, "count": operator.add, "seen": sg.union},
        )
        .add_fan_out(go, [a, b])
        .add_fan_in([a, b], read)
        .build()
    )


async def test_parallel_writes_fold_without_conflict() -> None:
    result = await build().run(0)
    assert result.outputs == [
        {"notes": ["a:1", "a:2", "b:3"], "count": 3, "seen": {1, 2, 3}, "plain": "b"}
    ]
    # Only the plain key conflicts.
    assert [w for w in warnings(result.events) if "'plain'" in w]
    assert not [w for w in warnings(result.events) if "'notes'" in w or "'count'" in w]


async def test_a_handler_reads_the_committed_value_folded_with_its_own_writes() -> None:
    @sg.executor(id="start")
    async def start(n: int, ctx: sg.WorkflowContext[int]) -> None:
        ctx.state.set("notes", ["first"])
        await ctx.send_message(n)

    @sg.executor(id="more")
    async def more(n: int, ctx: sg.WorkflowContext[sg.Never, Any]) -> None:
        before = ctx.state.get("notes")
        ctx.state.set("notes", ["second"])
        after = ctx.state.get("notes")
        ctx.state.delete("notes")  # a delete restarts the fold
        ctx.state.set("notes", ["third"])
        await ctx.yield_output((before, after, ctx.state.get("notes"), "notes" in ctx.state))

    workflow = (
        sg.WorkflowBuilder(start=start, reducers={"notes": operator.add})
        .add_edge(start, more)
        .build()
    )
    assert (await workflow.run(0)).outputs == [(["first"], ["first", "second"], ["third"], True)]


async def test_reduced_state_resumes_from_a_checkpoint(store: sg.CheckpointStore) -> None:
    first = await build(store).run(0)
    middle = (await store.list(first.run_id))[1]
    resumed = await build(store).run(checkpoint=middle.id)
    assert resumed.outputs == first.outputs


async def test_reducers_are_part_of_the_graph_signature(store: sg.CheckpointStore) -> None:
    first = await build(store).run(0)
    other = (
        sg.WorkflowBuilder(
            start=go,
            checkpoints=store,
            reducers={"notes": operator.concat, "count": operator.add, "seen": sg.union},
        )
        .add_fan_out(go, [writer("a", 1, 2), writer("b", 3)])
        .add_fan_in(["a", "b"], read)
        .build()
    )
    with pytest.raises(sg.CheckpointMismatchError):
        await other.run(checkpoint=first.last_checkpoint)


async def test_a_failing_reducer_fails_the_run_naming_the_key() -> None:
    def refuse(value: Any, write: Any) -> Any:
        raise TypeError("cannot fold")

    workflow = (
        sg.WorkflowBuilder(start=go, reducers={"notes": refuse})
        .add_fan_out(go, [writer("a", 1), writer("b", 2)])
        .add_fan_in(["a", "b"], read)
        .build()
    )
    with pytest.raises(sg.WorkflowRunError, match=r"reducer .*refuse of state key 'notes' raised"):
        await workflow.run(0)


def test_union_and_bad_reducers() -> None:
    assert sg.union({1}, {2}) == {1, 2}
    assert sg.union([1, 2], [2, 3]) == [1, 2, 3]
    assert sg.union({"a": 1}, {"b": 2}) == {"a": 1, "b": 2}
    with pytest.raises(TypeError, match="union of a set and a list"):
        sg.union({1}, [2])
    with pytest.raises(sg.WorkflowDefinitionError, match="the reducer of 'k' must be callable"):
        sg.WorkflowBuilder(start=go, reducers={"k": 3})  # type: ignore[dict-item]
