"""``stepgraph run --otel`` and ``stepgraph serve --otel``: an OpenTelemetry
SDK exporting over OTLP/HTTP, set up from the standard environment variables
(``OTEL_EXPORTER_OTLP_ENDPOINT`` — default http://localhost:4318 —,
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_EXPORTER_OTLP_HEADERS``, ...)."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["HINT", "export_from_env"]

_TIMEOUT = 3  # seconds the exporters may take (each export, and the last flush in all)

HINT = (
    "--otel needs the OpenTelemetry SDK and its OTLP exporter: pip install 'stepgraph[otel]' "
    "opentelemetry-sdk opentelemetry-exporter-otlp-proto-http"
)


def export_from_env() -> Callable[[], None]:
    """Install the SDK's tracer and meter providers, exporting over OTLP;
    the function that flushes and stops them (called once, when the command
    ends). ``ImportError`` (with :data:`HINT`) when the SDK or the exporter
    is missing.

    Traces that cannot be exported are said once, on standard error, in one
    line: when the first export fails — a server runs for days, and should
    not wait until it stops to say so — or when the last flush does."""
    try:
        from opentelemetry import metrics, trace
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )
    except ImportError as exc:
        raise ImportError(f"{HINT} ({exc})") from None
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        # (OpenTelemetry keeps the first provider set and only logs a
        # refusal of a second: --otel would export nothing, unsaid)
        print(
            "warning: --otel left alone: the workflow's module set up OpenTelemetry's tracer "
            "provider itself, which receives the run's spans",
            file=sys.stderr,
        )
        return lambda: None
    resource = Resource.create()  # (from OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES)
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "stepgraph"}))

    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318")
    said = threading.Lock()  # (held once said: the exporter's thread and the flush may both fail)

    def warn() -> None:
        if said.acquire(blocking=False):
            print(f"warning: traces could not be exported to {endpoint}", file=sys.stderr)

    # An endpoint that is down costs the exit a few seconds at most, and says
    # so in one line (the exporters' own retry chatter is kept quiet).
    class Watched(SpanExporter):  # (says so when an export fails)
        def __init__(self) -> None:
            self.inner = OTLPSpanExporter(timeout=_TIMEOUT)

        def export(self, spans: Any) -> SpanExportResult:
            result = self.inner.export(spans)
            if result is not SpanExportResult.SUCCESS:
                warn()
            return result

        def shutdown(self) -> None:
            self.inner.shutdown()  # type: ignore[no-untyped-call]

    exporter = Watched()
    tracing = TracerProvider(resource=resource)
    tracing.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(tracing)
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(timeout=_TIMEOUT), export_timeout_millis=_TIMEOUT * 1000
    )
    # stop() shuts it down, within the deadline; the SDK's own shutdown at
    # exit would find a shutdown still waiting on a silent endpoint (its
    # thread is left behind at the deadline) and log "shutdown can only be
    # called once" as the command ends.
    measuring = MeterProvider(resource=resource, metric_readers=[reader], shutdown_on_exit=False)
    metrics.set_meter_provider(measuring)
    quiet = logging.getLogger("opentelemetry.exporter")
    quiet.setLevel(logging.CRITICAL)

    def stop() -> None:
        # Traces and metrics flushed side by side: a silent endpoint costs
        # the exit _TIMEOUT seconds in all, not once for each.
        deadline = time.monotonic() + _TIMEOUT
        metrics_done = threading.Thread(
            target=lambda: measuring.shutdown(timeout_millis=_TIMEOUT * 1000),
            name="stepgraph-otel-metrics",
            daemon=True,  # (one still waiting at the deadline does not hold the exit)
        )
        metrics_done.start()
        sent = tracing.force_flush(int(_TIMEOUT * 1000))
        tracing.shutdown()
        metrics_done.join(max(0.0, deadline - time.monotonic()))
        if not sent:
            warn()

    return stop
