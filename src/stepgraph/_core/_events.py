"""Events: frozen, keyword-only records with a ``kind``.

The engine emits the framework events below; executors add their own with
``ctx.add_event(UserEvent(kind=..., data=...))`` or with instances of their own
``Event`` subclasses. Executors may not emit framework events.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .._exceptions import with_items

__all__ = [
    "FRAMEWORK_EVENT_KINDS",
    "CallRecord",
    "materialize",
    "Event",
    "ExecutorCompletedEvent",
    "ExecutorFailedEvent",
    "ExecutorInvokedEvent",
    "FailedEvent",
    "OutputEvent",
    "RequestInfoEvent",
    "RunStartedEvent",
    "RunStatus",
    "StatusEvent",
    "SuperstepCompletedEvent",
    "SuperstepStartedEvent",
    "UserEvent",
    "WarningEvent",
    "in_schedule_order",
    "superstep_completed",
    "superstep_started",
]


class RunStatus(enum.Enum):
    """Where a run stands. A run starts ``IN_PROGRESS`` (or
    ``IN_PROGRESS_PENDING_REQUESTS`` while requests are open) and ends
    ``IDLE``, ``IDLE_WITH_PENDING_REQUESTS``, ``PAUSED`` (at a breakpoint),
    ``FAILED`` or ``CANCELLED``. The pending variants are computed from the
    actual set of open requests."""

    IN_PROGRESS = "in_progress"
    IN_PROGRESS_PENDING_REQUESTS = "in_progress_pending_requests"
    IDLE = "idle"
    IDLE_WITH_PENDING_REQUESTS = "idle_with_pending_requests"
    PAUSED = "paused"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every event. ``executor_id`` and ``superstep`` are set where
    meaningful. ``workflow_path`` is empty for the run's own events; an event
    from a sub-workflow carries the ids of the workflow executors it came
    through, outermost first (``path`` joins them with the executor id).
    ``item`` is set on the events of a map's workers: the index of the item
    (the message, in the order the source sent them) whose worker emitted
    it, so that interleaved items (agents streaming) can be told apart. It
    belongs to ``executor_id``'s map; when a workflow executor of the path
    ran as a map's worker, the index of its item is in ``workflow_items``,
    beside it: empty when none of them did, else one per ``workflow_path``
    element (``None`` for one that ran as no item). So an event of map
    ``pages``'s item 1 in the sub-workflow of map ``docs``'s item 0 has
    ``workflow_path=("docs",)``, ``workflow_items=(0,)``, ``item=1``, and
    ``path`` reads ``"docs[0]/pages"``."""

    kind: ClassVar[str] = "event"
    # A transient event reaches stream() consumers as it happens and is kept
    # nowhere: not in RunResult.events, not when nobody streams (token deltas).
    transient: ClassVar[bool] = False
    executor_id: str | None = None
    superstep: int | None = None
    workflow_path: tuple[str, ...] = ()
    workflow_items: tuple[int | None, ...] = ()
    item: int | None = None

    @property
    def path(self) -> str:
        """``"outer/inner/executor"`` for a sub-workflow's event; a workflow
        executor that ran as a map's item with its index: ``"docs[0]/pages"``."""
        steps = with_items(self.workflow_path, self.workflow_items)
        return "/".join((*steps, self.executor_id) if self.executor_id else steps)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStartedEvent(Event):
    kind: ClassVar[str] = "run_started"
    run_id: str
    workflow: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusEvent(Event):
    kind: ClassVar[str] = "status"
    status: RunStatus


@dataclass(frozen=True, slots=True, kw_only=True)
class SuperstepStartedEvent(Event):
    """``executors`` lists the superstep's schedule (non-empty inboxes, in
    registration order)."""

    kind: ClassVar[str] = "superstep_started"
    executors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class SuperstepCompletedEvent(Event):
    kind: ClassVar[str] = "superstep_completed"


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutorInvokedEvent(Event):
    """One handler call begins."""

    kind: ClassVar[str] = "executor_invoked"


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutorCompletedEvent(Event):
    """One handler call returned; ``duration`` in seconds (retries included)."""

    kind: ClassVar[str] = "executor_completed"
    duration: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutorFailedEvent(Event):
    kind: ClassVar[str] = "executor_failed"
    error: str
    exception: BaseException | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputEvent(Event):
    """A workflow output, emitted when the handler call that yielded it returns."""

    kind: ClassVar[str] = "output"
    data: Any


def in_schedule_order(outputs: list[OutputEvent], positions: Mapping[str, int]) -> list[Any]:
    """What ``outputs`` (a run's output events, as they were emitted) hold,
    in the run's deterministic order: by superstep, then by the executor's
    place in the schedule (``positions``: registration order), then a map's
    items in item order — one call's outputs in the order it yielded them,
    whichever executor finished first."""
    last = len(positions)
    ordered = sorted(
        outputs,
        key=lambda e: (
            e.superstep or 0,
            positions.get(e.executor_id or "", last),
            -1 if e.item is None else e.item,
        ),
    )
    return [e.data for e in ordered]


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestInfoEvent(Event):
    """An executor opened a request; answer it with
    ``workflow.run(responses={request_id: value})``."""

    kind: ClassVar[str] = "request_info"
    request_id: str
    request: Any
    response_type: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class WarningEvent(Event):
    kind: ClassVar[str] = "warning"
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FailedEvent(Event):
    """The run failed; ``error`` is the message of the ``WorkflowRunError``."""

    kind: ClassVar[str] = "failed"
    error: str
    exception: BaseException | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class UserEvent(Event):
    """An executor's own event: ``ctx.add_event(UserEvent(kind="progress", data=0.5))``."""

    kind: str  # type: ignore[misc]  # an instance field here, a ClassVar elsewhere
    data: Any = None


# Two events per handler call. The kernel emits them as plain tuples —
# ``(ExecutorInvokedEvent, executor_id, superstep)`` and
# ``(ExecutorCompletedEvent, executor_id, superstep, duration)``, a map's
# worker with its item's index after the duration (``None`` for the first)
# — and whoever
# hands events to a reader (``stream()``, ``RunResult.events``) makes them
# events with ``materialize``: a run whose events nobody reads never builds
# them. Built, they skip the frozen dataclass __init__ (which sets each field
# through object.__setattr__) for the fields' own slot descriptors.
_new = object.__new__
_set_executor = Event.__dict__["executor_id"].__set__
_set_superstep = Event.__dict__["superstep"].__set__
_set_path = Event.__dict__["workflow_path"].__set__
_set_items = Event.__dict__["workflow_items"].__set__
_set_item = Event.__dict__["item"].__set__
_set_duration = ExecutorCompletedEvent.__dict__["duration"].__set__

CallRecord = tuple[Any, ...]


def materialize(item: Event | CallRecord) -> Event:
    """The event an emitted item stands for."""
    if type(item) is not tuple:
        return item  # type: ignore[return-value]
    event = _new(item[0])
    _set_executor(event, item[1])
    _set_superstep(event, item[2])
    _set_path(event, ())
    _set_items(event, ())
    if len(item) > 3:
        if item[3] is not None:
            _set_duration(event, item[3])
        _set_item(event, item[4] if len(item) > 4 else None)
    else:
        _set_item(event, None)
    return event  # type: ignore[no-any-return]


# The scheduler's two events of every superstep, built the same way.
_set_executors = SuperstepStartedEvent.__dict__["executors"].__set__


def superstep_started(step: int, executors: tuple[str, ...]) -> SuperstepStartedEvent:
    """``SuperstepStartedEvent(superstep=step, executors=executors)``."""
    event: SuperstepStartedEvent = _new(SuperstepStartedEvent)
    _set_run_level(event, step)
    _set_executors(event, executors)
    return event


def superstep_completed(step: int) -> SuperstepCompletedEvent:
    """``SuperstepCompletedEvent(superstep=step)``."""
    event: SuperstepCompletedEvent = _new(SuperstepCompletedEvent)
    _set_run_level(event, step)
    return event


def _set_run_level(event: Event, step: int) -> None:
    # (every field of Event: a test compares these events with constructed ones)
    _set_executor(event, None)
    _set_superstep(event, step)
    _set_path(event, ())
    _set_items(event, ())
    _set_item(event, None)


FRAMEWORK_EVENT_KINDS: frozenset[str] = frozenset(
    {
        "run_started",
        "status",
        "superstep_started",
        "superstep_completed",
        "executor_invoked",
        "executor_completed",
        "executor_failed",
        "output",
        "request_info",
        "warning",
        "failed",
    }
)
