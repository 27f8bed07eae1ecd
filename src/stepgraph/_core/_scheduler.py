"""The superstep scheduler: which inboxes run, and the barrier.

Per superstep: order the routed inboxes by registration index (the schedule),
hand them to the backend, then at the barrier commit shared state, route the
sent messages into the next inboxes (updating fan-in buffers) and emit
``superstep_completed``. Design §1.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .._exceptions import (
    ConvergenceError,
    RequestError,
    RoutingError,
    StateConflictError,
    WorkflowRunError,
)
from ._backend import (
    SHOWN_ERROR,
    Backend,
    ExecutorFailure,
    Superstep,
    error_line,
    failure_error,
)
from ._context import Outbox, RunScope
from ._events import (
    ExecutorFailedEvent,
    FailedEvent,
    RequestInfoEvent,
    RunStartedEvent,
    RunStatus,
    StatusEvent,
    WarningEvent,
    superstep_completed,
    superstep_started,
)
from ._graph import Graph
from ._requests import PendingRequest
from ._routing import FanInBuffers, Inbox, Router
from ._state import commit_writes, find_conflicts
from ._tasks import to_the_end
from ._trace import within
from ._usage import Usage

__all__ = ["BarrierHook", "Breakpoints", "RunState", "run_supersteps"]


@dataclass(slots=True)
class RunState:
    """Everything a run carries from one barrier to the next: what a
    checkpoint stores."""

    inboxes: dict[str, Inbox]
    state: dict[str, Any] = field(default_factory=dict)
    fan_in: FanInBuffers = field(default_factory=dict)
    superstep: int = 0
    requests: dict[str, PendingRequest] = field(default_factory=dict)  # open, in order
    answered: set[str] = field(default_factory=set)
    # This run's own executors (registered factories), made on first delivery.
    instances: dict[str, Any] = field(default_factory=dict)
    # Tokens model calls used so far, by executor path (``ctx.add_usage``).
    usage: dict[str, Usage] = field(default_factory=dict)
    # Stopped at a breakpoint; going on from here skips the breakpoint it hit.
    paused: bool = False
    # The outputs the last superstep yielded, in schedule order (its
    # checkpoint keeps them for display; not carried to the next barrier).
    yielded: list[Any] = field(default_factory=list)
    # The runs this one was forked from, the nearest first (none: not a fork).
    forked_from: tuple[str, ...] = ()

    def copy(self) -> RunState:
        """A copy whose containers can change without touching this one's."""
        return RunState(
            inboxes={k: list(v) for k, v in self.inboxes.items()},
            state=dict(self.state),
            fan_in={k: {s: list(m) for s, m in v.items()} for k, v in self.fan_in.items()},
            superstep=self.superstep,
            requests=dict(self.requests),
            answered=set(self.answered),
            instances=dict(self.instances),
            usage=dict(self.usage),
            paused=self.paused,
            forked_from=self.forked_from,
        )

    def status(self, *, running: bool) -> RunStatus:
        """The status this state implies, from the actual open requests."""
        if self.paused:
            return RunStatus.PAUSED
        if running:
            return (
                RunStatus.IN_PROGRESS_PENDING_REQUESTS if self.requests else RunStatus.IN_PROGRESS
            )
        return RunStatus.IDLE_WITH_PENDING_REQUESTS if self.requests else RunStatus.IDLE


@dataclass(frozen=True, slots=True)
class Breakpoints:
    """Where a run stops (status ``PAUSED``, at a barrier): before delivering
    to these executors, or after a superstep in which these ran."""

    before: frozenset[str] = frozenset()
    after: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.before or self.after)


class BarrierHook(Protocol):
    """Called with the run state at the run's entry (``written=None``) and
    after every barrier (``written``: the state keys that superstep wrote);
    ``close`` when the run ends, however it ends, with how it ended (the
    error for a failure); ``cancel_requested`` after each barrier, to stop a
    run that was asked to from elsewhere. Checkpointing is one."""

    async def barrier(self, run: RunState, written: set[str] | None) -> None: ...

    def cancel_requested(self) -> bool: ...

    def watch(self, task: asyncio.Task[Any]) -> None:
        """Start watching for a cancel asked from elsewhere while a superstep
        runs long; on one, cancel ``task`` (the run's)."""

    def unwatch(self) -> bool:
        """Stop watching; whether the watch cancelled the run's task."""

    async def close(self, outcome: RunStatus, error: BaseException | None) -> RunStatus | None:
        """How the run ended after all, when it was cancelled only once its
        ending was stored (``None``: as ``outcome`` says)."""


_NO_BREAKPOINTS = Breakpoints()

# A run whose handlers never wait (CPU-bound, or nothing to wait for) gives
# the event loop a turn at a barrier once it has run this long since the
# last: other tasks (other runs, a server's requests) are never starved.
FAIR_SLICE = 0.002


async def run_supersteps(
    graph: Graph,
    scope: RunScope,
    backend: Backend,
    run: RunState,
    max_supersteps: int,
    hook: BarrierHook | None = None,
    breakpoints: Breakpoints = _NO_BREAKPOINTS,
) -> RunStatus:
    """Run until idle, paused or cancelled from elsewhere. Emits the run's
    events through ``scope.emit``; raises ``WorkflowRunError`` on failure
    (after ``executor_failed``/``failed`` and status ``FAILED``) and
    re-raises cancellation after status ``CANCELLED``."""
    emit = scope.emit
    emit(RunStartedEvent(run_id=scope.run_id, workflow=scope.workflow_name))
    resumed_at_breakpoint, run.paused = run.paused, False
    if breakpoints.before and not resumed_at_breakpoint:
        run.paused = not breakpoints.before.isdisjoint(run.inboxes)
    status = run.status(running=True)
    if run.inboxes and not run.paused:
        # (a run with nothing to deliver — resumed where it had ended, or
        # stopping at once before a breakpoint — runs no superstep: its one
        # status is how it stays, not "in_progress" first)
        emit(StatusEvent(status=status))
    for request in run.requests.values():  # still open from before: say what we wait for
        emit(_announcement(request, request.superstep))
    router = Router(graph, run.fan_in)
    report = _reporter(scope, run)
    nodes, index = graph.nodes, graph.index
    steps_this_call = 0
    # A run someone streams gives the loop a turn at every barrier (a
    # listener that stops listening stops the run there); others, per slice.
    clock, live, turn = time.monotonic, scope.live, time.monotonic()
    outcome, error = RunStatus.FAILED, None
    ended: RunStatus | None = None  # how it ended when a cancel came too late to stop it
    cancelled = False
    try:
        try:
            if hook is not None:
                await hook.barrier(run, None)
                task = asyncio.current_task()
                if task is not None:
                    hook.watch(task)
            while run.inboxes and not run.paused:
                if steps_this_call >= max_supersteps:
                    pending = sorted(run.inboxes, key=index.__getitem__)
                    raise ConvergenceError(
                        f"workflow {graph.name!r} did not converge within max_supersteps="
                        f"{max_supersteps}: messages are still pending for {pending}",
                        superstep=run.superstep,
                    )
                steps_this_call += 1
                step = run.superstep + 1
                order = sorted(run.inboxes, key=index.__getitem__)
                emit(superstep_started(step, tuple(order)))
                work = Superstep(
                    step, scope, [(nodes[i], run.inboxes[i]) for i in order], run.state
                )
                if scope.trace is None:
                    outboxes = await _deliver(backend, work)
                    run.superstep = step
                    written = await _barrier(router, run, outboxes, scope, report, step)
                else:
                    written = await _traced_superstep(backend, work, router, run, scope, report)
                if breakpoints and run.inboxes:  # (nothing left: the run ends, not pauses)
                    run.paused = not (
                        breakpoints.after.isdisjoint(order)
                        and breakpoints.before.isdisjoint(run.inboxes)
                    )
                now = run.status(running=True)
                if now is not status and not run.paused:
                    status = now
                    emit(StatusEvent(status=status))
                if hook is not None:
                    await hook.barrier(run, written)
                emit(superstep_completed(step))
                if hook is not None and run.inboxes and hook.cancel_requested():
                    cancelled = True  # asked from elsewhere: stop at this barrier
                    break
                if run.inboxes and (live or clock() - turn >= FAIR_SLICE):
                    await asyncio.sleep(0)
                    turn = clock()
            if hook is not None:
                hook.unwatch()
            if not run.requests and not run.inboxes:  # else the buffers wait for what comes
                _report_waiting_fan_ins(graph, run, scope)
            outcome = RunStatus.CANCELLED if cancelled else run.status(running=False)
        except (asyncio.CancelledError, KeyboardInterrupt) as stop:  # Ctrl-C is a cancellation
            outcome = RunStatus.CANCELLED
            if hook is None or not hook.unwatch() or not isinstance(stop, asyncio.CancelledError):
                raise
            # Asked from elsewhere mid-superstep: the superstep is dropped (its
            # sends and writes were never committed) and the run stops like
            # at a barrier, resumable from its last checkpoint.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        except BaseException as raised:
            error = raised
            raise
        finally:
            if hook is not None:
                hook.unwatch()
                if outcome not in (RunStatus.CANCELLED, RunStatus.FAILED):
                    ended = outcome  # (a cancel now, while closing, stops nothing)
                ended = await to_the_end(hook.close(outcome, error)) or ended
    except WorkflowRunError as error:
        emit(
            FailedEvent(
                error=str(error),
                exception=error,
                executor_id=error.executor_id,
                superstep=error.superstep,
            )
        )
        emit(StatusEvent(status=RunStatus.FAILED))
        raise
    except (asyncio.CancelledError, KeyboardInterrupt):
        # (the call is cancelled; the run may have ended first: say how)
        emit(StatusEvent(status=ended or RunStatus.CANCELLED))
        raise
    emit(StatusEvent(status=outcome))
    return outcome


async def _deliver(backend: Backend, work: Superstep) -> list[Outbox]:
    try:
        return await backend.run_superstep(work)
    except (ExecutorFailure, BaseExceptionGroup) as raised:
        if not work.failures:
            raise  # not a handler failure: a bug or cancellation; let it through
        if isinstance(raised, BaseExceptionGroup):
            _, unexpected = raised.split((ExecutorFailure, asyncio.CancelledError))
            if unexpected is not None:
                raise  # an unexpected error beside the failure: do not hide it
        for failure in work.failures:
            work.scope.emit(
                ExecutorFailedEvent(
                    error=error_line(failure.cause, SHOWN_ERROR),
                    exception=failure.cause,
                    executor_id=failure.executor_id,
                    superstep=failure.superstep,
                    item=failure.item,
                )
            )
        error = failure_error(work.failures[0])
        raise error from error.__cause__


async def _traced_superstep(
    backend: Backend,
    work: Superstep,
    router: Router,
    run: RunState,
    scope: RunScope,
    report: Callable[[str, str], None],
) -> set[str]:
    """A superstep and its barrier inside the superstep's span."""
    span = scope.trace.superstep(work.number, tuple(node.id for node, _ in work.batches))
    span.set("stepgraph.messages", sum(len(inbox) for _, inbox in work.batches))

    async def superstep() -> set[str]:
        outboxes = await _deliver(backend, work)
        run.superstep = work.number
        return await _barrier(router, run, outboxes, scope, report, work.number)

    return await within(span, superstep())


async def _barrier(
    router: Router,
    run: RunState,
    outboxes: list[Outbox],
    scope: RunScope,
    report: Callable[[str, str], None],
    step: int,
) -> set[str]:
    """Commit state, route, open requests; nothing is committed if routing
    fails. Returns the state keys written."""
    writes = []
    for o in outboxes:
        if o.item_writes is not None:
            writes += o.item_writes
        elif o.writes:
            writes.append((o.executor_id, o.writes))
    if writes:
        clashes: dict[str, list[str]] = {}  # key -> its writers, in schedule order
        for key, first, later in find_conflicts(writes):
            if scope.strict:
                raise StateConflictError(key, first, later, step)
            clashes.setdefault(key, [first]).append(later)
        for key, writers in clashes.items():  # one warning per key, however many wrote it
            later = writers[-1]
            if len(writers) == 2:
                who = f"both {writers[0]!r} and {later!r}"
            else:
                names = [repr(w) for w in writers]
                shown = names if len(names) <= 4 else [*names[:3], "...", names[-1]]
                who = f"{len(writers)} executors ({', '.join(shown)})"
            scope.emit(
                WarningEvent(
                    message=f"state key {key!r} was written by {who} in superstep {step}; "
                    f"{later!r} wins (later in schedule order)",
                    executor_id=later,
                    superstep=step,
                )
            )
    if any(o.requests for o in outboxes):
        _check_new_requests(run, outboxes, step)
    # Route before committing: a raising predicate must leave the state as it
    # was at the previous barrier. Fan-in buffers are restored the same way.
    saved_fan_in = (
        {k: {s: list(m) for s, m in v.items()} for k, v in run.fan_in.items()}
        if run.fan_in
        else None
    )
    try:
        run.inboxes = await router.route(outboxes, step, report)
    except BaseException as error:
        run.fan_in.clear()
        run.fan_in.update(saved_fan_in or {})
        if isinstance(error, RoutingError) and error.superstep is None:
            error.superstep = step  # (a predicate's or selector's: named with its superstep)
            error.args = (f"{error} (at the barrier after superstep {step})", *error.args[1:])
        raise
    written: set[str] = set()
    if writes:
        commit_writes(run.state, writes, scope.reducers)
        for _, delta in writes:
            written.update(delta)
    run.yielded = [v for o in outboxes if o.outputs for v in o.outputs]
    for outbox in outboxes:
        for request in outbox.requests:
            run.requests[request.request_id] = request
            scope.emit(_announcement(request, step))
    return written


def _check_new_requests(run: RunState, outboxes: list[Outbox], step: int) -> None:
    """Request ids are unique in a run: one chosen by an executor must not be
    open, answered, or opened twice in this superstep."""
    opened: dict[str, str] = {}
    for outbox in outboxes:
        for request in outbox.requests:
            rid, eid = request.request_id, request.executor_id
            clash = None
            if rid in run.requests:
                clash = "is still open"
            elif rid in run.answered:
                clash = "was already answered in this run"
            elif rid in opened:
                clash = f"was also opened by {opened[rid]!r} in this superstep"
            if clash is not None:
                raise RequestError(
                    f"executor {eid!r} opened request {rid!r}, which {clash}; "
                    "request ids must be unique in a run",
                    executor_id=eid,
                    superstep=step,
                )
            opened[rid] = eid


def _announcement(request: PendingRequest, step: int) -> RequestInfoEvent:
    return RequestInfoEvent(
        request_id=request.request_id,
        request=request.request,
        response_type=request.response_type,
        executor_id=request.executor_id,
        superstep=step,
    )


def _report_waiting_fan_ins(graph: Graph, run: RunState, scope: RunScope) -> None:
    """A run that goes idle with partly filled fan-in buffers never delivers
    them: say so instead of losing them quietly (an error when strict)."""
    for index, buffer in sorted(run.fan_in.items()):
        edge = graph.edges[index]
        missing = [s for s in edge.sources if s not in buffer]
        held = sum(len(m) for m in buffer.values())
        text = (
            f"the run went idle while {edge.label()} held {held} message(s) "
            f"from {sorted(buffer)}, still waiting for {missing}; they were not delivered"
        )
        if scope.strict:
            raise RoutingError(text, executor_id=edge.targets[0], superstep=run.superstep)
        scope.emit(WarningEvent(message=text, executor_id=edge.targets[0], superstep=run.superstep))


def _reporter(scope: RunScope, run: RunState) -> Callable[[str, str], None]:
    def report(source: str, text: str) -> None:
        if scope.strict:
            raise RoutingError(text, executor_id=source, superstep=run.superstep)
        scope.emit(WarningEvent(message=text, executor_id=source, superstep=run.superstep))

    return report
