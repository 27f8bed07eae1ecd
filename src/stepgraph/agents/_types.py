"""The agent layer's data: chat messages, tool calls, token usage, and what a
model's streaming call yields.

Everything here is a frozen dataclass of plain values, so the safe
checkpoint codec stores it (an agent's conversation lives in its snapshot).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from .._core import Usage

__all__ = [
    "AgentResponse",
    "ChatMessage",
    "ChatModel",
    "ModelEvent",
    "ModelReply",
    "ModelRetrying",
    "TextDelta",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
]

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool call a model asked for: its id, the tool's name and the
    arguments as the model wrote them (a JSON text, not yet validated)."""

    id: str
    name: str
    arguments: str

    def to_chat(self) -> dict[str, Any]:
        """The call as the Chat Completions API writes it."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a conversation. ``tool_calls`` are an assistant's;
    ``tool_call_id`` says which call a ``tool`` message answers."""

    role: Role
    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    @classmethod
    def system(cls, content: str) -> ChatMessage:
        return cls("system", content)

    @classmethod
    def user(cls, content: str) -> ChatMessage:
        return cls("user", content)

    @classmethod
    def assistant(cls, content: str | None, tool_calls: Sequence[ToolCall] = ()) -> ChatMessage:
        return cls("assistant", content, tuple(tool_calls))

    @classmethod
    def tool(cls, tool_call_id: str, content: str) -> ChatMessage:
        return cls("tool", content, (), tool_call_id)


# -- what ChatModel.stream yields ---------------------------------------------


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the reply's text, as it arrived."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a tool call: ``index`` tells the calls of one reply apart
    (pieces of several calls may interleave); ``id`` and ``name`` come with
    a call's first piece, ``arguments`` is the next piece of its JSON text."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class ModelRetrying:
    """The call failed in a way worth retrying (429, 5xx, a dropped
    connection) and starts over after ``delay`` seconds as ``attempt``
    (counted from 1 for the first call). Deltas yielded before it belong to
    the abandoned attempt."""

    attempt: int
    delay: float
    reason: str


@dataclass(frozen=True, slots=True)
class ModelReply:
    """The whole reply, last: the assistant message (its text and complete
    tool calls), the tokens the call used, and why the model stopped.
    ``refusal`` is the text of a refusal the server sent as such (OpenAI's
    ``refusal`` field; it is the message's text too)."""

    message: ChatMessage
    usage: Usage
    finish_reason: str | None = None
    refusal: str | None = None


ModelEvent = TextDelta | ToolCallDelta | ModelRetrying | ModelReply


@runtime_checkable
class ChatModel(Protocol):
    """A chat model: one streaming call per model turn.

    ``stream`` yields text and tool-call deltas as they arrive and ends with
    exactly one :class:`ModelReply`; it may yield :class:`ModelRetrying`
    between attempts. ``tools`` are function schemas in the Chat Completions
    shape (``{"type": "function", "function": {"name", "description",
    "parameters"}}``); ``response_format`` is a Chat Completions response
    format (``{"type": "json_schema", ...}``) or ``None``. A failure that is
    not retried (or retries that ran out) raises :class:`ModelError`.
    Cancelling the iteration (``aclose()`` or cancelling the task) must end
    the call: the connection is closed."""

    @property
    def name(self) -> str:
        """The model's name, as the server knows it."""
        ...

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[Mapping[str, Any]] = (),
        response_format: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[ModelEvent]: ...


@dataclass(frozen=True, slots=True)
class AgentResponse:
    """What an agent sends when its model is done: the reply's ``text``, the
    whole conversation (``messages``, without the agent's instructions; the
    next agent it is sent to carries on from it) and the tokens this answer
    took (``usage``)."""

    text: str
    messages: tuple[ChatMessage, ...]
    usage: Usage

    def __str__(self) -> str:
        return self.text
