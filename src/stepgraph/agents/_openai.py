"""``OpenAIChatModel``: a :class:`ChatModel` on the official ``openai``
SDK's streaming Chat Completions API (OpenAI, or any compatible server:
vLLM, Ollama, llama.cpp...), with our own retries (:class:`ModelRetry`).

    model = OpenAIChatModel("gpt-4o-mini", temperature=0)
    async for event in model.stream([ChatMessage.user("Hi")]):
        ...

The SDK is imported when a model is created: ``pip install
'stepgraph[openai]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import math
import os
import random
import time
import urllib.parse
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .._core import mended
from .._exceptions import ModelError
from ._types import (
    ChatMessage,
    ModelEvent,
    ModelReply,
    ModelRetrying,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)

if TYPE_CHECKING:
    from openai import AsyncOpenAI

__all__ = ["ModelRetry", "OpenAIChatModel"]

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

# Servers that need no key (Ollama, vLLM) still get a non-empty one: the
# SDK refuses to build a client without.
_PLACEHOLDER_KEY = "no-key"


@dataclass(frozen=True, kw_only=True)
class ModelRetry:
    """How a model call is retried: at most ``max_attempts`` attempts (the
    first included), with exponential backoff between them,
    ``initial_delay * multiplier ** (n - 1)`` seconds before the n-th
    retry, at most ``max_delay``, shortened by a random fraction up to
    ``jitter``. A server's ``retry-after-ms`` / ``Retry-After`` replaces
    the backoff, up to ``max_retry_after`` seconds."""

    max_attempts: int = 5
    initial_delay: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 20.0
    jitter: float = 0.25
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("ModelRetry.max_attempts must be at least 1")
        if min(self.initial_delay, self.max_delay, self.max_retry_after) < 0:
            raise ValueError("ModelRetry delays must not be negative")
        if self.multiplier < 1:
            raise ValueError("ModelRetry.multiplier must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("ModelRetry.jitter must be between 0 and 1")

    def delay(self, retry: int, *, retry_after: float | None = None) -> float:
        """Seconds to wait before the ``retry``-th retry (1 for the
        second attempt); ``retry_after`` is what the server asked for."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        backoff = self.initial_delay * self.multiplier ** min(retry - 1, 64)
        return min(backoff, self.max_delay) * (1 - self.jitter * random.random())


class OpenAIChatModel:
    """A chat model served over the Chat Completions API.

    ``base_url`` and ``api_key`` default to the SDK's (``OPENAI_BASE_URL``,
    ``OPENAI_API_KEY``); with no key at all a placeholder is sent, for
    local servers that need none. Pass ``client`` (an ``openai.AsyncOpenAI``)
    instead to configure the SDK yourself; either way the SDK does not
    retry, ``retry`` does. ``request_options`` (``temperature``,
    ``max_tokens``, ...) go with every request.

    ``stream`` yields :class:`TextDelta` and :class:`ToolCallDelta` as they
    arrive, :class:`ModelRetrying` before a retry, and ends with one
    :class:`ModelReply`; a failure that is not retried raises
    :class:`~stepgraph.ModelError` naming the model, the URL and what the
    server said."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        client: AsyncOpenAI | None = None,
        retry: ModelRetry = ModelRetry(),
        **request_options: Any,
    ) -> None:
        self._openai = _import_openai()
        if client is not None and (base_url is not None or api_key is not None):
            raise TypeError("OpenAIChatModel: pass either client or base_url/api_key, not both")
        # An SDK client's connections belong to the event loop that opened
        # them: the model makes one client per loop (a workflow runs under
        # successive ``asyncio.run`` calls), closed when that loop shuts
        # down. A client passed in is the caller's, used in one loop only.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClient] = (
            weakref.WeakKeyDictionary()
        )
        self._given: AsyncOpenAI | None = None
        self._given_loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        if client is None:
            key = api_key or os.environ.get("OPENAI_API_KEY") or _PLACEHOLDER_KEY
            self._options: dict[str, Any] = {"api_key": key, "max_retries": 0}
            if base_url is not None:
                self._options["base_url"] = base_url
            # Built now, not at first use: a bad URL or option fails here;
            # it serves the first loop that calls.
            self._spare: AsyncOpenAI | None = self._openai.AsyncOpenAI(**self._options)
            self._base_url = str(self._spare.base_url)
            self._api_key = self._spare.api_key
        else:
            self._given = client.with_options(max_retries=0)
            self._spare = None
            self._options = {}
            self._base_url = str(client.base_url)
            self._api_key = client.api_key
        self._model = model
        self._retry = retry
        self._request_options = dict(request_options)

    def __getstate__(self) -> dict[str, Any]:
        # Sent (to a Ray actor, say) as what builds it again: a client holds
        # locks and connections, so the copy makes its own.
        return {
            "model": self._model,
            "base_url": self._base_url,
            "api_key": self._api_key,
            "retry": self._retry,
            "options": self._request_options,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["model"],
            base_url=state["base_url"],
            api_key=state["api_key"],
            retry=state["retry"],
            **state["options"],
        )

    @property
    def name(self) -> str:
        return self._model

    @property
    def base_url(self) -> str:
        """Where requests go (``.../v1``)."""
        return self._base_url.rstrip("/")

    def __repr__(self) -> str:
        return f"OpenAIChatModel({self._model!r}, base_url={_shown(self.base_url)!r})"

    async def aclose(self) -> None:
        """Close the HTTP client this model made for the running event loop
        (not one passed in); a later call makes a new one."""
        held = self._clients.pop(asyncio.get_running_loop(), None)
        if held is not None:
            await held.life.aclose()  # (closes the client)

    async def __aenter__(self) -> OpenAIChatModel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _client(self) -> AsyncOpenAI:
        """The SDK client for the running event loop."""
        loop = asyncio.get_running_loop()
        if self._given is not None:
            if self._given_loop is None:
                self._given_loop = weakref.ref(loop)
            elif self._given_loop() is not loop:  # (another loop, or one gone since)
                raise ModelError(
                    f"model {self._model!r} at {_shown(self.base_url)}: the openai client "
                    "passed to OpenAIChatModel was first used in another event loop, and an "
                    "SDK client belongs to the loop that opened its connections; pass "
                    "base_url/api_key instead (the model then makes a client per event loop)"
                )
            return self._given
        held = self._clients.get(loop)
        if held is None:
            client, self._spare = self._spare or self._openai.AsyncOpenAI(**self._options), None
            held = self._clients[loop] = _LoopClient(client)
            await held.start()
        return held.client

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[Mapping[str, Any]] = (),
        response_format: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[ModelEvent]:
        request: dict[str, Any] = dict(self._request_options)
        if tools:
            request["tools"] = [dict(tool) for tool in tools]
        if response_format is not None:
            request["response_format"] = dict(response_format)
        request.update(
            model=self._model,
            messages=[_message_param(m) for m in messages],
            stream=True,
            stream_options={"include_usage": True},
        )
        attempt = 1
        while True:
            failure: _Failure | None = None
            async with contextlib.aclosing(self._attempt(request)) as events:
                async for event in events:
                    if isinstance(event, _Failure):
                        failure = event
                    else:
                        yield event
            if failure is None:
                return
            if not failure.retryable or attempt >= self._retry.max_attempts:
                raise self._error(failure, attempt) from failure.error
            delay = self._retry.delay(attempt, retry_after=failure.retry_after)
            attempt += 1
            yield ModelRetrying(attempt=attempt, delay=delay, reason=failure.reason)
            await asyncio.sleep(delay)

    async def _attempt(
        self, request: dict[str, Any]
    ) -> AsyncGenerator[ModelEvent | _Failure, None]:
        """One call: its deltas and its reply, or its deltas and then why
        it failed."""
        openai = self._openai
        try:
            client = await self._client()
            sdk_stream = await client.chat.completions.create(**request)
        except openai.APIError as exc:
            yield _Failure.from_sdk(exc, received=False)
            return
        assembler = _Assembler()
        try:
            while True:
                try:
                    chunk = await sdk_stream.__anext__()
                except StopAsyncIteration:
                    break
                except openai.APIError as exc:
                    yield _Failure.from_sdk(exc, received=assembler.received)
                    return
                except ValueError as exc:  # a data line that is not JSON
                    yield _Failure.malformed(f"a stream event is not JSON ({exc})", exc)
                    return
                for event in assembler.feed(chunk):
                    yield event
        finally:
            # Dropping the response closes the connection at once when the
            # consumer leaves early (aclose, cancellation): the server sees it.
            await sdk_stream.close()
        finished = assembler.finish()
        if not assembler.received:
            kind = _content_type(sdk_stream)
            if kind and "text/event-stream" not in kind:
                finished = _Failure.malformed(
                    f"the server answered with {kind}, not an event stream "
                    "(text/event-stream): it does not stream chat completions, or ignored "
                    "stream=true, or base_url is not a Chat Completions endpoint"
                )
        yield finished

    def _error(self, failure: _Failure, attempts: int) -> ModelError:
        message = f"model {self._model!r} at {_shown(self.base_url)}: {failure.reason}"
        if failure.retryable:
            message += f" (gave up after {attempts} attempt{'s' if attempts > 1 else ''})"
        path = urllib.parse.urlsplit(self.base_url).path
        if failure.status == 404 and "/v1" not in path and "/openai" not in path:
            # (OpenAI, Ollama, vLLM, llama.cpp and LM Studio serve under /v1)
            message += "; base_url has no /v1, under which OpenAI-compatible servers answer"
        return ModelError(" ".join(message.split()), status=failure.status)


class _LoopClient:
    """An SDK client the model made for one event loop, closed when that
    loop shuts down: ``life`` is an async generator started on the loop, so
    the loop's ``shutdown_asyncgens`` (``asyncio.run`` calls it) closes it,
    and with it the client, while the loop still runs. A loop closed without
    that drops it quietly (asyncio finalizes no generator of a closed loop)."""

    __slots__ = ("client", "life")

    def __init__(self, client: AsyncOpenAI) -> None:
        self.client = client
        self.life = self._life()

    async def start(self) -> None:
        await self.life.__anext__()

    async def _life(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            await self.client.close()


# -- failures ------------------------------------------------------------------


@dataclass(frozen=True)
class _Failure:
    """Why an attempt failed (what :meth:`OpenAIChatModel._attempt` yields
    last in place of a reply)."""

    reason: str
    error: BaseException | None = None
    status: int | None = None
    retryable: bool = False
    retry_after: float | None = None

    @classmethod
    def from_sdk(cls, exc: Exception, *, received: bool) -> _Failure:
        """An SDK error: an HTTP status, a timeout, a connection error, or
        an error event in the stream. ``received``: chunks had arrived."""
        import openai

        if isinstance(exc, openai.APIStatusError):
            # (a 429 for a spent quota, not a rate, stays so however long
            # one waits: OpenAI says which with the code)
            spent = getattr(exc, "code", None) == "insufficient_quota"
            return cls(
                f"HTTP {exc.status_code}: {_server_message(exc)}",
                exc,
                status=exc.status_code,
                retryable=exc.status_code in _RETRY_STATUSES and not spent,
                retry_after=_retry_after(exc.response.headers),
            )
        if isinstance(exc, openai.APITimeoutError):
            return cls("the request timed out", exc, retryable=True)
        if isinstance(exc, openai.APIConnectionError):
            where = "the connection was lost mid-stream" if received else "cannot connect"
            cause = f" ({_reason(exc.__cause__)})" if exc.__cause__ is not None else ""
            return cls(where + cause, exc, retryable=True)
        # An error event in the stream, after the server began to answer:
        # retried when what it names passes with time (the server
        # overloaded or failing, a rate limit), as the same error sent as
        # an HTTP status is; not when it is the request's (or the
        # account's) fault, nor when it names nothing.
        body = getattr(exc, "body", None)
        kind = _error_kind(body)
        named = f" ({kind})" if kind else ""
        return cls(
            f"the server sent an error{' mid-stream' if received else ''}{named}: "
            f"{_server_message(exc)}",
            exc,
            retryable=_transient(body),
        )

    @classmethod
    def malformed(cls, reason: str, exc: Exception | None = None) -> _Failure:
        """The stream is not a chat completion: not worth retrying."""
        return cls(f"malformed stream: {reason}", exc)


# What marks an error event's ``type``, ``code`` or ``status`` as passing
# with time: OpenAI's ``server_error``, ``rate_limit_exceeded``; an
# ``overloaded_error``; Google's ``UNAVAILABLE``, ``INTERNAL``,
# ``RESOURCE_EXHAUSTED``; a timeout.
_TRANSIENT_MARKS = (
    "server_error",
    "overloaded",
    "rate_limit",
    "timeout",
    "timed_out",
    "unavailable",
    "internal",
    "resource_exhausted",
)


def _error_fields(body: Any) -> list[Any]:
    if not isinstance(body, Mapping):
        return []
    return [body.get(name) for name in ("type", "code", "status")]


def _error_kind(body: Any) -> str:
    """An error event's type and code, as its reason names them."""
    seen: list[str] = []
    for value in _error_fields(body):
        text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""
        if text and text not in seen:
            seen.append(text)
    return ", ".join(seen)[:100]


def _transient(body: Any) -> bool:
    """Whether an error event sent mid-stream names a failure that passes
    with time: an HTTP status that is retried (some servers put one in
    ``code``), or a type or code marked so (see ``_TRANSIENT_MARKS``) —
    never a spent quota."""
    words: list[str] = []
    for value in _error_fields(body):
        if isinstance(value, bool):
            continue
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 6:
            value = int(value)
        if isinstance(value, int):
            return value in _RETRY_STATUSES
        if isinstance(value, str):
            words.append(value.lower())
    text = " ".join(words)
    if "insufficient_quota" in text:
        return False
    return any(mark in text for mark in _TRANSIENT_MARKS)


def _content_type(sdk_stream: Any) -> str | None:
    """The media type the server answered a stream request with, if known."""
    headers = getattr(getattr(sdk_stream, "response", None), "headers", None)
    value = headers.get("content-type") if headers is not None else None
    if not isinstance(value, str):
        return None
    return value.split(";")[0].strip() or None


def _reason(exc: BaseException) -> str:
    """An exception as a reason: its message, or its type when it has
    none (a connection reset often has no message)."""
    return str(exc) or type(exc).__name__


def _server_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        message = body.get("message")
        if isinstance(message, str) and message:
            return message
    if isinstance(body, str) and body.strip():
        return body.strip()[:300]
    return str(getattr(exc, "message", exc))


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """The delay a server asked for: ``retry-after-ms`` first, then
    ``Retry-After`` in seconds or as an HTTP date."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds is not None:
        seconds = _number(milliseconds)
        if seconds is not None:
            return seconds / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _number(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


# -- request and reply -----------------------------------------------------------


def _message_param(message: ChatMessage) -> dict[str, Any]:
    """A message as the request carries it; half a character in its text
    (a lone surrogate: UTF-8, and so the request's JSON, has no form for
    it) as U+FFFD, as in what the server sends."""
    content = message.content
    param: dict[str, Any] = {"role": message.role, "content": content and mended(content)}
    if message.role == "tool":
        param["tool_call_id"] = message.tool_call_id
        param["content"] = param["content"] or ""
    elif message.tool_calls:
        param["tool_calls"] = [
            ToolCall(call.id, call.name, mended(call.arguments)).to_chat()
            for call in message.tool_calls
        ]
    return param


@dataclass
class _PartialCall:
    id: str | None = None
    name: str | None = None
    arguments: list[str] = field(default_factory=list)


class _Assembler:
    """Turns chunks into deltas, and at the end into the whole reply."""

    def __init__(self) -> None:
        self.received = False
        self._text: list[str] = []
        self._calls: dict[int, _PartialCall] = {}
        self._last_call: int | None = None  # the index of the call a delta last added to
        self._finish_reason: str | None = None
        self._usage = Usage()
        self._refusal: list[str] = []

    def feed(self, chunk: Any) -> Iterator[TextDelta | ToolCallDelta]:
        self.received = True
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self._usage = _usage(usage)
        for choice in getattr(chunk, "choices", None) or ():
            if getattr(choice, "index", 0) != 0:
                continue
            delta = getattr(choice, "delta", None)
            # A refusal (a model declining to answer) is its reply's text;
            # kept apart too, so that an agent asked for structured output
            # can say the model refused rather than that its JSON is bad.
            refusal = getattr(delta, "refusal", None)
            content = getattr(delta, "content", None) or refusal
            if refusal:
                self._refusal.append(refusal)
            if content:
                self._text.append(content)
                yield TextDelta(mended(content))
            for piece in getattr(delta, "tool_calls", None) or ():
                yield self._call_piece(piece)
            finish_reason = getattr(choice, "finish_reason", None)
            if finish_reason is not None:
                self._finish_reason = finish_reason

    def _call_piece(self, piece: Any) -> ToolCallDelta:
        function = piece.function
        name = getattr(function, "name", None) or None
        arguments = getattr(function, "arguments", None) or ""
        if not isinstance(arguments, str):
            # (llama.cpp's server has sent them as a JSON object, not as
            # its text: the object is what the model meant)
            arguments = json.dumps(arguments, ensure_ascii=False)
        piece_id = getattr(piece, "id", None) or None
        index = getattr(piece, "index", None)
        if not isinstance(index, int):
            # Some servers (Gemini's OpenAI-compatible endpoint) send no
            # index: a delta with an id of its own starts the next call,
            # one without continues the call before it.
            last = self._last_call
            if last is None or (piece_id is not None and piece_id != self._calls[last].id):
                index = max(self._calls, default=-1) + 1
            else:
                index = last
        self._last_call = index
        call = self._calls.setdefault(index, _PartialCall())
        call.id = call.id or piece_id
        if name and name != call.name:  # (some servers split a name, some repeat it)
            call.name = (call.name or "") + name
        call.arguments.append(arguments)
        return ToolCallDelta(index, piece_id, name and mended(name), mended(arguments))

    def finish(self) -> ModelReply | _Failure:
        """The reply, once the stream has ended; or why there is none."""
        if not self.received:
            return _Failure.malformed("the server sent no chat completion chunks")
        if self._finish_reason is None:
            # A stream cut short without a network error (a proxy that
            # closed it cleanly): retried like a dropped connection.
            return _Failure("the stream ended before its finish_reason", retryable=True)
        calls = []
        for index in sorted(self._calls):
            call = self._calls[index]
            if not call.name:
                return _Failure.malformed(f"tool call {index} has no name")
            call_id, arguments = call.id or f"call_{index}", "".join(call.arguments)
            calls.append(ToolCall(mended(call_id), mended(call.name), mended(arguments)))
        message = ChatMessage.assistant(mended("".join(self._text)) or None, calls)
        refusal = mended("".join(self._refusal)) or None
        return ModelReply(message, self._usage, self._finish_reason, refusal)


def _usage(usage: Any) -> Usage:
    prompt_details = getattr(usage, "prompt_tokens_details", None)
    completion_details = getattr(usage, "completion_tokens_details", None)
    return Usage(
        prompt_tokens=usage.prompt_tokens or 0,
        completion_tokens=usage.completion_tokens or 0,
        cached_tokens=getattr(prompt_details, "cached_tokens", None) or 0,
        reasoning_tokens=getattr(completion_details, "reasoning_tokens", None) or 0,
    )


def _shown(url: str) -> str:
    """``url`` as errors and ``repr`` show it: credentials in it — a user
    and password (``https://user:key@proxy/v1``), a query's values
    (``?api-key=...``) — read ``***``, since errors reach run events,
    spans and logs."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "(a URL that cannot be read)"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = "&".join(
        f"{name}=***" if sep else name
        for name, sep, _ in (pair.partition("=") for pair in parts.query.split("&") if pair)
    )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _import_openai() -> ModuleType:
    try:
        import openai
    except ImportError as exc:
        raise ImportError(
            "OpenAIChatModel needs the openai package: pip install 'stepgraph[openai]'"
        ) from exc
    return openai
