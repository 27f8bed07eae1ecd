"""``add_map``: a fresh worker per message, concurrently and bounded; one list
to the target, in the source's send order (design §1.15)."""

from __future__ import annotations

import asyncio
import functools
import random
from typing import Any

import pytest

import stepgraph as sg


@sg.executor(id="emit")
async def emit(count: int, ctx: sg.WorkflowContext[int]) -> None:
    for n in range(count):
        await ctx.send_message(n)


@sg.executor(id="collect")
async def collect(values: list[Any], ctx: sg.WorkflowContext[sg.Never, list[Any]]) -> None:
    await ctx.yield_output(values)


class Square(sg.Executor):
    """Records how many workers run at once; each worker sees one message."""

    active = 0
    peak = 0
    made = 0

    def __init__(self, id: str) -> None:
        super().__init__(id)
        Square.made += 1
        self.calls = 0

    @sg.handler
    async def on(self, n: int, ctx: sg.WorkflowContext[int]) -> None:
        self.calls += 1
        assert self.calls == 1, "a worker handles exactly one message"
        Square.active += 1
        Square.peak = max(Square.peak, Square.active)
        await asyncio.sleep(random.random() / 1000)
        Square.active -= 1
        await ctx.send_message(n * n)


def squares(limit: int | None = None, store: sg.CheckpointStore | None = None) -> sg.Workflow:
    return (
        sg.WorkflowBuilder(start=emit, checkpoints=store)
        .add_map(emit, Square, id="squares", to=collect, max_concurrency=limit)
        .build()
    )


async def test_a_thousand_items_in_order_within_the_bound() -> None:
    workflow = squares(limit=7)
    Square.peak, made_before = 0, Square.made
    result = await workflow.run(1_000)
    assert result.outputs == [[n * n for n in range(1_000)]]
    assert Square.peak == 7  # at most seven at once, and seven did run at once
    assert Square.made - made_before == 1_000  # a worker each
    invoked = [e for e in result.events if e.kind == "executor_invoked"]
    assert sum(1 for e in invoked if e.executor_id == "squares") == 1_000
    [started] = [e for e in result.events if e.kind == "superstep_started" and e.superstep == 2]
    assert started.executors == ("squares",)  # type: ignore[attr-defined]


async def test_unbounded_items_all_run_at_once() -> None:
    Square.peak = 0
    await squares().run(50)
    assert Square.peak == 50


async def test_a_failing_item_is_retried_alone_then_fails_the_superstep() -> None:
    tries: dict[int, int] = {}

    @sg.executor(id="flaky", retry=sg.RetryPolicy(attempts=2))
    async def flaky(n: int, ctx: sg.WorkflowContext[int]) -> None:
        tries[n] = tries.get(n, 0) + 1
        if n == 3 and tries[n] == 1:
            raise ConnectionError("once")
        if n == 5:
            raise ValueError("always")
        await ctx.send_message(n)

    def build(failing: bool) -> sg.Workflow:
        source = emit if not failing else sg.executor(id="emit")(emit.func)
        return (
            sg.WorkflowBuilder(start=source)
            .add_map(source, flaky, id="flaky_map", to=collect)
            .build()
        )

    result = await build(False).run(5)  # items 0..4: item 3 fails once, then succeeds
    assert result.outputs == [[0, 1, 2, 3, 4]]
    [warned] = [e for e in result.events if isinstance(e, sg.WarningEvent)]
    assert warned.message.startswith("map 'flaky_map'[3]: attempt 1/2 failed with ConnectionError")
    assert tries == {0: 1, 1: 1, 2: 1, 3: 2, 4: 1}  # only item 3 was tried again
    with pytest.raises(sg.WorkflowRunError) as raised:
        await build(True).run(6)
    assert str(raised.value) == (  # which item failed, and on what
        "executor 'flaky_map' failed in superstep 2: ValueError: always "
        "(item 5 of map 'flaky_map': 5)"
    )


async def test_item_state_writes_fold_in_item_order_and_conflicts_name_items() -> None:
    @sg.executor(id="note")
    async def note(n: int, ctx: sg.WorkflowContext[int]) -> None:
        await asyncio.sleep((10 - n) / 1000)  # later items finish first
        ctx.state.set("notes", [n])
        ctx.state.set("last", n)
        await ctx.send_message(n)

    @sg.executor(id="read")
    async def read(values: list[int], ctx: sg.WorkflowContext[sg.Never, Any]) -> None:
        await ctx.yield_output((ctx.state.get("notes"), ctx.state.get("last")))

    workflow = (
        sg.WorkflowBuilder(start=emit, reducers={"notes": lambda a, b: a + b})
        .add_map(emit, note, id="notes_map", to=read)
        .build()
    )
    result = await workflow.run(4)
    assert result.outputs == [([0, 1, 2, 3], 3)]
    warned = [e.message for e in result.events if isinstance(e, sg.WarningEvent)]
    assert warned == [  # one warning for the key, however many items wrote it
        "state key 'last' was written by 4 executors ('notes_map[0]', 'notes_map[1]', "
        "'notes_map[2]', 'notes_map[3]') in superstep 2; 'notes_map[3]' wins (later in "
        "schedule order)"
    ]
    many = await workflow.run(40)
    [warning] = [e.message for e in many.events if isinstance(e, sg.WarningEvent)]
    assert (
        "40 executors ('notes_map[0]', 'notes_map[1]', 'notes_map[2]', ..., 'notes_map[39]')"
        in warning
    )


async def test_a_map_resumes_from_a_checkpoint(store: sg.CheckpointStore) -> None:
    first = await squares(store=store).run(6)
    infos = await store.list(first.run_id)
    holding = infos[1]  # after superstep 1: six messages wait for the map
    assert len((await squares(store=store).get_state(holding.id)).messages["squares"]) == 6
    resumed = await squares(store=store).run(checkpoint=holding.id)
    assert resumed.outputs == first.outputs == [[0, 1, 4, 9, 16, 25]]


class Shout(sg.Executor):
    """A worker that yields an output of its own as well as sending."""

    @sg.handler
    async def on(self, n: int, ctx: sg.WorkflowContext[int, str]) -> None:
        await asyncio.sleep((5 - n) / 1000)  # the last items finish first
        await ctx.yield_output(f"item {n}")
        await ctx.send_message(n)


async def test_outputs_of_workers_are_kept_in_checkpoints(store: sg.CheckpointStore) -> None:
    """What a map's workers yield is an output of the run like any other:
    stored with the barrier's checkpoint (in item order), so the run's
    stored outputs and a resume from a later checkpoint agree with the run."""
    workflow = (
        sg.WorkflowBuilder(start=emit, checkpoints=store)
        .add_map(emit, Shout, id="shout", to=collect)
        .build()
    )
    first = await workflow.run(5)
    items = [f"item {n}" for n in range(5)]
    assert sorted(first.outputs[:-1]) == items and first.outputs[-1] == [0, 1, 2, 3, 4]
    infos = await store.list(first.run_id)
    assert await store.outputs(infos[2].id) == items  # after the map's superstep
    assert await store.outputs(infos[-1].id) == [*items, [0, 1, 2, 3, 4]]
    again = await workflow.run(checkpoint=infos[2].id)
    assert again.outputs == [[0, 1, 2, 3, 4]]


async def test_a_workers_events_name_its_item() -> None:
    """Items run at once and their events interleave (agents streaming):
    each event of a worker carries its item's index; other events none."""

    class Chatty(sg.Executor):
        @sg.handler
        async def on(self, n: int, ctx: sg.WorkflowContext[int, int]) -> None:
            for part in range(3):
                await ctx.add_event(sg.UserEvent(kind="part", data=(n, part)))
                await asyncio.sleep(0.001 * (3 - n))  # later items overtake earlier ones
            await ctx.yield_output(n)
            await ctx.send_message(n)

    workflow = sg.WorkflowBuilder(start=emit).add_map(emit, Chatty, id="chatty", to=collect).build()
    seen = [event async for event in workflow.stream(3)]
    parts = [e for e in seen if e.kind == "part"]
    assert [e.item for e in parts] != sorted(e.item for e in parts)  # interleaved
    assert all(e.item == e.data[0] for e in parts)
    calls = [e for e in seen if e.kind in ("executor_invoked", "executor_completed")]
    assert sorted((e.kind, e.item) for e in calls if e.executor_id == "chatty") == [
        (kind, n) for kind in ("executor_completed", "executor_invoked") for n in range(3)
    ]
    outputs = {e.data: e.item for e in seen if e.kind == "output" and e.executor_id == "chatty"}
    assert outputs == {0: 0, 1: 1, 2: 2}
    others = [e for e in seen if e.executor_id != "chatty"]
    assert others and all(e.item is None for e in others)
    # In the JSON records (CLI --json, the server's streams): only where set.
    from stepgraph._cli._render import event_record

    assert event_record(parts[0])["item"] == parts[0].item
    assert all("item" not in event_record(e) for e in others)


class Page(sg.Executor):
    """An inner map's worker: its event says which outer and inner item it is."""

    @sg.handler
    async def on(self, pair: tuple[int, int], ctx: sg.WorkflowContext[int]) -> None:
        await asyncio.sleep(0.001 * (2 - pair[1]))  # later items overtake earlier ones
        await ctx.add_event(sg.UserEvent(kind="page", data=pair))
        await ctx.send_message(pair[1])


def pages(own: str = "docs") -> sg.Executor:
    """An outer map's worker: a sub-workflow mapping over two items of its own."""

    @sg.executor(id="split")
    async def split(n: int, ctx: sg.WorkflowContext[tuple[int, int]]) -> None:
        for j in range(2):
            await ctx.send_message((n, j))

    child = sg.WorkflowBuilder(start=split, name="doc").add_map(split, Page, id="pages", to=collect)
    return sg.WorkflowExecutor(child.build(), id=own)


async def test_a_map_in_a_mapped_sub_workflow_names_both_items() -> None:
    """A map whose worker is a sub-workflow with a map of its own: an inner
    worker's event keeps its inner item as ``item`` and names the outer one
    beside the workflow executor's id in its path (``workflow_items``); the
    child's other events name the outer item alone."""
    from stepgraph._cli._render import event_record

    nested = sg.WorkflowBuilder(start=emit).add_map(emit, pages, id="docs", to=collect).build()
    seen = [event async for event in nested.stream(3)]
    assert seen[-1].kind == "status" and seen[-1].status is sg.RunStatus.IDLE
    parts = [e for e in seen if e.kind == "page"]
    assert sorted(e.data for e in parts) == [(n, j) for n in range(3) for j in range(2)]
    for e in parts:
        outer, inner = e.data
        assert (e.workflow_path, e.workflow_items, e.item) == (("docs",), (outer,), inner)
        assert e.path == f"docs[{outer}]/pages"
        record = event_record(e)
        assert (record["workflow_items"], record["item"]) == ([outer], inner)
        assert record["path"] == f"docs[{outer}]/pages"
    # The inner workers' calls: each (outer, inner) pair once, invoked and completed.
    calls = [e for e in seen if e.executor_id == "pages" and e.kind.startswith("executor_")]
    assert sorted((e.kind, e.workflow_items, e.item) for e in calls) == [
        (kind, (n,), j) for kind in ("executor_completed", "executor_invoked")
        for n in range(3) for j in range(2)
    ]  # fmt: skip
    # The child's other events (its run's, split's, collect's): the outer item alone.
    others = [e for e in seen if e.workflow_path and e.executor_id != "pages"]
    assert {e.path for e in others if e.executor_id} == {
        f"docs[{n}]/{x}" for n in range(3) for x in ("split", "collect")
    }
    assert sorted({e.workflow_items for e in others}) == [(0,), (1,), (2,)]
    assert all(e.item is None for e in others)
    # The outer workers' own events: their item, no path.
    own = [e for e in seen if e.executor_id == "docs" and not e.workflow_path]
    assert sorted(e.item for e in own) == [0, 0, 1, 1, 2, 2]
    assert all(e.workflow_items == () and e.path == "docs" for e in own)
    assert all("workflow_items" not in event_record(e) for e in seen if not e.workflow_path)

    # Through a sub-workflow that is no map's worker: None beside its id.
    wrapper = sg.WorkflowExecutor(nested, id="wrap")
    wrapped = sg.WorkflowBuilder(start=wrapper).add_edge(wrapper, collect).build()
    result = await wrapped.run(3)
    assert result.outputs == [[[0, 1], [0, 1], [0, 1]]]
    parts = [e for e in result.events if e.kind == "page"]
    assert len(parts) == 6
    for e in parts:
        outer, inner = e.data
        assert (e.workflow_path, e.workflow_items) == (("wrap", "docs"), (None, outer))
        assert e.item == inner
        assert e.path == f"wrap/docs[{outer}]/pages"
    direct = [e for e in result.events if e.workflow_path == ("wrap",)]  # (nested's own)
    assert direct and all(e.workflow_items == () for e in direct)
    assert sorted(e.item for e in direct if e.executor_id == "docs") == [0, 0, 1, 1, 2, 2]


class Fussy(sg.Executor):
    """An inner map's worker that fails on outer item 2's inner item 1."""

    @sg.handler
    async def on(self, pair: tuple[int, int], ctx: sg.WorkflowContext[int]) -> None:
        if pair == (2, 1):
            raise ValueError("not this page")
        await ctx.send_message(pair[1])


def fussy_pages(own: str = "docs") -> sg.Executor:
    @sg.executor(id="split")
    async def split(n: int, ctx: sg.WorkflowContext[tuple[int, int]]) -> None:
        for j in range(2):
            await ctx.send_message((n, j))

    child = sg.WorkflowBuilder(start=split, name="doc").add_map(
        split, Fussy, id="pages", to=collect
    )
    return sg.WorkflowExecutor(child.build(), id=own)


async def test_a_failure_in_a_map_inside_a_mapped_sub_workflow_names_every_item() -> None:
    """The run's error spells the outer items in its path, as the events'
    paths do (it named the inner item only: 'docs/pages')."""
    nested = sg.WorkflowBuilder(start=emit).add_map(emit, fussy_pages, id="docs", to=collect)
    with pytest.raises(sg.SubworkflowError) as raised:
        await nested.build().run(3)
    error = raised.value
    assert str(error).startswith("executor 'docs[2]/pages' failed in a sub-workflow: ")
    assert "(item 1 of map 'pages': (2, 1))" in str(error)
    assert (error.path, error.items) == (("docs", "pages"), (2, None))

    # Through a sub-workflow that is no map's worker, in an outer map's item.
    @sg.executor(id="three")
    async def three(_: int, ctx: sg.WorkflowContext[int]) -> None:
        for n in range(3):
            await ctx.send_message(n)

    def wrapped() -> sg.Executor:
        inner = sg.WorkflowBuilder(start=three).add_map(three, fussy_pages, id="docs", to=collect)
        wrap = sg.WorkflowExecutor(inner.build(), id="wrap")
        return sg.WorkflowExecutor(sg.WorkflowBuilder(start=wrap).build(), id="lots")

    outer = sg.WorkflowBuilder(start=emit).add_map(emit, wrapped, id="lots", to=collect).build()
    seen: list[sg.Event] = []
    with pytest.raises(sg.SubworkflowError) as raised:
        async for event in outer.stream(1):
            seen.append(event)
    error = raised.value
    assert str(error).startswith("executor 'lots[0]/wrap/docs[2]/pages' failed in a sub-workflow")
    assert error.items == (0, None, 2, None)
    [failed] = [e for e in seen if e.kind == "failed" and not e.workflow_path]
    assert failed.error == str(error)
    # Without any map on the way, the path is as it was.
    plain = sg.WorkflowBuilder(start=sg.WorkflowExecutor(nested.build(), id="wrap")).build()
    with pytest.raises(sg.SubworkflowError, match="^executor 'wrap/docs\\[2\\]/pages' "):
        await plain.run(3)


async def test_a_mapped_sub_workflow_runs_under_the_map_s_id() -> None:
    """A worker runs under its map's id, whatever id its factory gave it: a
    ``WorkflowExecutor(child, id="other")`` as map ``docs``'s worker names
    ``docs`` in its child run's paths and in its failure — the node the
    parent has (they read 'other[0]/pages', and the failure was a plain
    WorkflowRunError wrapping the child's SubworkflowError)."""
    named = sg.WorkflowBuilder(start=emit).add_map(
        emit, functools.partial(pages, "other"), id="docs", to=collect
    )
    result = await named.build().run(2)
    assert result.outputs == [[[0, 1], [0, 1]]]
    inner = [e for e in result.events if e.workflow_path]
    assert inner and {(e.workflow_path, e.workflow_items) for e in inner} == {
        (("docs",), (0,)),
        (("docs",), (1,)),
    }
    assert sorted(e.path for e in inner if e.kind == "page") == [
        "docs[0]/pages", "docs[0]/pages", "docs[1]/pages", "docs[1]/pages"
    ]  # fmt: skip
    failing = sg.WorkflowBuilder(start=emit).add_map(
        emit, functools.partial(fussy_pages, "other"), id="docs", to=collect
    )
    seen: list[sg.Event] = []
    with pytest.raises(sg.SubworkflowError) as raised:
        async for event in failing.build().stream(3):
            seen.append(event)
    error = raised.value
    assert str(error).startswith("executor 'docs[2]/pages' failed in a sub-workflow: ")
    assert (error.executor_id, error.path, error.items) == ("docs", ("docs", "pages"), (2, None))
    assert not any("other" in e.path for e in seen)


async def test_a_worker_that_cannot_take_its_item_is_named_as_the_map() -> None:
    """A factory whose later workers handle other types than the first it
    made (which build() checked): the item's failure names the map, not the
    id the factory gave the worker ("executor 'sq' failed in superstep 2:
    MessageTypeError: executor 'other' has no handler ...")."""

    class Words(sg.Executor):
        @sg.handler
        async def on(self, text: str, ctx: sg.WorkflowContext[int]) -> None: ...

    made: list[sg.Executor] = []

    def fickle() -> sg.Executor:  # (build() makes two: its prototype, and one to compare)
        made.append(Square("other") if len(made) < 2 else Words("other"))
        return made[-1]

    workflow = sg.WorkflowBuilder(start=emit).add_map(emit, fickle, id="sq", to=collect).build()
    with pytest.raises(sg.WorkflowRunError) as raised:
        await workflow.run(1)
    assert str(raised.value) == (
        "executor 'sq' has no handler for an int (it handles str) (item 0 of map 'sq': 0)"
    )
    assert raised.value.executor_id == "sq"


async def test_a_mapped_agent_streams_under_the_map_s_id() -> None:
    """An agent made as ``writer`` by map ``drafts``'s factory: what it
    writes, and the tokens it uses, are the map's item's, as its calls are
    (its deltas named 'writer', an executor the workflow does not have)."""
    from stepgraph.testing import ScriptedModel

    @sg.executor(id="topics")
    async def topics(count: int, ctx: sg.WorkflowContext[str]) -> None:
        for n in range(count):
            await ctx.send_message(f"topic {n}")

    def writer() -> sg.Executor:
        return sg.Agent("writer", model=ScriptedModel(["a short draft"]))

    workflow = (
        sg.WorkflowBuilder(start=topics).add_map(topics, writer, id="drafts", to=collect).build()
    )
    seen = [event async for event in workflow.stream(2)]
    deltas = [e for e in seen if e.kind == "agent_delta"]
    assert deltas and {(e.executor_id, e.path) for e in deltas} == {("drafts", "drafts")}
    assert sorted({e.item for e in deltas}) == [0, 1]
    result = await workflow.run(2)
    assert result.usage is not None and set(result.usage.by_executor) == {"drafts"}

    # In a sub-workflow that a factory names "other": its tokens are the map's too.
    def drafting() -> sg.Executor:
        return sg.WorkflowExecutor(sg.WorkflowBuilder(start=writer()).build(), id="other")

    nested = sg.WorkflowBuilder(start=topics).add_map(topics, drafting, id="drafts", to=collect)
    result = await nested.build().run(2)
    assert result.usage is not None and set(result.usage.by_executor) == {"drafts/writer"}


async def test_a_mapped_agent_s_errors_name_its_item() -> None:
    """An agent made as ``writer`` by map ``drafts``'s factory names itself
    in its own error as the failure's path spells the item (``drafts[1]``),
    not as ``writer``, an executor the workflow does not have."""
    from stepgraph.testing import ScriptedModel, ScriptedReply

    @sg.executor(id="topics")
    async def topics(count: int, ctx: sg.WorkflowContext[str]) -> None:
        for n in range(count):
            await ctx.send_message(f"topic {n}")

    @sg.tool
    def again() -> str:
        return "more"

    made: list[sg.Agent] = []

    def writer() -> sg.Executor:  # (build() makes two; then item 0's, item 1's)
        loops = len(made) == 3
        replies = [ScriptedReply(tool_calls=[sg.ToolCall("c", "again", "{}")])] if loops else []
        made.append(
            sg.Agent(
                "writer", model=ScriptedModel([*replies, "a draft"]), tools=[again], max_turns=1
            )
        )
        return made[-1]

    workflow = (
        sg.WorkflowBuilder(start=topics)
        .add_map(topics, writer, id="drafts", to=collect, max_concurrency=1)
        .build()
    )
    with pytest.raises(sg.WorkflowRunError) as raised:
        await workflow.run(2)
    assert str(raised.value) == (
        "executor 'drafts' failed in superstep 2: AgentError: agent 'drafts[1]' reached "
        "max_turns=1 model calls for one input without a final answer "
        "(item 1 of map 'drafts': 'topic 1')"
    )


async def test_workers_may_not_ask_or_aim() -> None:
    class Asker(sg.Executor):
        @sg.handler
        async def on(self, n: int, ctx: sg.WorkflowContext[int]) -> None:
            await ctx.request_info("?", bool)

        @sg.response_handler
        async def answered(self, q: str, ok: bool, ctx: sg.WorkflowContext[int]) -> None: ...

    workflow = sg.WorkflowBuilder(start=emit).add_map(emit, Asker, id="ask", to=collect).build()
    with pytest.raises(sg.WorkflowRunError) as raised:
        await workflow.run(1)
    assert str(raised.value).startswith("a worker of map 'ask' opened a request (str); ")
    assert str(raised.value).endswith(" (item 0 of map 'ask': 0)")  # (which one asked)

    @sg.executor(id="aim")
    async def aim(n: int, ctx: sg.WorkflowContext[int]) -> None:
        await ctx.send_message(n, target="collect")

    aiming = sg.WorkflowBuilder(start=emit).add_map(emit, aim, id="aims", to=collect).build()
    with pytest.raises(sg.RoutingError, match="item 0 of map 'aims' sent to target 'collect'"):
        await aiming.run(1)


class ChildAsker(sg.Executor):
    @sg.handler
    async def on(self, n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        await ctx.request_info(f"ok {n}?", bool)

    @sg.response_handler
    async def answered(self, q: str, ok: bool, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        await ctx.yield_output(int(ok))


def asking_sub(intercept: bool) -> sg.WorkflowExecutor:
    child = sg.WorkflowBuilder(start=ChildAsker("asker"), name="child").build()
    return sg.WorkflowExecutor(child, id="sub", intercept_requests=intercept)


async def test_a_worker_that_would_intercept_its_childs_requests_is_refused() -> None:
    # Its SubworkflowRequests went into the map's list, where nothing could
    # answer them: the run ended with them as data and the child runs lost.
    with pytest.raises(sg.WorkflowDefinitionError) as refused:
        sg.WorkflowBuilder(start=emit).add_map(
            emit, functools.partial(asking_sub, True), id="docs", to=collect
        )
    assert str(refused.value).startswith(
        "add_map 'docs': its worker is a WorkflowExecutor with intercept_requests=True, "
    )
    assert "nothing can answer them" in str(refused.value)

    # A factory that makes an intercepting one only after the build: the
    # child's request is refused as any worker's, naming the map and item.
    made = iter([False, False])
    workflow = (
        sg.WorkflowBuilder(start=emit)
        .add_map(emit, lambda: asking_sub(next(made, True)), id="docs", to=collect)
        .build()
    )
    with pytest.raises(sg.WorkflowRunError) as raised:
        await asyncio.wait_for(workflow.run(1), 10)
    assert str(raised.value).startswith("a worker of map 'docs' opened a request (str); ")
    assert str(raised.value).endswith(" (item 0 of map 'docs': 0)")


def test_map_definitions_are_checked() -> None:
    @sg.executor(id="texts")
    async def texts(values: list[str]) -> None: ...

    with pytest.raises(sg.WorkflowDefinitionError, match=r"'texts' cannot accept .*list\[int\]"):
        sg.WorkflowBuilder(start=emit).add_map(emit, Square, id="m", to=texts).build()
    with pytest.raises(sg.WorkflowDefinitionError, match="made anew for each item"):
        sg.WorkflowBuilder(start=emit).add_map(emit, Square("x"), id="m", to=collect)
    with pytest.raises(sg.WorkflowDefinitionError, match="max_concurrency must be a positive"):
        sg.WorkflowBuilder(start=emit).add_map(emit, Square, id="m", to=collect, max_concurrency=0)
    # A map's list fanned in with other messages at its own to= (a relay does
    # it; the error only said "duplicate edge m -> collect").
    with pytest.raises(sg.WorkflowDefinitionError, match=r"map 'm' sends its list to 'collect'"):
        sg.WorkflowBuilder(start=emit).add_map(emit, Square, id="m", to=collect).add_fan_in(
            ["m", emit], collect
        ).build()


def test_a_map_is_drawn_as_one_node_marked_n() -> None:
    from stepgraph._viz import to_dot, to_mermaid

    workflow = squares()
    assert '["squares[n]"]' in to_mermaid(workflow)
    assert 'label="squares[n]", peripheries=2' in to_dot(workflow)


@pytest.mark.parametrize("limit", [True, False, 1.0, "2"])
def test_max_concurrency_must_be_a_positive_int_not_a_bool(limit: object) -> None:
    with pytest.raises(
        sg.WorkflowDefinitionError,
        match=rf"add_map 'm': max_concurrency must be a positive int or None, got {limit!r} "
        rf"\({type(limit).__name__}\)",
    ):
        sg.WorkflowBuilder(start=emit).add_map(
            emit,
            Square,
            id="m",
            to=collect,
            max_concurrency=limit,  # type: ignore[arg-type]
        )


async def test_a_failing_items_failure_names_its_item() -> None:
    @sg.executor(id="picky")
    async def picky(n: int, ctx: sg.WorkflowContext[int]) -> None:
        if n == 2:
            raise ValueError("not two")
        await ctx.send_message(n)

    workflow = sg.WorkflowBuilder(start=emit).add_map(emit, picky, id="picky", to=collect).build()
    seen: list[sg.Event] = []
    with pytest.raises(sg.WorkflowRunError, match="not two"):
        async for event in workflow.stream(4):
            seen.append(event)
    [failed] = [e for e in seen if e.kind == "executor_failed"]
    assert (failed.executor_id, failed.item) == ("picky", 2)


async def test_agents_as_workers_with_checkpoints(store: sg.CheckpointStore) -> None:
    """A map's worker is new per item and never restored, so its progress is
    not saved within the superstep (an agent saves its turns): the map runs,
    checkpointed, and a resumed superstep runs its items again whole."""
    from stepgraph.testing import ScriptedModel

    @sg.executor(id="texts")
    async def texts(words: list[str], ctx: sg.WorkflowContext[str]) -> None:
        for word in words:
            await ctx.send_message(word)

    @sg.executor(id="join")
    async def join(answers: list[sg.AgentResponse], ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.yield_output(" | ".join(a.text for a in answers))

    workflow = (
        sg.WorkflowBuilder(start=texts, checkpoints=store)
        .add_map(
            texts, lambda: sg.Agent("say", model=ScriptedModel(["hi there"])), id="say", to=join
        )
        .build()
    )
    result = await workflow.run(["a", "b", "c"])
    assert result.outputs == ["hi there | hi there | hi there"]
    assert [c.superstep for c in await store.list(result.run_id)] == [0, 1, 2, 3]


class Leaf(sg.Executor):
    @sg.handler
    async def on(self, n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        await asyncio.sleep(0.01)
        await ctx.yield_output(n * 10)


async def test_workers_sharing_one_sub_workflow_of_shared_instances() -> None:
    """Items run at once, so workers that all run one child built from shared
    instances are refused at build (they would fail at the second item) —
    unless the map runs one item at a time; either way the parent's runs
    cannot overlap. Workers that build a child each are fine."""
    child = sg.WorkflowBuilder(start=Leaf("leaf"), name="child").build()
    assert not child.concurrent

    def shared() -> sg.Executor:
        return sg.WorkflowExecutor(child, id="m")

    with pytest.raises(
        sg.WorkflowDefinitionError, match="'m': every item's worker uses .* at 'm/leaf'.*=1"
    ):
        sg.WorkflowBuilder(start=emit).add_map(emit, shared, id="m", to=collect)

    def wrapped() -> sg.Executor:  # (a child of its own, around the one shared child)
        outer = sg.WorkflowBuilder(start=shared(), name="outer").build()
        return sg.WorkflowExecutor(outer, id="m")

    with pytest.raises(sg.WorkflowDefinitionError, match="instance at 'm/m/leaf'"):
        sg.WorkflowBuilder(start=emit).add_map(emit, wrapped, id="m", to=collect)

    def registered() -> sg.Executor:  # (a fresh child whose factory wraps the shared one)
        def wrap() -> sg.Executor:
            return sg.WorkflowExecutor(child, id="x")

        outer = sg.WorkflowBuilder(start="x", name="outer").register("x", wrap).build()
        return sg.WorkflowExecutor(outer, id="m")

    with pytest.raises(sg.WorkflowDefinitionError, match="instance at 'm/x/leaf'"):
        sg.WorkflowBuilder(start=emit).add_map(emit, registered, id="m", to=collect)

    def mapping() -> sg.Executor:  # (a fresh child mapping one item at a time over it)
        outer = (
            sg.WorkflowBuilder(start=emit, name="outer")
            .add_map(emit, shared, id="inner", to=collect, max_concurrency=1)
            .build()
        )
        return sg.WorkflowExecutor(outer, id="m")

    with pytest.raises(sg.WorkflowDefinitionError, match="instance at 'm/inner/leaf'"):
        sg.WorkflowBuilder(start=emit).add_map(emit, mapping, id="m", to=collect)
    one_by_one = (
        sg.WorkflowBuilder(start=emit)
        .add_map(emit, shared, id="m", to=collect, max_concurrency=1)
        .build()
    )
    assert not one_by_one.concurrent
    assert (await one_by_one.run(3)).outputs == [[0, 10, 20]]
    # Its runs take turns, as with any shared instance: the second is refused at once.
    both = await asyncio.gather(one_by_one.run(2), one_by_one.run(2), return_exceptions=True)
    assert isinstance(both[1], sg.WorkflowBusyError) and "('m')" in str(both[1])

    def own() -> sg.Executor:
        fresh = sg.WorkflowBuilder(start=Leaf("leaf"), name="child").build()
        return sg.WorkflowExecutor(fresh, id="m")

    each = sg.WorkflowBuilder(start=emit).add_map(emit, own, id="m", to=collect).build()
    assert each.concurrent
    results = await asyncio.gather(*(each.run(3) for _ in range(3)))
    assert [r.status for r in results] == [sg.RunStatus.IDLE] * 3
