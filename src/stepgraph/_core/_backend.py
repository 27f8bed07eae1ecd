"""Delivery: run a superstep's inboxes on their executors.

The scheduler decides *which* inboxes run and *when* the barrier is; a
:class:`Backend` only runs them and hands back each executor's :class:`Outbox`.
:class:`LocalBackend` runs each non-empty inbox as one asyncio task inside a
task group — serial within an inbox, concurrent across inboxes, by
construction (design §1.2, §1.3), structured like a task group (``run_all``).
A superstep with a single inbox runs it in the caller's task: no task is
needed to be concurrent with nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, Protocol, runtime_checkable

from .._exceptions import ExecutorTimeoutError, SubworkflowError, WorkflowRunError
from ._context import Outbox, RunScope, WorkflowContext
from ._events import ExecutorCompletedEvent, ExecutorInvokedEvent
from ._graph import Invoke, Node
from ._routing import Inbox
from ._tasks import run_all
from ._trace import within

__all__ = ["Backend", "ExecutorFailure", "LocalBackend", "Superstep", "traced"]

# A call that returns after this many times its timeout held the event loop.
BLOCKED_FACTOR = 1.5


class ExecutorFailure(Exception):
    """Raised by a backend when a handler call failed for good (retries
    exhausted). ``cause`` is the handler's exception; ``item``, the index of
    the map item whose worker failed."""

    def __init__(
        self, executor_id: str, superstep: int, cause: BaseException, item: int | None = None
    ) -> None:
        super().__init__(executor_id, superstep, cause)
        self.executor_id = executor_id
        self.superstep = superstep
        self.cause = cause
        self.item = item


@dataclass(slots=True)
class Superstep:
    """One superstep's work: the inboxes in schedule order, and the state
    committed at the previous barrier (read-only for the backend)."""

    number: int
    scope: RunScope
    batches: Sequence[tuple[Node, Inbox]]
    committed: Mapping[str, Any]
    failures: list[ExecutorFailure] = field(default_factory=list)


@runtime_checkable
class Backend(Protocol):
    """Runs inboxes. Must return one :class:`Outbox` per batch, in batch order,
    or raise :class:`ExecutorFailure` (first failure first in
    ``Superstep.failures``); must leave nothing running when it returns or
    raises, including on cancellation. A backend may also define
    ``async finish_run(scope)``, awaited with the run's :class:`RunScope`
    when a run ends however it ends (a distributed backend brings executor
    state back and tears down there). One backend object may serve several
    runs at once: keep per-run things by ``work.scope``."""

    async def run_superstep(self, work: Superstep) -> list[Outbox]: ...


class LocalBackend:
    """The in-process asyncio backend (the default)."""

    async def run_superstep(self, work: Superstep) -> list[Outbox]:
        batches = work.batches
        if len(batches) == 1:
            node, inbox = batches[0]
            return [await run_inbox(work, node, inbox)]
        return await run_all([run_inbox(work, node, inbox) for node, inbox in batches])


async def run_inbox(work: Superstep, node: Node, inbox: Inbox) -> Outbox:
    """Process one executor's inbox serially; the reusable heart of a backend
    (a map's inbox runs item by item on fresh workers: ``run_map``)."""
    if node.map is not None:
        from ._map import run_map  # the rarer case, kept out of this module's way

        return await run_map(work, node, inbox)
    step = work.number
    ctx: WorkflowContext[Any, Any] = WorkflowContext(
        work.scope, node.id, step, work.committed, node.responds
    )
    guarded = node.retry is not None or node.timeout is not None
    invoke = node.invoke
    node_id = node.id
    emit = ctx._emit
    trace = work.scope.trace
    started_event = (ExecutorInvokedEvent, node_id, step)  # a call record: see materialize
    try:
        for _source, message in inbox:
            emit(started_event)
            started = perf_counter()
            try:
                if guarded:
                    await invoke_guarded(node, invoke, message, ctx, step)
                elif trace is None:
                    await invoke(message, ctx)
                else:
                    await traced(trace, node_id, step, message, 1, invoke(message, ctx))
            except PASSED_THROUGH:
                raise
            except BaseException as caught:  # sys.exit(), a BaseException of its own: fails it too
                error = handler_failure(caught)
                failure = ExecutorFailure(node_id, step, error)
                work.failures.append(failure)
                raise failure from error
            if ctx._pending:
                ctx._flush_outputs()
            emit((ExecutorCompletedEvent, node_id, step, perf_counter() - started))
    finally:
        outbox = ctx._close()
    return outbox


# What a handler raises that is not its failure: Ctrl-C (the run is
# cancelled) and GeneratorExit (its coroutine is being closed). Anything else
# it raises - an Exception, SystemExit, a BaseException of a library's own
# (pytest.fail's) - fails it, whether its inbox ran alone or beside others.
PASSED_THROUGH = (KeyboardInterrupt, GeneratorExit)


def being_cancelled() -> bool:
    """Whether the current task is being cancelled (its run stopped, or a
    sibling inbox failed): a handler's error then is the cancel's doing."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def handler_failure(caught: BaseException) -> BaseException:
    """The error a handler call fails with, for what it raised (but
    ``PASSED_THROUGH``): itself, or for a ``CancelledError`` while its run
    was not being cancelled the ``stray_cancel`` error. While the run is
    being cancelled, an error is the cancel's doing: it cancels (raised)."""
    if isinstance(caught, asyncio.CancelledError):
        return stray_cancel(caught)
    if being_cancelled():
        raise asyncio.CancelledError from caught
    return caught


def stray_cancel(exc: asyncio.CancelledError) -> RuntimeError:
    """The handler's failure for a ``CancelledError`` it raised while its
    task was not being cancelled (it awaited a future or task something
    else cancelled): the run did not ask to stop, so it must not end
    ``CANCELLED``. Re-raises ``exc`` when the task is being cancelled."""
    if being_cancelled() or asyncio.current_task() is None:
        raise exc
    error = RuntimeError(
        "the handler raised CancelledError though its run was not cancelled (it awaited "
        "a future or task that something else cancelled)"
    )
    error.__cause__ = exc
    return error


async def traced(
    trace: Any,
    executor_id: str,
    step: int,
    message: Any,
    attempt: int,
    call: Awaitable[None],
    item: int | None = None,
) -> None:
    """Await a handler call inside its span (current while it runs); a map's
    worker's span says which item it handles."""
    await within(trace.handler(executor_id, step, message, attempt, item), call)


async def invoke_guarded(
    node: Node, invoke: Invoke, message: Any, ctx: WorkflowContext[Any, Any], step: int
) -> None:
    """One handler call under the node's retry policy and timeout."""
    policy = node.retry
    attempts = policy.attempts if policy is not None else 1
    attempt = 1
    trace = ctx._scope.trace
    while True:
        mark = ctx._mark()
        try:
            try:
                call = _invoke_with_timeout(node, invoke, message, ctx, step)
                if trace is None:
                    await call
                else:  # (a span per attempt)
                    await traced(trace, node.id, step, message, attempt, call, ctx._item)
                return
            except asyncio.CancelledError as cancelled:  # (retried like the failure it is)
                raise stray_cancel(cancelled) from cancelled
        except Exception as exc:
            ctx._rollback(mark)
            if policy is None or attempt >= attempts or not policy.should_retry(exc):
                raise
            if being_cancelled():  # (the handler turned a real cancel into an error)
                raise
            delay = policy.delay(attempt)
            where = (
                f"executor {node.id!r}" if ctx._item is None else f"map {node.id!r}[{ctx._item}]"
            )
            ctx._warn(
                f"{where}: attempt {attempt}/{attempts} failed with "
                f"{type(exc).__name__}: {exc}; retrying in {delay:g} s"
            )
            attempt += 1
            if delay:
                await asyncio.sleep(delay)


async def _invoke_with_timeout(
    node: Node, invoke: Invoke, message: Any, ctx: WorkflowContext[Any, Any], step: int
) -> None:
    if node.timeout is None:
        await invoke(message, ctx)
        return
    deadline = asyncio.timeout(node.timeout)
    started = perf_counter()
    try:
        async with deadline:
            await invoke(message, ctx)
    except TimeoutError as exc:
        if deadline.expired():
            raise ExecutorTimeoutError(node.id, node.timeout, step) from exc
        raise
    took = perf_counter() - started
    if took > node.timeout * BLOCKED_FACTOR:
        # Only a call that never gave the loop a turn after its deadline can
        # finish this late: nothing can interrupt code that holds the loop.
        ctx._warn(
            f"executor {node.id!r}: a handler call took {took:.2f} s, far beyond its "
            f"timeout={node.timeout:g} s, because it held the event loop (blocking or "
            "CPU-bound code in an async handler: time.sleep, a synchronous client, a long "
            "computation) so the timeout could not interrupt it; its results were kept. "
            "Await non-blocking calls, or make the handler sync (it then runs in a thread "
            "and times out on time)"
        )


# How much of an exception's message a run's error repeats (the exception
# itself, its cause, keeps all of it): a 10 MB message must not be copied
# into every event, status record and log line that names the failure.
SHOWN_ERROR = 2_000


def error_line(error: BaseException, limit: int | None = None) -> str:
    """``Type: message`` of an exception, even one whose ``str()`` fails;
    past ``limit`` characters of message, cut with a note of how much."""
    try:
        text = str(error)
    except Exception as failed:
        text = f"(its str() raised {type(failed).__name__})"
    if limit is not None and len(text) > limit:
        text = f"{text[:limit]}… ({len(text) - limit:,} more characters)"
    return f"{type(error).__name__}: {text}"


def failure_error(failure: ExecutorFailure) -> WorkflowRunError:
    """The ``WorkflowRunError`` that ``run()`` raises for a failed executor,
    its ``__cause__`` set: what the handler raised — or, for a child's
    ``SubworkflowError`` raised again as the run's, what that one came from
    (each level of a nested failure once in the chain)."""
    cause = failure.cause
    if isinstance(cause, SubworkflowError) and cause.executor_id == failure.executor_id:
        # (so that ``except SubworkflowError`` sees a child's failure)
        again = SubworkflowError(
            cause.path, cause.detail, superstep=failure.superstep, items=cause.items
        )
        again.__cause__ = cause.__cause__
        return again
    if isinstance(cause, WorkflowRunError) and cause.executor_id == failure.executor_id:
        text = str(cause)
    else:
        text = (
            f"executor {failure.executor_id!r} failed in superstep {failure.superstep}: "
            f"{error_line(cause, SHOWN_ERROR)}"
        )
    for note in getattr(cause, "__notes__", ()):  # (the item of a map, say)
        text += f" ({note})"
    error = WorkflowRunError(text, executor_id=failure.executor_id, superstep=failure.superstep)
    error.__cause__ = cause
    return error
