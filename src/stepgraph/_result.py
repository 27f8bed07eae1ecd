"""``RunResult``: what a finished run produced — its outputs in schedule
order, its events, the requests still open, its newest checkpoint and the
tokens its model calls used — and ``run_outputs``, which picks the run's own
outputs out of everything it emitted."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._core import (
    Event,
    OutputEvent,
    PendingRequest,
    RunStatus,
    RunUsage,
    in_schedule_order,
    materialize,
)

__all__ = ["RunResult", "run_outputs"]


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


def run_outputs(log: list[Any], positions: Mapping[str, int]) -> list[Any]:
    """The run's own outputs among what it emitted, in schedule order."""
    found = [e for e in log if type(e) is OutputEvent and not e.workflow_path]
    return in_schedule_order(found, positions)
