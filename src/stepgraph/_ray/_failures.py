"""How what goes wrong on Ray becomes the run's failure: a superstep that
fails as when a handler raises, naming the executor (``fails``), what Ray's
serialization errors come down to (``innermost``), and the spans of calls
whose actor died (``lost_spans``)."""

from __future__ import annotations

import time

from .._core import ExecutorFailure, Inbox, Node, SpanRecord, Superstep, handler_attributes
from .._exceptions import WorkflowRunError

__all__ = [
    "Closed",
    "Unsendable",
    "closed",
    "fails",
    "innermost",
    "last_line",
    "lost_spans",
]


class Closed(Exception):
    """The backend was closed while a call waited for its actor."""


class Unsendable(Exception):
    """Ray could not serialize a call's inboxes (its cause says why)."""


def lost_spans(
    work: Superstep,
    batches: list[tuple[Node, Inbox]],
    attempt: int,
    started: int,
    error: str,
) -> list[SpanRecord]:
    """A span per executor of a call whose actor died: a failed attempt,
    from the call to now (what ran in the actor never came back)."""
    inboxes = {node.id: inbox for node, inbox in work.batches}  # (not shared: as sent)
    records: list[SpanRecord] = []
    for node, _ in batches:
        inbox = inboxes.get(node.id)
        message = inbox[0][1] if inbox else None
        attributes = handler_attributes(node.id, work.number, message, attempt, None)
        attributes["stepgraph.outcome"] = "error"
        records.append((f"executor {node.id}", -1, started, time.time_ns(), attributes, error))
    return records


def innermost(exc: BaseException) -> str:
    """What Ray's serialization error comes down to: its innermost cause
    (``TypeError: cannot pickle '_thread.lock' object``), not its report."""
    inner = exc.__cause__ or exc.__context__
    while inner is not None:
        exc, inner = inner, inner.__cause__ or inner.__context__
    return f"{type(exc).__name__}: {last_line(exc) or type(exc).__name__}"


def fails(
    work: Superstep, first: Node, text: str, cause: BaseException | None = None
) -> ExecutorFailure:
    """The superstep's failure, named after ``first``: the run fails as when
    a handler raises (``work.failures`` says so to the scheduler)."""
    error = WorkflowRunError(text, executor_id=first.id, superstep=work.number)
    error.__cause__ = cause
    failure = ExecutorFailure(first.id, work.number, error)
    work.failures.append(failure)
    return failure


def closed(work: Superstep, first: Node, named: str) -> ExecutorFailure:
    return fails(
        work,
        first,
        f"the Ray backend was closed while executor {named!r} ran (superstep "
        f"{work.number}): the run cannot go on here",
    )


def last_line(exc: BaseException) -> str:
    """The last line of a Ray error's text (the rest is its remote traceback)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else ""
