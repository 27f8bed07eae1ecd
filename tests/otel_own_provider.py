"""A workflow module that sets up OpenTelemetry itself (for the CLI's
--otel test): its spans go to a provider of its own, which prints their
names when the process ends."""

import atexit

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import stepgraph as sg

_spans = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(_spans))
trace.set_tracer_provider(_provider)
atexit.register(lambda: print("own spans:", sorted(s.name for s in _spans.get_finished_spans())))


@sg.executor(id="echo")
async def echo(text: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
    await ctx.yield_output(text)


def build() -> sg.Workflow:
    return sg.WorkflowBuilder(start=echo, name="own").build()
