"""``Workflow``: a built graph that can be run, and its ``RunResult``.

A workflow holds no event-loop-bound object between runs, so the same
instance runs under successive ``asyncio.run`` calls and under uvloop. It runs
one run at a time (``WorkflowBusyError`` otherwise), and an ``Executor``
instance serves one running workflow at a time — so two handler calls of one
executor can never overlap, even across workflows built from shared instances.
Function executors (``@executor``) hold no state of the engine's and may be
shared freely.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ._checkpoint import Checkpoint, CheckpointStore
from ._core import (
    Backend,
    Event,
    LocalBackend,
    MessageTypeError,
    OutputEvent,
    PendingRequest,
    RunScope,
    RunState,
    RunStatus,
    WarningEvent,
    run_supersteps,
    type_name,
)
from ._exceptions import CheckpointError, RequestError, WorkflowBusyError
from ._executor import FunctionExecutor
from ._persistence import CheckpointConfig, RunCodec, RunRecorder, apply_responses
from ._stream import RunStream

if TYPE_CHECKING:
    from ._core import Graph
    from ._executor import Executor

__all__ = ["RunResult", "Workflow"]

# id(executor) -> name of the workflow running it. A thread lock, not an
# asyncio one: it is never held across an await and binds to no loop.
_IN_USE: dict[int, str] = {}
_IN_USE_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True, kw_only=True)
class RunResult:
    """What a finished run produced. ``outputs`` are in the order their
    ``output`` events were emitted; ``pending_requests`` are the requests
    still open (answer them with ``run(responses=...)``); ``last_checkpoint``
    is the id of the run's newest checkpoint, if it was checkpointed."""

    run_id: str
    status: RunStatus
    outputs: list[Any] = field(default_factory=list)
    # Not in the repr: a long run has many events, and asyncio may repr the
    # task's result (Python 3.11 does when ``asyncio.run`` finishes).
    events: list[Event] = field(default_factory=list, repr=False)
    pending_requests: list[PendingRequest] = field(default_factory=list)
    last_checkpoint: str | None = None


def as_config(checkpoints: CheckpointStore | CheckpointConfig | None) -> CheckpointConfig | None:
    if checkpoints is None or isinstance(checkpoints, CheckpointConfig):
        return checkpoints
    if isinstance(checkpoints, CheckpointStore):
        return CheckpointConfig(checkpoints)
    kind = type(checkpoints).__name__
    raise TypeError(f"checkpoints must be a CheckpointStore or CheckpointConfig, not {kind}")


@dataclass(slots=True)
class _Suspended:
    """A run that went idle with open requests, kept for ``run(responses=...)``."""

    run_id: str
    state: RunState
    last_checkpoint: str | None


@dataclass(slots=True)
class _Outcome:
    run_id: str
    status: RunStatus
    pending: list[PendingRequest]
    last_checkpoint: str | None


class Workflow:
    """A validated workflow; create it with ``WorkflowBuilder(...).build()``."""

    def __init__(
        self,
        *,
        graph: Graph,
        executors: dict[str, Executor],
        max_supersteps: int,
        strict: bool,
        output_ids: frozenset[str] | None,
        codec: RunCodec,
        checkpoints: CheckpointConfig | None = None,
    ) -> None:
        self._graph = graph
        self._executors = executors
        self._max_supersteps = max_supersteps
        self._strict = strict
        self._output_ids = output_ids
        self._codec = codec
        self._checkpoints = checkpoints
        self._running = False
        self._suspended: _Suspended | None = None
        # Executors whose instances carry their own state: claimed per run.
        self._claimable = [e for e in executors.values() if not isinstance(e, FunctionExecutor)]

    # -- description -------------------------------------------------------

    @property
    def name(self) -> str:
        return self._graph.name

    @property
    def start(self) -> Executor:
        return self._executors[self._graph.start]

    @property
    def executors(self) -> Mapping[str, Executor]:
        """Executors by id, in registration (schedule) order."""
        return MappingProxyType(self._executors)

    @property
    def graph(self) -> Graph:
        return self._graph

    @property
    def signature(self) -> str:
        """The graph signature stored in (and checked against) checkpoints."""
        return self._codec.signature

    @property
    def max_supersteps(self) -> int:
        return self._max_supersteps

    @property
    def strict(self) -> bool:
        return self._strict

    @property
    def output_executors(self) -> frozenset[str] | None:
        """The ids whose yields are workflow outputs (``None``: all of them)."""
        return self._output_ids

    @property
    def pending_requests(self) -> list[PendingRequest]:
        """Requests left open by the last run of this instance, if it went idle
        with some (``run(responses=...)`` answers them without a checkpoint)."""
        return [] if self._suspended is None else list(self._suspended.state.requests.values())

    def __repr__(self) -> str:
        return f"<Workflow {self.name!r}: {len(self._executors)} executors>"

    # -- running -------------------------------------------------------------

    async def run(
        self,
        input: Any = None,
        *,
        responses: Mapping[str, Any] | None = None,
        checkpoint: str | None = None,
        checkpoints: CheckpointStore | CheckpointConfig | None = None,
        backend: Backend | None = None,
    ) -> RunResult:
        """Run to completion and return the result.

        - ``run(input)`` starts a new run;
        - ``run(checkpoint=ID, checkpoints=store)`` resumes from a checkpoint
          (in any process, with a freshly built workflow of the same graph);
        - ``run(responses={request_id: value})`` answers open requests, of this
          instance's last run or, with ``checkpoint=``, of a stored one.

        ``checkpoints`` (a store or ``CheckpointConfig``) overrides the
        builder's. Raises ``WorkflowRunError`` (original exception chained)
        when the run fails, ``ConvergenceError`` when ``max_supersteps`` is
        exceeded, ``RequestError`` for invalid responses (nothing consumed),
        checkpoint errors for bad checkpoints, and ``WorkflowBusyError`` at
        once if this workflow is already running.
        """
        events: list[Event] = []
        self._acquire()
        outcome = await self._run_acquired(
            input, responses, checkpoint, checkpoints, events.append, backend
        )
        outputs = [e.data for e in events if type(e) is OutputEvent and not e.workflow_path]
        return RunResult(
            run_id=outcome.run_id,
            status=outcome.status,
            outputs=outputs,
            events=events,
            pending_requests=outcome.pending,
            last_checkpoint=outcome.last_checkpoint,
        )

    def stream(
        self,
        input: Any = None,
        *,
        responses: Mapping[str, Any] | None = None,
        checkpoint: str | None = None,
        checkpoints: CheckpointStore | CheckpointConfig | None = None,
        backend: Backend | None = None,
    ) -> RunStream:
        """Like :meth:`run`, yielding each event as it happens (no polling). A
        failed run yields its ``failed`` event and then raises like ``run()``.

        Use it as ``async with workflow.stream(x) as events:`` to cancel the
        run at once when the block exits; ``aclose()`` does the same, and so
        does dropping the stream (a ``break`` out of ``async for``) — then on
        the loop's next turn."""

        async def start(emit: Callable[[Event], None]) -> _Outcome:
            self._acquire()
            return await self._run_acquired(
                input, responses, checkpoint, checkpoints, emit, backend
            )

        return RunStream(start)

    async def _run_acquired(
        self,
        input: Any,
        responses: Mapping[str, Any] | None,
        checkpoint: str | None,
        checkpoints: CheckpointStore | CheckpointConfig | None,
        emit: Callable[[Event], None],
        backend: Backend | None,
    ) -> _Outcome:
        try:
            config = as_config(checkpoints) or self._checkpoints
            run_id, run, parent, stored_hashes = await self._prepare(
                input, responses, checkpoint, config
            )
            recorder = None
            if config is not None:
                recorder = RunRecorder(
                    codec=self._codec,
                    config=config,
                    run_id=run_id,
                    parent_id=parent.id if parent is not None else None,
                    state_hashes=stored_hashes,
                    stored=set(parent.refs) if parent is not None else None,
                    skip_entry=parent is not None and responses is None,
                )
            scope = self._scope(run_id, emit)
            runner = backend if backend is not None else LocalBackend()
            try:
                status = await run_supersteps(
                    self._graph, scope, runner, run, self._max_supersteps, recorder
                )
            finally:
                finish = getattr(runner, "finish_run", None)  # distributed backends
                if finish is not None:
                    await asyncio.shield(finish())
            last = recorder.last_id if recorder is not None else None
            if run.requests:
                previous = self._suspended
                if previous is not None and previous.run_id != run_id:
                    emit(_forgotten(previous, run_id))
                self._suspended = _Suspended(run_id, run, last)
            elif self._suspended is not None and self._suspended.run_id == run_id:
                self._suspended = None
            return _Outcome(run_id, status, list(run.requests.values()), last)
        finally:
            self._release()

    async def _prepare(
        self,
        input: Any,
        responses: Mapping[str, Any] | None,
        checkpoint: str | None,
        config: CheckpointConfig | None,
    ) -> tuple[str, RunState, Checkpoint | None, dict[str, str] | None]:
        """The run to execute: (run id, state, checkpoint resumed from, its
        state hashes)."""
        start = self.start
        if input is not None and (checkpoint is not None or responses is not None):
            raise RequestError(
                "pass an input to start a new run, or checkpoint=/responses= to continue "
                "one — not both"
            )
        if checkpoint is not None:
            if config is None:
                raise CheckpointError(
                    f"resuming from checkpoint {checkpoint!r} needs a store: pass checkpoints="
                )
            stored = await config.store.load(checkpoint)
            self._codec.check(stored)
            run = self._codec.restore(stored)
            if responses is not None:
                apply_responses(run, responses)
            return stored.run_id, run, stored, self._codec.hashes(stored)
        if responses is not None:
            suspended = self._suspended
            if suspended is None:
                raise RequestError(
                    f"workflow {self.name!r} has no open requests in memory; to answer a "
                    "stored run's requests pass checkpoint= (and checkpoints=)"
                )
            run = _copy_state(suspended.state)
            apply_responses(run, responses)
            parent = None
            if suspended.last_checkpoint is not None and config is not None:
                parent = await config.store.load(suspended.last_checkpoint)
            return (
                suspended.run_id,
                run,
                parent,
                (self._codec.hashes(parent) if parent is not None else None),
            )
        if input is None:
            raise MessageTypeError(
                f"workflow {self.name!r} needs an input message for its start executor "
                f"{start.id!r}; None is never a message"
            )
        if not start.accepts(input):
            raise MessageTypeError(
                f"the start executor {start.id!r} of workflow {self.name!r} has no handler "
                f"for the input {type_name(type(input))} (it handles "
                f"{', '.join(type_name(t) for t in start.input_types)})",
                executor_id=start.id,
            )
        return uuid.uuid4().hex, RunState(inboxes={start.id: [("", input)]}), None, None

    async def _drive(self, run: RunState, run_id: str, emit: Callable[[Event], None]) -> RunStatus:
        """Run ``run`` to idle without checkpoints: how a ``WorkflowExecutor``
        runs this workflow as a child (holding it busy meanwhile)."""
        self._acquire()
        try:
            scope = self._scope(run_id, emit)
            return await run_supersteps(
                self._graph, scope, LocalBackend(), run, self._max_supersteps
            )
        finally:
            self._release()

    def _scope(self, run_id: str, emit: Callable[[Event], None]) -> RunScope:
        return RunScope(
            run_id=run_id,
            workflow_name=self.name,
            strict=self._strict,
            emit=emit,
            executor_ids=frozenset(self._executors),
            output_ids=self._output_ids,
        )

    @property
    def codec(self) -> RunCodec:
        """Encodes this workflow's run states (checkpoints, nesting)."""
        return self._codec

    def _acquire(self) -> None:
        with _IN_USE_LOCK:
            if self._running:
                raise WorkflowBusyError(
                    f"workflow {self.name!r} is already running; a Workflow runs one run at a "
                    "time — build one workflow per concurrent run"
                )
            for executor in self._claimable:
                holder = _IN_USE.get(id(executor))
                if holder is not None:
                    raise WorkflowBusyError(
                        f"executor {executor.id!r} ({type(executor).__name__}) is in use by "
                        f"running workflow {holder!r}; an executor instance serves one run at "
                        "a time — build each concurrent workflow from its own instances",
                        executor_id=executor.id,
                    )
            for executor in self._claimable:
                _IN_USE[id(executor)] = self.name
            self._running = True

    def _release(self) -> None:
        with _IN_USE_LOCK:
            for executor in self._claimable:
                _IN_USE.pop(id(executor), None)
            self._running = False


def _forgotten(previous: _Suspended, run_id: str) -> WarningEvent:
    """Only one run's open requests are kept in memory per workflow object:
    say so when a newer run's replace them."""
    ids = list(previous.state.requests)
    if previous.last_checkpoint is not None:
        still = (
            f"answer them from its checkpoint with run(checkpoint={previous.last_checkpoint!r}, "
            "responses=...)"
        )
    else:
        still = "they are lost: that run had no checkpoint store"
    return WarningEvent(
        message=f"run {previous.run_id} still had open requests {ids}; this workflow object "
        f"keeps one run's open requests for run(responses=...), and run {run_id} stopped with "
        f"its own, so {still}"
    )


def _copy_state(run: RunState) -> RunState:
    """A copy to apply responses to, so a failed run leaves the open requests
    of the original in place."""
    return RunState(
        inboxes={k: list(v) for k, v in run.inboxes.items()},
        state=dict(run.state),
        fan_in={k: {s: list(m) for s, m in v.items()} for k, v in run.fan_in.items()},
        superstep=run.superstep,
        requests=dict(run.requests),
        answered=set(run.answered),
    )
