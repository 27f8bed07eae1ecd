"""The kernel: superstep scheduler, routing, inboxes, state, events, backends.

Everything above the kernel (executors, the builder, workflows, the CLI) uses
only what this module exports.
"""

from .._exceptions import (
    ConvergenceError,
    EventError,
    ExecutorTimeoutError,
    MessageTypeError,
    RequestError,
    RoutingError,
    StateConflictError,
    WorkflowRunError,
)
from ._backend import Backend, ExecutorFailure, LocalBackend, Superstep, run_inbox
from ._context import Contract, Outbox, RunScope, WorkflowContext
from ._display import jsonable
from ._events import (
    FRAMEWORK_EVENT_KINDS,
    CallRecord,
    Event,
    ExecutorCompletedEvent,
    ExecutorFailedEvent,
    ExecutorInvokedEvent,
    FailedEvent,
    OutputEvent,
    RequestInfoEvent,
    RunStartedEvent,
    RunStatus,
    StatusEvent,
    SuperstepCompletedEvent,
    SuperstepStartedEvent,
    UserEvent,
    WarningEvent,
    materialize,
)
from ._graph import (
    DirectEdge,
    EdgeGroup,
    FanInEdge,
    FanOutEdge,
    Graph,
    MapPlan,
    MultiSelectEdge,
    Node,
    SwitchEdge,
)
from ._policy import Placement, RetryPolicy
from ._requests import PendingRequest, Response
from ._routing import Inbox, Router
from ._scheduler import BarrierHook, Breakpoints, RunState, run_supersteps
from ._state import Reducers, StateView
from ._tasks import to_the_end
from ._trace import RunTrace, SpanRecord, SpanRecorder, Trace, TraceSpan, end_span, within
from ._typing import (
    ANY_SPEC,
    NEVER_SPEC,
    TypeSpec,
    TypeSpecError,
    a_type,
    may_overlap,
    spec_of,
    type_name,
)
from ._usage import RunUsage, Usage

__all__ = [
    "end_span",
    "within",
    "RunTrace",
    "SpanRecord",
    "SpanRecorder",
    "Trace",
    "TraceSpan",
    "jsonable",
    "RunUsage",
    "Usage",
    "ANY_SPEC",
    "FRAMEWORK_EVENT_KINDS",
    "CallRecord",
    "NEVER_SPEC",
    "Backend",
    "BarrierHook",
    "Breakpoints",
    "Contract",
    "ConvergenceError",
    "DirectEdge",
    "EdgeGroup",
    "Event",
    "EventError",
    "ExecutorCompletedEvent",
    "ExecutorFailedEvent",
    "ExecutorFailure",
    "ExecutorInvokedEvent",
    "ExecutorTimeoutError",
    "FailedEvent",
    "FanInEdge",
    "FanOutEdge",
    "Graph",
    "Inbox",
    "LocalBackend",
    "MapPlan",
    "MessageTypeError",
    "MultiSelectEdge",
    "Node",
    "Outbox",
    "OutputEvent",
    "PendingRequest",
    "Reducers",
    "Placement",
    "RequestError",
    "RequestInfoEvent",
    "Response",
    "RetryPolicy",
    "RoutingError",
    "RunScope",
    "RunStartedEvent",
    "RunState",
    "RunStatus",
    "Router",
    "StateConflictError",
    "StateView",
    "StatusEvent",
    "Superstep",
    "SuperstepCompletedEvent",
    "SuperstepStartedEvent",
    "SwitchEdge",
    "TypeSpec",
    "TypeSpecError",
    "UserEvent",
    "WarningEvent",
    "WorkflowContext",
    "WorkflowRunError",
    "a_type",
    "materialize",
    "may_overlap",
    "run_inbox",
    "run_supersteps",
    "spec_of",
    "to_the_end",
    "type_name",
]
