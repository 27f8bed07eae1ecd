"""``ScriptedModel``: a chat model that plays back a script, for tests
without HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._exceptions import ModelError
from ..agents._types import (
    ChatMessage,
    ModelEvent,
    ModelReply,
    ModelRetrying,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)

__all__ = ["ScriptedCall", "ScriptedModel", "ScriptedReply"]


@dataclass(frozen=True)
class ScriptedReply:
    """One model turn of a script: its text (streamed in ``chunks`` if
    given, else word by word), its tool calls, its usage. ``retry_first``
    plays that many failed attempts first (each a :class:`ModelRetrying`
    after a few deltas); ``error`` makes the turn fail with it; ``delay`` is
    slept before each delta."""

    text: str | None = None
    tool_calls: Sequence[ToolCall] = ()
    usage: Usage = field(default_factory=lambda: Usage(10, 5))
    chunks: Sequence[str] | None = None
    retry_first: int = 0
    error: BaseException | None = None
    delay: float = 0.0


@dataclass(frozen=True)
class ScriptedCall:
    """What one call to the model was given."""

    messages: tuple[ChatMessage, ...]
    tools: tuple[Mapping[str, Any], ...]
    response_format: Mapping[str, Any] | None


Script = ScriptedReply | str | Callable[[ScriptedCall], "ScriptedReply | str"]


class ScriptedModel:
    """Answers each call with the next reply of its script (a
    :class:`ScriptedReply`, a text, or a function of the call returning
    one); ``calls`` records what every call was given. A call past the end
    of the script raises :class:`~stepgraph.ModelError`."""

    def __init__(self, script: Iterable[Script] = (), *, name: str = "scripted") -> None:
        self._script: list[Script] = list(script)
        self._name = name
        self.calls: list[ScriptedCall] = []

    @property
    def name(self) -> str:
        return self._name

    def add(self, *replies: Script) -> None:
        """Append replies to the script."""
        self._script.extend(replies)

    @property
    def remaining(self) -> int:
        """Replies not yet played."""
        return len(self._script)

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[Mapping[str, Any]] = (),
        response_format: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[ModelEvent]:
        call = ScriptedCall(tuple(messages), tuple(tools), response_format)
        self.calls.append(call)
        if not self._script:
            error = ModelError(
                f"scripted model {self._name!r}: no reply left for call {len(self.calls)}"
            )
            return self._play(ScriptedReply(error=error))
        entry = self._script.pop(0)
        reply = entry(call) if callable(entry) else entry
        if isinstance(reply, str):
            reply = ScriptedReply(reply)
        return self._play(reply)

    async def _play(self, reply: ScriptedReply) -> AsyncIterator[ModelEvent]:
        pieces = _pieces(reply)
        for attempt in range(1, reply.retry_first + 1):
            for piece in pieces[:2]:
                yield piece
            yield ModelRetrying(attempt=attempt + 1, delay=0.0, reason="scripted retry")
        if reply.error is not None:
            raise reply.error
        for piece in pieces:
            if reply.delay:
                await asyncio.sleep(reply.delay)
            yield piece
        message = ChatMessage.assistant(reply.text, reply.tool_calls)
        finish = "tool_calls" if reply.tool_calls else "stop"
        yield ModelReply(message, reply.usage, finish)


def _pieces(reply: ScriptedReply) -> list[TextDelta | ToolCallDelta]:
    out: list[TextDelta | ToolCallDelta] = []
    if reply.text:
        chunks = reply.chunks
        if chunks is None:
            words = reply.text.split(" ")
            chunks = [w if i == len(words) - 1 else w + " " for i, w in enumerate(words)]
        out.extend(TextDelta(c) for c in chunks if c)
    for index, call in enumerate(reply.tool_calls):
        out.append(ToolCallDelta(index, call.id, call.name, call.arguments))
    return out
