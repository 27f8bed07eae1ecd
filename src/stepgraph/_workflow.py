"""``Workflow``: a built graph that can be run — its description, its runs
(``run``, ``stream``, and ``_drive`` for a sub-workflow's child runs), and
its checkpoints' state (``get_state``, ``update_state``).

A workflow holds no event-loop-bound object between runs, so the same
instance runs under successive ``asyncio.run`` calls and under uvloop.

Where a run starts from is ``_prepare``'s; what it returns, ``_result``'s;
and a workflow whose runs share executor instances runs one run at a time
(its ``BusyGuard``, in ``_busy``).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ._busy import BusyGuard
from ._checkpoint import CheckpointStore, new_holder
from ._core import (
    Backend,
    Breakpoints,
    Event,
    LocalBackend,
    PendingRequest,
    RunScope,
    RunState,
    RunStatus,
    RunUsage,
    run_supersteps,
    to_the_end,
)
from ._exceptions import CheckpointError, ConvergenceError, WorkflowDefinitionError
from ._executor import Executor
from ._inspect import StateSnapshot, get_state, update_state
from ._otel import end_run, start_run
from ._persistence import CheckpointConfig, RunCodec
from ._prepare import ExecutorRef, Prepared, RunCall, not_gone_on, prepare
from ._recorder import RunRecorder, take_run
from ._result import RunResult, run_outputs
from ._stream import RunStream
from ._waiting import Suspended, WaitingRuns

if TYPE_CHECKING:
    from ._core import Graph, Reducers

__all__ = ["Workflow", "as_config", "known_ids"]

_NO_BREAKPOINTS = Breakpoints()


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
        self._waiting = WaitingRuns()  # runs kept for run(responses=...)
        # Shared instances that carry their own state: claimed per run.
        self._claimable = [
            e for eid, e in executors.items() if not e.stateless and eid not in factories
        ]
        # Registered sub-workflows whose every call uses one executor instance
        # (what is said of it): this workflow's runs take turns too.
        self._shared_children = dict(shared_children or {})
        self._busy = BusyGuard(graph.name, self._claimable, self._shared_children)
        # Those that keep something per run beyond it (a sub-workflow's
        # waiting child runs): told when this object lets a run go.
        self._keeping_runs = [
            e for e in self._claimable if type(e)._forget_runs is not Executor._forget_runs
        ]

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
        call = RunCall(
            input=input, responses=responses, checkpoint=checkpoint, checkpoints=checkpoints,
            backend=backend, context=context, max_supersteps=max_supersteps,
            interrupt_before=interrupt_before, interrupt_after=interrupt_after, fork=fork,
        )  # fmt: skip
        log: list[Any] = []
        try:
            outcome = await self._start(call, log.append, live=False)
        except ConvergenceError as error:
            error.outputs = run_outputs(log, self.positions)
            raise
        return RunResult(
            run_id=outcome.run_id,
            status=outcome.status,
            outputs=run_outputs(log, self.positions),
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
        call = RunCall(
            input=input, responses=responses, checkpoint=checkpoint, checkpoints=checkpoints,
            backend=backend, context=context, max_supersteps=max_supersteps,
            interrupt_before=interrupt_before, interrupt_after=interrupt_after, fork=fork,
        )  # fmt: skip
        return RunStream(lambda emit: self._start(call, emit, live=True))

    async def _start(self, call: RunCall, emit: Callable[[Event], None], *, live: bool) -> _Outcome:
        limit, breakpoints = self._limits(call)
        self._busy.acquire()
        try:
            return await self._run(call, emit, limit, breakpoints, live)
        finally:
            self._busy.release()

    def _limits(self, call: RunCall) -> tuple[int, Breakpoints]:
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
        call: RunCall,
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
        prepared = await prepare(self, call, config)
        try:
            return await self._execute(call, emit, limit, breakpoints, live, config, prepared)
        finally:
            # The runs this object no longer keeps waiting in memory (this
            # one, unless it waits; any let go past the limit): what its
            # shared executors keep for them goes too (a sub-workflow's
            # waiting child runs, which nothing could answer any more).
            self._forget_runs(self._waiting.let_go(prepared[0]))

    async def _execute(
        self,
        call: RunCall,
        emit: Callable[[Event], None],
        limit: int,
        breakpoints: Breakpoints,
        live: bool,
        config: CheckpointConfig | None,
        prepared: Prepared,
    ) -> _Outcome:
        run_id, run, parent, stored_hashes, claimed = prepared
        succeeded = cancelled_late = False
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
                    await not_gone_on(config.store, claimed)
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
            ended = False
            try:
                status = await run_supersteps(
                    self._graph, scope, runner, run, limit, recorder, breakpoints
                )
                ended = True
            except BaseException as error:
                if isinstance(error, ConvergenceError):  # the run can go on from where it stopped
                    error.run_id = run_id
                    error.last_checkpoint = recorder.last_id if recorder is not None else None
                end_run(trace, run.superstep, None, error)
                trace = None
                raise
            finally:
                finish = getattr(runner, "finish_run", None)  # distributed backends
                if finish is not None and not ended:
                    await asyncio.shield(finish(scope))
                elif finish is not None:
                    try:
                        await to_the_end(finish(scope))
                    except asyncio.CancelledError:
                        # The run had ended (idle, waiting for answers) when its
                        # caller was cancelled (a stream left at its request):
                        # it is kept as it ended, then the cancellation raised.
                        cancelled_late = True
                end_run(trace, run.superstep, status.value if trace is not None else None, None)
            succeeded = True
        finally:
            if recorder is not None:  # (given back already, unless the run never got going)
                if recorder.holds_lease:
                    await asyncio.shield(recorder.release())
            elif holder is not None and config is not None and parent is not None:
                await asyncio.shield(config.store.release(run_id, holder))
            if claimed is not None:
                recorded = recorder.answered_at if recorder is not None else None
                if succeeded:
                    self._waiting.settled(claimed.run_id)  # (kept below if it waits again)
                elif recorded is not None:
                    # Failed or cancelled once the store recorded the answers:
                    # the run went on from them (it resumes from its last
                    # checkpoint), so the copy waiting for them is superseded.
                    self._waiting.settled(claimed.run_id)
                    self._waiting.answered(call.responses or {}, run_id, recorded)
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
        if cancelled_late:
            raise asyncio.CancelledError
        usage = RunUsage(dict(run.usage))
        return _Outcome(run_id, status, list(run.requests.values()), last, usage)

    def _forget_runs(self, run_ids: Collection[str]) -> None:
        """Runs ``run_ids`` are no longer kept in memory: the shared
        executors drop what they kept for them (see ``Executor._forget_runs``)."""
        if run_ids:
            for executor in self._keeping_runs:
                executor._forget_runs(run_ids)

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
        self._busy.acquire()
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
            self._busy.release()

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
