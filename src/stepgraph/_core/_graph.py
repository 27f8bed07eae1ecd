"""The compiled graph the scheduler runs: nodes and edge groups.

``WorkflowBuilder.build()`` produces a :class:`Graph`; the kernel knows nothing
about handler decorators, only what a :class:`Node` exposes: which messages it
accepts and how to invoke it with one of them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._context import WorkflowContext
from ._policy import Placement, RetryPolicy

__all__ = [
    "DirectEdge",
    "EdgeGroup",
    "FanInEdge",
    "FanOutEdge",
    "Graph",
    "Invoke",
    "MapPlan",
    "MultiSelectEdge",
    "Node",
    "SwitchEdge",
]

Predicate = Callable[[Any], "bool | Awaitable[bool]"]
Selector = Callable[[Any, list[str]], "Sequence[str] | Awaitable[Sequence[str]]"]


Invoke = Callable[[Any, WorkflowContext[Any, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True, eq=False)
class MapPlan:
    """How a map node runs its inbox: each message on a fresh worker
    (``make()`` returns the new worker's handler call), at most
    ``max_concurrency`` at once; what the workers send goes on as one list."""

    make: Callable[[], Invoke]
    max_concurrency: int | None = None


@dataclass(frozen=True, slots=True, eq=False, weakref_slot=True)
class Node:
    """One executor as the kernel sees it (weakly referable: a distributed
    backend's warm actors go when their workflow's nodes do)."""

    id: str
    index: int  # registration order: the schedule order (design §1.4)
    invoke: Callable[[Any, WorkflowContext[Any, Any]], Awaitable[None]]
    accepts: Callable[[Any], bool]
    retry: RetryPolicy | None = None
    timeout: float | None = None
    # Whether a response handler exists for (request, response type); None: none.
    responds: Callable[[Any, Any], bool] | None = None
    # For distributed backends: the object that hosts the handlers, and where
    # it may run.
    host: Any = None
    placement: Placement | None = None
    # A map (``add_map``): its inbox runs item by item on fresh workers, at once.
    map: MapPlan | None = None
    # A per-run executor (``register``): makes the run's own instance, kept in
    # ``RunScope.instances`` by id (``host`` is then None).
    make: Callable[[], Any] | None = None


@dataclass(frozen=True, slots=True, eq=False)
class EdgeGroup:
    """Base of the edge kinds. ``sources``/``targets`` are executor ids."""

    sources: tuple[str, ...]
    targets: tuple[str, ...]

    kind = "edge"

    def label(self) -> str:
        return f"{self.kind} {', '.join(self.sources)} -> {', '.join(self.targets)}"


@dataclass(frozen=True, slots=True, eq=False)
class DirectEdge(EdgeGroup):
    condition: Predicate | None = None
    kind = "edge"


@dataclass(frozen=True, slots=True, eq=False)
class FanOutEdge(EdgeGroup):
    kind = "fan_out"


@dataclass(frozen=True, slots=True, eq=False)
class FanInEdge(EdgeGroup):
    kind = "fan_in"


@dataclass(frozen=True, slots=True, eq=False)
class SwitchEdge(EdgeGroup):
    """``cases`` are ``(predicate, target)`` pairs tried in order."""

    cases: tuple[tuple[Predicate, str], ...] = ()
    default: str | None = None
    kind = "switch"


@dataclass(frozen=True, slots=True, eq=False)
class MultiSelectEdge(EdgeGroup):
    selector: Selector | None = None
    kind = "multi_select"


@dataclass(frozen=True, slots=True, eq=False)
class Graph:
    """Nodes in registration order, edge groups in the order they were added."""

    name: str
    start: str
    nodes: dict[str, Node]
    edges: tuple[EdgeGroup, ...]
    out_edges: dict[str, tuple[EdgeGroup, ...]] = field(init=False)
    index: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        out: dict[str, list[EdgeGroup]] = {}
        for group in self.edges:
            for source in group.sources:
                out.setdefault(source, []).append(group)
        object.__setattr__(self, "out_edges", {k: tuple(v) for k, v in out.items()})
        object.__setattr__(self, "index", {k: n.index for k, n in self.nodes.items()})
