"""``to_the_end``: what a run must finish however it is stopped (its last
checkpoints) is awaited through a cancellation, which is raised after."""

from __future__ import annotations

import asyncio

import pytest

from stepgraph._core._tasks import to_the_end


async def test_a_cancelled_caller_waits_for_the_end_then_is_cancelled() -> None:
    steps: list[str] = []

    async def finish() -> str:
        steps.append("start")
        await asyncio.sleep(0.05)
        steps.append("end")
        return "done"

    async def caller() -> str:
        result = await to_the_end(finish())
        steps.append("after")  # never: the cancellation is raised instead
        return result

    task = asyncio.ensure_future(caller())
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.sleep(0)
    task.cancel()  # twice: still waits
    with pytest.raises(asyncio.CancelledError):
        await task
    assert steps == ["start", "end"]


async def test_without_a_cancel_the_result_or_error_comes_back() -> None:
    async def ok() -> int:
        await asyncio.sleep(0)
        return 3

    async def fails() -> None:
        raise OSError("disk full")

    assert await to_the_end(ok()) == 3
    with pytest.raises(OSError, match="disk full"):
        await to_the_end(fails())
