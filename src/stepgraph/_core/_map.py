"""Running a map node's inbox: each message on a fresh worker, concurrently.

``add_map(source, worker, id=..., to=...)`` makes a node whose inbox is not
processed serially by one executor but item by item, each item by its own
new worker (so the serial-inbox rule holds per worker, by construction), at
most ``max_concurrency`` at a time. The barrier then sees one message from
the map — the list of everything the workers sent, in the order of the
items (the source's send order), whatever finished first — and each item's
state writes as those of a writer of its own, in item order.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from time import perf_counter
from typing import Any

from .._exceptions import RequestError, RoutingError
from ._backend import (
    PASSED_THROUGH,
    ExecutorFailure,
    Superstep,
    handler_failure,
    invoke_guarded,
    traced,
)
from ._context import Emit, Outbox, WorkflowContext
from ._events import ExecutorCompletedEvent, ExecutorInvokedEvent
from ._graph import Node
from ._routing import Inbox
from ._tasks import run_all
from ._typing import type_name

__all__ = ["run_map"]


async def run_map(work: Superstep, node: Node, inbox: Inbox) -> Outbox:
    plan = node.map
    assert plan is not None
    step, node_id = work.number, node.id
    slots = asyncio.Semaphore(plan.max_concurrency) if plan.max_concurrency is not None else None
    guarded = node.retry is not None or node.timeout is not None

    async def item(index: int, message: Any) -> Outbox:
        async with slots if slots is not None else contextlib.nullcontext():
            ctx: WorkflowContext[Any, Any] = WorkflowContext(
                work.scope, node_id, step, work.committed, _no_requests(node_id)
            )
            ctx._item = index
            ctx._emit = _tagging(work.scope.emit, index)
            try:
                try:
                    invoke = plan.make()  # this item's own worker
                    ctx._emit((ExecutorInvokedEvent, node_id, step))  # call records
                    started = perf_counter()
                    if guarded:
                        await invoke_guarded(node, invoke, message, ctx, step)
                    elif work.scope.trace is None:
                        await invoke(message, ctx)
                    else:
                        await traced(
                            work.scope.trace, node_id, step, message, 1, invoke(message, ctx), index
                        )
                except PASSED_THROUGH:
                    raise
                except BaseException as caught:
                    exc = handler_failure(caught)
                    exc.add_note(f"item {index} of map {node_id!r}: {_short(message)}")
                    failure = ExecutorFailure(node_id, step, exc, index)
                    work.failures.append(failure)
                    raise failure from exc
                ctx._flush_outputs()
                ctx._emit((ExecutorCompletedEvent, node_id, step, perf_counter() - started))
            finally:
                outbox = ctx._close()
            return outbox

    results = await run_all([item(i, message) for i, (_, message) in enumerate(inbox)])
    merged = Outbox(node_id)
    batch: list[Any] = []
    merged.item_writes = []
    for index, result in enumerate(results):
        for message, target in result.sent:
            if target is not None:
                raise RoutingError(
                    f"item {index} of map {node_id!r} sent to target {target!r}; what a map's "
                    "workers send goes on as one list along the map's edge, so send without "
                    "a target",
                    executor_id=node_id,
                    superstep=step,
                )
            batch.append(message)
        if result.writes:
            merged.item_writes.append((f"{node_id}[{index}]", result.writes))
        if result.outputs:  # (checkpoints keep them, in item order)
            if merged.outputs is None:
                merged.outputs = []
            merged.outputs += result.outputs
    merged.sent.append((batch, None))
    return merged


def _tagging(emit: Emit, index: int) -> Emit:
    """``emit`` for one item's worker: its events carry the item's index.
    Those of a sub-workflow (a ``WorkflowExecutor`` worker's child run) keep
    the ``item`` of their own map: the worker put this one in their
    ``workflow_items``, beside its id in their ``workflow_path``."""

    def tagged(event: Any) -> None:
        if type(event) is tuple:  # a call record stays one (built only if read)
            emit((*event[:3], event[3] if len(event) > 3 else None, index))
        elif event.workflow_path:
            emit(event)
        else:
            emit(replace(event, item=index))

    return tagged


def _short(message: Any) -> str:
    """The item's message, as named in a failure (at most 60 characters)."""
    try:
        text = repr(message)
    except Exception:
        text = f"<{type(message).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def _no_requests(node_id: str) -> Any:
    def refuse(request: Any, response_type: Any) -> bool:
        raise RequestError(
            f"a worker of map {node_id!r} opened a request ({type_name(type(request))}); a "
            "map's workers last one message each, so nothing could take the answer: ask "
            "before the map or after it",
            executor_id=node_id,
        )

    return refuse
