"""``RayBackend``: run each executor in a Ray actor, same scheduler, same
guarantees.

Per superstep the scheduler (on the driver) makes **one call per non-empty
inbox**, carrying the whole ordered inbox; the actor processes it serially
with the same code as the local backend (``run_inbox``, on a private event
loop inside a synchronous actor method) and returns the executor's outbox and
events. Ordering, serial processing and the barrier therefore never rest on
Ray's call ordering. Shared state reaches the actors through the object store,
put again only when a barrier changed it.

Actors are created when first needed in a run and reused for its supersteps;
when the run ends (however it ends) each executor's attributes are brought
back into the driver's executor object — so instance state persists across
runs as it does locally — and every actor is killed.

Events from an actor reach ``stream()`` when its inbox batch returns (the
local backend emits them as they happen within a batch).

Ray is an optional extra: ``pip install 'stepgraph[ray]'``.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping
from typing import Any

from ._core import (
    Event,
    ExecutorFailure,
    Inbox,
    Node,
    Outbox,
    Placement,
    RunScope,
    Superstep,
    run_inbox,
)
from ._exceptions import WorkflowRunError

__all__ = ["RayBackend"]

_INSTALL_HINT = "the Ray backend needs Ray: pip install 'stepgraph[ray]'"


def _ray() -> Any:
    # Keep every address on loopback and usage stats off (before importing ray).
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    if not hasattr(ray, "remote"):  # e.g. a stray ./ray folder imported as a namespace package
        raise ImportError(f"{_INSTALL_HINT} (the 'ray' found on sys.path is not Ray)")
    return ray


class _Shared:
    """A message sent to several inboxes of one superstep: put in the object
    store once and fetched by each actor, instead of shipped with each call."""

    __slots__ = ("ref",)

    def __init__(self, ref: Any) -> None:
        self.ref = ref


class _Host:
    """The actor body: hosts one executor for one run (a synchronous actor, so
    Ray runs its calls one at a time and in order)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.loop = asyncio.new_event_loop()
        self.state_version = -1
        self.state: Mapping[str, Any] = {}

    def where(self) -> str:
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def process(
        self,
        step: int,
        scope: dict[str, Any],
        inbox: Inbox,
        state: tuple[int, list[Any]],
    ) -> tuple[Outbox | None, list[Event], BaseException | None]:
        version, (ref,) = state
        if version != self.state_version:  # fetched only when a barrier changed it
            import ray

            self.state = ray.get(ref)
            self.state_version = version
        committed = self.state
        events: list[Event] = []
        run_scope = RunScope(
            run_id=scope["run_id"],
            workflow_name=scope["workflow"],
            strict=scope["strict"],
            emit=events.append,
            executor_ids=scope["executor_ids"],
            output_ids=scope["output_ids"],
        )
        if any(type(m) is _Shared for _, m in inbox):
            import ray

            inbox = [(s, ray.get(m.ref) if type(m) is _Shared else m) for s, m in inbox]
        work = Superstep(step, run_scope, [(self.node, inbox)], committed)
        try:
            outbox = self.loop.run_until_complete(run_inbox(work, self.node, inbox))
        except ExecutorFailure as failure:
            return None, events, failure.cause
        return outbox, events, None

    def export(self) -> dict[str, Any]:
        """The executor's attributes, for the driver's copy at the run's end."""
        host = self.node.host
        return dict(host._user_state()) if host is not None else {}


class RayBackend:
    """Run a workflow's executors on a Ray cluster::

        backend = RayBackend()                       # a local cluster on loopback
        backend = RayBackend(address="127.0.0.1:6379")
        result = await workflow.run(x, backend=backend)
        backend.shutdown()                           # if it started the cluster

    ``placement`` sets :class:`Placement` per executor id (overriding the
    executor's own ``placement``); ``default`` applies to the rest. The default
    asks for no CPU, so any number of actors fit on a small machine.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        placement: Mapping[str, Placement] | None = None,
        default: Placement | None = None,
        init_options: Mapping[str, Any] | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        self._ray = _ray()
        self.address = address
        self.connect_timeout = connect_timeout
        self.placement = dict(placement or {})
        self.default = default or Placement(num_cpus=0)
        self._init_options = dict(init_options or {})
        self._started = False
        self._actors: dict[str, Any] = {}  # executor id -> actor handle (this run)
        self._nodes: dict[str, str] = {}  # executor id -> Ray node id (this run)
        self.last_run_nodes: dict[str, str] = {}  # the same, for the last finished run
        self.shared_last_superstep = 0  # messages put in the object store once, for several
        self._hosts: dict[str, Node] = {}
        self._busy: set[str] = set()  # executor ids with a call in flight
        self._state_ref: Any = None
        self._state_version = 0
        self._state_dirty = True
        self._actor_class: Any = None

    # -- cluster -------------------------------------------------------------------

    def connect(self) -> None:
        """Connect to (or start) the cluster now rather than at the first
        superstep. An address nobody answers on fails within
        ``connect_timeout`` seconds with ``ConnectionError``."""
        self._connect()

    def _connect(self) -> None:
        ray = self._ray
        if not ray.is_initialized():
            if self.address not in (None, "local", "auto"):
                _probe(self.address, self.connect_timeout)
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            options.update(self._init_options)
            ray.init(address=self.address or "local", **options)
            self._started = True
        if self._actor_class is None:
            self._actor_class = ray.remote(_Host)

    def shutdown(self) -> None:
        """Stop the Ray instance this backend started (no-op otherwise)."""
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
        self._started = False
        self._actor_class = None

    # -- runs --------------------------------------------------------------------

    def _placement(self, node: Node) -> Placement:
        chosen = self.placement.get(node.id) or node.placement or self.default
        return chosen.merged(self.default)

    async def _actor(self, node: Node) -> Any:
        actor = self._actors.get(node.id)
        if actor is not None:
            return actor
        self._connect()
        place = self._placement(node)
        options: dict[str, Any] = {"num_cpus": place.num_cpus or 0, "max_restarts": 0}
        if place.num_gpus:
            options["num_gpus"] = place.num_gpus
        if place.resources:
            options["resources"] = dict(place.resources)
        if place.runtime_env:
            options["runtime_env"] = dict(place.runtime_env)
        actor = self._actor_class.options(**options).remote(node)
        self._actors[node.id] = actor
        self._hosts[node.id] = node
        self._nodes[node.id] = await actor.where.remote()
        return actor

    async def run_superstep(self, work: Superstep) -> list[Outbox]:
        ray = self._ray
        self._connect()
        if self._state_ref is None or self._state_dirty:
            # Wrapped in a list so Ray does not resolve it on every call: each
            # actor fetches it only when the version changed.
            self._state_ref = ray.put(dict(work.committed))
            self._state_version += 1
        scope = _scope_of(work.scope)
        missing = [node for node, _ in work.batches if node.id not in self._actors]
        if missing:  # start every new actor first, so the inboxes really run side by side
            await asyncio.gather(*(self._actor(node) for node in missing))
        batches = self._share(work.batches)
        if len(batches) == 1:
            node, inbox = batches[0]
            results: list[Outbox | None] = [await self._call(work, scope, node, inbox)]
        else:
            results = [None] * len(batches)

            async def one(index: int, node: Node, inbox: Inbox) -> None:
                results[index] = await self._call(work, scope, node, inbox)

            async with asyncio.TaskGroup() as group:
                for index, (node, inbox) in enumerate(batches):
                    group.create_task(one(index, node, inbox))
        outboxes = [o for o in results if o is not None]
        self._state_dirty = any(o.writes for o in outboxes)
        return outboxes

    def _share(self, batches: Any) -> list[tuple[Node, Inbox]]:
        """Put each message that several inboxes hold into the object store once."""
        seen: dict[int, int] = {}
        for _, inbox in batches:
            for _, message in inbox:
                seen[id(message)] = seen.get(id(message), 0) + 1
        shared = {key for key, count in seen.items() if count > 1}
        self.shared_last_superstep = 0
        if not shared:
            return list(batches)
        refs: dict[int, _Shared] = {}
        out: list[tuple[Node, Inbox]] = []
        for node, inbox in batches:
            rewritten: Inbox = []
            for source, message in inbox:
                if id(message) in shared and not isinstance(message, (int, float, bool)):
                    ref = refs.get(id(message))
                    if ref is None:
                        ref = refs[id(message)] = _Shared(self._ray.put(message))
                    rewritten.append((source, ref))
                else:
                    rewritten.append((source, message))
            out.append((node, rewritten))
        self.shared_last_superstep = len(refs)
        return out

    async def _call(
        self, work: Superstep, scope: dict[str, Any], node: Node, inbox: Inbox
    ) -> Outbox:
        ray = self._ray
        attempts = node.retry.attempts if node.retry is not None else 1
        for attempt in range(1, attempts + 1):
            actor = await self._actor(node)
            self._busy.add(node.id)
            try:
                outbox, events, cause = await actor.process.remote(
                    work.number, scope, inbox, (self._state_version, [self._state_ref])
                )
            except ray.exceptions.RayActorError as exc:
                where = self._nodes.get(node.id, "unknown")
                self._actors.pop(node.id, None)
                lost = WorkflowRunError(
                    f"the Ray actor of executor {node.id!r} on node {where} died during "
                    f"superstep {work.number}: {type(exc).__name__}",
                    executor_id=node.id,
                    superstep=work.number,
                )
                lost.__cause__ = exc
                if attempt < attempts:
                    continue  # the lost batch re-runs on a fresh actor
                failure = ExecutorFailure(node.id, work.number, lost)
                work.failures.append(failure)
                raise failure from exc
            self._busy.discard(node.id)
            emit = work.scope.emit
            for event in events:
                emit(event)
            if cause is not None:
                failure = ExecutorFailure(node.id, work.number, cause)
                work.failures.append(failure)
                raise failure from cause
            assert isinstance(outbox, Outbox)
            return outbox
        raise AssertionError("unreachable")

    async def finish_run(self) -> None:
        """Bring executor state back to the driver, then kill every actor.

        An actor still running a handler (the run failed or was cancelled) is
        killed at once — no handler outlives the run — and what its executor
        changed during this run is lost; the others hand their executor's
        attributes back first."""
        ray = self._ray
        actors, self._actors = self._actors, {}
        hosts, self._hosts = self._hosts, {}
        busy, self._busy = self._busy, set()
        self.last_run_nodes, self._nodes = self._nodes, {}
        self._state_ref = None
        self._state_dirty = True
        for executor_id, actor in actors.items():
            if executor_id in busy:
                ray.kill(actor, no_restart=True)
        idle = {eid: actor for eid, actor in actors.items() if eid not in busy}
        exports = await asyncio.gather(
            *(actor.export.remote() for actor in idle.values()), return_exceptions=True
        )
        for (executor_id, actor), state in zip(idle.items(), exports, strict=True):
            host = hosts[executor_id].host
            if isinstance(state, dict) and host is not None:
                host._set_user_state(state)
            ray.kill(actor, no_restart=True)


# HTTP/2's client preface and an empty SETTINGS frame: a Ray cluster's gRPC
# endpoints answer with a SETTINGS frame of their own.
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_SETTINGS = 0x04


def _probe(address: str, timeout: float) -> None:
    """Ray retries an address for minutes, whatever is (or is not) there: ask
    it first whether it speaks gRPC, within ``timeout`` seconds."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # no port to try: Ray's own defaults apply
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as conn:
            conn.settimeout(timeout)
            conn.sendall(_HTTP2_HELLO)
            head = conn.recv(9)
    except TimeoutError:
        raise ConnectionError(
            f"cannot reach a Ray cluster at {address!r}: no answer within {timeout:g} s"
        ) from None
    except OSError as exc:
        raise ConnectionError(
            f"cannot reach a Ray cluster at {address!r}: {exc.strerror or exc}"
        ) from None
    if len(head) < 9 or head[3] != _SETTINGS:
        raise ConnectionError(
            f"{address!r} answers, but not as a Ray cluster does (no gRPC); is the port right? "
            "(a Ray head listens on 6379, its client server on 10001)"
        )


def _scope_of(scope: RunScope) -> dict[str, Any]:
    return {
        "run_id": scope.run_id,
        "workflow": scope.workflow_name,
        "strict": scope.strict,
        "executor_ids": scope.executor_ids,
        "output_ids": scope.output_ids,
    }
