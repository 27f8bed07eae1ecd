"""``run_all``: run coroutines as tasks, structured like a task group.

A superstep's inboxes run one task each; the superstep ends when all of them
have, and no task outlives it: when one fails the others are cancelled and
waited for, and when the caller is cancelled so are they all — the rules of
``asyncio.TaskGroup`` (design §1.8, §1.9). This is that, cut to what a
superstep needs: one callback per task instead of a group's bookkeeping,
which the widest supersteps pay once per inbox (about 1 µs each here).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from functools import partial
from typing import Any, TypeVar

__all__ = ["run_all", "to_the_end"]

T = TypeVar("T")


async def run_all(coroutines: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """The results in order; if any task fails, the others are cancelled and
    a ``BaseExceptionGroup`` of the failures is raised once all have ended."""
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(c) for c in coroutines]
    waiter = loop.create_future()
    remaining = len(tasks)

    def ended(task: asyncio.Task[T]) -> None:
        nonlocal remaining
        remaining -= 1
        if not waiter.done() and (
            remaining == 0 or (not task.cancelled() and task.exception() is not None)
        ):
            waiter.set_result(None)

    for task in tasks:
        task.add_done_callback(ended)
    try:
        await waiter
    except BaseException:  # the caller was cancelled: so are the tasks
        await _cancel_and_wait(tasks)
        raise
    if remaining:  # a task failed: cancel the rest
        await _cancel_and_wait(tasks)
    failures = [t.exception() for t in tasks if not t.cancelled() and t.exception() is not None]
    if failures:
        raise BaseExceptionGroup("a superstep's tasks failed", failures)  # type: ignore[type-var]
    return [t.result() for t in tasks]


async def _cancel_and_wait(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel the tasks still running and wait until every one has ended,
    even if this waiting is itself cancelled again (nothing is left behind;
    the caller re-raises its cancellation)."""
    for task in tasks:
        task.cancel()
    cancelled_again = False
    while not all(task.done() for task in tasks):
        try:
            await asyncio.wait([t for t in tasks if not t.done()])
        except asyncio.CancelledError:
            cancelled_again = True
    for task in tasks:
        if not task.cancelled():
            task.exception()  # seen: asyncio need not log it as never retrieved
    if cancelled_again:
        raise asyncio.CancelledError


async def to_the_end(coroutine: Coroutine[Any, Any, T]) -> T:
    """``coroutine``'s result, awaited to its end even if the caller is
    cancelled meanwhile (a run's last checkpoints must be stored before its
    caller sees the cancellation); that cancellation is raised after."""
    task = asyncio.ensure_future(coroutine)
    cancelled = False
    while not task.done():
        # A waiter of its own: cancelling the caller cancels the waiter, never
        # the task (``asyncio.wait`` does the same with more bookkeeping).
        waiter: asyncio.Future[None] = task.get_loop().create_future()
        task.add_done_callback(partial(_wake, waiter))
        try:
            await waiter
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not task.cancelled():
            task.exception()  # seen (the cancellation wins)
        raise asyncio.CancelledError
    return task.result()


def _wake(waiter: asyncio.Future[None], _: object) -> None:
    if not waiter.done():
        waiter.set_result(None)
