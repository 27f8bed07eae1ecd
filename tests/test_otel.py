"""OpenTelemetry spans and metrics of runs, read with the SDK's in-memory
exporter and metric reader (installed for this module, taken away after it:
the rest of the suite runs untraced)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from opentelemetry.util._once import Once

import stepgraph as sg
from tests import subflows
from tests.test_conformance import WORKER_PYTHONPATH

ROOT = Path(__file__).resolve().parent.parent


class Opened(SpanProcessor):
    """Counts spans started and not ended."""

    def __init__(self) -> None:
        self.open: set[int] = set()

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.open.add(span.context.span_id)

    def on_end(self, span: ReadableSpan) -> None:
        self.open.discard(span.context.span_id)


class Traces:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.opened = Opened()
        self.reader = InMemoryMetricReader()

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def by_name(self) -> dict[str, list[ReadableSpan]]:
        out: dict[str, list[ReadableSpan]] = {}
        for span in self.spans():
            out.setdefault(span.name, []).append(span)
        return out

    def parent_name(self, span: ReadableSpan) -> str | None:
        if span.parent is None:
            return None
        names = {s.context.span_id: s.name for s in self.spans()}
        return names.get(span.parent.span_id)

    def metric_points(self) -> dict[str, list[Any]]:
        data = self.reader.get_metrics_data()
        out: dict[str, list[Any]] = {}
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    out.setdefault(metric.name, []).extend(metric.data.data_points)
        return out


def _reset_globals() -> None:
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    metrics._internal._METER_PROVIDER = None  # type: ignore[attr-defined]
    metrics._internal._METER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def installed() -> Iterator[Traces]:
    traces = Traces()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(traces.exporter))
    provider.add_span_processor(traces.opened)
    _reset_globals()
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[traces.reader]))
    yield traces
    provider.shutdown()
    _reset_globals()  # (the suite goes on untraced)


@pytest.fixture
def traces(installed: Traces) -> Traces:
    installed.exporter.clear()
    return installed


@sg.executor(id="split")
async def split(n: int, ctx: sg.WorkflowContext[int]) -> None:
    await ctx.send_message(n)


class Square(sg.Executor):
    @sg.handler
    async def on(self, n: int, ctx: sg.WorkflowContext[int]) -> None:
        await ctx.send_message(n * n)


@sg.executor(id="total")
async def total(values: list[int], ctx: sg.WorkflowContext[sg.Never, int]) -> None:
    await ctx.yield_output(sum(values))


def fan(width: int = 3) -> sg.Workflow:
    workers = [Square(f"w{i}") for i in range(width)]
    return (
        sg.WorkflowBuilder(start=split, name="fan")
        .add_fan_out(split, workers)
        .add_fan_in(workers, total)
        .build()
    )


async def test_the_span_tree_of_a_fan_out_fan_in_run(traces: Traces) -> None:
    result = await fan().run(3)
    assert result.outputs == [27]
    spans = traces.by_name()
    [run] = spans["run fan"]
    assert run.parent is None and run.status.status_code is StatusCode.UNSET
    assert run.attributes["stepgraph.run.id"] == result.run_id
    assert run.attributes["stepgraph.status"] == "idle"
    assert run.attributes["stepgraph.supersteps"] == 3
    for n in (1, 2, 3):
        [step] = spans[f"superstep {n}"]
        assert traces.parent_name(step) == "run fan"
        assert step.attributes["stepgraph.superstep"] == n
    assert list(spans["superstep 2"][0].attributes["stepgraph.executors"]) == ["w0", "w1", "w2"]
    for name in ("executor w0", "executor w1", "executor w2"):
        [call] = spans[name]
        assert traces.parent_name(call) == "superstep 2"
        assert call.attributes["stepgraph.message.type"] == "int"
        assert call.attributes["stepgraph.attempt"] == 1
        assert call.attributes["stepgraph.outcome"] == "ok"
    assert traces.parent_name(spans["executor total"][0]) == "superstep 3"
    # All three concurrent calls overlap in time, inside their superstep.
    calls = [spans[f"executor w{i}"][0] for i in range(3)]
    step2 = spans["superstep 2"][0]
    assert all(step2.start_time <= c.start_time and c.end_time <= step2.end_time for c in calls)
    points = traces.metric_points()
    for name in ("stepgraph.run.duration", "stepgraph.superstep.duration",
                 "stepgraph.executor.duration", "stepgraph.messages"):  # fmt: skip
        assert points.get(name), name
    by_executor = {
        p.attributes.get("stepgraph.executor.id") for p in points["stepgraph.executor.duration"]
    }
    assert {"w0", "w1", "w2", "split", "total"} <= by_executor


async def test_a_failed_handler_is_an_error_span(traces: Traces) -> None:
    @sg.executor(id="boom")
    async def boom(n: int) -> None:
        raise ValueError(f"boom {n}")

    with pytest.raises(sg.WorkflowRunError):
        await sg.WorkflowBuilder(start=boom, name="failing").build().run(7)
    spans = traces.by_name()
    [call] = spans["executor boom"]
    assert call.status.status_code is StatusCode.ERROR
    assert "ValueError: boom 7" in (call.status.description or "")
    [event] = [e for e in call.events if e.name == "exception"]
    assert event.attributes["exception.type"] == "ValueError"
    [run] = spans["run failing"]
    assert run.status.status_code is StatusCode.ERROR
    assert run.attributes["stepgraph.status"] == "failed"
    assert run.attributes["stepgraph.outcome"] == "failed"  # the run's status, as documented


async def test_a_retried_handler_has_a_span_per_attempt(traces: Traces) -> None:
    attempts = 0

    @sg.executor(id="flaky", retry=sg.RetryPolicy(attempts=3))
    async def flaky(n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionError(f"attempt {attempts}")
        await ctx.yield_output(attempts)

    await sg.WorkflowBuilder(start=flaky, name="retrying").build().run(1)
    calls = sorted(traces.by_name()["executor flaky"], key=lambda s: s.start_time)
    assert [c.attributes["stepgraph.attempt"] for c in calls] == [1, 2, 3]
    assert [c.status.status_code for c in calls] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]


async def test_sub_workflows_nest_three_levels_deep(traces: Traces) -> None:
    result = await subflows.three_levels().run("hello")
    assert result.pending_requests
    spans = traces.by_name()
    # outer run > superstep > executor mid > run mid > superstep > executor inner > run inner
    chain = [
        "run inner",
        "executor inner",
        "superstep 1",
        "run mid",
        "executor mid",
        "superstep 1",
        "run outer",
    ]
    at = spans["run inner"][0]
    names = [at.name]
    while at.parent is not None:
        at = next(s for s in traces.spans() if s.context.span_id == at.parent.span_id)
        names.append(at.name)
    assert names == chain
    assert len({s.context.trace_id for s in traces.spans()}) == 1


async def test_an_agent_run_has_genai_spans_with_the_servers_token_counts(traces: Traces) -> None:
    from stepgraph.testing import FakeOpenAIServer, FakeReply

    @sg.tool
    def lookup(city: str) -> str:
        """Weather.

        Args:
            city: The city.
        """
        return f"sunny in {city}"

    replies = [
        FakeReply.tool_calls(
            [sg.ToolCall("c1", "lookup", '{"city": "Oslo"}')], usage=sg.Usage(30, 7)
        ),
        FakeReply.text("It is sunny.", usage=sg.Usage(52, 5)),
    ]
    with FakeOpenAIServer(replies) as server:
        model = sg.OpenAIChatModel("fake-4o", base_url=server.base_url)
        agent = sg.Agent("weather", model=model, tools=[lookup])
        result = await sg.WorkflowBuilder(start=agent, name="agentic").build().run("Oslo?")
        await model.aclose()
    assert str(result.outputs[0]) == "It is sunny."
    spans = traces.by_name()
    chats = sorted(spans["chat fake-4o"], key=lambda s: s.start_time)
    assert [
        (c.attributes["gen_ai.usage.input_tokens"], c.attributes["gen_ai.usage.output_tokens"])
        for c in chats
    ] == [(30, 7), (52, 5)]
    assert all(c.attributes["gen_ai.operation.name"] == "chat" for c in chats)
    assert all(c.attributes["gen_ai.request.model"] == "fake-4o" for c in chats)
    assert all(traces.parent_name(c) == "executor weather" for c in chats)
    [tool] = spans["execute_tool lookup"]
    assert tool.attributes["gen_ai.tool.name"] == "lookup"
    assert tool.attributes["gen_ai.tool.call.id"].startswith("c1")
    assert traces.parent_name(tool) == "executor weather"
    tokens = traces.metric_points()["gen_ai.client.token.usage"]
    summed = {}
    for point in tokens:
        kind = point.attributes["gen_ai.token.type"]
        summed[kind] = summed.get(kind, 0) + point.sum
    assert summed["input"] >= 82 and summed["output"] >= 12


async def test_cancelling_a_run_leaves_no_span_open(traces: Traces) -> None:
    @sg.executor(id="hang")
    async def hang(n: int) -> None:
        await asyncio.sleep(30)

    task = asyncio.create_task(sg.WorkflowBuilder(start=hang, name="hanging").build().run(1))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert traces.opened.open == set()
    spans = traces.by_name()
    [hang] = spans["executor hang"]
    assert hang.attributes["stepgraph.outcome"] == "cancelled"
    assert hang.status.status_code is StatusCode.UNSET  # (stopped, not failed)
    assert spans["superstep 1"][0].status.status_code is StatusCode.UNSET
    assert spans["run hanging"][0].attributes["stepgraph.status"] == "cancelled"


async def test_checkpoint_writes_are_measured(traces: Traces, tmp_path: Path) -> None:
    store = sg.SqliteCheckpointStore(tmp_path / "m.sqlite")
    await fan().run(2, checkpoints=store)
    store.close()
    points = traces.metric_points()
    assert points.get("stepgraph.checkpoint.write.duration")
    assert sum(p.value for p in points["stepgraph.checkpoints"]) >= 4


RESUME = textwrap.dedent(
    """
    import asyncio, json, sys
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    import stepgraph as sg
    from tests.test_requests import build

    async def main():
        store = sg.SqliteCheckpointStore(sys.argv[1])
        if sys.argv[2] == "start":
            result = await build(store).run(["resume me?"])
        else:
            latest = (await store.runs(limit=1))[0]
            ckpt = await store.load(latest.last_checkpoint)
            [request] = build(store).codec.requests_of(ckpt)
            result = await build(store).run(
                responses={request.request_id: True}, checkpoint=latest.last_checkpoint
            )
        store.close()
        [run] = [s for s in exporter.get_finished_spans() if s.name.startswith("run ")]
        print(json.dumps({
            "trace_id": f"{run.context.trace_id:032x}", "span_id": f"{run.context.span_id:016x}",
            "links": [[f"{l.context.trace_id:032x}", f"{l.context.span_id:016x}"] for l in run.links],
            "resumed_from": run.attributes.get("stepgraph.resumed_from"),
        }))

    asyncio.run(main())
    """
)


def test_a_resume_in_another_process_links_to_the_run_it_continues(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    path = str(tmp_path / "r.sqlite")

    def step(kind: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-c", RESUME, path, kind], capture_output=True, text=True,
            env=env, cwd=ROOT, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    first, second = step("start"), step("resume")
    assert second["trace_id"] != first["trace_id"]  # (a new trace, days later perhaps)
    assert second["links"] == [[first["trace_id"], first["span_id"]]]
    assert second["resumed_from"]


def test_untraced_runs_import_no_opentelemetry() -> None:
    code = (
        "import asyncio, sys\nimport stepgraph as sg\nfrom stepgraph import demo\n"
        "asyncio.run(demo.build().run('x'))\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


async def test_handler_calls_in_ray_actors_join_the_drivers_trace(traces: Traces) -> None:
    with sg.RayBackend(
        init_options={"num_cpus": 2, "runtime_env": {"env_vars": {"PYTHONPATH": WORKER_PYTHONPATH}}}
    ) as backend:
        result = await fan().run(4, backend=backend)
    assert result.outputs == [48]
    spans = traces.by_name()
    [run] = spans["run fan"]
    for name in ("executor w0", "executor w1", "executor w2", "executor split", "executor total"):
        [call] = spans[name]
        assert call.context.trace_id == run.context.trace_id
        assert traces.parent_name(call).startswith("superstep ")
        assert call.end_time > call.start_time
    step2 = spans["superstep 2"][0]
    assert all(traces.parent_name(spans[f"executor w{i}"][0]) == "superstep 2" for i in range(3))
    assert step2.start_time <= spans["executor w0"][0].start_time


class Received:
    """What an OTLP/HTTP receiver on loopback was sent (see ``otlp_receiver``)."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[bytes]] = {}
        self.endpoint = ""

    def spans(self) -> list[Any]:
        """The spans sent, decoded (protobuf ``Span``s)."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        found = []
        for body in self.bodies.get("/v1/traces", []):
            for resource_spans in ExportTraceServiceRequest.FromString(body).resource_spans:
                for scope in resource_spans.scope_spans:
                    found.extend(scope.spans)
        return found

    def services(self) -> set[str]:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        return {
            attribute.value.string_value
            for body in self.bodies.get("/v1/traces", [])
            for resource_spans in ExportTraceServiceRequest.FromString(body).resource_spans
            for attribute in resource_spans.resource.attributes
            if attribute.key == "service.name"
        }


def attributes(span: Any) -> dict[str, Any]:
    """A protobuf span's (or link's) attributes, as Python values."""
    return {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in span.attributes}


@contextlib.contextmanager
def otlp_receiver() -> Iterator[Received]:
    """A real OTLP/HTTP endpoint on loopback (``received.endpoint``), keeping
    what it is sent."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received = Received()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.bodies.setdefault(self.path, []).append(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    received.endpoint = f"http://127.0.0.1:{server.server_port}"
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()


def test_the_command_line_exports_over_otlp(tmp_path: Path) -> None:
    """``stepgraph run --otel`` sends its spans to the OTLP/HTTP endpoint in
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` (a receiver in this test)."""
    with otlp_receiver() as received:
        env = {
            **os.environ,
            "OTEL_EXPORTER_OTLP_ENDPOINT": received.endpoint,
            "OTEL_SERVICE_NAME": "review-service",
        }
        done = subprocess.run(
            [sys.executable, "-m", "stepgraph", "run", "stepgraph.demo:build", "--input",
             '"otel"', "--no-store", "--otel"],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr  # (the demo waits for its approval)
    names = {span.name for span in received.spans()}
    assert {"run review-pipeline", "superstep 1", "executor writer", "executor editor"} <= names
    assert received.services() == {"review-service"}
    assert received.bodies.get("/v1/metrics"), "no metrics were exported"


def test_otel_leaves_a_module_that_set_up_opentelemetry_itself_and_says_so() -> None:
    # (OpenTelemetry only logged that it refused --otel's provider: nothing
    # was exported over OTLP, unsaid)
    done = subprocess.run(
        [sys.executable, "-m", "stepgraph", "run", "tests.otel_own_provider:build", "--input",
         '"x"', "--no-store", "--otel"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "--otel left alone: the workflow's module set up OpenTelemetry" in done.stderr
    assert "Overriding" not in done.stderr
    assert "own spans: ['executor echo', 'run own', 'superstep 1']" in done.stdout


# (nothing is exported before the server stops: what the tests receive is
# what the flush at SIGTERM sent)
HELD_BACK = {"OTEL_BSP_SCHEDULE_DELAY": "600000", "OTEL_METRIC_EXPORT_INTERVAL": "600000"}


def test_serve_exports_the_runs_it_starts_and_continues_and_flushes_at_sigterm(
    tmp_path: Path,
) -> None:
    """``stepgraph serve --otel``: a run that completes, one whose request
    is answered through the API (its continuation a run span of a new trace
    linked to the run that asked), and one the SIGTERM stops — every span
    reaches the receiver, sent when the server stops."""
    from tests.serve.test_api import wait_for
    from tests.serve.test_cli_serve import served, stop

    with otlp_receiver() as received:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": received.endpoint,
            "OTEL_SERVICE_NAME": "served",
            **HELD_BACK,
        }
        store = f"sqlite:{tmp_path / 'runs.sqlite'}"
        targets = ("tests.serve.flows:slow", "tests.serve.flows:gate")
        with served(*targets, "--store", store, "--otel", env=env) as (process, url):
            with httpx.Client(base_url=url, timeout=20) as client:
                done = client.post("/api/workflows/slow/runs", json={"input": {"steps": 2}})
                done_id = done.json()["run_id"]
                assert wait_for(client, done_id, "idle")["outputs"] == ["done "]
                asked = client.post("/api/workflows/gate/runs", json={"input": "publish"})
                asked_id = asked.json()["run_id"]
                waiting = wait_for(client, asked_id, "idle_with_pending_requests")
                [request] = waiting["pending_requests"]
                answer = {"responses": {request["request_id"]: True}}
                answered = client.post(f"/api/runs/{asked_id}/responses", json=answer)
                assert answered.status_code == 202, answered.text
                assert wait_for(client, asked_id, "idle")["outputs"] == ["publish: yes"]
                going = client.post("/api/workflows/slow/runs", json={"input": {"steps": 500}})
                going_id = going.json()["run_id"]
                assert received.spans() == []  # (held back until the server stops)
            code, out, err = stop(process)
    assert code == 0, err
    assert f"stopped 1 run(s) at their last checkpoint: {going_id}" in out
    assert "Traceback" not in err and "warning" not in err, err
    spans = received.spans()
    runs: dict[str, list[Any]] = {}
    for span in spans:
        if span.name.startswith("run "):
            runs.setdefault(attributes(span)["stepgraph.run.id"], []).append(span)
    assert {run_id: [s.name for s in found] for run_id, found in runs.items()} == {
        done_id: ["run slow"],
        asked_id: ["run gate", "run gate"],
        going_id: ["run slow"],
    }
    [completed] = runs[done_id]
    assert attributes(completed)["stepgraph.outcome"] == "idle"
    assert attributes(completed)["stepgraph.supersteps"] == 2
    under = [s.name for s in spans if s.trace_id == completed.trace_id]
    assert sorted(under) == ["executor step", "executor step", "run slow", "superstep 1",
                             "superstep 2"]  # fmt: skip
    first, then = sorted(runs[asked_id], key=lambda s: s.start_time_unix_nano)
    assert attributes(first)["stepgraph.outcome"] == "idle_with_pending_requests"
    assert attributes(then)["stepgraph.outcome"] == "idle"
    assert then.trace_id != first.trace_id and not then.parent_span_id
    [link] = then.links
    assert (link.trace_id, link.span_id) == (first.trace_id, first.span_id)
    assert attributes(link) == {"stepgraph.link": "continues"}
    assert attributes(then)["stepgraph.resumed_from"]
    assert "executor gate" in [s.name for s in spans if s.trace_id == then.trace_id]
    [stopped] = runs[going_id]
    assert attributes(stopped)["stepgraph.outcome"] == "cancelled"
    assert received.services() == {"served"}
    assert received.bodies.get("/v1/metrics"), "no metrics were exported"


def test_serve_says_once_that_traces_cannot_be_exported_as_soon_as_they_cannot(
    tmp_path: Path,
) -> None:
    """An endpoint that is down: one warning line, when the first export
    fails (not only when the server stops), never a traceback; the runs go on."""
    import select
    import socket

    from tests.serve.test_api import wait_for
    from tests.serve.test_cli_serve import served, stop

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"  # (nothing listens there)
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"}
    store = f"sqlite:{tmp_path / 'runs.sqlite'}"
    with served("tests.serve.flows:slow", "--store", store, "--otel", env=env) as (process, url):
        with httpx.Client(base_url=url, timeout=20) as client:
            for _ in range(2):
                run_id = client.post("/api/workflows/slow/runs", json={"input": {"steps": 1}})
                wait_for(client, run_id.json()["run_id"], "idle")
            assert process.stderr is not None
            said = ""
            while not said.startswith("warning"):  # (after "creating checkpoint store ...")
                ready, _, _ = select.select([process.stderr], [], [], 20)
                assert ready, "nothing said while the server runs"
                said = process.stderr.readline()
            assert said == f"warning: traces could not be exported to {endpoint}\n", said
            run_id = client.post("/api/workflows/slow/runs", json={"input": {"steps": 1}})
            wait_for(client, run_id.json()["run_id"], "idle")  # (the server goes on)
        code, _, err = stop(process)
    assert code == 0, err
    assert "warning" not in err and "Traceback" not in err, err  # (said once: above)


def test_serve_leaves_a_module_that_set_up_opentelemetry_itself_and_says_so(
    tmp_path: Path,
) -> None:
    from tests.serve.test_api import wait_for
    from tests.serve.test_cli_serve import served, stop

    store = f"sqlite:{tmp_path / 'runs.sqlite'}"
    with served("tests.otel_own_provider:build", "--store", store, "--otel") as (process, url):
        with httpx.Client(base_url=url, timeout=20) as client:
            for _ in range(2):
                run_id = client.post("/api/workflows/own/runs", json={"input": "x"})
                wait_for(client, run_id.json()["run_id"], "idle")
        code, out, err = stop(process)
    assert code == 0, err
    assert err.count("--otel left alone: the workflow's module set up OpenTelemetry") == 1, err
    assert "Overriding" not in err
    assert "own spans: ['executor echo', 'executor echo', 'run own', 'run own'," in out, out


# ``stepgraph`` (the arguments after ``-c``) where OpenTelemetry's SDK and
# exporters are not installed: only the API is.
WITHOUT_SDK = textwrap.dedent(
    """
    import sys

    class NotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name.startswith(("opentelemetry.sdk", "opentelemetry.exporter")):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NotInstalled())
    from stepgraph._cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.parametrize("command", ["run", "serve"])
def test_otel_without_the_sdk_says_what_to_install_in_one_line(
    command: str, tmp_path: Path
) -> None:
    store = tmp_path / "runs.sqlite"
    args = {
        "run": ["run", "stepgraph.demo:build", "--input", '"x"', "--store", f"sqlite:{store}"],
        "serve": ["serve", "stepgraph.demo:build", "--store", f"sqlite:{store}", "--port", "0"],
    }[command]
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_SDK, *args, "--otel"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, (done.stdout, done.stderr)
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(
        "error: --otel needs the OpenTelemetry SDK and its OTLP exporter: pip install "
        "'stepgraph[otel]' opentelemetry-sdk opentelemetry-exporter-otlp-proto-http"
    ), line
    assert not store.exists()  # (refused before anything was made)


async def test_map_workers_have_a_span_each(traces: Traces) -> None:
    @sg.executor(id="words")
    async def words(text: str, ctx: sg.WorkflowContext[str]) -> None:
        for word in text.split():
            await ctx.send_message(word)

    class Upper(sg.Executor):
        @sg.handler
        async def on(self, word: str, ctx: sg.WorkflowContext[str]) -> None:
            await ctx.send_message(word.upper())

    @sg.executor(id="joined")
    async def joined(items: list[str], ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.yield_output(" ".join(items))

    builder = sg.WorkflowBuilder(start=words, name="mapped")
    builder.add_map(words, Upper, id="upper", to=joined)
    result = await builder.build().run("a b c")
    assert result.outputs == ["A B C"]
    spans = traces.by_name()
    assert len(spans["executor upper"]) == 3
    assert all(traces.parent_name(s) == "superstep 2" for s in spans["executor upper"])
    assert sorted(s.attributes["stepgraph.map.item"] for s in spans["executor upper"]) == [0, 1, 2]


async def test_a_map_in_a_mapped_sub_workflow_nests_its_items_spans(traces: Traces) -> None:
    """An inner item's span sits (through the child's run and superstep
    spans) under its outer item's: each names its own map's item."""
    from tests.test_maps import collect, emit, pages

    builder = sg.WorkflowBuilder(start=emit, name="nested")
    await builder.add_map(emit, pages, id="docs", to=collect).build().run(3)
    by_id = {s.context.span_id: s for s in traces.spans()}

    def items_up(span: ReadableSpan | None) -> list[tuple[str, int]]:
        found = []
        while span is not None:
            if "stepgraph.map.item" in (span.attributes or {}):
                found.append((span.name, span.attributes["stepgraph.map.item"]))
            span = by_id.get(span.parent.span_id) if span.parent is not None else None
        return found

    chains = sorted(items_up(s) for s in traces.by_name()["executor pages"])
    assert chains == sorted(
        [("executor pages", j), ("executor docs", n)] for n in range(3) for j in range(2)
    )


METRICS_ONLY = textwrap.dedent(
    """
    import asyncio
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    from stepgraph import demo
    for _ in range(5):
        asyncio.run(demo.build().run("x"))
    names = {m.name: sum(p.count for p in m.data.data_points)
             for r in reader.get_metrics_data().resource_metrics
             for s in r.scope_metrics for m in s.metrics if m.name == "stepgraph.run.duration"}
    print(names["stepgraph.run.duration"])
    """
)


def test_metrics_are_recorded_without_a_tracer_provider() -> None:
    done = subprocess.run(
        [sys.executable, "-c", METRICS_ONLY], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "5"  # every run measured, none traced


def test_a_silent_endpoint_costs_the_exit_three_seconds_in_all() -> None:
    """An endpoint that accepts and never answers: the run's result stands,
    one warning line says the traces were not exported, and the exit waits
    for traces and metrics side by side (it waited 3 s for each: 6 s)."""
    import socket
    import time

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(50)
        command = [sys.executable, "-m", "stepgraph", "run", "examples.map_reduce:build",
                   "--input", '["a b"]', "--no-store"]  # fmt: skip
        env = {
            **os.environ,
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{silent.getsockname()[1]}",
        }
        timings = []
        for extra in ([], ["--otel"]):
            started = time.monotonic()
            done = subprocess.run(
                command + extra, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
            )
            timings.append(time.monotonic() - started)
            assert done.returncode == 0 and "output: a: 1" in done.stdout, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("warning: traces could not be exported")
    assert timings[1] - timings[0] < 5.0, timings  # (3 s, and the time to set the SDK up)


def test_metrics_still_waiting_at_the_deadline_add_nothing_to_the_exit() -> None:
    """The metrics' flush left waiting on a silent endpoint at the deadline
    is not shut down again as the process exits (the SDK's own handler
    then logged "shutdown can only be called once")."""
    import socket

    script = textwrap.dedent(
        """
        from opentelemetry import metrics
        from stepgraph._otel._setup import export_from_env

        stop = export_from_env()
        metrics.get_meter("test").create_counter("things").add(1)
        stop()
        """
    )
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(50)
        env = {
            **os.environ,
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{silent.getsockname()[1]}",
        }
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
        )  # fmt: skip
    assert done.returncode == 0 and done.stderr == "", done.stderr


@pytest.fixture(scope="module")
def ray_backend() -> Iterator[sg.RayBackend]:
    with sg.RayBackend(
        init_options={"num_cpus": 2, "runtime_env": {"env_vars": {"PYTHONPATH": WORKER_PYTHONPATH}}}
    ) as backend:
        yield backend


class Nap(sg.Executor):
    """A map worker that waits: the items of a superstep are all open at once."""

    @sg.handler
    async def on(self, word: str, ctx: sg.WorkflowContext[str]) -> None:
        await asyncio.sleep(0.01 * len(word))
        await ctx.send_message(word.upper())


@sg.executor(id="words")
async def words(text: str, ctx: sg.WorkflowContext[str]) -> None:
    for word in text.split():
        await ctx.send_message(word)


@sg.executor(id="joined")
async def joined(items: list[str], ctx: sg.WorkflowContext[sg.Never, str]) -> None:
    await ctx.yield_output(" ".join(items))


async def test_map_items_running_at_once_in_an_actor_are_siblings(
    traces: Traces, ray_backend: sg.RayBackend
) -> None:
    """Items (and colocated executors) run side by side in one actor: each
    is a child of the superstep, as locally — not of the item that happened
    to start before it."""
    flow = sg.WorkflowBuilder(start=words).add_map(words, Nap, id="naps", to=joined).build()
    for backend in (None, ray_backend):
        traces.exporter.clear()
        result = await flow.run("a bb ccc dddd", backend=backend)
        assert result.outputs == ["A BB CCC DDDD"]
        items = traces.by_name()["executor naps"]
        assert sorted(s.attributes["stepgraph.map.item"] for s in items) == [0, 1, 2, 3]
        assert {traces.parent_name(s) for s in items} == {"superstep 2"}, backend


@sg.executor(id="refuses")
async def refuses(n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
    raise KeyError(f"no {n}")


async def test_a_handler_failing_in_an_actor_records_its_exception_as_locally(
    traces: Traces, ray_backend: sg.RayBackend
) -> None:
    flow = sg.WorkflowBuilder(start=refuses, name="refusing").build()
    seen = []
    for backend in (None, ray_backend):
        traces.exporter.clear()
        with pytest.raises(sg.WorkflowRunError):
            await flow.run(3, backend=backend)
        [call] = traces.by_name()["executor refuses"]
        assert call.status.status_code is StatusCode.ERROR
        [event] = [e for e in call.events if e.name == "exception"]
        seen.append(
            (
                call.status.description,
                event.attributes["exception.type"],
                event.attributes["exception.message"],
            )
        )
    assert seen[0] == seen[1] == ("KeyError: 'no 3'", "KeyError", "'no 3'"), seen


class Approver(sg.Executor):
    @sg.handler
    async def ask(self, text: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.request_info(text, bool)

    @sg.response_handler
    async def answered(
        self, request: str, approved: bool, ctx: sg.WorkflowContext[sg.Never, str]
    ) -> None:
        await ctx.yield_output(f"{request}: {approved}")


async def test_an_answer_without_a_store_links_to_the_run_it_continues(traces: Traces) -> None:
    """``run(responses=...)`` on the workflow object, no checkpoints: the
    continuation's run span links to the run that asked, as a resume from a
    checkpoint does."""
    flow = sg.WorkflowBuilder(start=Approver("approver"), name="approving").build()
    first = await flow.run("ship it")
    [asked] = traces.by_name()["run approving"]
    done = await flow.run(responses={first.pending_requests[0].request_id: True})
    assert done.outputs == ["ship it: True"]
    [_, going_on] = traces.by_name()["run approving"]
    [link] = going_on.links
    assert link.attributes is not None and link.attributes["stepgraph.link"] == "continues"
    assert (link.context.trace_id, link.context.span_id) == (
        asked.context.trace_id,
        asked.context.span_id,
    )


class Victim(sg.Executor):
    """Writes its pid to ``path`` and waits (to be killed) the first time;
    answers the second."""

    def __init__(self) -> None:
        super().__init__("victim", retry=sg.RetryPolicy(attempts=2))

    @sg.handler
    async def on(self, path: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        done = Path(path + ".done")
        if not done.exists():
            done.touch()
            Path(path).write_text(str(os.getpid()))
            await asyncio.sleep(60)
        await ctx.yield_output("answered")


async def test_an_attempt_that_lost_its_actor_is_a_failed_span_and_the_retry_counts_on(
    traces: Traces, ray_backend: sg.RayBackend, tmp_path: Path
) -> None:
    """As locally a failed attempt has its error span and the next one
    ``stepgraph.attempt`` 2: the actor killed under the first attempt (no
    records come back from it) is an error span, the retry attempt 2."""
    import signal

    marker = tmp_path / "pid"

    async def kill_when_marked() -> None:
        while not (marker.exists() and marker.read_text()):
            await asyncio.sleep(0.05)
        os.kill(int(marker.read_text()), signal.SIGKILL)

    killer = asyncio.create_task(kill_when_marked())
    flow = sg.WorkflowBuilder(start=Victim(), name="victims").build()
    result = await asyncio.wait_for(flow.run(str(marker), backend=ray_backend), 120)
    await killer
    assert result.outputs == ["answered"]
    calls = sorted(traces.by_name()["executor victim"], key=lambda s: s.start_time or 0)
    assert [c.attributes["stepgraph.attempt"] for c in calls] == [1, 2]
    assert [c.attributes["stepgraph.outcome"] for c in calls] == ["error", "ok"]
    assert calls[0].status.status_code is StatusCode.ERROR
    assert "ActorDiedError" in (calls[0].status.description or "")
    assert {traces.parent_name(c) for c in calls} == {"superstep 1"}
