"""Stopping the runs a server goes on with when the server stops.

:func:`stop_runs` refuses new runs, cancels every run going on at its last
checkpoint and records it as interrupted (:data:`INTERRUPTED`: listed as
such, it resumes with one call), then ends every event stream. A run another
server took meanwhile goes on there and is not labelled here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping

from .._checkpoint import CheckpointStore, new_holder
from .._core import RunStatus
from .._exceptions import StepgraphError
from ._logs import RunLog

__all__ = ["INTERRUPTED", "cancelled_by_api", "record_stopped", "stop_runs"]

log = logging.getLogger("stepgraph.serve")

# The error a run stopped by the server's shutdown is recorded with: such
# runs are listed as interrupted, and resume with one call.
INTERRUPTED = "interrupted: the server stopped while the run was going on"


def cancelled_by_api(run_id: str) -> str:
    """The error a run this server ran and cancelled through its API is
    recorded with (the engine records only that its process stopped it)."""
    return f"cancelled on request: POST /api/runs/{run_id}/cancel to the server running it"


# How a run stopped by the server may stand in its store (``cancelled``: it
# recorded that itself; going on: its process ended before recording it).
_STOPPED = frozenset(
    s.value
    for s in (RunStatus.CANCELLED, RunStatus.IN_PROGRESS, RunStatus.IN_PROGRESS_PENDING_REQUESTS)
)


async def stop_runs(
    store: CheckpointStore,
    logs: Mapping[str, RunLog],
    tasks: Iterable[asyncio.Task[None]],
    *,
    stopping: asyncio.Event,
    streams_over: asyncio.Event,
) -> list[str]:
    """Set ``stopping`` (new runs are refused), cancel ``tasks`` (every run
    going on), record the runs ``logs`` showed going on as interrupted, then
    set ``streams_over`` and wake every stream. The ids of the runs stopped."""
    stopping.set()
    stop_waiting = getattr(store, "stop_waiting", None)
    if stop_waiting is not None:  # (a save waiting for its database gives up now)
        stop_waiting()
    live = [entry for entry in logs.values() if entry.live]
    going = list(tasks)  # (also those not past their entry: nothing to record)
    for task in going:
        task.cancel()
    if going:
        await asyncio.wait(going)
    for entry in live:
        try:
            await record_stopped(store, entry.run_id, INTERRUPTED)
        except StepgraphError as exc:
            log.warning("could not record run %s as interrupted: %s", entry.run_id, exc)
    streams_over.set()
    for entry in logs.values():
        entry.changed()
    return [entry.run_id for entry in live]


async def record_stopped(store: CheckpointStore, run_id: str, reason: str) -> None:
    """Record a run stopped here as cancelled for ``reason`` (interrupted by
    the shutdown, or cancelled through the API), holding its lease from
    reading its status to writing it: a run another server (or process)
    took meanwhile goes on there, and is not labelled here."""
    holder = new_holder()
    if await store.lease(run_id, holder) is not None:
        return  # (going on elsewhere already)
    try:
        info = await store.run_info(run_id)
        # A run whose last checkpoint was being saved when it was
        # stopped ends as that checkpoint says (idle, waiting for
        # answers, paused): not interrupted.
        if info is not None and info.status in _STOPPED:
            await store.set_status(run_id, "cancelled", reason)
    finally:
        await store.release(run_id, holder)
