"""Tracing hooks: what the kernel tells a tracer, when one is on.

``RunScope.trace`` is ``None`` unless the run is traced (``stepgraph._otel``
decides, per run), so an untraced run pays one ``is None`` test per
superstep and per handler call. A traced one calls:

- ``superstep(number, executors)`` when a superstep starts, ending the span
  it returns at the barrier;
- ``handler(executor_id, superstep, message, attempt)`` around each handler
  call attempt — the span it returns is current while the handler runs, so
  what the handler does (an agent's model calls, a sub-workflow's run)
  nests under it — then ``fail(error)`` or ``end(outcome)``;
- ``operation(name, attributes)`` for work inside a handler (the agent
  layer's model and tool calls), a span under the handler's.

:class:`SpanRecorder` is a tracer that only writes down what it was told: a
Ray actor traces with it and sends the records back with the call's result,
and the driver turns them into spans of its trace (:meth:`Trace.replay`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Awaitable
from typing import Any, Protocol, TypeVar

__all__ = [
    "RunTrace",
    "SpanRecord",
    "SpanRecorder",
    "Trace",
    "TraceSpan",
    "end_span",
    "handler_attributes",
    "within",
]

T = TypeVar("T")


class TraceSpan(Protocol):
    def set(self, key: str, value: Any) -> None: ...

    def fail(self, error: BaseException) -> None: ...

    def end(self, outcome: str = "ok") -> None: ...


class Trace(Protocol):
    """What handlers' code paths call (in this process or in an actor)."""

    def handler(
        self, executor_id: str, superstep: int, message: Any, attempt: int, item: int | None = None
    ) -> TraceSpan: ...

    def operation(self, name: str, attributes: dict[str, Any]) -> TraceSpan: ...


class RunTrace(Trace, Protocol):
    """A run's trace on the driver: also its supersteps, and the spans an
    actor recorded."""

    def superstep(self, number: int, executors: tuple[str, ...]) -> TraceSpan: ...

    def replay(self, records: list[SpanRecord], superstep: int) -> None: ...


# (name, parent index or -1, start ns, end ns, attributes, error text or None)
SpanRecord = tuple[str, int, int, int, dict[str, Any], str | None]


class _Recorded:
    __slots__ = ("index", "recorder", "token")

    def __init__(self, recorder: SpanRecorder, index: int) -> None:
        self.recorder = recorder
        self.index = index
        self.token: contextvars.Token[tuple[SpanRecorder, int] | None] | None = None

    def set(self, key: str, value: Any) -> None:
        self.recorder.records[self.index][4][key] = value

    def fail(self, error: BaseException) -> None:
        name, parent, start, end, attributes, _ = self.recorder.records[self.index]
        text = f"{type(error).__name__}: {error}"
        self.recorder.records[self.index] = (name, parent, start, end, attributes, text)

    def end(self, outcome: str = "ok") -> None:
        recorder = self.recorder
        name, parent, start, _, attributes, error = recorder.records[self.index]
        attributes["stepgraph.outcome"] = outcome
        recorder.records[self.index] = (name, parent, start, time.time_ns(), attributes, error)
        if self.token is not None:
            token, self.token = self.token, None
            with contextlib.suppress(ValueError):  # (ended in another context)
                _RECORDING.reset(token)


# The handler span open in the running task (and the tasks it starts): the
# parent of what starts there. Per task, because a map's items and
# colocated executors run at once in one actor.
_RECORDING: contextvars.ContextVar[tuple[SpanRecorder, int] | None] = contextvars.ContextVar(
    "stepgraph_recording", default=None
)


def handler_attributes(
    executor_id: str, superstep: int, message: Any, attempt: int, item: int | None
) -> dict[str, Any]:
    """A handler call's span attributes (a map's worker: with its item)."""
    attributes = {
        "stepgraph.executor.id": executor_id,
        "stepgraph.superstep": superstep,
        "stepgraph.message.type": type(message).__name__,
        "stepgraph.attempt": attempt,
    }
    if item is not None:
        attributes["stepgraph.map.item"] = item
    return attributes


class SpanRecorder:
    """Writes spans down instead of sending them (see the module doc); a
    handler span is the parent of what starts in its task before it ends."""

    def __init__(self) -> None:
        self.records: list[SpanRecord] = []

    def _start(self, name: str, attributes: dict[str, Any]) -> _Recorded:
        open_ = _RECORDING.get()
        parent = open_[1] if open_ is not None and open_[0] is self else -1
        self.records.append((name, parent, time.time_ns(), 0, attributes, None))
        return _Recorded(self, len(self.records) - 1)

    def handler(
        self, executor_id: str, superstep: int, message: Any, attempt: int, item: int | None = None
    ) -> TraceSpan:
        attributes = handler_attributes(executor_id, superstep, message, attempt, item)
        span = self._start(f"executor {executor_id}", attributes)
        span.token = _RECORDING.set((self, span.index))
        return span

    def operation(self, name: str, attributes: dict[str, Any]) -> TraceSpan:
        return self._start(name, dict(attributes))

    def take(self) -> list[SpanRecord]:
        records, self.records = self.records, []
        return records


def end_span(span: TraceSpan, error: BaseException | None = None) -> None:
    """End a span by how its work ended: done, stopped (a cancellation is
    not an error) or failed (recorded on the span)."""
    if error is None:
        span.end()
    elif isinstance(error, asyncio.CancelledError):
        span.end("cancelled")
    else:
        span.fail(error)
        span.end("error")


async def within(span: TraceSpan | None, call: Awaitable[T]) -> T:
    """Await ``call`` inside ``span`` (``None``: not traced), then end it."""
    if span is None:
        return await call
    try:
        result = await call
    except BaseException as exc:
        end_span(span, exc)
        raise
    end_span(span)
    return result
