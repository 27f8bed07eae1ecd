"""What a reviewer answers to an approval, and how the model's final
answer is read, through the real SDK against FakeOpenAIServer: decisions
that are not one of the three, edits given as Python values, a model that
refuses to give structured output."""

from __future__ import annotations

import asyncio
import datetime
import json
from pathlib import Path

import pydantic
import pytest

import stepgraph as sg
from stepgraph.testing import FakeOpenAIServer, FakeReply

FAST = sg.ModelRetry(max_attempts=2, initial_delay=0.01, max_delay=0.02, jitter=0)


class Address(pydantic.BaseModel):
    city: str
    zip: int


sent: list[tuple[str, Address, datetime.date | None]] = []


@sg.tool(approval="always")
def send_letter(to: str, address: Address, on: datetime.date | None = None) -> str:
    """Send a letter."""
    sent.append((to, address, on))
    return f"sent to {to} in {address.city} on {on}"


def letter_call() -> FakeReply:
    arguments = {"to": "ann", "address": {"city": "Oslo", "zip": 150}}
    return FakeReply.tool_calls([sg.ToolCall("call_1", "send_letter", json.dumps(arguments))])


async def test_a_decision_other_than_the_three_is_refused_and_never_approves() -> None:
    sent.clear()
    with pytest.raises(ValueError, match="decision must be 'approve', 'reject' or 'edit'"):
        sg.ToolApproval("deny")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="arguments are read only with decision 'edit'"):
        sg.ToolApproval("approve", arguments={"to": "bob"})
    for given in ([("to", "bob")], "to=bob", None):  # (was: 'list' has no attribute 'items')
        with pytest.raises(TypeError, match="arguments are the tool's arguments as a mapping"):
            sg.ToolApproval("edit", arguments=given)  # type: ignore[arg-type]
    with FakeOpenAIServer([letter_call(), FakeReply.text("Not sent.")]) as server:
        async with sg.OpenAIChatModel("m", base_url=server.base_url, retry=FAST) as model:
            agent = sg.Agent("mailer", model=model, tools=[send_letter])
            workflow = sg.WorkflowBuilder(start=agent).build()
            first = await workflow.run("write to ann")
            [request] = first.pending_requests
            done = await workflow.run(responses={request.request_id: sg.ToolApproval.reject()})
    assert sent == [] and done.outputs[0].text == "Not sent."


async def test_an_edit_given_as_python_values_is_checked_and_run_as_given(tmp_path: Path) -> None:
    """A model instance or a date in an edit is what the tool takes: the
    check of the answer and the call read the same arguments (before, the
    check read them through str() and refused the model instance, and the
    call could not encode the date: 'tool failed: TypeError')."""
    sent.clear()
    store = sg.SqliteCheckpointStore(str(tmp_path / "runs.sqlite"))
    with FakeOpenAIServer([letter_call(), FakeReply.text("Sent.")]) as server:
        async with sg.OpenAIChatModel("m", base_url=server.base_url, retry=FAST) as model:
            agent = sg.Agent("mailer", model=model, tools=[send_letter])
            workflow = sg.WorkflowBuilder(start=agent, checkpoints=store).build()
            first = await workflow.run("write to ann")
            [request] = first.pending_requests
            with pytest.raises(ValueError, match="edited argument 'to' is not a JSON value"):
                sg.ToolApproval.edit({"to": object()})
            edit = sg.ToolApproval.edit(
                {
                    "to": "bob",
                    "address": Address(city="Rome", zip=1),
                    "on": datetime.date(2030, 1, 2),
                }
            )
            done = await workflow.run(
                responses={request.request_id: edit}, checkpoint=first.last_checkpoint
            )
        tool_message = next(m for m in server.requests[1]["messages"] if m["role"] == "tool")
    assert sent == [("bob", Address(city="Rome", zip=1), datetime.date(2030, 1, 2))]
    assert tool_message["content"] == (
        '(a reviewer changed the arguments to {"to":"bob","address":{"city":"Rome",'
        '"zip":1},"on":"2030-01-02"}) sent to bob in Rome on 2030-01-02'
    )
    assert done.outputs[0].text == "Sent."


class Verdict(pydantic.BaseModel):
    ok: bool
    score: int


async def test_a_model_refusing_structured_output_fails_at_once_saying_it_refused() -> None:
    """OpenAI sends a refusal in its own field: an agent with an output type
    says the model refused (and asks no repair turn, which would only be
    refused again), rather than that the reply is 'Invalid JSON: expected
    ident at line 1 column 2'. Without an output type a refusal is the
    answer's text, as before."""
    script = [FakeReply.refusal("I'm sorry, I can't rate that."), FakeReply.text("{}")]
    with FakeOpenAIServer(script) as server:
        async with sg.OpenAIChatModel("m", base_url=server.base_url, retry=FAST) as model:
            judge = sg.Agent("judge", model=model, output_type=Verdict)
            with pytest.raises(sg.WorkflowRunError) as failed:
                await sg.WorkflowBuilder(start=judge).build().run("rate it")
            assert len(server.requests) == 1
            assert isinstance(failed.value.__cause__, sg.AgentError)
            assert str(failed.value.__cause__) == (
                "agent 'judge': the model refused to answer with Verdict: "
                "\"I'm sorry, I can't rate that.\""
            )
    with FakeOpenAIServer([FakeReply.refusal("No.")]) as server:
        async with sg.OpenAIChatModel("m", base_url=server.base_url, retry=FAST) as model:
            talker = sg.Agent("talker", model=model)
            result = await sg.WorkflowBuilder(start=talker).build().run("rate it")
    assert result.outputs[0].text == "No."


async def test_a_reply_that_stays_invalid_is_quoted_in_the_error() -> None:
    script = [FakeReply.text("Sure! Here it is: ok"), FakeReply.text("Well,\nit is fine.")]
    with FakeOpenAIServer(script) as server:
        async with sg.OpenAIChatModel("m", base_url=server.base_url, retry=FAST) as model:
            judge = sg.Agent("judge", model=model, output_type=Verdict)
            with pytest.raises(sg.WorkflowRunError) as failed:
                await sg.WorkflowBuilder(start=judge).build().run("rate it")
    message = str(failed.value.__cause__)
    assert message.startswith("agent 'judge': the model's reply does not match Verdict after")
    assert message.endswith("(the reply: 'Well, it is fine.')")


async def test_a_tool_that_meets_a_cancelled_task_fails_as_a_tool_and_a_cancel_still_cancels() -> (
    None
):
    """A tool awaiting a task that something else cancelled raises
    CancelledError without its run being cancelled: that is the tool
    failing (reported to the model, naming the tool), not a handler error
    that names only the agent. Cancelling the run during a tool still
    cancels it."""
    started = asyncio.Event()

    @sg.tool
    async def fetch_page(url: str) -> str:
        """Fetch a page (its download is cancelled by someone else)."""
        download = asyncio.ensure_future(asyncio.sleep(10))
        asyncio.get_running_loop().call_soon(download.cancel)
        await download
        return "never"

    @sg.tool
    async def wait_long() -> str:
        """Wait."""
        started.set()
        await asyncio.sleep(30)
        return "never"

    calls = [sg.ToolCall("call_1", "fetch_page", json.dumps({"url": "http://x"}))]
    script = [FakeReply.tool_calls(calls), FakeReply.text("The page is gone.")]
    with FakeOpenAIServer(script) as server:
        async with sg.OpenAIChatModel("m", base_url=server.base_url, retry=FAST) as model:
            agent = sg.Agent("reader", model=model, tools=[fetch_page, wait_long])
            workflow = sg.WorkflowBuilder(start=agent).build()
            result = await workflow.run("read it")
            tool_message = next(m for m in server.requests[1]["messages"] if m["role"] == "tool")
            assert tool_message["content"] == "tool 'fetch_page' failed: CancelledError"
            assert result.outputs[0].text == "The page is gone."

            server.add(FakeReply.tool_calls([sg.ToolCall("call_2", "wait_long", "{}")]))
            run = asyncio.ensure_future(workflow.run("wait"))
            await started.wait()
            run.cancel()
            with pytest.raises(asyncio.CancelledError):
                await run
    assert len(server.requests) == 3  # no model turn after the cancel


async def test_an_approval_rule_sees_the_defaults_and_coerced_values_the_tool_runs_with() -> None:
    """A rule on an argument the model left out reads its default, as the
    tool will: before, it read the model's text, so a call relying on a
    dangerous default ran without approval."""
    cleaned: list[tuple[str, bool, int]] = []

    seen: list[dict[str, object]] = []

    def risky(arguments: dict[str, object]) -> bool:
        seen.append(dict(arguments))
        return arguments.get("wipe_all") is True

    @sg.tool(approval=risky)
    def clean_up(path: str, keep_days: int, wipe_all: bool = True) -> str:
        """Delete old files under a path."""
        cleaned.append((path, wipe_all, keep_days))
        return "cleaned"

    calls = [sg.ToolCall("call_1", "clean_up", json.dumps({"path": "/data", "keep_days": "7"}))]
    with FakeOpenAIServer([FakeReply.tool_calls(calls), FakeReply.text("Left it.")]) as server:
        async with sg.OpenAIChatModel("m", base_url=server.base_url, retry=FAST) as model:
            agent = sg.Agent("janitor", model=model, tools=[clean_up])
            workflow = sg.WorkflowBuilder(start=agent).build()
            first = await workflow.run("tidy up")
            assert cleaned == [] and len(server.requests) == 1
            assert seen == [{"path": "/data", "keep_days": 7, "wipe_all": True}]
            [request] = first.pending_requests
            assert request.request.tool == "clean_up"
            done = await workflow.run(responses={request.request_id: sg.ToolApproval.reject()})
    assert cleaned == [] and done.outputs[0].text == "Left it."


async def test_a_server_that_ignores_stream_true_is_named_as_such() -> None:
    """A server (or proxy) that answers a stream request with one JSON body
    fails the call saying so, rather than 'the server sent no chat
    completion chunks', which reads like an empty reply."""
    with FakeOpenAIServer([FakeReply.whole("All at once.")]) as server:
        async with sg.OpenAIChatModel("m", base_url=server.base_url, retry=FAST) as model:
            agent = sg.Agent("talker", model=model)
            with pytest.raises(sg.WorkflowRunError) as failed:
                await sg.WorkflowBuilder(start=agent).build().run("hi")
        assert len(server.requests) == 1 and server.requests[0]["stream"] is True
    cause = failed.value.__cause__
    assert isinstance(cause, sg.ModelError)
    assert "the server answered with application/json, not an event stream" in str(cause)
    assert "ignored stream=true" in str(cause)


async def test_an_approval_cannot_be_dropped_from_a_checkpoint(tmp_path: Path) -> None:
    """update_state(drop_requests=...) of an agent's approval is refused
    (the agent's turn waits for it: it would refuse every later input), also
    from inside a sub-workflow; answering it with a rejection is the way."""
    store = sg.SqliteCheckpointStore(str(tmp_path / "runs.sqlite"))
    with FakeOpenAIServer([letter_call(), letter_call()]) as server:
        async with sg.OpenAIChatModel("m", base_url=server.base_url, retry=FAST) as model:
            alone = sg.WorkflowBuilder(
                start=sg.Agent("mailer", model=model, tools=[send_letter]), checkpoints=store
            ).build()
            child = sg.WorkflowBuilder(
                start=sg.Agent("mailer", model=model, tools=[send_letter]), name="child"
            ).build()
            nested = sg.WorkflowBuilder(
                start=sg.WorkflowExecutor(child, id="sub"), checkpoints=store, name="parent"
            ).build()
            for workflow in (alone, nested):
                first = await workflow.run("write to ann")
                [request] = first.pending_requests
                stored = len(await store.list(first.run_id))
                with pytest.raises(
                    sg.RequestError, match="tool call of agent 'mailer'.*cannot be dropped"
                ):
                    await workflow.update_state(
                        first.last_checkpoint or "", drop_requests=[request.request_id]
                    )
                assert len(await store.list(first.run_id)) == stored  # nothing written
    store.close()


@sg.tool(approval="always")
def record(reading: dict[str, float]) -> str:
    """Record a reading."""
    return f"recorded {sorted(reading)}"


async def test_an_approved_call_whose_arguments_hold_nan_is_not_said_to_be_edited() -> None:
    """A NaN the model sent is not equal to itself: the approved call was
    told to the model as one a reviewer had changed."""
    script = [
        FakeReply.tool_calls([sg.ToolCall("c1", "record", '{"reading": {"t": NaN}}')]),
        FakeReply.text("Recorded."),
    ]
    with FakeOpenAIServer(script) as server:
        async with sg.OpenAIChatModel("m", base_url=server.base_url, retry=FAST) as model:
            workflow = sg.WorkflowBuilder(start=sg.Agent("a", model=model, tools=[record])).build()
            first = await workflow.run("record it")
            [request] = first.pending_requests
            await workflow.run(responses={request.request_id: sg.ToolApproval.approve()})
        tool_message = next(m for m in server.requests[1]["messages"] if m["role"] == "tool")
    assert tool_message["content"] == "recorded ['t']"
