"""The threads that run sync handlers: stepgraph's own bounded pool.

Not the event loop's default executor, for two reasons. A thread cannot be
killed, so a sync handler whose call timed out or was cancelled keeps its
thread until it returns; here such a thread is *abandoned* — it stops
counting against the bound, another thread takes its place, and it ends
when its call returns — so abandoned calls never starve later handlers.
And ``asyncio.run`` waits for its default executor's threads when it
finishes; these are daemon threads it does not know, so a run returns as
soon as its own work is done.

Threads start when needed (up to ``limit`` busy at once) and end after a
minute without work. Calls run in a copy of the caller's context variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["ThreadPool", "sync_pool"]

T = TypeVar("T")
IDLE_SECONDS = 60.0

_QUEUED, _RUNNING, _DONE, _DROPPED = range(4)


class _Job:
    __slots__ = ("abandoned", "args", "context", "fn", "future", "loop", "state")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
    ) -> None:
        self.fn = fn
        self.args = args
        self.context = contextvars.copy_context()
        self.loop = loop
        self.future = future
        self.state = _QUEUED
        self.abandoned = False


class ThreadPool:
    """Runs blocking calls on at most ``limit`` busy threads (abandoned ones
    not counted)."""

    def __init__(self, limit: int, name: str = "stepgraph-sync") -> None:
        if limit < 1:
            raise ValueError("a thread pool needs a limit of at least 1")
        self.limit = limit
        self._name = name
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[_Job] = deque()
        self._live = 0  # threads counted against the limit
        self._waiting = 0  # of those, waiting for a job
        self._abandoned = 0  # threads still running a call nobody waits for

    @property
    def abandoned(self) -> int:
        """Threads still running a call that timed out or was cancelled."""
        return self._abandoned

    async def run(
        self,
        fn: Callable[..., T],
        *args: Any,
        on_abandon: Callable[[int], None] | None = None,
    ) -> T:
        """``fn(*args)`` on a pool thread. If the caller is cancelled (a
        timeout included) while the call runs, the call is abandoned and
        ``on_abandon`` gets the number of abandoned threads."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        job = _Job(fn, args, loop, future)
        self._submit(job)
        try:
            return await future
        except asyncio.CancelledError:
            if self._abandon(job) and on_abandon is not None:
                on_abandon(self._abandoned)
            raise

    def _submit(self, job: _Job) -> None:
        with self._cond:
            self._queue.append(job)
            self._cond.notify()
            self._grow()

    def _grow(self) -> None:
        """Start a thread if queued jobs outnumber the waiting threads (call
        with the lock held)."""
        if len(self._queue) > self._waiting and self._live < self.limit:
            self._live += 1
            threading.Thread(target=self._serve, name=self._name, daemon=True).start()

    def _abandon(self, job: _Job) -> bool:
        """The caller gave up: drop a queued job; let a running one go on
        without its place in the pool. True if it was running."""
        with self._cond:
            if job.state == _QUEUED:
                job.state = _DROPPED
                self._queue.remove(job)
                return False
            if job.state != _RUNNING:
                return False
            job.abandoned = True
            self._abandoned += 1
            self._live -= 1
        # Serve queued calls on the loop's next turn, not now: when a whole
        # superstep is being cancelled, its queued calls are dropped first.
        job.loop.call_soon(self._regrow)
        return True

    def _regrow(self) -> None:
        with self._cond:
            self._grow()

    def _serve(self) -> None:
        while True:
            with self._cond:
                self._waiting += 1
                while not self._queue:
                    if not self._cond.wait(IDLE_SECONDS) and not self._queue:
                        self._waiting -= 1
                        self._live -= 1
                        return  # no work for a while
                self._waiting -= 1
                job = self._queue.popleft()
                job.state = _RUNNING
            try:
                result, error = job.context.run(job.fn, *job.args), None
            except BaseException as exc:  # handed to the caller, which re-raises it
                result, error = None, exc
            with self._cond:
                job.state = _DONE
                if job.abandoned:
                    self._abandoned -= 1
                    return  # its place was given to another thread
            with contextlib.suppress(RuntimeError):  # that loop closed: nobody waits
                job.loop.call_soon_threadsafe(_settle, job.future, result, error)
            del job, result, error  # hold nothing while waiting for the next call


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller gave up; the call ran all the same
        return
    if isinstance(error, StopIteration):
        # (a future refuses it, and would never settle: the run would hang)
        wrapped = RuntimeError(f"the call raised StopIteration{f': {error}' if str(error) else ''}")
        wrapped.__cause__ = error
        error = wrapped
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


sync_pool = ThreadPool(limit=max(32, (os.cpu_count() or 1) + 4))
"""The pool every sync handler runs on."""
