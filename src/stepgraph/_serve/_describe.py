"""How the API describes the workflows a server runs and the runs in its
store: :class:`RunDescriber`.

A run's description is the store's record of it, corrected by what this
server knows and the store may not yet: the status, outputs and open
requests of a run going on here (its :class:`~._logs.RunLog`), how a run
that ended here ended when the store could not record it, and whether a run
the store lists as going on is held by no process (stranded: its process
was killed). What the store gave is remembered while it cannot have
changed, so a page that polls a run does not read it all again each time.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Mapping
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
from .._cli._render import jsonable
from .._core import PendingRequest, RequestInfoEvent, RunStatus, quoted, type_name
from .._exceptions import CheckpointNotFoundError
from .._viz import to_graph
from ._logs import RunLog
from ._refusals import Problem, failure_of
from ._schema import schema_of
from ._served import ServedWorkflow
from ._shutdown import INTERRUPTED

__all__ = ["CHECKPOINTS_MAX", "CHECKPOINTS_SHOWN", "OUTPUTS_MAX", "OUTPUTS_SHOWN", "RunDescriber"]

_STATUSES = frozenset(status.value for status in RunStatus)
_ENDINGS = frozenset({RunStatus.FAILED.value, RunStatus.CANCELLED.value})
# How many of a run's checkpoints its details hold (the newest) unless asked
# for more, and the most that can be asked for.
CHECKPOINTS_SHOWN = 100
CHECKPOINTS_MAX = 10_000
# How many of a run's outputs its details hold (the newest), and the most a
# page of them (``outputs_page``) holds.
OUTPUTS_SHOWN = 200
OUTPUTS_MAX = 1000


@dataclass(frozen=True, slots=True)
class _Outputs:
    """Outputs as the details show them: how many there are, the newest
    ``OUTPUTS_SHOWN`` of them, and how many of the oldest none holds any
    more (a run shown from this server's memory only)."""

    total: int
    newest: list[Any]
    dropped: int = 0

    def then(self, more: list[Any]) -> _Outputs:
        """These, then ``more``."""
        return _Outputs(self.total + len(more), (self.newest + more)[-OUTPUTS_SHOWN:], self.dropped)

    @staticmethod
    def of(run_log: RunLog) -> _Outputs:
        return _Outputs(
            run_log.outputs_count, run_log.outputs[-OUTPUTS_SHOWN:], run_log.outputs_dropped
        )


class RunDescriber:
    """The served ``workflows`` and the runs in ``store`` as the API shows
    them, with what this server knows of them: ``logs``, the events of the
    runs it ran (it drops those of a run deleted from the store since), and
    ``claims``, the runs a call to it is continuing."""

    def __init__(
        self,
        workflows: Mapping[str, ServedWorkflow],
        store: CheckpointStore,
        logs: OrderedDict[str, RunLog],
        claims: Mapping[str, frozenset[str]],
    ) -> None:
        # (the service's own, shared: what it changes is seen here at once)
        self.workflows = workflows
        self.store = store
        self.logs = logs
        self._claims = claims
        # What the store gave for a checkpoint: how many outputs its lineage
        # holds and the newest of them (by checkpoint and the run's checkpoint
        # count, which a prune or a delete changes: the lineage can then be
        # shorter), and the requests open at it (a checkpoint's own record
        # never changes). Never all the outputs: a run yielding large ones
        # for hours would hold the server's memory.
        self._outputs: OrderedDict[tuple[str, int, bool], _Outputs] = OrderedDict()
        self._requests: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        # A run's checkpoints as the store lists them, by its latest checkpoint
        # and count (a new save or a prune changes one): a run polled while it
        # waits is not listed again each time.
        self._listed: OrderedDict[tuple[str, int, int], list[CheckpointInfo]] = OrderedDict()
        # The outputs read last for each run going on, by the checkpoint they
        # lead up to: the next read starts there.
        self._went_on: OrderedDict[str, tuple[str, _Outputs]] = OrderedDict()

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
        (oldest first) and ``checkpoints_total``, how many it has, and its
        newest ``OUTPUTS_SHOWN`` outputs and ``outputs_total``."""
        run_log = self.logs.get(run_id)
        # Taken before the store is asked: the log lets go of those the store
        # holds, and it holds them by the time it answers (see _outputs_now).
        fresh = run_log.fresh if run_log is not None else []
        info = await self.store.run_info(run_id)
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
                "events_dropped": run_log.dropped,
                **_outputs_json(_Outputs.of(run_log)),
                "pending_requests": self._live_requests(run_log),
                "served": True,  # (this server ran it)
            }
        out = self._run_summary(info)
        # (as shown: not a run that ended here, failed, though the store,
        # down then, could not record it -- no process was killed)
        if not out["live"] and out["status"] in RUNNING_STATUSES and await self._stranded(run_id):
            out["interrupted"] = True  # (its process ended without recording how: killed)
        out["events_kept"] = run_log is not None
        out["events_dropped"] = run_log.dropped if run_log is not None else 0
        out["failure"] = failure_of(out["status"], out["error"], info.superstep)
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
        out.update(
            _outputs_json(
                await self._outputs_now(
                    info, None if latest is None else latest.created_at, run_log, fresh
                )
            )
        )
        out["pending_requests"] = []
        served = self.workflows.get(info.workflow)
        # (a run another server or process started, of a workflow this one
        # does not serve: shown, but answered, resumed or forked where it is)
        out["served"] = served is not None
        if out["live"]:
            out["pending_requests"] = live_requests
        elif served is not None and info.pending_requests:
            out["pending_requests"] = await self._requests_at(served, info.last_checkpoint)
        elif info.pending_requests:
            out["pending_requests"] = await self._stored_requests_at(info.last_checkpoint)
        return out

    async def _stranded(self, run_id: str) -> bool:
        """Whether a run the store lists as going on is held by no process
        (its process was killed, or its machine went down): nothing goes on
        with it and nothing would hear a cancel, but it resumes. Asked as the
        store's ``request_cancel`` asks: who holds its lease (a store without
        ``lease_holder``: by taking the lease and giving it back at once).
        Never while a call of this server continues it."""
        return run_id not in self._claims and await self.unheld(run_id)

    async def unheld(self, run_id: str) -> bool:
        """Whether no process holds the run (see ``_stranded``)."""
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
        self,
        info: RunInfo,
        latest_at: float | None,
        run_log: RunLog | None,
        fresh: list[tuple[int | None, Any]],
    ) -> _Outputs:
        """The run's outputs along the branch of its latest checkpoint; for
        a run going on here, with those it yielded since (not stored yet:
        ``fresh``, as its log held them before ``info`` was read)."""
        if getattr(self.store, "outputs", None) is None:
            # (a store of the user's own that gives no outputs: what this server saw)
            return _Outputs.of(run_log) if run_log is not None else _Outputs(0, [])
        live = run_log is not None and run_log.live
        going = live or info.status in RUNNING_STATUSES  # (here or in another process)
        if run_log is None or not live:
            return await self._outputs_of(info, info.last_checkpoint, going)
        at, yielded = self._along(info, latest_at, run_log, fresh)
        stored = await self._outputs_of(info, at, at == info.last_checkpoint)
        return stored.then(yielded)

    @staticmethod
    def _along(
        info: RunInfo,
        latest_at: float | None,
        run_log: RunLog,
        fresh: list[tuple[int | None, Any]],
    ) -> tuple[str | None, list[Any]]:
        """A run going on here: the checkpoint whose lineage holds its
        stored outputs (None: none), and those it yielded after it."""
        if latest_at is not None and latest_at < run_log.since:
            # Nothing of this continuation is stored yet (a replay's latest
            # checkpoint is still the branch it left): it goes on from its origin.
            return run_log.origin, [data for _, data in fresh]
        return info.last_checkpoint, [
            data for step, data in fresh if step is None or step > info.superstep
        ]

    async def _outputs_of(self, info: RunInfo, at: str | None, going: bool) -> _Outputs:
        """How many outputs the lineage of checkpoint ``at`` of the run holds
        and the newest of them, as the store reads them; remembered while
        the run holds as many checkpoints. For a run going on, only what it
        yielded since the last look is read (our stores: ``after=``) — a
        long run's details cost what its newest checkpoints hold, not all
        of them. (Outputs a prune removed meanwhile show until the run ends.)"""
        if at is None:
            return _Outputs(0, [])
        key = (at, info.checkpoints, going)
        known = self._outputs.get(key)
        if known is not None:
            return known
        before = self._went_on.get(info.run_id) if going else None
        known = None
        if before is not None and isinstance(self.store, BaseStore):
            with contextlib.suppress(CheckpointNotFoundError):  # (not on the lineage)
                known = before[1].then(await self.store.outputs(at, after=before[0]))
        if known is None:  # (its newest only: the store counts the rest, holding none)
            known = _Outputs(*await self._stored(at, -OUTPUTS_SHOWN, None))
        # (few: each holds up to OUTPUTS_SHOWN outputs, large ones maybe)
        if going:
            _remember(self._went_on, info.run_id, (at, known), limit=16)
        _remember(self._outputs, key, known, limit=16)
        return known

    async def outputs_page(self, run_id: str, offset: int, limit: int) -> dict[str, Any]:
        """The run's outputs from the ``offset``-th (from 0, oldest first),
        ``limit`` of them, as its details count them (``outputs_total``).
        Those none holds any more (``outputs_dropped``: a run shown from
        this server's memory) are left out: the page's ``offset`` says
        where it begins."""
        run_log = self.logs.get(run_id)
        fresh = run_log.fresh if run_log is not None else []  # (as describe_run)
        info = await self.store.run_info(run_id)
        reader = getattr(self.store, "outputs", None)
        if info is None or reader is None:
            if run_log is None or (info is None and not (run_log.live or run_log.unstored)):
                if info is None:
                    self._forget_deleted(run_id)
                    raise Problem(404, f"no run {quoted(run_id)} in the store")
                return _page([], 0, 0, offset, limit)
            return _page(
                run_log.outputs, run_log.outputs_dropped, run_log.outputs_count, offset, limit
            )
        at: str | None = info.last_checkpoint
        yielded: list[Any] = []
        if run_log is not None and run_log.live:
            at, yielded = self._along(info, await self._latest_at(info), run_log, fresh)
        # (only the page is read, and let go: none is remembered, see ``_outputs``)
        stored, outputs = await self._stored(at, offset, limit) if at is not None else (0, [])
        total = stored + len(yielded)
        start = min(offset, total)
        since = max(0, start - stored)  # (the page's first not stored yet)
        outputs += yielded[since : since + limit - len(outputs)]
        return {"outputs": jsonable(outputs), "offset": start, "total": total, "dropped": 0}

    async def _stored(self, at: str, offset: int, limit: int | None) -> tuple[int, list[Any]]:
        """How many outputs the lineage of checkpoint ``at`` holds, and
        ``limit`` of them from the ``offset``-th (negative: from the newest),
        reading only those (our stores: ``outputs_slice``)."""
        slicer = getattr(self.store, "outputs_slice", None)
        if slicer is not None:
            total, part = await slicer(at, offset, limit)
            return int(total), list(part)
        every = list(await self.store.outputs(at))  # type: ignore[attr-defined]
        return len(every), every[offset:][:limit]  # (a store of the user's own: all, let go)

    async def _latest_at(self, info: RunInfo) -> float | None:
        """When the run's latest checkpoint was made."""
        if isinstance(self.store, BaseStore):
            listed = await self.store.list(info.run_id, last=1)
        else:  # (a store of the user's own may list only whole runs)
            listed = await self.store.list(info.run_id)
        latest = next((cp for cp in reversed(listed) if cp.id == info.last_checkpoint), None)
        return None if latest is None else latest.created_at

    async def _requests_at(
        self, served: ServedWorkflow, checkpoint_id: str
    ) -> list[dict[str, Any]]:
        known = self._requests.get(checkpoint_id)
        if known is None:
            checkpoint = await self.store.load(checkpoint_id)
            requests = served.workflow.codec.requests_of(checkpoint)
            known = _remember(self._requests, checkpoint_id, [_request_json(r) for r in requests])
        return known

    async def _stored_requests_at(self, checkpoint_id: str) -> list[dict[str, Any]]:
        """The requests open at the checkpoint as it stores them, for a
        workflow this server does not serve (it has not the types to decode
        them with): each request's value as the checkpoint's tagged JSON,
        its types by their stored names, and no response schema."""
        key = f"{checkpoint_id} as stored"  # (not the decoded ones of the same checkpoint)
        known = self._requests.get(key)
        if known is None:
            body = (await self.store.load(checkpoint_id)).body
            requests = [_stored_request_json(record) for record in body.get("requests", ())]
            known = _remember(self._requests, key, requests)
        return known

    def _forget_deleted(self, run_id: str) -> None:
        """Drop the events of a run that ended here and that the store no
        longer holds (deleted since): it is not shown any more."""
        run_log = self.logs.get(run_id)
        if run_log is not None and not (run_log.live or run_log.unstored):
            del self.logs[run_id]

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
        return str(self._run_summary(info)["status"])


def _remember(cache: OrderedDict[Any, Any], key: Any, value: Any, limit: int = 256) -> Any:
    """``value``, kept in ``cache`` under ``key`` (the oldest go past ``limit``)."""
    cache[key] = value
    while len(cache) > limit:
        cache.popitem(last=False)
    return value


def _outputs_json(outputs: _Outputs) -> dict[str, Any]:
    return {
        "outputs": jsonable(outputs.newest),
        "outputs_total": outputs.total,
        "outputs_dropped": outputs.dropped,
    }


def _page(kept: list[Any], first: int, total: int, offset: int, limit: int) -> dict[str, Any]:
    """A page of outputs ``first`` .. ``total`` - 1, which ``kept`` holds."""
    start = min(max(offset, first), total)
    return {
        "outputs": jsonable(kept[start - first : start - first + limit]),
        "offset": start,
        "total": total,
        "dropped": first,
    }


def _request_json(request: PendingRequest | RequestInfoEvent) -> dict[str, Any]:
    return {
        "request_id": request.request_id,
        "executor_id": request.executor_id,
        "request": jsonable(request.request),
        "request_type": type_name(type(request.request)),
        "response_schema": schema_of([request.response_type]),
        "response_type": type_name(request.response_type),
    }


def _stored_request_json(record: Mapping[str, Any]) -> dict[str, Any]:
    """An open request as a checkpoint stores it (see ``_stored_requests_at``)."""
    value = record.get("request")
    named = value.get("type") if isinstance(value, dict) else None  # (a dataclass's, say)
    return {
        "request_id": record.get("id"),
        "executor_id": record.get("executor"),
        "request": value,
        "request_type": named if isinstance(named, str) else None,
        "response_schema": None,
        "response_type": record.get("response_type"),
    }
