"""The actor body: one executor in one Ray actor, run after run.

A synchronous actor, so Ray runs its ``process`` calls one at a time and in
order; each call runs the executor's inbox with the local backend's code
(``run_inbox``) on a private event loop. ``follow`` runs on a second thread
(the actor's ``live`` concurrency group): while a ``process`` call runs, it
hands over the events the call emitted so far — an agent's tokens,
``add_event``, outputs — waiting on a condition until there are some (a long
poll: nothing spins while a handler is quiet). Each event reaches the
driver once: through ``follow``, or with the call's result.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any

from .._core import (
    Event,
    ExecutorFailure,
    Inbox,
    Node,
    Outbox,
    Reducers,
    RunScope,
    SpanRecord,
    SpanRecorder,
    Superstep,
    run_inbox,
)

__all__ = ["Host", "Shared"]


class Shared:
    """A message sent to several inboxes of one superstep: put in the object
    store once and fetched by each actor, instead of shipped with each call."""

    __slots__ = ("ref",)

    def __init__(self, ref: Any) -> None:
        self.ref = ref


# A call's outbox (None: it failed), events not streamed, failure, snapshot,
# tokens used, whether the executor has attributes of its own (only then is
# there anything to bring back at the run's end), and the spans it recorded
# (a traced run: the driver makes them spans of its trace).
Result = tuple[
    Outbox | None,
    list[Event],
    BaseException | None,
    tuple[bool, Any] | None,
    dict[str, Any],
    bool,
    list[SpanRecord],
]


class Host:
    """Hosts one executor (see the module doc). ``begin`` starts each run's
    use of the actor; a per-run executor's instance lives in ``instances``
    for the run: the driver's, when the run goes on, or made on first use."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.loop = asyncio.new_event_loop()
        self.state_version = -1
        self.state: Mapping[str, Any] = {}
        self.instances: dict[str, Any] = {}
        self.run: tuple[Any, Reducers] | None = None  # the run's context and reducers
        self.scope: dict[str, Any] = {}
        self.stateful = False  # whether its executor ever had attributes of its own
        # The current call's events, how many ``follow`` took, and which call.
        self.changed = threading.Condition()
        self.events: list[Event] = []
        self.taken = 0
        self.call = -1
        self.running = False

    def begin(self, instance: Any, state: dict[str, Any] | None, scope: dict[str, Any]) -> str:
        """A run takes this actor: forget the last run's state and context;
        a per-run executor gets the run's ``instance`` (or a fresh one on
        first use), a shared one the driver's attributes (``state``); the
        run's ``scope`` (ids, names) is kept for its calls. The Ray node this
        actor runs on. (A warm actor gets this with its first call.)"""
        import ray

        self.state_version, self.state, self.run, self.scope = -1, {}, None, scope
        self.instances = {} if instance is None else {self.node.id: instance}
        if state is not None and self.node.host is not None:
            self.node.host._set_user_state(state)
        return str(ray.get_runtime_context().get_node_id())

    def _emit(self, event: Event) -> None:
        with self.changed:
            self.events.append(event)
            self.changed.notify_all()

    def process(
        self,
        call: int,
        step: int,
        inbox: Inbox,
        state: tuple[int, list[Any]],
        run: list[Any],
        begin: tuple[Any, dict[str, Any] | None, dict[str, Any]] | None,
    ) -> Result:
        if begin is not None:
            self.begin(*begin)
        with self.changed:
            self.call, self.events, self.taken, self.running = call, [], 0, True
            self.changed.notify_all()
        spans = SpanRecorder() if self.scope.get("traced") else None
        try:
            outbox, cause, snapshot, usage = self._process(step, inbox, state, run, spans)
        finally:
            with self.changed:
                self.running = False
                rest, self.taken = self.events[self.taken :], len(self.events)
                self.changed.notify_all()
        executor = self._executor()
        self.stateful = self.stateful or bool(executor is not None and executor._user_state())
        records = spans.take() if spans is not None else []
        return outbox, rest, cause, snapshot, usage, self.stateful, records

    def _process(
        self,
        step: int,
        inbox: Inbox,
        state: tuple[int, list[Any]],
        run: list[Any],
        spans: SpanRecorder | None,
    ) -> tuple[Outbox | None, BaseException | None, tuple[bool, Any] | None, dict[str, Any]]:
        scope = self.scope
        version, (ref,) = state
        if version != self.state_version:  # fetched only when a barrier changed it
            import ray

            self.state = ray.get(ref)
            self.state_version = version
        if self.run is None:  # once per run
            import ray

            self.run = ray.get(run[0])
        context, reducers = self.run
        run_scope = RunScope(
            run_id=scope["run_id"],
            workflow_name=scope["workflow"],
            strict=scope["strict"],
            emit=self._emit,
            executor_ids=scope["executor_ids"],
            output_ids=scope["output_ids"],
            senders=scope["senders"],
            context=context,
            instances=self.instances,
            reducers=reducers,
            live=scope["live"],
        )
        run_scope.trace = spans
        if any(type(m) is Shared for _, m in inbox):
            import ray

            inbox = [(s, ray.get(m.ref) if type(m) is Shared else m) for s, m in inbox]
        work = Superstep(step, run_scope, [(self.node, inbox)], self.state)
        try:
            outbox = self.loop.run_until_complete(run_inbox(work, self.node, inbox))
        except ExecutorFailure as failure:
            return None, failure.cause, None, run_scope.usage
        return outbox, None, self._snapshot(), run_scope.usage

    def follow(self, call: int) -> tuple[list[Event], bool]:
        """The events of ``process`` call ``call`` emitted since the last
        ``follow``, once there are any or the call has ended (blocking
        until then: a long poll, nothing spins), and whether it still runs.
        Those it returns are not among the ones the call returns."""
        with self.changed:
            while self.call < call or (
                self.call == call and self.running and self.taken == len(self.events)
            ):
                self.changed.wait()
            if self.call != call:
                return [], False  # (a later call: this one is long over)
            batch, self.taken = self.events[self.taken :], len(self.events)
            return batch, self.running

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
