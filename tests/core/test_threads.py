"""Sync handlers run on stepgraph's own bounded thread pool: a call that
times out cannot be stopped, but its thread is abandoned (and reported)
rather than starving later handlers, and ``asyncio.run`` does not wait for
it."""

from __future__ import annotations

import asyncio
import contextvars
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import stepgraph as sg
from stepgraph._core._threads import ThreadPool, sync_pool

ROOT = Path(__file__).resolve().parents[2]


async def test_abandoned_calls_do_not_starve_later_handlers() -> None:
    release = threading.Event()
    width = sync_pool.limit + 8  # more stuck calls than the pool has threads

    def stuck(name: str) -> sg.FunctionExecutor:
        def block(n: int) -> None:
            release.wait(30)

        return sg.executor(id=name, timeout=0.2)(block)

    @sg.executor(id="go")
    async def go(n: int) -> int:
        return n

    stuck_ones = [stuck(f"stuck{i}") for i in range(width)]
    blocked = sg.WorkflowBuilder(start=go).add_fan_out(go, stuck_ones).build()
    try:
        events = []
        try:
            async for event in blocked.stream(1):
                events.append(event)
        except sg.WorkflowRunError as failed:
            assert isinstance(failed.__cause__, sg.ExecutorTimeoutError)
        notes = [e.message for e in events if isinstance(e, sg.WarningEvent)]
        # Every call that had a thread is abandoned, and said so (the pool's
        # worth at least; queued ones may start as abandoned ones leave).
        assert sync_pool.limit <= len(notes) <= width, notes[:2]
        assert (
            "a sync handler call was still running when it timed out or was cancelled" in (notes[0])
        )
        assert sync_pool.abandoned >= sync_pool.limit

        @sg.executor(id="quick", timeout=2)
        def quick(n: int) -> int:
            return n + 1

        @sg.executor(id="sink")
        async def sink(n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
            await ctx.yield_output(n)

        later = sg.WorkflowBuilder(start=quick).add_edge(quick, sink).build()
        assert (await later.run(1)).outputs == [2]  # a thread was free at once
    finally:
        release.set()
    for _ in range(200):  # the abandoned threads end once their calls return
        if sync_pool.abandoned == 0:
            break
        await asyncio.sleep(0.01)
    assert sync_pool.abandoned == 0


def test_asyncio_run_does_not_wait_for_an_abandoned_thread() -> None:
    script = """
import asyncio, time
import pytest

import stepgraph as sg

@sg.executor(id="sleeper", timeout=0.2)
def sleeper(n: int) -> None:
    time.sleep(60)

try:
    asyncio.run(sg.WorkflowBuilder(start=sleeper).build().run(1))
except sg.WorkflowRunError as error:
    assert isinstance(error.__cause__, sg.ExecutorTimeoutError)
    print("timed out", flush=True)
"""
    # Were asyncio.run to wait for the thread, this would take a minute.
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "timed out\n"


async def test_pool_bounds_busy_threads_and_keeps_context() -> None:
    pool = ThreadPool(limit=2)
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var")
    var.set("from the caller")
    active = peak = 0
    lock = threading.Lock()

    def work(n: int) -> tuple[int, str]:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.02)
        with lock:
            active -= 1
        return n * 2, var.get()

    results = await asyncio.gather(*(pool.run(work, n) for n in range(6)))
    assert results == [(n * 2, "from the caller") for n in range(6)]
    assert peak == 2


async def test_a_cancelled_caller_before_its_turn_drops_the_call() -> None:
    pool = ThreadPool(limit=1)
    release = threading.Event()
    ran: list[str] = []

    def hold() -> None:
        release.wait(5)
        ran.append("hold")

    def never() -> None:
        ran.append("never")

    first = asyncio.ensure_future(pool.run(hold))
    await asyncio.sleep(0.05)
    queued = asyncio.ensure_future(pool.run(never))
    await asyncio.sleep(0.01)
    queued.cancel()
    await asyncio.gather(queued, return_exceptions=True)
    release.set()
    await first
    await asyncio.sleep(0.05)
    assert ran == ["hold"] and pool.abandoned == 0


async def test_a_sync_handler_raising_stop_iteration_fails_the_run() -> None:
    """A future refuses StopIteration (``next()`` with nothing left): the
    run must fail naming the executor, not wait for ever."""

    @sg.executor(id="first_match")
    def first_match(items: list[int]) -> int:
        return next(i for i in items if i > 10)

    workflow = sg.WorkflowBuilder(start=first_match).build()
    with pytest.raises(sg.WorkflowRunError, match="'first_match'.*StopIteration") as caught:
        await asyncio.wait_for(workflow.run([1, 2, 3]), 10)
    assert isinstance(caught.value.__cause__.__cause__, StopIteration)
    assert (await workflow.run([1, 20])).status is sg.RunStatus.IDLE  # (the pool serves on)
