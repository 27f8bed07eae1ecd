"""Runs as OpenTelemetry spans and metrics (``opentelemetry-api`` only).

A run is traced when the application has configured an OpenTelemetry SDK:
``opentelemetry.trace`` (or ``.metrics``) is then imported, and its tracer
provider records spans or a meter provider is set (metrics are recorded for
every run, sampled or not). Otherwise nothing here is imported or called —
an untraced run costs two dictionary lookups — and stepgraph never
configures a provider itself (``stepgraph run --otel`` and ``stepgraph
serve --otel`` do, for the command line).

Spans: ``run <workflow>`` → ``superstep <n>`` → ``executor <id>`` (one per
handler call attempt) → the agent layer's ``chat <model>`` and
``execute_tool <tool>`` (OpenTelemetry's GenAI conventions). A run's span
is a child of whatever span is current when it starts, so a sub-workflow's
run nests under its ``WorkflowExecutor``'s handler span; a resumed run
links to the span of the run it continues (kept in its checkpoints).

Metrics (``stepgraph.*``, seconds and bytes): run, superstep and handler
durations, messages delivered, checkpoint writes; model tokens as
``gen_ai.client.token.usage``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from .._core import SpanRecord, handler_attributes

__all__ = ["OtelTrace", "end_run", "start_run"]

_SCOPE = "stepgraph"


def _version() -> str:
    from .. import __version__  # (the package is imported by the time a run starts)

    return __version__


_instruments: dict[str, Any] = {}


def _api() -> tuple[Any, Any] | None:
    """``(opentelemetry.trace, opentelemetry.metrics)``, if the application
    imported either (it configured tracing or metrics); else ``None``,
    importing nothing."""
    if "opentelemetry.trace" not in sys.modules and "opentelemetry.metrics" not in sys.modules:
        return None
    from opentelemetry import metrics, trace

    return trace, metrics


def _measuring(metrics: Any) -> bool:
    """Whether a meter provider is set (not the API's stand-in)."""
    kind = type(metrics.get_meter_provider()).__name__
    return kind not in ("_ProxyMeterProvider", "NoOpMeterProvider")


def _instrument(metrics: Any, kind: str, name: str, unit: str, description: str) -> Any:
    """The instrument, made once per meter provider."""
    key = f"{id(metrics.get_meter_provider())}:{name}"
    made = _instruments.get(key)
    if made is None:
        meter = metrics.get_meter(_SCOPE, _version())
        make = meter.create_histogram if kind == "histogram" else meter.create_counter
        made = _instruments[key] = make(name, unit=unit, description=description)
    return made


class _Span:
    """A span; ``current``: made the current span (until it ends);
    ``histogram``: where its duration is recorded."""

    __slots__ = (
        "_api",
        "_metrics",
        "_started",
        "_token",
        "attributes",
        "ended",
        "span",
    )

    def __init__(self, api: Any, span: Any, current: bool, histogram: Any = None) -> None:
        self._api = api
        self.span = span
        self._token = None
        if current:
            from opentelemetry import context

            self._token = context.attach(api.set_span_in_context(span))
        self._started = time.perf_counter()
        self._metrics = histogram  # its duration goes there when it ends
        self.attributes: dict[str, Any] = {}
        self.ended: Any = None  # called with the attributes when it ends

    def set(self, key: str, value: Any) -> None:
        self.span.set_attribute(key, value)
        self.attributes[key] = value

    def fail(self, error: BaseException) -> None:
        self.span.record_exception(error)
        self.span.set_status(
            self._api.Status(self._api.StatusCode.ERROR, f"{type(error).__name__}: {error}")
        )

    def end(self, outcome: str = "ok") -> None:
        self.span.set_attribute("stepgraph.outcome", outcome)
        if self._token is not None:
            from opentelemetry import context

            context.detach(self._token)
            self._token = None
        self.span.end()
        if self.ended is not None:
            self.ended(self.attributes)
        if self._metrics is not None:
            elapsed = time.perf_counter() - self._started
            labels = {k: v for k, v in self.attributes.items() if k in _LABELS}
            labels["stepgraph.outcome"] = outcome
            self._metrics.record(elapsed, labels)


# Attributes that become metric labels (few values each).
_LABELS = frozenset({"stepgraph.workflow", "stepgraph.executor.id"})


class OtelTrace:
    """A traced run: its span, the current superstep's, and the metrics."""

    def __init__(self, api: Any, metrics: Any, tracer: Any, run_span: _Span, workflow: str) -> None:
        self.api = api
        self.metrics = metrics
        self.tracer = tracer
        self.run = run_span
        self.workflow = workflow
        self._superstep: Any = None  # the open superstep span (its context)
        self._durations = {
            name: _instrument(metrics, "histogram", f"stepgraph.{name}.duration", "s",
                              f"duration of a {name.replace('_', ' ')}")
            for name in ("run", "superstep", "executor")
        }  # fmt: skip
        self._messages = _instrument(
            metrics, "counter", "stepgraph.messages", "{message}", "messages delivered to handlers"
        )

    def link(self) -> dict[str, str]:
        """The run span's ids, for the checkpoints (a resume links to them)."""
        context = self.run.span.get_span_context()
        return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}

    def _child(self, name: str, parent: Any, attributes: dict[str, Any]) -> Any:
        context = self.api.set_span_in_context(parent) if parent is not None else None
        return self.tracer.start_span(name, context=context, attributes=attributes)

    def superstep(self, number: int, executors: tuple[str, ...]) -> _Span:
        attributes = {"stepgraph.superstep": number, "stepgraph.executors": list(executors)}
        span = self._child(f"superstep {number}", self.run.span, attributes)
        self._superstep = span
        made = _Span(self.api, span, False, self._durations["superstep"])
        made.attributes["stepgraph.workflow"] = self.workflow
        return made

    def handler(
        self, executor_id: str, superstep: int, message: Any, attempt: int, item: int | None = None
    ) -> _Span:
        attributes = handler_attributes(executor_id, superstep, message, attempt, item)
        span = self._child(f"executor {executor_id}", self._superstep, attributes)
        self._messages.add(1, {"stepgraph.workflow": self.workflow})
        made = _Span(self.api, span, True, self._durations["executor"])
        made.attributes.update(attributes)
        made.attributes["stepgraph.workflow"] = self.workflow
        return made

    def operation(self, name: str, attributes: dict[str, Any]) -> _Span:
        span = self.tracer.start_span(name, attributes=attributes)  # (under the current span)
        made = _Span(self.api, span, True)
        made.attributes.update(attributes)
        made.ended = self._counted
        return made

    def _counted(self, attributes: dict[str, Any]) -> None:
        """A finished model call's tokens, as the GenAI token usage metric."""
        if "gen_ai.usage.input_tokens" in attributes:
            self.tokens(
                str(attributes.get("gen_ai.request.model", "")),
                str(attributes.get("gen_ai.agent.name", "")),
                int(attributes["gen_ai.usage.input_tokens"]),
                int(attributes.get("gen_ai.usage.output_tokens", 0)),
            )

    def replay(self, records: list[SpanRecord], superstep: int) -> None:
        """Spans an actor recorded, as spans of this trace under the superstep."""
        made: list[Any] = []
        for name, parent, start, end, attributes, error in records:
            above = made[parent] if parent >= 0 else self._superstep
            context = self.api.set_span_in_context(above) if above is not None else None
            span = self.tracer.start_span(
                name, context=context, attributes=attributes, start_time=start
            )
            if error is not None:
                span.set_status(self.api.Status(self.api.StatusCode.ERROR, error))
                kind, _, message = error.partition(": ")  # (as the actor wrote it down)
                span.add_event("exception", {"exception.type": kind, "exception.message": message})
            span.end(end_time=end or None)
            made.append(span)
            self._counted(attributes)
            if name.startswith("executor "):
                labels = {
                    "stepgraph.workflow": self.workflow,
                    "stepgraph.executor.id": attributes.get("stepgraph.executor.id", ""),
                    "stepgraph.outcome": attributes.get("stepgraph.outcome", "ok"),
                }
                if end:
                    self._durations["executor"].record((end - start) / 1e9, labels)
                self._messages.add(1, {"stepgraph.workflow": self.workflow})

    def checkpoint_written(self, seconds: float, size: int, count: int) -> None:
        labels = {"stepgraph.workflow": self.workflow}
        _instrument(self.metrics, "histogram", "stepgraph.checkpoint.write.duration", "s",
                    "time to store a batch of checkpoints").record(seconds, labels)  # fmt: skip
        _instrument(self.metrics, "counter", "stepgraph.checkpoint.bytes", "By",
                    "bytes of new values stored with checkpoints").add(size, labels)  # fmt: skip
        _instrument(self.metrics, "counter", "stepgraph.checkpoints", "{checkpoint}",
                    "checkpoints stored").add(count, labels)  # fmt: skip

    def tokens(self, model: str, agent: str, input_tokens: int, output_tokens: int) -> None:
        usage = _instrument(self.metrics, "histogram", "gen_ai.client.token.usage", "{token}",
                            "tokens used by model calls")  # fmt: skip
        labels = {"gen_ai.operation.name": "chat", "gen_ai.request.model": model,
                  "stepgraph.executor.id": agent}  # fmt: skip
        for kind, count in (("input", input_tokens), ("output", output_tokens)):
            usage.record(count, {**labels, "gen_ai.token.type": kind})

    def finish(self, status: str, supersteps: int, error: BaseException | None) -> None:
        self.run.set("stepgraph.status", status)
        self.run.set("stepgraph.supersteps", supersteps)
        if error is not None:
            self.run.fail(error)
        self.run.end(status)  # (the run's status: "failed" when it failed)


def start_run(workflow: str, run_id: str, resumed_from: str | None, link: Any) -> OtelTrace | None:
    """The run's trace, or ``None`` when tracing is off (see the module doc)."""
    found = _api()
    if found is None:
        return None
    api, metrics = found
    tracer = api.get_tracer(_SCOPE, _version())
    attributes: dict[str, Any] = {"stepgraph.workflow": workflow, "stepgraph.run.id": run_id}
    links = []
    if resumed_from is not None:
        attributes["stepgraph.resumed_from"] = resumed_from
    if isinstance(link, dict):  # (from its checkpoint, or kept in memory with the waiting run)
        try:
            context = api.SpanContext(
                int(link["trace_id"], 16), int(link["span_id"], 16), is_remote=True,
                trace_flags=api.TraceFlags(api.TraceFlags.SAMPLED),
            )  # fmt: skip
            links.append(api.Link(context, {"stepgraph.link": "continues"}))
        except (KeyError, TypeError, ValueError):
            pass  # (a checkpoint's trace ids are for display, never required)
    span = tracer.start_span(f"run {workflow}", attributes=attributes, links=links)
    if not span.is_recording() and not _measuring(metrics):
        return None  # nothing records spans (or samples this run) and no metrics: off
    duration = _instrument(metrics, "histogram", "stepgraph.run.duration", "s", "duration of a run")
    run_span = _Span(api, span, True, duration)
    run_span.attributes["stepgraph.workflow"] = workflow
    return OtelTrace(api, metrics, tracer, run_span, workflow)


def end_run(
    trace: OtelTrace | None, supersteps: int, status: str | None, error: BaseException | None
) -> None:
    """End a traced run's span (``trace`` ``None``: not traced): how it
    ended — its status, or the error that stopped it — after how many
    supersteps."""
    if trace is None:
        return
    if error is None:
        trace.finish(status or "idle", supersteps, None)
        return
    cancelled = isinstance(error, asyncio.CancelledError | KeyboardInterrupt)
    trace.finish("cancelled" if cancelled else "failed", supersteps, None if cancelled else error)
