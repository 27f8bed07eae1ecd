"""``stepgraph run --otel``: an OpenTelemetry SDK exporting over OTLP/HTTP,
set up from the standard environment variables (``OTEL_EXPORTER_OTLP_ENDPOINT``
— default http://localhost:4318 —, ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_EXPORTER_OTLP_HEADERS``, ...)."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["HINT", "export_from_env"]

HINT = (
    "--otel needs the OpenTelemetry SDK and its OTLP exporter: pip install 'stepgraph[otel]' "
    "opentelemetry-sdk opentelemetry-exporter-otlp-proto-http"
)


def export_from_env() -> Callable[[], None]:
    """Install the SDK's tracer and meter providers, exporting over OTLP;
    the function that flushes and stops them. ``ImportError`` (with
    :data:`HINT`) when the SDK or the exporter is missing."""
    try:
        from opentelemetry import metrics, trace
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise ImportError(f"{HINT} ({exc})") from None
    resource = Resource.create()  # (from OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES)
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "stepgraph"}))
    tracing = TracerProvider(resource=resource)
    tracing.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(tracing)
    measuring = MeterProvider(
        resource=resource, metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())]
    )
    metrics.set_meter_provider(measuring)

    def stop() -> None:
        tracing.shutdown()  # (flushes what is batched)
        measuring.shutdown()

    return stop
