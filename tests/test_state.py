"""Shared state (design §1.6): isolation within a superstep, barrier commit,
conflicts named, failed supersteps discarded, no aliasing."""

from __future__ import annotations

import operator
import threading
from typing import Any

import pytest

import stepgraph as sg
from stepgraph._core import RequestId
from tests.conftest import warnings


@sg.executor(id="go")
async def go(n: int) -> int:
    return n


def writer(eid: str, key: str, value: Any) -> sg.FunctionExecutor:
    async def write(n: int, ctx: sg.WorkflowContext[int, Any]) -> None:
        before = ctx.state.get(key)
        ctx.state.set(key, value)
        await ctx.yield_output((eid, "before", before, "own", ctx.state.get(key)))
        await ctx.send_message(n)

    return sg.executor(id=eid)(write)


async def test_writes_are_invisible_to_others_until_the_barrier() -> None:
    a = writer("a", "k", "from-a")

    @sg.executor(id="b")
    async def b(n: int, ctx: sg.WorkflowContext[int, Any]) -> None:
        await ctx.yield_output(("b", "sees", ctx.state.get("k")))
        await ctx.send_message(n)

    @sg.executor(id="reader")
    async def reader(n: int, ctx: sg.WorkflowContext[sg.Never, Any]) -> None:
        await ctx.yield_output(("reader", ctx.state.get("k"), "k" in ctx.state))

    workflow = (
        sg.WorkflowBuilder(start=go)
        .add_fan_out(go, [a, b])
        .add_edge(a, reader)
        .add_edge(b, reader)
        .build()
    )
    result = await workflow.run(1)
    assert ("a", "before", None, "own", "from-a") in result.outputs
    assert ("b", "sees", None) in result.outputs  # same superstep: not yet committed
    assert result.outputs.count(("reader", "from-a", True)) == 2


async def test_conflicting_writes_last_in_schedule_wins_and_are_named() -> None:
    a, b = writer("a", "k", "A"), writer("b", "k", "B")

    @sg.executor(id="reader")
    async def reader(n: list[int], ctx: sg.WorkflowContext[sg.Never, Any]) -> None:
        await ctx.yield_output(ctx.state.get("k"))

    workflow = (
        sg.WorkflowBuilder(start=go).add_fan_out(go, [a, b]).add_fan_in([a, b], reader).build()
    )
    result = await workflow.run(1)
    assert result.outputs[-1] == "B"
    [message] = warnings(result.events)
    assert "'k'" in message and "'a'" in message and "'b'" in message
    assert "'b' wins" in message


async def test_conflicting_writes_fail_in_strict_mode() -> None:
    a, b = writer("a", "k", "A"), writer("b", "k", "B")
    workflow = sg.WorkflowBuilder(start=go, strict=True).add_fan_out(go, [a, b]).build()
    with pytest.raises(sg.StateConflictError) as raised:
        await workflow.run(1)
    assert raised.value.key == "k" and raised.value.writers == ("a", "b")
    assert "'k'" in str(raised.value) and "'a'" in str(raised.value)


async def test_delete_counts_as_a_write_and_commits() -> None:
    @sg.executor(id="setter")
    async def setter(n: int, ctx: sg.WorkflowContext[int]) -> None:
        ctx.state.set("gone", 1)
        ctx.state.set("kept", 2)
        await ctx.send_message(n)

    @sg.executor(id="deleter")
    async def deleter(n: int, ctx: sg.WorkflowContext[int]) -> None:
        ctx.state.delete("gone")
        assert "gone" not in ctx.state and ctx.state.get("gone", "dflt") == "dflt"
        assert list(ctx.state.keys()) == ["kept"]
        await ctx.send_message(n)

    @sg.executor(id="reader")
    async def reader(n: int, ctx: sg.WorkflowContext[sg.Never, Any]) -> None:
        await ctx.yield_output(("gone" in ctx.state, ctx.state.get("kept")))

    workflow = sg.WorkflowBuilder(start=setter).add_chain([setter, deleter, reader]).build()
    assert (await workflow.run(1)).outputs == [(False, 2)]


async def test_failed_superstep_commits_no_writes() -> None:
    """A failed continuation commits nothing to the run it went on from: the
    run waiting for an answer, answered again, goes on from the state it
    waited with — neither the failed superstep's writes nor those of the
    barrier before it — and the failed superstep's messages were never
    delivered."""
    delivered: list[Any] = []

    class Asker(sg.Executor):
        @sg.handler
        async def on(self, n: int, ctx: sg.WorkflowContext[int]) -> None:
            ctx.state.set("k", "asked")
            await ctx.request_info("go on?", bool)

        @sg.response_handler
        async def answered(
            self, question: str, yes: bool, ctx: sg.WorkflowContext[int, Any]
        ) -> None:
            await ctx.yield_output(ctx.state.get("k"))
            ctx.state.set("k", "answered")  # (committed at the barrier before the failure)
            await ctx.send_message(1)

    @sg.executor(id="ok")
    async def ok(n: int, ctx: sg.WorkflowContext[int]) -> None:
        ctx.state.set("k", "ok")
        ctx.state.set("new", n)
        await ctx.send_message(n)

    @sg.executor(id="bad")
    async def bad(n: int, ctx: sg.WorkflowContext[int]) -> None:
        ctx.state.set("k", "bad")
        ctx.state.delete("k")
        if n == 1 and not delivered:
            raise RuntimeError("fail")
        await ctx.send_message(n)

    @sg.executor(id="check")
    async def check(n: int, ctx: sg.WorkflowContext[sg.Never, Any]) -> None:
        delivered.append((n, ctx.state.get("k"), ctx.state.get("new")))

    asker = Asker("asker")
    workflow = (
        sg.WorkflowBuilder(start=asker)
        .add_fan_out(asker, [ok, bad])
        .add_edge(ok, check)
        .add_edge(bad, check)
        .build()
    )
    first = await workflow.run(1)
    [request] = first.pending_requests
    with pytest.raises(sg.WorkflowRunError, match="'bad'"):
        await workflow.run(responses={request.request_id: True})
    assert delivered == []
    delivered.append("the fault is gone")
    done = await workflow.run(responses={request.request_id: True})
    assert done.outputs == ["asked"]  # (the first try saw the same)
    # ok's writes, then bad's delete (later in schedule order) of this try only.
    assert delivered[1:] == [(1, None, 1), (1, None, 1)]


async def test_values_are_not_aliased() -> None:
    @sg.executor(id="first")
    async def first(n: int, ctx: sg.WorkflowContext[int]) -> None:
        items = [1]
        ctx.state.set("items", items)
        items.append(2)  # after set: must not change the write
        view = ctx.state.get("items")
        view.append(3)  # mutating a read must not change the state
        assert ctx.state.get("items") == [1]
        await ctx.send_message(n)

    @sg.executor(id="second")
    async def second(n: int, ctx: sg.WorkflowContext[sg.Never, Any]) -> None:
        got = ctx.state.get("items")
        got.append(99)
        await ctx.yield_output(ctx.state.get("items"))

    workflow = sg.WorkflowBuilder(start=first).add_edge(first, second).build()
    assert (await workflow.run(1)).outputs == [[1]]


async def test_state_keys_must_be_strings() -> None:
    @sg.executor(id="bad_key")
    async def bad_key(n: int, ctx: sg.WorkflowContext) -> None:
        ctx.state.set(1, "x")  # type: ignore[arg-type]

    with pytest.raises(sg.WorkflowRunError) as raised:
        await sg.WorkflowBuilder(start=bad_key).build().run(1)
    assert "keys must be str" in str(raised.value.__cause__)


async def test_a_value_that_cannot_be_copied_is_refused_naming_its_key() -> None:
    deep: list[Any] = []
    for _ in range(5000):  # past the recursion limit of a copy
        deep = [deep]

    @sg.executor(id="keep")
    async def keep(name: str, ctx: sg.WorkflowContext) -> None:
        value = threading.Lock() if name == "lock" else deep
        ctx.state.set(name, value)

    workflow = sg.WorkflowBuilder(start=keep, reducers={"deep": operator.add}).build()
    for key, kind, cause in (
        ("lock", "_thread.lock", TypeError),
        ("deep", "builtins.list", RecursionError),
    ):
        with pytest.raises(sg.WorkflowRunError) as raised:
            await workflow.run(key)
        error = raised.value.__cause__
        assert isinstance(error, TypeError) and isinstance(error.__cause__, cause)
        assert f"cannot write shared-state key {key!r}" in str(error)
        assert f"its value, a {kind}, cannot be copied" in str(error)
        assert raised.value.executor_id == "keep"


async def test_state_is_fresh_per_run() -> None:
    @sg.executor(id="count")
    async def count(n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        value = ctx.state.get("n", 0) + 1
        ctx.state.set("n", value)
        await ctx.yield_output(value)

    workflow = sg.WorkflowBuilder(start=count).build()
    assert (await workflow.run(1)).outputs == [1]
    assert (await workflow.run(1)).outputs == [1]


async def test_a_request_id_is_a_state_key_like_any_str() -> None:
    # ctx.request_info returns the request's id as a str (a RequestId, also
    # awaitable); used as a state key, it was refused: 'shared-state keys must
    # be str, not RequestId'.
    class Asker(sg.Executor):
        @sg.handler
        def ask(self, question: str, ctx: sg.WorkflowContext) -> None:
            request_id = ctx.request_info(question, str, request_id="q1")
            ctx.state.set(request_id, question)
            again = ctx.request_info(question, str, request_id=RequestId("q2"))
            assert again == "q2" and type(again) is RequestId
            assert ctx.state.get(request_id) == question and list(ctx.state) == ["q1"]
            assert all(type(key) is str for key in ctx.state)

        @sg.response_handler
        def answered(
            self, question: str, answer: str, ctx: sg.WorkflowContext[sg.Never, Any]
        ) -> None:
            ctx.yield_output((ctx.state.get("q1"), answer))

    store = sg.MemoryCheckpointStore()
    workflow = sg.WorkflowBuilder(start=Asker("asker"), checkpoints=store).build()
    first = await workflow.run("why?")
    assert first.status is sg.RunStatus.IDLE_WITH_PENDING_REQUESTS
    # (a RequestId given as request_id= is stored as the plain str it is)
    assert [type(p.request_id) for p in first.pending_requests] == [str, str]
    done = await workflow.run(
        responses={"q1": "because", "q2": "-"}, checkpoint=first.last_checkpoint
    )
    assert done.outputs == [("why?", "because"), ("why?", "-")]
