"""How what goes wrong on Ray becomes the run's failure: a superstep that
fails as when a handler raises, naming the executor (``fails``) — one for
each way a call can go wrong (an executor that cannot go to its actor, an
actor that did not start, an inbox that cannot be sent or loaded, a result
that cannot come back, an actor that died, a backend closed meanwhile) —
what Ray's serialization errors come down to (``innermost``), and the spans
of calls whose actor died (``lost_spans``)."""

from __future__ import annotations

import time

from .._core import ExecutorFailure, Inbox, Node, SpanRecord, Superstep, handler_attributes
from .._exceptions import WorkflowRunError

__all__ = [
    "Closed",
    "Unsendable",
    "closed",
    "died",
    "fails",
    "innermost",
    "last_line",
    "lost_spans",
    "not_started",
    "unloadable",
    "unportable",
    "unsendable",
    "unsent",
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


def unportable(
    work: Superstep, members: list[Node], exc: Exception, ray_error: type[Exception]
) -> Exception:
    """The failure of an executor that cannot go to its actor: Ray
    cannot serialize it (a lock, a client among its attributes).
    ``ray_error`` is Ray's ``RayError``."""
    if isinstance(exc, ray_error):
        return exc  # (not about the executor: as any failure to reach the actor)
    named = ", ".join(n.id for n in members)
    return fails(
        work,
        members[0],
        f"executor {named!r} cannot be sent to a Ray actor ({innermost(exc)}): on the "
        "Ray backend an executor's attributes travel between the driver and its actor "
        "and must be serializable; keep clients and locks out of them (make them where "
        "the handlers run: a module-level cache serves each actor process)",
        exc,
    )


def not_started(work: Superstep, members: list[Node], exc: Exception) -> Exception:
    """The failure of an actor that did not start (its executors' module
    is not importable on the workers, say), naming its executors."""
    named = ", ".join(n.id for n in members)
    if isinstance(exc, Closed):
        return closed(work, members[0], named)
    return fails(
        work,
        members[0],
        f"the Ray actor of executor {named!r} did not start: {type(exc).__name__}: "
        f"{last_line(exc)} (the workers must be able to import the executors' modules: "
        'see docs/ray.md, "What workers need")',
    )


def unsendable(
    work: Superstep, first: Node, named: str, first_call: bool, exc: Unsendable
) -> ExecutorFailure:
    """The failure of a call Ray could not serialize (its cause says why);
    a warm actor's ``first_call`` carries the driver's attributes too."""
    what = f"its inbox of superstep {work.number}" + (" or its attributes" if first_call else "")
    return fails(
        work,
        first,
        f"executor {named!r}: {what} could not be sent to its Ray actor "
        f"({innermost(exc)}); on the Ray backend messages, answers, the "
        "run's input and executors' attributes must be serializable",
        exc.__cause__,
    )


def unloadable(
    work: Superstep, first: Node, named: str, first_call: bool, exc: Exception
) -> ExecutorFailure:
    """The failure of a call whose actor could not load what was sent (a
    message's or a state value's type its worker cannot import)."""
    what = "its inbox, the shared state, the run's context" + (
        ", its attributes" if first_call else ""
    )
    return fails(
        work,
        first,
        f"executor {named!r}: what superstep {work.number} sent to its Ray "
        f"actor ({what}) could not be loaded there "
        f"({last_line(exc) or type(exc).__name__}): the workers must be able to "
        "import the types of the messages, state values and context too (see "
        'docs/ray.md, "What workers need")',
        exc,
    )


def unsent(work: Superstep, first: Node, named: str, exc: Exception) -> ExecutorFailure:
    """The failure of a call whose result could not come back from its
    actor (a message or an exception Ray cannot serialize): the run fails
    naming the executors, as when their handler raises."""
    return fails(
        work,
        first,
        f"executor {named!r}: what its Ray actor did in superstep {work.number} could "
        f"not be sent back ({type(exc).__name__}: {last_line(exc) or type(exc).__name__}); "
        "on the Ray backend messages, outputs, events and exceptions must be serializable",
        exc,
    )


def died(work: Superstep, first: Node, named: str, where: str, exc: Exception) -> ExecutorFailure:
    """The failure of a call whose actor died, its retries spent."""
    return fails(
        work,
        first,
        f"the Ray actor of executor {named!r} on node {where} died during "
        f"superstep {work.number}: {type(exc).__name__}",
        exc,
    )
