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
from .._core import Event, RequestInfoEvent, RunStatus, lone_surrogate_at

__all__ = ["RunLog", "json_text"]


def json_text(value: Any, separators: tuple[str, str] | None = None) -> str:
    """``value`` as JSON that UTF-8 can carry: non-ASCII text as it is,
    unless it holds a lone surrogate (a model or a handler may produce one;
    UTF-8 has no form for it), which is then written as a ``\\udXXXX``
    escape, as JSON allows and a browser reads, rather than break the
    response or the event stream in which it is sent."""
    text = json.dumps(value, allow_nan=False, ensure_ascii=False, separators=separators)
    if lone_surrogate_at(text) is not None:
        text = json.dumps(value, allow_nan=False, separators=separators)
    return text


@dataclass(slots=True)
class RunLog:
    """One run's events as JSON records, and whether the run is going on in
    this server. Event ids go up by one from ``base`` + 1; ``base`` is the
    time the log was opened, in microseconds, so a log this process opens
    again later — or a later server process — numbers above every id given
    before, and a client reconnecting with an older ``Last-Event-ID`` gets
    all of this log. A continuation here after another server went on with
    the run jumps to the time it began (``renumber``), for the same reason."""

    run_id: str
    workflow: str
    records: list[str] = field(default_factory=list)
    # Where the numbering jumped (see ``renumber``): (the id, the index of
    # its record) at each jump, in order; the records between go one apart.
    jumps: list[tuple[int, int]] = field(default_factory=list)
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
        first, index = self.jumps[-1] if self.jumps else (self.base + 1, 0)
        return first + len(self.records) - index - 1

    def after(self, event_id: int) -> list[tuple[int, str]]:
        """The records after ``event_id``, with their ids."""
        stretches = [(self.base + 1, 0), *self.jumps]
        out: list[tuple[int, str]] = []
        for k, (first, index) in enumerate(stretches):
            end = stretches[k + 1][1] if k + 1 < len(stretches) else len(self.records)
            skip = min(max(event_id - first + 1, 0), end - index)
            out += enumerate(self.records[index + skip : end], first + skip)
        return out

    def renumber(self) -> None:
        """Number what comes next above every id any server may have given
        for the run since this log was opened: from now, in microseconds
        (as a new log's ``base``), when that is above the last id here — a
        continuation after another server continued the run, whose ids
        were numbered from its own, later, opening."""
        now = time.time_ns() // 1000
        if now <= self.last_id + 1:
            return
        if self.jumps and self.jumps[-1][1] == len(self.records):
            self.jumps.pop()  # (nothing numbered since the last jump)
        self.jumps.append((now, len(self.records)))

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
        text = json_text(record)
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
