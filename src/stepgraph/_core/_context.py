"""The handler's view of a run: ``WorkflowContext`` and the outbox behind it.

One context serves one executor's whole inbox in one superstep. Sending,
yielding and state writes are buffered in the executor's :class:`Outbox` and
take effect at the barrier; a handler call that fails (or an attempt that is
retried) has its buffered effects rolled back.

``send_message``, ``yield_output`` and ``add_event`` act immediately and
return an already-completed awaitable, so ``await ctx.send_message(x)`` in an
async handler and plain ``ctx.send_message(x)`` in a sync one both work.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import uuid
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Generic, Never

from typing_extensions import TypeVar

from .._exceptions import (
    EventError,
    MessageTypeError,
    RequestError,
    RoutingError,
    WorkflowRunError,
)
from ._display import lone_surrogate_at
from ._events import FRAMEWORK_EVENT_KINDS, Event, OutputEvent, WarningEvent
from ._requests import PendingRequest, RequestId, id_separators
from ._state import Fold, Reducers, StateView
from ._threads import sync_pool
from ._typing import ANY_SPEC, TypeSpec, TypeSpecError, a_value_type, type_name
from ._usage import Usage

__all__ = ["Contract", "Outbox", "RunScope", "WorkflowContext"]

OutT = TypeVar("OutT", default=Never)
WorkflowOutT = TypeVar("WorkflowOutT", default=Never)
ContextT = TypeVar("ContextT", default=Any)

# Events, or the call records a handler call emits (see ``materialize``).
Emit = Callable[[Any], None]


class _Done:
    """An awaitable that is already complete."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return iter(())  # type: ignore[return-value]


_DONE = _Done()


@dataclass(frozen=True, slots=True)
class Contract:
    """What one handler declares it sends and yields."""

    label: str
    outputs: TypeSpec = ANY_SPEC
    workflow_outputs: TypeSpec = ANY_SPEC


_UNDECLARED = Contract("<handler>")


class Outbox:
    """Everything one executor produced in one superstep, for the barrier.
    A map's outbox carries its items' state writes apart (``item_writes``),
    so the barrier sees each item as a writer of its own."""

    __slots__ = ("executor_id", "item_writes", "outputs", "requests", "sent", "writes")

    def __init__(self, executor_id: str) -> None:
        self.executor_id = executor_id
        self.sent: list[tuple[Any, str | None]] = []
        self.writes: dict[str, Any] = {}
        self.requests: list[PendingRequest] = []
        self.item_writes: list[tuple[str, dict[str, Any]]] | None = None
        self.outputs: list[Any] | None = (
            None  # the outputs its calls yielded (checkpoints keep them)
        )


class RunScope:
    """Per-run facts that every context of the run shares."""

    __slots__ = (
        "context",
        "emit",
        "executor_ids",
        "forked_from",
        "instances",
        "live",
        "nodes",
        "output_ids",
        "progress",
        "reducers",
        "run_id",
        "senders",
        "strict",
        "trace",
        "usage",
        "workflow_name",
    )

    def __init__(
        self,
        *,
        run_id: str,
        workflow_name: str,
        strict: bool,
        emit: Emit,
        executor_ids: frozenset[str],
        output_ids: frozenset[str] | None,
        context: Any = None,
        instances: dict[str, Any] | None = None,
        reducers: Reducers | None = None,
        live: bool = False,
        usage: dict[str, Usage] | None = None,
        senders: frozenset[str] | None = None,
        forked_from: tuple[str, ...] = (),
    ) -> None:
        self.run_id = run_id
        self.forked_from = forked_from  # the runs this one was forked from, nearest first
        self.workflow_name = workflow_name
        self.strict = strict
        self.emit = emit
        self.executor_ids = executor_ids
        self.output_ids = output_ids  # None: every executor's yields are outputs
        self.context = context  # the caller's run(context=...): per-run dependencies
        # This run's own executor instances (registered factories), by id.
        self.instances: dict[str, Any] = {} if instances is None else instances
        self.reducers: Reducers = reducers or {}
        self.live = live  # someone streams the run: transient events go out
        self.senders = senders  # executors with outgoing edges (None: not known)
        # Saves an executor's snapshot within a superstep (a checkpointed run).
        self.progress: Callable[[str], Awaitable[None]] | None = None
        # Tokens model calls used, by executor path (the run state's own dict).
        self.usage: dict[str, Usage] = {} if usage is None else usage
        # The run's tracer when it is traced (``_trace``; None: not traced).
        self.trace: Any = None
        # The workflow's executors as the kernel sees them, by id (for a
        # distributed backend that places several in one process).
        self.nodes: Mapping[str, Any] = {}


class WorkflowContext(Generic[OutT, WorkflowOutT, ContextT]):
    """Passed to handlers. ``OutT`` is what the handler sends,
    ``WorkflowOutT`` what it yields as workflow output (both default to
    ``Never``; use ``Any`` to leave them undeclared); ``ContextT`` is the type
    of the run context, ``ctx.context``."""

    __slots__ = (
        "_closed",
        "_committed",
        "_contract",
        "_emit",
        "_executor_id",
        "_item",
        "_loop",
        "_outbox",
        "_pending",
        "_responds",
        "_saves",
        "_scope",
        "_state",
        "_superstep",
    )

    def __init__(
        self,
        scope: RunScope,
        executor_id: str,
        superstep: int,
        committed: Mapping[str, Any],
        responds: Callable[[Any, Any], bool] | None = None,
    ) -> None:
        self._scope = scope
        self._responds = responds  # can the executor answer (request, response type)?
        self._executor_id = executor_id
        self._superstep = superstep
        self._outbox = Outbox(executor_id)
        self._pending: list[Any] = []
        self._committed = committed
        self._state: StateView | None = None  # made when a handler first uses it
        self._contract = _UNDECLARED
        self._emit = scope.emit
        self._closed = False
        self._item: int | None = None  # a map's worker: the index of its item
        self._loop: asyncio.AbstractEventLoop | None = None  # a sync call's: the run's loop
        # A sync call's saves under way on the loop: cancelled when the call
        # ends or is abandoned (a timeout, the run cancelled), as an async
        # handler's awaited save is cancelled with it.
        self._saves: set[asyncio.Task[None]] | None = None

    # -- what handlers use -------------------------------------------------

    @property
    def executor_id(self) -> str:
        return self._executor_id

    @property
    def superstep(self) -> int:
        return self._superstep

    @property
    def run_id(self) -> str:
        return self._scope.run_id

    @property
    def forked_from(self) -> tuple[str, ...]:
        """The runs this run was forked from (``fork=True``, ``stepgraph run
        --fork``), the nearest first — empty unless it is a fork. What the
        executors restored from its checkpoints was theirs: an executor that
        keeps state per ``ctx.run_id``, as ``sg.Agent`` keeps its
        conversation, goes on with state of these runs rather than start
        afresh."""
        return self._scope.forked_from

    @property
    def has_successors(self) -> bool:
        """Whether this executor has outgoing edges: whether what it sends can
        go anywhere (an executor at the end of a graph yields instead)."""
        senders = self._scope.senders
        return senders is None or self._executor_id in senders

    @property
    def context(self) -> ContextT:
        """What the caller passed as ``run(..., context=...)`` (``None`` if
        nothing): per-run dependencies such as a user id or a client. It is
        not checkpointed; a resumed run is given its context again."""
        return self._scope.context  # type: ignore[no-any-return]

    @property
    def state(self) -> StateView:
        """Shared state: the previous barrier's commit plus this executor's writes."""
        state = self._state
        if state is None:
            state = self._state = StateView(
                self._committed, self._outbox.writes, self._scope.reducers, self._check_open
            )
        return state

    def send_message(self, message: OutT, target: str | None = None) -> _Done:
        """Send ``message`` along this executor's edges (only to ``target``
        when given). Delivered in the next superstep."""
        if self._closed:  # (inline: this runs for every message)
            self._check_open()
        if message is None:
            raise MessageTypeError(
                f"executor {self._executor_id!r} sent None; None is never a message",
                executor_id=self._executor_id,
                superstep=self._superstep,
            )
        if target is not None and target not in self._scope.executor_ids:
            raise RoutingError(
                f"executor {self._executor_id!r} sent to unknown target {target!r}",
                executor_id=self._executor_id,
                superstep=self._superstep,
            )
        spec = self._contract.outputs
        if not spec.matches(message):
            self._violation("sent", message, "output", spec)
        self._outbox.sent.append((message, target))
        return _DONE

    def yield_output(self, value: WorkflowOutT) -> _Done:
        """Yield a workflow output; reported as an ``output`` event when the
        current handler call returns successfully."""
        self._check_open()
        output_ids = self._scope.output_ids
        if output_ids is not None and self._executor_id not in output_ids:
            self._report(
                f"executor {self._executor_id!r} yielded an output but is not one of the "
                f"workflow's output executors {sorted(output_ids)}; the value is not an output",
                MessageTypeError,
            )
            return _DONE
        spec = self._contract.workflow_outputs
        if not spec.matches(value):
            self._violation("yielded", value, "workflow output", spec)
        self._pending.append(value)
        return _DONE

    def _operation(self, name: str, attributes: dict[str, Any]) -> Any:
        """A span for work inside this handler call (the agent layer's model
        and tool calls), under the handler's; ``None`` when the run is not
        traced."""
        trace = self._scope.trace
        return None if trace is None else trace.operation(name, attributes)

    def add_event(self, event: Event) -> _Done:
        """Emit a user event now (events are observations: a retried or failed
        call does not take back the events it emitted)."""
        self._check_open()
        if not isinstance(event, Event):
            raise EventError(
                f"executor {self._executor_id!r} passed {type(event).__name__} to add_event; "
                "pass a stepgraph.UserEvent or an instance of a stepgraph.Event subclass",
                executor_id=self._executor_id,
                superstep=self._superstep,
            )
        if event.kind in FRAMEWORK_EVENT_KINDS or type(event) is Event:
            raise EventError(
                f"executor {self._executor_id!r} may not emit framework event kind "
                f"{event.kind!r}; use stepgraph.UserEvent(kind=..., data=...) with a kind of "
                f"your own (reserved: {sorted(FRAMEWORK_EVENT_KINDS)})",
                executor_id=self._executor_id,
                superstep=self._superstep,
            )
        if event.transient and not self._scope.live:
            return _DONE  # nobody streams: a transient event goes nowhere
        if event.executor_id is None or event.superstep is None:
            event = replace(
                event,
                executor_id=event.executor_id or self._executor_id,
                superstep=self._superstep if event.superstep is None else event.superstep,
            )
        self._emit(event)
        return _DONE

    def request_info(
        self, request: Any, response_type: Any, *, request_id: str | None = None
    ) -> RequestId:
        """Open a request for outside input, at once (like ``send_message``);
        returns its id, which async handlers ``await``. The run goes idle
        with the request open; ``workflow.run(responses={id: value})`` later
        delivers the value to this executor's matching ``@response_handler``.

        ``request_id`` chooses the id (a tool call's id, say): a non-empty
        string without ``/``, whitespace or ``=``, unique in the run — an id that is
        open or was answered in this run fails the superstep."""
        if request_id is None:
            request_id = uuid.uuid4().hex
        else:
            self._check_request_id(request_id)
            request_id = str(request_id) if type(request_id) is RequestId else request_id
        return RequestId(self._open_request(request, response_type, request_id))

    def save_progress(self) -> Awaitable[None]:
        """Checkpoint this executor's snapshot now, within the superstep: the
        run as at the last barrier, with this executor's ``snapshot()`` as it
        is. A run that goes on from there (after a crash, say) runs this
        superstep again, and the executor, restored, finds what it had done —
        work it must not repeat (a tool call, a model turn). Nothing happens
        when the run has no checkpoint store, in a sub-workflow, in a map's
        worker (a new one per item, never restored: the superstep's items run
        again whole), or on a distributed backend.

        ``await`` it in an async handler; a sync handler calls it plainly,
        and its thread waits until the checkpoint is written (queued, with
        ``durability="async"``, as every checkpoint is). A save under
        way when its call ends (timed out, the run cancelled) is cancelled
        with the call, as an awaited one is."""
        self._check_open()
        loop = self._loop
        if loop is None:
            return self._save_progress()
        # A sync handler's thread: the save runs on the run's loop, and the
        # handler goes on once it is written (or raises why it was not).
        saving = asyncio.run_coroutine_threadsafe(self._save_in_call(), loop)
        try:
            saving.result()
        except concurrent.futures.CancelledError:
            self._check_open()  # the call ended (timed out, the run cancelled): say so
            raise
        return _DONE

    async def _save_in_call(self) -> None:
        """A sync call's save, on the loop: one the call's end cancels."""
        self._check_open()
        saves = self._saves
        task = asyncio.current_task()
        if saves is None or task is None:
            await self._save_progress()
            return
        saves.add(task)
        try:
            await self._save_progress()
        finally:
            saves.discard(task)

    async def _save_progress(self) -> None:
        self._check_open()
        progress = self._scope.progress
        if progress is not None and self._item is None:
            await progress(self._executor_id)

    def add_usage(self, usage: Usage) -> _Done:
        """Count tokens a model call of this executor used (an observation,
        like an event: a retried or failed call keeps it). They are summed
        per executor into ``RunResult.usage`` and kept in checkpoints."""
        self._check_open()
        if not isinstance(usage, Usage):
            raise TypeError(
                f"executor {self._executor_id!r} passed {type(usage).__name__} to add_usage; "
                "pass a stepgraph.Usage"
            )
        self._add_usage(self._executor_id, usage)
        return _DONE

    def _add_usage(self, path: str, usage: Usage) -> None:
        tally = self._scope.usage
        before = tally.get(path)
        tally[path] = usage if before is None else before + usage

    def _check_request_id(self, request_id: Any) -> None:
        problem = None
        if not isinstance(request_id, str):
            problem = f"is a {type(request_id).__name__}, not a str"
        elif not request_id or len(request_id) > 200:
            problem = "must have 1 to 200 characters"
        elif "/" in request_id:  # (joins a sub-workflow's id to its requests')
            problem = "may not contain '/', which joins a sub-workflow's id to its requests' ids"
        elif id_separators(request_id):
            problem = "may not contain whitespace, '=' or control characters"
        elif lone_surrogate_at(request_id) is not None:
            problem = "holds half a character (a lone surrogate), which no store can keep"
        elif any(r.request_id == request_id for r in self._outbox.requests):
            problem = "was already opened by this executor in this superstep"
        if problem is not None:
            raise RequestError(
                f"executor {self._executor_id!r}: request id {request_id!r} {problem}",
                executor_id=self._executor_id,
                superstep=self._superstep,
            )

    def _open_request(self, request: Any, response_type: Any, request_id: str) -> str:
        self._check_open()
        if request is None:
            raise RequestError(
                f"executor {self._executor_id!r} opened a request of None",
                executor_id=self._executor_id,
                superstep=self._superstep,
            )
        try:
            TypeSpec(response_type)  # (what an answer is checked against, later)
        except TypeSpecError as exc:
            raise RequestError(
                f"executor {self._executor_id!r} opened a request with response_type "
                f"{response_type!r}: {exc}; pass the type an answer must have, e.g. "
                "ctx.request_info(request, str)",
                executor_id=self._executor_id,
                superstep=self._superstep,
            ) from None
        responds = self._responds
        if responds is None or not responds(request, response_type):
            raise RequestError(
                f"executor {self._executor_id!r} opened a request "
                f"({type_name(type(request))} -> {type_name(response_type)}) that none of its "
                "@response_handler methods can take; add one for that request and response type",
                executor_id=self._executor_id,
                superstep=self._superstep,
            )
        self._outbox.requests.append(
            PendingRequest(
                request_id=request_id,
                executor_id=self._executor_id,
                request=request,
                response_type=response_type,
                superstep=self._superstep,
            )
        )
        return request_id

    # -- engine side ---------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(
                f"the context of executor {self._executor_id!r} (superstep "
                f"{self._superstep}) was used after its handler call ended"
            )

    def _report(self, message: str, error: type[WorkflowRunError]) -> None:
        if self._scope.strict:
            raise error(message, executor_id=self._executor_id, superstep=self._superstep)
        self._emit(
            WarningEvent(message=message, executor_id=self._executor_id, superstep=self._superstep)
        )

    def _violation(self, verb: str, value: Any, what: str, spec: TypeSpec) -> None:
        declared = "none (Never)" if spec.is_never else repr(spec)
        label = self._contract.label
        handler = "" if label == self._executor_id else f" ({label})"
        self._report(
            f"executor {self._executor_id!r}{handler} {verb} {a_value_type(value)}, which is not "
            f"among its declared {what} types: {declared}",
            MessageTypeError,
        )

    def _warn(self, message: str) -> None:
        self._emit(
            WarningEvent(message=message, executor_id=self._executor_id, superstep=self._superstep)
        )

    def _mark(self) -> tuple[int, int, int, dict[str, Any]]:
        outbox = self._outbox
        writes = {k: Fold(v) if type(v) is Fold else v for k, v in outbox.writes.items()}
        return len(outbox.sent), len(self._pending), len(outbox.requests), writes

    def _rollback(self, mark: tuple[int, int, int, dict[str, Any]]) -> None:
        sent, pending, requests, writes = mark
        del self._outbox.sent[sent:]
        del self._pending[pending:]
        del self._outbox.requests[requests:]
        self._outbox.writes.clear()
        self._outbox.writes.update(writes)

    def _flush_outputs(self) -> None:
        """The current call succeeded: its yields become outputs."""
        if self._pending:
            emit, eid, step = self._emit, self._executor_id, self._superstep
            for value in self._pending:
                emit(OutputEvent(data=value, executor_id=eid, superstep=step))
            outbox = self._outbox
            if outbox.outputs is None:
                outbox.outputs = []
            outbox.outputs += self._pending
            self._pending.clear()

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a sync handler on the sync-handler pool; its events reach the
        loop through ``call_soon_threadsafe``. A call that times out or is
        cancelled cannot be stopped: its thread is abandoned, and a warning
        says so."""
        loop = asyncio.get_running_loop()
        emit = self._emit

        def threadsafe_emit(event: Event) -> None:
            loop.call_soon_threadsafe(emit, event)

        def abandoned(count: int) -> None:
            emit(
                WarningEvent(
                    message=f"executor {self._executor_id!r}: a sync handler call was still "
                    "running when it timed out or was cancelled; a thread cannot be stopped, "
                    f"so it runs on in the background until the call returns ({count} such "
                    "thread(s) now), and another thread takes its place for later handlers",
                    executor_id=self._executor_id,
                    superstep=self._superstep,
                )
            )

        self._emit = threadsafe_emit
        # The call gets a context of its own, closed when the call ends or is
        # abandoned: an abandoned call runs on beside the next attempt (a
        # retry) or the next message of this inbox, which share this
        # context's outbox, and must not send, yield or write into theirs.
        own = self._for_thread()
        args = tuple(own if arg is self else arg for arg in args)
        try:
            result = await sync_pool.run(fn, *args, on_abandon=abandoned)
        finally:
            own._closed = True
            self._emit = emit
            if own._saves:  # a save the call is waiting for: it ends with the call
                for task in own._saves:
                    task.cancel()
        # (what a ctx method returned is awaitable, and done: not a coroutine
        # function's result - a request's id, returned to be sent, is a str)
        if inspect.isawaitable(result) and not isinstance(result, (_Done, RequestId)):
            if inspect.iscoroutine(result):
                result.close()  # never awaited: do not leave a warning behind
            raise TypeError(
                f"a handler of executor {self._executor_id!r} was run as a sync function in a "
                f"worker thread but returned {type(result).__name__}; define it with async def "
                "(or give its object an async __call__) so the engine awaits it"
            )
        return result

    def _send_result(self, result: Any) -> None:
        """What a handler returned is sent — but ``None`` (nothing) and what
        a ctx method returned when done (``return ctx.send_message(x)``,
        ``return ctx.yield_output(x)``: the call's own ``_DONE``, not a
        message)."""
        if result is not None and type(result) is not _Done:
            self.send_message(result)

    def _for_thread(self) -> WorkflowContext[OutT, WorkflowOutT, ContextT]:
        """A context for one sync call: this one's outbox, yields and emit (the
        thread-safe one in place), with its own closed flag and state view."""
        own: WorkflowContext[OutT, WorkflowOutT, ContextT] = object.__new__(type(self))
        for name in WorkflowContext.__slots__:
            object.__setattr__(own, name, getattr(self, name))
        own._state = None
        own._closed = False
        own._loop = asyncio.get_running_loop()
        own._saves = set()
        return own

    def _close(self) -> Outbox:
        self._closed = True
        return self._outbox
