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
runs as it does locally — and every actor is killed. A per-run executor
(``register``) lives in its actor for the run and is brought back into the
run's own instance. Each run has its own actors, so one backend serves any
number of concurrent runs; the run context and the state reducers are put
in the object store once per run.

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
    Reducers,
    RunScope,
    Superstep,
    WarningEvent,
    run_inbox,
)
from ._exceptions import WorkflowRunError
from ._factories import make_executor

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
    Ray runs its calls one at a time and in order). A per-run executor's
    instance lives in ``instances`` for the run: the driver's, when the run
    goes on, or made on the first call."""

    def __init__(self, node: Node, instance: Any = None) -> None:
        self.node = node
        self.loop = asyncio.new_event_loop()
        self.state_version = -1
        self.state: Mapping[str, Any] = {}
        self.instances: dict[str, Any] = {} if instance is None else {node.id: instance}
        self.run: tuple[Any, Reducers] | None = None  # the run's context and reducers

    def where(self) -> str:
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def process(
        self,
        step: int,
        scope: dict[str, Any],
        inbox: Inbox,
        state: tuple[int, list[Any]],
        run: list[Any],
    ) -> tuple[
        Outbox | None, list[Event], BaseException | None, tuple[bool, Any] | None, dict[str, Any]
    ]:
        version, (ref,) = state
        if version != self.state_version:  # fetched only when a barrier changed it
            import ray

            self.state = ray.get(ref)
            self.state_version = version
        if self.run is None:  # once per run (and actor)
            import ray

            self.run = ray.get(run[0])
        committed = self.state
        context, reducers = self.run
        events: list[Event] = []
        run_scope = RunScope(
            run_id=scope["run_id"],
            workflow_name=scope["workflow"],
            strict=scope["strict"],
            emit=events.append,
            executor_ids=scope["executor_ids"],
            output_ids=scope["output_ids"],
            senders=scope["senders"],
            context=context,
            instances=self.instances,
            reducers=reducers,
        )
        if any(type(m) is _Shared for _, m in inbox):
            import ray

            inbox = [(s, ray.get(m.ref) if type(m) is _Shared else m) for s, m in inbox]
        work = Superstep(step, run_scope, [(self.node, inbox)], committed)
        try:
            outbox = self.loop.run_until_complete(run_inbox(work, self.node, inbox))
        except ExecutorFailure as failure:
            return None, events, failure.cause, None, run_scope.usage
        return outbox, events, None, self._snapshot(), run_scope.usage

    def _executor(self) -> Any:
        host = self.node.host
        return host if host is not None else self.instances.get(self.node.id)

    def _snapshot(self) -> tuple[bool, Any] | None:
        """What ``snapshot()`` returns now, for an executor that takes
        snapshots: ``(True, value)``, or ``(False, error)`` if it raised."""
        executor = self._executor()
        if executor is None or not executor.takes_snapshots:
            return None
        try:
            return True, executor.snapshot()
        except Exception as exc:
            return False, exc

    def export(self) -> dict[str, Any]:
        """The executor's attributes, for the driver's copy at the run's end."""
        executor = self._executor()
        return dict(executor._user_state()) if executor is not None else {}


class _RunActors:
    """One run's actors, and what they were sent."""

    __slots__ = (
        "actors",
        "busy",
        "hosts",
        "nodes",
        "run_ref",
        "state_dirty",
        "state_ref",
        "state_version",
    )

    def __init__(self, run_ref: Any) -> None:
        self.actors: dict[str, Any] = {}  # executor id -> actor handle
        self.nodes: dict[str, str] = {}  # executor id -> Ray node id
        self.hosts: dict[str, Node] = {}
        self.busy: set[str] = set()  # executor ids with a call in flight
        self.run_ref = run_ref  # (context, reducers) in the object store
        self.state_ref: Any = None
        self.state_version = 0
        self.state_dirty = True


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
        self._runs: dict[RunScope, _RunActors] = {}  # the runs going on, by their scope
        self.last_run_nodes: dict[str, str] = {}  # executor id -> Ray node id, last run ended
        self.shared_last_superstep = 0  # messages put in the object store once, for several
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

    def _run_of(self, scope: RunScope) -> _RunActors:
        run = self._runs.get(scope)
        if run is None:
            try:
                ref = self._ray.put((scope.context, scope.reducers))
            except Exception as exc:
                raise WorkflowRunError(
                    f"the run context ({type(scope.context).__name__}) or a state reducer "
                    f"cannot be sent to Ray actors: {type(exc).__name__}: {exc}. On the Ray "
                    "backend the context must be serializable; pass what the actors need to "
                    "build their clients (a URL, a key), not the clients themselves"
                ) from exc
            run = self._runs[scope] = _RunActors(ref)
        return run

    async def _actor(self, run: _RunActors, node: Node, scope: RunScope) -> Any:
        actor = run.actors.get(node.id)
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
        instance = scope.instances.get(node.id) if node.make is not None else None
        actor = self._actor_class.options(**options).remote(node, instance)
        run.actors[node.id] = actor
        run.hosts[node.id] = node
        run.nodes[node.id] = await actor.where.remote()
        return actor

    async def run_superstep(self, work: Superstep) -> list[Outbox]:
        ray = self._ray
        self._connect()
        run = self._run_of(work.scope)
        if run.state_ref is None or run.state_dirty:
            # Wrapped in a list so Ray does not resolve it on every call: each
            # actor fetches it only when the version changed.
            run.state_ref = ray.put(dict(work.committed))
            run.state_version += 1
        scope = _scope_of(work.scope)
        missing = [node for node, _ in work.batches if node.id not in run.actors]
        if missing:  # start every new actor first, so the inboxes really run side by side
            await asyncio.gather(*(self._actor(run, node, work.scope) for node in missing))
        batches = self._share(work.batches)
        if len(batches) == 1:
            node, inbox = batches[0]
            results: list[Outbox | None] = [await self._call(run, work, scope, node, inbox)]
        else:
            results = [None] * len(batches)

            async def one(index: int, node: Node, inbox: Inbox) -> None:
                results[index] = await self._call(run, work, scope, node, inbox)

            async with asyncio.TaskGroup() as group:
                for index, (node, inbox) in enumerate(batches):
                    group.create_task(one(index, node, inbox))
        outboxes = [o for o in results if o is not None]
        run.state_dirty = any(o.writes or o.item_writes for o in outboxes)
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
        self, run: _RunActors, work: Superstep, scope: dict[str, Any], node: Node, inbox: Inbox
    ) -> Outbox:
        ray = self._ray
        attempts = node.retry.attempts if node.retry is not None else 1
        for attempt in range(1, attempts + 1):
            actor = await self._actor(run, node, work.scope)
            run.busy.add(node.id)
            try:
                outbox, events, cause, snapshot, usage = await actor.process.remote(
                    work.number, scope, inbox, (run.state_version, [run.state_ref]), [run.run_ref]
                )
            except ray.exceptions.RayActorError as exc:
                where = run.nodes.get(node.id, "unknown")
                run.actors.pop(node.id, None)
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
            run.busy.discard(node.id)
            emit = work.scope.emit
            for event in events:
                emit(event)
            tally = work.scope.usage
            for path, used in usage.items():  # tokens the actor's model calls used
                tally[path] = tally[path] + used if path in tally else used
            if cause is not None:
                failure = ExecutorFailure(node.id, work.number, cause)
                work.failures.append(failure)
                raise failure from cause
            if snapshot is not None:
                _mirror(work, node, snapshot)
            assert isinstance(outbox, Outbox)
            return outbox
        raise AssertionError("unreachable")

    async def finish_run(self, scope: RunScope) -> None:
        """Bring executor state back to the driver, then kill the run's actors.

        An actor still running a handler (the run failed or was cancelled) is
        killed at once — no handler outlives the run — and what its executor
        changed during this run is lost; the others hand their executor's
        attributes back first: a shared executor's into the driver's object,
        a per-run executor's into the run's own instance."""
        ray = self._ray
        run = self._runs.pop(scope, None)
        if run is None:
            return  # the run ended before it reached Ray
        self.last_run_nodes = run.nodes
        for executor_id, actor in run.actors.items():
            if executor_id in run.busy:
                ray.kill(actor, no_restart=True)
        idle = {eid: actor for eid, actor in run.actors.items() if eid not in run.busy}
        exports = await asyncio.gather(
            *(actor.export.remote() for actor in idle.values()), return_exceptions=True
        )
        for (executor_id, actor), state in zip(idle.items(), exports, strict=True):
            target = _driver_copy(scope, run.hosts[executor_id])
            if isinstance(state, dict) and target is not None:
                target._set_user_state(state)
            ray.kill(actor, no_restart=True)


def _driver_copy(scope: RunScope, node: Node) -> Any:
    """The driver's object for ``node``'s executor in this run: the shared
    instance, or the run's own (made now if the run has none yet)."""
    if node.host is not None or node.make is None:
        return node.host
    instance = scope.instances.get(node.id)
    if instance is None:
        instance = scope.instances[node.id] = make_executor(node.make, node.id)
    return instance


def _mirror(work: Superstep, node: Node, snapshot: tuple[bool, Any]) -> None:
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
    target = _driver_copy(work.scope, node)
    if target is not None:
        target.restore(value)


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
        "senders": scope.senders,
    }
