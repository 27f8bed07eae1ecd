"""One ``stepgraph run`` invocation: following its run (the live view, or
JSON events), stopping it on Ctrl-C or SIGTERM, and summing up — the exit
code, and how to go on (answer, resume) from the store."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import FrameType
from typing import Any

from rich.console import Console

from .._checkpoint import ANSWER_FORK_HINT, SECRET_HINT, Checkpoint
from .._core import (
    Event,
    PendingRequest,
    RunStartedEvent,
    RunStatus,
    RunUsage,
    StatusEvent,
    Usage,
    type_name,
)
from .._exceptions import (
    AgentError,
    CheckpointError,
    CheckpointIntegrityError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    ConvergenceError,
    ModelError,
    RequestError,
    ResponseValueError,
    StepgraphError,
    SubworkflowError,
    WorkflowRunError,
)
from .._recorder import FORK_HINT
from .._workflow import Workflow
from ._input import example_json
from ._load import CliError, CliStore, StoreMode, in_named_store, open_store, shown_store
from ._render import LiveView, RunConsole, event_json, printable, say, shown

__all__ = [
    "EXIT_FAILED",
    "EXIT_IDLE",
    "EXIT_INTERRUPTED",
    "EXIT_OUTPUT_CLOSED",
    "EXIT_PAUSED",
    "EXIT_PENDING",
    "EXIT_TERMINATED",
    "PASSWORD_NOTE",
    "Session",
    "Terminated",
    "execute",
    "latest_of",
    "open_requests",
    "sigterm_stops",
]

EXIT_IDLE, EXIT_FAILED, EXIT_PENDING, EXIT_PAUSED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_OUTPUT_CLOSED = 128 + signal.SIGPIPE  # 141, as a program SIGPIPE ends
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143, a SIGTERM (stops as a Ctrl-C does)


class Terminated(KeyboardInterrupt):
    """A SIGTERM outside a run's streaming (which stops the run itself):
    a stop as by Ctrl-C, ending with 143."""


@contextmanager
def sigterm_stops() -> Iterator[None]:
    """While the block runs, SIGTERM stops the command as Ctrl-C does
    (``Terminated``) instead of killing it, or leaving it to a handler some
    library put in (``ray.init``'s ends the process with 15, saying
    nothing). A run's streaming puts in its own meanwhile."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum: int, frame: FrameType | None) -> None:
        raise Terminated

    before = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


out = RunConsole(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


# Characters of a request shown in the summary (`stepgraph checkpoints show`
# shows all of it).
SHOWN_REQUEST = 2_000

PASSWORD_NOTE = (
    "(the database password is left out of these commands: give it with PGPASSWORD or ~/.pgpass)"
)


class Session:
    """One ``run`` invocation: what it runs, and what the summary needs."""

    def __init__(self, workflow: Workflow, target: str, store_spec: str | None) -> None:
        self.workflow = workflow
        self.target = target
        self.store_spec = store_spec
        self.run_id = ""
        self.status: RunStatus | None = None
        self.backend: Any = None
        # How the run reached its backend (--backend, --connect-timeout), for
        # the commands printed to go on with it: on the same cluster.
        self.backend_args: tuple[str, ...] = ()
        # What to run: a new input, or a checkpoint to continue (with answers).
        self.value: Any = None
        self.checkpoint: str | None = None
        self.responses: Mapping[str, Any] | None = None
        self.as_json = False
        self.suggest = True  # print the commands that answer open requests
        self.break_before: list[str] | None = None
        self.break_after: list[str] | None = None
        self.max_supersteps: int | None = None
        self.usage: RunUsage | None = None
        self.last_checkpoint: str | None = None  # where the run stands once it ended
        self.fork = False
        self.password_left_out = False  # from a command printed for the user
        self.stopped_by: int = signal.SIGINT  # the signal that stopped the run (SIGTERM: 143)

    def see(self, event: Event) -> None:
        if event.workflow_path:
            return
        if isinstance(event, RunStartedEvent):
            self.run_id = event.run_id
        elif isinstance(event, StatusEvent):
            self.status = event.status

    def command(self, *args: str) -> str:
        store: tuple[str, ...] = ()
        if self.store_spec:
            shown = shown_store(self.store_spec)
            self.password_left_out |= shown != self.store_spec
            store = ("--store", shown)
        # Its breakpoints too, as a debugger's "continue" keeps them: a run
        # stepped through a loop stops at the next --break-before X, instead
        # of running to its end.
        breaks = [
            *(a for eid in self.break_before or () for a in ("--break-before", eid)),
            *(a for eid in self.break_after or () for a in ("--break-after", eid)),
        ]
        return shlex.join(
            ("stepgraph", "run", self.target, *store, *self.backend_args, *breaks, *args)
        )


async def _stream(session: Session, store: CliStore | None) -> None:
    # SIGTERM (systemd, docker stop, kill) stops the run as Ctrl-C does; either
    # also ends at once a save's wait for a database that takes no
    # connections (a run stops only once its last save has ended).
    with _stopping_signals(session, getattr(store, "stop_waiting", None)):
        await _follow(session, store)


@contextmanager
def _stopping_signals(session: Session, stop_waiting: Callable[[], None] | None) -> Iterator[None]:
    """On SIGTERM, or SIGINT unless this process ignores it (a background
    job of a script): ``stop_waiting``, then what SIGINT does (asyncio's
    handler: cancel the main task, or on a second one raise
    ``KeyboardInterrupt``) — or, where SIGINT is ignored, cancel the main
    task here. The signal is noted for the exit code."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.getsignal(signal.SIGINT)
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()

    def stopping(signum: int, frame: FrameType | None) -> None:
        session.stopped_by = signum
        if stop_waiting is not None:
            stop_waiting()
        if callable(before):
            before(signal.SIGINT, frame)
        elif task is not None:
            loop.call_soon_threadsafe(task.cancel)

    term = signal.signal(signal.SIGTERM, stopping)
    if callable(before):
        signal.signal(signal.SIGINT, stopping)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGINT) is stopping:
            signal.signal(signal.SIGINT, before)
        signal.signal(signal.SIGTERM, term)


async def _follow(session: Session, store: CliStore | None) -> None:
    view = None if session.as_json else LiveView(out, session.workflow.name)

    def show(event: Event) -> None:
        session.see(event)
        if view is None:
            print(event_json(event), flush=True)
        else:
            view.handle(event)

    async with session.workflow.stream(
        session.value,
        checkpoint=session.checkpoint,
        responses=session.responses,
        checkpoints=store,
        backend=session.backend,
        interrupt_before=session.break_before,
        interrupt_after=session.break_after,
        max_supersteps=session.max_supersteps,
        fork=session.fork,
    ) as stream:
        try:
            if view is None:
                async for event in stream:
                    show(event)
            else:
                with view:
                    async for event in stream:
                        show(event)
            session.usage = stream.usage
            session.last_checkpoint = stream.last_checkpoint
        except asyncio.CancelledError:  # Ctrl-C: show what the run did until it stopped
            await stream.aclose()
            for event in stream.drain():
                show(event)
            raise
        finally:  # also what a run that failed or was stopped produced
            if view is not None:
                for warning in view.warnings:
                    say(out, f"warning: {warning}", style="yellow")
                for output in view.outputs:
                    say(out, f"output: {shown(output)}")


def open_requests(workflow: Workflow, store: CliStore, checkpoint: str) -> list[PendingRequest]:
    async def read() -> list[PendingRequest]:
        return workflow.codec.requests_of(await store.load(checkpoint))

    return asyncio.run(read())


def execute(session: Session, store: CliStore | None) -> int:
    """Stream the session's run; returns the exit code."""
    try:
        code = _stream_and_sum_up(session, store)
        if session.password_left_out:
            say(err if session.as_json else out, PASSWORD_NOTE, style="dim")
    except BrokenPipeError:
        return _output_closed(session)
    return code


def _output_closed(session: Session) -> int:
    """Standard output was closed under the run — its reader went away
    (``| head -1``, ``| grep -q``): the run stopped (or had ended), as a
    stop by a signal would leave it; say where it stands, on standard error."""
    try:  # (later writes, and the flush at exit, go nowhere rather than fail)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    try:
        latest = latest_of(session) if session.run_id else None
    except (StepgraphError, CliError):
        latest = None
    if latest is not None:
        ended = latest.status
    else:  # (no store, or it cannot say: what the run's events said)
        ended = session.status.value if session.status is not None else ""
    if not ended or ended.startswith(RunStatus.IN_PROGRESS.value):
        resume = f" Resume with: {session.command('--resume', latest.id)}" if latest else ""
        say(err, f"stopped: standard output was closed.{resume}")
    elif session.store_spec is None or not session.run_id:
        say(err, f"standard output was closed; the run had ended ({ended})")
    else:  # the run had done its work (or waits for answers) when it closed
        listing = shlex.join(
            ("stepgraph", "checkpoints", "list", "--store", shown_store(session.store_spec),
             "--run", session.run_id)
        )  # fmt: skip
        say(err, f"standard output was closed; the run had ended ({ended}): see {listing}")
    return EXIT_OUTPUT_CLOSED


def _stream_and_sum_up(session: Session, store: CliStore | None) -> int:
    console = err if session.as_json else out
    try:
        asyncio.run(_stream(session, store))
    except (KeyboardInterrupt, asyncio.CancelledError) as stop:  # (or SIGTERM, SIGINT ignored)
        if isinstance(stop, Terminated):  # (a SIGTERM before the run streamed, or after)
            session.stopped_by = signal.SIGTERM
        try:
            latest = asyncio.run(store.latest(session.run_id)) if store and session.run_id else None
        except CheckpointError as error:  # (the store is down: say so, and how to go on)
            say(console, f"stopped; where the run got to could not be read: {error}")
            _resume_later(session, console, read=False)
            return 128 + session.stopped_by  # 130 (Ctrl-C), 143 (SIGTERM)
        if latest is None:
            say(console, "stopped (no checkpoint was written).")
        elif latest.status.startswith(RunStatus.IN_PROGRESS.value):
            say(console, f"stopped. Resume with: {session.command('--resume', latest.id)}")
        else:  # the run had done its work (or waits for answers) when it stopped
            say(console, f"stopped after the run's last superstep ({latest.status}).")
            if latest.pending_requests:
                session.status = RunStatus.IDLE_WITH_PENDING_REQUESTS
                _summary(session, console)
        return 128 + session.stopped_by  # 130 (Ctrl-C), 143 (SIGTERM)
    except WorkflowRunError as error:
        if not session.run_id and isinstance(
            error, (CheckpointNotFoundError, CheckpointIntegrityError, CheckpointMismatchError)
        ):  # (no run: --resume named nothing, or nothing this workflow may go on from)
            text = _in_cli_terms(str(error))
            if session.store_spec is not None:
                text = in_named_store(text, session.store_spec)
            say(err, ("error: ", "red"), text)
            return EXIT_FAILED
        if not session.run_id and type(error) is CheckpointError and error.__cause__ is None:
            # Refused before it ran (held elsewhere, being deleted), not failed:
            # a store's failure carries its cause.
            text = str(error).replace(FORK_HINT, "fork it: add --fork (a new run)")
            say(err, ("error: ", "red"), text)
            return EXIT_FAILED
        if not session.run_id and isinstance(error, RequestError):  # (refused before it ran)
            # (an answer's value refused: its request is still open)
            still = isinstance(error, ResponseValueError)
            text = str(error).replace(ANSWER_FORK_HINT, "add --fork (a new run)")
            say(err, ("error: ", "red"), f"{text}{' (nothing was recorded: still open)' * still}")
            return EXIT_FAILED
        _report_failure(console, error)
        if isinstance(error, ConvergenceError) and error.last_checkpoint is not None:
            say(console, f"go on with: {session.command('--resume', error.last_checkpoint)}")
        elif isinstance(error, ConvergenceError):  # (no store: nothing to go on from)
            say(
                console,
                "it has no checkpoint to go on from: run it again with a higher "
                "--max-supersteps, or with a store to go on later",
            )
        elif type(error) is CheckpointError and session.run_id:  # the store failed, not the run
            _resume_later(session, console)
        return EXIT_FAILED
    finally:
        if store is not None:
            store.close()
    return _summary(session, console)


def _resume_later(session: Session, console: Console, *, read: bool = True) -> None:
    """How to go on with a run whose store failed it (or could not say
    where it got to): from its newest checkpoint, if the store answers now."""
    if session.store_spec is None:
        return
    if read:
        try:
            latest = latest_of(session)
        except (StepgraphError, CliError):  # (the store is still down: it may hold some)
            pass
        else:
            if latest is None:
                say(console, "nothing of the run was stored: run it again once the store works")
            else:
                say(console, f"go on with: {session.command('--resume', latest.id)}")
            return
    listing = shlex.join(
        ("stepgraph", "checkpoints", "list", "--store", shown_store(session.store_spec),
         "--run", session.run_id or "")
    )  # fmt: skip
    say(console, f"its checkpoints up to its last save are kept: see {listing}")
    say(console, f"and go on from the newest with: {session.command('--resume', 'ID')}")


# The store's advice names the Python API too (secret=): the command line's only.
_CLI_SECRET_HINT = "set STEPGRAPH_SECRET to the store's secret"


def _in_cli_terms(text: str) -> str:
    return text.replace(SECRET_HINT, _CLI_SECRET_HINT)


def _report_failure(console: Console, error: WorkflowRunError) -> None:
    text = _in_cli_terms(str(error))
    if error.executor_id and repr(error.executor_id) not in text:
        text += f" (executor {error.executor_id!r}, superstep {error.superstep})"
    say(console, ("failed: ", "red"), text)
    cause = error.__cause__
    if cause is None or isinstance(error, CheckpointError):
        return  # (a store's failure: said above)
    if isinstance(error, SubworkflowError):  # the child's error, down to its handler's
        while isinstance(cause, WorkflowRunError) and cause.__cause__ is not None:
            cause = cause.__cause__
    if isinstance(cause, WorkflowRunError) and str(cause) in text:
        return  # (the engine's own, a lost Ray actor say: the line above says it all)
    if isinstance(cause, AgentError | ModelError):
        # An agent's own error says it all; where it came from is the
        # agent's code. What it chains, if anything, is where to look: a
        # tool's exception, an approval rule's (not the SDK's, for a model).
        cause = cause.__cause__ if isinstance(cause, AgentError) else None
        if cause is None:
            return
    lines = traceback.format_exception(
        type(cause), cause, cause.__traceback__, limit=-3, chain=False
    )
    remote = getattr(cause, "remote_traceback", None)  # (raised in a Ray actor)
    if cause.__traceback__ is None and isinstance(remote, str):
        lines = ["Traceback (in its Ray actor, most recent call last):\n", remote + "\n", *lines]
    say(console, "".join(lines).rstrip(), style="dim")


def _tokens(usage: Usage) -> str:
    text = f"{usage.prompt_tokens} prompt + {usage.completion_tokens} completion"
    counted = ((usage.cached_tokens, "cached"), (usage.reasoning_tokens, "reasoning"))
    extra = [f"{n} {what}" for n, what in counted if n]
    return text + (f" ({', '.join(extra)})" if extra else "")


def _usage_json(usage: RunUsage) -> dict[str, Any]:
    return {
        "total": usage.total.as_dict(),
        "by_executor": {path: used.as_dict() for path, used in usage.by_executor.items()},
    }


def latest_of(session: Session) -> Checkpoint | None:
    """The newest checkpoint of the session's run (``None`` without a store)."""
    if session.store_spec is None:
        return None
    store = open_store(session.store_spec, StoreMode.READ)
    try:
        return asyncio.run(store.latest(session.run_id))
    finally:
        store.close()


def _summary(session: Session, console: Console) -> int:
    if not session.as_json and session.status is not None:
        say(console, f"status: {session.status.value} (run {session.run_id})")
    usage = session.usage
    if usage is not None and usage.by_executor:
        if session.as_json:
            print(json.dumps({"kind": "usage", **_usage_json(usage)}), flush=True)
        else:
            say(console, f"tokens: {_tokens(usage.total)}")
            if len(usage.by_executor) > 1:
                for path, used in usage.by_executor.items():
                    say(console, f"  {printable(path)}: {_tokens(used)}")
    if session.status is RunStatus.CANCELLED:  # asked to stop from elsewhere
        latest = latest_of(session)
        if latest is not None:
            say(console, f"cancelled. Resume with: {session.command('--resume', latest.id)}")
        return EXIT_INTERRUPTED
    if session.status is RunStatus.PAUSED:  # breakpoints need a store: there is one
        latest = latest_of(session)
        if latest is not None:
            waiting = ", ".join(eid for eid, _ in latest.body.get("inboxes", ())) or "nothing"
            say(console, f"paused after superstep {latest.superstep}; next: {waiting}")
            say(console, f"go on with: {session.command('--resume', latest.id)}")
        return EXIT_PAUSED
    if session.status is not RunStatus.IDLE_WITH_PENDING_REQUESTS:
        return EXIT_IDLE
    if not session.suggest:
        return EXIT_PENDING
    if session.store_spec is None:
        say(console, "open requests remain; run with a --store to answer them later")
        return EXIT_PENDING
    try:
        at, pending, answered, elsewhere = _open_at_end(session)
    except (StepgraphError, CliError) as error:  # (the run is stored: the store failed since)
        say(err, ("error: ", "red"), f"reading the open requests back failed: {error}")
        listing = shlex.join(
            ("stepgraph", "checkpoints", "list", "--store", shown_store(session.store_spec),
             "--run", session.run_id or "")
        )  # fmt: skip
        say(console, f"once the store answers, see them with: {listing}")
        return EXIT_PENDING
    say(console, f"{len(pending)} open request(s). Answer with:")
    for request in pending:
        what = shown(request.request, SHOWN_REQUEST)
        say(console, f"  {type_name(type(request.request))}: {what}")
        answer = f"{request.request_id}={example_json(request.response_type)}"
        where = answered.get(request.request_id)
        if where is None and request.request_id in elsewhere:
            # (its id is another run's too — a fixed id, a fork: --respond
            # alone would go to that run, so name this one's checkpoint)
            say(console, f"  {session.command('--resume', at, '--respond', answer)}")
        elif where is None:
            say(console, f"  {session.command('--respond', answer)}")
        else:  # (reopened by going back to a checkpoint before its answer)
            again = session.command("--resume", at, "--fork", "--respond", answer)
            say(console, f"  (answered already, at checkpoint {where}: again on a new branch)")
            say(console, f"  {again}")
    return EXIT_PENDING


def _open_at_end(
    session: Session,
) -> tuple[str, list[PendingRequest], dict[str, str], set[str]]:
    """The checkpoint the run stands at (not always the run's newest: a
    replay from an older one that wrote nothing stands there), its open
    requests, those of them answered already along the run (where), and
    those whose id the store finds in another run (``--respond`` alone
    would answer that one)."""
    assert session.store_spec is not None
    store = open_store(session.store_spec, StoreMode.READ)
    try:

        async def read() -> tuple[str, list[PendingRequest], dict[str, str], set[str]]:
            at = session.last_checkpoint
            checkpoint = await (store.load(at) if at else store.latest(session.run_id))
            if checkpoint is None:
                return "", [], {}, set()
            pending = session.workflow.codec.requests_of(checkpoint)
            ids = [r.request_id for r in pending]
            answered = await store.answers(checkpoint.run_id, ids) if ids else {}
            elsewhere = set()
            for request_id in ids:
                owner = await store.find_request(request_id)
                if owner is None or owner.run_id != checkpoint.run_id:
                    elsewhere.add(request_id)
            return checkpoint.id, pending, answered, elsewhere

        return asyncio.run(read())
    finally:
        store.close()
