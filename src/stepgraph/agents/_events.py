"""What an agent tells a streaming caller while it works."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from .._core import Event

__all__ = ["AgentDelta", "ToolCallEvent", "ToolCallStatus"]

ToolCallStatus = Literal["requested", "started", "finished", "failed", "rejected"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentDelta(Event):
    """A piece of an agent's reply as it streams in. ``turn`` counts the
    agent's model calls for the current input (from 1); ``attempt`` counts
    the tries of that call: deltas with a higher attempt replace those of the
    attempt before (a retried call starts its text over).

    Transient: it reaches ``stream()`` consumers while the model writes and
    is kept nowhere else (not in ``RunResult.events``, not when nobody
    streams)."""

    kind: ClassVar[str] = "agent_delta"
    transient: ClassVar[bool] = True
    text: str
    turn: int
    attempt: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallEvent(Event):
    """A tool call of an agent changed state: ``requested`` by the model,
    ``started``, ``finished``, ``failed`` (its error went to the model, or
    failed the run) or ``rejected`` (by a reviewer, or its arguments were
    invalid: the tool never ran)."""

    kind: ClassVar[str] = "tool_call"
    call_id: str
    tool: str
    status: ToolCallStatus
