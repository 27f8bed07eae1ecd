"""``FakeOpenAIServer``: a real HTTP server on loopback that speaks the
Chat Completions API from a script, for testing model clients end to end
(through the real SDK, its HTTP stack and its stream parser).

    with FakeOpenAIServer([FakeReply.text("Hello there")]) as server:
        model = OpenAIChatModel("fake", base_url=server.base_url)
        ...
    assert server.requests[0]["stream"] is True
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

from ..agents._types import ToolCall, Usage

__all__ = ["FakeOpenAIServer", "FakeReply"]

ReplyKind = Literal[
    "text",
    "refusal",
    "whole",
    "tool_calls",
    "error",
    "stream_error",
    "disconnect",
    "malformed",
    "deltas",
]


@dataclass(frozen=True, kw_only=True)
class FakeReply:
    """How the server answers one request. Build one with a constructor:

    - :meth:`text`: a streamed text reply, ``finish_reason`` ``"stop"``;
    - :meth:`refusal`: the model declining, streamed in the ``refusal``
      field as OpenAI sends it under structured output;
    - :meth:`tool_calls`: parallel tool calls whose arguments arrive in
      pieces, the pieces of different calls interleaved (or, with
      ``indexed=False``, one call after the other with no ``index`` in
      their deltas, as Gemini's OpenAI-compatible endpoint streams them);
    - :meth:`error`: an HTTP error with an OpenAI-shaped JSON body;
    - :meth:`stream_error`: a few chunks of a text reply, then an error
      event in the stream (``data: {"error": {...}}``), as a server that
      fails after it began to answer (overloaded, say) sends it;
    - :meth:`disconnect`: a few chunks of a text reply, then the
      connection is cut;
    - :meth:`malformed`: a stream with a ``data:`` line that is not JSON;
    - :meth:`whole`: a whole JSON completion even to a request that asks
      to stream, as a server that ignores ``stream=true`` answers;
    - :meth:`deltas`: the chunks' ``delta`` objects as given, for the
      quirks of a server the other constructors do not play.

    ``delay`` is slept before each chunk after the first (the first goes out
    with the headers)."""

    kind: ReplyKind
    chunks: tuple[str, ...] = ()
    calls: tuple[ToolCall, ...] = ()
    pieces: int = 3
    indexed: bool = True
    usage: Usage = field(default_factory=lambda: Usage(10, 5))
    delay: float = 0.0
    status: int = 200
    message: str = ""
    error_type: str = ""
    error_code: str | None = None
    stream_code: str | int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    cut_after: int = 0
    bad_line: str = ""
    raw_deltas: tuple[Mapping[str, Any], ...] = ()
    finish_reason: str = "stop"

    @classmethod
    def text(
        cls,
        text: str | Sequence[str],
        *,
        usage: Usage | None = None,
        delay: float = 0.0,
    ) -> FakeReply:
        """A text reply: ``text`` streamed word by word, or a sequence of
        chunks streamed as given."""
        return cls(kind="text", chunks=_chunks_of(text), usage=usage or Usage(10, 5), delay=delay)

    @classmethod
    def refusal(cls, text: str | Sequence[str] = "I'm sorry, I can't help with that.") -> FakeReply:
        """A refusal: ``text`` streamed in the deltas' ``refusal`` field
        (``content`` stays null), ``finish_reason`` ``"stop"``."""
        return cls(kind="refusal", chunks=_chunks_of(text))

    @classmethod
    def whole(cls, text: str = "the whole reply at once") -> FakeReply:
        """A plain ``chat.completion`` JSON body (``application/json``),
        whether or not the request asked to stream."""
        return cls(kind="whole", chunks=(text,))

    @classmethod
    def tool_calls(
        cls,
        calls: Iterable[ToolCall],
        *,
        text: str | Sequence[str] = (),
        pieces: int = 3,
        indexed: bool = True,
        usage: Usage | None = None,
        delay: float = 0.0,
    ) -> FakeReply:
        """Parallel tool calls (after ``text``, if any): each call's
        arguments are cut into ``pieces`` chunks, and the chunks go out
        round-robin over the calls, as servers stream parallel calls.
        ``indexed=False`` leaves the ``index`` out of the deltas and sends
        each call's chunks together, the first carrying its id."""
        if pieces < 1:
            raise ValueError("pieces must be at least 1")
        return cls(
            kind="tool_calls",
            chunks=_chunks_of(text),
            calls=tuple(calls),
            pieces=pieces,
            indexed=indexed,
            usage=usage or Usage(10, 5),
            delay=delay,
        )

    @classmethod
    def error(
        cls,
        status: int,
        message: str = "",
        *,
        error_type: str = "",
        code: str | None = None,
        retry_after: float | str | None = None,
        retry_after_ms: float | None = None,
    ) -> FakeReply:
        """An HTTP error: ``{"error": {"message", "type", "param", "code"}}``
        with ``status`` (``type`` and ``code`` default to what OpenAI sends
        for that status); ``retry_after`` (seconds or an HTTP date) and
        ``retry_after_ms`` set the ``Retry-After`` / ``retry-after-ms``
        headers."""
        headers: dict[str, str] = {}
        if retry_after is not None:
            headers["Retry-After"] = _header_number(retry_after)
        if retry_after_ms is not None:
            headers["retry-after-ms"] = _header_number(retry_after_ms)
        return cls(
            kind="error",
            status=status,
            message=message or f"fake error {status}",
            error_type=error_type or _ERROR_TYPES.get(status, "server_error"),
            error_code=code if code is not None else _ERROR_CODES.get(status),
            headers=headers,
        )

    @classmethod
    def stream_error(
        cls,
        message: str = "The server is overloaded",
        *,
        error_type: str = "server_error",
        code: str | int | None = None,
        text: str | Sequence[str] = "this reply is cut short",
    ) -> FakeReply:
        """A streamed text reply (``text``'s chunks) that ends with an error
        event, ``data: {"error": {"message", "type", "param", "code"}}``, in
        place of its ``finish_reason``: the SDK raises an ``APIError``
        mid-stream. ``code`` may be a number (as some servers send an HTTP
        status there)."""
        return cls(
            kind="stream_error",
            chunks=_chunks_of(text),
            message=message,
            error_type=error_type,
            stream_code=code,
        )

    @classmethod
    def disconnect(
        cls, text: str | Sequence[str] = "this reply is cut short", *, after: int = 2
    ) -> FakeReply:
        """A text reply of which only the first ``after`` chunks (the first
        being the role chunk) are sent before the connection is cut."""
        return cls(kind="disconnect", chunks=_chunks_of(text), cut_after=after)

    @classmethod
    def deltas(
        cls,
        deltas: Iterable[Mapping[str, Any]],
        *,
        finish_reason: str = "stop",
        usage: Usage | None = None,
    ) -> FakeReply:
        """A stream of chunks whose ``choices[0].delta`` are ``deltas`` as
        given (after the role chunk, before the one with
        ``finish_reason``), e.g. ``{"tool_calls": [{"index": 0, "id": "c1",
        "function": {"name": "f", "arguments": {"x": 1}}}]}``, arguments as
        an object as a server might send them."""
        return cls(
            kind="deltas",
            raw_deltas=tuple(deltas),
            finish_reason=finish_reason,
            usage=usage or Usage(10, 5),
        )

    @classmethod
    def malformed(cls, line: str = "{not json", *, text: str | Sequence[str] = ()) -> FakeReply:
        """A stream with ``data: <line>`` (not JSON) after the chunks of
        ``text``; as a plain response, ``line`` is the body."""
        return cls(kind="malformed", chunks=_chunks_of(text), bad_line=line)


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}

_ERROR_CODES = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}


def _chunks_of(text: str | Sequence[str]) -> tuple[str, ...]:
    if not isinstance(text, str):
        return tuple(text)
    words = text.split(" ")
    return tuple(w if i == len(words) - 1 else w + " " for i, w in enumerate(words) if w)


def _header_number(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


def _cut(text: str, pieces: int) -> list[str]:
    """``text`` in ``pieces`` parts (some empty when it is short)."""
    size = -(-len(text) // pieces) if text else 0
    return [text[i * size : (i + 1) * size] for i in range(pieces)]


class FakeOpenAIServer:
    """An OpenAI-compatible server on ``127.0.0.1`` (an ephemeral port),
    serving ``POST /v1/chat/completions`` from a background thread.

    Each request takes the next :class:`FakeReply` of the script; once the
    script is empty, ``responder`` (a function of the request's JSON body)
    answers, if given, else the request gets a 500 saying so. ``requests`` holds every
    request's JSON body (``request_headers`` its headers, names in lower
    case), and ``disconnects`` counts clients that went away while a
    streamed reply was being written. Use it as a context manager, or
    ``start()`` and ``close()``."""

    def __init__(
        self,
        script: Iterable[FakeReply] = (),
        *,
        responder: Callable[[dict[str, Any]], FakeReply] | None = None,
    ) -> None:
        self._script: list[FakeReply] = list(script)
        self._responder = responder
        self._lock = threading.Condition()
        self.requests: list[dict[str, Any]] = []
        self.request_headers: list[dict[str, str]] = []
        self.disconnects = 0
        self._http: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------

    def start(self) -> FakeOpenAIServer:
        """Start serving (once); returns the server."""
        if self._http is not None:
            return self
        self._http = _HTTPServer(("127.0.0.1", 0), _Handler, self)
        self._thread = threading.Thread(
            target=self._http.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"FakeOpenAIServer:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and cut every open connection; returns promptly."""
        http, self._http = self._http, None
        if http is None:
            return
        http.closing.set()
        http.shutdown()
        http.server_close()
        http.cut_connections()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def port(self) -> int:
        if self._http is None:
            raise RuntimeError("FakeOpenAIServer is not started")
        return int(self._http.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, for a client's ``base_url``."""
        return f"http://127.0.0.1:{self.port}/v1"

    # -- the script --------------------------------------------------------

    def add(self, *replies: FakeReply) -> None:
        """Append replies to the script."""
        with self._lock:
            self._script.extend(replies)

    @property
    def remaining(self) -> int:
        """Replies not yet played."""
        with self._lock:
            return len(self._script)

    def wait_for_disconnects(self, count: int = 1, timeout: float = 2.0) -> bool:
        """Block until ``disconnects`` reaches ``count`` (True) or
        ``timeout`` seconds pass (False)."""
        with self._lock:
            return self._lock.wait_for(lambda: self.disconnects >= count, timeout)

    def _take(self, body: dict[str, Any], headers: dict[str, str]) -> FakeReply | None:
        with self._lock:
            self.requests.append(body)
            self.request_headers.append(headers)
            if self._script:
                return self._script.pop(0)
        return self._responder(body) if self._responder is not None else None

    def _client_left(self) -> None:
        with self._lock:
            self.disconnects += 1
            self._lock.notify_all()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        owner: FakeOpenAIServer,
    ) -> None:
        super().__init__(address, handler)
        self.owner = owner
        self.closing = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up is ordinary here; anything else is a bug
        # of the fake and is printed as usual.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def cut_connections(self) -> None:
        # Handler threads blocked reading a kept-alive connection, or
        # sleeping between chunks, wake up when their socket is shut.
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _ClientGone(Exception):
    """The client closed the connection while a reply was being written."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Each chunk goes out when written: no Nagle delay behind the client's
    # delayed ACK (which costs ~40 ms per reply on loopback).
    disable_nagle_algorithm = True
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {"_raw": raw.decode("utf-8", "replace")}
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send_json(404, _error_body(f"no route {self.path}", "not_found_error"))
            return
        owner = self.server.owner
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            reply = owner._take(body if isinstance(body, dict) else {"_body": body}, headers)
        except Exception as exc:  # the test's responder failed: say so to the client
            message = f"FakeOpenAIServer: the responder raised {type(exc).__name__}: {exc}"
            self._send_json(500, _error_body(message, "server_error"))
            return
        if reply is None:
            message = f"FakeOpenAIServer: script exhausted (request {len(owner.requests)})"
            self._send_json(500, _error_body(message, "server_error"))
            return
        if reply.kind == "error":
            error = _error_body(reply.message, reply.error_type, code=reply.error_code)
            self._send_json(reply.status, error, reply.headers)
            return
        model = str(body.get("model", "fake-model")) if isinstance(body, dict) else "fake-model"
        if isinstance(body, dict) and body.get("stream") and reply.kind != "whole":
            options = body.get("stream_options") or {}
            include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
            try:
                self._stream(reply, model, include_usage)
            except (_ClientGone, BrokenPipeError, ConnectionResetError):
                self.close_connection = True
                if not self.server.closing.is_set():
                    owner._client_left()
        else:
            self._answer_whole(reply, model)

    # -- plain (non-streaming) replies ---------------------------------------

    def _answer_whole(self, reply: FakeReply, model: str) -> None:
        if reply.kind == "disconnect":
            self._cut()
            return
        if reply.kind == "malformed":
            self._send_bytes(200, reply.bad_line.encode(), "application/json")
            return
        message: dict[str, Any] = {"role": "assistant", "content": "".join(reply.chunks) or None}
        if reply.kind == "refusal":
            message = {"role": "assistant", "content": None, "refusal": "".join(reply.chunks)}
        finish = "stop"
        if reply.calls:
            message["tool_calls"] = [call.to_chat() for call in reply.calls]
            finish = "tool_calls"
        completion = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": _usage_body(reply.usage),
        }
        self._send_json(200, completion)

    def _send_json(
        self, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        self._send_bytes(status, json.dumps(body).encode(), "application/json", headers)

    def _send_bytes(
        self,
        status: int,
        data: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    # -- streamed replies ------------------------------------------------------

    def _stream(self, reply: FakeReply, model: str, include_usage: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        events = _events(reply, model, include_usage)
        for number, event in enumerate(events):
            if reply.kind == "disconnect" and number == reply.cut_after:
                self._cut()
                return
            if number and reply.delay:
                self._pause(reply.delay)
            self._write_chunk(event)
        if reply.kind == "disconnect":
            self._cut()
            return
        self._write_chunk(b"data: [DONE]\n\n")
        self._write_raw(b"0\r\n\r\n")

    def _pause(self, seconds: float) -> None:
        """Sleep between chunks, noticing at once a client that leaves."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.server.closing.is_set():
                raise _ClientGone
            readable, _, _ = select.select([self.connection], [], [], min(left, 0.05))
            if readable:
                try:
                    peeked = self.connection.recv(1, socket.MSG_PEEK)
                except OSError:
                    raise _ClientGone from None
                if not peeked:
                    raise _ClientGone

    def _write_chunk(self, data: bytes) -> None:
        # HTTP/1.1 chunked framing, flushed at once: each SSE event is
        # one HTTP chunk, so slow events arrive one by one.
        self._write_raw(b"%x\r\n%s\r\n" % (len(data), data))

    def _write_raw(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()

    def _cut(self) -> None:
        """Drop the connection abruptly (no terminating chunk)."""
        self.close_connection = True
        self.wfile.flush()
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


def _events(reply: FakeReply, model: str, include_usage: bool) -> list[bytes]:
    """The ``data:`` lines of a streamed reply, each ready to send."""
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            body["usage"] = None
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    out = [chunk({"role": "assistant", "content": ""})]
    field = "refusal" if reply.kind == "refusal" else "content"
    out.extend(chunk({field: text}) for text in reply.chunks)
    if reply.kind == "stream_error":
        error: dict[str, Any] = {
            "message": reply.message,
            "type": reply.error_type,
            "param": None,
            "code": reply.stream_code,
        }
        out.append(b"data: " + json.dumps({"error": error}).encode() + b"\n\n")
        return out
    if reply.kind == "malformed":
        out.append(b"data: " + reply.bad_line.encode() + b"\n\n")
    out.extend(chunk(dict(delta)) for delta in reply.raw_deltas)
    deltas = [_call_deltas(i, c, reply.pieces) for i, c in enumerate(reply.calls)]
    if reply.indexed:
        for call_pieces in zip(*deltas, strict=True):
            out.extend(chunk({"tool_calls": [piece]}) for piece in call_pieces)
    else:  # one call after the other, without an index
        for pieces in deltas:
            out.extend(
                chunk({"tool_calls": [{k: v for k, v in piece.items() if k != "index"}]})
                for piece in pieces
            )
    finish = reply.finish_reason if reply.kind == "deltas" else None
    out.append(chunk({}, finish or ("tool_calls" if reply.calls else "stop")))
    if include_usage:
        usage = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [],
            "usage": _usage_body(reply.usage),
        }
        out.append(b"data: " + json.dumps(usage).encode() + b"\n\n")
    return out


def _call_deltas(index: int, call: ToolCall, pieces: int) -> list[dict[str, Any]]:
    """A call's deltas: the first names it (id, type, name, no arguments),
    the others carry its arguments piece by piece."""
    first = {
        "index": index,
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": ""},
    }
    rest = [
        {"index": index, "function": {"arguments": part}} for part in _cut(call.arguments, pieces)
    ]
    return [first, *rest]


def _usage_body(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def _error_body(message: str, error_type: str, *, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}
