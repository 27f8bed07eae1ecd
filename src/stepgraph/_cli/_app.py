"""The ``stepgraph`` commands: run, viz, demo (and ``checkpoints``, in its
own module). User text is never read as markup, and every problem is one
line and exit code 1."""

from __future__ import annotations

import asyncio
import inspect
import shlex
import shutil
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from .._checkpoint import RUNNING_STATUSES, TERMINAL_STATUSES, holding, new_holder
from .._core import PendingRequest, RunStatus
from .._exceptions import CheckpointError, StepgraphError
from .._otel._setup import export_from_env
from .._prepare import storable_input
from .._viz import to_dot, to_mermaid
from .._workflow import Workflow
from ._checkpoints import checkpoints_app, runs_app
from ._input import coerce, coerce_input, word_hint
from ._load import (
    DEFAULT_STORE,
    CliError,
    CliStore,
    StoreMode,
    in_named_store,
    is_postgres,
    load_workflow,
    open_store,
    parse_json,
    read_text,
    shown_store,
    store_path,
)
from ._render import say, shown
from ._serve import serve
from ._session import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OUTPUT_CLOSED,
    EXIT_PENDING,
    EXIT_TERMINATED,
    PASSWORD_NOTE,
    Session,
    Terminated,
    execute,
    open_requests,
    sigterm_stops,
)

__all__ = ["app"]


class _Commands(TyperGroup):
    """The commands: a Ctrl-C that none of them took (while a workflow's
    module is imported, a store opened) stops with one line, as a run's
    does — typer would end it with 130 and nothing said."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as stop:
            say(err, "stopped.")
            raise typer.Exit(_exit_code(stop)) from None


def _exit_code(stop: KeyboardInterrupt) -> int:
    """130 for a Ctrl-C, 143 for a SIGTERM."""
    return EXIT_TERMINATED if isinstance(stop, Terminated) else EXIT_INTERRUPTED


# Seconds --connect-timeout gives a Ray cluster by default (printed commands
# name it only when another was given).
CONNECT_TIMEOUT = 10.0

app = typer.Typer(
    name="stepgraph",
    help="Run, draw and inspect stepgraph workflows.",
    cls=_Commands,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _show_version(asked: bool) -> None:
    if asked:
        from .. import __version__

        print(f"stepgraph {__version__}")
        raise typer.Exit(0)


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_show_version, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """Run, draw and inspect stepgraph workflows."""


app.add_typer(checkpoints_app, name="checkpoints")
app.add_typer(runs_app, name="runs")
app.command("serve")(serve)

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

Target = Annotated[str, typer.Argument(help="MODULE:ATTR — a Workflow or a function returning one")]


def _fail(message: str) -> typer.Exit:
    say(err, ("error: ", "red"), message)
    return typer.Exit(EXIT_FAILED)


def _continue_from(
    workflow: Workflow,
    store: CliStore,
    resume: str | None,
    respond: list[str],
    fork: bool = False,
    spec: str = DEFAULT_STORE,
) -> tuple[str, dict[str, Any] | None]:
    """The checkpoint to continue and the answers to deliver. ``--respond``
    alone continues the run that owns the requests, from its latest
    checkpoint (with ``--fork``, from the newest where they are open);
    ``--resume latest`` the newest run of this workflow."""
    answers = [_split_answer(item) for item in respond]
    opened: list[PendingRequest] | None = None  # (the requests open at ``checkpoint``)
    seen: set[str] = set()
    for request_id, _ in answers:
        if request_id in seen:
            raise CliError(
                f"--respond answers request {request_id!r} twice; a request takes one answer"
            )
        seen.add(request_id)
    if resume == "latest" or (resume is None and not answers):
        runs = asyncio.run(
            store.runs(workflow=workflow.name, signature=workflow.signature, limit=1)
        )
        if not runs:
            raise CliError(f"no run of workflow {workflow.name!r} to resume in {shown_store(spec)}")
        checkpoint = runs[0].last_checkpoint
    elif resume is not None:
        checkpoint = resume
    else:
        owners = {
            request_id: asyncio.run(store.find_request(request_id)) for request_id, _ in answers
        }
        unknown = [request_id for request_id, run in owners.items() if run is None]
        if unknown:
            raise CliError(f"no request {unknown[0]!r} in {shown_store(spec)} (is --store right?)")
        by_run = {run.run_id: run for run in owners.values() if run is not None}
        if len(by_run) > 1:
            raise CliError(
                f"the requests belong to different runs ({', '.join(sorted(by_run))}); answer "
                "one run at a time"
            )
        [owner] = by_run.values()
        checkpoint = owner.last_checkpoint
        ids = [r for r, _ in answers]
        if fork:
            checkpoint = _where_open(workflow, store, owner.run_id, ids)
        else:
            opened = open_requests(workflow, store, checkpoint)
            if not set(ids) <= {r.request_id for r in opened} and not asyncio.run(
                store.answers(owner.run_id, ids)
            ):
                # Not open at the run's newest checkpoint, nor answered: open
                # on another branch (the run went back to an earlier one since).
                there = _newest_open(workflow, store, owner.run_id, ids)
                if there is not None and there != checkpoint:
                    say(err, f"(open at checkpoint {there}, on another branch of the run: "
                        "going on from there)", style="dim")  # fmt: skip
                    checkpoint, opened = there, None
    if not answers:
        _say_if_finished(store, checkpoint)
        return checkpoint, None
    if opened is None:
        opened = open_requests(workflow, store, checkpoint)
    open_now = {r.request_id: r for r in opened}
    responses: dict[str, Any] = {}
    for request_id, raw in answers:
        request = open_now.get(request_id)
        if request is None:
            run_id = asyncio.run(store.load(checkpoint)).run_id
            answered = asyncio.run(store.answers(run_id, [request_id])).get(request_id)
            if answered is not None:
                again = (
                    "to answer it again from an earlier checkpoint, add --fork"
                    if _newest_open(workflow, store, run_id, [request_id]) is not None
                    else "no checkpoint of the run has it open any more (deleted or pruned "
                    "since): it cannot be answered again, not even with --fork"
                )  # (which said "no checkpoint of run ... has ... open to fork from")
                raise CliError(
                    f"request {request_id!r} of run {run_id} was answered already (at checkpoint "
                    f"{answered}){asyncio.run(_since_answered(store, run_id))}; {again} (a "
                    "request of another run with this id: add --resume and that run's checkpoint)"
                )
            raise CliError(
                f"request {request_id!r} is not open at checkpoint {checkpoint} (it belongs to "
                f"another run, or was answered already); open there: "
                f"{sorted(open_now) or 'none'}"
            )
        what = f"the answer to {request_id}"
        hint = partial(word_hint, annotations=[request.response_type])
        responses[request_id] = coerce(parse_json(raw, what, hint), request.response_type, what)
    return checkpoint, responses


async def _since_answered(store: CliStore, run_id: str) -> str:
    """What became of the continuation that took an answer, when it did not
    end as a run ends (idle, waiting, paused): still going on, or stopped
    (Ctrl-C, a kill) — then ``--resume`` its latest checkpoint goes on with the
    answer (not ``--resume latest``: a newer run of the workflow would be taken)."""
    info = await store.run_info(run_id)
    if info is None or info.status not in (*RUNNING_STATUSES, *TERMINAL_STATUSES):
        return ""
    probe = new_holder()
    busy = await store.lease(run_id, probe)
    if busy is not None:
        return f"; the run is going on with that answer ({holding(busy)})"
    await store.release(run_id, probe)
    return (
        f"; the run took that answer and stopped since ({info.status}): go on with it with "
        f"--resume {info.last_checkpoint}"
    )


def _where_open(workflow: Workflow, store: CliStore, run_id: str, request_ids: list[str]) -> str:
    """The run's newest checkpoint at which these requests are all open."""
    found = _newest_open(workflow, store, run_id, request_ids)
    if found is None:
        raise CliError(
            f"no checkpoint of run {run_id} has {', '.join(request_ids)} open to fork from"
        )
    return found


def _newest_open(
    workflow: Workflow, store: CliStore, run_id: str, request_ids: list[str]
) -> str | None:
    wanted = set(request_ids)
    for info in reversed(asyncio.run(store.list(run_id))):
        if info.pending_requests and wanted <= {
            r.request_id for r in open_requests(workflow, store, info.id)
        }:
            return info.id
    return None


def _split_answer(item: str) -> tuple[str, str]:
    request_id, sep, raw = item.partition("=")
    if not sep or not request_id:
        raise CliError(f"--respond takes ID=JSON, got {item!r}")
    return request_id, raw


@app.command()
def run(
    target: Target,
    input: Annotated[str | None, typer.Option("--input", help="the run's input, as JSON")] = None,
    input_file: Annotated[
        Path | None, typer.Option("--input-file", help="a file holding the input as JSON")
    ] = None,
    store: Annotated[
        str, typer.Option("--store", help="checkpoint store: sqlite:PATH or postgresql://...")
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
    connect_timeout: Annotated[
        float, typer.Option("--connect-timeout", min=0.1, help="seconds to reach a Ray cluster")
    ] = CONNECT_TIMEOUT,
    break_before: Annotated[
        list[str] | None,
        typer.Option("--break-before", help="pause before delivering to this executor"),
    ] = None,
    break_after: Annotated[
        list[str] | None,
        typer.Option("--break-after", help="pause after a superstep this executor ran in"),
    ] = None,
    max_supersteps: Annotated[
        int | None,
        typer.Option("--max-supersteps", min=1, help="at most this many supersteps in this call"),
    ] = None,
    fork: Annotated[
        bool,
        typer.Option("--fork", help="go on as a new run branching off the checkpoint"),
    ] = False,
    otel: Annotated[
        bool,
        typer.Option("--otel", help="export traces and metrics over OTLP (OTEL_* variables)"),
    ] = False,
) -> None:
    """Run a workflow with a live view (or JSON events). Exit code: 0 idle,
    2 idle with pending requests, 3 paused at a breakpoint, 1 failed, 130
    interrupted (Ctrl-C) or 143 stopped (SIGTERM), both resumable; 141 its
    output closed under it (| head)."""
    # SIGTERM stops the command as Ctrl-C does at any moment (143), also
    # while --backend ray starts or stops its cluster.
    with sigterm_stops():
        sqlite = None
        stop_exporting = None
        try:
            workflow = load_workflow(target)
            if input is not None and input_file is not None:
                raise CliError("give --input or --input-file, not both")
            raw = input if input_file is None else read_text(input_file, "--input-file")
            value = None
            if raw is not None:
                hint = partial(word_hint, annotations=workflow.start.input_types)
                value = coerce_input(workflow, parse_json(raw, "the input", hint))
            continuing = resume is not None or bool(respond)
            if value is not None and continuing:
                given = "--resume" if resume is not None else "--respond"
                raise CliError(
                    f"both an input and {given} were given: give --input (or --input-file) for a "
                    "new run, or --resume/--respond to continue one"
                )
            if value is None and not continuing:
                raise CliError("nothing to run: give --input (or --input-file), or --resume")
            if continuing and no_store:
                raise CliError("--resume and --respond need a store")
            if no_store and store != DEFAULT_STORE:
                raise CliError("give --store or --no-store, not both")
            if fork and not continuing:
                raise CliError("--fork goes on from a checkpoint: give --resume or --respond")
            # (every check of the arguments before the store is opened: a
            # refused command leaves no new store behind)
            for name in (*(break_before or ()), *(break_after or ())):
                if name not in workflow.executors:
                    names = ", ".join(workflow.executors)
                    raise CliError(f"no executor {name!r} to break at; executors: {names}")
            if (break_before or break_after) and no_store:
                raise CliError(
                    "a run paused at a breakpoint goes on from its checkpoint: give a store"
                )
            if value is not None and not no_store:
                storable_input(workflow, value)  # (before a new store is made for it)
            address = _backend_address(backend)
            # (the workflow's module loaded, which may have set OpenTelemetry
            # up itself; no store opened: a missing SDK leaves none behind)
            stop_exporting = export_from_env() if otel else None
            checkpoint = responses = None
            if not no_store:
                mode = StoreMode.WRITE if continuing else StoreMode.CREATE
                path = None if is_postgres(store) else store_path(store)
                existed = path is None or path.exists()
                sqlite = open_store(store, mode)
                if not existed:
                    say(err, f"creating checkpoint store {path}", style="dim")
                if continuing:
                    checkpoint, responses = _continue_from(
                        workflow, sqlite, resume, respond or [], fork, store
                    )
            session = Session(workflow, target, None if no_store else store)
            session.value, session.checkpoint, session.responses = value, checkpoint, responses
            session.as_json = as_json
            session.break_before, session.break_after = break_before, break_after
            session.max_supersteps = max_supersteps
            session.fork = fork
            session.backend = _backend(address, connect_timeout)
            if address is not None:
                session.backend_args = ("--backend", backend)
                if connect_timeout != CONNECT_TIMEOUT:
                    session.backend_args += ("--connect-timeout", f"{connect_timeout:g}")
        except (CliError, StepgraphError, ImportError, ConnectionError) as exc:
            if sqlite is not None:
                sqlite.close()
            if stop_exporting is not None:
                stop_exporting()
            raise _fail(in_named_store(str(exc), store)) from None
        code: int | None = None
        try:
            code = execute(session, sqlite)
        finally:
            try:
                shutdown = getattr(session.backend, "shutdown", None)
                if shutdown is not None:
                    shutdown()
            except KeyboardInterrupt:
                # The run has ended and said how: a Ctrl-C while the backend
                # stops (a local Ray cluster takes a second or two; Ray finishes
                # stopping it at exit) leaves its exit code as it is.
                if code is None:
                    raise
            finally:
                if stop_exporting is not None:
                    stop_exporting()  # (what is batched goes out before the exit)
        raise typer.Exit(code)


def _say_if_finished(store: CliStore, checkpoint_id: str) -> None:
    """Say so when ``checkpoint_id`` is where a run ended idle — going on
    from it runs nothing (a new run needs ``--input``)."""
    try:
        checkpoint = asyncio.run(store.load(checkpoint_id))
    except CheckpointError:
        return  # (the run says what is wrong with it, as for any resume)
    if checkpoint.status == RunStatus.IDLE.value:
        say(err, f"run {checkpoint.run_id} had finished (idle) at checkpoint {checkpoint_id}: "
            "going on from there runs nothing; a new run takes --input", style="dim")  # fmt: skip


def _backend_address(spec: str) -> str | None:
    """The Ray address ``--backend`` names ('' for a local Ray cluster;
    ``None``: the local backend), checked."""
    if spec == "local":
        return None
    kind, sep, address = spec.partition(":")
    if kind != "ray":
        raise CliError(f"unknown backend {spec!r}; use local, ray or ray:ADDRESS")
    if sep and not address:
        raise CliError("--backend ray: needs an address after the colon (or use --backend ray)")
    return address


def _backend(address: str | None, connect_timeout: float) -> Any:
    """The backend at ``address`` (from ``_backend_address``), connected."""
    if address is None:
        return None
    from .._ray import RayBackend

    backend = RayBackend(address=address or None, connect_timeout=connect_timeout)
    backend.connect()  # fail now, in one line, rather than in the middle of the run
    return backend


@app.command()
def viz(
    target: Target,
    format: Annotated[str, typer.Option("--format", help="mermaid, dot, svg or png")] = "mermaid",
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="write to FILE ('-': standard output)")
    ] = None,
) -> None:
    """Draw a workflow (Mermaid or DOT; SVG/PNG through Graphviz's dot)."""
    try:
        workflow = load_workflow(target)
        if format not in ("mermaid", "dot", "svg", "png"):
            raise CliError(f"unknown format {format!r}; use mermaid, dot, svg or png")
        if format in ("mermaid", "dot"):
            text = to_mermaid(workflow) if format == "mermaid" else to_dot(workflow)
            _write(output, text.encode())
            return
        dot = shutil.which("dot")
        if dot is None:
            raise CliError(
                f"--format {format} needs Graphviz's dot program (e.g. apt-get install "
                "graphviz, brew install graphviz); --format mermaid and --format dot work "
                "without it"
            )
        if format == "png" and (output is None or (str(output) == "-" and sys.stdout.isatty())):
            raise CliError("--format png needs -o FILE (or -o - into a pipe)")
        drawn = subprocess.run(
            [dot, f"-T{format}"], input=to_dot(workflow).encode(), capture_output=True, check=False
        )
        if drawn.returncode != 0:
            raise CliError(f"dot failed: {drawn.stderr.decode(errors='replace').strip()}")
        _write(output, drawn.stdout)
    except (CliError, StepgraphError) as exc:
        raise _fail(str(exc)) from None


def _write(output: Path | None, data: bytes) -> None:
    if output is None or str(output) == "-":  # (as --input-file - reads standard input)
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    try:
        output.write_bytes(data)
    except OSError as exc:
        raise CliError(f"cannot write {str(output)!r}: {exc.strerror or exc}") from None


@app.command()
def demo(
    topic: Annotated[str, typer.Argument(help="what the writer drafts")] = "stepgraph",
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            help="keep the checkpoints in sqlite:PATH or postgresql://... (default: temporary)",
        ),
    ] = None,
    auto_approve: Annotated[
        bool,
        typer.Option(
            "--auto-approve", help="approve without asking (automatic without a terminal)"
        ),
    ] = False,
) -> None:
    """Run the bundled review pipeline end to end, with one approval step."""
    from ..demo import build

    target = "stepgraph.demo:build"
    scratch = None if store is not None else Path(tempfile.mkdtemp(prefix="stepgraph-demo-"))
    spec = store if store is not None else f"sqlite:{scratch}/demo.sqlite"
    code = EXIT_FAILED
    try:
        try:
            first = open_store(spec, StoreMode.CREATE)
        except CliError as exc:
            raise _fail(str(exc)) from None
        session = Session(build(), target, spec)
        session.value, session.suggest = topic, False  # the demo answers them itself
        code = execute(session, first)
        if code == EXIT_PENDING:
            code = _approve(session, spec, auto_approve)
    finally:
        # A temporary store goes, unless the run was stopped (a Ctrl-C, a
        # SIGTERM, its output closed): the commands printed to go on with
        # it, or to list it, need it.
        stopped = code in (EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_OUTPUT_CLOSED)
        if scratch is not None and not stopped:
            shutil.rmtree(scratch, ignore_errors=True)
    if scratch is not None and stopped:
        kept = f"checkpoints: kept in {scratch} for the commands above (remove it when done)"
        say(err if code == EXIT_OUTPUT_CLOSED else out, kept)
    elif scratch is not None:
        say(out, "checkpoints: a temporary store, now removed (keep them with --store sqlite:PATH)")
    else:
        shown = shown_store(spec)
        store_arg = shlex.quote(shown)
        say(out, f"checkpoints: {shown}")
        say(out, f"inspect:    stepgraph checkpoints list --store {store_arg}")
        if code == EXIT_PENDING:
            say(out, f"resume:     stepgraph run {target} --store {store_arg} --resume latest")
        if shown != spec:
            say(out, PASSWORD_NOTE, style="dim")
    say(out, f"draw it:    stepgraph viz {target}")
    raise typer.Exit(code)


def _approve(session: Session, spec: str, auto_approve: bool) -> int:
    from ..demo import build

    store = open_store(spec, StoreMode.WRITE)
    try:
        latest = asyncio.run(store.latest(session.run_id))
        pending = open_requests(session.workflow, store, latest.id) if latest else []
    finally:
        store.close()
    answers: dict[str, Any] = {}
    for request in pending:
        text = getattr(request.request, "text", request.request)
        if auto_approve or not sys.stdin.isatty():
            say(out, f"approving automatically: {shown(text)}")
            answers[request.request_id] = True
        else:
            try:
                answers[request.request_id] = typer.confirm(
                    f"Publish {shown(text)!r}?", default=True
                )
            except typer.Abort:  # Ctrl-C or end of input at the prompt
                say(out, "")
                say(out, "stopped at the approval; the run waits for its answer in the store:")
                for waiting in pending:
                    say(out, f"  {session.command('--respond', f'{waiting.request_id}=true')}")
                return EXIT_INTERRUPTED
    again = Session(build(), session.target, spec)
    again.checkpoint, again.responses = latest.id if latest else None, answers
    return execute(again, open_store(spec, StoreMode.WRITE))


def _tidy_help(group: typer.Typer) -> None:
    """Each command's help from its docstring with its paragraphs' lines
    joined — rich keeps a docstring's line breaks, which then break lines
    mid-sentence in a terminal of another width — and ``x`` quoted as 'x'."""
    for command in group.registered_commands:
        doc = inspect.getdoc(command.callback) if command.callback is not None else None
        if command.help is None and doc:
            paragraphs = (" ".join(p.split()) for p in doc.split("\n\n"))
            command.help = "\n\n".join(paragraphs).replace("``", "'")
    for sub in group.registered_groups:
        if sub.typer_instance is not None:
            _tidy_help(sub.typer_instance)


_tidy_help(app)
