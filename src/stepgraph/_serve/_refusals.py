"""How the server refuses what it cannot do, in an HTTP client's terms:
a ``Problem`` (status and message); the engine's refusals reworded where
they advise Python or command-line users; a resume that would run nothing;
and which executor's failure ended a failed run, read from its stored error."""

from __future__ import annotations

import ast
import re
from typing import Any

from .._checkpoint import SECRET_HINT
from .._core import RunStatus
from .._exceptions import (
    CheckpointEncodeError,
    CheckpointError,
    CheckpointNotFoundError,
    RequestError,
    ResponseValueError,
    StepgraphError,
    WorkflowBusyError,
)

__all__ = [
    "Problem",
    "answered_already",
    "failure_of",
    "refusal",
    "refuse_nothing_to_run",
]


class Problem(Exception):
    """A request the API refuses: an HTTP status and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_WAITING = RunStatus.IDLE_WITH_PENDING_REQUESTS.value


# How much of an id, a name or a parameter a client sent a refusal quotes.
def refuse_nothing_to_run(checkpoint: Any, *, latest: bool) -> None:
    """A resume that would run nothing is refused: from an idle checkpoint
    (the run ended there), or from one waiting for answers (it would only
    wait again)."""
    run, at = checkpoint.run_id, f"checkpoint {checkpoint.id} (superstep {checkpoint.superstep})"
    if checkpoint.status == RunStatus.IDLE.value:
        raise Problem(
            409,
            f"run {run} is idle at {at}: nothing is left to run from there; resume it "
            f"from an earlier checkpoint (POST /api/runs/{run}/resume with its "
            f'"checkpoint_id"), {_fork_hint(run)}, or start a new run',
        )
    if checkpoint.status == _WAITING and latest:
        raise Problem(
            409,
            f"run {run} waits for answers at {at}: nothing runs until they come; answer its "
            f"requests (POST /api/runs/{run}/responses)",
        )
    if checkpoint.status == _WAITING:
        raise Problem(
            409,
            f"run {run} waited for answers at {at}: resuming there would only wait again "
            f"(answers go to the run's latest checkpoint); to answer them anew, "
            f"{_fork_hint(run, checkpoint.id)}",
        )


# How a run that a handler's failure ended says so (``WorkflowRunError``):
# the executor's id as Python writes a string, then the superstep; or, for
# a failure inside a sub-workflow (``SubworkflowError``), the path down to
# the executor that failed, its items spelled as an event's ``path`` does
# (``'docs[2]/pages'``), and no superstep.
_QUOTED = r"""('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
_FAILED_IN = re.compile(rf"executor {_QUOTED} failed in superstep (\d+):")
_FAILED_BELOW = re.compile(rf"executor {_QUOTED} failed in a sub-workflow:")
_ITEM = re.compile(r"\[\d+\]$")  # (a map's item, after the node's id)


def failure_of(
    status: str, error: str | None, stored_superstep: int | None = None
) -> dict[str, Any] | None:
    """Which executor's failure ended a failed run, and in which superstep,
    as its error says: the store keeps no more of a failure than that line,
    and a page opened after a restart (no events kept) shows it from here.
    A failure inside a sub-workflow names the node of this graph that ran
    it (the path's first element, without its item) and no superstep: it
    is the one after ``stored_superstep``, the run's latest checkpoint's (a
    failed superstep stores none; none known: no failure to mark)."""
    if status != RunStatus.FAILED.value or not error:
        return None
    if (found := _FAILED_IN.match(error)) is not None:
        quoted_id, superstep = found.group(1), found.group(2)
    elif (found := _FAILED_BELOW.match(error)) is not None and stored_superstep is not None:
        quoted_id, superstep = found.group(1), str(stored_superstep + 1)
    else:
        return None  # (failed otherwise: did not converge, a store's error...)
    try:
        executor_id = ast.literal_eval(quoted_id)
        step = int(superstep)
    except (SyntaxError, ValueError):
        # (not as the engine writes it: an escape Python does not read,
        # "\x", or a superstep of thousands of digits -- a stored error
        # someone else wrote; it is shown as it is, naming no executor)
        return None
    if found.re is _FAILED_BELOW:
        executor_id = _ITEM.sub("", executor_id.split("/", 1)[0])
    return {"executor_id": executor_id, "superstep": step}


def _fork_hint(run_id: str, checkpoint_id: str | None = None) -> str:
    """How an HTTP client forks a run: the API's route, not the engine's
    ``fork=True`` or the CLI's ``--fork``."""
    at = f'"{checkpoint_id}"' if checkpoint_id else "..."
    return f'fork it: POST /api/runs/{run_id}/fork with {{"checkpoint_id": {at}}}'


def answered_already(run_id: str, request_id: str, where: str, since: str = "") -> Problem:
    """The one wording of a second answer to a request, however it was
    found; ``since``, what became of the run that took it, when known."""
    return Problem(
        409,
        f"request {request_id!r} of run {run_id} was answered already ({where}){since}; to "
        f"answer it anew from an earlier checkpoint, {_fork_hint(run_id)}",
    )


# The engine's messages advise Python and CLI users (``fork=True``,
# ``stepgraph run --fork``); these are told to HTTP clients in the API's terms.
_ENGINE_ANSWERED = re.compile(
    r"request (?P<request>'[^']*') of run '(?P<run>[^']*)' was already answered "
    r"\(at checkpoint (?P<checkpoint>[^)\s]+)\);.*",
    re.DOTALL,
)
_ENGINE_ELSEWHERE = re.compile(
    r"run '(?P<run>[^']*)' is being continued elsewhere (?P<who>\([^)]*\)).*", re.DOTALL
)


def _for_http(message: str) -> str:
    """An engine refusal reworded for an HTTP client (see above); others as they are."""
    if message.endswith(SECRET_HINT):  # (the client can do nothing about it: the server can)
        return message[: -len(SECRET_HINT)] + (
            "this server must be started with the store's secret in STEPGRAPH_SECRET"
        )
    if found := _ENGINE_ANSWERED.fullmatch(message):
        try:
            request_id = ast.literal_eval(found["request"])
        except (SyntaxError, ValueError):  # (a request id holding a backslash)
            return message
        where = f"at checkpoint {found['checkpoint']}"
        return answered_already(found["run"], request_id, where).message
    if found := _ENGINE_ELSEWHERE.fullmatch(message):
        run = found["run"]
        return (
            f"run {run} is being continued elsewhere {found['who']}; a run goes on in one "
            f"place at a time: wait for it to stop, or {_fork_hint(run)}"
        )
    return message


def refusal(exc: StepgraphError) -> Problem:
    message = str(exc)
    cause = exc.__cause__
    if type(exc) is CheckpointError and cause is not None and not isinstance(cause, StepgraphError):
        # The store failed (its database down), not a refusal of the run: the
        # client may try again, as for any call the store fails (503).
        return Problem(503, message)
    if isinstance(exc, CheckpointEncodeError | ResponseValueError):
        # (an input or answer it cannot store; an answer's value: the request stays open)
        return Problem(422, message)
    if isinstance(exc, CheckpointNotFoundError):
        return Problem(404, message)
    if isinstance(exc, RequestError | WorkflowBusyError | CheckpointError):
        return Problem(409, _for_http(message))  # (CheckpointMismatchError among them)
    return Problem(422, message)
