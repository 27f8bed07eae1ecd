"""``Workflow``: a built graph that can be run, and its ``RunResult``.

A workflow holds no event-loop-bound object between runs, so the same
instance runs under successive ``asyncio.run`` calls and under uvloop.

Executors given to the builder as *instances* are shared by every run, so a
workflow that has any (other than function executors) runs one run at a time
(``WorkflowBusyError`` otherwise), and an instance serves one running workflow
at a time — two handler calls of one executor can never overlap, even across
workflows built from shared instances. Executors *registered as factories*
belong to one run each: a workflow made only of those and of function
executors runs any number of times at once.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import uuid
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ._checkpoint import (
    Checkpoint,
    CheckpointStore,
    answered_twice,
    going_on_from,
    new_holder,
)
from ._core import (
    Backend,
    Breakpoints,
    Event,
    LocalBackend,
    MessageTypeError,
    OutputEvent,
    PendingRequest,
    RunScope,
    RunState,
    RunStatus,
    RunUsage,
    a_value_type,
    in_schedule_order,
    materialize,
    run_supersteps,
    type_name,
)
from ._exceptions import (
    CheckpointError,
    ConvergenceError,
    RequestError,
    WorkflowBusyError,
    WorkflowDefinitionError,
)
from ._inspect import StateSnapshot, get_state, update_state
from ._otel import end_run, start_run
from ._persistence import CheckpointConfig, RunCodec, apply_responses
from ._recorder import RunRecorder, take_run
from ._stream import RunStream
from ._waiting import Suspended, WaitingRuns

if TYPE_CHECKING:
    from ._core import Graph, Reducers
    from ._executor import Executor

__all__ = ["RunResult", "Workflow", "as_config", "known_ids"]

# Workflows built on each shared executor instance (by id), so that a run
# checks only the workflows it shares an instance with; and a counter that
# tells each workflow when to look again. A thread lock, not an asyncio one:
# it is never held across an await and binds to no loop.
_USERS: dict[int, weakref.WeakSet[Workflow]] = {}
_GENERATION = 0
_IN_USE_LOCK = threading.Lock()

ExecutorRef = Any  # an Executor or its id
_NO_BREAKPOINTS = Breakpoints()


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """What a finished run produced. ``outputs`` are in the run's
    deterministic order — by superstep, then schedule (registration) order,
    a map's items in item order — whichever handler finished first (their
    ``output`` events came as they happened); ``events`` are all of its
    events, in order; ``pending_requests`` are the requests still open (answer them with
    ``run(responses=...)``); ``last_checkpoint`` is the id of the run's newest
    checkpoint, if it was checkpointed; ``usage`` the tokens its model calls
    used, by executor (all of the run's, also those before a resume)."""

    run_id: str
    status: RunStatus
    outputs: list[Any] = field(default_factory=list)
    pending_requests: list[PendingRequest] = field(default_factory=list)
    last_checkpoint: str | None = None
    usage: RunUsage = field(default_factory=RunUsage)
    # What the run emitted: events, and handler-call records made events when
    # ``events`` is first read. Not in the repr: a long run has many, and
    # asyncio may repr the task's result (Python 3.11 does in asyncio.run).
    log: list[Any] = field(default_factory=list, repr=False, compare=False)

    @functools.cached_property
    def events(self) -> list[Event]:
        """Every event of the run, in the order they happened."""
        return [materialize(item) for item in self.log]


def _outputs(log: list[Any], positions: Mapping[str, int]) -> list[Any]:
    """The run's own outputs among what it emitted, in schedule order."""
    found = [e for e in log if type(e) is OutputEvent and not e.workflow_path]
    return in_schedule_order(found, positions)


def as_config(
    checkpoints: CheckpointStore | CheckpointConfig | None,
    error: Callable[[str], Exception] = TypeError,
) -> CheckpointConfig | None:
    """``checkpoints`` as a config; anything else raises ``error`` (the
    builder's is ``WorkflowDefinitionError``)."""
    if checkpoints is None or isinstance(checkpoints, CheckpointConfig):
        return checkpoints
    if isinstance(checkpoints, CheckpointStore):
        return CheckpointConfig(checkpoints)
    hint = ""
    if isinstance(checkpoints, str):  # a --store spec of the command line
        hint = (
            " (a store URL is for the command line's --store; here pass a store object, "
            "e.g. sg.SqliteCheckpointStore(PATH))"
        )
    kind = type(checkpoints).__name__
    raise error(f"checkpoints must be a CheckpointStore or CheckpointConfig, not {kind}{hint}")


def known_ids(
    refs: Iterable[ExecutorRef], executors: Mapping[str, Executor], what: str
) -> frozenset[str]:
    """The ids ``refs`` name, each checked to be an executor of the workflow
    (one id or executor on its own counts as a list of one)."""
    if isinstance(refs, str) or not isinstance(refs, Iterable):
        refs = [refs]
    ids = []
    for ref in refs:
        name = ref if isinstance(ref, str) else getattr(ref, "id", repr(ref))
        if name not in executors:
            raise WorkflowDefinitionError(
                f"{what} names {name!r}, which is not an executor of this workflow "
                f"(known: {sorted(executors)})"
            )
        ids.append(name)
    return frozenset(ids)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Call:
    """What one ``run()`` or ``stream()`` call asked for."""

    input: Any
    responses: Mapping[str, Any] | None
    checkpoint: str | None
    checkpoints: CheckpointStore | CheckpointConfig | None
    backend: Backend | None
    context: Any
    max_supersteps: int | None
    interrupt_before: Iterable[ExecutorRef] | None
    interrupt_after: Iterable[ExecutorRef] | None
    fork: bool = False


@dataclass(slots=True)
class _Outcome:
    run_id: str
    status: RunStatus
    pending: list[PendingRequest]
    last_checkpoint: str | None
    usage: RunUsage


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
        factories: frozenset[str] = frozenset(),
        reducers: Reducers | None = None,
        breakpoints: Breakpoints = _NO_BREAKPOINTS,
        shared_children: Mapping[str, str] | None = None,
    ) -> None:
        self._graph = graph
        self._senders = frozenset(graph.out_edges)
        self._executors = executors
        self._max_supersteps = max_supersteps
        self._strict = strict
        self._output_ids = output_ids
        self._codec = codec
        self._checkpoints = checkpoints
        self._factories = factories
        self._reducers = dict(reducers or {})
        self._breakpoints = breakpoints
        self._running = 0
        self._waiting = WaitingRuns()  # runs kept for run(responses=...)
        # Shared instances that carry their own state: claimed per run.
        self._claimable = [
            e for eid, e in executors.items() if not e.stateless and eid not in factories
        ]
        # Registered sub-workflows whose every call uses one executor instance
        # (what is said of it): this workflow's runs take turns too.
        self._shared_children = dict(shared_children or {})
        self._rivals: list[tuple[weakref.ref[Workflow], Executor]] = []
        self._seen_generation = -1
        if self._claimable:
            global _GENERATION
            with _IN_USE_LOCK:
                for executor in self._claimable:
                    users = _USERS.get(id(executor))
                    if users is None:
                        users = _USERS[id(executor)] = weakref.WeakSet()
                        weakref.finalize(executor, _USERS.pop, id(executor), None)
                    users.add(self)
                _GENERATION += 1

    # -- description -------------------------------------------------------

    @property
    def name(self) -> str:
        return self._graph.name

    @property
    def start(self) -> Executor:
        return self._executors[self._graph.start]

    @property
    def executors(self) -> Mapping[str, Executor]:
        """Executors by id, in registration (schedule) order (for a registered
        factory: the prototype made at build time, which never runs)."""
        return MappingProxyType(self._executors)

    @functools.cached_property
    def positions(self) -> Mapping[str, int]:
        """Each executor's place in the schedule (registration order)."""
        return {eid: node.index for eid, node in self._graph.nodes.items()}

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
    def concurrent(self) -> bool:
        """Whether runs may overlap: no executor instance is shared by them,
        nor by the runs of a sub-workflow one of them runs."""
        if self._claimable or self._shared_children:  # (a map whose workers all use one
            return False  # instance too; a factory whose executors all run one workflow)
        children = (
            getattr(e, "workflow", None)
            for eid, e in self._executors.items()
            if eid not in self._factories  # (a factory's own: each run's, built afresh)
        )
        return all(c.concurrent for c in children if isinstance(c, Workflow))

    @property
    def shared_instances(self) -> list[Executor]:
        """The executor instances every run of this workflow uses (neither
        registered factories' nor stateless ones)."""
        return list(self._claimable)

    @property
    def shared_snapshots(self) -> list[str]:
        """The ids of the executors that keep state in checkpoints
        (``snapshot()``) in one instance serving every run — but
        sub-workflows, which keep each of their child runs apart."""
        return [
            e.id
            for e in self._claimable
            if e.takes_snapshots and not isinstance(getattr(e, "workflow", None), Workflow)
        ]

    @property
    def output_executors(self) -> frozenset[str] | None:
        """The ids whose yields are workflow outputs (``None``: all of them)."""
        return self._output_ids

    @property
    def pending_requests(self) -> list[PendingRequest]:
        """The requests open in the runs this object keeps in memory (runs that
        went idle with some): ``run(responses=...)`` answers them without a
        checkpoint."""
        return self._waiting.pending_requests

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
        context: Any = None,
        max_supersteps: int | None = None,
        interrupt_before: Iterable[ExecutorRef] | None = None,
        interrupt_after: Iterable[ExecutorRef] | None = None,
        fork: bool = False,
    ) -> RunResult:
        """Run to completion (or a pause) and return the result.

        - ``run(input)`` starts a new run;
        - ``run(checkpoint=ID, checkpoints=store)`` goes on from a checkpoint
          (in any process, with a freshly built workflow of the same graph),
          also from a breakpoint;
        - ``run(responses={request_id: value})`` answers open requests, of a
          run this object keeps in memory or, with ``checkpoint=``, of a
          stored one.

        ``context`` is handed to handlers as ``ctx.context`` (per-run
        dependencies; not checkpointed). A request is answered once along a
        run: answering one that was answered already — from an earlier
        checkpoint, or by another process — raises ``RequestError``, unless
        ``fork=True`` (with ``checkpoint=``) goes on as a new run branching
        off that checkpoint. Two calls that continue one run at once: the
        second raises ``CheckpointError`` naming the run. ``checkpoints``, ``max_supersteps``
        and ``interrupt_before``/``interrupt_after`` (executors, or their ids)
        override the builder's for this call. Raises ``WorkflowRunError``
        (original exception chained) when the run fails,
        ``ConvergenceError`` when ``max_supersteps`` is exceeded,
        ``RequestError`` for invalid responses (nothing consumed), checkpoint
        errors for bad checkpoints, and ``WorkflowBusyError`` at once if this
        workflow shares executor instances and is already running.
        """
        call = _Call(
            input=input, responses=responses, checkpoint=checkpoint, checkpoints=checkpoints,
            backend=backend, context=context, max_supersteps=max_supersteps,
            interrupt_before=interrupt_before, interrupt_after=interrupt_after, fork=fork,
        )  # fmt: skip
        log: list[Any] = []
        try:
            outcome = await self._start(call, log.append, live=False)
        except ConvergenceError as error:
            error.outputs = _outputs(log, self.positions)
            raise
        return RunResult(
            run_id=outcome.run_id,
            status=outcome.status,
            outputs=_outputs(log, self.positions),
            pending_requests=outcome.pending,
            last_checkpoint=outcome.last_checkpoint,
            usage=outcome.usage,
            log=log,
        )

    def stream(
        self,
        input: Any = None,
        *,
        responses: Mapping[str, Any] | None = None,
        checkpoint: str | None = None,
        checkpoints: CheckpointStore | CheckpointConfig | None = None,
        backend: Backend | None = None,
        context: Any = None,
        max_supersteps: int | None = None,
        interrupt_before: Iterable[ExecutorRef] | None = None,
        interrupt_after: Iterable[ExecutorRef] | None = None,
        fork: bool = False,
    ) -> RunStream:
        """Like :meth:`run`, yielding each event as it happens (no polling). A
        failed run yields its ``failed`` event and then raises like ``run()``.

        Use it as ``async with workflow.stream(x) as events:`` to cancel the
        run at once when the block exits; ``aclose()`` does the same, and so
        does dropping the stream (a ``break`` out of ``async for``) — then on
        the loop's next turn."""
        call = _Call(
            input=input, responses=responses, checkpoint=checkpoint, checkpoints=checkpoints,
            backend=backend, context=context, max_supersteps=max_supersteps,
            interrupt_before=interrupt_before, interrupt_after=interrupt_after, fork=fork,
        )  # fmt: skip
        return RunStream(lambda emit: self._start(call, emit, live=True))

    async def _start(self, call: _Call, emit: Callable[[Event], None], *, live: bool) -> _Outcome:
        limit, breakpoints = self._limits(call)
        self._acquire()
        try:
            return await self._run(call, emit, limit, breakpoints, live)
        finally:
            self._release()

    def _limits(self, call: _Call) -> tuple[int, Breakpoints]:
        if call.backend is not None and not callable(getattr(call.backend, "run_superstep", None)):
            # (else: an AttributeError from deep in the scheduler, once the run has started)
            raise TypeError(
                f"backend must be a Backend (sg.LocalBackend(), sg.RayBackend(...)), not "
                f"{type(call.backend).__name__} {call.backend!r}"
            )
        limit = self._max_supersteps if call.max_supersteps is None else call.max_supersteps
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"max_supersteps must be a positive int, got {limit!r}")
        breakpoints = self._breakpoints
        if call.interrupt_before is not None or call.interrupt_after is not None:
            before = (
                breakpoints.before
                if call.interrupt_before is None
                else known_ids(call.interrupt_before, self._executors, "interrupt_before")
            )
            after = (
                breakpoints.after
                if call.interrupt_after is None
                else known_ids(call.interrupt_after, self._executors, "interrupt_after")
            )
            breakpoints = Breakpoints(before=before, after=after)
        return limit, breakpoints

    async def _run(
        self,
        call: _Call,
        emit: Callable[[Event], None],
        limit: int,
        breakpoints: Breakpoints,
        live: bool,
    ) -> _Outcome:
        config = as_config(call.checkpoints) or self._checkpoints
        if config is None and (breakpoints.before or breakpoints.after):
            raise CheckpointError(
                f"workflow {self.name!r} has breakpoints but no checkpoint store: a run that "
                "pauses goes on from its checkpoint, so pass checkpoints= (to the builder or "
                "this call)"
            )
        run_id, run, parent, stored_hashes, claimed = await self._prepare(call, config)
        succeeded = False
        holder = None
        try:
            recorder = None
            if config is not None:
                # A continuation takes the run first (another may be running
                # it); a new run takes it with its first save, at no cost.
                holder = (
                    await take_run(config.store, run_id, parent)
                    if parent is not None
                    else new_holder()
                )
                if claimed is not None:
                    # Checked holding the run: another process may have
                    # continued it up to the moment this call took it.
                    await _not_gone_on(config.store, claimed)
                recorder = RunRecorder(
                    codec=self._codec,
                    config=config,
                    run_id=run_id,
                    parent_id=parent.id if parent is not None else None,
                    state_hashes=stored_hashes,
                    stored=set(parent.refs) if parent is not None else None,
                    # (a fork is a new run: its entry is its first checkpoint)
                    skip_entry=parent is not None and call.responses is None and not call.fork,
                    parent=parent,
                    answering=tuple(call.responses or ()),
                    holder=holder,
                    leased=parent is not None,
                )
            scope = self._scope(run_id, emit, run, call.context, live)
            scope.forked_from = run.forked_from
            trace = scope.trace = start_run(
                self.name,
                run_id,
                parent.id if parent is not None else None,
                parent.body.get("trace") if parent is not None else claimed and claimed.trace,
            )
            link = trace.link() if trace is not None else None  # (kept if the run waits)
            if recorder is not None:
                scope.progress = self._progress(recorder, run)
                recorder.trace = trace
            runner = call.backend if call.backend is not None else LocalBackend()
            try:
                status = await run_supersteps(
                    self._graph, scope, runner, run, limit, recorder, breakpoints
                )
            except BaseException as error:
                if isinstance(error, ConvergenceError):  # the run can go on from where it stopped
                    error.run_id = run_id
                    error.last_checkpoint = recorder.last_id if recorder is not None else None
                end_run(trace, run.superstep, None, error)
                trace = None
                raise
            finally:
                finish = getattr(runner, "finish_run", None)  # distributed backends
                if finish is not None:
                    await asyncio.shield(finish(scope))
                end_run(trace, run.superstep, status.value if trace is not None else None, None)
            succeeded = True
        finally:
            if recorder is not None:  # (given back already, unless the run never got going)
                if recorder.holds_lease:
                    await asyncio.shield(recorder.release())
            elif holder is not None and config is not None and parent is not None:
                await asyncio.shield(config.store.release(run_id, holder))
            if claimed is not None:
                if succeeded:
                    self._waiting.settled(claimed.run_id)  # (kept below if it waits again)
                else:
                    self._waiting.keep(claimed, emit)  # not answered after all: still answerable
        if call.responses is not None:
            at = recorder.answered_at if recorder is not None else None
            self._waiting.answered(call.responses, run_id, at)
        last = recorder.last_id if recorder is not None else None
        if run.requests:
            shared = self.shared_snapshots if last is None else None
            kept = self._codec.keep_shared(shared, run_id, run) if shared else None
            self._waiting.keep(Suspended(run_id, run, last, kept, link), emit)
        usage = RunUsage(dict(run.usage))
        return _Outcome(run_id, status, list(run.requests.values()), last, usage)

    def _progress(self, recorder: RunRecorder, run: RunState) -> Callable[[str], Awaitable[None]]:
        def save(executor_id: str) -> Awaitable[None]:
            executor = run.instances.get(executor_id) or self._executors[executor_id]
            if not executor.takes_snapshots:
                raise TypeError(
                    f"executor {executor_id!r} saved its progress but has no snapshot() to save; "
                    "define snapshot() and restore()"
                )
            return recorder.progress(executor_id, executor, run.usage)

        return save

    async def _prepare(
        self, call: _Call, config: CheckpointConfig | None
    ) -> tuple[str, RunState, Checkpoint | None, dict[str, str] | None, Suspended | None]:
        """The run to execute: (run id, state, checkpoint resumed from, its
        state hashes, the suspended run it continues)."""
        start = self.start
        responses = call.responses
        if call.input is not None and (call.checkpoint is not None or responses is not None):
            raise RequestError(
                "pass an input to start a new run, or checkpoint=/responses= to continue "
                "one — not both"
            )
        if call.fork and call.checkpoint is None:
            raise CheckpointError("fork=True starts a branch off a checkpoint: pass checkpoint=")
        if call.checkpoint is not None:
            if config is None:
                raise CheckpointError(
                    f"resuming from checkpoint {call.checkpoint!r} needs a store: pass checkpoints="
                )
            stored = await config.store.load(call.checkpoint)
            going_on_from(config.store, stored)
            self._codec.check(stored)
            run = self._codec.restore(stored)
            if responses is not None:
                if not call.fork:
                    await _not_answered(config.store, stored.run_id, responses)
                apply_responses(run, responses, self._executors)
                self._codec.storable(responses)  # (its type checked first: clearer)
            # Continued from its checkpoint: the copy of the run kept in memory
            # (waiting for the same answers) is superseded, not answerable
            # twice. A fork is a new run: the original still waits.
            if not call.fork:
                self._waiting.drop(stored.run_id)
            run_id = uuid.uuid4().hex if call.fork else stored.run_id
            if call.fork:  # (what its executors restored was that run's)
                run.forked_from = (stored.run_id, *run.forked_from)
            return run_id, run, stored, self._codec.hashes(stored), None
        if responses is not None:
            suspended = self._waiting.claim(responses)
            run = suspended.state.copy()  # (a failed run leaves the original's requests)
            try:
                if config is not None:  # another process may have answered through the store
                    await _not_answered(config.store, suspended.run_id, responses)
                parent = None
                if suspended.last_checkpoint is not None and config is not None:
                    parent = await config.store.load(suspended.last_checkpoint)
                    # Another run (a fork, a resume, a new run) may have used the
                    # shared executors since: they go on (and check the answers)
                    # as this run left them.
                    self._codec.restore_shared(parent)
                elif suspended.shared:
                    self._codec.restore_kept(suspended.shared)
                apply_responses(run, responses, self._executors)
                if config is not None:
                    self._codec.storable(responses)
            except BaseException:
                self._waiting.put_back(suspended)  # nothing consumed
                raise
            hashes = self._codec.hashes(parent) if parent is not None else None
            return suspended.run_id, run, parent, hashes, suspended
        if call.input is None:
            raise MessageTypeError(
                f"workflow {self.name!r} needs an input message for its start executor "
                f"{start.id!r}; None is never a message"
            )
        if not start.accepts(call.input):
            raise MessageTypeError(
                f"the start executor {start.id!r} of workflow {self.name!r} has no handler "
                f"for the input, {a_value_type(call.input)} (it handles "
                f"{', '.join(type_name(t) for t in start.input_types)})",
                executor_id=start.id,
            )
        run = RunState(inboxes={start.id: [("", call.input)]})
        return uuid.uuid4().hex, run, None, None, None

    async def _drive(
        self,
        run: RunState,
        run_id: str,
        emit: Callable[[Event], None],
        context: Any = None,
        live: bool = False,
    ) -> RunStatus:
        """Run ``run`` to idle without checkpoints: how a ``WorkflowExecutor``
        runs this workflow as a child (holding it busy meanwhile, if it
        shares executor instances)."""
        self._acquire()
        try:
            scope = self._scope(run_id, emit, run, context, live)
            # (under the parent's handler span, when the parent is traced)
            trace = scope.trace = start_run(self.name, run_id, None, None)
            try:
                status = await run_supersteps(
                    self._graph, scope, LocalBackend(), run, self._max_supersteps
                )
            except BaseException as error:
                end_run(trace, run.superstep, None, error)
                raise
            end_run(trace, run.superstep, status.value, None)
            return status
        finally:
            self._release()

    def _scope(
        self,
        run_id: str,
        emit: Callable[[Event], None],
        run: RunState,
        context: Any,
        live: bool = False,
    ) -> RunScope:
        scope = RunScope(
            run_id=run_id,
            workflow_name=self.name,
            strict=self._strict,
            emit=emit,
            executor_ids=frozenset(self._executors),
            output_ids=self._output_ids,
            senders=self._senders,
            context=context,
            instances=run.instances,
            reducers=self._reducers,
            live=live,
            usage=run.usage,
        )
        scope.nodes = self._graph.nodes
        return scope

    @property
    def codec(self) -> RunCodec:
        """Encodes this workflow's run states (checkpoints, nesting)."""
        return self._codec

    # -- checkpoints ------------------------------------------------------------

    def _store(self, checkpoints: CheckpointStore | CheckpointConfig | None) -> CheckpointStore:
        config = as_config(checkpoints) or self._checkpoints
        if config is None:
            raise CheckpointError(
                f"workflow {self.name!r} has no checkpoint store: pass checkpoints="
            )
        return config.store

    async def get_state(
        self,
        checkpoint: str,
        *,
        checkpoints: CheckpointStore | CheckpointConfig | None = None,
    ) -> StateSnapshot:
        """What ``checkpoint`` holds, decoded by the safe codec: shared state,
        the messages waiting per executor, open requests, executor snapshots
        (no executor is touched)."""
        return await get_state(self, self._store(checkpoints), checkpoint)

    async def update_state(
        self,
        checkpoint: str,
        *,
        state: Mapping[str, Any] | None = None,
        messages: Mapping[str, Iterable[Any]] | None = None,
        drop_requests: Iterable[str] = (),
        checkpoints: CheckpointStore | CheckpointConfig | None = None,
    ) -> str:
        """Write a new checkpoint that forks from ``checkpoint`` with edits —
        ``state`` keys set, each listed executor's waiting messages replaced
        by ``messages[id]``, ``drop_requests`` withdrawn — and return its id;
        the original is never changed. Checked against the graph first
        (``MessageTypeError`` for a message no handler takes, ``RequestError``
        for a request that is not open, ``CheckpointEncodeError`` for a value
        that cannot be stored; ``CheckpointError`` while the run goes on
        elsewhere). Go on with ``run(checkpoint=new_id)``."""
        return await update_state(
            self,
            self._store(checkpoints),
            checkpoint,
            state=state,
            messages=messages,
            drop_requests=drop_requests,
        )

    def _acquire(self) -> None:
        with _IN_USE_LOCK:
            if self._running and self._shared_children:
                eid, why = next(iter(self._shared_children.items()))
                raise WorkflowBusyError(
                    f"workflow {self.name!r} is already running, and every executor its "
                    f"factory {eid!r} makes {why}, or register its executors as factories, "
                    "to run it concurrently",
                    executor_id=eid,
                )
            if not self._claimable:
                self._running += 1
                return
            if self._running:
                shared = ", ".join(repr(e.id) for e in self._claimable[:3])
                raise WorkflowBusyError(
                    f"workflow {self.name!r} is already running, and its executor instances "
                    f"({shared}) are shared by its runs, so it runs one run at a time; register "
                    "them as factories (builder.register(id, factory)) to run it concurrently"
                )
            for ref, executor in self._rivals_now():
                rival = ref()
                if rival is not None and rival._running:
                    raise WorkflowBusyError(
                        f"executor {executor.id!r} ({type(executor).__name__}) is in use by "
                        f"running workflow {rival.name!r}; an executor instance serves one run "
                        "at a time — build each concurrent workflow from its own instances",
                        executor_id=executor.id,
                    )
            self._running += 1

    def _rivals_now(self) -> list[tuple[weakref.ref[Workflow], Executor]]:
        """The other workflows built on one of this one's shared instances
        (computed again only when a workflow was built since; lock held)."""
        if self._seen_generation != _GENERATION:
            self._rivals = [
                (weakref.ref(other), executor)
                for executor in self._claimable
                for other in _USERS.get(id(executor), ())
                if other is not self
            ]
            self._seen_generation = _GENERATION
        return self._rivals

    def _release(self) -> None:
        with _IN_USE_LOCK:
            self._running -= 1


async def _not_gone_on(store: CheckpointStore, suspended: Suspended) -> None:
    """``RequestError`` if the run kept in memory went on elsewhere since
    (another process continued it): this copy waits at an older checkpoint,
    and answering it would silently branch off there."""
    here = suspended.last_checkpoint
    info = await store.run_info(suspended.run_id)
    if here is None or info is None or info.last_checkpoint == here:
        return
    raise RequestError(
        f"run {suspended.run_id!r} went on elsewhere since this workflow object kept it "
        f"waiting at checkpoint {here}: its latest checkpoint is {info.last_checkpoint}; "
        f"answer from there (run(responses=..., checkpoint={info.last_checkpoint!r})), or "
        f"pass checkpoint={here!r} to go on from where this copy waits"
    )


async def _not_answered(store: CheckpointStore, run_id: str, responses: Mapping[str, Any]) -> None:
    """``RequestError`` if the store recorded an answer to one of these."""
    if not isinstance(responses, Mapping) or not responses:
        return  # (refused with its reason by apply_responses)
    answered = await store.answers(run_id, [r for r in responses if isinstance(r, str)])
    for request_id, checkpoint_id in answered.items():
        raise answered_twice(run_id, request_id, checkpoint_id)
