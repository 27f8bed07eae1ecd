"""Threads that run a store's blocking calls off the loop: one (calls run
in order: the SQLite store), or up to ``threads`` taking calls from one
queue (the Postgres store, a connection each).

Cheaper per call than ``run_in_executor`` (no ``concurrent.futures`` future
to wrap, no pool bookkeeping): a call is a queue put, the call itself, and
one ``call_soon_threadsafe`` back to the loop that asked — measured 21 vs
49 µs per round trip here. With ``sync`` durability a run waits for one
round trip per checkpoint. Not bound to any loop: each call carries its own.
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
    """Runs calls on threads of its own, started as calls need them (at most
    ``threads``; with one, calls run in the order they came); ``stop`` ends
    them, and so does collecting ``owner`` (a store dropped without ``close``)."""

    def __init__(self, name: str, owner: object, threads: int = 1) -> None:
        if threads < 1:
            raise ValueError(f"a worker needs at least one thread, not {threads}")
        self._name = name
        self._most = threads
        self._lock = threading.Lock()
        # The threads serving now and their queue: a call submitted while
        # earlier threads are being stopped goes to new ones, never to a dying one.
        self._current: _Crew | None = None
        weakref.finalize(owner, self._stop_soon)

    async def run(self, fn: Callable[..., T], *args: Any, to_the_end: bool = False) -> T:
        """``fn(*args)`` on the thread; the caller's task waits without
        blocking its loop. Cancelled meanwhile, the call runs on all the
        same; ``to_the_end``: the cancel goes through only once it has ended
        (a save: what the caller does next — recording how its run ended,
        giving back its lease — must come after it). A second cancel while
        it waits so goes through at once."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        ended: asyncio.Future[None] | None = loop.create_future() if to_the_end else None

        def done(result: Any, error: BaseException | None) -> None:
            with contextlib.suppress(RuntimeError):  # that loop closed: nobody waits
                loop.call_soon_threadsafe(_settle, future, result, error, ended)

        self._submit((fn, args, done))
        if ended is None:
            return await future
        try:
            return await future
        except asyncio.CancelledError:
            if not ended.done():
                await ended
            raise

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
        """Let the calls already queued finish, then end the threads."""
        for thread in self._stop_soon():
            if thread is not threading.current_thread():  # (stopped from a call)
                thread.join()

    def _stop_soon(self) -> list[threading.Thread]:
        with self._lock:
            crew, self._current = self._current, None
        if crew is None:
            return []
        for _ in crew.threads:
            crew.jobs.put(None)
        return crew.threads

    def _submit(self, job: _Job) -> None:
        with self._lock:
            crew = self._current
            if crew is None:
                crew = self._current = _Crew()
            with crew.lock:
                more = crew.idle <= crew.queued and len(crew.threads) < self._most
                crew.queued += 1
            if more:
                # (a thread each while calls wait for one; a guess: at worst
                # one more thread than needed, never past ``threads``)
                thread = threading.Thread(target=_serve, args=(crew,), name=self._name, daemon=True)
                thread.start()
                crew.threads.append(thread)
            crew.jobs.put(job)


class _Crew:
    """Threads serving one queue, and a count of idle ones."""

    __slots__ = ("idle", "jobs", "lock", "queued", "threads")

    def __init__(self) -> None:
        self.lock = threading.Lock()  # (the counts change on every thread)
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        self.idle = 0  # threads waiting for a call
        self.queued = 0  # calls put and not yet taken


def _serve(crew: _Crew) -> None:
    # Holds only its crew, so the owner can be collected while this waits.
    jobs, lock = crew.jobs, crew.lock
    while True:
        with lock:
            crew.idle += 1
        job = jobs.get()
        with lock:
            crew.idle -= 1
            if job is not None:
                crew.queued -= 1
        if job is None:
            return
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


def _settle(
    future: asyncio.Future[Any],
    result: Any,
    error: BaseException | None,
    ended: asyncio.Future[None] | None,
) -> None:
    if ended is not None and not ended.done():
        ended.set_result(None)
    if future.cancelled():  # the caller gave up; the call ran all the same
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
