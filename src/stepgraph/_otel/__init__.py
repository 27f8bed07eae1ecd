"""OpenTelemetry traces and metrics of runs (extra ``stepgraph[otel]``:
``opentelemetry-api`` only; the SDK and exporters are the application's).

- ``_tracing``: a run's spans and metrics, on only when the application has
  configured OpenTelemetry;
- ``_setup``: ``stepgraph run --otel`` and ``stepgraph serve --otel`` — an
  SDK set up from the standard ``OTEL_*`` environment variables.
"""

from ._tracing import OtelTrace, end_run, start_run

__all__ = ["OtelTrace", "end_run", "start_run"]
