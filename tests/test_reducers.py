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


async def test_reading_a_key_folded_in_place_leaves_its_writes_as_written() -> None:
    @sg.executor(id="writer")
    async def writer(n: int, ctx: sg.WorkflowContext[int, Any]) -> None:
        ctx.state.set("items", [n])
        ctx.state.set("items", [n + 100])
        await ctx.yield_output(ctx.state.get("items"))  # folds with an in-place reducer
        await ctx.send_message(n)

    @sg.executor(id="reader")
    async def reader(n: int, ctx: sg.WorkflowContext[sg.Never, Any]) -> None:
        await ctx.yield_output(ctx.state.get("items"))

    workflow = (
        sg.WorkflowBuilder(start=writer, reducers={"items": operator.iadd})
        .add_edge(writer, reader)
        .build()
    )
    assert (await workflow.run(1)).outputs == [[1, 101], [1, 101]]


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


def test_union_keeps_each_list_item_once_in_first_occurrence_order() -> None:
    assert sg.union([1], [2, 2]) == [1, 2]
    assert sg.union([1, 1, 2], [2, 3, 3]) == [1, 2, 3]
    assert sg.union([3, 1], [1, 2, 3, 0]) == [3, 1, 2, 0]
    # Unhashable items are compared by equality, also against hashable ones.
    assert sg.union([[1], {"a": 1}], [[1], [2], {"a": 1}, [2]]) == [[1], {"a": 1}, [2]]
    assert sg.union([1, [1]], [1, [1], 2, (1,)]) == [1, [1], 2, (1,)]


def _listing(values: dict[str, list[Any]]) -> sg.Workflow:
    """Each executor of ``values`` writes its lists to ``items`` (reduced by
    union) in one superstep and yields what it reads back; ``read`` yields the
    committed value."""

    def writing(name: str, lists: list[Any]) -> sg.FunctionExecutor:
        async def write(n: int, ctx: sg.WorkflowContext[int, Any]) -> None:
            for items in lists:
                ctx.state.set("items", items)
            await ctx.yield_output(ctx.state.get("items"))
            await ctx.send_message(n)

        return sg.executor(id=name)(write)

    writers = [writing(name, lists) for name, lists in values.items()]

    @sg.executor(id="read")
    async def read_items(ns: list[int], ctx: sg.WorkflowContext[sg.Never, Any]) -> None:
        await ctx.yield_output(ctx.state.get("items"))

    return (
        sg.WorkflowBuilder(start=go, reducers={"items": sg.union})
        .add_fan_out(go, writers)
        .add_fan_in(writers, read_items)
        .build()
    )


async def test_union_folds_parallel_list_writes_without_repeats() -> None:
    result = await _listing({"a": [[1, 1, 2]], "b": [[2, 3, 3]]}).run(0)
    assert result.outputs == [[1, 2], [2, 3], [1, 2, 3]]


async def test_union_drops_repeats_from_the_first_write_to_a_missing_key() -> None:
    result = await _listing({"a": [[1, 1, [0], [0]]], "b": []}).run(0)
    # The writer's own read, then the committed value: each item once.
    assert result.outputs == [[1, [0]], None, [1, [0]]]
    result = await _listing({"a": [[5, 5], [6, 5]], "b": []}).run(0)
    assert result.outputs == [[5, 6], None, [5, 6]]


async def test_a_checkpoint_of_other_reducers_is_refused_naming_reducers(
    store: sg.CheckpointStore,
) -> None:
    first = await build(store).run(0)
    other = (
        sg.WorkflowBuilder(start=go, checkpoints=store, reducers={"notes": operator.add})
        .add_fan_out(go, [writer("a", 1, 2), writer("b", 3)])
        .add_fan_in(["a", "b"], read)
        .build()
    )
    with pytest.raises(sg.CheckpointMismatchError) as raised:
        await other.run(checkpoint=first.last_checkpoint)
    assert "the executors (ids, types, handler types, maps and sub-workflows)" in str(raised.value)
    assert "the edges (kinds, sources, targets, conditions) and the state reducers" in str(
        raised.value
    )
