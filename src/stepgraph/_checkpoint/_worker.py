"""One thread that runs a store's blocking calls, in order, off the loop.

Cheaper per call than ``run_in_executor`` on a one-thread pool (no
``concurrent.futures`` future to wrap, no pool bookkeeping): a call is a
queue put, the call itself, and one ``call_soon_threadsafe`` back to the loop
that asked — measured 21 vs 49 µs per round trip here. With ``sync``
durability a run waits for one round trip per checkpoint. Not bound to any
loop: each call carries its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["Worker"]

T = TypeVar("T")
_Done = Callable[[Any, BaseException | None], None]
_Job = tuple[Callable[..., Any], tuple[Any, ...], _Done]


class Worker:
    """Runs calls on its own thread, started on first use; ``stop`` ends it,
    and so does collecting ``owner`` (a store dropped without ``close``)."""

    def __init__(self, name: str, owner: object) -> None:
        self._name = name
        self._lock = threading.Lock()
        # Each thread has its own queue: a call submitted while an earlier
        # thread is being stopped goes to a new thread, never to a dying one.
        self._current: tuple[threading.Thread, queue.SimpleQueue[_Job | None]] | None = None
        weakref.finalize(owner, self._stop_soon)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the thread; the caller's task waits without
        blocking its loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def done(result: Any, error: BaseException | None) -> None:
            with contextlib.suppress(RuntimeError):  # that loop closed: nobody waits
                loop.call_soon_threadsafe(_settle, future, result, error)

        self._submit((fn, args, done))
        return await future

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the thread, blocking the calling thread."""
        future: Future[T] = Future()

        def done(result: Any, error: BaseException | None) -> None:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        self._submit((fn, args, done))
        return future.result()

    def stop(self) -> None:
        """Let the calls already queued finish, then end the thread."""
        thread = self._stop_soon()
        if thread is not None:
            thread.join()

    def _stop_soon(self) -> threading.Thread | None:
        with self._lock:
            current, self._current = self._current, None
        if current is None:
            return None
        thread, jobs = current
        jobs.put(None)
        return thread

    def _submit(self, job: _Job) -> None:
        with self._lock:
            if self._current is None:
                jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
                thread = threading.Thread(target=_serve, args=(jobs,), name=self._name, daemon=True)
                thread.start()
                self._current = (thread, jobs)
            self._current[1].put(job)


def _serve(jobs: queue.SimpleQueue[_Job | None]) -> None:
    # Holds only its queue, so the owner can be collected while this waits.
    while (job := jobs.get()) is not None:
        _run_job(job)
        del job  # keep nothing alive while waiting for the next call


def _run_job(job: _Job) -> None:
    fn, args, done = job
    try:
        result = fn(*args)
    except BaseException as error:  # handed to the caller, which re-raises it
        done(None, error)
    else:
        done(result, None)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():  # the caller gave up; the call ran all the same
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
