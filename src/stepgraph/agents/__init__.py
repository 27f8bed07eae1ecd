"""Agents: LLM executors over chat models, with tools, tool approval, live
token streaming and structured output (``import stepgraph as sg``: every
public name here is also ``sg.<name>``)."""

from ._agent import Agent as Agent
from ._approval import ToolApproval as ToolApproval
from ._approval import ToolApprovalRequest as ToolApprovalRequest
from ._events import AgentDelta as AgentDelta
from ._events import ToolCallEvent as ToolCallEvent
from ._openai import ModelRetry as ModelRetry
from ._openai import OpenAIChatModel as OpenAIChatModel
from ._tools import Tool as Tool
from ._tools import ToolArgumentsError as ToolArgumentsError
from ._tools import tool as tool
from ._types import AgentResponse as AgentResponse
from ._types import ChatMessage as ChatMessage
from ._types import ChatModel as ChatModel
from ._types import ModelEvent as ModelEvent
from ._types import ModelReply as ModelReply
from ._types import ModelRetrying as ModelRetrying
from ._types import TextDelta as TextDelta
from ._types import ToolCall as ToolCall
from ._types import ToolCallDelta as ToolCallDelta

__all__ = [
    "Agent",
    "AgentDelta",
    "AgentResponse",
    "ChatMessage",
    "ChatModel",
    "ModelEvent",
    "ModelReply",
    "ModelRetry",
    "ModelRetrying",
    "OpenAIChatModel",
    "TextDelta",
    "Tool",
    "ToolApproval",
    "ToolApprovalRequest",
    "ToolArgumentsError",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallEvent",
    "tool",
]
