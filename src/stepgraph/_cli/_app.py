"""The ``stepgraph`` commands: run, viz, checkpoints, demo."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from .._checkpoint import SqliteCheckpointStore
from .._core import (
    Event,
    FailedEvent,
    PendingRequest,
    RequestInfoEvent,
    RunStartedEvent,
    RunStatus,
    StatusEvent,
    type_name,
)
from .._exceptions import StepgraphError, WorkflowRunError
from .._viz import to_dot, to_mermaid
from .._workflow import Workflow
from ._load import CliError, coerce, coerce_input, load_workflow, open_store, parse_json
from ._render import LiveView, event_json

__all__ = ["app"]

DEFAULT_STORE = "sqlite:.stepgraph/checkpoints.sqlite"
EXIT_IDLE, EXIT_FAILED, EXIT_PENDING, EXIT_INTERRUPTED = 0, 1, 2, 130

app = typer.Typer(
    name="stepgraph",
    help="Run, draw and inspect stepgraph workflows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
checkpoints_app = typer.Typer(
    help="List, show and delete stored checkpoints.", no_args_is_help=True
)
app.add_typer(checkpoints_app, name="checkpoints")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(EXIT_FAILED)


def _example(response_type: Any) -> str:
    return {bool: "true", int: "0", float: "0.0", str: '"text"'}.get(response_type, "...")


class _Session:
    """One ``run`` invocation: streams the run and remembers what the exit
    message needs."""

    def __init__(self, workflow: Workflow, target: str, store_spec: str | None) -> None:
        self.workflow = workflow
        self.target = target
        self.store_spec = store_spec
        self.run_id = ""
        self.status: RunStatus | None = None
        self.requests: dict[str, RequestInfoEvent] = {}
        self.failed: FailedEvent | None = None
        self.backend: Any = None
        # What to run: a new input, or a checkpoint to continue (with answers).
        self.value: Any = None
        self.checkpoint: str | None = None
        self.responses: Mapping[str, Any] | None = None
        self.as_json = False

    def see(self, event: Event) -> None:
        if isinstance(event, RunStartedEvent) and not event.workflow_path:
            self.run_id = event.run_id
        elif isinstance(event, StatusEvent) and not event.workflow_path:
            self.status = event.status
        elif isinstance(event, RequestInfoEvent) and not event.workflow_path:
            self.requests[event.request_id] = event
        elif isinstance(event, FailedEvent) and not event.workflow_path:
            self.failed = event

    def answer_command(self, checkpoint: str, request: PendingRequest) -> str:
        store = f" --store {self.store_spec}" if self.store_spec else ""
        value = _example(request.response_type)
        return (
            f"stepgraph run {self.target}{store} --resume {checkpoint} "
            f"--respond '{request.request_id}={value}'"
        )


async def _stream(session: _Session, store: SqliteCheckpointStore | None) -> None:
    as_json = session.as_json
    stream = session.workflow.stream(
        session.value,
        checkpoint=session.checkpoint,
        responses=session.responses,
        checkpoints=store,
        backend=session.backend,
    )
    if as_json:
        async for event in stream:
            session.see(event)
            print(event_json(event), flush=True)
        return
    with LiveView(out, f"{session.workflow.name}") as view:
        async for event in stream:
            session.see(event)
            view.handle(event)
    for warning in view.warnings:
        out.print(f"warning: {warning}", style="yellow", markup=False)
    for output in view.outputs:
        out.print(f"output: {output}", markup=False)


async def _latest(store: SqliteCheckpointStore, workflow: Workflow) -> str:
    runs = await store.runs(workflow=workflow.name, signature=workflow.signature, limit=1)
    if not runs:
        raise CliError(f"the store holds no run of workflow {workflow.name!r} to resume")
    return runs[0].last_checkpoint


def _pending_at(
    workflow: Workflow,
    store: SqliteCheckpointStore,
    *,
    checkpoint: str | None = None,
    run_id: str | None = None,
) -> tuple[str | None, list[PendingRequest]]:
    """The requests open at ``checkpoint``, or at the latest checkpoint of
    ``run_id``; with that checkpoint's id (``None`` if the run has none)."""

    async def read() -> tuple[str | None, list[PendingRequest]]:
        checkpoint_id = checkpoint
        if checkpoint_id is None:
            latest = await store.latest(run_id or "")
            if latest is None:
                return None, []
            checkpoint_id = latest.id
        return checkpoint_id, workflow.codec.requests_of(await store.load(checkpoint_id))

    return asyncio.run(read())


def _responses(
    workflow: Workflow, store: SqliteCheckpointStore, checkpoint: str, respond: list[str]
) -> dict[str, Any]:
    _, pending = _pending_at(workflow, store, checkpoint=checkpoint)
    open_requests = {r.request_id: r for r in pending}
    answers: dict[str, Any] = {}
    for item in respond:
        request_id, sep, raw = item.partition("=")
        if not sep:
            raise CliError(f"--respond takes ID=JSON, got {item!r}")
        request = open_requests.get(request_id)
        if request is None:
            raise CliError(
                f"request {request_id!r} is not open at checkpoint {checkpoint} "
                f"(open: {sorted(open_requests) or 'none'})"
            )
        answers[request_id] = coerce(
            parse_json(raw, f"the response to {request_id}"), request.response_type
        )
    return answers


@app.command()
def run(
    target: Annotated[
        str, typer.Argument(help="MODULE:ATTR — a Workflow or a function returning one")
    ],
    input: Annotated[str | None, typer.Option("--input", help="the run's input, as JSON")] = None,
    input_file: Annotated[
        Path | None, typer.Option("--input-file", help="a file holding the input as JSON")
    ] = None,
    store: Annotated[
        str, typer.Option("--store", help="checkpoint store, sqlite:PATH")
    ] = DEFAULT_STORE,
    no_store: Annotated[bool, typer.Option("--no-store", help="run without checkpoints")] = False,
    resume: Annotated[
        str | None, typer.Option("--resume", help="checkpoint id to continue from, or 'latest'")
    ] = None,
    respond: Annotated[
        list[str] | None, typer.Option("--respond", help="answer a request: ID=JSON (repeatable)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON event per line")] = False,
    backend: Annotated[
        str, typer.Option("--backend", help="local, ray (a local Ray cluster) or ray:ADDRESS")
    ] = "local",
) -> None:
    """Run a workflow with a live view (or JSON events). Exit code: 0 idle,
    2 idle with pending requests, 1 failed, 130 interrupted (resumable)."""
    try:
        workflow = load_workflow(target)
        if input is not None and input_file is not None:
            raise CliError("give --input or --input-file, not both")
        raw = input if input_file is None else input_file.read_text()
        value = coerce_input(workflow, parse_json(raw, "the input")) if raw is not None else None
        sqlite = None if no_store else open_store(store)
        if (resume or respond) and sqlite is None:
            raise CliError("--resume and --respond need a store")
        checkpoint = None
        if sqlite is not None and (resume or respond):
            checkpoint = (
                asyncio.run(_latest(sqlite, workflow)) if resume in (None, "latest") else resume
            )
        responses = (
            _responses(workflow, sqlite, checkpoint, respond)
            if respond and sqlite and checkpoint
            else None
        )
        if value is None and checkpoint is None:
            raise CliError("nothing to run: give --input (or --input-file), or --resume")
        if value is not None and checkpoint is not None:
            raise CliError("give --input for a new run, or --resume/--respond to continue one")
    except (CliError, StepgraphError, OSError) as exc:
        raise _fail(str(exc)) from None
    session = _Session(workflow, target, None if no_store else store)
    session.value, session.checkpoint, session.responses = value, checkpoint, responses
    session.as_json = as_json
    try:
        session.backend = _backend(backend)
    except (CliError, ImportError) as exc:
        raise _fail(str(exc)) from None
    try:
        code = _execute(session, sqlite)
    finally:
        shutdown = getattr(session.backend, "shutdown", None)
        if shutdown is not None:
            shutdown()
    raise typer.Exit(code)


def _backend(spec: str) -> Any:
    if spec == "local":
        return None
    kind, _, address = spec.partition(":")
    if kind != "ray":
        raise CliError(f"unknown backend {spec!r}; use local, ray or ray:ADDRESS")
    from .._ray import RayBackend

    return RayBackend(address=address or None)


def _execute(session: _Session, store: SqliteCheckpointStore | None) -> int:
    """Stream the session's run; returns the exit code."""
    as_json = session.as_json
    console = err if as_json else out
    try:
        asyncio.run(_stream(session, store))
    except KeyboardInterrupt:
        latest = asyncio.run(store.latest(session.run_id)) if store and session.run_id else None
        if latest is not None:
            console.print(
                f"stopped. Resume with: stepgraph run {session.target} "
                f"--store {session.store_spec} --resume {latest.id}"
            )
        else:
            console.print("stopped (no checkpoint was written).")
        return EXIT_INTERRUPTED
    except WorkflowRunError as error:
        _report_failure(console, error)
        return EXIT_FAILED
    finally:
        if store is not None:
            store.close()
    return _summary(session, console, as_json)


def _report_failure(console: Console, error: WorkflowRunError) -> None:
    where = (
        f" (executor {error.executor_id!r}, superstep {error.superstep})"
        if error.executor_id
        else ""
    )
    console.print(f"[red]failed{where}:[/red] {error}")
    cause = error.__cause__
    if cause is not None:
        lines = traceback.format_exception(type(cause), cause, cause.__traceback__, limit=-3)
        console.print("".join(lines).rstrip(), style="dim", markup=False)


def _summary(session: _Session, console: Console, as_json: bool) -> int:
    if not as_json and session.status is not None:
        console.print(f"status: {session.status.value} (run {session.run_id})", markup=False)
    if session.status is RunStatus.IDLE_WITH_PENDING_REQUESTS:
        if session.store_spec is None:
            console.print("open requests remain; run with a --store to answer them later")
            return EXIT_PENDING
        store = open_store(session.store_spec)
        try:
            latest, pending = _pending_at(session.workflow, store, run_id=session.run_id)
        finally:
            store.close()
        console.print(f"{len(pending)} open request(s). Answer with:")
        for request in pending:
            console.print(
                f"  {type_name(type(request.request))}: {request.request!r}", markup=False
            )
            console.print(f"  {session.answer_command(latest or '?', request)}", markup=False)
        return EXIT_PENDING
    return EXIT_IDLE


@app.command()
def viz(
    target: Annotated[
        str, typer.Argument(help="MODULE:ATTR — a Workflow or a function returning one")
    ],
    format: Annotated[str, typer.Option("--format", help="mermaid, dot, svg or png")] = "mermaid",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="write to FILE")] = None,
) -> None:
    """Draw a workflow (Mermaid or DOT; SVG/PNG through Graphviz's dot)."""
    try:
        workflow = load_workflow(target)
    except (CliError, StepgraphError) as exc:
        raise _fail(str(exc)) from None
    if format in ("mermaid", "dot"):
        text = to_mermaid(workflow) if format == "mermaid" else to_dot(workflow)
        if output is None:
            sys.stdout.write(text)
        else:
            output.write_text(text)
        return
    if format not in ("svg", "png"):
        raise _fail(f"unknown format {format!r}; use mermaid, dot, svg or png")
    dot = shutil.which("dot")
    if dot is None:
        raise _fail(
            f"--format {format} needs Graphviz's dot program (e.g. apt-get install graphviz, "
            "brew install graphviz); --format mermaid and --format dot work without it"
        )
    if format == "png" and output is None:
        raise _fail("--format png needs -o FILE")
    drawn = subprocess.run(
        [dot, f"-T{format}"], input=to_dot(workflow).encode(), capture_output=True, check=False
    )
    if drawn.returncode != 0:
        raise _fail(f"dot failed: {drawn.stderr.decode(errors='replace').strip()}")
    if output is None:
        sys.stdout.write(drawn.stdout.decode())
    else:
        output.write_bytes(drawn.stdout)


def _size(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} B"


@checkpoints_app.command("list")
def checkpoints_list(
    store: Annotated[str, typer.Option("--store", help="sqlite:PATH")] = DEFAULT_STORE,
    run_id: Annotated[str | None, typer.Option("--run", help="list one run's checkpoints")] = None,
) -> None:
    """Runs (latest checkpoint of each), or one run's checkpoints."""
    try:
        sqlite = open_store(store)
    except CliError as exc:
        raise _fail(str(exc)) from None

    async def gather() -> tuple[list[Any], dict[str, int]]:
        every = await sqlite.list(run_id)
        sizes: dict[str, int] = {}
        for info in every:
            sizes[info.run_id] = sizes.get(info.run_id, 0) + info.size
        return (every if run_id else await sqlite.runs()), sizes

    try:
        rows, sizes = asyncio.run(gather())
    except StepgraphError as exc:
        raise _fail(str(exc)) from None
    finally:
        sqlite.close()
    head = (
        "run" if not run_id else "checkpoint",
        "workflow",
        "status",
        "superstep",
        "open",
        "size",
    )
    lines = [
        (
            info.run_id if not run_id else info.id,
            info.workflow,
            info.status,
            str(info.superstep),
            str(info.pending_requests),
            _size(sizes.get(info.run_id, 0) if not run_id else info.size),
        )
        for info in rows
    ]
    if not out.is_terminal:  # for scripts: whole values, one row per line
        for line in (head, *lines):
            print("  ".join(line))
        return
    table = Table(title=f"runs in {store}" if not run_id else f"run {run_id}")
    for column in head:
        table.add_column(column, overflow="fold")
    for line in lines:
        table.add_row(*line)
    out.print(table)


@checkpoints_app.command("show")
def checkpoints_show(
    checkpoint: Annotated[str, typer.Argument(help="checkpoint id")],
    store: Annotated[str, typer.Option("--store", help="sqlite:PATH")] = DEFAULT_STORE,
) -> None:
    """One checkpoint's metadata and contents (as stored, without decoding)."""
    try:
        sqlite = open_store(store)
        try:
            cp = asyncio.run(sqlite.load(checkpoint))
        finally:
            sqlite.close()
    except (CliError, StepgraphError) as exc:
        raise _fail(str(exc)) from None
    body = cp.body
    summary = {
        "id": cp.id,
        "run_id": cp.run_id,
        "workflow": cp.workflow,
        "superstep": cp.superstep,
        "parent_id": cp.parent_id,
        "status": cp.status,
        "created_at": cp.created_at,
        "inboxes": {eid: len(entries) for eid, entries in body.get("inboxes", [])},
        "state_keys": sorted(body.get("state", {})),
        "snapshots": sorted(body.get("snapshots", {})),
        "open_requests": [
            {"id": r["id"], "executor": r["executor"], "response_type": r["response_type"]}
            for r in body.get("requests", [])
        ],
        "size": sum(len(b) for b in cp.blobs.values()),
    }
    print(json.dumps(summary, indent=2))


@checkpoints_app.command("delete")
def checkpoints_delete(
    checkpoint: Annotated[str | None, typer.Argument(help="checkpoint id")] = None,
    store: Annotated[str, typer.Option("--store", help="sqlite:PATH")] = DEFAULT_STORE,
    run_id: Annotated[str | None, typer.Option("--run", help="delete a whole run")] = None,
) -> None:
    """Delete one checkpoint, or a whole run (the file shrinks)."""
    if (checkpoint is None) == (run_id is None):
        raise _fail("give a checkpoint id or --run RUN, not both")
    try:
        sqlite = open_store(store)
        try:
            if run_id is not None:
                count = asyncio.run(sqlite.delete_run(run_id))
                out.print(f"deleted run {run_id} ({count} checkpoints)")
            else:
                assert checkpoint is not None
                asyncio.run(sqlite.delete(checkpoint))
                out.print(f"deleted checkpoint {checkpoint}")
        finally:
            sqlite.close()
    except (CliError, StepgraphError) as exc:
        raise _fail(str(exc)) from None


@app.command()
def demo(
    topic: Annotated[str, typer.Argument(help="what the writer drafts")] = "stepgraph",
    store: Annotated[
        Path | None,
        typer.Option("--store", help="SQLite file for checkpoints (default: temporary)"),
    ] = None,
    auto_approve: Annotated[
        bool,
        typer.Option(
            "--auto-approve", help="approve without asking (automatic without a terminal)"
        ),
    ] = False,
) -> None:
    """Run the bundled review pipeline end to end, with one approval step."""
    path = store or Path(tempfile.mkdtemp()) / "demo.sqlite"
    spec = f"sqlite:{path}"
    target = "stepgraph.demo:build"
    from ..demo import build

    session = _Session(build(), target, spec)
    session.value = topic
    code = _execute(session, open_store(spec))
    if code == EXIT_PENDING:
        sqlite = open_store(spec)
        try:
            latest, pending = _pending_at(session.workflow, sqlite, run_id=session.run_id)
        finally:
            sqlite.close()
        answers: dict[str, Any] = {}
        for request in pending:
            text = getattr(request.request, "text", request.request)
            if auto_approve or not sys.stdin.isatty():
                out.print(f"approving automatically: {text}", markup=False)
                answers[request.request_id] = True
            else:
                answers[request.request_id] = typer.confirm(f"Publish {text!r}?", default=True)
        session = _Session(build(), target, spec)
        session.checkpoint, session.responses = latest, answers
        code = _execute(session, open_store(spec))
    out.print(f"checkpoints: {spec}")
    out.print(f"resume or inspect: stepgraph checkpoints list --store {spec}")
    out.print(f"                   stepgraph run {target} --store {spec} --resume latest")
    out.print(f"draw it:           stepgraph viz {target}")
    raise typer.Exit(code)
