"""The store's worker thread: calls run in order off the loop, errors come
back, a cancelled caller does not stop the call, and the thread ends with
``stop`` or when its owner is collected."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from pathlib import Path

import pytest

import stepgraph as sg
from stepgraph._checkpoint._worker import Worker


class Owner:
    pass


async def test_calls_run_in_order_on_one_thread_off_the_loop() -> None:
    worker = Worker("test-worker", owner=(owner := Owner()))
    seen: list[tuple[int, str]] = []

    def note(i: int) -> int:
        seen.append((i, threading.current_thread().name))
        return i * 2

    results = await asyncio.gather(*(worker.run(note, i) for i in range(20)))
    assert results == [i * 2 for i in range(20)]
    assert seen == [(i, "test-worker") for i in range(20)]
    assert worker.call(note, 20) == 40
    [thread] = worker._current.threads  # type: ignore[union-attr]
    worker.stop()
    assert not thread.is_alive()
    del owner


async def test_errors_come_back_to_the_caller() -> None:
    worker = Worker("test-worker", owner=(owner := Owner()))

    def fail() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        await worker.run(fail)
    with pytest.raises(OSError, match="disk full"):
        worker.call(fail)
    assert await worker.run(int, "7") == 7  # still serving
    worker.stop()
    del owner


async def test_a_cancelled_caller_does_not_stop_the_call() -> None:
    worker = Worker("test-worker", owner=(owner := Owner()))
    finished = threading.Event()

    def slow() -> None:
        time.sleep(0.05)
        finished.set()

    task = asyncio.ensure_future(worker.run(slow))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await worker.run(finished.is_set)  # ran to its end, in order
    worker.stop()
    del owner


def test_the_thread_ends_when_its_owner_is_collected() -> None:
    owner = Owner()
    worker = Worker("test-worker", owner=owner)
    assert worker.call(int, "1") == 1
    [thread] = worker._current.threads  # type: ignore[union-attr]
    del owner
    gc.collect()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_a_closed_store_can_be_used_again(tmp_path: Path) -> None:
    store = sg.SqliteCheckpointStore(tmp_path / "again.sqlite")
    assert asyncio.run(store.list()) == []
    [thread] = store._worker._current.threads  # type: ignore[union-attr]
    store.close()
    assert not thread.is_alive() and store._worker._current is None
    assert asyncio.run(store.list()) == []  # opens the file and a thread again
    store.close()


async def test_threads_serve_calls_at_once_up_to_their_number() -> None:
    worker = Worker("test-crew", owner=(owner := Owner()), threads=3)
    started = threading.Semaphore(0)
    release = threading.Event()
    names: list[str] = []

    def wait() -> int:
        names.append(threading.current_thread().name)
        started.release()
        assert release.wait(5)
        return threading.get_ident()

    calls = [asyncio.ensure_future(worker.run(wait)) for _ in range(5)]
    for _ in range(3):  # three run at once, though none has ended
        assert await asyncio.to_thread(started.acquire, True, 5)
    assert not await asyncio.to_thread(started.acquire, True, 0.1)  # the fourth waits
    release.set()
    idents = await asyncio.gather(*calls)
    assert len(set(idents)) == 3 and names == ["test-crew"] * 5
    crew = worker._current
    assert crew is not None and len(crew.threads) == 3
    assert await worker.run(int, "4") == 4  # an idle thread takes it: no fourth thread
    assert len(crew.threads) == 3 and crew.queued == 0
    worker.stop()
    assert not any(t.is_alive() for t in crew.threads)
    with pytest.raises(ValueError, match="at least one thread"):
        Worker("none", owner=owner, threads=0)
    del owner
