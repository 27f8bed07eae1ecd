"""sg.Agent on OpenAIChatModel through the real SDK against FakeOpenAIServer:
parallel tool calls split across chunks, retries, usage, deltas, and
cancellation reaching the server as a disconnect."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import stepgraph as sg
from stepgraph.testing import FakeOpenAIServer, FakeReply

FAST = sg.ModelRetry(max_attempts=3, initial_delay=0.01, max_delay=0.02, jitter=0)


@sg.tool
async def weather(city: str) -> str:
    """The weather in a city."""
    await asyncio.sleep(0.01)
    return f"sunny in {city}"


async def test_an_agent_over_http_with_tools_retries_and_usage() -> None:
    calls = [
        sg.ToolCall("call_a", "weather", json.dumps({"city": "Zürich [old town]"})),
        sg.ToolCall("call_b", "weather", json.dumps({"city": "Kyōto"})),
    ]
    script = [
        FakeReply.tool_calls(calls, pieces=4, usage=sg.Usage(30, 8, cached_tokens=12)),
        FakeReply.error(429, "slow down", retry_after=0.05),
        FakeReply.text("Both are sunny.", usage=sg.Usage(50, 4, reasoning_tokens=2)),
    ]
    with FakeOpenAIServer(script) as server:
        async with sg.OpenAIChatModel("gpt-fake", base_url=server.base_url, retry=FAST) as model:
            agent = sg.Agent("forecaster", model=model, tools=[weather], instructions="Brief.")
            workflow = sg.WorkflowBuilder(start=agent).build()
            seen = [e async for e in workflow.stream("weather in Zürich and Kyōto?")]
        requests = server.requests
    outputs = [e.data for e in seen if isinstance(e, sg.OutputEvent)]
    assert [o.text for o in outputs] == ["Both are sunny."]
    tool_messages = [m for m in requests[1]["messages"] if m["role"] == "tool"]
    assistant = next(m for m in requests[1]["messages"] if m["role"] == "assistant")
    run8 = assistant["tool_calls"][0]["id"].rsplit("-", 1)[1]  # ids unique across runs
    assert [(m["tool_call_id"], m["content"]) for m in tool_messages] == [
        (f"call_a-{run8}", "sunny in Zürich [old town]"),
        (f"call_b-{run8}", "sunny in Kyōto"),
    ]
    assert requests[1] == requests[2]  # the retried call asked the same
    assert requests[0]["tools"][0]["function"]["name"] == "weather"
    assert all(r["stream_options"] == {"include_usage": True} for r in requests)
    warned = [e.message for e in seen if isinstance(e, sg.WarningEvent)]
    assert len(warned) == 1 and "HTTP 429" in warned[0] and "attempt 2" in warned[0]
    deltas = [(d.turn, d.attempt, d.text) for d in seen if isinstance(d, sg.AgentDelta)]
    assert "".join(t for _, _, t in deltas) == "Both are sunny."
    assert {(turn, attempt) for turn, attempt, _ in deltas} == {(2, 2)}
    answer = outputs[0]
    assert answer.usage == sg.Usage(80, 12, cached_tokens=12, reasoning_tokens=2)


async def test_cancelling_an_agent_run_disconnects_from_the_server() -> None:
    slow = FakeReply.text(["tick "] * 200, delay=0.05)
    with FakeOpenAIServer([slow]) as server:
        async with sg.OpenAIChatModel("gpt-fake", base_url=server.base_url, retry=FAST) as model:
            workflow = sg.WorkflowBuilder(start=sg.Agent("ticker", model=model)).build()
            async with workflow.stream("go") as events:
                async for event in events:
                    if isinstance(event, sg.AgentDelta):
                        break  # leaving the block cancels the run
            assert await asyncio.to_thread(server.wait_for_disconnects, 1, 2.0)
    assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


async def test_an_unreachable_endpoint_fails_the_run_naming_agent_and_url() -> None:
    model = sg.OpenAIChatModel("gpt-fake", base_url="http://127.0.0.1:9/v1", retry=FAST)
    workflow = sg.WorkflowBuilder(start=sg.Agent("lost", model=model)).build()
    try:
        await workflow.run("hello?")
    except sg.WorkflowRunError as error:
        text = str(error)
    finally:
        await model.aclose()
    assert text.startswith("executor 'lost' failed in superstep 1: ModelError: model 'gpt-fake'")
    assert "http://127.0.0.1:9/v1" in text


async def test_an_agent_timeout_ends_a_stream_that_never_finishes() -> None:
    """A server that keeps streaming (each chunk in time for the client's
    read timeout) would hold the run for ever: the agent's ``timeout``
    fails it, naming the agent, and the server sees the disconnect."""
    endless = FakeReply.text(["tick "] * 2_000, delay=0.02)
    with FakeOpenAIServer([endless]) as server:
        async with sg.OpenAIChatModel("gpt-fake", base_url=server.base_url, retry=FAST) as model:
            agent = sg.Agent("ticker", model=model, timeout=0.3)
            workflow = sg.WorkflowBuilder(start=agent).build()
            started = asyncio.get_running_loop().time()
            try:
                await workflow.run("go")
            except sg.WorkflowRunError as error:
                assert isinstance(error.__cause__, sg.ExecutorTimeoutError), repr(error)
                assert str(error) == (
                    "executor 'ticker' timed out: a handler call exceeded timeout=0.3 s"
                )
            else:
                raise AssertionError("the run did not time out")
            assert asyncio.get_running_loop().time() - started < 5
            assert await asyncio.to_thread(server.wait_for_disconnects, 1, 2.0)


@sg.tool
def listing(folder: str) -> str:
    """The files in a folder, as a file system names them."""
    return "notes.txt caf\udce9.txt"  # (a Latin-1 name read with surrogateescape)


@sg.tool
def opening(name: str) -> str:
    """Open a file."""
    raise FileNotFoundError(f"no file {name}\udce9")


async def test_half_a_character_in_a_tool_result_or_failure_becomes_u_fffd(
    tmp_path: Path,
) -> None:
    """A tool's text with a lone surrogate in it (a file name read with
    surrogateescape) failed the run: with a store, the checkpoint could not
    hold it; without, the SDK could not encode the request
    (UnicodeEncodeError)."""
    calls = [
        sg.ToolCall("c1", "listing", '{"folder": "."}'),
        sg.ToolCall("c2", "opening", '{"name": "x"}'),
    ]
    for store in (None, sg.SqliteCheckpointStore(str(tmp_path / "runs.sqlite"))):
        script = [FakeReply.tool_calls(calls), FakeReply.text("Done.")]
        with FakeOpenAIServer(script) as server:
            async with sg.OpenAIChatModel("m", base_url=server.base_url, retry=FAST) as model:
                agent = sg.Agent("files", model=model, tools=[listing, opening])
                workflow = sg.WorkflowBuilder(start=agent, checkpoints=store).build()
                result = await workflow.run("what is there?")
            results = [m["content"] for m in server.requests[1]["messages"] if m["role"] == "tool"]
        assert results == [
            "notes.txt caf\ufffd.txt",
            "tool 'opening' failed: FileNotFoundError: no file x\ufffd",
        ]
        assert result.outputs[0].text == "Done."


async def test_half_a_character_in_what_the_agent_sends_becomes_u_fffd() -> None:
    """A run without a store takes a text with a lone surrogate in it (no
    checkpoint refuses it), and so does a reviewer's reason: the request
    carries U+FFFD in its place rather than failing with the SDK's
    UnicodeEncodeError."""
    gated = sg.tool(approval="always", name="gated")(lambda: "ran")
    script = [
        FakeReply.tool_calls([sg.ToolCall("c1", "gated", "{}")]),
        FakeReply.text("Understood."),
    ]
    with FakeOpenAIServer(script) as server:
        async with sg.OpenAIChatModel("m", base_url=server.base_url, retry=FAST) as model:
            workflow = sg.WorkflowBuilder(start=sg.Agent("a", model=model, tools=[gated])).build()
            first = await workflow.run("caf\udce9?")
            [request] = first.pending_requests
            answer = sg.ToolApproval.reject("not \udce9 today")
            done = await workflow.run(responses={request.request_id: answer})
        sent = server.requests[1]["messages"]
    assert sent[0]["content"] == "caf\ufffd?"
    assert sent[2]["content"] == "the call was rejected and did not run: not \ufffd today"
    assert done.outputs[0].text == "Understood."


async def test_an_empty_reply_is_the_answer_with_a_warning_naming_the_agent() -> None:
    """A reply with no text and no tool calls (finish_reason stop) became
    an answer of '' with nothing said; it still does, with a warning."""
    with FakeOpenAIServer([FakeReply.text("")]) as server:
        async with sg.OpenAIChatModel("gpt-fake", base_url=server.base_url, retry=FAST) as model:
            agent = sg.Agent("quiet", model=model)
            result = await sg.WorkflowBuilder(start=agent).build().run("say something")
    assert [o.text for o in result.outputs] == [""]
    warned = [e for e in result.events if isinstance(e, sg.WarningEvent)]
    assert [(w.executor_id, w.message) for w in warned] == [
        (
            "quiet",
            "agent 'quiet': the model's reply is empty (no text, no tool calls, finish_reason "
            "'stop'); the answer is the empty text",
        )
    ]
