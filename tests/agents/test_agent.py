"""sg.Agent with ScriptedModel: conversations, tools in parallel, approval
across checkpoints without repeats, live deltas, structured output, usage,
retries, cancellation and errors."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pydantic
import pytest

import stepgraph as sg
from stepgraph.testing import ScriptedCall, ScriptedModel, ScriptedReply


def call(call_id: str, name: str, **arguments: Any) -> sg.ToolCall:
    return sg.ToolCall(call_id, name, json.dumps(arguments))


def agent_flow(agent: sg.Agent, store: sg.CheckpointStore | None = None) -> sg.Workflow:
    return sg.WorkflowBuilder(start=agent, checkpoints=store).build()


def plain(call_id: str) -> str:
    """A call id as the model gave it: without the run's 8 characters the
    agent adds (``t2-1a2b3c4d`` -> ``t2``; ``call_0-1a2b3c4d-2`` -> ``call_0-2``)."""
    return re.sub(r"-[0-9a-f]{8}(?=$|-)", "", call_id, count=1)


def tool_results(call: ScriptedCall) -> dict[str, str]:
    """The tool results in a model call's messages, by the model's call ids."""
    return {plain(m.tool_call_id or ""): m.content or "" for m in call.messages if m.role == "tool"}


def ids(result: sg.RunResult, *model_ids: str) -> list[str]:
    """The request ids of the model's calls in this run."""
    return [f"{m.split('-')[0]}-{result.run_id[:8]}{m[len(m.split('-')[0]) :]}" for m in model_ids]


async def test_a_text_in_an_answer_out_with_instructions_and_usage() -> None:
    model = ScriptedModel([ScriptedReply("Hello there", usage=sg.Usage(7, 3, cached_tokens=2))])
    agent = sg.Agent("greeter", model=model, instructions="Be kind.")
    result = await agent_flow(agent).run("hi")
    [answer] = result.outputs
    assert isinstance(answer, sg.AgentResponse) and answer.text == "Hello there"
    assert [m.role for m in answer.messages] == ["user", "assistant"]
    assert answer.usage == sg.Usage(7, 3, 2)
    [sent] = model.calls
    assert [(m.role, m.content) for m in sent.messages] == [("system", "Be kind."), ("user", "hi")]
    assert result.usage.by_executor == {"greeter": sg.Usage(7, 3, 2)}
    assert result.usage.total.total_tokens == 10


async def test_deltas_stream_live_and_are_not_kept() -> None:
    def build() -> sg.Workflow:
        model = ScriptedModel([ScriptedReply("one two three", delay=0.01)])
        return agent_flow(sg.Agent("talker", model=model))

    seen: list[sg.Event] = []
    async with build().stream("go") as events:
        async for event in events:
            seen.append(event)
    deltas = [e for e in seen if isinstance(e, sg.AgentDelta)]
    assert "".join(d.text for d in deltas) == "one two three"
    assert {(d.executor_id, d.turn, d.attempt) for d in deltas} == {("talker", 1, 1)}
    completed = next(i for i, e in enumerate(seen) if e.kind == "executor_completed")
    assert max(seen.index(d) for d in deltas) < completed  # while the handler ran
    quiet = await build().run("go")
    assert not [e for e in quiet.events if e.kind == "agent_delta"]
    assert quiet.outputs[0].text == "one two three"  # the same answer either way


async def test_a_conversation_carries_on_from_agent_to_agent() -> None:
    first = ScriptedModel(["draft: tea is good"])
    second = ScriptedModel(["review: agreed"])
    writer = sg.Agent("writer", model=first)
    reviewer = sg.Agent("reviewer", model=second, instructions="Review.")
    workflow = sg.WorkflowBuilder(start=writer).add_edge(writer, reviewer).build()
    result = await workflow.run("write about tea")
    [answer] = result.outputs  # only the last agent yields: the writer sends
    assert answer.text == "review: agreed"
    assert [m.content for m in second.calls[0].messages] == [
        "Review.",
        "write about tea",
        "draft: tea is good",
    ]
    assert set(result.usage.by_executor) == {"writer", "reviewer"}
    messages = [sg.ChatMessage.user("a"), sg.ChatMessage.assistant("b"), sg.ChatMessage.user("c")]
    third = ScriptedModel(["d"])
    await agent_flow(sg.Agent("listener", model=third)).run(messages)
    assert [m.content for m in third.calls[0].messages] == ["a", "b", "c"]


async def test_parallel_tool_calls_run_concurrently_within_the_bound() -> None:
    running, peak, order = 0, 0, []

    @sg.tool
    async def slow(n: int) -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02 * (5 - n))  # later calls finish first
        running -= 1
        order.append(n)
        return f"r{n}"

    calls = [call(f"c{n}", "slow", n=n) for n in range(5)]
    model = ScriptedModel([ScriptedReply(tool_calls=calls), "done"])
    agent = sg.Agent("worker", model=model, tools=[slow], max_parallel_tools=2)
    result = await agent_flow(agent).run("go")
    assert result.outputs[0].text == "done" and peak == 2 and order != sorted(order)
    tool_messages = [m for m in model.calls[1].messages if m.role == "tool"]
    assert [(m.tool_call_id, m.content) for m in tool_messages] == [
        (f"c{n}-{result.run_id[:8]}", f"r{n}") for n in range(5)
    ]  # in the calls' order (ids unique across runs), whatever finished first
    assert len(model.calls) == 2  # the model was called again once, with every result


async def test_bad_calls_are_told_to_the_model_and_run_nothing() -> None:
    ran: list[str] = []

    @sg.tool
    def add(a: int, b: int) -> int:
        ran.append("add")
        return a + b

    @sg.tool
    def boom() -> str:
        ran.append("boom")
        raise ValueError("no such address")

    turn = [
        call("c1", "add", a=1, b="x"),
        call("c2", "nope"),
        sg.ToolCall("c3", "add", "{not json"),
        call("c4", "add", a=2, b=3),
        call("c5", "boom"),
    ]
    model = ScriptedModel([ScriptedReply(tool_calls=turn), "ok"])
    result = await agent_flow(sg.Agent("calc", model=model, tools=[add, boom])).run("go")
    results = tool_results(model.calls[1])
    assert "invalid arguments for tool 'add'" in results["c1"] and "b:" in results["c1"]
    assert results["c2"] == "there is no tool 'nope'; the tools are: add, boom"
    assert "not valid JSON" in results["c3"]
    assert results["c4"] == "5"
    assert results["c5"] == "tool 'boom' failed: ValueError: no such address"
    assert sorted(ran) == ["add", "boom"]
    statuses = {
        plain(e.call_id): e.status for e in result.events if isinstance(e, sg.ToolCallEvent)
    }
    assert statuses == {
        "c1": "rejected",
        "c2": "rejected",
        "c3": "rejected",
        "c4": "finished",
        "c5": "failed",
    }


async def test_a_tool_that_must_not_fail_fails_the_run_naming_the_agent() -> None:
    @sg.tool(errors="raise")
    def strict() -> str:
        raise RuntimeError("disk full")

    model = ScriptedModel([ScriptedReply(tool_calls=[call("c1", "strict")])])
    with pytest.raises(sg.WorkflowRunError) as raised:
        await agent_flow(sg.Agent("saver", model=model, tools=[strict])).run("go")
    assert "agent 'saver': tool 'strict' (call 'c1-" in str(raised.value)
    assert str(raised.value).endswith("failed: RuntimeError: disk full")


async def test_a_tool_that_must_not_fail_fails_the_run_beside_a_running_one() -> None:
    # Two calls of one turn: the one that must not fail fails while the
    # other still runs. The run fails naming the tool (it used to end
    # cancelled on Python 3.11, whose TaskGroup left the handler's task
    # marked as being cancelled), and the other call is cancelled.
    stopped: list[str] = []

    @sg.tool
    async def slow() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            stopped.append("slow")
            raise
        return "late"

    @sg.tool(errors="raise")
    async def strict() -> str:
        await asyncio.sleep(0.05)
        raise RuntimeError("disk full")

    model = ScriptedModel([ScriptedReply(tool_calls=[call("c1", "slow"), call("c2", "strict")])])
    workflow = agent_flow(sg.Agent("saver", model=model, tools=[slow, strict]))
    with pytest.raises(sg.WorkflowRunError) as raised:
        await asyncio.wait_for(workflow.run("go"), 10)
    assert "agent 'saver': tool 'strict' (call 'c2-" in str(raised.value)
    assert str(raised.value).endswith("failed: RuntimeError: disk full")
    assert stopped == ["slow"]


# -- approval -------------------------------------------------------------------

RAN: dict[str, int] = {}


@sg.tool
def lookup(topic: str) -> str:
    """Look a topic up."""
    RAN["lookup"] = RAN.get("lookup", 0) + 1
    return f"facts about {topic}"


@sg.tool(approval="always")
def send_email(to: str, body: str) -> str:
    """Send an email."""
    RAN[f"send:{to}"] = RAN.get(f"send:{to}", 0) + 1
    return f"sent to {to}"


def reply_by_conversation(call: ScriptedCall) -> ScriptedReply:
    """A model that needs no script position: tools first, then a summary
    of the tool results (so a fresh process can play the rest)."""
    results = tool_results(call)
    if not results:
        return ScriptedReply(
            "Looking it up and mailing.",
            tool_calls=[
                call_of("t1", "lookup", topic="tea"),
                call_of("t2", "send_email", to="ann@example.com", body="tea"),
                call_of("t3", "send_email", to="bob@example.com", body="tea"),
            ],
        )
    return ScriptedReply(" | ".join(f"{k}={v}" for k, v in sorted(results.items())))


def call_of(call_id: str, name: str, **arguments: Any) -> sg.ToolCall:
    return sg.ToolCall(call_id, name, json.dumps(arguments))


class CountingModel:
    """A ScriptedModel that plays ``reply_by_conversation`` and counts calls."""

    calls = 0

    @property
    def name(self) -> str:
        return "counting"

    def stream(
        self,
        messages: Sequence[sg.ChatMessage],
        *,
        tools: Sequence[Mapping[str, Any]] = (),
        response_format: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[sg.ModelEvent]:
        CountingModel.calls += 1
        return ScriptedModel([reply_by_conversation]).stream(messages, tools=tools)


def mailer(store: sg.CheckpointStore | None = None) -> sg.Workflow:
    agent = sg.Agent("mailer", model=CountingModel(), tools=[lookup, send_email])
    return agent_flow(agent, store)


async def test_approvals_open_one_request_per_call_and_resume_without_repeats(
    store: sg.CheckpointStore,
) -> None:
    RAN.clear()
    CountingModel.calls = 0
    first = await mailer(store).run("mail the tea facts")
    assert first.status is sg.RunStatus.IDLE_WITH_PENDING_REQUESTS
    t2, t3 = ids(first, "t2", "t3")
    assert [p.request_id for p in first.pending_requests] == [t2, t3]
    request = first.pending_requests[0].request
    assert request == sg.ToolApprovalRequest(
        "mailer", "send_email", {"to": "ann@example.com", "body": "tea"}, t2
    )
    assert RAN == {"lookup": 1} and CountingModel.calls == 1  # ran at once, unapproved
    # One answer of two: that tool runs, the model waits for the other.
    half = await mailer(store).run(
        responses={t2: sg.ToolApproval.approve()}, checkpoint=first.last_checkpoint
    )
    assert [p.request_id for p in half.pending_requests] == [t3]
    assert RAN == {"lookup": 1, "send:ann@example.com": 1} and CountingModel.calls == 1
    # The last answer (in yet another workflow object): the model goes on.
    done = await mailer(store).run(
        responses={t3: sg.ToolApproval.reject("not bob")}, checkpoint=half.last_checkpoint
    )
    assert done.status is sg.RunStatus.IDLE
    assert done.outputs[0].text == (
        "t1=facts about tea | t2=sent to ann@example.com | "
        "t3=the call was rejected and did not run: not bob"
    )
    assert RAN == {"lookup": 1, "send:ann@example.com": 1} and CountingModel.calls == 2
    assert done.usage.by_executor["mailer"] == sg.Usage(20, 10)  # both turns, across resumes
    # Answering again from the checkpoint after the answer is refused.
    with pytest.raises(sg.RequestError, match="already answered"):
        await mailer(store).run(
            responses={t3: sg.ToolApproval.approve()}, checkpoint=done.last_checkpoint
        )


async def test_a_fork_goes_on_with_the_agents_conversation_and_approvals(
    store: sg.CheckpointStore,
) -> None:
    """A fork is a new run (a new run id), but the agent it restored holds
    the conversation of the run it branched off: it goes on with it — its
    calls waiting for approval too — rather than starting afresh; a fresh
    run of the same workflow object still starts a conversation of its own."""
    RAN.clear()
    flow = mailer(store)
    first = await flow.run("mail the tea facts")
    t2, t3 = ids(first, "t2", "t3")
    rejected = await flow.run(
        responses={t2: sg.ToolApproval.reject("no"), t3: sg.ToolApproval.reject("no")},
        checkpoint=first.last_checkpoint,
    )
    assert rejected.status is sg.RunStatus.IDLE and "send:ann@example.com" not in RAN
    forked = await flow.run(
        responses={t2: sg.ToolApproval.approve(), t3: sg.ToolApproval.reject("not bob")},
        checkpoint=first.last_checkpoint,
        fork=True,
    )
    assert forked.run_id != first.run_id and forked.status is sg.RunStatus.IDLE
    assert forked.outputs[0].text == (
        "t1=facts about tea | t2=sent to ann@example.com | "
        "t3=the call was rejected and did not run: not bob"
    )
    assert [m.role for m in forked.outputs[0].messages][:2] == ["user", "assistant"]
    fresh = await flow.run("mail the tea facts")  # (the same agent object)
    assert [p.request_id for p in fresh.pending_requests] == ids(fresh, "t2", "t3")


@dataclass(frozen=True)
class Ask:
    text: str


class Human(sg.Executor):
    @sg.handler
    async def on_reply(self, reply: sg.AgentResponse, ctx: sg.WorkflowContext[str]) -> None:
        await ctx.request_info(Ask(reply.text), str)

    @sg.response_handler
    async def answered(self, ask: Ask, text: str, ctx: sg.WorkflowContext[str]) -> None:
        await ctx.send_message(text)


def users_seen(call: ScriptedCall) -> str:
    return repr([m.content for m in call.messages if m.role == "user"])


@pytest.mark.parametrize("shared", [True, False])
async def test_a_forked_chat_remembers_what_was_said_before(
    store: sg.CheckpointStore, shared: bool
) -> None:
    def build() -> sg.Workflow:
        builder = sg.WorkflowBuilder(start="bot", checkpoints=store)
        make = lambda: sg.Agent("bot", model=ScriptedModel([users_seen] * 10))  # noqa: E731
        (builder.add_executor(make()) if shared else builder.register("bot", make))
        return (
            builder.add_executor(Human("human"))
            .add_edge("bot", "human")
            .add_edge("human", "bot")
            .build()
        )

    flow = build()
    first = await flow.run("hello, I am Ann")
    second = await flow.run(responses={first.pending_requests[0].request_id: "my name?"})
    [asked] = second.pending_requests
    for fork in (False, True):
        went = await build().run(
            responses={asked.request_id: "again?"}, checkpoint=second.last_checkpoint, fork=fork
        )
        [now] = went.pending_requests
        assert now.request.text == repr(["hello, I am Ann", "my name?", "again?"]), fork
        # A fork of the fork goes on with it too.
        if fork:
            deeper = await build().run(
                responses={now.request_id: "and now?"}, checkpoint=went.last_checkpoint, fork=True
            )
            assert deeper.pending_requests[0].request.text == repr(
                ["hello, I am Ann", "my name?", "again?", "and now?"]
            )


async def test_a_fork_answered_later_still_goes_on_with_the_conversation(
    store: sg.CheckpointStore,
) -> None:
    """The fork is made in one call and answered in another (as the printed
    --respond command does), paused and resumed, forked again: every call
    of the fork goes on with the conversation it restored."""
    RAN.clear()
    first = await mailer(store).run("mail the tea facts")
    forked = await mailer(store).run(checkpoint=first.last_checkpoint, fork=True)
    assert forked.run_id != first.run_id
    t2, t3 = (p.request_id for p in forked.pending_requests)
    done = await mailer(store).run(
        responses={t2: sg.ToolApproval.approve(), t3: sg.ToolApproval.reject("no")},
        checkpoint=forked.last_checkpoint,
    )
    assert done.status is sg.RunStatus.IDLE and "t2=sent to ann@example.com" in done.outputs[0].text


async def test_a_paused_fork_and_a_fork_of_it_remember_the_chat(store: sg.CheckpointStore) -> None:
    a = await _chat(store).run("hello, I am Ann")
    a2 = await _chat(store).run(
        responses={a.pending_requests[0].request_id: "my name?"}, checkpoint=a.last_checkpoint
    )
    asked = a2.pending_requests[0].request_id
    paused = await _chat(store).run(
        responses={asked: "again?"},
        checkpoint=a2.last_checkpoint,
        fork=True,
        interrupt_before=["bot"],
    )
    said = repr(["hello, I am Ann", "my name?", "again?"])
    resumed = await _chat(store).run(checkpoint=paused.last_checkpoint)
    assert resumed.pending_requests[0].request.text == said
    again = await _chat(store).run(checkpoint=paused.last_checkpoint, fork=True)
    assert again.pending_requests[0].request.text == said


class Gate(sg.Executor):
    """Asks before the agent is called (so a new run's first checkpoints
    hold the shared agent as the last run left it)."""

    @sg.handler
    async def on(self, text: str, ctx: sg.WorkflowContext[str]) -> None:
        await ctx.request_info(Ask(text), str)

    @sg.response_handler
    async def answered(self, ask: Ask, answer: str, ctx: sg.WorkflowContext[str]) -> None:
        await ctx.send_message(f"{ask.text} / {answer}")


async def test_a_new_run_never_goes_on_with_another_runs_conversation(
    store: sg.CheckpointStore,
) -> None:
    """A shared agent holds the last run's conversation until it is called
    in the next one; that run's checkpoints do not store it, and going on
    from them (from a checkpoint, in memory, forked) starts afresh."""
    model = ScriptedModel([users_seen] * 10)
    agent = sg.Agent("agent", model=model)
    flow = sg.WorkflowBuilder(start=Gate("gate"), checkpoints=store).add_edge("gate", agent).build()
    one = await flow.run("secret of run ONE")
    one = await flow.run(responses={one.pending_requests[0].request_id: "yes"})
    assert one.outputs[0].text == repr(["secret of run ONE / yes"])
    for how in ("checkpoint", "fork", "memory"):
        two = await flow.run("run TWO")  # (the agent still holds run ONE's conversation)
        asked = two.pending_requests[0].request_id
        for info in await store.list(two.run_id):
            stored = await store.load(info.id)
            assert "agent" not in stored.body.get("snapshots", {}), how
            assert not any(b"secret of run ONE" in blob for blob in stored.blobs.values()), how
        if how == "memory":
            went = await flow.run(responses={asked: "ok"})
        else:
            went = await flow.run(
                responses={asked: "ok"}, checkpoint=two.last_checkpoint, fork=how == "fork"
            )
        assert went.outputs[0].text == repr(["run TWO / ok"]), how


async def _mail_runs_answered_in_memory(
    store: sg.CheckpointStore | None, order: tuple[int, ...]
) -> None:
    """Runs of one shared mailer agent waiting at once, answered in memory
    in ``order``: each sends its own mail."""
    RAN.clear()
    flow = mailer(store)
    runs = [await flow.run("mail the tea facts") for _ in order]
    for index in order:
        t2, t3 = (p.request_id for p in runs[index].pending_requests)
        done = await flow.run(
            responses={t2: sg.ToolApproval.approve(), t3: sg.ToolApproval.reject("no")}
        )
        assert done.run_id == runs[index].run_id and done.status is sg.RunStatus.IDLE
        assert "t2=sent to ann@example.com" in done.outputs[0].text


def _chat(store: sg.CheckpointStore | None) -> sg.Workflow:
    """A shared agent and a person taking turns."""
    bot = sg.Agent("bot", model=ScriptedModel([users_seen] * 10))
    return (
        sg.WorkflowBuilder(start=bot, checkpoints=store)
        .add_executor(Human("human"))
        .add_edge(bot, "human")
        .add_edge("human", bot)
        .build()
    )


async def test_runs_waiting_side_by_side_are_answered_in_memory_each_as_it_left_off(
    store: sg.CheckpointStore,
) -> None:
    """One shared agent, several runs waiting at once (two runs, then two
    forks of the first): answered in memory in any order, each goes on with
    its own conversation — restored from its last checkpoint, since another
    run used the agent meanwhile."""
    await _mail_runs_answered_in_memory(store, (1, 2, 0))
    # A chat forked twice, both forks answered in memory.
    chat = _chat(store)
    first = await chat.run("I am Ann")
    asked = first.pending_requests[0].request_id
    forks = [
        await chat.run(responses={asked: text}, checkpoint=first.last_checkpoint, fork=True)
        for text in ("F1", "F2")
    ]
    for fork, text in zip(reversed(forks), ("F2", "F1"), strict=True):
        done = await chat.run(responses={fork.pending_requests[0].request_id: "ok"})
        assert done.pending_requests[0].request.text == repr(["I am Ann", text, "ok"])


async def test_runs_waiting_side_by_side_without_a_store_each_go_on_as_they_left_off() -> None:
    """No store, no checkpoint to restore the shared agent from: a run kept
    in memory keeps the shared executors' snapshots as it left them."""
    await _mail_runs_answered_in_memory(None, (0, 1))
    chat = _chat(None)
    ann, bob = await chat.run("I am Ann"), await chat.run("I am Bob")
    for first, name in ((ann, "Ann"), (bob, "Bob")):
        done = await chat.run(responses={first.pending_requests[0].request_id: "who am I?"})
        assert done.pending_requests[0].request.text == repr([f"I am {name}", "who am I?"])


class Unencodable(sg.Executor):
    """Keeps state it cannot encode (fine without a store): its runs kept in
    memory go on with it as it is."""

    def __init__(self) -> None:
        super().__init__("odd")
        self.seen: list[object] = []

    @sg.handler
    async def on(self, text: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        self.seen.append(object())
        await ctx.request_info(Ask(text), str)

    @sg.response_handler
    async def answered(self, ask: Ask, text: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.yield_output(f"{ask.text}: {text} ({len(self.seen)} seen)")

    def snapshot(self) -> object:
        return {"seen": self.seen}

    def restore(self, snapshot: object) -> None:
        raise AssertionError("never restored: nothing was kept")


async def test_an_unencodable_shared_executor_goes_on_as_it_is_without_a_store() -> None:
    flow = sg.WorkflowBuilder(start=Unencodable()).build()
    one, two = await flow.run("one"), await flow.run("two")
    done = await flow.run(responses={one.pending_requests[0].request_id: "yes"})
    assert done.outputs == ["one: yes (2 seen)"]
    done = await flow.run(responses={two.pending_requests[0].request_id: "no"})
    assert done.outputs == ["two: no (2 seen)"]


async def test_approvals_asked_before_the_last_progress_save_are_asked_again(
    store: sg.CheckpointStore,
) -> None:
    """Going on from the progress save after the approvals were asked (the
    process died before the barrier): they are asked again, not lost."""
    RAN.clear()
    first = await mailer(store).run("mail the tea facts")
    infos = await store.list(first.run_id)
    before_barrier = infos[-2]
    assert before_barrier.superstep == infos[-1].superstep - 1  # (a save within the superstep)
    for fork in (False, True):
        again = await mailer(store).run(checkpoint=before_barrier.id, fork=fork)
        assert again.status is sg.RunStatus.IDLE_WITH_PENDING_REQUESTS, fork
        assert [plain(p.request_id) for p in again.pending_requests] == ["t2", "t3"]


async def test_an_edited_call_runs_with_the_reviewers_arguments() -> None:
    RAN.clear()
    workflow = mailer()
    first = await workflow.run("mail")
    t2, t3 = ids(first, "t2", "t3")
    edit = sg.ToolApproval.edit({"to": "carl@example.com", "body": "tea"})
    await workflow.run(responses={t2: edit})
    # An edit that does not fit the tool is refused at the answer, saying
    # why; the approval stays open for a better one.
    for wrong in ({"to": 5}, {}, {"to": "x", "body": "y", "cc": "z"}):
        with pytest.raises(
            sg.RequestError,
            match=rf"request '{t3}' \(opened by 'mailer'\) is refused: the edited arguments "
            r"do not fit tool 'send_email': invalid arguments",
        ):
            await workflow.run(responses={t3: sg.ToolApproval.edit(wrong)})
    done = await workflow.run(responses={t3: sg.ToolApproval.reject("not now")})
    assert first.status is sg.RunStatus.IDLE_WITH_PENDING_REQUESTS
    assert RAN == {"lookup": 1, "send:carl@example.com": 1}
    text = done.outputs[0].text
    # The model is told the arguments the reviewer ran the call with.
    edited = '{"to":"carl@example.com","body":"tea"}'
    assert f"t2=(a reviewer changed the arguments to {edited}) sent to carl@example.com" in text
    assert "t3=the call was rejected and did not run: not now" in text


async def test_an_edit_that_does_not_fit_is_refused_through_a_sub_workflow_and_a_store(
    store: sg.CheckpointStore,
) -> None:
    RAN.clear()
    sub = sg.WorkflowExecutor(mailer(), id="team", forward_outputs=True)
    parent = sg.WorkflowBuilder(start=sub, checkpoints=store).build()
    first = await parent.run("mail")
    asked = [p.request_id for p in first.pending_requests]
    assert len(asked) == 2 and all(r.startswith("team/") for r in asked)
    again = sg.WorkflowBuilder(
        start=sg.WorkflowExecutor(mailer(), id="team", forward_outputs=True), checkpoints=store
    ).build()  # (another process: from the checkpoint)
    with pytest.raises(sg.RequestError, match="do not fit tool 'send_email'"):
        await again.run(
            responses={asked[0]: sg.ToolApproval.edit({"to": 5})},
            checkpoint=first.last_checkpoint,
        )
    fits = {asked[0]: sg.ToolApproval.edit({"to": "dan@example.com", "body": "tea"})}
    went_on = await again.run(responses=fits, checkpoint=first.last_checkpoint)
    assert [p.request_id for p in went_on.pending_requests] == [asked[1]]
    assert RAN == {"lookup": 1, "send:dan@example.com": 1}


async def test_repeated_call_ids_are_made_unique() -> None:
    @sg.tool(approval="always")
    def act(n: int) -> int:
        return n

    model = ScriptedModel(
        [
            ScriptedReply(tool_calls=[call("call_0", "act", n=1)]),
            ScriptedReply(tool_calls=[call("call_0", "act", n=2), call("call_0", "act", n=3)]),
            "done",
        ]
    )
    workflow = agent_flow(sg.Agent("actor", model=model, tools=[act]))
    first = await workflow.run("go")
    [call_0] = ids(first, "call_0")
    assert [p.request_id for p in first.pending_requests] == [call_0]
    second = await workflow.run(responses={call_0: sg.ToolApproval.approve()})
    opened = [p.request_id for p in second.pending_requests]
    assert opened == [f"{call_0}-2", f"{call_0}-3"]
    done = await workflow.run(responses={i: sg.ToolApproval.approve() for i in opened})
    assert done.outputs[0].text == "done"
    assert tool_results(model.calls[2]) == {"call_0": "1", "call_0-2": "2", "call_0-3": "3"}


# -- structured output, limits, errors -----------------------------------------------


class Review(pydantic.BaseModel):
    verdict: str
    score: int


@dataclass(frozen=True)
class Note:
    text: str


T = TypeVar("T")


async def test_structured_output_is_validated_with_one_repair_turn() -> None:
    model = ScriptedModel(['{"verdict": "good"}', '{"verdict": "good", "score": 9}'])
    reviewer = sg.Agent("reviewer", model=model, output_type=Review)

    @sg.executor(id="publish")
    async def publish(review: Review, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.yield_output(f"{review.verdict}:{review.score}")

    workflow = sg.WorkflowBuilder(start=reviewer).add_edge(reviewer, publish).build()
    assert (await workflow.run("review it")).outputs == ["good:9"]
    response_format = model.calls[0].response_format
    assert response_format is not None and response_format["type"] == "json_schema"
    assert response_format["json_schema"]["schema"]["required"] == ["verdict", "score"]
    repair = model.calls[1].messages[-1]
    assert repair.role == "user" and "score: Field required" in (repair.content or "")
    notes = ScriptedModel(['{"text": "hi"}'])
    result = await agent_flow(sg.Agent("noter", model=notes, output_type=Note)).run("x")
    assert result.outputs == [Note("hi")]


class Page(pydantic.BaseModel, Generic[T]):
    items: list[T]


async def test_a_generic_output_type_is_named_as_openai_takes_a_format_name() -> None:
    """OpenAI refuses a response format whose name is not letters, digits,
    '_' and '-' (HTTP 400): a generic model's name, 'Page[int]', was sent
    as it is."""
    model = ScriptedModel(['{"items": [1, 2]}'])
    result = await agent_flow(sg.Agent("pager", model=model, output_type=Page[int])).run("x")
    assert result.outputs == [Page[int](items=[1, 2])]
    response_format = model.calls[0].response_format
    assert response_format is not None
    assert response_format["json_schema"]["name"] == "Page_int_"


@pytest.mark.parametrize(
    "reply",
    [
        '```json\n{"verdict": "ok", "score": 3}\n```',
        '```\n{"verdict": "ok", "score": 3}```',
        '  ```JSON \n{"verdict": "ok",\n "score": 3}\n```\n',
    ],
)
async def test_a_reply_in_a_code_fence_is_read_without_a_repair_turn(reply: str) -> None:
    model = ScriptedModel([reply])
    result = await agent_flow(sg.Agent("judge", model=model, output_type=Review)).run("x")
    assert result.outputs == [Review(verdict="ok", score=3)] and len(model.calls) == 1


async def test_a_reply_that_never_fits_fails_naming_the_agent() -> None:
    model = ScriptedModel(["not json", '{"verdict": 1}'])
    with pytest.raises(sg.WorkflowRunError) as raised:
        await agent_flow(sg.Agent("judge", model=model, output_type=Review)).run("x")
    assert "agent 'judge': the model's reply does not match" in str(raised.value)
    assert isinstance(raised.value.__cause__, sg.AgentError)


def test_recursive_and_mapping_output_types_are_objects() -> None:
    class Node(pydantic.BaseModel):
        name: str
        kids: list[Node] = []

    Node.model_rebuild()
    for output_type in (Node, dict[str, int]):
        agent = sg.Agent("a", model=ScriptedModel(), output_type=output_type)
        assert agent.output_type is output_type


def test_an_output_type_changes_what_the_agent_sends() -> None:
    reviewer = sg.Agent("reviewer", model=ScriptedModel(), output_type=Review)

    @sg.executor(id="takes_text")
    async def takes_text(text: str) -> None: ...

    with pytest.raises(sg.WorkflowDefinitionError, match="takes_text"):
        sg.WorkflowBuilder(start=reviewer).add_edge(reviewer, takes_text).build()


async def test_max_turns_and_model_errors_fail_naming_the_agent() -> None:
    @sg.tool
    def again() -> str:
        return "more"

    loop = ScriptedModel([ScriptedReply(tool_calls=[call(f"c{i}", "again")]) for i in range(3)])
    agent = sg.Agent("looper", model=loop, tools=[again], max_turns=3)
    with pytest.raises(sg.WorkflowRunError, match="agent 'looper' reached max_turns=3"):
        await agent_flow(agent).run("go")
    broken = ScriptedModel([ScriptedReply(error=sg.ModelError("HTTP 401: bad key", status=401))])
    with pytest.raises(sg.WorkflowRunError) as raised:
        await agent_flow(sg.Agent("talker", model=broken)).run("go")
    assert str(raised.value) == (
        "executor 'talker' failed in superstep 1: ModelError: HTTP 401: bad key"
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"model": object()}, "model must be a ChatModel"),
        ({"max_turns": 0}, "max_turns must be a positive int"),
        ({"max_parallel_tools": True}, "max_parallel_tools must be a positive int"),
        ({"tools": [1]}, "agent 'a': not a tool or a function: 1"),
        ({"output_type": int}, "output_type int is not a JSON object"),
        ({"output_type": list[str]}, r"output_type list\[str\] is not a JSON object"),
        ({"timeout": 0}, "timeout must be a positive number"),
    ],
)
def test_bad_agent_definitions(options: dict[str, Any], message: str) -> None:
    options = {"model": ScriptedModel(), **options}
    with pytest.raises(sg.WorkflowDefinitionError, match=message):
        sg.Agent("a", **options)


async def test_a_retried_model_call_warns_and_counts_attempts() -> None:
    model = ScriptedModel([ScriptedReply("alpha beta gamma", retry_first=1)])
    seen = [e async for e in agent_flow(sg.Agent("flaky", model=model)).stream("go")]
    warned = [e.message for e in seen if isinstance(e, sg.WarningEvent)]
    assert warned == ["agent 'flaky': the model call failed (scripted retry); attempt 2 in 0.00 s"]
    attempts = [(d.attempt, d.text) for d in seen if isinstance(d, sg.AgentDelta)]
    assert attempts == [(1, "alpha "), (1, "beta "), (2, "alpha "), (2, "beta "), (2, "gamma")]


async def test_cancelling_the_run_closes_the_model_stream() -> None:
    closed = asyncio.Event()

    class Endless:
        name = "endless"

        async def stream(self, messages: Any, **options: Any) -> AsyncIterator[sg.ModelEvent]:
            try:
                while True:
                    yield sg.TextDelta("tick ")
                    await asyncio.sleep(0.01)
            finally:
                closed.set()

    workflow = agent_flow(sg.Agent("ticker", model=Endless()))  # type: ignore[arg-type]
    async with workflow.stream("go") as events:
        async for event in events:
            if isinstance(event, sg.AgentDelta):
                break
    await asyncio.wait_for(closed.wait(), 2)
    assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


async def test_a_sub_workflows_agent_streams_deltas_and_counts_usage_with_its_path() -> None:
    inner = agent_flow(sg.Agent("inner", model=ScriptedModel(["deep thought"] * 2)))
    outer = sg.WorkflowExecutor(inner, id="sub")

    @sg.executor(id="show")
    async def show(answer: sg.AgentResponse, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.yield_output(answer.text)

    workflow = sg.WorkflowBuilder(start=outer).add_edge(outer, show).build()
    seen = [e async for e in workflow.stream("think")]
    deltas = [e for e in seen if isinstance(e, sg.AgentDelta)]
    assert [d.path for d in deltas] == ["sub/inner", "sub/inner"]
    outputs = [e.data for e in seen if isinstance(e, sg.OutputEvent) and not e.workflow_path]
    assert outputs == ["deep thought"]
    result = await workflow.run("think")
    assert result.usage.by_executor == {"sub/inner": sg.Usage(10, 5)}


async def test_a_superstep_cut_short_replays_from_the_agents_progress(
    store: sg.CheckpointStore,
) -> None:
    """Two inputs in one superstep; the run is cancelled while the second
    one's tool runs. Going on from the latest checkpoint (saved within the
    superstep) re-sends the first answer without asking the model again,
    re-opens the approval asked before the cut, and runs only what had not
    finished."""
    gate = asyncio.Event()
    log: list[str] = []

    @sg.tool
    async def fetch(what: str) -> str:
        log.append(f"fetch {what}")
        if what == "hang" and not gate.is_set():
            await asyncio.sleep(30)
        return f"got {what}"

    @sg.tool(approval="always")
    def publish(what: str) -> str:
        log.append(f"publish {what}")
        return "published"

    def script(call: ScriptedCall) -> ScriptedReply:
        log.append("model")
        asked = [m.content for m in call.messages if m.role == "user"][-1]
        results = {k: v for k, v in tool_results(call).items() if k != "f1" or asked == "first"}
        if asked == "first":
            return (
                ScriptedReply("first answer")
                if results
                else ScriptedReply(tool_calls=[sg.ToolCall("f1", "fetch", '{"what": "one"}')])
            )
        if not results:
            return ScriptedReply(
                tool_calls=[
                    sg.ToolCall("p2", "publish", '{"what": "two"}'),
                    sg.ToolCall("f2", "fetch", '{"what": "hang"}'),
                ]
            )
        return ScriptedReply(" | ".join(f"{k}={v}" for k, v in sorted(results.items())))

    class Looping:
        name = "looping"

        def stream(self, messages: Any, **options: Any) -> AsyncIterator[sg.ModelEvent]:
            return ScriptedModel([script]).stream(messages)

    @sg.executor(id="split")
    async def split(text: str, ctx: sg.WorkflowContext[str]) -> None:
        for part in text.split():
            await ctx.send_message(part)

    def build() -> sg.Workflow:
        agent = sg.Agent("agent", model=Looping(), tools=[fetch, publish])  # type: ignore[arg-type]
        return sg.WorkflowBuilder(start=split, checkpoints=store).add_edge(split, agent).build()

    task = asyncio.create_task(build().run("first second"))
    while "fetch hang" not in log:
        assert not task.done(), task.result()
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert log == ["model", "fetch one", "model", "model", "fetch hang"]
    [run] = await store.runs()
    gate.set()
    log.clear()
    resumed = await build().run(checkpoint=run.last_checkpoint)
    assert [o.text for o in resumed.outputs] == ["first answer"]  # sent again, not asked again
    assert [p.request_id for p in resumed.pending_requests] == ids(resumed, "p2")  # asked again
    assert log == ["fetch hang"]  # only what had not finished
    done = await build().run(
        responses={ids(resumed, "p2")[0]: sg.ToolApproval.approve()},
        checkpoint=resumed.last_checkpoint,
    )
    assert [o.text for o in done.outputs] == ["f2=got hang | p2=published"]
    assert log == ["fetch hang", "publish two", "model"]


async def test_two_runs_waiting_on_the_same_model_call_id_are_told_apart() -> None:
    def build() -> sg.Workflow:
        def make() -> sg.Agent:
            script = [ScriptedReply(tool_calls=[call("call_0", "send_email", to="x", body="y")])]
            return sg.Agent("mailer", model=ScriptedModel([*script, "sent"]), tools=[send_email])

        return sg.WorkflowBuilder(start="mailer").register("mailer", make).build()

    workflow = build()
    first, second = await asyncio.gather(workflow.run("a"), workflow.run("b"))
    [one], [two] = first.pending_requests, second.pending_requests
    assert one.request_id != two.request_id  # the same model id, two runs
    done = await workflow.run(responses={two.request_id: sg.ToolApproval.approve()})
    assert done.run_id == second.run_id and done.outputs[0].text == "sent"


async def test_long_or_odd_model_call_ids_become_usable_request_ids() -> None:
    odd = "x" * 300 + " = /é"
    model = ScriptedModel([ScriptedReply(tool_calls=[call(odd, "send_email", to="x", body="y")])])
    result = await agent_flow(sg.Agent("mailer", model=model, tools=[send_email])).run("go")
    [pending] = result.pending_requests
    assert pending.request_id == f"{'x' * 48}-{result.run_id[:8]}"


async def test_approval_rules_that_raise_and_cut_replies_are_named() -> None:
    @sg.tool(approval=lambda arguments: 1 / 0 > 0)
    def risky() -> str:
        return "ran"

    model = ScriptedModel([ScriptedReply(tool_calls=[call("c1", "risky")])])
    with pytest.raises(sg.WorkflowRunError, match="the approval rule of tool 'risky' raised"):
        await agent_flow(sg.Agent("careful", model=model, tools=[risky])).run("go")

    class Cut:
        name = "cut"

        async def stream(self, messages: Any, **options: Any) -> AsyncIterator[sg.ModelEvent]:
            yield sg.TextDelta('{"name": "tru')
            yield sg.ModelReply(sg.ChatMessage.assistant('{"name": "tru'), sg.Usage(1, 1), "length")

    result = await agent_flow(sg.Agent("talker", model=Cut())).run("go")  # type: ignore[arg-type]
    warned = [e.message for e in result.events if isinstance(e, sg.WarningEvent)]
    assert warned == [
        "agent 'talker': the model stopped its reply early (finish_reason 'length'); "
        "the answer may be cut short"
    ]
    # (refused before the run starts: no run that only fails)
    with pytest.raises(sg.MessageTypeError, match="'talker': an empty list of messages"):
        await agent_flow(sg.Agent("talker", model=ScriptedModel(["x"]))).run([])
    with pytest.raises(TypeError, match="takes the tool's arguments as a mapping"):
        sg.ToolApproval.edit([1])  # type: ignore[arg-type]
    assert str(sg.AgentResponse("the text", (), sg.Usage())) == "the text"


@sg.tool
def note(i: int) -> str:
    """Notes step ``i``."""
    return f"noted {i}: " + "ok " * 40


@sg.tool
def big_note(i: int) -> str:
    """Notes step ``i`` at length (a page of text on its own)."""
    return f"noted {i}: " + "ü [x] " * 8_000


def long_task(turns: int, store: sg.CheckpointStore, tool: Any = note) -> sg.Workflow:
    """An agent that calls a tool ``turns`` times, then answers with how
    many messages the model was sent last."""
    name = tool.name

    def reply(call: ScriptedCall) -> ScriptedReply:
        done = sum(m.role == "tool" for m in call.messages)
        if done < turns:
            return ScriptedReply(tool_calls=[call_of(f"n{done}", name, i=done)])
        return ScriptedReply(f"{len(call.messages)} messages")

    model = ScriptedModel([reply] * (turns + 1))
    agent = sg.Agent("worker", model=model, tools=[tool], max_turns=turns + 2)
    return agent_flow(agent, store)


async def test_a_long_conversation_is_stored_as_it_grows_not_again_each_time() -> None:
    """Every model turn and tool call saves the agent's progress; the
    conversation is stored in pages that are stored once, so the bytes
    stored follow its length rather than its length squared (before: 400
    turns took 97 MB)."""
    for tool, small, large in ((note, 40, 160), (big_note, 8, 32)):
        stored = {}
        for turns in (small, large):
            store = sg.MemoryCheckpointStore()
            done = await long_task(turns, store, tool).run("go")
            assert done.outputs[0].text == f"{2 * turns + 1} messages"
            stored[turns] = store.blob_bytes
        # 4x the turns: about 4x the bytes (squared would be 16x; long tool
        # results are pages of their own, not stored again with each turn).
        assert stored[large] < 6 * stored[small], (tool.name, stored)


async def test_a_long_conversation_goes_on_whole_from_any_checkpoint(
    store: sg.CheckpointStore,
) -> None:
    turns = 75  # (pages of 32 messages: two full, and some after)
    done = await long_task(turns, store).run("go")
    infos = await store.list(done.run_id)
    assert len(infos) > turns
    for info in (infos[len(infos) // 3], infos[2 * len(infos) // 3], infos[-2]):
        again = await long_task(turns, store).run(checkpoint=info.id, fork=True)
        assert again.outputs[0].text == f"{2 * turns + 1} messages", info.superstep
        assert [m.content for m in again.outputs[0].messages] == [
            m.content for m in done.outputs[0].messages
        ]


def test_a_snapshot_written_before_pages_is_restored() -> None:
    """Checkpoints of an earlier stepgraph hold the whole conversation in
    ``messages`` (and the call ids beside it): restored as they are, then
    kept in pages."""
    agent = sg.Agent("a", model=ScriptedModel([]))
    messages = [sg.ChatMessage.user(f"m{i}") for i in range(40)]
    old = {
        "run_id": "r1", "messages": messages, "calls": [], "call_ids": ["c-1"], "asked": {},
        "turns": 0, "repaired": False, "usage": sg.Usage(), "step": None, "done": [],
        "inflight": False,
    }  # fmt: skip
    agent.restore(old)
    snapshot = agent.snapshot()
    [page] = snapshot["pages"]
    assert list(page.value) + snapshot["messages"] == messages
    assert "call_ids" not in snapshot and agent._call_ids == {"c-1"}


async def test_the_same_message_object_twice_in_a_superstep_is_two_inputs() -> None:
    """Two executors sending one interned text (or one sending an object
    twice) in a superstep: the second was taken for a retry of the first,
    and got its answer again without the model being asked."""

    @sg.executor(id="start")
    async def start(text: str, ctx: sg.WorkflowContext[str]) -> None:
        await ctx.send_message(text)

    @sg.executor(id="left")
    async def left(text: str, ctx: sg.WorkflowContext[str]) -> None:
        await ctx.send_message("next")

    @sg.executor(id="right")
    async def right(text: str, ctx: sg.WorkflowContext[str]) -> None:
        await ctx.send_message("next")

    model = ScriptedModel(["first answer", "second answer"])
    agent = sg.Agent("a", model=model)
    workflow = (
        sg.WorkflowBuilder(start=start)
        .add_fan_out(start, [left, right])
        .add_edge(left, agent)
        .add_edge(right, agent)
        .build()
    )
    result = await workflow.run("go")
    assert [o.text for o in result.outputs] == ["first answer", "second answer"]
    assert [[m.content for m in c.messages] for c in model.calls] == [
        ["next"],
        ["next", "first answer", "next"],
    ]
