"""The runs a server goes on with, and what it keeps of them.

:class:`RunService` holds the workflows named on the command line, starts
and continues their runs as tasks of the server's event loop (a browser
that disconnects stops nothing), and keeps each run's events as numbered
JSON records — so a stream that reconnects with ``Last-Event-ID`` gets
exactly the events it missed, also after the run ended. Everything that
lasts is in the checkpoint store the CLI uses: runs, their checkpoints,
requests and answers; the events are kept in memory for the runs this
server process ran (the most recent ``keep_runs`` of them, at most
``keep_bytes`` of events and outputs in all), and of each run its newest
events only: ``keep_run_events`` of them, ``keep_run_bytes`` at most, also
while it goes on (a stream asking for one dropped is told so: see
:mod:`._logs`) -- and its newest outputs, ``keep_run_outputs`` and
``keep_run_output_bytes`` of them, with those the store does not hold yet.

It is what the HTTP layer talks to. Describing runs for the API is
:class:`~._describe.RunDescriber`'s, which the service holds over the same
logs; stopping every run when the server stops is :func:`~._shutdown.stop_runs`.

Validation is the CLI's (:mod:`stepgraph._cli._input`): an input or an
answer the command line refuses, the server refuses the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .._checkpoint import RUNNING_STATUSES, TERMINAL_STATUSES, CheckpointStore, RunInfo
from .._cli._input import coerce, coerce_input
from .._cli._load import CliError
from .._core import Event, RunStartedEvent, quoted
from .._exceptions import (
    CheckpointNotFoundError,
    RequestError,
    StepgraphError,
)
from .._persistence import CheckpointConfig
from .._workflow import Workflow
from ._describe import CHECKPOINTS_SHOWN, RunDescriber
from ._logs import (
    KEEP_RUN_BYTES,
    KEEP_RUN_EVENTS,
    KEEP_RUN_OUTPUT_BYTES,
    KEEP_RUN_OUTPUTS,
    RunLog,
)
from ._refusals import (
    Problem,
    answered_already,
    refusal,
    refuse_nothing_to_run,
)
from ._served import ServedWorkflow, unroutable
from ._shutdown import cancelled_by_api, record_stopped, stop_runs

__all__ = ["RunService"]

log = logging.getLogger("stepgraph.serve")

# How often, at most, a run whose outputs the store may not hold yet keep
# its log past its bound asks the store which it holds (seconds).
CHECK_STORED_EVERY = 0.05


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
        keep_run_events: int = KEEP_RUN_EVENTS,
        keep_run_bytes: int = KEEP_RUN_BYTES,
        keep_run_outputs: int = KEEP_RUN_OUTPUTS,
        keep_run_output_bytes: int = KEEP_RUN_OUTPUT_BYTES,
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
        self.keep_run_events, self.keep_run_bytes = keep_run_events, keep_run_bytes
        self.keep_run_outputs, self.keep_run_output_bytes = keep_run_outputs, keep_run_output_bytes
        self.logs: OrderedDict[str, RunLog] = OrderedDict()
        # Runs a call to this server is continuing, until the continuation
        # went past its entry (then its live log says so): the requests it answers.
        self._claims: dict[str, frozenset[str]] = {}
        self.stopping = asyncio.Event()  # new runs are refused
        self.streams_over = asyncio.Event()  # every event stream ends
        self._tasks: set[asyncio.Task[None]] = set()  # every run going on here
        self._closing: asyncio.Task[list[str]] | None = None
        self._describer = RunDescriber(self.workflows, store, self.logs, self._claims)

    # -- describing (see RunDescriber) ----------------------------------------------

    def describe_workflows(self) -> list[dict[str, Any]]:
        return self._describer.describe_workflows()

    async def list_runs(
        self, workflow: str | None, status: str | None, cursor: str | None, limit: int
    ) -> dict[str, Any]:
        return await self._describer.list_runs(workflow, status, cursor, limit)

    async def describe_run(
        self, run_id: str, checkpoints: int = CHECKPOINTS_SHOWN
    ) -> dict[str, Any]:
        return await self._describer.describe_run(run_id, checkpoints)

    async def outputs_page(self, run_id: str, offset: int, limit: int) -> dict[str, Any]:
        return await self._describer.outputs_page(run_id, offset, limit)

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
                    since = await self._since_answered(info)
                    raise answered_already(run_id, request_id, f"at checkpoint {answered}", since)
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
            latest_before=info.last_checkpoint,
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
            latest_before=None if fork else info.last_checkpoint,
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
            # (the run recorded only that its process stopped it: say who asked)
            with contextlib.suppress(StepgraphError):  # (a store failing now: it stays said so)
                await record_stopped(self.store, run_id, cancelled_by_api(run_id))
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

    async def _since_answered(self, info: RunInfo) -> str:
        """What became of the continuation that took an answer, when the run
        did not end as a run ends (idle, waiting, paused): going on in
        another process, or stopped since (its process killed, its server
        stopped) -- then a resume goes on with the answer, which a second
        answer never would (``stepgraph run --respond`` says the same)."""
        if info.status not in (*RUNNING_STATUSES, *TERMINAL_STATUSES):
            return ""
        if not await self._describer.unheld(info.run_id):
            return "; the run is going on with that answer elsewhere"
        return (
            f"; the run took that answer and stopped since ({info.status}): go on with it: "
            f"POST /api/runs/{info.run_id}/resume with {{}}"
        )

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
        latest_before: str | None = None,
        answering: frozenset[str] = frozenset(),
        renumber: bool = False,
    ) -> str:
        """Start ``stream()`` as a task and return its run id once the run
        went past its entry (answers recorded, the run taken): a run that
        is refused there is the caller's error, and leaves no events.
        ``origin``: the checkpoint it goes on from; ``latest_before``: the
        run's latest checkpoint then; ``answering``: the requests it answers;
        ``renumber``: its events are numbered above any another server gave
        (see ``RunLog.renumber``)."""
        if self.stopping.is_set():
            raise Problem(503, "the server is stopping")
        started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        # The run goes on if the client that asked for it goes away.
        # (its time: before any checkpoint of it is made)
        continuation = _Continuation(
            origin=origin,
            latest_before=latest_before,
            answering=answering,
            since=time.time(),
            renumber=renumber,
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
        checked = 0.0  # when the store was last asked which outputs it holds
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
                    if run_log.over and time.monotonic() >= checked + CHECK_STORED_EVERY:
                        await self._let_stored_go(run_log)
                        checked = time.monotonic()
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
                run_log.let_go()  # (the run flushed its checkpoints as it ended)
                run_log.changed()
                self._forget_old()

    async def _let_stored_go(self, run_log: RunLog) -> None:
        """Let go of the outputs of the run going on that the store holds
        now (its latest checkpoint is this continuation's): the details read
        them from it. A store that cannot give outputs back keeps none."""
        if getattr(self.store, "outputs", None) is None:
            run_log.let_go()  # (the details show the newest, and how many there were)
            return
        try:
            info = await self.store.run_info(run_log.run_id)
        except StepgraphError:
            return  # (the store is down: the run fails at its next save)
        if info is not None and info.last_checkpoint != run_log.latest_before:
            run_log.stored_through(info.superstep)

    async def _stored(self, run_id: str) -> bool:
        try:
            return await self.store.run_info(run_id) is not None
        except StepgraphError:
            return False  # (the store is down: shown from here until it says it has some)

    def _open_log(self, held: list[Event], workflow: str, continuation: _Continuation) -> RunLog:
        run_id = next(e.run_id for e in held if isinstance(e, RunStartedEvent))
        known = self.logs.pop(run_id, None)
        run_log = known or RunLog(
            run_id,
            workflow,
            max_events=self.keep_run_events,
            max_bytes=self.keep_run_bytes,
            max_outputs=self.keep_run_outputs,
            max_output_bytes=self.keep_run_output_bytes,
        )
        if known is not None and continuation.renumber:
            run_log.renumber()
        self.logs[run_id] = run_log  # (moved to the end: the newest)
        run_log.task = asyncio.current_task()
        run_log.begin(continuation.origin, continuation.latest_before, continuation.since)
        run_log.answering = continuation.answering
        for event in held:
            run_log.add(event)
        self._forget_old()
        return run_log

    def _forget_old(self) -> None:
        """Forget the events of the oldest runs that ended, beyond
        ``keep_runs`` runs or ``keep_bytes`` of events and outputs in all."""
        total = sum(entry.held for entry in self.logs.values())
        count = len(self.logs)
        for run_id in [r for r, entry in self.logs.items() if not entry.live]:
            if count <= self.keep_runs and total <= self.keep_bytes:
                break
            total -= self.logs.pop(run_id).held
            count -= 1

    # -- events -----------------------------------------------------------------------

    def log_of(self, run_id: str) -> RunLog | None:
        return self.logs.get(run_id)

    async def stream_status(self, run_id: str) -> str:
        return await self._describer.stream_status(run_id)

    # -- stopping -----------------------------------------------------------------------

    def begin_close(self) -> None:
        """Start stopping (the server was told to stop): see ``close``."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(
                stop_runs(
                    self.store,
                    self.logs,
                    self._tasks,
                    stopping=self.stopping,
                    streams_over=self.streams_over,
                )
            )

    async def close(self) -> list[str]:
        """Refuse new runs, stop every run going on here at its last
        checkpoint and record it as interrupted, then end every event
        stream — after the runs' own ``cancelled`` status reached it. The
        ids of the runs stopped; once, however often called."""
        self.begin_close()
        assert self._closing is not None
        return await asyncio.shield(self._closing)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Continuation:
    """A call that goes on with a run: from which checkpoint, the run's
    latest then, answering which requests, since when (see :class:`RunLog`)."""

    origin: str | None
    latest_before: str | None
    answering: frozenset[str]
    since: float
    renumber: bool = False
