"""One run on the Ray backend: its actors and what they were sent
(``RunActors``, with ``scope_of``: the run's ids and names each actor gets
once), and the driver's copy of each of its executors (``driver_copy``),
kept as the actor leaves it (``mirror``: what the checkpoints hold)."""

from __future__ import annotations

from typing import Any

from .._core import Node, RunScope, Superstep, WarningEvent
from .._factories import make_executor
from ._host import Begin

__all__ = ["RunActors", "driver_copy", "mirror", "scope_of"]


class RunActors:
    """One run's actors (by group: an executor's id, or the colocated
    group's), and what they were sent."""

    __slots__ = (
        "actors",
        "busy",
        "groups",
        "pending",
        "run_ref",
        "scope",
        "state_dirty",
        "state_ref",
        "state_version",
        "stateful",
        "where",
    )

    def __init__(self, run_ref: Any, scope: dict[str, Any]) -> None:
        self.scope = scope  # the run's ids and names, sent once to each actor
        self.actors: dict[str, Any] = {}  # group -> actor handle
        self.groups: dict[str, list[Node]] = {}  # group -> its executors
        self.where: dict[str, str] = {}  # group -> Ray node id
        # Warm actors' ``begin`` arguments, sent with their first call.
        self.pending: dict[str, Begin] = {}
        self.busy: set[str] = set()  # groups with a call in flight
        self.stateful: set[str] = set()  # executor ids with attributes to bring back
        self.run_ref = run_ref  # (context, reducers) in the object store
        self.state_ref: Any = None
        self.state_version = 0
        self.state_dirty = True


def driver_copy(scope: RunScope, node: Node) -> Any:
    """The driver's object for ``node``'s executor in this run: the shared
    instance, or the run's own (made now if the run has none yet)."""
    if node.host is not None or node.make is None:
        return node.host
    instance = scope.instances.get(node.id)
    if instance is None:
        instance = scope.instances[node.id] = make_executor(node.make, node.id)
    return instance


def mirror(work: Superstep, node: Node, snapshot: tuple[bool, Any]) -> None:
    """Keep the driver's copy of an executor that takes snapshots as its
    actor left it after each call, so the checkpoint at the barrier holds
    what the actor holds (through ``restore()``)."""
    ok, value = snapshot
    if not ok:
        work.scope.emit(
            WarningEvent(
                message=f"executor {node.id!r}: snapshot() raised in its Ray actor "
                f"({type(value).__name__}: {value}); checkpoints keep its last snapshot",
                executor_id=node.id,
                superstep=work.number,
            )
        )
        return
    target = driver_copy(work.scope, node)
    if target is not None:
        target.restore(value)


def scope_of(scope: RunScope) -> dict[str, Any]:
    """The run's ids and names as each of its actors gets them, once."""
    return {
        "run_id": scope.run_id,
        "workflow": scope.workflow_name,
        "strict": scope.strict,
        "executor_ids": scope.executor_ids,
        "output_ids": scope.output_ids,
        "senders": scope.senders,
        "traced": scope.trace is not None,
        "live": scope.live,  # (someone streams the run: transient events go out)
        "forked_from": scope.forked_from,
    }
