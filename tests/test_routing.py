"""Edges and routing: conditions, fan-out, fan-in, switch, multi-select,
explicit targets, and reporting of undeliverable messages (design §1.12)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import pytest

import stepgraph as sg
from tests.conftest import warnings


def sink(eid: str) -> sg.FunctionExecutor:
    async def collect(message: Any, ctx: sg.WorkflowContext[sg.Never, Any]) -> None:
        await ctx.yield_output((eid, message))

    return sg.executor(id=eid)(collect)


@sg.executor(id="src")
async def src(items: list[Any], ctx: sg.WorkflowContext[Any]) -> None:
    for item in items:
        await ctx.send_message(item)


async def test_conditions_sync_and_async() -> None:
    async def is_big(n: int) -> bool:
        await asyncio.sleep(0)
        return n > 10

    small, big = sink("small"), sink("big")
    workflow = (
        sg.WorkflowBuilder(start=src)
        .add_edge(src, small, condition=lambda n: n <= 10)
        .add_edge(src, big, condition=is_big)
        .build()
    )
    result = await workflow.run([5, 50, 7])
    assert result.outputs == [("small", 5), ("small", 7), ("big", 50)]
    assert warnings(result.events) == []


async def test_condition_declining_everything_is_not_reported() -> None:
    workflow = sg.WorkflowBuilder(start=src, strict=True).add_edge(
        src, sink("t"), condition=lambda n: False
    )
    result = await workflow.build().run([1])
    assert result.outputs == [] and warnings(result.events) == []


async def test_raising_condition_fails_the_run() -> None:
    def bad(n: int) -> bool:
        raise KeyError("oops")

    workflow = sg.WorkflowBuilder(start=src).add_edge(src, sink("t"), condition=bad).build()
    with pytest.raises(sg.RoutingError, match=r"condition of edge src -> t raised KeyError"):
        await workflow.run([1])


async def test_a_condition_or_case_that_returns_none_fails_the_run() -> None:
    # (a forgotten return declined every message, and the run ended idle
    # with nothing said)
    def forgot(n: int) -> bool:
        n > 0  # noqa: B015

    async def forgot_too(n: int) -> bool | None:
        return None

    for condition in (forgot, forgot_too):
        workflow = sg.WorkflowBuilder(start=src).add_edge(src, sink("t"), condition=condition)
        with pytest.raises(
            sg.RoutingError, match=r"condition of edge src -> t returned None for an int"
        ):
            await workflow.build().run([1])
    switch = sg.WorkflowBuilder(start=src).add_switch(
        src, [sg.Case(forgot, sink("a")), sg.Default(sink("b"))]
    )
    with pytest.raises(
        sg.RoutingError, match=r"case predicate of switch .* returned None"
    ) as raised:
        await switch.build().run([1])
    assert raised.value.executor_id == "src" and "is a return missing?" in str(raised.value)
    # Other values keep their truth: an empty list declines, a full one routes.
    truthy = sg.WorkflowBuilder(start=src).add_edge(src, sink("t"), condition=lambda n: [n] * n)
    assert (await truthy.build().run([0, 2])).outputs == [("t", 2)]


async def test_fan_in_waits_for_every_source_across_supersteps() -> None:
    @sg.executor(id="quick")
    async def quick(n: int) -> str:
        return f"quick{n}"

    @sg.executor(id="hop")
    async def hop(n: int) -> int:
        return n

    @sg.executor(id="late")
    async def late(n: int) -> str:
        return f"late{n}"

    @sg.executor(id="start")
    async def start(n: int) -> int:
        return n

    join = sink("join")
    workflow = (
        sg.WorkflowBuilder(start=start)
        .add_fan_out(start, [late, hop, quick])
        .add_edge(hop, late)  # late sends twice: in superstep 2 and 3
        .add_fan_in([quick, late], join)
        .build()
    )
    result = await workflow.run(1)
    # Superstep 2: quick and late both send, so the list completes at once.
    # Superstep 3: late sends again; quick never does: it stays buffered.
    assert result.outputs == [("join", ["quick1", "late1"])]
    delivered = [
        e.superstep
        for e in result.events
        if e.kind == "executor_invoked" and e.executor_id == "join"
    ]
    assert delivered == [3]
    [message] = warnings(result.events)
    assert "went idle while fan_in quick, late -> join held 1 message(s)" in message
    assert "waiting for ['quick']" in message


async def test_fan_in_keeps_source_order_not_arrival_order() -> None:
    async def slow(n: int) -> str:
        await asyncio.sleep(0.02)
        return "first"

    async def fast(n: int) -> str:
        return "second"

    first, second = sg.executor(id="first")(slow), sg.executor(id="second")(fast)

    @sg.executor(id="go")
    async def go(n: int) -> int:
        return n

    join = sink("join")
    workflow = (
        sg.WorkflowBuilder(start=go)
        .add_fan_out(go, [first, second])
        .add_fan_in([first, second], join)
        .build()
    )
    assert (await workflow.run(1)).outputs == [("join", ["first", "second"])]


async def test_fan_in_delivers_everything_each_source_sent_in_the_superstep() -> None:
    # Two sources each send two strings in one superstep: the list holds all
    # four, in source order then send order (it used to fire at b's first
    # message and lose b2 to a round that never came).
    @sg.executor(id="go")
    async def go(n: int) -> int:
        return n

    def twice(name: str) -> sg.FunctionExecutor:
        async def send(n: int, ctx: sg.WorkflowContext[str]) -> None:
            await ctx.send_message(f"{name}1")
            await ctx.send_message(f"{name}2")

        return sg.executor(id=name)(send)

    a, b, join = twice("a"), twice("b"), sink("join")
    workflow = (
        sg.WorkflowBuilder(start=go, strict=True)
        .add_fan_out(go, [a, b])
        .add_fan_in([a, b], join)
        .build()
    )
    result = await workflow.run(1)
    assert result.outputs == [("join", ["a1", "a2", "b1", "b2"])]
    assert warnings(result.events) == []


async def test_fan_in_list_follows_direct_messages_to_the_same_target() -> None:
    @sg.executor(id="go")
    async def go(n: int) -> int:
        return n

    def says(name: str) -> sg.FunctionExecutor:
        async def say(n: int) -> str:
            return f"from {name}"

        return sg.executor(id=name)(say)

    a, b, c, join = says("a"), says("b"), says("c"), sink("join")
    workflow = (
        sg.WorkflowBuilder(start=go)
        .add_fan_out(go, [a, b, c])
        .add_fan_in([a, b], join)
        .add_edge(c, join)  # c's message goes straight to join, in the same superstep
        .build()
    )
    result = await workflow.run(1)
    assert result.outputs == [("join", "from c"), ("join", ["from a", "from b"])]


async def test_fan_in_still_waiting_at_the_end_fails_when_strict() -> None:
    @sg.executor(id="go")
    async def go(n: int) -> int:
        return n

    @sg.executor(id="talks")
    async def talks(n: int) -> str:
        return "said"

    @sg.executor(id="silent")
    async def silent(n: int, ctx: sg.WorkflowContext[str]) -> None:
        pass

    join = sink("join")
    builder = (
        sg.WorkflowBuilder(start=go, strict=True)
        .add_fan_out(go, [talks, silent])
        .add_fan_in([talks, silent], join)
    )
    events: list[sg.Event] = []
    with pytest.raises(sg.RoutingError, match=r"still waiting for \['silent'\]") as raised:
        async for event in builder.build().stream(1):
            events.append(event)
    assert raised.value.executor_id == "join"
    assert [e.kind for e in events[-2:]] == ["failed", "status"]
    assert events[-1].status is sg.RunStatus.FAILED  # type: ignore[attr-defined]


async def test_fan_in_waiting_for_an_answer_is_not_reported() -> None:
    # The run pauses for a human while the fan-in holds one source's message:
    # the buffer waits in the run state (and checkpoints) for the answer.
    class Asker(sg.Executor):
        @sg.handler
        async def ask(self, n: int, ctx: sg.WorkflowContext[str]) -> None:
            await ctx.request_info("ok?", bool)

        @sg.response_handler
        async def answered(self, request: str, ok: bool, ctx: sg.WorkflowContext[str]) -> None:
            await ctx.send_message(f"asker says {ok}")

    @sg.executor(id="go")
    async def go(n: int) -> int:
        return n

    @sg.executor(id="quick")
    async def quick(n: int) -> str:
        return "quick"

    join = sink("join")
    workflow = (
        sg.WorkflowBuilder(start=go, strict=True)
        .add_fan_out(go, [quick, Asker("asker")])
        .add_fan_in([quick, "asker"], join)
        .build()
    )
    first = await workflow.run(1)
    assert first.status is sg.RunStatus.IDLE_WITH_PENDING_REQUESTS
    assert warnings(first.events) == []
    [request] = first.pending_requests
    done = await workflow.run(responses={request.request_id: True})
    assert done.outputs == [("join", ["quick", "asker says True"])]


async def test_switch_picks_the_first_matching_case_or_default() -> None:
    neg, small, other = sink("neg"), sink("small"), sink("other")
    workflow = (
        sg.WorkflowBuilder(start=src)
        .add_switch(
            src,
            [
                sg.Case(lambda n: n < 0, neg),
                sg.Case(lambda n: n < 10, small),  # also true for negatives: first wins
                sg.Default(other),
            ],
        )
        .build()
    )
    result = await workflow.run([-1, 5, 50])
    assert result.outputs == [("neg", -1), ("small", 5), ("other", 50)]


async def test_switch_without_match_is_reported() -> None:
    workflow = sg.WorkflowBuilder(start=src).add_switch(
        src, [sg.Case(lambda n: n < 0, sink("neg"))]
    )
    result = await workflow.build().run([5])
    [message] = warnings(result.events)
    assert "no case of switch src -> neg matched" in message


async def test_raising_switch_predicate_fails_the_run() -> None:
    workflow = (
        sg.WorkflowBuilder(start=src)
        .add_switch(src, [sg.Case(lambda n: 1 / 0, sink("a")), sg.Default(sink("b"))])
        .build()
    )
    with pytest.raises(sg.RoutingError, match="predicate of switch.*ZeroDivisionError") as raised:
        await workflow.run([1])
    assert isinstance(raised.value.__cause__, ZeroDivisionError)
    assert raised.value.superstep == 1 and raised.value.executor_id == "src"
    assert str(raised.value).endswith("(at the barrier after superstep 1)")


async def test_multi_select() -> None:
    a, b, c = sink("a"), sink("b"), sink("c")

    def pick(n: int, targets: list[str]) -> list[str]:
        assert targets == ["a", "b", "c"]
        return ["c", "a"] if n % 2 else []

    workflow = sg.WorkflowBuilder(start=src).add_multi_select(src, [a, b, c], pick).build()
    result = await workflow.run([1, 2])
    assert sorted(result.outputs) == [("a", 1), ("c", 1)]
    assert warnings(result.events) == []


async def test_multi_select_unknown_target_is_an_error() -> None:
    workflow = (
        sg.WorkflowBuilder(start=src)
        .add_multi_select(src, [sink("a")], lambda n, targets: ["nope"])
        .build()
    )
    with pytest.raises(sg.RoutingError, match=r"unknown target\(s\) \['nope'\]"):
        await workflow.run([1])


async def test_explicit_target() -> None:
    @sg.executor(id="router")
    async def router(n: int, ctx: sg.WorkflowContext[int]) -> None:
        await ctx.send_message(n, target="b")

    a, b = sink("a"), sink("b")
    workflow = sg.WorkflowBuilder(start=router).add_fan_out(router, [a, b]).build()
    assert (await workflow.run(1)).outputs == [("b", 1)]


async def test_explicit_target_without_edge_is_reported() -> None:
    @sg.executor(id="router")
    async def router(n: int, ctx: sg.WorkflowContext[int]) -> None:
        await ctx.send_message(n, target="c")

    workflow = sg.WorkflowBuilder(start=router).add_edge(router, sink("a")).add_executor(sink("c"))
    # "c" is registered but unreachable: build refuses it.
    with pytest.raises(sg.WorkflowDefinitionError, match="cannot be reached"):
        workflow.build()
    ok = sg.WorkflowBuilder(start=router).add_edge(router, sink("a")).add_edge(router, sink("c"))
    ok_result = await ok.build().run(1)
    assert ok_result.outputs == [("c", 1)]


async def test_unknown_explicit_target_fails_the_handler() -> None:
    @sg.executor(id="router")
    async def router(n: int, ctx: sg.WorkflowContext[int]) -> None:
        await ctx.send_message(n, target="nowhere")

    workflow = sg.WorkflowBuilder(start=router).add_edge(router, sink("a")).build()
    with pytest.raises(sg.WorkflowRunError) as raised:
        await workflow.run(1)
    assert "unknown target 'nowhere'" in str(raised.value)
    assert isinstance(raised.value.__cause__, sg.RoutingError)


async def test_message_no_target_accepts_is_reported_or_fails_when_strict() -> None:
    @sg.executor(id="ints")
    async def ints(n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        await ctx.yield_output(n)

    for strict in (False, True):
        workflow = sg.WorkflowBuilder(start=src, strict=strict).add_edge(src, ints).build()
        if strict:
            with pytest.raises(sg.RoutingError, match="a str sent by 'src'.*'ints' has no handler"):
                await workflow.run([1, "x"])
        else:
            result = await workflow.run([1, "x"])
            assert result.outputs == [1]
            [message] = warnings(result.events)
            assert "a str sent by 'src' in superstep 1 was not delivered" in message


async def test_message_from_executor_without_edges_is_reported() -> None:
    @sg.executor(id="lonely")
    async def lonely(n: int) -> int:
        return n

    result = await sg.WorkflowBuilder(start=lonely).build().run(1)
    assert warnings(result.events) == [
        "an int sent by 'lonely' in superstep 1 was not delivered: 'lonely' has no outgoing edges"
    ]


async def test_fan_out_delivers_by_type_and_one_object_to_all() -> None:
    received: list[Any] = []

    @sg.executor(id="ints")
    async def ints(n: int) -> None:
        received.append(("ints", n))

    @sg.executor(id="lists")
    async def lists(items: list[int]) -> None:
        received.append(("lists", items))

    @sg.executor(id="lists2")
    async def lists2(items: list[int]) -> None:
        received.append(("lists2", items))

    payload = [1, 2]
    workflow = sg.WorkflowBuilder(start=src).add_fan_out(src, [ints, lists, lists2]).build()
    result = await workflow.run([3, payload])
    assert warnings(result.events) == []
    assert ("ints", 3) in received
    shared = [m for name, m in received if name.startswith("lists")]
    assert shared[0] is payload and shared[1] is payload  # no copies (design §1.13)


class Job(TypedDict):
    name: str
    n: int
    tag: NotRequired[str]


async def test_typeddict_messages_route_check_and_resume(tmp_path: Path) -> None:
    """A TypedDict message is a dict of its keys: it goes to the handler of
    its TypedDict (before one of plain dict), a dict that does not fit goes
    elsewhere, and its checkpoints resume (it was a TypeError at the first
    delivery: TypedDicts refuse isinstance)."""

    class Worker(sg.Executor):
        @sg.handler
        async def job(self, job: Job, ctx: sg.WorkflowContext[Job, str]) -> None:
            await ctx.yield_output(f"job {job['name']} {job['n']} {job.get('tag')}")
            if job["n"] < 2:
                await ctx.send_message({"name": job["name"], "n": job["n"] + 1})

        @sg.handler
        async def other(self, d: dict[str, Any], ctx: sg.WorkflowContext[Job, str]) -> None:
            await ctx.yield_output(f"dict {sorted(d)}")

    store = sg.SqliteCheckpointStore(tmp_path / "runs.sqlite")
    workflow = sg.WorkflowBuilder(start=Worker("w"), checkpoints=store).add_edge("w", "w").build()
    done = await workflow.run({"name": "x", "n": 0, "tag": "t"})
    assert done.outputs == ["job x 0 t", "job x 1 None", "job x 2 None"]
    assert (await workflow.run({"name": "x", "n": "0"})).outputs == ["dict ['n', 'name']"]
    infos = await store.list(done.run_id)
    again = await workflow.run(checkpoint=infos[1].id)
    assert again.outputs == ["job x 1 None", "job x 2 None"]
    store.close()
