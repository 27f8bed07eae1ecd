"""stepgraph: typed agent workflows in Pregel-style supersteps.

    import stepgraph as sg

The public API is re-exported here; implementation lives in underscored modules.
"""

from typing import Never as Never

from ._builder import WorkflowBuilder as WorkflowBuilder
from ._checkpoint import Checkpoint as Checkpoint
from ._checkpoint import CheckpointInfo as CheckpointInfo
from ._checkpoint import CheckpointStore as CheckpointStore
from ._checkpoint import MemoryCheckpointStore as MemoryCheckpointStore
from ._checkpoint import RunInfo as RunInfo
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
from ._core import StateView as StateView
from ._core import StatusEvent as StatusEvent
from ._core import SuperstepCompletedEvent as SuperstepCompletedEvent
from ._core import SuperstepStartedEvent as SuperstepStartedEvent
from ._core import UserEvent as UserEvent
from ._core import WarningEvent as WarningEvent
from ._core import WorkflowContext as WorkflowContext
from ._edges import Case as Case
from ._edges import Default as Default
from ._exceptions import CheckpointDecodeError as CheckpointDecodeError
from ._exceptions import CheckpointEncodeError as CheckpointEncodeError
from ._exceptions import CheckpointError as CheckpointError
from ._exceptions import CheckpointIntegrityError as CheckpointIntegrityError
from ._exceptions import CheckpointMismatchError as CheckpointMismatchError
from ._exceptions import CheckpointNotFoundError as CheckpointNotFoundError
from ._exceptions import CheckpointWarning as CheckpointWarning
from ._exceptions import ConvergenceError as ConvergenceError
from ._exceptions import EventError as EventError
from ._exceptions import ExecutorTimeoutError as ExecutorTimeoutError
from ._exceptions import MessageTypeError as MessageTypeError
from ._exceptions import RequestError as RequestError
from ._exceptions import RoutingError as RoutingError
from ._exceptions import StateConflictError as StateConflictError
from ._exceptions import StepgraphError as StepgraphError
from ._exceptions import SubworkflowError as SubworkflowError
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
from ._stream import RunStream as RunStream
from ._subworkflow import SubworkflowRequest as SubworkflowRequest
from ._subworkflow import SubworkflowResponse as SubworkflowResponse
from ._subworkflow import WorkflowExecutor as WorkflowExecutor
from ._workflow import RunResult as RunResult
from ._workflow import Workflow as Workflow

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "Case",
    "Checkpoint",
    "CheckpointConfig",
    "CheckpointDecodeError",
    "CheckpointEncodeError",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointIntegrityError",
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
    "Never",
    "OutputEvent",
    "PendingRequest",
    "Placement",
    "RayBackend",
    "RequestError",
    "RequestInfoEvent",
    "RetryPolicy",
    "RoutingError",
    "RunInfo",
    "RunResult",
    "RunStartedEvent",
    "RunStatus",
    "RunStream",
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
    "union",
]
