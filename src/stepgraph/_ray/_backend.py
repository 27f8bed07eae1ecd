"""``RayBackend``: run each executor in a Ray actor, same scheduler, same
guarantees.

Per superstep the scheduler (on the driver) makes **one call per non-empty
inbox**, carrying the whole ordered inbox; the actor processes it serially
with the same code as the local backend (see ``_host``) and returns the
executor's outbox and events. Ordering, serial processing and the barrier
therefore never rest on Ray's call ordering. Shared state reaches the actors
through the object store, put again only when a barrier changed it.

A run takes an actor per executor when the executor first has work: a warm
one left by an earlier run of the same workflow (``_pool``) or a new one.
When the run ends (however it ends) each executor's attributes are brought
back into the driver's executor object — so instance state persists across
runs as it does locally — and the actors wait, warm, for the next run; the
next run that takes one first hands it the driver's attributes again, so
what the driver's object holds is what the handlers see. A per-run executor
(``register``) lives in its actor for the run and is brought back into the
run's own instance. Each run has its own actors, so one backend serves any
number of concurrent runs.

Events from an actor reach ``stream()`` as they happen when a call runs
longer than ``LIVE_AFTER``: the driver then follows the call's events with
calls of their own (``Host.follow``, each waiting in the actor until there
are events); a shorter call brings its events back with its result, at no
extra cost. (Ray's streaming generators would do, but Ray Client — ``ray://``
addresses — does not support them.)

Ray is an optional extra: ``pip install 'stepgraph[ray]'``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import itertools
import time
import weakref
from collections.abc import Mapping
from typing import Any, Self

from .._core import (
    ExecutorFailure,
    Inbox,
    Node,
    Outbox,
    Placement,
    RunScope,
    Superstep,
    WarningEvent,
    error_line,
)
from .._exceptions import WorkflowRunError
from .._factories import make_executor
from .._maps import MapExecutor
from .._subworkflow import WorkflowExecutor
from ._cluster import current_address, held_interrupts, probe, ray_module, same_address
from ._failures import (
    Closed,
    Unsendable,
    closed,
    died,
    lost_spans,
    not_started,
    unloadable,
    unportable,
    unsendable,
    unsent,
)
from ._host import Host, Result, Shared, relinked
from ._pool import WarmPool
from ._run_actors import RunActors, driver_copy, mirror, scope_of

__all__ = ["RayBackend"]

# The group of the executors a colocating backend runs together; any other
# executor is a group of its own, "=" and its id.
_COLOCATED = "*"

# A call that has not returned after this long streams its events live.
LIVE_AFTER = 0.02


class RayBackend:
    """Run a workflow's executors on a Ray cluster::

        with RayBackend() as backend:                # a local cluster on loopback
            result = await workflow.run(x, backend=backend)
        RayBackend(address="ray://head:10001")       # a cluster's client server
        RayBackend(address="auto")                   # the cluster this machine is in

    ``placement`` sets :class:`Placement` per executor id (overriding the
    executor's own ``placement``); ``default`` applies to the rest. The default
    asks for no CPU, so any number of actors fit on a small machine.
    ``runtime_env`` (working dir, pip packages, environment variables) is
    passed to Ray for every actor. Actors stay warm between runs for
    ``idle_ttl`` seconds, at most ``max_idle`` per executor (concurrent runs
    each use their own; the surplus is killed as they end); ``close()`` (or
    leaving the ``with`` block) kills them, and stops the local cluster if
    this backend started one.
    ``colocate=True`` runs the executors that have no placement of their own
    together in one actor per run (their inboxes concurrently, one call per
    superstep): fewer processes and calls, for many small executors.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        placement: Mapping[str, Placement] | None = None,
        default: Placement | None = None,
        runtime_env: Mapping[str, Any] | None = None,
        init_options: Mapping[str, Any] | None = None,
        connect_timeout: float = 10.0,
        idle_ttl: float = 120.0,
        max_idle: int = 4,
        colocate: bool = False,
    ) -> None:
        # (a fraction failed each run that gave back more than it at its end)
        if isinstance(max_idle, bool) or not isinstance(max_idle, int) or max_idle < 0:
            raise ValueError(f"max_idle must be a whole number, 0 or more, not {max_idle!r}")
        self._ray = ray_module()
        self.address = address
        self.connect_timeout = connect_timeout
        self.placement = dict(placement or {})
        self.default = default or Placement(num_cpus=0)
        self._init_options = dict(init_options or {})
        if runtime_env is not None:
            self._init_options["runtime_env"] = dict(runtime_env)
        self._started = False
        # Ray was initialized by someone else (``ray.init``, another backend):
        # checked once (``_attach``); the ``init_options`` it cannot apply,
        # said in a warning at the next superstep.
        self._attached = False
        self._unapplied: list[str] = []
        self._runs: dict[RunScope, RunActors] = {}  # the runs going on, by their scope
        self.last_run_nodes: dict[str, str] = {}  # executor id -> Ray node id, last run ended
        self.shared_last_superstep = 0  # messages put in the object store once, for several
        self.started_last_run = 0  # actors the last run started (the others were warm)
        self._actor_class: Any = None
        self._calls = itertools.count()
        # The calls under way (their futures): ``close`` ends them, so that a
        # run does not wait for ever on a cluster that is gone.
        self._waiting: set[concurrent.futures.Future[Any]] = set()
        # Runs that were going on when ``close`` came: their next superstep
        # fails (it would start a cluster anew), until they end.
        self._closed_runs: set[RunScope] = set()
        # Shared executors (by ``id(node)``) whose actor is handing their
        # attributes back (``finish_run``): a run cancelled as it ends does
        # not wait for that, so the next run does before it sends them.
        self._handing_back: dict[int, asyncio.Task[Any]] = {}
        self.pool = WarmPool(self._kill, idle_ttl, max_idle)
        # What the sub-workflow each node runs has placed (``_unplaced_children``).
        self._placed_inside: weakref.WeakKeyDictionary[Node, list[str]] = (
            weakref.WeakKeyDictionary()
        )
        self.colocate = colocate

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
                probe(self.address, self.connect_timeout)
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            options.update(self._init_options)
            # A Ctrl-C (or SIGTERM) meanwhile is raised once Ray has started
            # (and is then stopped by ``close``), not halfway through; the
            # process's SIGTERM handler stays (not Ray's ``sys.exit(15)``).
            with held_interrupts(ray):
                try:
                    ray.init(address=self.address or "local", **options)
                except ValueError as exc:  # (an address Ray cannot read)
                    raise ConnectionError(
                        f"cannot use {self.address!r} as a Ray address: {exc} (give host:port, "
                        "ray://host:port, 'auto' or 'local')"
                    ) from None
                self._started = True
                self._attached = False
            self.pool.close()  # (warm actors of a cluster that is gone, if any)
        elif not self._started and not self._attached:
            self._attach()
        if self._actor_class is None:
            # ``process`` calls run one at a time in the default group; the
            # events of a long call are followed on a thread of their own. (Set
            # on the method, not per call: Ray Client takes no per-call group.)
            ray.method(concurrency_group="live")(Host.follow)
            self._actor_class = ray.remote(concurrency_groups={"live": 1})(Host)

    def _attach(self) -> None:
        """Ray is already initialized in this process, by someone else: this
        backend runs on that cluster. An ``address`` naming another cluster
        is refused (running elsewhere than asked would be a wrong result);
        ``runtime_env`` goes with each actor instead of the job; the other
        ``init_options`` cannot apply, which the next superstep warns of."""
        ray = self._ray
        if self.address not in (None, "local", "auto"):
            here = current_address(ray)
            if here is not None and not same_address(self.address, here):
                raise ConnectionError(
                    f"Ray is already initialized in this process (connected to {here}), so "
                    f"this RayBackend cannot connect to {self.address!r}: call ray.shutdown() "
                    "first, or give no address to run on the cluster this process is "
                    "connected to"
                )
        self._unapplied = sorted(k for k in self._init_options if k != "runtime_env")
        self._attached = True

    def _runtime_env(self, place: Placement) -> dict[str, Any] | None:
        """An actor's runtime environment: its placement's; on a cluster this
        backend did not start, the backend's ``runtime_env`` under it (Ray
        has not applied it to the job)."""
        own: dict[str, Any] | None = dict(place.runtime_env) if place.runtime_env else None
        backend: dict[str, Any] | None = self._init_options.get("runtime_env")
        if self._started or not backend:
            return own
        merged = {**backend, **(own or {})}
        if own and "env_vars" in own and "env_vars" in backend:
            merged["env_vars"] = {**backend["env_vars"], **own["env_vars"]}
        return merged

    def _kill(self, actor: Any) -> None:
        with contextlib.suppress(Exception):  # (gone already, or Ray shut down)
            self._ray.kill(actor, no_restart=True)

    def close(self) -> None:
        """Kill the warm actors; stop the Ray instance this backend started.
        A run still going on here fails at once (``WorkflowRunError``)."""
        self._closed_runs.update(self._runs)
        self._runs.clear()
        for future in list(self._waiting):
            with contextlib.suppress(concurrent.futures.InvalidStateError):  # (done already)
                future.set_exception(Closed())
        self.pool.close()
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
        self._started = False
        self._attached = False
        self._actor_class = None

    shutdown = close  # (its name before actors stayed warm)

    @property
    def max_idle(self) -> int:
        """How many idle actors per executor stay warm between runs."""
        return self.pool.cap

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs --------------------------------------------------------------------

    def _placement(self, node: Node) -> Placement:
        chosen = self.placement.get(node.id) or node.placement or self.default
        return chosen.merged(self.default)

    def _run_of(self, scope: RunScope) -> RunActors:
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
            run = self._runs[scope] = RunActors(ref, scope_of(scope))
            self.started_last_run = 0
        return run

    def _group(self, node: Node) -> str:
        """The group an executor's actor hosts: its own, or the colocated one."""
        if self.colocate and node.placement is None and node.id not in self.placement:
            return _COLOCATED
        return "=" + node.id

    def _members(self, group: str, node: Node, scope: RunScope) -> list[Node]:
        if group != _COLOCATED:
            return [node]
        return [n for n in scope.nodes.values() if self._group(n) == _COLOCATED] or [node]

    async def _actor(self, run: RunActors, group: str, node: Node, work: Superstep) -> Any:
        actor = run.actors.get(group)
        if actor is not None:
            return actor
        self._connect()
        scope = work.scope
        members = self._members(group, node, scope)
        handing = {t for n in members if (t := self._handing_back.get(id(n))) is not None}
        if handing:  # (the last run's attributes, not the driver's older copy)
            await asyncio.wait(handing)
        instances = {
            n.id: scope.instances[n.id]
            for n in members
            if n.make is not None and n.id in scope.instances
        }
        self._unplaced_children(members, work)
        warm = self.pool.take(members[0])
        if warm is not None:  # told of the run with its first call (no round trip)
            states = {n.id: n.host._user_state() for n in members if n.host is not None}
            run.pending[group] = (instances, states, run.scope)
            return self._hold(run, group, members, warm.actor, warm.where)
        place = self._placement(members[0]) if group != _COLOCATED else self.default
        options: dict[str, Any] = {"num_cpus": place.num_cpus or 0, "max_restarts": 0}
        if place.num_gpus:
            options["num_gpus"] = place.num_gpus
        if place.resources:
            options["resources"] = dict(place.resources)
        runtime_env = self._runtime_env(place)
        if runtime_env:
            options["runtime_env"] = runtime_env
        self._placeable(place, node, work)
        try:
            actor = self._actor_class.options(**options).remote(members)
        except Exception as exc:  # (an executor Ray cannot serialize: its attributes)
            raise unportable(work, members, exc, self._ray.exceptions.RayError) from exc
        run.actors[group] = actor  # (held before it answers: killed if the run ends)
        self.started_last_run += 1
        try:
            try:
                begun = actor.begin.remote(instances, {}, run.scope)
            except Exception as exc:  # (a per-run instance Ray cannot serialize)
                raise unportable(work, members, exc, self._ray.exceptions.RayError) from exc
            where = await self._answer(begun)
        except Exception as exc:
            run.actors.pop(group, None)
            self._kill(actor)
            if isinstance(exc, ExecutorFailure):
                raise
            raise not_started(work, members, exc) from exc
        return self._hold(run, group, members, actor, where)

    async def _answer(self, ref: Any) -> Any:
        """What a call to an actor returns (``close`` ends the wait)."""
        future = ref.future()
        self._waiting.add(future)
        try:
            return await asyncio.wrap_future(future)
        finally:
            self._waiting.discard(future)

    def _placeable(self, place: Placement, node: Node, work: Superstep) -> None:
        """Warn when no node of the cluster has the resources an actor asks
        for: Ray then waits for one (an autoscaler may add it) — silently,
        so the run would seem stuck."""
        wanted = {**({"GPU": place.num_gpus} if place.num_gpus else {}), **(place.resources or {})}
        if not wanted:
            return
        try:
            has = self._ray.cluster_resources()
        except Exception:
            return  # (not knowable now: Ray will say)
        short = {k: v for k, v in wanted.items() if has.get(k, 0) < v}
        if short:
            work.scope.emit(
                WarningEvent(
                    message=f"executor {node.id!r} asks for {short}, which no node of the "
                    f"cluster has (it has {dict(sorted(has.items()))}): its actor waits until "
                    "a node that has them joins",
                    executor_id=node.id,
                    superstep=work.number,
                )
            )

    def _unplaced_children(self, members: list[Node], work: Superstep) -> None:
        """Warn when a sub-workflow's executors ask for a placement of their
        own: the child runs whole in its ``WorkflowExecutor``'s actor, so
        theirs is never used — unless that executor is given one, a GPU
        executor two levels down would run, silently, without a GPU."""
        for node in members:
            if node.placement is not None or node.id in self.placement:
                continue  # (placed: where its children run was decided)
            asked = self._placed_inside.get(node)
            if asked is None:  # (once per node: a factory's instances are all alike)
                try:
                    if node.map is not None:  # (an item's worker: made as the map makes one)
                        made = getattr(node.map.make(), "__self__", None)
                    elif node.make is not None:
                        made = make_executor(node.make, node.id)
                    else:
                        made = node.host
                except Exception:  # (said where the run makes its own instance, as before)
                    made = None
                asked = self._placed_inside[node] = _placed_inside(made, node.id)
            if asked:
                runs = (
                    f"map {node.id!r} runs a sub-workflow for each item, which runs whole"
                    if node.map is not None
                    else f"executor {node.id!r} runs a sub-workflow, which runs whole"
                )
                work.scope.emit(
                    WarningEvent(
                        message=f"{runs} in its Ray actor: the placement of "
                        f"{', '.join(asked)} is not used; "
                        f"give {node.id!r} the placement its executors need "
                        "(WorkflowExecutor(..., placement=...) or RayBackend(placement=...))",
                        executor_id=node.id,
                        superstep=work.number,
                    )
                )

    def _hold(self, run: RunActors, group: str, members: list[Node], actor: Any, where: str) -> Any:
        run.actors[group] = actor
        run.groups[group] = members
        run.where[group] = where
        return actor

    async def run_superstep(self, work: Superstep) -> list[Outbox]:
        ray = self._ray
        if work.scope in self._closed_runs:  # (closed at a barrier: between two calls)
            first = work.batches[0][0]
            raise closed(work, first, ", ".join(node.id for node, _ in work.batches))
        self._connect()
        if self._unapplied:
            unapplied, self._unapplied = self._unapplied, []
            work.scope.emit(
                WarningEvent(
                    message=f"RayBackend(init_options=...): {', '.join(unapplied)} not used: "
                    "Ray was already initialized in this process (by ray.init or another "
                    "backend), so this backend runs on that cluster as it is",
                    superstep=work.number,
                )
            )
        run = self._run_of(work.scope)
        if run.state_ref is None or run.state_dirty:
            # Wrapped in a list so Ray does not resolve it on every call: each
            # actor fetches it only when the version changed.
            run.state_ref = ray.put(dict(work.committed))
            run.state_version += 1
        grouped: dict[str, list[tuple[Node, Inbox]]] = {}
        for node, inbox in self._share(work.batches):
            grouped.setdefault(self._group(node), []).append((node, inbox))
        missing = [(g, b[0][0]) for g, b in grouped.items() if g not in run.actors]
        if missing:  # take every actor first, so the inboxes really run side by side
            await asyncio.gather(*(self._actor(run, g, node, work) for g, node in missing))
        by_node: dict[str, Outbox] = {}
        if len(grouped) == 1:
            [(group, batches)] = grouped.items()
            by_node.update(await self._call(run, work, group, batches))
        else:

            async def one(group: str, batches: list[tuple[Node, Inbox]]) -> None:
                by_node.update(await self._call(run, work, group, batches))

            async with asyncio.TaskGroup() as tasks:
                for group, batches in grouped.items():
                    tasks.create_task(one(group, batches))
        results = [by_node.get(node.id) for node, _ in work.batches]
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
        refs: dict[int, Shared] = {}
        out: list[tuple[Node, Inbox]] = []
        for node, inbox in batches:
            rewritten: Inbox = []
            for source, message in inbox:
                if id(message) in shared and not isinstance(message, (int, float, bool)):
                    ref = refs.get(id(message))
                    if ref is None:
                        ref = refs[id(message)] = Shared(self._ray.put(message))
                    rewritten.append((source, ref))
                else:
                    rewritten.append((source, message))
            out.append((node, rewritten))
        self.shared_last_superstep = len(refs)
        return out

    async def _call(
        self, run: RunActors, work: Superstep, group: str, batches: list[tuple[Node, Inbox]]
    ) -> dict[str, Outbox]:
        """One call to the group's actor for its inboxes of this superstep;
        the outboxes by executor id."""
        ray = self._ray
        first = batches[0][0]
        attempts = min(n.retry.attempts if n.retry is not None else 1 for n, _ in batches)
        sent = [(node.id, inbox) for node, inbox in batches]
        attempt = 1
        while True:
            actor = await self._actor(run, group, first, work)
            begin = run.pending.pop(group, None)
            run.busy.add(group)
            called = time.time_ns()
            try:
                outboxes, events, failures, snapshots, usage, stateful, spans = (
                    await self._process(
                        actor, work, sent, (run.state_version, [run.state_ref]),
                        [run.run_ref], begin,
                    )
                )  # fmt: skip
            except Exception as exc:
                named = first.id if len(batches) == 1 else ", ".join(n.id for n, _ in batches)
                if isinstance(exc, Closed):
                    raise closed(work, first, named) from None
                if isinstance(exc, Unsendable):
                    run.busy.discard(group)
                    raise unsendable(work, first, named, begin is not None, exc) from exc.__cause__
                if isinstance(getattr(exc, "cause", None), ray.exceptions.RaySystemError):
                    # The actor could not load what was sent (a message's or a
                    # state value's type its worker cannot import).
                    run.busy.discard(group)
                    raise unloadable(work, first, named, begin is not None, exc) from exc
                if not isinstance(exc, ray.exceptions.RayActorError) and not (
                    begin is not None and "Failed to submit task to actor" in str(exc)
                ):  # (a warm actor of a cluster that is gone fails to submit)
                    run.busy.discard(group)
                    raise unsent(work, first, named, exc) from exc
                where = run.where.get(group, "unknown")
                run.actors.pop(group, None)
                run.busy.discard(group)
                if begin is not None:
                    # A warm actor found dead at its first call of the run: it
                    # died while idle (or at once on this call — Ray cannot
                    # tell which in time). A new actor takes the batch, once.
                    work.scope.emit(
                        WarningEvent(
                            message=f"the warm Ray actor of executor {named!r} on node "
                            f"{where} died since the last run; a new one replaces it",
                            executor_id=first.id,
                            superstep=work.number,
                        )
                    )
                    self.pool.forget(run.groups.get(group, [first])[0])
                    continue
                if work.scope.trace is not None:  # the lost attempt, as a failed one
                    lost = f"{type(exc).__name__}: its Ray actor on node {where} died"
                    work.scope.trace.replay(
                        lost_spans(work, batches, attempt, called, lost), work.number
                    )
                if attempt < attempts:
                    work.scope.emit(
                        WarningEvent(
                            message=f"executor {named!r}: attempt {attempt}/{attempts} lost "
                            f"its Ray actor on node {where} ({type(exc).__name__}); retrying "
                            "on a new actor",
                            executor_id=first.id,
                            superstep=work.number,
                        )
                    )
                    attempt += 1
                    continue  # the lost batch re-runs on a fresh actor
                raise died(work, first, named, where, exc) from exc
            run.busy.discard(group)
            run.stateful.update(stateful)
            if spans and work.scope.trace is not None:
                if attempt > 1:  # (the actor counted from 1: it re-ran a lost batch)
                    for name, _, _, _, attributes, _ in spans:
                        if name.startswith("executor ") and "stepgraph.attempt" in attributes:
                            attributes["stepgraph.attempt"] += attempt - 1
                work.scope.trace.replay(spans, work.number)
            emit = work.scope.emit
            for event in events:
                emit(event)
            tally = work.scope.usage
            for path, used in usage.items():  # tokens the actor's model calls used
                tally[path] = tally[path] + used if path in tally else used
            if failures:
                failures = [(eid, relinked(cause), item) for eid, cause, item in failures]
                for _, cause, _ in failures:
                    if not isinstance(cause, (Exception, SystemExit)):
                        raise cause  # (KeyboardInterrupt in a handler: as locally)
                raised = [
                    ExecutorFailure(eid, work.number, cause, item) for eid, cause, item in failures
                ]
                work.failures.extend(raised)
                raise raised[0] from raised[0].cause
            nodes = {node.id: node for node, _ in batches}
            for executor_id, snapshot in snapshots.items():
                mirror(work, nodes[executor_id], snapshot)
            assert outboxes is not None
            return {executor_id: o for (executor_id, _), o in zip(sent, outboxes, strict=True)}

    async def _process(self, actor: Any, work: Superstep, batches: Any, *args: Any) -> Result:
        """One ``process`` call; its events as they happen once it has run
        ``LIVE_AFTER`` (those come through ``follow``; the rest with the result)."""
        call = next(self._calls)
        loop = asyncio.get_running_loop()
        try:
            ref = actor.process.remote(call, work.number, batches, *args)
        except Exception as exc:  # (Ray could not serialize the inboxes: a lock, say)
            if isinstance(exc, self._ray.exceptions.RayError) or "Failed to submit" in str(exc):
                raise  # (the actor, not what was sent)
            raise Unsendable(exc) from exc
        done = self._answer(ref)
        following: list[asyncio.Task[None]] = []
        timer = loop.call_later(
            LIVE_AFTER,
            lambda: following.append(loop.create_task(_follow(actor, call, work.scope.emit))),
        )
        try:
            result: Result = await done
        except BaseException:
            for task in following:
                task.cancel()
            raise
        finally:
            timer.cancel()
        if following:  # what it streamed comes before what it returned
            try:
                await following[0]
            except self._ray.exceptions.RayTaskError:
                raise  # (events Ray could not send: the superstep fails, as when returned)
            except self._ray.exceptions.RayError:
                pass
        return result

    async def finish_run(self, scope: RunScope) -> None:
        """Bring executor state back to the driver; keep the run's actors warm.

        An actor still running a handler (the run failed or was cancelled) is
        killed at once — no handler outlives the run — and what its executors
        changed during this run is lost; the others hand their executors'
        attributes back first (a shared executor's into the driver's object,
        a per-run executor's into the run's own instance) and wait in the
        pool for the next run."""
        self._closed_runs.discard(scope)
        run = self._runs.pop(scope, None)
        if run is None:
            return  # the run ended before it reached Ray (or the backend was closed)
        if not self._ray.is_initialized():
            return  # (closed meanwhile: its actors are gone; asking would start Ray again)
        self.last_run_nodes = {
            n.id: run.where[group] for group, members in run.groups.items() for n in members
        }
        asked: dict[str, Any] = {}
        for group, actor in run.actors.items():
            if group in run.busy or group not in run.groups:
                self._kill(actor)  # (busy, or never answered: not to be trusted)
            elif any(n.id in run.stateful for n in run.groups[group]):
                asked[group] = actor
            else:  # nothing of their own to bring back (or taken warm, never called)
                self.pool.give(run.groups[group][0], actor, run.where[group])
        me = asyncio.current_task()
        handing = [id(n) for g in asked for n in run.groups[g] if n.host is not None]
        if me is not None:
            self._handing_back.update(dict.fromkeys(handing, me))
        try:
            await self._hand_back(scope, run, asked)
        finally:
            for key in handing:
                if self._handing_back.get(key) is me:
                    del self._handing_back[key]

    async def _hand_back(self, scope: RunScope, run: RunActors, asked: dict[str, Any]) -> None:
        """The executors' attributes from the ``asked`` actors into the
        driver's copies; each actor then goes back to the pool."""
        exports = await asyncio.gather(
            *(_exported(actor) for actor in asked.values()), return_exceptions=True
        )
        for (group, actor), states in zip(asked.items(), exports, strict=True):
            stayed: dict[str, list[str]] = {}
            if isinstance(states, self._ray.exceptions.RayTaskError):
                # An attribute Ray cannot send back (a client made in a
                # handler): the others come back, and the actor stays warm.
                try:
                    states, stayed = await actor.export_portable.remote()
                except Exception as exc:
                    states = exc
            if not isinstance(states, dict):
                self._kill(actor)  # (it failed to answer: not kept)
                # (it died after its last call of the run, while idle: the
                # run did not need it again, but what it changed stays lost)
                lost = error_line(states, 200).splitlines()[0]
                for node in run.groups[group]:
                    if node.id in run.stateful:
                        scope.emit(
                            WarningEvent(
                                message=f"executor {node.id!r}: its attributes could not be "
                                f"brought back from its Ray actor on node {run.where[group]} "
                                f"at the end of the run ({lost}); what the run changed in "
                                "them is lost: the driver's copy keeps its earlier value",
                                executor_id=node.id,
                            )
                        )
                continue
            for executor_id, why in stayed.items():
                scope.emit(
                    WarningEvent(
                        message=f"executor {executor_id!r}: {'; '.join(why)} could not be "
                        "brought back from its Ray actor; the driver's copy keeps its earlier "
                        "value (on the Ray backend an executor's attributes travel between "
                        "the driver and its actor: keep clients and locks out of them)",
                        executor_id=executor_id,
                    )
                )
            for node in run.groups[group]:
                target = driver_copy(scope, node)
                if target is not None and node.id in states:
                    target._set_user_state(states[node.id])
            self.pool.give(run.groups[group][0], actor, run.where[group])


async def _exported(actor: Any) -> Any:
    """The actor's ``export`` (a call that cannot even be sent — its actor
    gone — is a failure like one that fails)."""
    return await actor.export.remote()


async def _follow(actor: Any, call: int, emit: Any) -> None:
    """Emit the events of a long ``process`` call as the actor hands them
    over, until the call has ended."""
    running = True
    while running:
        events, running = await actor.follow.remote(call)
        for event in events:
            emit(event)


def _placed_inside(executor: Any, path: str) -> list[str]:
    """The executors of a sub-workflow ``executor`` runs (at any depth, and
    through maps: a map's workers, which go by its id, run where it does)
    that have a placement of their own, as ``'path' (what it asks)``."""
    if isinstance(executor, MapExecutor):
        return _placed_inside(executor.worker, path)
    if not isinstance(executor, WorkflowExecutor):
        return []
    found: list[str] = []
    for child_id, child in executor.workflow.executors.items():
        where = f"{path}/{child_id}"
        if child.placement is not None:
            asks = ", ".join(
                f"{field.name}={value!r}"
                for field in dataclasses.fields(child.placement)
                if (value := getattr(child.placement, field.name)) is not None
            )
            found.append(f"{where!r} ({asks})")
        found += _placed_inside(child, where)
    return found
