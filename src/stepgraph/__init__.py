"""stepgraph: typed agent workflows in Pregel-style supersteps.

    import stepgraph as sg

The public API is re-exported here; implementation lives in underscored modules.
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any
from typing import Never as Never

from ._builder import WorkflowBuilder as WorkflowBuilder
from ._checkpoint import Checkpoint as Checkpoint
from ._checkpoint import CheckpointInfo as CheckpointInfo
from ._checkpoint import CheckpointStore as CheckpointStore
from ._checkpoint import MemoryCheckpointStore as MemoryCheckpointStore
from ._checkpoint import PostgresCheckpointStore as PostgresCheckpointStore
from ._checkpoint import RunInfo as RunInfo
from ._checkpoint import SnapshotPart as SnapshotPart
from ._checkpoint import SqliteCheckpointStore as SqliteCheckpointStore
from ._core import Backend as Backend
from ._core import Event as Event
from ._core import ExecutorCompletedEvent as ExecutorCompletedEvent
from ._core import ExecutorFailedEvent as ExecutorFailedEvent
from ._core import ExecutorInvokedEvent as ExecutorInvokedEvent
from ._core import FailedEvent as FailedEvent
from ._core import LocalBackend as LocalBackend
from ._core import OutputEvent as OutputEvent
from ._core import PendingRequest as PendingRequest
from ._core import Placement as Placement
from ._core import RequestInfoEvent as RequestInfoEvent
from ._core import RetryPolicy as RetryPolicy
from ._core import RunStartedEvent as RunStartedEvent
from ._core import RunStatus as RunStatus
from ._core import RunUsage as RunUsage
from ._core import StateView as StateView
from ._core import StatusEvent as StatusEvent
from ._core import SuperstepCompletedEvent as SuperstepCompletedEvent
from ._core import SuperstepStartedEvent as SuperstepStartedEvent
from ._core import Usage as Usage
from ._core import UserEvent as UserEvent
from ._core import WarningEvent as WarningEvent
from ._core import WorkflowContext as WorkflowContext
from ._edges import Case as Case
from ._edges import Default as Default
from ._exceptions import AgentError as AgentError
from ._exceptions import CheckpointDecodeError as CheckpointDecodeError
from ._exceptions import CheckpointEncodeError as CheckpointEncodeError
from ._exceptions import CheckpointError as CheckpointError
from ._exceptions import CheckpointIntegrityError as CheckpointIntegrityError
from ._exceptions import CheckpointLeaseLostError as CheckpointLeaseLostError
from ._exceptions import CheckpointMismatchError as CheckpointMismatchError
from ._exceptions import CheckpointNotFoundError as CheckpointNotFoundError
from ._exceptions import CheckpointWarning as CheckpointWarning
from ._exceptions import ConvergenceError as ConvergenceError
from ._exceptions import EventError as EventError
from ._exceptions import ExecutorTimeoutError as ExecutorTimeoutError
from ._exceptions import MessageTypeError as MessageTypeError
from ._exceptions import ModelError as ModelError
from ._exceptions import RequestError as RequestError
from ._exceptions import ResponseValueError as ResponseValueError
from ._exceptions import RoutingError as RoutingError
from ._exceptions import StateConflictError as StateConflictError
from ._exceptions import StepgraphError as StepgraphError
from ._exceptions import SubworkflowError as SubworkflowError
from ._exceptions import ToolArgumentsError as ToolArgumentsError
from ._exceptions import WorkflowBusyError as WorkflowBusyError
from ._exceptions import WorkflowDefinitionError as WorkflowDefinitionError
from ._exceptions import WorkflowRunError as WorkflowRunError
from ._executor import Executor as Executor
from ._executor import FunctionExecutor as FunctionExecutor
from ._executor import executor as executor
from ._executor import handler as handler
from ._executor import response_handler as response_handler
from ._inspect import StateSnapshot as StateSnapshot
from ._persistence import CheckpointConfig as CheckpointConfig
from ._ray import RayBackend as RayBackend
from ._reducers import union as union
from ._result import RunResult as RunResult
from ._stream import RunStream as RunStream
from ._subworkflow import SubworkflowRequest as SubworkflowRequest
from ._subworkflow import SubworkflowResponse as SubworkflowResponse
from ._subworkflow import WorkflowExecutor as WorkflowExecutor
from ._workflow import Workflow as Workflow

if _TYPE_CHECKING:  # at run time, imported when first used (they need pydantic)
    from .agents import Agent as Agent
    from .agents import AgentDelta as AgentDelta
    from .agents import AgentResponse as AgentResponse
    from .agents import ChatMessage as ChatMessage
    from .agents import ChatModel as ChatModel
    from .agents import ModelEvent as ModelEvent
    from .agents import ModelReply as ModelReply
    from .agents import ModelRetry as ModelRetry
    from .agents import ModelRetrying as ModelRetrying
    from .agents import OpenAIChatModel as OpenAIChatModel
    from .agents import TextDelta as TextDelta
    from .agents import Tool as Tool
    from .agents import ToolApproval as ToolApproval
    from .agents import ToolApprovalRequest as ToolApprovalRequest
    from .agents import ToolCall as ToolCall
    from .agents import ToolCallDelta as ToolCallDelta
    from .agents import ToolCallEvent as ToolCallEvent
    from .agents import tool as tool

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentDelta",
    "AgentError",
    "AgentResponse",
    "Backend",
    "Case",
    "ChatMessage",
    "ChatModel",
    "Checkpoint",
    "CheckpointConfig",
    "CheckpointDecodeError",
    "CheckpointEncodeError",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointIntegrityError",
    "CheckpointLeaseLostError",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "CheckpointStore",
    "CheckpointWarning",
    "ConvergenceError",
    "Default",
    "Event",
    "EventError",
    "Executor",
    "ExecutorCompletedEvent",
    "ExecutorFailedEvent",
    "ExecutorInvokedEvent",
    "ExecutorTimeoutError",
    "FailedEvent",
    "FunctionExecutor",
    "LocalBackend",
    "MemoryCheckpointStore",
    "MessageTypeError",
    "ModelError",
    "ModelEvent",
    "ModelReply",
    "ModelRetry",
    "ModelRetrying",
    "Never",
    "OpenAIChatModel",
    "OutputEvent",
    "PendingRequest",
    "Placement",
    "PostgresCheckpointStore",
    "RayBackend",
    "RequestError",
    "RequestInfoEvent",
    "ResponseValueError",
    "RetryPolicy",
    "RoutingError",
    "RunInfo",
    "RunResult",
    "RunStartedEvent",
    "RunStatus",
    "RunStream",
    "RunUsage",
    "SnapshotPart",
    "SqliteCheckpointStore",
    "StateConflictError",
    "StateSnapshot",
    "StateView",
    "StatusEvent",
    "StepgraphError",
    "SubworkflowError",
    "SubworkflowRequest",
    "SubworkflowResponse",
    "SuperstepCompletedEvent",
    "SuperstepStartedEvent",
    "TextDelta",
    "Tool",
    "ToolApproval",
    "ToolApprovalRequest",
    "ToolArgumentsError",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallEvent",
    "Usage",
    "UserEvent",
    "WarningEvent",
    "Workflow",
    "WorkflowBuilder",
    "WorkflowBusyError",
    "WorkflowContext",
    "WorkflowDefinitionError",
    "WorkflowExecutor",
    "WorkflowRunError",
    "executor",
    "handler",
    "response_handler",
    "tool",
    "union",
]

_AGENTS = frozenset(
    {
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
        "ToolCall",
        "ToolCallDelta",
        "ToolCallEvent",
        "tool",
    }
)


def __getattr__(name: str) -> _Any:
    if name in _AGENTS:
        from . import agents

        value = getattr(agents, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'stepgraph' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_AGENTS})
