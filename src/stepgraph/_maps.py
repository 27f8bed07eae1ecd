"""``add_map``: a map over a number of messages decided at run time.

``builder.add_map(source, worker, id="summaries", to=reduce)`` puts a node
``summaries`` between ``source`` and ``reduce``: every message ``source``
sends on that edge is handled by its own fresh ``worker``, concurrently
within the superstep (at most ``max_concurrency`` at a time), and ``reduce``
receives one list of everything the workers sent, in the order of the
source's sends. The kernel runs it (``_core._map``); this module gives the
node the face of an executor: the worker's input types, ``list[...]`` of its
output types, and a signature that names the worker.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Callable
from typing import Any

from ._core import Contract, MapPlan, TypeSpec, WorkflowContext, spec_of
from ._exceptions import WorkflowDefinitionError, WorkflowRunError
from ._executor import Executor, FunctionExecutor
from ._factories import make_executor
from ._handlers import HandlerSpec, union_of

__all__ = ["MapExecutor", "map_worker"]

Worker = FunctionExecutor | type[Executor] | Callable[[], Executor]


def map_worker(map_id: str, worker: Worker) -> tuple[Callable[[], Executor], Executor]:
    """How to make a worker, and a prototype to learn its types from. A
    function executor holds no state, so every item may share it."""
    if isinstance(worker, FunctionExecutor):
        return (lambda: worker), worker
    if isinstance(worker, Executor):
        raise WorkflowDefinitionError(
            f"add_map {map_id!r}: the worker must be made anew for each item: give its class "
            f"or a function returning a new one, not the instance {worker!r}"
        )
    if isinstance(worker, type) and issubclass(worker, Executor):
        cls: type[Executor] = worker

        def make() -> Executor:
            return cls(map_id)

    elif callable(worker):
        make = typing.cast(Callable[[], Executor], worker)
    else:
        raise WorkflowDefinitionError(
            f"add_map {map_id!r}: the worker must be an Executor subclass, a function returning "
            f"an executor, or an @executor function, not {type(worker).__name__}"
        )

    def checked() -> Executor:
        return make_executor(make, map_id, f"the worker factory of map {map_id!r}", same_id=False)

    try:
        prototype = checked()
    except WorkflowRunError as exc:
        raise WorkflowDefinitionError(str(exc)) from exc.__cause__
    return checked, prototype


class MapExecutor(Executor):
    """The node ``add_map`` adds. It never handles a message itself: the
    kernel runs each message on a new worker (``plan``)."""

    stateless = True

    def __init__(
        self,
        id: str,
        worker: Executor,
        make: Callable[[], Executor],
        max_concurrency: int | None,
    ) -> None:
        if max_concurrency is not None and (
            # A bool is an int to isinstance, but True is no worker count.
            isinstance(max_concurrency, bool)
            or not isinstance(max_concurrency, int)
            or max_concurrency < 1
        ):
            raise WorkflowDefinitionError(
                f"add_map {id!r}: max_concurrency must be a positive int or None, "
                f"got {max_concurrency!r} ({type(max_concurrency).__name__})"
            )
        self.worker = worker
        self.make = make
        self.max_concurrency = max_concurrency
        super().__init__(id, retry=worker.retry, timeout=worker.timeout, placement=worker.placement)

    @property
    def plan(self) -> MapPlan:
        make = self.make
        return MapPlan(make=lambda: make()._invoke, max_concurrency=self.max_concurrency)

    def _handler_specs(self) -> tuple[HandlerSpec, ...]:  # type: ignore[override]
        worker = self.worker
        contract = Contract(
            f"map of {type(worker).__name__}",
            spec_of(list[worker.output_types]),  # type: ignore[name-defined]
            spec_of(worker.workflow_output_types),
        )
        return (
            HandlerSpec(
                name="map",
                func=MapExecutor._never,
                input=TypeSpec(union_of(worker.input_types)),
                contract=contract,
                is_async=True,
                takes_ctx=True,
                order=0,
            ),
        )

    def _response_handler_specs(self) -> tuple[Any, ...]:  # type: ignore[override]
        return ()

    def accepts(self, message: Any) -> bool:
        return self.worker.accepts(message)

    @property
    def declared_types(self) -> list[Any]:
        return [*self.worker.declared_types, list[self.worker.output_types]]  # type: ignore[name-defined]

    @property
    def nested_signature(self) -> str:
        """The worker's identity: part of the graph signature."""
        from ._persistence import executor_identity

        return json.dumps([executor_identity(self.worker), self.max_concurrency])

    async def _never(self, message: Any, ctx: WorkflowContext[Any, Any]) -> None:
        raise RuntimeError(f"map {self.id!r} runs its messages on workers, never itself")

    async def _invoke(self, message: Any, ctx: WorkflowContext[Any, Any]) -> None:
        await self._never(message, ctx)

    def __repr__(self) -> str:
        return f"<MapExecutor id={self.id!r} worker={type(self.worker).__name__}>"
