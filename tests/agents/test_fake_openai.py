"""FakeOpenAIServer on its own, read with the stdlib's HTTP client (the
model tests read it through the real SDK)."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from stepgraph.agents._types import ToolCall, Usage
from stepgraph.testing import FakeOpenAIServer, FakeReply

_connections: list[http.client.HTTPConnection] = []


@pytest.fixture(autouse=True)
def _close_connections() -> Iterator[None]:
    yield
    while _connections:
        _connections.pop().close()


def post(
    server: FakeOpenAIServer, body: dict[str, Any], path: str = "/v1/chat/completions"
) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    _connections.append(conn)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    return conn.getresponse()


def sse_data(response: http.client.HTTPResponse) -> list[str]:
    """The ``data:`` payloads of a streamed response."""
    text = response.read().decode()
    return [line[len("data: ") :] for line in text.split("\n\n") if line.startswith("data: ")]


REQUEST = {"model": "fake-1", "messages": [{"role": "user", "content": "hi"}]}
STREAM = {**REQUEST, "stream": True}


def test_plain_request_gets_a_chat_completion() -> None:
    with FakeOpenAIServer([FakeReply.text("Hello there", usage=Usage(7, 2, 3, 1))]) as server:
        response = post(server, REQUEST)
        body = json.loads(response.read())
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/json"
    assert body["object"] == "chat.completion"
    assert body["model"] == "fake-1"
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there"},
            "finish_reason": "stop",
        }
    ]
    assert body["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 2,
        "total_tokens": 9,
        "prompt_tokens_details": {"cached_tokens": 3},
        "completion_tokens_details": {"reasoning_tokens": 1},
    }
    assert server.requests == [REQUEST]
    assert server.request_headers[0]["content-type"] == "application/json"


def test_plain_request_with_tool_calls() -> None:
    calls = [ToolCall("call_a", "add", '{"x": 1}'), ToolCall("call_b", "neg", '{"y": 2}')]
    with FakeOpenAIServer([FakeReply.tool_calls(calls)]) as server:
        body = json.loads(post(server, REQUEST).read())
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {"id": "call_a", "type": "function", "function": {"name": "add", "arguments": '{"x": 1}'}},
        {"id": "call_b", "type": "function", "function": {"name": "neg", "arguments": '{"y": 2}'}},
    ]


def test_exhausted_script_answers_500_and_records_the_request() -> None:
    with FakeOpenAIServer([FakeReply.text("one")]) as server:
        assert post(server, REQUEST).status == 200
        response = post(server, {**REQUEST, "n": 2})
        body = json.loads(response.read())
    assert response.status == 500
    assert "script exhausted" in body["error"]["message"]
    assert body["error"]["type"] == "server_error"
    assert [r.get("n") for r in server.requests] == [None, 2]
    assert server.remaining == 0


def test_add_appends_to_the_script() -> None:
    with FakeOpenAIServer() as server:
        server.add(FakeReply.text("first"), FakeReply.text("second"))
        texts = [json.loads(post(server, REQUEST).read()) for _ in range(2)]
    assert [t["choices"][0]["message"]["content"] for t in texts] == ["first", "second"]


def test_unknown_path_is_404() -> None:
    with FakeOpenAIServer([FakeReply.text("unused")]) as server:
        response = post(server, REQUEST, path="/v1/embeddings")
        response.read()
    assert response.status == 404
    assert server.requests == []
    assert server.remaining == 1


def test_stream_chunks_and_usage_only_when_asked() -> None:
    usage = Usage(12, 3, cached_tokens=4, reasoning_tokens=2)
    reply = FakeReply.text(["Hel", "lo"], usage=usage)
    with FakeOpenAIServer([reply, reply]) as server:
        with_usage = post(server, {**STREAM, "stream_options": {"include_usage": True}})
        assert with_usage.getheader("Content-Type") == "text/event-stream"
        data = sse_data(with_usage)
        without = sse_data(post(server, STREAM))

    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {c["id"] for c in chunks} == {"chatcmpl-fake"}
    assert {c["model"] for c in chunks} == {"fake-1"}
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"content": "Hel"},
        {"content": "lo"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None, None, None, "stop"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["prompt_tokens_details"] == {"cached_tokens": 4}
    assert chunks[-1]["usage"]["completion_tokens_details"] == {"reasoning_tokens": 2}

    assert without[-1] == "[DONE]"
    assert all(json.loads(d)["choices"] for d in without[:-1])
    assert len(without) == len(data) - 1


def test_text_is_streamed_word_by_word_by_default() -> None:
    with FakeOpenAIServer([FakeReply.text("a few words")]) as server:
        data = sse_data(post(server, STREAM))
    contents = [json.loads(d)["choices"][0]["delta"].get("content") for d in data[:-1]]
    assert contents == ["", "a ", "few ", "words", None]


def test_parallel_tool_calls_interleave_by_index() -> None:
    calls = [ToolCall("call_a", "add", '{"x": 10}'), ToolCall("call_b", "neg", '{"y": 2}')]
    reply = FakeReply.tool_calls(calls, text="Let me see.", pieces=3)
    with FakeOpenAIServer([reply]) as server:
        data = sse_data(post(server, STREAM))
    chunks = [json.loads(d) for d in data[:-1]]
    pieces = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if "tool_calls" in c["choices"][0]["delta"]
    ]
    assert [p["index"] for p in pieces] == [0, 1, 0, 1, 0, 1, 0, 1]
    assert pieces[0] == {
        "index": 0,
        "id": "call_a",
        "type": "function",
        "function": {"name": "add", "arguments": ""},
    }
    assert "id" not in pieces[2] and "name" not in pieces[2]["function"]
    for index, call in enumerate(calls):
        joined = "".join(p["function"]["arguments"] for p in pieces if p["index"] == index)
        assert joined == call.arguments
        assert sum(1 for p in pieces if p["index"] == index and p["function"]["arguments"]) == 3
    assert chunks[1]["choices"][0]["delta"] == {"content": "Let "}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_error_reply_has_an_openai_body_and_retry_headers() -> None:
    script = [
        FakeReply.error(429, "Rate limit reached", retry_after=2),
        FakeReply.error(503, retry_after_ms=250),
        FakeReply.error(401, "Incorrect API key"),
    ]
    with FakeOpenAIServer(script) as server:
        limited, unavailable, denied = (post(server, STREAM) for _ in range(3))
        bodies = [json.loads(r.read()) for r in (limited, unavailable, denied)]
    assert [r.status for r in (limited, unavailable, denied)] == [429, 503, 401]
    assert limited.getheader("Retry-After") == "2"
    assert unavailable.getheader("retry-after-ms") == "250"
    assert denied.getheader("Retry-After") is None
    assert bodies[0]["error"]["message"] == "Rate limit reached"
    assert bodies[0]["error"]["type"] == "rate_limit_error"
    assert bodies[2]["error"] == {
        "message": "Incorrect API key",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }


def test_disconnect_cuts_the_stream_after_n_chunks() -> None:
    with FakeOpenAIServer([FakeReply.disconnect("one two three", after=2)]) as server:
        response = post(server, STREAM)
        with pytest.raises(http.client.IncompleteRead) as caught:
            response.read()
    raw = caught.value.partial.decode()
    assert raw.count("data: ") == 2
    assert '"content": "one "' in raw
    assert "[DONE]" not in raw
    assert server.disconnects == 0  # the server hung up, not the client


def test_malformed_stream_has_a_line_that_is_not_json() -> None:
    with FakeOpenAIServer([FakeReply.malformed("{oops", text="Hi")]) as server:
        data = sse_data(post(server, STREAM))
    assert data[2] == "{oops"
    assert json.loads(data[1])["choices"][0]["delta"] == {"content": "Hi"}
    assert data[-1] == "[DONE]"


def test_slow_chunks_arrive_one_by_one_and_a_leaving_client_is_counted() -> None:
    with FakeOpenAIServer([FakeReply.text("a b c d e f g h", delay=0.15)]) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        body = json.dumps(STREAM).encode()
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        started = time.monotonic()
        received = b""
        while received.count(b"data: ") < 2:
            received += sock.recv(4096)
        first_two = time.monotonic() - started
        assert b'"content": "a "' in received
        assert b'"content": "b "' not in received
        sock.close()
        assert server.wait_for_disconnects(1, timeout=2)
    assert 0.1 < first_two < 1.0
    assert server.disconnects == 1


def test_close_does_not_hang_with_a_stream_in_flight() -> None:
    server = FakeOpenAIServer([FakeReply.text("slow " * 50, delay=1.0)]).start()
    response = post(server, STREAM)
    assert response.status == 200
    started = time.monotonic()
    server.close()
    assert time.monotonic() - started < 1.0
    with pytest.raises((ConnectionError, http.client.IncompleteRead)):
        response.read()
    assert server.disconnects == 0  # closing the server is not a client leaving
    with pytest.raises(RuntimeError):
        _ = server.base_url


def test_base_url_and_restart_are_idempotent() -> None:
    server = FakeOpenAIServer()
    assert server.start() is server.start()
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    assert server.port > 0
    server.close()
    server.close()
