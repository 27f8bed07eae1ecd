"""Sub-workflows: ``WorkflowExecutor`` runs a child workflow as one executor.

Each message it receives starts a child run, which runs to idle inside the
handler call (so the parent's serial-inbox and barrier rules hold for it like
for any executor). Child events stream live through the parent, tagged with
the workflow-executor path they came through; child outputs become the
executor's messages (or the parent's outputs with ``forward_outputs=True``).

A child run that goes idle with open requests is kept, suspended, inside the
executor (and in every parent checkpoint, through ``snapshot()``). Its
requests surface to the parent as requests of the ``WorkflowExecutor`` with
ids namespaced by its id (``"sub/3f…"``, ``"outer/inner/3f…"``), or — with
``intercept_requests=True`` — as :class:`SubworkflowRequest` messages for a
parent executor to answer with a :class:`SubworkflowResponse`. Each answer
resumes exactly the child run that asked. A parent run's waiting child runs
stay in memory as long as the parent's workflow object keeps that run
waiting (``_forget_runs``), and in its checkpoints for good.
"""

from __future__ import annotations

import typing
import uuid
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Any

from ._core import (
    Contract,
    OutputEvent,
    PendingRequest,
    Placement,
    RequestInfoEvent,
    Response,
    RetryPolicy,
    RunState,
    TypeSpec,
    WorkflowContext,
    a_type,
    id_separators,
    in_schedule_order,
    materialize,
    spec_of,
)
from ._exceptions import (
    RequestError,
    ResponseValueError,
    SubworkflowError,
    WorkflowDefinitionError,
    WorkflowRunError,
)
from ._executor import Executor
from ._handlers import HandlerSpec, union_of
from ._persistence import apply_responses, asked_by, asker
from ._workflow import Workflow

__all__ = ["SubworkflowRequest", "SubworkflowResponse", "WorkflowExecutor"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SubworkflowResponse:
    """The answer to a :class:`SubworkflowRequest`; send it to ``source``."""

    request_id: str
    value: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class SubworkflowRequest:
    """A request opened inside a sub-workflow, offered to a parent executor
    (``WorkflowExecutor(..., intercept_requests=True)``)::

        @sg.handler
        async def review(self, asked: sg.SubworkflowRequest,
                         ctx: sg.WorkflowContext[sg.SubworkflowResponse]) -> None:
            await ctx.send_message(asked.respond(True), target=asked.source)
    """

    request_id: str
    request: Any
    response_type: Any
    source: str  # the id of the WorkflowExecutor to answer

    def respond(self, value: Any) -> SubworkflowResponse:
        """The answer ``value``, checked against ``response_type`` here, so
        that a reply of the wrong type fails the executor that replies
        (``ResponseValueError``), not the ``WorkflowExecutor`` it reaches."""
        if not TypeSpec(self.response_type).matches(value):
            raise ResponseValueError(
                f"the reply to request {self.request_id!r} of {self.source!r} must be "
                f"{a_type(self.response_type)}, not {a_type(type(value))}"
            )
        return SubworkflowResponse(request_id=self.request_id, value=value)


class WorkflowExecutor(Executor):
    """An executor that runs ``workflow`` for each message it receives.

    Its input types are the child's start types; its output types are the
    child's output types (sent on its edges, or yielded as the parent's
    outputs with ``forward_outputs=True``). One child ``Workflow`` object may
    be wrapped by one ``WorkflowExecutor`` per workflow tree.
    """

    def __init__(
        self,
        workflow: Workflow,
        id: str | None = None,
        *,
        forward_outputs: bool = False,
        intercept_requests: bool = False,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        placement: Placement | None = None,
    ) -> None:
        if not isinstance(workflow, Workflow):
            raise WorkflowDefinitionError(
                f"WorkflowExecutor needs a built Workflow, got {type(workflow).__name__}"
            )
        paused = workflow._breakpoints
        if paused.before or paused.after:
            raise WorkflowDefinitionError(
                f"WorkflowExecutor {id or workflow.name!r}: workflow {workflow.name!r} has "
                "breakpoints, which a sub-workflow does not stop at; build it without them and "
                "set interrupt_before/interrupt_after on the parent"
            )
        self.workflow = workflow
        self.forward_outputs = forward_outputs
        self.intercept_requests = intercept_requests
        self._runs: dict[str, RunState] = {}  # suspended child runs, by child run id
        # The parent run each suspended child run was started by (those
        # restored from an older checkpoint than this field: unknown).
        self._parents: dict[str, str] = {}
        self._routes: dict[str, tuple[str, str]] = {}  # our request id -> (child run, request)
        own = id if id is not None else workflow.name
        if isinstance(own, str) and id_separators(own):
            given = "its id" if id is not None else f"its id (the workflow's name, {own!r})"
            raise WorkflowDefinitionError(
                f"WorkflowExecutor {own!r}: {given} starts the ids of the child's requests "
                f"({own}/…), and a request id holds no whitespace, '=' or control characters "
                "(answers are given as ID=VALUE); pass an id= without them"
            )
        super().__init__(own, retry=retry, timeout=timeout, placement=placement)

    # -- what it looks like from the parent -------------------------------------

    def _why_it_sends_nothing(self) -> tuple[str, str]:
        child = self.workflow.name
        if self.forward_outputs:
            return (
                f"with forward_outputs=True, what its child workflow {child!r} yields is "
                "yielded by the parent",
                "pass forward_outputs=False to send it on",
            )
        return (
            f"it sends what its child workflow {child!r} yields, and the child declares no "
            "workflow output",
            "declare one where the child yields, e.g. WorkflowContext[Never, str]",
        )

    def _handler_specs(self) -> tuple[HandlerSpec, ...]:  # type: ignore[override]
        child = self.workflow
        label = f"sub-workflow {child.name!r}"
        outputs = _child_outputs(child)
        sent = typing.Never if self.forward_outputs else outputs
        if self.intercept_requests:
            sent = union_of([sent, SubworkflowRequest])
        contract = Contract(
            label,
            spec_of(sent),
            spec_of(outputs if self.forward_outputs else typing.Never),
        )
        specs = [
            HandlerSpec(
                name="run_child",
                func=WorkflowExecutor._start_child,
                input=TypeSpec(union_of(child.start.input_types)),
                contract=contract,
                is_async=True,
                takes_ctx=True,
                order=0,
            )
        ]
        if self.intercept_requests:
            specs.append(
                HandlerSpec(
                    name="answer",
                    func=WorkflowExecutor._answer,
                    input=TypeSpec(SubworkflowResponse),
                    contract=contract,
                    is_async=True,
                    takes_ctx=True,
                    order=1,
                )
            )
        return tuple(specs)

    def _response_handler_specs(self) -> tuple[Any, ...]:  # type: ignore[override]
        return ()

    @property
    def declared_types(self) -> list[Any]:
        found = super().declared_types
        for executor in self.workflow.executors.values():
            found += executor.declared_types
        return found

    @property
    def nested_signature(self) -> str:
        """The child's graph signature: part of the parent's."""
        return self.workflow.signature

    @property
    def handles_responses(self) -> bool:
        return True

    def responds(self, request: Any, response_type: Any) -> bool:
        return True  # it opens requests only on behalf of its child runs

    # -- running --------------------------------------------------------------

    async def _start_child(self, message: Any, ctx: WorkflowContext[Any, Any]) -> None:
        shared = self.workflow.shared_snapshots
        waiting = [r for r in self._runs if self._parents.get(r) == ctx.run_id]
        if waiting and shared:
            # Two child runs of this run at once through one instance: their
            # state would mix (an agent's conversations, one overwriting the
            # other's). (Child runs restored from a checkpoint are not known
            # to be this run's: only those it started here are counted.)
            raise WorkflowRunError(
                f"WorkflowExecutor {ctx.executor_id!r}: a new child run would start while "
                f"{len(waiting)} of this run wait(s) for answers, and the child's executor "
                f"{shared[0]!r} is one instance keeping state (snapshot()) for every child "
                f"run; register it (builder.register({shared[0]!r}, factory)) so that each "
                "child run has its own",
                executor_id=ctx.executor_id,
                superstep=ctx.superstep,
            )
        run_id = uuid.uuid4().hex
        run = RunState(inboxes={self.workflow.start.id: [("", message)]})
        await self._drive(run_id, run, ctx)

    async def _answer(self, response: SubworkflowResponse, ctx: WorkflowContext[Any, Any]) -> None:
        await self._resume(response.request_id, response.value, ctx)

    async def _respond(self, response: Response, ctx: WorkflowContext[Any, Any]) -> None:
        await self._resume(response.request.request_id, response.value, ctx)

    def _child_request(self, request: PendingRequest) -> tuple[RunState, PendingRequest] | None:
        """The child run and its own request behind ``request`` (one this
        executor raised for it), or ``None`` when it is not open here."""
        route = self._routes.get(request.request_id)
        run = self._runs.get(route[0]) if route is not None else None
        asked = run.requests.get(route[1]) if run is not None and route is not None else None
        return None if run is None or asked is None else (run, asked)

    def asker_path(self, request: PendingRequest) -> str:
        """The path, from this executor down, of the child executor that
        opened ``request``."""
        found = self._child_request(request)
        if found is None:
            return self.id
        return f"{self.id}/{asked_by(*found, self.workflow.executors)}"

    def _child_asker(self, request: PendingRequest) -> tuple[Executor, PendingRequest] | None:
        """The child's executor that opened the request behind ``request``,
        and that request; ``None`` when it is not open here (the answer is
        refused when it arrives) or its asker is not known."""
        found = self._child_request(request)
        if found is None:
            return None
        run, asked = found
        executor = asker(run, asked, self.workflow.executors)
        return None if executor is None else (executor, asked)

    def _takes_response(self, request: PendingRequest, response: Any) -> bool:
        """Whether the child's executor that asked has a handler for it."""
        found = self._child_asker(request)
        return found is None or found[0]._takes_response(found[1], response)

    def check_response(self, request: PendingRequest, response: Any) -> None:
        """What the child's executor that asked says of the answer."""
        found = self._child_asker(request)
        if found is not None:
            found[0].check_response(found[1], response)

    async def _resume(self, request_id: str, value: Any, ctx: WorkflowContext[Any, Any]) -> None:
        route = self._routes.get(request_id)
        if route is None:
            raise RequestError(
                f"executor {self.id!r} has no open sub-workflow request {request_id!r}",
                executor_id=self.id,
            )
        run_id, child_request = route
        # A copy, kept by ``_drive`` only once the child run went on: a call
        # cancelled (or failed) meanwhile leaves it waiting as it was, the
        # request still routed here, and the child's shared executors as
        # they were (as the parent's own are: see ``WaitingRuns``), so the
        # parent's run — kept waiting, without a checkpoint to restore this
        # executor from — is answered again as it was the first time.
        run = self._runs[run_id].copy()
        # Validates its type; raises before consuming. (What the child's
        # executor says of it was asked when the answer came: check_response.)
        apply_responses(run, {child_request: value})
        codec = self.workflow.codec
        shared = self.workflow.shared_snapshots
        before = codec.keep_shared(shared, run_id, run) if shared else None
        try:
            await self._drive(run_id, run, ctx)
        except BaseException:
            if before:
                codec.restore_kept(before)
            raise
        self._routes.pop(request_id, None)

    async def _drive(self, run_id: str, run: RunState, ctx: WorkflowContext[Any, Any]) -> None:
        outputs: list[OutputEvent] = []
        forward = ctx._emit
        # The id this child run goes by: ours, or — run as a map's worker,
        # whatever id its factory gave it — the map's, which its own events
        # carry; so the map's id is the first step of every path below it.
        own = ctx.executor_id
        prefix = (own,)
        # Run as a map's worker, this child run is one of its items: each
        # event names it beside our id in its path (its own ``item`` is that
        # of the map inside the child that emitted it, if any).
        our_item = ctx._item

        def emit(item: Any) -> None:
            event = materialize(item)  # it travels with its path: a real event
            if type(event) is RequestInfoEvent:
                # Announced once, by the parent's barrier, with the id to answer.
                return
            path = event.workflow_path
            if type(event) is OutputEvent and not path:
                outputs.append(event)
            items = _items_below(our_item, event.workflow_items, len(path))
            if items:
                forward(replace(event, workflow_path=prefix + path, workflow_items=items))
            else:
                forward(replace(event, workflow_path=prefix + path))

        run.usage.clear()  # what this drive's model calls use, counted in the parent below
        try:
            await self.workflow._drive(run, run_id, emit, ctx.context, ctx._scope.live)
        except BaseException as error:
            # A new child run was never kept, nor is what it left waiting in
            # its own sub-workflows; a resumed one waits as it was.
            if run_id not in self._runs:
                self.workflow._forget_runs((run_id,))
            if isinstance(error, WorkflowRunError):
                raise _wrap(own, error, ctx.superstep, ctx._item) from error
            raise
        finally:
            for path, usage in run.usage.items():
                ctx._add_usage(f"{own}/{path}", usage)
        for value in in_schedule_order(outputs, self.workflow.positions):
            if self.forward_outputs:
                ctx.yield_output(value)
            else:
                ctx.send_message(value)
        routed = {child for rid, child in self._routes.values() if rid == run_id}
        for child_id, request in run.requests.items():
            if child_id in routed:
                continue
            ours = f"{own}/{child_id}"
            self._routes[ours] = (run_id, child_id)
            if self.intercept_requests and ctx._item is None:
                ctx.send_message(
                    SubworkflowRequest(
                        request_id=ours,
                        request=request.request,
                        response_type=request.response_type,
                        source=own,
                    )
                )
            else:  # (a map's worker: refused there, as any worker's request is)
                ctx._open_request(request.request, request.response_type, ours)
        if run.requests:
            self._runs[run_id] = run
            self._parents.setdefault(run_id, ctx.run_id)
        else:
            self._runs.pop(run_id, None)
            self._parents.pop(run_id, None)
            # (what it left waiting in its own sub-workflows: intercepted
            # requests it never answered, which nothing can answer now)
            self.workflow._forget_runs((run_id,))

    def _forget_runs(self, run_ids: Collection[str]) -> None:
        # The parent runs ``run_ids`` can no longer be answered in memory:
        # their waiting child runs go (with a store, a parent run that goes
        # on from its checkpoint gets its own back from it), and so do the
        # child runs those left waiting further down.
        gone = {rid for rid, parent in self._parents.items() if parent in run_ids}
        if not gone:
            return
        for rid in gone:
            self._runs.pop(rid, None)
            del self._parents[rid]
        self._routes = {ours: route for ours, route in self._routes.items() if route[0] not in gone}
        self.workflow._forget_runs(gone)

    # -- checkpoints: suspended child runs nest in the parent's ------------------

    def snapshot(self) -> Any:
        return self._snapshot_for(None)

    def _snapshot_for(self, runs: tuple[str, ...] | None) -> Any:
        # A shared instance holds the waiting child runs of every parent run
        # it served; a checkpoint of one run (``runs``: it and the runs it
        # was forked from) stores only its own (and those of unknown parent).
        codec = self.workflow.codec
        kept = [
            rid
            for rid in self._runs
            if runs is None or self._parents.get(rid) is None or self._parents[rid] in runs
        ]
        routes = {ours: list(route) for ours, route in self._routes.items() if route[0] in kept}
        return {
            "runs": {rid: codec.inline(self._runs[rid], rid) for rid in kept},
            "routes": routes,
            "parents": {rid: self._parents[rid] for rid in kept if rid in self._parents},
        }

    def _withdraw(self, snapshot: Any, request_id: str) -> None:
        # The child's own request goes too (down through nested
        # sub-workflows), and a child run left with none is dropped: no
        # answer can wake it, and it would be carried in every checkpoint
        # (and, its executors keeping state, refuse the next child run).
        route = snapshot["routes"].pop(request_id, None)
        data = snapshot["runs"].get(route[0]) if route is not None else None
        if route is None or data is None:
            return
        run_id, child_request = route
        records = data.get("requests", [])
        record = next((r for r in records if r["id"] == child_request), None)
        if record is not None:
            asker = self.workflow.executors.get(record["executor"])
            inner = data.get("snapshots", {}).get(record["executor"])
            if asker is not None and inner is not None:
                asker._withdraw(inner, child_request)
            records.remove(record)
        if not records:
            del snapshot["runs"][run_id]
            snapshot.get("parents", {}).pop(run_id, None)
            for ours in [o for o, r in snapshot["routes"].items() if r[0] == run_id]:
                del snapshot["routes"][ours]

    def restore(self, snapshot: Any) -> None:
        codec = self.workflow.codec
        self._runs = {
            rid: codec.from_inline(data, f"sub-workflow {self.id!r} run {rid}")
            for rid, data in snapshot["runs"].items()
        }
        self._routes = {ours: (route[0], route[1]) for ours, route in snapshot["routes"].items()}
        # The parent run each was started by (a fork's own are its original's).
        self._parents = dict(snapshot.get("parents", {}))

    def __repr__(self) -> str:
        return f"<WorkflowExecutor id={self.id!r} workflow={self.workflow.name!r}>"


def _child_outputs(child: Workflow) -> Any:
    ids = child.output_executors
    executors = [e for eid, e in child.executors.items() if ids is None or eid in ids]
    return union_of([e.workflow_output_types for e in executors])


def _wrap(
    executor_id: str, error: WorkflowRunError, superstep: int, item: int | None
) -> SubworkflowError:
    """The child's failure as ours; ``item``: the map item this child run
    was (its index is spelled in the path, as in our events' paths)."""
    nested = error.__cause__
    if (
        not isinstance(error, SubworkflowError)
        and isinstance(nested, SubworkflowError)
        and nested.executor_id == error.executor_id
    ):
        error = nested  # a grandchild failed: keep its full path
    if isinstance(error, SubworkflowError):
        inner, detail, inner_items = error.path, error.detail, error.items
    else:
        inner = (error.executor_id,) if error.executor_id else ()
        detail, inner_items = str(error), ()
    items = _items_below(item, inner_items, len(inner))
    return SubworkflowError((executor_id, *inner), detail, superstep=superstep, items=items)


def _items_below(
    item: int | None, inner: tuple[int | None, ...], depth: int
) -> tuple[int | None, ...]:
    """The items of a path that goes through us (``item``: the map item we
    ran as, if any) and then ``depth`` workflow executors whose items are
    ``inner`` (empty: none ran as one): empty when none did."""
    if item is None and not inner:
        return ()
    return (item, *(inner or (None,) * depth))


def check_tree(executors: dict[str, Executor]) -> None:
    """One child ``Workflow`` object per ``WorkflowExecutor``, and no executor
    instance in two places of one workflow tree — but stateless ones
    (``@executor`` functions), which may serve anywhere at once."""
    seen_workflows: dict[int, str] = {}
    seen_executors: dict[int, str] = {}

    def walk(members: dict[str, Executor], prefix: str) -> None:
        for eid, executor in members.items():
            if executor.stateless:
                continue
            where = f"{prefix}{eid}"
            earlier = seen_executors.get(id(executor))
            if earlier is not None:
                raise WorkflowDefinitionError(
                    f"executor instance {executor!r} appears twice in one workflow tree: at "
                    f"{earlier!r} and at {where!r}; give each place its own instance"
                )
            seen_executors[id(executor)] = where
            if isinstance(executor, WorkflowExecutor):
                child = executor.workflow
                other = seen_workflows.get(id(child))
                if other is not None:
                    raise WorkflowDefinitionError(
                        f"workflow {child.name!r} is wrapped by both {other!r} and {where!r}; "
                        "a Workflow runs one run at a time, so build one per WorkflowExecutor"
                    )
                seen_workflows[id(child)] = where
                walk(dict(child.executors), f"{where}/")

    walk(executors, "")
