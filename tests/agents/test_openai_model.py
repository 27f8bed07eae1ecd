"""OpenAIChatModel through the real ``openai`` SDK against FakeOpenAIServer
on loopback: streaming, tool calls, retries, errors, cancellation."""

from __future__ import annotations

import asyncio
import email.utils
import gc
import socket
import sys
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

import stepgraph as sg
from stepgraph._exceptions import ModelError
from stepgraph.agents._openai import ModelRetry, OpenAIChatModel, _retry_after
from stepgraph.agents._types import (
    ChatMessage,
    ChatModel,
    ModelEvent,
    ModelReply,
    ModelRetrying,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from stepgraph.testing import FakeOpenAIServer, FakeReply

FAST = ModelRetry(max_attempts=3, initial_delay=0.01, max_delay=0.02, jitter=0)
HI = [ChatMessage.user("Hi")]

MakeModel = Callable[..., OpenAIChatModel]


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        yield fake


@pytest.fixture
async def make_model(server: FakeOpenAIServer) -> AsyncIterator[MakeModel]:
    """Models on the fake server (``retry`` defaults to FAST), closed after
    the test."""
    made: list[OpenAIChatModel] = []

    def make(name: str = "fake-model", **options: Any) -> OpenAIChatModel:
        options.setdefault("retry", FAST)
        if "client" not in options:
            options.setdefault("base_url", server.base_url)
            options.setdefault("api_key", "test-key")
        model = OpenAIChatModel(name, **options)
        made.append(model)
        return model

    yield make
    for model in made:
        await model.aclose()


async def collect(
    model: OpenAIChatModel, messages: Sequence[ChatMessage] = HI, **kwargs: Any
) -> list[ModelEvent]:
    return [event async for event in model.stream(messages, **kwargs)]


def retrying(events: Sequence[ModelEvent]) -> list[ModelRetrying]:
    return [e for e in events if isinstance(e, ModelRetrying)]


# -- streaming -------------------------------------------------------------------


async def test_streams_text_deltas_then_one_reply(
    server: FakeOpenAIServer, make_model: MakeModel
) -> None:
    usage = Usage(prompt_tokens=12, completion_tokens=3, cached_tokens=4, reasoning_tokens=2)
    server.add(FakeReply.text(["Hel", "lo", " world"], usage=usage))
    model = make_model("gpt-test")
    assert isinstance(model, ChatModel)
    assert model.name == "gpt-test"

    events = await collect(model)

    assert events == [
        TextDelta("Hel"),
        TextDelta("lo"),
        TextDelta(" world"),
        ModelReply(ChatMessage.assistant("Hello world"), usage, "stop"),
    ]


async def test_half_a_character_from_the_server_is_mended_or_replaced(
    server: FakeOpenAIServer, make_model: MakeModel
) -> None:
    # JSON may escape a character outside the BMP as two surrogates: sent in
    # one piece they are joined, alone one is replaced (UTF-8 cannot hold
    # it, so neither could a checkpoint, an HTTP answer or a log).
    server.add(FakeReply.text(["hi ", "\ud83d\ude00", " and \ud800", " x"]))
    server.add(FakeReply.tool_calls([ToolCall("c\udc00", "look", '{"q": "\udfff"}')], pieces=1))
    model = make_model()

    events = await collect(model)
    second = await collect(model)

    assert [e.text for e in events if isinstance(e, TextDelta)] == [
        "hi ",
        "\U0001f600",
        " and \ufffd",
        " x",
    ]
    assert events[-1] == ModelReply(
        ChatMessage.assistant("hi \U0001f600 and \ufffd x"), Usage(10, 5), "stop"
    )
    reply = second[-1]
    assert isinstance(reply, ModelReply)
    assert reply.message.tool_calls == (ToolCall("c\ufffd", "look", '{"q": "\ufffd"}'),)
    pieces = [e.arguments for e in second if isinstance(e, ToolCallDelta)]
    assert "".join(pieces) == '{"q": "\ufffd"}'


async def test_request_carries_messages_tools_format_and_options(
    server: FakeOpenAIServer, make_model: MakeModel
) -> None:
    server.add(FakeReply.text("ok"), FakeReply.text("again"))
    model = make_model("gpt-test", temperature=0.2, max_tokens=50)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "add",
                "description": "Add two numbers",
                "parameters": {"type": "object", "properties": {"x": {"type": "number"}}},
            },
        }
    ]
    response_format = {"type": "json_schema", "json_schema": {"name": "out", "schema": {}}}
    messages = [
        ChatMessage.system("Be brief."),
        ChatMessage.user("Add 1"),
        ChatMessage.assistant(None, [ToolCall("call_1", "add", '{"x": 1}')]),
        ChatMessage.tool("call_1", "1"),
    ]

    await collect(model, messages, tools=tools, response_format=response_format)
    await collect(model)

    first, second = server.requests
    assert first == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Add 1"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "add", "arguments": '{"x": 1}'},
                    }
                ],
            },
            {"role": "tool", "content": "1", "tool_call_id": "call_1"},
        ],
        "tools": tools,
        "response_format": response_format,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.2,
        "max_tokens": 50,
    }
    assert "tools" not in second and "response_format" not in second
    assert second["stream_options"] == {"include_usage": True}
    assert server.request_headers[0]["authorization"] == "Bearer test-key"


async def test_parallel_tool_calls_are_reassembled_in_index_order(
    server: FakeOpenAIServer, make_model: MakeModel
) -> None:
    calls = [
        ToolCall("call_a", "add", '{"x": 1, "y": 22}'),
        ToolCall("call_b", "search", '{"query": "the weather in Paris"}'),
        ToolCall("call_c", "now", "{}"),
    ]
    server.add(FakeReply.tool_calls(calls, text="Checking.", pieces=4, usage=Usage(30, 9)))

    events = await collect(make_model())

    assert events[0] == TextDelta("Checking.")
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [d.index for d in deltas] == [0, 1, 2] * 5  # interleaved, as sent
    assert deltas[:3] == [
        ToolCallDelta(0, "call_a", "add", ""),
        ToolCallDelta(1, "call_b", "search", ""),
        ToolCallDelta(2, "call_c", "now", ""),
    ]
    assert all(d.id is None and d.name is None for d in deltas[3:])
    assert events[-1] == ModelReply(
        ChatMessage.assistant("Checking.", calls), Usage(30, 9), "tool_calls"
    )
    assert len(events) == 1 + len(deltas) + 1


async def test_tool_calls_streamed_without_an_index_stay_apart(
    server: FakeOpenAIServer, make_model: MakeModel
) -> None:
    # Gemini's OpenAI-compatible endpoint leaves the index out: each new id
    # starts a call (they were read as one call, names and arguments joined).
    calls = [
        ToolCall("function-call-1", "weather", '{"city": "Paris"}'),
        ToolCall("function-call-2", "weather", '{"city": "Rome"}'),
        ToolCall("function-call-3", "now", "{}"),
    ]
    server.add(FakeReply.tool_calls(calls, pieces=2, indexed=False))

    events = await collect(make_model())

    reply = events[-1]
    assert isinstance(reply, ModelReply)
    assert reply.message.tool_calls == tuple(calls)
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [d.index for d in deltas] == [0, 0, 0, 1, 1, 1, 2, 2, 2]


async def test_tool_arguments_sent_as_a_json_object_are_read_as_its_text(
    server: FakeOpenAIServer, make_model: MakeModel
) -> None:
    # llama.cpp's server has sent arguments as an object: the run failed
    # with "AttributeError: 'dict' object has no attribute 'isascii'".
    function = {"name": "weather", "arguments": {"city": "Zürich", "days": [1, 2]}}
    server.add(
        FakeReply.deltas(
            [{"tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": function}]}],
            finish_reason="tool_calls",
        )
    )

    events = await collect(make_model())

    reply = events[-1]
    assert isinstance(reply, ModelReply), events
    assert reply.message.tool_calls == (
        ToolCall("c1", "weather", '{"city": "Zürich", "days": [1, 2]}'),
    )
    assert reply.finish_reason == "tool_calls"


# -- retries ---------------------------------------------------------------------


async def test_429_honours_retry_after_then_succeeds(
    server: FakeOpenAIServer, make_model: MakeModel
) -> None:
    server.add(FakeReply.error(429, "Rate limit reached", retry_after=0.2), FakeReply.text("done"))
    model = make_model(retry=ModelRetry(initial_delay=0.0, max_delay=0.0))
    stamps: list[tuple[float, ModelEvent]] = []

    async for event in model.stream(HI):
        stamps.append((time.monotonic(), event))

    events = [e for _, e in stamps]
    assert events == [
        ModelRetrying(attempt=2, delay=0.2, reason="HTTP 429: Rate limit reached"),
        TextDelta("done"),
        ModelReply(ChatMessage.assistant("done"), Usage(10, 5), "stop"),
    ]
    assert stamps[1][0] - stamps[0][0] >= 0.2
    assert len(server.requests) == 2


async def test_retry_after_ms_comes_first(server: FakeOpenAIServer, make_model: MakeModel) -> None:
    server.add(
        FakeReply.error(503, "overloaded", retry_after_ms=150, retry_after=30),
        FakeReply.text("done"),
    )
    started = time.monotonic()

    events = await collect(make_model())

    assert time.monotonic() - started >= 0.15
    assert retrying(events) == [ModelRetrying(2, 0.15, "HTTP 503: overloaded")]
    assert events[-1] == ModelReply(ChatMessage.assistant("done"), Usage(10, 5), "stop")


async def test_500_then_success_backs_off(server: FakeOpenAIServer, make_model: MakeModel) -> None:
    server.add(FakeReply.error(500, "boom"), FakeReply.text("fine"))

    events = await collect(make_model())

    [retry] = retrying(events)
    assert retry.attempt == 2
    assert retry.reason == "HTTP 500: boom"
    assert 0 < retry.delay <= FAST.max_delay
    assert events[1:] == [
        TextDelta("fine"),
        ModelReply(ChatMessage.assistant("fine"), Usage(10, 5), "stop"),
    ]


async def test_stream_cut_mid_way_is_retried(
    server: FakeOpenAIServer, make_model: MakeModel
) -> None:
    server.add(FakeReply.disconnect("one two three", after=2), FakeReply.text("one two three"))

    events = await collect(make_model())

    assert events[0] == TextDelta("one ")  # from the abandoned attempt
    assert isinstance(events[1], ModelRetrying)
    assert events[1].attempt == 2
    assert "connection was lost mid-stream" in events[1].reason
    assert events[2:] == [
        TextDelta("one "),
        TextDelta("two "),
        TextDelta("three"),
        ModelReply(ChatMessage.assistant("one two three"), Usage(10, 5), "stop"),
    ]
    assert len(server.requests) == 2


async def test_an_overloaded_error_event_mid_stream_is_retried_like_a_cut_stream(
    server: FakeOpenAIServer, make_model: MakeModel
) -> None:
    """An error event after some chunks (the server overloaded) failed the
    call at once, while a stream cut at the same point was retried."""
    server.add(
        FakeReply.stream_error("The server is overloaded", text="one "),
        FakeReply.stream_error("Slow down", error_type="", code="rate_limit_exceeded", text=()),
        FakeReply.text("one two"),
    )

    events = await collect(make_model(retry=ModelRetry(max_attempts=3, initial_delay=0.0)))

    assert events[0] == TextDelta("one ")  # from the abandoned attempt
    assert [(e.attempt, e.reason) for e in retrying(events)] == [
        (2, "the server sent an error mid-stream (server_error): The server is overloaded"),
        (3, "the server sent an error mid-stream (rate_limit_exceeded): Slow down"),
    ]
    assert events[-1] == ModelReply(ChatMessage.assistant("one two"), Usage(10, 5), "stop")
    assert len(server.requests) == 3


@pytest.mark.parametrize(
    ("error_type", "code", "retried"),
    [
        ("server_error", None, True),
        ("overloaded_error", None, True),
        ("", 503, True),  # (an HTTP status in the code, as some servers send it)
        ("", "502", True),
        ("UNAVAILABLE", None, True),
        ("invalid_request_error", "context_length_exceeded", False),
        ("", 400, False),
        ("insufficient_quota", "insufficient_quota", False),
        ("", None, False),  # (it names nothing: not known to pass)
    ],
)
async def test_an_error_event_mid_stream_is_retried_only_when_it_passes_with_time(
    server: FakeOpenAIServer,
    make_model: MakeModel,
    error_type: str,
    code: str | int | None,
    retried: bool,
) -> None:
    server.add(FakeReply.stream_error("it failed", error_type=error_type, code=code))
    server.add(FakeReply.text("fine"))
    model = make_model("gpt-test", retry=ModelRetry(max_attempts=2, initial_delay=0.0))
    if retried:
        events = await collect(model)
        assert events[-1] == ModelReply(ChatMessage.assistant("fine"), Usage(10, 5), "stop")
        assert len(retrying(events)) == 1
    else:
        with pytest.raises(ModelError) as failed:
            await collect(model)
        named = ", ".join(dict.fromkeys(str(p) for p in (error_type, code) if p))
        assert str(failed.value) == (
            f"model 'gpt-test' at {server.base_url}: the server sent an error mid-stream"
            f"{f' ({named})' if named else ''}: it failed"
        )
        assert isinstance(failed.value.__cause__, openai.APIError)
        assert len(server.requests) == 1


async def test_exhausted_retries_raise_model_error(
    server: FakeOpenAIServer, make_model: MakeModel
) -> None:
    server.add(*[FakeReply.error(503, "The engine is currently overloaded")] * 3)
    model = make_model("gpt-test")
    events: list[ModelEvent] = []

    with pytest.raises(ModelError) as caught:
        async for event in model.stream(HI):
            events.append(event)

    error = caught.value
    assert error.status == 503
    assert str(error) == (
        f"model 'gpt-test' at {server.base_url}: HTTP 503: The engine is currently overloaded"
        " (gave up after 3 attempts)"
    )
    assert isinstance(error.__cause__, openai.InternalServerError)
    assert [e.attempt for e in retrying(events)] == [2, 3]
    assert events == retrying(events)
    assert len(server.requests) == 3


async def test_a_429_for_a_spent_quota_fails_at_once(
    server: FakeOpenAIServer, make_model: MakeModel
) -> None:
    """OpenAI's 429 with code insufficient_quota does not pass with time:
    it was retried until the attempts ran out, then said 'gave up'."""
    message = "You exceeded your current quota, please check your plan and billing details."
    server.add(
        FakeReply.error(429, message, error_type="insufficient_quota", code="insufficient_quota")
    )
    server.add(FakeReply.text("never asked"))
    with pytest.raises(ModelError) as failed:
        await collect(make_model())
    assert str(failed.value).endswith(f"HTTP 429: {message}")
    assert len(server.requests) == 1 and failed.value.status == 429


async def test_a_404_from_a_base_url_without_v1_says_so(server: FakeOpenAIServer) -> None:
    """'HTTP 404: 404 page not found' was all Ollama's answer said when
    base_url lacked its /v1."""
    server.add(FakeReply.error(404, "404 page not found"), FakeReply.error(404, "no model"))
    root = f"http://127.0.0.1:{server.port}"
    for base_url, hinted in ((root, True), (f"{root}/v1", False)):
        async with OpenAIChatModel("llama3", base_url=base_url, retry=FAST) as model:
            with pytest.raises(ModelError) as failed:
                await collect(model)
        hint = "; base_url has no /v1, under which OpenAI-compatible servers answer"
        assert str(failed.value).endswith(hint) is hinted, str(failed.value)


async def test_401_fails_at_once(server: FakeOpenAIServer, make_model: MakeModel) -> None:
    server.add(FakeReply.error(401, "Incorrect API key provided"), FakeReply.text("unused"))
    events: list[ModelEvent] = []

    with pytest.raises(ModelError) as caught:
        async for event in make_model("gpt-test").stream(HI):
            events.append(event)

    assert caught.value.status == 401
    assert str(caught.value) == (
        f"model 'gpt-test' at {server.base_url}: HTTP 401: Incorrect API key provided"
    )
    assert isinstance(caught.value.__cause__, openai.AuthenticationError)
    assert events == []
    assert len(server.requests) == 1


async def test_400_is_not_retried_either(server: FakeOpenAIServer, make_model: MakeModel) -> None:
    server.add(FakeReply.error(400, "'messages' must not be empty"))

    with pytest.raises(ModelError, match="HTTP 400: 'messages' must not be empty") as caught:
        await collect(make_model())

    assert caught.value.status == 400
    assert len(server.requests) == 1


async def test_credentials_in_the_url_are_never_shown(server: FakeOpenAIServer) -> None:
    # A proxy that takes its key in the URL: errors reach run events, spans
    # and logs, so they name the endpoint without it.
    server.add(FakeReply.error(400, "no such model"))
    base_url = server.base_url.replace("http://", "http://alice:hunter2@")
    async with OpenAIChatModel("m", base_url=base_url) as model:
        with pytest.raises(ModelError) as caught:
            await collect(model)
        assert "hunter2" not in repr(model)
    assert str(caught.value) == (
        f"model 'm' at {server.base_url.replace('http://', 'http://***@')}: HTTP 400: no such model"
    )
    assert server.request_headers[0]["authorization"].startswith("Basic ")  # (it was used)
    keyed = OpenAIChatModel("m", base_url="https://proxy.example/v1?api-key=hunter2&x")
    assert repr(keyed) == "OpenAIChatModel('m', base_url='https://proxy.example/v1/?api-key=***&x')"


async def test_unreachable_endpoint_names_the_url() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}/v1"
    retry = ModelRetry(max_attempts=2, initial_delay=0.01, jitter=0)
    events: list[ModelEvent] = []

    async with OpenAIChatModel("local", base_url=base_url, retry=retry) as model:
        with pytest.raises(ModelError) as caught:
            async for event in model.stream(HI):
                events.append(event)

    message = str(caught.value)
    assert message.startswith(f"model 'local' at {base_url}: cannot connect")
    assert message.endswith("(gave up after 2 attempts)")
    assert "\n" not in message
    assert caught.value.status is None
    assert isinstance(caught.value.__cause__, openai.APIConnectionError)
    assert [(e.attempt, e.delay) for e in retrying(events)] == [(2, 0.01)]


async def test_malformed_stream_raises_model_error(
    server: FakeOpenAIServer, make_model: MakeModel
) -> None:
    server.add(FakeReply.malformed("{not json", text="Hi"), FakeReply.text("unused"))
    events: list[ModelEvent] = []

    with pytest.raises(ModelError, match="malformed stream: a stream event is not JSON") as caught:
        async for event in make_model().stream(HI):
            events.append(event)

    assert events == [TextDelta("Hi")]
    assert caught.value.status is None
    assert isinstance(caught.value.__cause__, ValueError)
    assert len(server.requests) == 1


# -- cancellation ------------------------------------------------------------------


async def test_cancelling_the_task_closes_the_connection(
    server: FakeOpenAIServer, make_model: MakeModel
) -> None:
    server.add(FakeReply.text("slow " * 40, delay=0.3))
    first = asyncio.Event()
    seen: list[ModelEvent] = []

    async def consume() -> None:
        async for event in make_model().stream(HI):
            seen.append(event)
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 2)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert await asyncio.to_thread(server.wait_for_disconnects, 1, 2.0)
    assert time.monotonic() - started < 2
    assert seen == [TextDelta("slow ")]
    await asyncio.sleep(0.05)
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_aclose_closes_the_connection(
    server: FakeOpenAIServer, make_model: MakeModel
) -> None:
    server.add(FakeReply.text("slow " * 40, delay=0.3), FakeReply.text("next"))
    model = make_model()
    stream = model.stream(HI)
    assert isinstance(stream, AsyncIterator)

    assert await anext(stream) == TextDelta("slow ")
    started = time.monotonic()
    await stream.aclose()  # type: ignore[attr-defined]

    assert await asyncio.to_thread(server.wait_for_disconnects, 1, 2.0)
    assert time.monotonic() - started < 2
    # The model stays usable.
    assert (await collect(model))[-1] == ModelReply(
        ChatMessage.assistant("next"), Usage(10, 5), "stop"
    )


def test_one_model_serves_successive_event_loops(server: FakeOpenAIServer) -> None:
    """Each ``asyncio.run`` gets a client of its own, closed as its loop
    shuts down: no call fails on a closed loop, no connection is left open."""
    server.add(*[FakeReply.text(f"reply {n}") for n in range(3)])
    model = OpenAIChatModel("m", base_url=server.base_url, api_key="k", retry=FAST)
    agent_flow = sg.WorkflowBuilder(start=sg.Agent("a", model=model)).build()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        texts = [asyncio.run(agent_flow.run("x")).outputs[0].text for _ in range(3)]
        del agent_flow, model
        gc.collect()

    assert texts == ["reply 0", "reply 1", "reply 2"]
    # Each loop's connection was closed while its loop still ran.
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []


def test_loops_in_two_threads_at_once_each_get_a_client(server: FakeOpenAIServer) -> None:
    server.add(*[FakeReply.text("slow " * 5, delay=0.02) for _ in range(4)])
    model = OpenAIChatModel("m", base_url=server.base_url, api_key="k", retry=FAST)

    def twice() -> list[str]:
        async def main() -> list[str]:
            replies = [(await collect(model))[-1] for _ in range(2)]
            return [r.message.content or "" for r in replies if isinstance(r, ModelReply)]

        return asyncio.run(main())

    with ThreadPoolExecutor(2) as pool:
        results = [f.result(timeout=10) for f in [pool.submit(twice) for _ in range(2)]]

    assert results == [["slow " * 5] * 2] * 2


def test_a_given_client_used_from_a_second_loop_is_refused(server: FakeOpenAIServer) -> None:
    server.add(FakeReply.text("first"))
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="mine")
    model = OpenAIChatModel("m", client=client, retry=FAST)

    async def once() -> list[ModelEvent]:
        try:
            return await collect(model)
        finally:
            await client.close()  # (in its loop: the refusal below comes before any use)

    first = asyncio.run(once())
    with pytest.raises(ModelError, match="first used in another event loop.*base_url/api_key"):
        asyncio.run(collect(model))

    assert first[-1] == ModelReply(ChatMessage.assistant("first"), Usage(10, 5), "stop")
    assert len(server.requests) == 1  # the refused call sent nothing


# -- construction --------------------------------------------------------------------


def test_missing_sdk_gives_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)

    with pytest.raises(ImportError, match=r"pip install 'stepgraph\[openai\]'"):
        OpenAIChatModel("gpt-test")


async def test_api_key_falls_back_to_the_environment_then_a_placeholder(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.add(FakeReply.text("a"), FakeReply.text("b"))
    monkeypatch.setenv("OPENAI_API_KEY", "env-key")
    async with OpenAIChatModel("m", base_url=server.base_url) as model:
        await collect(model)
    monkeypatch.delenv("OPENAI_API_KEY")
    async with OpenAIChatModel("m", base_url=server.base_url) as model:
        await collect(model)

    first, second = (h["authorization"] for h in server.request_headers)
    assert first == "Bearer env-key"
    assert second.startswith("Bearer ") and second != "Bearer "


async def test_a_given_client_is_used_without_sdk_retries(
    server: FakeOpenAIServer, make_model: MakeModel
) -> None:
    server.add(*[FakeReply.error(500, "boom")] * 2)
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="mine", max_retries=4)
    model = make_model(client=client, retry=ModelRetry(max_attempts=2, initial_delay=0.0))

    with pytest.raises(ModelError, match="gave up after 2 attempts"):
        await collect(model)

    assert len(server.requests) == 2  # ours, not 2 x 5 from the SDK
    assert server.request_headers[0]["authorization"] == "Bearer mine"
    with pytest.raises(TypeError, match="either client or base_url"):
        OpenAIChatModel("m", client=client, base_url=server.base_url)
    await client.close()


def test_model_retry_backoff_and_limits() -> None:
    retry = ModelRetry(initial_delay=0.5, multiplier=2.0, max_delay=3.0, jitter=0)
    assert [retry.delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert retry.delay(1, retry_after=7.5) == 7.5
    assert retry.delay(1, retry_after=600) == retry.max_retry_after
    jittered = ModelRetry(initial_delay=1.0, jitter=0.5)
    assert all(0.5 <= jittered.delay(1) <= 1.0 for _ in range(50))
    for bad in ({"max_attempts": 0}, {"multiplier": 0.5}, {"jitter": 2}, {"initial_delay": -1}):
        with pytest.raises(ValueError):
            ModelRetry(**bad)


def test_retry_after_headers() -> None:
    assert _retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert _retry_after({"retry-after": "3"}) == 3.0
    assert _retry_after({"retry-after": "soon"}) is None
    assert _retry_after({}) is None
    in_ten = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8 <= (_retry_after({"retry-after": in_ten}) or 0) <= 10


def test_a_connection_error_without_a_message_is_named_by_its_type() -> None:
    from stepgraph.agents._openai import _Failure

    error = openai.APIConnectionError(request=None)  # type: ignore[arg-type]
    error.__cause__ = ConnectionResetError()
    failure = _Failure.from_sdk(error, received=False)
    assert failure.reason == "cannot connect (ConnectionResetError)" and failure.retryable
    error.__cause__ = ConnectionResetError("reset by peer")
    assert _Failure.from_sdk(error, received=True).reason == (
        "the connection was lost mid-stream (reset by peer)"
    )


def _chunk(delta: dict[str, Any], finish: str | None = None) -> Any:
    from openai.types.chat import ChatCompletionChunk

    return ChatCompletionChunk.model_validate(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


def test_a_tool_name_sent_in_pieces_or_repeated_is_read_whole_and_a_refusal_is_text() -> None:
    from stepgraph.agents._openai import _Assembler

    def call(name: str | None, arguments: str, id: str | None = None) -> dict[str, Any]:
        function = {"arguments": arguments, **({"name": name} if name else {})}
        return {"tool_calls": [{"index": 0, "id": id, "type": "function", "function": function}]}

    for names in (["ad", "d", None], ["add", "add", "add"], ["add", None, None]):
        assembler = _Assembler()
        pieces = zip(names, ['{"x"', ": 1", "}"], ["call_1", None, None], strict=True)
        for name, arguments, id in pieces:
            list(assembler.feed(_chunk(call(name, arguments, id))))
        list(assembler.feed(_chunk({}, "tool_calls")))
        reply = assembler.finish()
        assert isinstance(reply, ModelReply), reply
        assert reply.message.tool_calls == (ToolCall("call_1", "add", '{"x": 1}'),), names
    refusing = _Assembler()
    events = list(refusing.feed(_chunk({"refusal": "I can't help with that."}, "stop")))
    assert events == [TextDelta("I can't help with that.")]
    reply = refusing.finish()
    assert isinstance(reply, ModelReply) and reply.message.content == "I can't help with that."
