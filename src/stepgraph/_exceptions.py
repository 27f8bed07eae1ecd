"""Every exception stepgraph raises, in one tree with two roots.

::

    StepgraphError
    ├── WorkflowDefinitionError      a workflow or executor is malformed
    │                                (raised by decorators, executors and build())
    ├── WorkflowRunError             something went wrong while running
    │   ├── WorkflowBusyError        a second concurrent run of one instance
    │   ├── ConvergenceError         max_supersteps exceeded
    │   ├── ExecutorTimeoutError     a handler call exceeded its timeout
    │   ├── RoutingError             a message could not be routed (strict mode,
    │   │                            unknown target, raising predicate/selector)
    │   ├── MessageTypeError         a message or output contradicts a declared
    │   │                            type (strict mode), or bad run input
    │   ├── StateConflictError       two executors wrote one key in one superstep
    │   │                            (strict mode)
    │   ├── EventError               an executor tried to emit a framework event
    │   ├── RequestError             a request or response is invalid (unknown id,
    │   │   │                        answered twice)
    │   │   └── ResponseValueError   an answer's value is not acceptable (not of
    │   │                            the response type, or refused by the
    │   │                            executor that asked: check_response)
    │   ├── SubworkflowError         a sub-workflow failed; ``path`` names the
    │   │                            executor inside it (outermost first)
    │   └── CheckpointError          anything about checkpoints
    │       ├── CheckpointEncodeError    a value cannot be stored
    │       ├── CheckpointDecodeError    stored data cannot be rebuilt safely
    │       ├── CheckpointIntegrityError tampered, unsigned or corrupt data
    │       ├── CheckpointNotFoundError  no such checkpoint (or run)
    │       ├── CheckpointMismatchError  the checkpoint is of another graph
    │       └── CheckpointLeaseLostError another process took the run while
    │                                    this one lost its lease
    ├── AgentError                   an agent cannot go on (max_turns, output
    │                                that does not validate, a raising tool)
    ├── ModelError                   a model call failed for good
    └── ToolArgumentsError           a model's arguments do not fit a tool
                                     (the last three are raised inside an
                                     agent's handler: a run reports them as
                                     its WorkflowRunError's __cause__)

    CheckpointWarning               (a warning, not raised): a store skipped
                                    damaged records while listing

Each exception owns its message; attributes name the executor, edge or key at
fault where there is one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "AgentError",
    "CheckpointDecodeError",
    "CheckpointEncodeError",
    "CheckpointError",
    "CheckpointIntegrityError",
    "CheckpointLeaseLostError",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "CheckpointWarning",
    "ConvergenceError",
    "EventError",
    "ExecutorTimeoutError",
    "MessageTypeError",
    "ModelError",
    "RequestError",
    "ResponseValueError",
    "RoutingError",
    "StateConflictError",
    "StepgraphError",
    "SubworkflowError",
    "ToolArgumentsError",
    "WorkflowBusyError",
    "WorkflowDefinitionError",
    "WorkflowRunError",
]


class StepgraphError(Exception):
    """Base of every stepgraph exception."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from its message and attributes, never through a subclass's
        # own __init__: an error raised in a Ray actor reaches the driver whole.
        return _rebuilt, (type(self), self.args, dict(vars(self)))


def _rebuilt(cls: type[StepgraphError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    vars(error).update(state)
    return error


class WorkflowDefinitionError(StepgraphError):
    """A workflow, edge or executor definition is invalid."""


class WorkflowRunError(StepgraphError):
    """A run failed. When an executor failed, ``executor_id`` names it and the
    original exception is chained as ``__cause__``."""

    def __init__(
        self,
        message: str,
        *,
        executor_id: str | None = None,
        superstep: int | None = None,
    ) -> None:
        super().__init__(message)
        self.executor_id = executor_id
        self.superstep = superstep


class WorkflowBusyError(WorkflowRunError):
    """The workflow (or one of its executors) is already running."""


class ConvergenceError(WorkflowRunError):
    """The run still had messages to deliver after ``max_supersteps``.
    ``outputs`` are what it yielded until then, ``run_id`` is the run and
    ``last_checkpoint`` (when it was checkpointed) the checkpoint it goes on
    from: ``run(checkpoint=...)`` continues it (with a limit of its own)."""

    outputs: list[Any]
    run_id: str | None
    last_checkpoint: str | None

    def __init__(
        self,
        message: str,
        *,
        executor_id: str | None = None,
        superstep: int | None = None,
    ) -> None:
        super().__init__(message, executor_id=executor_id, superstep=superstep)
        self.outputs = []
        self.run_id = None
        self.last_checkpoint = None


class ExecutorTimeoutError(WorkflowRunError):
    """A handler call took longer than its executor's ``timeout``."""

    def __init__(self, executor_id: str, timeout: float, superstep: int | None = None) -> None:
        super().__init__(
            f"executor {executor_id!r} timed out: a handler call exceeded timeout={timeout:g} s",
            executor_id=executor_id,
            superstep=superstep,
        )
        self.timeout = timeout


class RoutingError(WorkflowRunError):
    """A message could not be routed, or an edge's condition, predicate or
    selector failed."""


class MessageTypeError(WorkflowRunError):
    """A message or output does not match the declared types."""


class StateConflictError(WorkflowRunError):
    """Two executors wrote the same shared-state key in one superstep
    (an error only with ``strict=True``; otherwise a warning event)."""

    def __init__(self, key: str, first: str, second: str, superstep: int) -> None:
        super().__init__(
            f"state key {key!r} was written by both {first!r} and {second!r} in superstep "
            f"{superstep}",
            executor_id=second,
            superstep=superstep,
        )
        self.key = key
        self.writers = (first, second)


class EventError(WorkflowRunError):
    """An executor passed something to ``add_event`` that it may not emit."""


class RequestError(WorkflowRunError):
    """A human-in-the-loop request or response is invalid. Raised before
    anything is consumed: the open requests stay as they were."""


class ResponseValueError(RequestError):
    """An answer's value is not acceptable: not of the request's response
    type, or refused by the executor that asked (``check_response``).
    Nothing was consumed: the request stays open for a better answer."""


def with_items(steps: tuple[str, ...], items: tuple[int | None, ...]) -> tuple[str, ...]:
    """The workflow executors of a path, each that ran as a map's item with
    its index (``items``, one per step, or none: ``"docs"`` → ``"docs[0]"``):
    how an event's ``path`` and a ``SubworkflowError`` spell them."""
    if not items:
        return steps
    return tuple(
        step if k >= len(items) or items[k] is None else f"{step}[{items[k]}]"
        for k, step in enumerate(steps)
    )


class SubworkflowError(WorkflowRunError):
    """A child workflow failed. ``path`` is the executor path from the
    ``WorkflowExecutor`` down to the failing executor; ``detail`` is the
    innermost error's message. ``items`` says which item of a map each
    ``WorkflowExecutor`` of the path ran as, as an event's
    ``workflow_items`` does: empty when none ran as one, else one per
    ``path`` element (``None`` for one that ran as no item); the message
    spells them as ``event.path`` does (``'docs[1]/pages'``)."""

    def __init__(
        self,
        path: tuple[str, ...],
        detail: str,
        *,
        superstep: int | None,
        items: tuple[int | None, ...] = (),
    ) -> None:
        shown = "/".join(with_items(path, items))
        super().__init__(
            f"executor {shown!r} failed in a sub-workflow: {detail}",
            executor_id=path[0],
            superstep=superstep,
        )
        self.path = path
        self.detail = detail
        self.items = items


class AgentError(StepgraphError):
    """An agent cannot go on: it reached ``max_turns``, its model's reply
    does not match its ``output_type`` even after a repair turn, or a tool
    with ``errors="raise"`` failed. The message names the agent."""


class ModelError(StepgraphError):
    """A model call failed and was not (or no longer) retried: the endpoint
    is unreachable, refused the request (``status``: 401, 400, ...), kept
    failing, or sent a stream that is not a chat completion."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ToolArgumentsError(StepgraphError):
    """The model's arguments for a tool are not valid. The message is meant
    for the model: it names the tool and each bad argument with the reason.
    ``problems`` holds the ``"argument: reason"`` parts."""

    def __init__(self, tool_name: str, problems: Iterable[str]) -> None:
        self.tool_name = tool_name
        self.problems = tuple(problems)
        super().__init__(f"invalid arguments for tool {tool_name!r}: {'; '.join(self.problems)}")


class CheckpointError(WorkflowRunError):
    """Base of the checkpoint errors."""


class CheckpointEncodeError(CheckpointError):
    """A value cannot be stored; the message names its path (state key,
    executor, message)."""


class CheckpointDecodeError(CheckpointError):
    """Stored data cannot be rebuilt safely (unknown type, bad tag, malformed
    or oversized document). Nothing named by the data was imported or run."""


class CheckpointIntegrityError(CheckpointError):
    """A checkpoint was tampered with, is unsigned where a signature is
    required, or its stored data is corrupt."""


class CheckpointNotFoundError(CheckpointError):
    """No checkpoint (or run) with that id in the store."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint was written by a workflow with a different graph."""


class CheckpointLeaseLostError(CheckpointError):
    """This process lost a run's lease while running it (the database ended
    the session that held it) and another process took or continued the
    run meanwhile: nothing more of the run is written from here, nor how it
    ended (the run is the other process's now)."""


class CheckpointWarning(UserWarning):
    """A store skipped damaged records while listing (issued with
    ``warnings.warn``; the records stay where they are, and ``delete_run``
    removes a damaged run)."""
