"""What a server keeps of a run's events: :class:`RunLog`, numbered JSON
records a stream that reconnects with ``Last-Event-ID`` resumes from, and
what the run yielded that its store may not hold yet."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from .._cli._render import event_record
from .._core import Event, RequestInfoEvent, RunStatus

__all__ = ["RunLog"]


@dataclass(slots=True)
class RunLog:
    """One run's events as JSON records, and whether the run is going on in
    this server. Event ids go up by one from ``base`` + 1; ``base`` is the
    time the log was opened, in microseconds, so a log this process opens
    again later — or a later server process — numbers above every id given
    before, and a client reconnecting with an older ``Last-Event-ID`` gets
    all of this log."""

    run_id: str
    workflow: str
    records: list[str] = field(default_factory=list)
    outputs: list[Any] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    status: str = RunStatus.IN_PROGRESS.value
    size: int = 0  # bytes of the records
    # How the run ended here, kept for when the store could not record it (a
    # store gone down): the failure, when, and whether the store holds none
    # of the run (then this log is all there is to show).
    error: str | None = None
    ended_at: float | None = None
    unstored: bool = False
    base: int = field(default_factory=lambda: time.time_ns() // 1000)
    # The continuation going on here (or the last one): when it began, the
    # checkpoint it went on from (None: a new run), the requests it answers,
    # and the outputs it yielded with their supersteps — those of superstep
    # k are stored with the checkpoint of superstep k, so the ones past the
    # latest stored checkpoint are what the store does not hold yet.
    since: float = 0.0
    origin: str | None = None
    answering: frozenset[str] = frozenset()
    fresh: list[tuple[int | None, Any]] = field(default_factory=list)
    # The requests open in the continuation going on, by id: each one starts
    # by announcing those still open, and announces each new one at its
    # barrier — so while the run goes on here they agree with its status,
    # which the store's latest checkpoint may not say yet.
    requests: dict[str, RequestInfoEvent] = field(default_factory=dict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def live(self) -> bool:
        return self.task is not None and not self.task.done()

    @property
    def last_id(self) -> int:
        return self.base + len(self.records)

    def after(self, event_id: int) -> list[tuple[int, str]]:
        """The records after ``event_id``, with their ids."""
        first = max(event_id - self.base, 0)
        return list(enumerate(self.records[first:], self.base + first + 1))

    def add(self, event: Event) -> None:
        record = event_record(event)
        record["id"] = self.last_id + 1
        record["time"] = time.time()
        if event.kind == "output" and not event.workflow_path:
            self.outputs.append(record["data"])
            self.fresh.append((event.superstep, record["data"]))
        elif event.kind == "status" and not event.workflow_path:
            self.status = record["status"]
        elif event.kind == "run_started" and not event.workflow_path:
            self.requests = {}
        elif isinstance(event, RequestInfoEvent) and not event.workflow_path:
            self.requests[event.request_id] = event
        elif event.kind == "failed" and not event.workflow_path:
            self.error = record["error"]  # (also when the run's own ending is cut off)
        text = json.dumps(record, allow_nan=False, ensure_ascii=False)
        self.records.append(text)
        self.size += len(text)
        self.changed()

    def changed(self) -> None:
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()

    async def wait(self, seen: int) -> None:
        """Until there are events after id ``seen`` or the run stopped."""
        if self.last_id > seen or not self.live:
            return
        await self._wake.wait()
