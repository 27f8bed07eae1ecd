"""``RunStream``: one run's events, live, as ``Workflow.stream`` returns them.

The run starts when the stream is first iterated or entered. Leaving an
``async with`` block, calling ``aclose()``, or dropping the stream cancels
the run, so a consumer that stops listening never leaves a run going on
behind it (and the workflow busy)::

    async with workflow.stream(x) as events:
        async for event in events:
            if event.kind == "output":
                break            # the run is cancelled as the block exits
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any

from ._core import Event, RunUsage, materialize

__all__ = ["RunStream"]

_END: Any = object()


class RunStream(AsyncIterator[Event]):
    """Events as they happen. A failed run yields its ``failed`` event and
    then raises like ``run()``."""

    __slots__ = ("__weakref__", "_driver", "_queue", "_start")

    def __init__(self, start: Callable[[Callable[[Event], None]], Awaitable[Any]]) -> None:
        # ``start(emit)`` runs the run; called on first use.
        self._start: Callable[[Callable[[Event], None]], Awaitable[Any]] | None = start
        self._queue: asyncio.Queue[Event] | None = None
        self._driver: asyncio.Task[Any] | None = None

    def _begin(self) -> asyncio.Queue[Event]:
        if self._queue is None:
            start, self._start = self._start, None
            queue: asyncio.Queue[Event] = asyncio.Queue()
            self._queue = queue
            if start is None:  # closed before it began: a run that never starts
                queue.put_nowait(_END)
                return queue

            async def drive() -> Any:  # holds the queue, never the stream
                try:
                    # Called here, not before: a run cancelled before it began
                    # has acquired nothing that it would have to release.
                    return await start(queue.put_nowait)
                finally:
                    queue.put_nowait(_END)

            self._driver = asyncio.get_running_loop().create_task(drive())
        return self._queue

    def __aiter__(self) -> RunStream:
        return self

    async def __anext__(self) -> Event:
        queue = self._begin()
        try:
            event = await queue.get()
        except asyncio.CancelledError:
            await self.aclose()  # the listener was cancelled: so is its run
            raise
        if event is _END:
            queue.put_nowait(_END)  # later calls end too
            driver = self._driver
            if driver is not None and not driver.cancelled():
                driver.result()  # the run's failure, raised here
            raise StopAsyncIteration
        return materialize(event)

    async def aclose(self) -> None:
        """Cancel the run if it is still going, and wait until it stopped."""
        driver = self._driver
        if driver is None:
            self._start = None  # never started: never will
            return
        if not driver.done():
            driver.cancel()
        await asyncio.wait({driver})
        if not driver.cancelled():
            with contextlib.suppress(BaseException):
                driver.result()  # retrieved: the caller chose to stop listening

    def _ended(self, name: str) -> Any:
        """The run's outcome's ``name`` once it ended (``None`` before, or
        if it failed or was cancelled)."""
        driver = self._driver
        if driver is None or not driver.done() or driver.cancelled() or driver.exception():
            return None
        return getattr(driver.result(), name, None)

    @property
    def usage(self) -> RunUsage | None:
        """The tokens the run's model calls used, by executor, once it ended
        (``None`` before, or if it failed or was cancelled)."""
        usage = self._ended("usage")
        return usage if isinstance(usage, RunUsage) else None

    @property
    def last_checkpoint(self) -> str | None:
        """The id of the checkpoint the run stands at once it ended (its
        newest, or the one it continued from when it wrote none; ``None``
        before, without a store, or if it failed or was cancelled)."""
        last = self._ended("last_checkpoint")
        return last if isinstance(last, str) else None

    def drain(self) -> list[Event]:
        """The events the run emitted that were not read, once it stopped
        (after ``aclose()``, or when the listener was cancelled): what a
        listener interrupted by Ctrl-C still has to show."""
        queue, events = self._queue, []
        while queue is not None and not queue.empty():
            event = queue.get_nowait()
            if event is _END:
                queue.put_nowait(_END)
                break
            events.append(materialize(event))
        return events

    async def __aenter__(self) -> RunStream:
        self._begin()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        driver = self._driver
        if driver is not None and driver.done():
            if not driver.cancelled():
                driver.exception()  # (seen: the listener left before the run failed)
        elif driver is not None:
            with contextlib.suppress(RuntimeError):  # its loop is closed: nothing runs
                driver.get_loop().call_soon_threadsafe(driver.cancel)
