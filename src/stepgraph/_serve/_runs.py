"""The runs a server goes on with, and what it keeps of them.

:class:`RunService` holds the workflows named on the command line, starts
and continues their runs as tasks of the server's event loop (a browser
that disconnects stops nothing), and keeps each run's events as numbered
JSON records — so a stream that reconnects with ``Last-Event-ID`` gets
exactly the events it missed, also after the run ended. Everything that
lasts is in the checkpoint store the CLI uses: runs, their checkpoints,
requests and answers; the events are kept in memory for the runs this
server process ran (the most recent ``keep_runs`` of them, at most
``keep_bytes`` of events in all).

Validation is the CLI's (:mod:`stepgraph._cli._input`): an input or an
answer the command line refuses, the server refuses the same way.

(Past 800 lines: describing, starting, continuing and stopping runs all
read and change the run logs and claims this one class keeps; the next
growth should split it along those lines.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .._checkpoint import (
    RUNNING_STATUSES,
    BaseStore,
    CheckpointInfo,
    CheckpointStore,
    RunInfo,
    new_holder,
)
from .._cli._input import coerce, coerce_input
from .._cli._load import CliError
from .._cli._render import jsonable
from .._core import (
    Event,
    PendingRequest,
    RequestInfoEvent,
    RunStartedEvent,
    RunStatus,
    type_name,
)
from .._exceptions import (
    CheckpointNotFoundError,
    RequestError,
    StepgraphError,
)
from .._persistence import CheckpointConfig
from .._viz import to_graph
from .._workflow import Workflow
from ._logs import RunLog
from ._refusals import (
    Problem,
    answered_already,
    failure_of,
    quoted,
    refusal,
    refuse_nothing_to_run,
)
from ._schema import schema_of

__all__ = [
    "CHECKPOINTS_MAX",
    "CHECKPOINTS_SHOWN",
    "INTERRUPTED",
    "RunService",
    "ServedWorkflow",
    "unroutable",
]

log = logging.getLogger("stepgraph.serve")

# The error a run stopped by the server's shutdown is recorded with: such
# runs are listed as interrupted, and resume with one call.
INTERRUPTED = "interrupted: the server stopped while the run was going on"
# How a run stopped by the server may stand in its store (``cancelled``: it
# recorded that itself; going on: its process ended before recording it).
_STOPPED = frozenset(
    s.value
    for s in (RunStatus.CANCELLED, RunStatus.IN_PROGRESS, RunStatus.IN_PROGRESS_PENDING_REQUESTS)
)
_STATUSES = frozenset(status.value for status in RunStatus)
_ENDINGS = frozenset({RunStatus.FAILED.value, RunStatus.CANCELLED.value})
# How many of a run's checkpoints its details hold (the newest) unless asked
# for more, and the most that can be asked for.
CHECKPOINTS_SHOWN = 100
CHECKPOINTS_MAX = 10_000


def unroutable(name: str) -> str | None:
    """Why a workflow of this name could not be started through the API
    (``POST /api/workflows/{name}/runs``), or ``None``: a name is one
    segment of a URL path, which ``/`` would split and which clients
    resolve away when it is ``.`` or ``..`` (even percent-encoded)."""
    if name in ("", ".", ".."):
        return f"a workflow named {name!r} cannot be named in a URL"
    if "/" in name:
        return f"workflow {name!r} holds '/', which would split its URL"
    return None


@dataclass(slots=True)
class ServedWorkflow:
    """A workflow named on the command line; ``factory`` (when the target
    was a function) builds a fresh one for each run of a workflow whose
    executor instances cannot serve two runs at once."""

    workflow: Workflow
    factory: Callable[[], Workflow] | None = None
    description: str = ""

    @property
    def name(self) -> str:
        return self.workflow.name

    def for_run(self) -> Workflow:
        if self.workflow.concurrent or self.factory is None:
            return self.workflow
        fresh = self.factory()
        if not isinstance(fresh, Workflow) or fresh.signature != self.workflow.signature:
            raise Problem(500, f"the factory of workflow {self.name!r} built another workflow")
        return fresh


class RunService:
    """Starts, continues, cancels and describes runs (see the module doc)."""

    def __init__(
        self,
        workflows: list[ServedWorkflow],
        store: CheckpointStore,
        *,
        durability: str = "async",
        keep_runs: int = 1000,
        keep_bytes: int = 256 << 20,
    ) -> None:
        names = [w.name for w in workflows]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"two workflows are named {twice[0]!r}; names must differ")
        for name in names:
            if (reason := unroutable(name)) is not None:
                raise ValueError(f"{reason}; serve it under another name")
        self.workflows = {w.name: w for w in workflows}
        self.store = store
        self.config = CheckpointConfig(store, durability)  # type: ignore[arg-type]
        self.keep_runs, self.keep_bytes = keep_runs, keep_bytes
        # What the store gave for a checkpoint: the outputs along its lineage
        # (by checkpoint and the run's checkpoint count, which a prune or a
        # delete changes: the lineage can then be shorter), and the requests
        # open at it (a checkpoint's own record never changes).
        self._outputs: OrderedDict[tuple[str, int, bool], list[Any]] = OrderedDict()
        self._requests: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        # A run's checkpoints as the store lists them, by its latest checkpoint
        # and count (a new save or a prune changes one): a run polled while it
        # waits is not listed again each time.
        self._listed: OrderedDict[tuple[str, int, int], list[CheckpointInfo]] = OrderedDict()
        # The outputs read last for each run going on here, by the checkpoint
        # they lead up to: the next read starts there.
        self._went_on: OrderedDict[str, tuple[str, list[Any]]] = OrderedDict()
        self.logs: OrderedDict[str, RunLog] = OrderedDict()
        # Runs a call to this server is continuing, until the continuation
        # went past its entry (then its live log says so): the requests it answers.
        self._claims: dict[str, frozenset[str]] = {}
        self.stopping = asyncio.Event()  # new runs are refused
        self.streams_over = asyncio.Event()  # every event stream ends
        self._tasks: set[asyncio.Task[None]] = set()  # every run going on here
        self._closing: asyncio.Task[list[str]] | None = None

    # -- describing ------------------------------------------------------------

    def describe_workflows(self) -> list[dict[str, Any]]:
        return [
            {
                "name": served.name,
                "description": served.description,
                "input_schema": schema_of(served.workflow.start.input_types),
                "graph": to_graph(served.workflow),
            }
            for served in self.workflows.values()
        ]

    async def list_runs(
        self, workflow: str | None, status: str | None, cursor: str | None, limit: int
    ) -> dict[str, Any]:
        if status is not None and status not in _STATUSES:
            raise Problem(422, f"unknown status {quoted(status)}; one of {sorted(_STATUSES)}")
        try:
            infos = await self.store.runs(
                workflow=workflow, status=status, limit=limit + 1, before=cursor
            )
        except CheckpointNotFoundError:
            raise Problem(
                422, f"unknown cursor {quoted(str(cursor))}: pass the 'next' of a page"
            ) from None
        more = len(infos) > limit
        infos = infos[:limit]
        # Runs of this server the store holds nothing of (an outage failed
        # them before their first save): newest, so on the first page.
        unstored = []
        for run_log in reversed(self.logs.values()) if cursor is None else ():
            if not run_log.unstored or run_log.live:
                continue
            if await self.store.run_info(run_log.run_id) is not None:
                run_log.unstored = False  # (the store was down when it ended: it has some)
            elif (workflow is None or run_log.workflow == workflow) and (
                status is None or run_log.status == status
            ):
                unstored.append(self._unstored_summary(run_log))
        return {
            "runs": [*unstored, *(self._run_summary(info) for info in infos)],
            "next": infos[-1].run_id if more else None,
        }

    def _unstored_summary(self, run_log: RunLog) -> dict[str, Any]:
        return {
            "run_id": run_log.run_id,
            "workflow": run_log.workflow,
            "status": run_log.status,
            "error": run_log.error,
            "started_at": run_log.base / 1e6,
            "updated_at": run_log.ended_at,
            "supersteps": 0,
            "pending_requests": len(run_log.requests) if run_log.live else 0,
            "checkpoints": 0,
            "live": run_log.live,
            "interrupted": False,
        }

    def _run_summary(self, info: Any) -> dict[str, Any]:
        run_log = self.logs.get(info.run_id)
        live = run_log is not None and run_log.live
        status, error = info.status, info.error
        pending = info.pending_requests
        if run_log is not None and run_log.live:
            status, error, pending = run_log.status, None, len(run_log.requests)
        elif (
            run_log is not None
            and run_log.status in _ENDINGS
            and run_log.ended_at is not None
            and info.status.startswith(RunStatus.IN_PROGRESS.value)
            and info.updated_at <= run_log.ended_at
        ):  # it ended here and the store could not record how (nor has anyone since)
            status, error = run_log.status, run_log.error
        return {
            "run_id": info.run_id,
            "workflow": info.workflow,
            "status": status,
            "error": error,
            "started_at": info.started_at,
            "updated_at": info.updated_at,
            "supersteps": info.superstep,
            "pending_requests": pending,
            "checkpoints": info.checkpoints,
            "live": live,
            "interrupted": not live and info.status == "cancelled" and info.error == INTERRUPTED,
        }

    async def describe_run(
        self, run_id: str, checkpoints: int = CHECKPOINTS_SHOWN
    ) -> dict[str, Any]:
        """The run's details, with its newest ``checkpoints`` checkpoints
        (oldest first) and ``checkpoints_total``, how many it has."""
        info = await self.store.run_info(run_id)
        run_log = self.logs.get(run_id)
        if info is None:
            if run_log is None or not (run_log.live or run_log.unstored):
                self._forget_deleted(run_id)
                raise Problem(404, f"no run {quoted(run_id)} in the store")  # (or deleted since)
            summary = self._unstored_summary(run_log)
            return {  # started, its first checkpoint not written yet (or never)
                **summary,
                "failure": failure_of(summary["status"], summary["error"]),
                "checkpoints": [],
                "checkpoints_total": 0,
                "outputs": jsonable(run_log.outputs),
                "pending_requests": self._live_requests(run_log),
            }
        out = self._run_summary(info)
        if not out["live"] and info.status in RUNNING_STATUSES and await self._stranded(run_id):
            out["interrupted"] = True  # (its process ended without recording how: killed)
        out["events_kept"] = run_log is not None
        out["failure"] = failure_of(out["status"], out["error"])
        # Taken with the status, before any await: the run may end meanwhile.
        live_requests = self._live_requests(run_log) if out["live"] and run_log else []
        # Only the newest are read (the response and its cost stay small
        # however long the run), and read again only after a save or a prune.
        key = (info.last_checkpoint, info.checkpoints, checkpoints)
        newest = self._listed.get(key)
        if newest is None:
            if isinstance(self.store, BaseStore):
                listed = await self.store.list(run_id, last=checkpoints)
            else:  # (a store of the user's own may list only whole runs)
                listed = (await self.store.list(run_id))[-checkpoints:]
            newest = _remember(self._listed, key, listed, limit=8)
        latest = next((cp for cp in reversed(newest) if cp.id == info.last_checkpoint), None)
        out["checkpoints"] = [
            {
                "checkpoint_id": cp.id,
                "superstep": cp.superstep,
                "created_at": cp.created_at,
                "status": cp.status,
                "parent_id": cp.parent_id,
            }
            for cp in newest
        ]
        out["checkpoints_total"] = info.checkpoints
        out["outputs"] = await self._outputs_now(
            info, None if latest is None else latest.created_at, run_log
        )
        out["pending_requests"] = []
        served = self.workflows.get(info.workflow)
        if out["live"]:
            out["pending_requests"] = live_requests
        elif served is not None and info.pending_requests:
            out["pending_requests"] = await self._requests_at(served, info.last_checkpoint)
        return out

    async def _stranded(self, run_id: str) -> bool:
        """Whether a run the store lists as going on is held by no process
        (its process was killed, or its machine went down): nothing goes on
        with it and nothing would hear a cancel, but it resumes. Asked as the
        store's ``request_cancel`` asks: who holds its lease (a store without
        ``lease_holder``: by taking the lease and giving it back at once).
        Never while a call of this server continues it."""
        if run_id in self._claims:
            return False
        holder_of = getattr(self.store, "lease_holder", None)
        if holder_of is not None:
            # (read, not taken: a probe that took the lease for a moment
            # refused a resume -- here or in another process -- that came
            # then, "being continued elsewhere", and the page asks often)
            return await holder_of(run_id) is None
        probe = new_holder()
        if await self.store.lease(run_id, probe) is not None:
            return False  # (held: going on somewhere)
        await self.store.release(run_id, probe)
        return True

    @staticmethod
    def _live_requests(run_log: RunLog) -> list[dict[str, Any]]:
        """The requests open in a run going on here, as its events announced
        them: its status is the run's own, which the store (saving in the
        background) may not have yet, so its requests are too."""
        if not run_log.live:
            return []
        return [_request_json(request) for request in run_log.requests.values()]

    async def _outputs_now(
        self, info: RunInfo, latest_at: float | None, run_log: RunLog | None
    ) -> list[Any]:
        """The run's outputs along the branch of its latest checkpoint; for
        a run going on here, with those it yielded since (not stored yet)."""
        reader = getattr(self.store, "outputs", None)
        if reader is None:  # (a store of the user's own: what this server saw)
            return list(run_log.outputs) if run_log is not None else []
        live = run_log is not None and run_log.live
        going = live or info.status in RUNNING_STATUSES  # (here or in another process)
        stored = await self._outputs_of(reader, info, info.last_checkpoint, going)
        if run_log is None or not live:
            return stored
        if latest_at is not None and latest_at < run_log.since:
            # Nothing of this continuation is stored yet (a replay's latest
            # checkpoint is still the branch it left): it goes on from its origin.
            before = run_log.origin
            base = await self._outputs_of(reader, info, before, False) if before else []
            return base + [data for _, data in run_log.fresh]
        return stored + [
            data for step, data in run_log.fresh if step is None or step > info.superstep
        ]

    async def _outputs_of(
        self, reader: Callable[..., Awaitable[list[Any]]], info: RunInfo, at: str, going: bool
    ) -> list[Any]:
        """The outputs along the lineage of checkpoint ``at`` of the run, as
        the store reads them; remembered while the run holds as many
        checkpoints. For a run going on, only what it yielded since the last
        look is read (our stores: ``after=``) — a long run's details cost
        what its newest checkpoints hold, not all of them. (Outputs a prune
        removed meanwhile show until the run ends.)"""
        key = (at, info.checkpoints, going)
        known = self._outputs.get(key)
        if known is not None:
            return known
        before = self._went_on.get(info.run_id) if going else None
        known = None
        if before is not None and isinstance(self.store, BaseStore):
            with contextlib.suppress(CheckpointNotFoundError):  # (not on the lineage)
                known = before[1] + await self.store.outputs(at, after=before[0])
        if known is None:
            known = list(await reader(at))
        if going:
            _remember(self._went_on, info.run_id, (at, known), limit=64)
        _remember(self._outputs, key, known)
        return known

    async def _requests_at(
        self, served: ServedWorkflow, checkpoint_id: str
    ) -> list[dict[str, Any]]:
        known = self._requests.get(checkpoint_id)
        if known is None:
            checkpoint = await self.store.load(checkpoint_id)
            requests = served.workflow.codec.requests_of(checkpoint)
            known = _remember(self._requests, checkpoint_id, [_request_json(r) for r in requests])
        return known

    def _forget_deleted(self, run_id: str) -> None:
        """Drop the events of a run that ended here and that the store no
        longer holds (deleted since): it is not shown any more."""
        run_log = self.logs.get(run_id)
        if run_log is not None and not (run_log.live or run_log.unstored):
            del self.logs[run_id]

    # -- running ------------------------------------------------------------------

    async def start(self, name: str, raw: Any) -> str:
        served = self._served(name)
        try:
            value = coerce_input(served.workflow, raw)
        except CliError as exc:
            raise Problem(422, str(exc)) from None
        workflow = served.for_run()
        run_id = await self._go(workflow, lambda: workflow.stream(value, checkpoints=self.config))
        return await self._stored_soon(run_id)

    async def _stored_soon(self, run_id: str) -> str:
        """``run_id``, once the store holds the run just started here (its
        first checkpoint is written in the background, some milliseconds
        later): another server on the store -- where a load balancer may send
        the client's next call -- finds it then. Not waited for if the run
        ended meanwhile, the store fails, or after a second (a save waiting
        for its database): the run goes on whatever the answer."""
        deadline = time.monotonic() + 1.0
        while (run_log := self.logs.get(run_id)) is not None and run_log.live:
            try:
                if await self.store.run_info(run_id) is not None:
                    break
            except StepgraphError:
                break  # (the store is down: the run is shown from here)
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.005)
        return run_id

    async def respond(self, run_id: str, answers: Mapping[str, Any]) -> str:
        if not answers:
            raise Problem(422, 'no answers given: send {"responses": {request_id: value}}')
        # (held before the store is asked: a run just started has no record yet)
        async with self._continuing(run_id, answers):
            return await self._respond(run_id, answers)

    async def _respond(self, run_id: str, answers: Mapping[str, Any]) -> str:
        info, served = await self._owner(run_id)
        checkpoint = await self.store.load(info.last_checkpoint)
        open_now = {r.request_id: r for r in served.workflow.codec.requests_of(checkpoint)}
        responses: dict[str, Any] = {}
        for request_id, raw in answers.items():
            request = open_now.get(request_id)
            if request is None:
                answered = (await self.store.answers(run_id, [request_id])).get(request_id)
                if answered is not None:
                    raise answered_already(run_id, request_id, f"at checkpoint {answered}")
                raise Problem(
                    404,
                    f"run {run_id} has no open request {quoted(request_id)}; open: "
                    f"{sorted(open_now) or 'none'}",
                )
            try:
                responses[request_id] = coerce(
                    raw, request.response_type, f"the answer to {request_id}"
                )
            except CliError as exc:
                raise Problem(422, str(exc)) from None
        workflow = served.for_run()
        return await self._go(
            workflow,
            lambda: workflow.stream(
                responses=responses, checkpoint=checkpoint.id, checkpoints=self.config
            ),
            origin=checkpoint.id,
            answering=frozenset(responses),
            renumber=self._went_on_elsewhere(info),
        )

    async def resume(self, run_id: str, checkpoint_id: str | None, *, fork: bool) -> str:
        if fork:  # (a new run: this one may go on meanwhile)
            return await self._stored_soon(await self._resume(run_id, checkpoint_id, fork=True))
        async with self._continuing(run_id):
            return await self._resume(run_id, checkpoint_id, fork=False)

    async def _resume(self, run_id: str, checkpoint_id: str | None, *, fork: bool) -> str:
        info, served = await self._owner(run_id)
        checkpoint_id = checkpoint_id or info.last_checkpoint
        try:
            checkpoint = await self.store.load(checkpoint_id)
        except CheckpointNotFoundError:
            raise Problem(404, f"no checkpoint {quoted(checkpoint_id)} in the store") from None
        if checkpoint.run_id != run_id:  # (it exists: the request is wrong, not the path)
            raise Problem(422, f"checkpoint {checkpoint_id!r} is not one of run {run_id}'s")
        if not fork:
            refuse_nothing_to_run(checkpoint, latest=checkpoint_id == info.last_checkpoint)
        workflow = served.for_run()
        return await self._go(
            workflow,
            lambda: workflow.stream(checkpoint=checkpoint_id, checkpoints=self.config, fork=fork),
            origin=None if fork else checkpoint_id,
            renumber=not fork and self._went_on_elsewhere(info),
        )

    def _went_on_elsewhere(self, info: RunInfo) -> bool:
        """Whether the run changed in the store after it last stopped here:
        another server (or process) may have gone on with it, numbering its
        events from its own opening of their log — above this one's."""
        run_log = self.logs.get(info.run_id)
        return (
            run_log is not None
            and run_log.ended_at is not None
            and info.updated_at > run_log.ended_at
        )

    async def cancel(self, run_id: str) -> None:
        run_log = self.logs.get(run_id)
        if run_log is not None and run_log.task is not None and run_log.live:
            run_log.task.cancel()
            await asyncio.wait({run_log.task})
            return
        if await self.store.run_info(run_id) is None:
            raise Problem(404, f"no run {quoted(run_id)} in the store")
        if not await self.store.request_cancel(run_id):
            info = await self.store.run_info(run_id)
            if info is None:
                raise Problem(404, f"no run {quoted(run_id)} in the store")  # (deleted meanwhile)
            if info.status in RUNNING_STATUSES:
                raise Problem(
                    409,
                    f"run {run_id} is not running anywhere: it is listed as {info.status}, but "
                    "no process holds it (it stopped without recording how, its process killed, "
                    f"say); nothing to cancel: resume it (POST /api/runs/{run_id}/resume)",
                )
            raise Problem(
                409, f"run {run_id} is not running (status: {info.status}); nothing to cancel"
            )

    async def _owner(self, run_id: str) -> tuple[Any, ServedWorkflow]:
        info = await self.store.run_info(run_id)
        if info is None:
            raise Problem(404, f"no run {quoted(run_id)} in the store")
        served = self.workflows.get(info.workflow)
        if served is None:
            raise Problem(
                409,
                f"run {run_id} is of workflow {info.workflow!r}, which this server does not "
                f"serve (it serves {sorted(self.workflows)})",
            )
        return info, served

    def _served(self, name: str) -> ServedWorkflow:
        served = self.workflows.get(name)
        if served is None:
            served_names = sorted(self.workflows)
            raise Problem(404, f"no workflow {quoted(name)} here (served: {served_names})")
        return served

    @contextlib.asynccontextmanager
    async def _continuing(self, run_id: str, answering: Iterable[str] = ()) -> AsyncIterator[None]:
        """Hold the run for one call that continues it (answers, resume).
        Another such call, meanwhile or while that continuation goes on
        here, is refused: a request answered twice within this server is
        answered already (not a run "continued elsewhere" — by this very
        process), anything else waits for the run to stop."""
        run_log = self.logs.get(run_id)
        busy = self._claims.get(run_id)
        if busy is None and run_log is not None and run_log.live:
            busy = run_log.answering
        if busy is not None:  # (checked and claimed with no await between: one call wins)
            await self._refuse_busy(run_id, sorted(busy.intersection(answering)))
        self._claims[run_id] = frozenset(answering)
        try:
            yield
        finally:
            del self._claims[run_id]

    async def _refuse_busy(self, run_id: str, answered_here: list[str]) -> None:
        if answered_here:
            request_id = answered_here[0]
            at = (await self.store.answers(run_id, [request_id])).get(request_id)
            where = (
                f"at checkpoint {at}"
                if at
                else "by another call to this server just now; its checkpoint is on the way"
            )
            raise answered_already(run_id, request_id, where)
        raise Problem(409, f"run {run_id} is still running; answer or resume it once it stops")

    async def _go(
        self,
        workflow: Workflow,
        stream: Callable[[], Any],
        *,
        origin: str | None = None,
        answering: frozenset[str] = frozenset(),
        renumber: bool = False,
    ) -> str:
        """Start ``stream()`` as a task and return its run id once the run
        went past its entry (answers recorded, the run taken): a run that
        is refused there is the caller's error, and leaves no events.
        ``origin``: the checkpoint it goes on from; ``answering``: the
        requests it answers; ``renumber``: its events are numbered above
        any another server gave (see ``RunLog.renumber``)."""
        if self.stopping.is_set():
            raise Problem(503, "the server is stopping")
        started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        # The run goes on if the client that asked for it goes away.
        # (its time: before any checkpoint of it is made)
        continuation = _Continuation(
            origin=origin, answering=answering, since=time.time(), renumber=renumber
        )
        task = asyncio.get_running_loop().create_task(
            self._drive(workflow, stream, started, continuation)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            return await asyncio.shield(started)
        except asyncio.CancelledError:
            if not started.cancelled():
                raise  # (this call itself was cancelled)
            # The server began stopping while the run was at its entry.
            raise Problem(
                503,
                "the server is stopping: it stopped the run before it went on (answers it "
                "brought may be recorded: look at the run); ask again, of another server "
                "or of this one once it is back",
            ) from None

    async def _drive(
        self,
        workflow: Workflow,
        stream: Callable[[], Any],
        started: asyncio.Future[str],
        continuation: _Continuation,
    ) -> None:
        held: list[Event] = []  # the events before the run went past its entry
        run_log: RunLog | None = None
        events = stream()
        try:
            async with events:
                async for event in events:
                    if run_log is None:
                        held.append(event)
                        if event.kind != "superstep_started" or event.workflow_path:
                            continue
                        run_log = self._open_log(held, workflow.name, continuation)
                        if not started.done():
                            started.set_result(run_log.run_id)
                        continue
                    run_log.add(event)
            if run_log is None and held:  # nothing to run: went idle at once
                run_log = self._open_log(held, workflow.name, continuation)
                if not started.done():
                    started.set_result(run_log.run_id)
        except asyncio.CancelledError:
            if not started.done():
                started.cancel()
            if run_log is not None:  # how it stopped: its last status events
                for event in events.drain():
                    run_log.add(event)
                run_log.unstored = not await self._stored(run_log.run_id)
            raise
        except StepgraphError as exc:
            if not started.done():
                started.set_exception(refusal(exc))
            elif not isinstance(exc, RequestError):
                log.info("run of %s ended: %s", workflow.name, exc)
                if run_log is not None:
                    run_log.error = str(exc)
                    run_log.unstored = not await self._stored(run_log.run_id)
        except Exception as exc:  # a bug of ours or of a handler's, logged not shown
            log.exception("run of %s failed", workflow.name)
            if not started.done():
                started.set_exception(
                    Problem(500, f"the run could not start: {type(exc).__name__}")
                )
        finally:
            if not started.done():  # (a run that said nothing at all)
                started.set_exception(Problem(500, "the run ended before it started"))
            if run_log is not None:
                run_log.ended_at = time.time()
                run_log.changed()
                self._forget_old()

    async def _stored(self, run_id: str) -> bool:
        try:
            return await self.store.run_info(run_id) is not None
        except StepgraphError:
            return False  # (the store is down: shown from here until it says it has some)

    def _open_log(self, held: list[Event], workflow: str, continuation: _Continuation) -> RunLog:
        run_id = next(e.run_id for e in held if isinstance(e, RunStartedEvent))
        known = self.logs.pop(run_id, None)
        run_log = known or RunLog(run_id, workflow)
        if known is not None and continuation.renumber:
            run_log.renumber()
        self.logs[run_id] = run_log  # (moved to the end: the newest)
        run_log.task = asyncio.current_task()
        run_log.since, run_log.origin = continuation.since, continuation.origin
        run_log.answering, run_log.fresh = continuation.answering, []
        for event in held:
            run_log.add(event)
        self._forget_old()
        return run_log

    def _forget_old(self) -> None:
        """Forget the events of the oldest runs that ended, beyond
        ``keep_runs`` runs or ``keep_bytes`` of events in all."""
        total = sum(entry.size for entry in self.logs.values())
        count = len(self.logs)
        for run_id in [r for r, entry in self.logs.items() if not entry.live]:
            if count <= self.keep_runs and total <= self.keep_bytes:
                break
            total -= self.logs.pop(run_id).size
            count -= 1

    # -- events -----------------------------------------------------------------------

    def log_of(self, run_id: str) -> RunLog | None:
        return self.logs.get(run_id)

    async def stream_status(self, run_id: str) -> str:
        """The status a stream of the run's events starts with; 404 for a
        run that neither goes on here nor is in the store (deleted since,
        say: its events are not played any more)."""
        run_log = self.logs.get(run_id)
        if run_log is not None and (run_log.live or run_log.unstored):
            return run_log.status
        info = await self.store.run_info(run_id)
        if info is None:
            self._forget_deleted(run_id)
            raise Problem(404, f"no run {quoted(run_id)} in the store")
        return run_log.status if run_log is not None else info.status

    # -- stopping -----------------------------------------------------------------------

    def begin_close(self) -> None:
        """Start stopping (the server was told to stop): see ``close``."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._close())

    async def close(self) -> list[str]:
        """Refuse new runs, stop every run going on here at its last
        checkpoint and record it as interrupted, then end every event
        stream — after the runs' own ``cancelled`` status reached it. The
        ids of the runs stopped; once, however often called."""
        self.begin_close()
        assert self._closing is not None
        return await asyncio.shield(self._closing)

    async def _close(self) -> list[str]:
        self.stopping.set()
        stop_waiting = getattr(self.store, "stop_waiting", None)
        if stop_waiting is not None:  # (a save waiting for its database gives up now)
            stop_waiting()
        live = [entry for entry in self.logs.values() if entry.live]
        tasks = list(self._tasks)  # (also those not past their entry: nothing to record)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for entry in live:
            try:
                await self._record_interrupted(entry.run_id)
            except StepgraphError as exc:
                log.warning("could not record run %s as interrupted: %s", entry.run_id, exc)
        self.streams_over.set()
        for entry in self.logs.values():
            entry.changed()
        return [entry.run_id for entry in live]

    async def _record_interrupted(self, run_id: str) -> None:
        """Record a run stopped here as interrupted, holding its lease from
        reading its status to writing it: a run another server (or process)
        took meanwhile goes on there, and is not labelled here."""
        holder = new_holder()
        if await self.store.lease(run_id, holder) is not None:
            return  # (going on elsewhere already)
        try:
            info = await self.store.run_info(run_id)
            # A run whose last checkpoint was being saved when it was
            # stopped ends as that checkpoint says (idle, waiting for
            # answers, paused): not interrupted.
            if info is not None and info.status in _STOPPED:
                await self.store.set_status(run_id, "cancelled", INTERRUPTED)
        finally:
            await self.store.release(run_id, holder)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Continuation:
    """A call that goes on with a run: from which checkpoint, answering
    which requests, since when (see :class:`RunLog`)."""

    origin: str | None
    answering: frozenset[str]
    since: float
    renumber: bool = False


def _remember(cache: OrderedDict[Any, Any], key: Any, value: Any, limit: int = 256) -> Any:
    """``value``, kept in ``cache`` under ``key`` (the oldest go past ``limit``)."""
    cache[key] = value
    while len(cache) > limit:
        cache.popitem(last=False)
    return value


def _request_json(request: PendingRequest | RequestInfoEvent) -> dict[str, Any]:
    return {
        "request_id": request.request_id,
        "executor_id": request.executor_id,
        "request": jsonable(request.request),
        "request_type": type_name(type(request.request)),
        "response_schema": schema_of([request.response_type]),
        "response_type": type_name(request.response_type),
    }
