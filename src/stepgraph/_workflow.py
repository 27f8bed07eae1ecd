"""``Workflow``: a built graph that can be run, and its ``RunResult``.

A workflow holds no event-loop-bound object between runs, so the same
instance runs under successive ``asyncio.run`` calls and under uvloop. It runs
one run at a time (``WorkflowBusyError`` otherwise), and an ``Executor``
instance serves one running workflow at a time — so two handler calls of one
executor can never overlap, even across workflows built from shared instances.
Function executors (``@executor``) hold no state of the engine's and may be
shared freely.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ._core import (
    Backend,
    Event,
    LocalBackend,
    MessageTypeError,
    OutputEvent,
    RunScope,
    RunState,
    RunStatus,
    run_supersteps,
    type_name,
)
from ._exceptions import WorkflowBusyError
from ._executor import FunctionExecutor

if TYPE_CHECKING:
    from ._core import Graph
    from ._executor import Executor

__all__ = ["RunResult", "Workflow"]

# id(executor) -> name of the workflow running it. A thread lock, not an
# asyncio one: it is never held across an await and binds to no loop.
_IN_USE: dict[int, str] = {}
_IN_USE_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True, kw_only=True)
class RunResult:
    """What a finished run produced. ``outputs`` are in the order their
    ``output`` events were emitted."""

    run_id: str
    status: RunStatus
    outputs: list[Any] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


class Workflow:
    """A validated workflow; create it with ``WorkflowBuilder(...).build()``."""

    def __init__(
        self,
        *,
        graph: Graph,
        executors: dict[str, Executor],
        max_supersteps: int,
        strict: bool,
        output_ids: frozenset[str] | None,
    ) -> None:
        self._graph = graph
        self._executors = executors
        self._max_supersteps = max_supersteps
        self._strict = strict
        self._output_ids = output_ids
        self._running = False
        # Executors whose instances carry their own state: claimed per run.
        self._claimable = [e for e in executors.values() if not isinstance(e, FunctionExecutor)]

    # -- description -------------------------------------------------------

    @property
    def name(self) -> str:
        return self._graph.name

    @property
    def start(self) -> Executor:
        return self._executors[self._graph.start]

    @property
    def executors(self) -> Mapping[str, Executor]:
        """Executors by id, in registration (schedule) order."""
        return MappingProxyType(self._executors)

    @property
    def graph(self) -> Graph:
        return self._graph

    @property
    def max_supersteps(self) -> int:
        return self._max_supersteps

    @property
    def strict(self) -> bool:
        return self._strict

    @property
    def output_executors(self) -> frozenset[str] | None:
        """The ids whose yields are workflow outputs (``None``: all of them)."""
        return self._output_ids

    def __repr__(self) -> str:
        return f"<Workflow {self.name!r}: {len(self._executors)} executors>"

    # -- running -------------------------------------------------------------

    async def run(self, input: Any = None, *, backend: Backend | None = None) -> RunResult:
        """Run to completion and return the result.

        Raises ``WorkflowRunError`` (original exception chained) when the run
        fails, ``ConvergenceError`` when ``max_supersteps`` is exceeded, and
        ``WorkflowBusyError`` at once if this workflow is already running.
        """
        events: list[Event] = []
        self._acquire()
        run_id, status = await self._run_acquired(input, events.append, backend)
        outputs = [e.data for e in events if type(e) is OutputEvent]
        return RunResult(run_id=run_id, status=status, outputs=outputs, events=events)

    async def stream(
        self,
        input: Any = None,
        *,
        backend: Backend | None = None,
    ) -> AsyncIterator[Event]:
        """Run and yield each event as it happens (no polling). A failed run
        yields its ``failed`` event and then raises like ``run()``. Leaving the
        loop early cancels the run."""
        self._acquire()
        queue: asyncio.Queue[Event | None] = asyncio.Queue()

        async def drive() -> None:
            try:
                await self._run_acquired(input, queue.put_nowait, backend)
            finally:
                queue.put_nowait(None)

        driver = asyncio.get_running_loop().create_task(drive())
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            if not driver.done():
                driver.cancel()
            await asyncio.wait({driver})
        if not driver.cancelled():
            driver.result()

    async def _run_acquired(
        self,
        input: Any,
        emit: Any,
        backend: Backend | None,
    ) -> tuple[str, RunStatus]:
        try:
            start = self.start
            if input is None:
                raise MessageTypeError(
                    f"workflow {self.name!r} needs an input message for its start executor "
                    f"{start.id!r}; None is never a message"
                )
            if not start.accepts(input):
                raise MessageTypeError(
                    f"the start executor {start.id!r} of workflow {self.name!r} has no handler "
                    f"for the input {type_name(type(input))} (it handles "
                    f"{', '.join(type_name(t) for t in start.input_types)})",
                    executor_id=start.id,
                )
            scope = RunScope(
                run_id=uuid.uuid4().hex,
                workflow_name=self.name,
                strict=self._strict,
                emit=emit,
                executor_ids=frozenset(self._executors),
                output_ids=self._output_ids,
            )
            run = RunState(inboxes={start.id: [("", input)]})
            status = await run_supersteps(
                self._graph,
                scope,
                backend if backend is not None else LocalBackend(),
                run,
                self._max_supersteps,
            )
            return scope.run_id, status
        finally:
            self._release()

    def _acquire(self) -> None:
        with _IN_USE_LOCK:
            if self._running:
                raise WorkflowBusyError(
                    f"workflow {self.name!r} is already running; a Workflow runs one run at a "
                    "time — build one workflow per concurrent run"
                )
            for executor in self._claimable:
                holder = _IN_USE.get(id(executor))
                if holder is not None:
                    raise WorkflowBusyError(
                        f"executor {executor.id!r} ({type(executor).__name__}) is in use by "
                        f"running workflow {holder!r}; an executor instance serves one run at "
                        "a time — build each concurrent workflow from its own instances",
                        executor_id=executor.id,
                    )
            for executor in self._claimable:
                _IN_USE[id(executor)] = self.name
            self._running = True

    def _release(self) -> None:
        with _IN_USE_LOCK:
            for executor in self._claimable:
                _IN_USE.pop(id(executor), None)
            self._running = False
