"""What a server keeps of a run's events: :class:`RunLog`, numbered JSON
records a stream that reconnects with ``Last-Event-ID`` resumes from, and
what the run yielded that its store may not hold yet.

A log keeps at most ``max_events`` records and ``max_bytes`` of them (the
newest always): past that the oldest are dropped, however long the run goes
on -- an agent streaming its deltas for hours, a loop that never ends. What
was dropped is counted (``dropped``), and a stream that asks for events
that are gone hears how many (:meth:`RunLog.missed`) before the rest.

Of what the run yielded it keeps the newest outputs, ``max_outputs`` and
``max_output_bytes`` of them (always the newest), and every one the store
may not hold yet (with ``async`` durability a checkpoint is written a few
milliseconds after its superstep): those the store holds are read from it,
so a run yielding large outputs for ever holds no more than that either.
What it let go is counted (``outputs_count``, ``outputs_dropped``)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .._cli._render import event_record
from .._core import Event, RequestInfoEvent, RunStatus, lone_surrogate_at

__all__ = [
    "KEEP_RUN_BYTES",
    "KEEP_RUN_EVENTS",
    "KEEP_RUN_OUTPUTS",
    "KEEP_RUN_OUTPUT_BYTES",
    "RunLog",
    "json_text",
]

# What one run's log keeps at most, by default: its newest events, this many
# and this many bytes of them (the oldest are dropped past either).
KEEP_RUN_EVENTS = 100_000
KEEP_RUN_BYTES = 16 << 20
# Of its outputs, at most (beyond those the store may not hold yet): the
# newest, this many and this many bytes of them (as JSON).
KEEP_RUN_OUTPUTS = 1000
KEEP_RUN_OUTPUT_BYTES = 16 << 20


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
    the run jumps to the time it began (``renumber``), for the same reason.

    Records are indexed in the order they came, from 0, dropped ones too:
    ``records[i]`` is the record of index ``i + _offset``, and those below
    ``dropped`` are gone (an empty string holds their place until the list
    is compacted: dropping costs no copy per event)."""

    run_id: str
    workflow: str
    records: list[str] = field(default_factory=list)
    # Where the numbering jumped (see ``renumber``): (the id, the index of
    # its record) at each jump, in order; the records between go one apart.
    jumps: list[tuple[int, int]] = field(default_factory=list)
    max_events: int = KEEP_RUN_EVENTS
    max_bytes: int = KEEP_RUN_BYTES
    dropped: int = 0  # how many of the oldest records were dropped (see above)
    _offset: int = 0  # the index of ``records[0]``
    max_outputs: int = KEEP_RUN_OUTPUTS
    max_output_bytes: int = KEEP_RUN_OUTPUT_BYTES
    # The newest outputs (superstep, value, bytes as JSON), oldest first: see
    # the module doc; the last ``pending`` of them were yielded by the
    # continuation going on (or the last one) and may not be stored yet.
    kept: deque[tuple[int | None, Any, int]] = field(default_factory=deque)
    pending: int = 0
    outputs_count: int = 0  # how many outputs this log was given, let go ones too
    output_bytes: int = 0  # bytes of ``kept``
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
    # checkpoint it went on from (None: a new run), the run's latest
    # checkpoint then (a replay's first checkpoints are not its latest), and
    # the requests it answers. Its outputs of superstep k are stored with the
    # checkpoint of superstep k, so the ones past the latest stored checkpoint
    # are what the store does not hold yet (``fresh``).
    since: float = 0.0
    origin: str | None = None
    latest_before: str | None = None
    answering: frozenset[str] = frozenset()
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
    def held(self) -> int:
        """Bytes this log holds: its records and its outputs (as JSON)."""
        return self.size + self.output_bytes

    @property
    def outputs(self) -> list[Any]:
        """The outputs kept, oldest first (the newest ``outputs_count``)."""
        return [value for _, value, _ in self.kept]

    @property
    def outputs_dropped(self) -> int:
        """How many of the oldest outputs this log let go."""
        return self.outputs_count - len(self.kept)

    @property
    def fresh(self) -> list[tuple[int | None, Any]]:
        """The continuation's outputs the store may not hold yet, with their
        supersteps (a copy: the log lets go of those it learns are stored)."""
        at = len(self.kept) - self.pending
        return [(step, value) for step, value, _ in list(self.kept)[at:]]

    @property
    def over(self) -> bool:
        """Whether outputs the store may not hold yet keep it past its bound
        (then asking the store what it holds lets some go: ``stored_through``)."""
        return self.pending > 0 and (
            len(self.kept) > self.max_outputs or self.output_bytes > self.max_output_bytes
        )

    def begin(self, origin: str | None, latest_before: str | None, since: float) -> None:
        """A continuation begins: what earlier ones yielded is stored (or,
        the store down then, never will be: only the newest are kept)."""
        self.origin, self.latest_before, self.since = origin, latest_before, since
        self.let_go()

    def stored_through(self, superstep: int) -> None:
        """The store holds the continuation's checkpoint of ``superstep``:
        the outputs it yielded up to it are the store's to give."""
        first = len(self.kept) - self.pending
        for at in range(first, len(self.kept)):
            step = self.kept[at][0]
            if step is None or step > superstep:
                break
            self.pending -= 1
        self._trim()

    def let_go(self) -> None:
        """Keep only the newest outputs: those the store may not hold are
        not waited for any more (the continuation ended: it flushed them)."""
        self.pending = 0
        self._trim()

    def _trim(self) -> None:
        while len(self.kept) > max(self.pending, 1) and (
            len(self.kept) > self.max_outputs or self.output_bytes > self.max_output_bytes
        ):
            self.output_bytes -= self.kept.popleft()[2]

    @property
    def _count(self) -> int:
        """How many records were added, dropped ones too."""
        return self._offset + len(self.records)

    @property
    def last_id(self) -> int:
        first, index = self.jumps[-1] if self.jumps else (self.base + 1, 0)
        return first + self._count - index - 1

    def _stretches(self, event_id: int) -> list[tuple[int, int, int]]:
        """For each stretch of ids one apart: (its first id, the index of
        the first record after ``event_id`` in it, its end index)."""
        stretches = [(self.base + 1, 0), *self.jumps]
        out = []
        for k, (first, index) in enumerate(stretches):
            end = stretches[k + 1][1] if k + 1 < len(stretches) else self._count
            out.append((first - index, index + min(max(event_id - first + 1, 0), end - index), end))
        return out

    def after(self, event_id: int) -> list[tuple[int, str]]:
        """The records kept after ``event_id``, with their ids."""
        out: list[tuple[int, str]] = []
        for id_of_0, start, end in self._stretches(event_id):
            start = max(start, self.dropped)
            out += enumerate(
                self.records[start - self._offset : end - self._offset], id_of_0 + start
            )
        return out

    def missed(self, event_id: int) -> int:
        """How many records after ``event_id`` were dropped."""
        return sum(
            max(min(end, self.dropped) - start, 0) for _, start, end in self._stretches(event_id)
        )

    def renumber(self) -> None:
        """Number what comes next above every id any server may have given
        for the run since this log was opened: from now, in microseconds
        (as a new log's ``base``), when that is above the last id here — a
        continuation after another server continued the run, whose ids
        were numbered from its own, later, opening."""
        now = time.time_ns() // 1000
        if now <= self.last_id + 1:
            return
        if self.jumps and self.jumps[-1][1] == self._count:
            self.jumps.pop()  # (nothing numbered since the last jump)
        self.jumps.append((now, self._count))

    def add(self, event: Event) -> None:
        record = event_record(event)
        record["id"] = self.last_id + 1
        record["time"] = time.time()
        output = event.kind == "output" and not event.workflow_path
        if event.kind == "status" and not event.workflow_path:
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
        if output:  # (its size as its record's: JSON, and no second encoding)
            self.kept.append((event.superstep, record["data"], len(text)))
            self.pending += 1
            self.outputs_count += 1
            self.output_bytes += len(text)
            self._trim()
        self._drop_oldest()
        self.changed()

    def _drop_oldest(self) -> None:
        """Drop the oldest records past ``max_events`` or ``max_bytes``
        (never the newest); compact the list once half of it holds places."""
        while self._count - self.dropped > max(self.max_events, 1) or (
            self.size > self.max_bytes and self._count - self.dropped > 1
        ):
            at = self.dropped - self._offset
            self.size -= len(self.records[at])
            self.records[at] = ""
            self.dropped += 1
        if (gone := self.dropped - self._offset) > len(self.records) // 2:
            del self.records[:gone]
            self._offset = self.dropped

    def changed(self) -> None:
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()

    async def wait(self, seen: int) -> None:
        """Until there are events after id ``seen`` or the run stopped."""
        if self.last_id > seen or not self.live:
            return
        await self._wake.wait()
