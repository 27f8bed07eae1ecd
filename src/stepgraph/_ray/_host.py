"""The actor body: a group of executors (one, unless the backend colocates
them) in one Ray actor, run after run.

A synchronous actor, so Ray runs its ``process`` calls one at a time and in
order; each call runs the group's inboxes of one superstep with the local
backend's code (``LocalBackend``: each inbox serially, the inboxes
concurrently) on a private event loop. ``follow`` runs on a second thread
(the actor's ``live`` concurrency group): while a ``process`` call runs, it
hands over the events the call emitted so far — an agent's tokens,
``add_event``, outputs — waiting on a condition until there are some (a long
poll: nothing spins while a handler is quiet). Each event reaches the
driver once: through ``follow``, or with the call's result.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import traceback
from collections.abc import Mapping
from typing import Any

from .._core import (
    Event,
    ExecutorFailedEvent,
    FailedEvent,
    Inbox,
    LocalBackend,
    Node,
    Outbox,
    Reducers,
    RunScope,
    SpanRecord,
    SpanRecorder,
    Superstep,
    error_line,
)

__all__ = ["Host", "RemoteError", "Shared", "portable", "relinked"]


class RemoteError(Exception):
    """A handler's exception that Ray could not bring back as it is (its
    class takes other arguments than the ones it keeps, it holds something
    that cannot be serialized): its type and message instead."""


# An exception's cause and context do not travel with it (Ray rebuilds it
# from its class, arguments and attributes): they ride along in this
# attribute, and ``relinked`` puts them back on the driver.
_CHAIN = "_stepgraph_chain"

# How far down a chain of causes and contexts travels.
_CHAIN_DEPTH = 8


def portable(exc: BaseException, depth: int = 0) -> BaseException:
    """``exc`` as the driver gets it: itself when it comes back faithfully
    (rebuilt the way Ray rebuilds it — from its class, arguments and
    attributes — with the same type and message), a group with its members
    made portable, else a ``RemoteError`` with its type and message. The
    end of its traceback (which does not travel) rides along as
    ``remote_traceback``; its cause and context (made portable) as
    ``_CHAIN``, for ``relinked``."""
    out = _portable(exc)
    cause, context = exc.__cause__, exc.__context__
    if (cause is not None or context is not None) and depth >= _CHAIN_DEPTH:
        with contextlib.suppress(Exception):  # (one that takes no attributes goes without)
            out.add_note(
                f"(its cause and context, {_chain_length(exc)} more exception(s) down, stayed "
                f"in the Ray actor: a chain travels {_CHAIN_DEPTH} deep)"
            )
    elif cause is not None or context is not None:
        cause_out = portable(cause, depth + 1) if cause is not None else None
        if context is cause:
            context_out = cause_out  # (``raise ... from exc`` in ``except ... as exc``)
        else:
            context_out = portable(context, depth + 1) if context is not None else None
        with contextlib.suppress(Exception):  # (one that takes no attributes goes without)
            setattr(out, _CHAIN, (cause_out, context_out, exc.__suppress_context__))
    return out


def portable_events(events: list[Event]) -> list[Event]:
    """``events`` with the exceptions they carry made ``portable``: a
    sub-workflow's ``executor_failed`` and ``failed`` events hold the child
    handler's exception as it was raised, and one Ray cannot rebuild on the
    driver would fail the whole call's result."""
    if not any(isinstance(e, (ExecutorFailedEvent, FailedEvent)) for e in events):
        return events
    out: list[Event] = []
    for event in events:
        if isinstance(event, (ExecutorFailedEvent, FailedEvent)) and event.exception is not None:
            event = dataclasses.replace(event, exception=portable(event.exception))
        out.append(event)
    return out


def _chain_length(exc: BaseException) -> int:
    """How many exceptions lie below ``exc`` through causes and contexts."""
    seen: set[int] = {id(exc)}
    below = [e for e in (exc.__cause__, exc.__context__) if e is not None]
    while below:
        found = below.pop()
        if id(found) not in seen:
            seen.add(id(found))
            below += [e for e in (found.__cause__, found.__context__) if e is not None]
    return len(seen) - 1


def relinked(exc: BaseException) -> BaseException:
    """``exc`` (from ``portable``, come back to the driver) with its cause
    and context linked again, as they were in the actor."""
    chain = vars(exc).pop(_CHAIN, None) if hasattr(exc, "__dict__") else None
    if chain is not None:
        cause, context, suppress = chain
        exc.__cause__ = relinked(cause) if cause is not None else None
        exc.__context__ = relinked(context) if context is not None else None
        exc.__suppress_context__ = suppress
    if isinstance(exc, BaseExceptionGroup):
        for member in exc.exceptions:
            relinked(member)
    return exc


def _portable(exc: BaseException) -> BaseException:
    frames = "".join(traceback.format_tb(exc.__traceback__)[-3:]).rstrip()
    line = error_line(exc)
    out: BaseException
    if isinstance(exc, BaseExceptionGroup):
        members = [portable(member) for member in exc.exceptions]
        try:
            out = exc.derive(members)
            if type(out) is not type(exc):  # (a subclass that does not derive itself)
                out = type(exc)(exc.message, members)
        except Exception:
            out = RemoteError(line)
    else:
        try:
            rebuilt = _sent(exc)
            faithful = type(rebuilt) is type(exc) and error_line(rebuilt) == line
        except Exception:
            faithful = False
        out = exc if faithful else RemoteError(line)
    if frames:
        try:
            out.remote_traceback = frames  # type: ignore[attr-defined]
        except Exception:  # (an exception that takes no attributes)
            out = RemoteError(line)
            out.remote_traceback = frames  # type: ignore[attr-defined]
    return out


def _sent(exc: BaseException) -> BaseException:
    """``exc`` pickled and unpickled as Ray sends it (cloudpickle): not a
    deep copy, which takes some objects pickling refuses (a weak reference
    among its attributes, or its cause's, failed the whole call's result)."""
    import ray

    pickler: Any = ray.cloudpickle
    rebuilt: BaseException = pickler.loads(pickler.dumps(exc))
    return rebuilt


# What every executor has from ``Executor.__init__``: not state of its own.
_BASE_ATTRIBUTES = frozenset({"id", "retry", "timeout", "placement"})


class Shared:
    """A message sent to several inboxes of one superstep: put in the object
    store once and fetched by each actor, instead of shipped with each call."""

    __slots__ = ("ref",)

    def __init__(self, ref: Any) -> None:
        self.ref = ref


# A call's outboxes in its batches' order (None: an executor failed), events
# not streamed, the failures (executor id, error, map item), snapshots by executor,
# tokens used, the executors that have attributes of their own (only those
# have anything to bring back at the run's end), and the spans it recorded
# (a traced run: the driver makes them spans of its trace).
Result = tuple[
    list[Outbox] | None,
    list[Event],
    list[tuple[str, BaseException, int | None]],
    dict[str, tuple[bool, Any]],
    dict[str, Any],
    list[str],
    list[SpanRecord],
]
# What a run tells an actor first: per-run instances and shared executors'
# attributes by executor id, and the run's scope (ids, names).
Begin = tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, Any]]


class Host:
    """Hosts a group of executors (see the module doc). ``begin`` starts
    each run's use of the actor; per-run executors' instances live in
    ``instances`` for the run: the driver's, when the run goes on, or made
    on first use."""

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = {node.id: node for node in nodes}
        self.loop = asyncio.new_event_loop()
        self.state_version = -1
        self.state: Mapping[str, Any] = {}
        self.instances: dict[str, Any] = {}
        self.run: tuple[Any, Reducers] | None = None  # the run's context and reducers
        self.scope: dict[str, Any] = {}
        self.stateful: set[str] = set()  # executors that ever had attributes of their own
        # The current call's events, how many ``follow`` took, and which call.
        self.changed = threading.Condition()
        self.events: list[Event] = []
        self.taken = 0
        self.call = -1
        self.running = False

    def begin(
        self, instances: dict[str, Any], states: dict[str, dict[str, Any]], scope: dict[str, Any]
    ) -> str:
        """A run takes this actor: forget the last run's state and context;
        per-run executors get the run's ``instances`` (or fresh ones on first
        use), shared ones the driver's attributes (``states``); the run's
        ``scope`` (ids, names) is kept for its calls. The Ray node this actor
        runs on. (A warm actor gets this with its first call.)"""
        import ray

        self.state_version, self.state, self.run, self.scope = -1, {}, None, scope
        self.instances = dict(instances)
        for executor_id, state in states.items():
            host = self.nodes[executor_id].host
            if host is not None:
                host._set_user_state(state)
        return str(ray.get_runtime_context().get_node_id())

    def _emit(self, event: Event) -> None:
        with self.changed:
            self.events.append(event)
            self.changed.notify_all()

    def process(
        self,
        call: int,
        step: int,
        batches: list[tuple[str, Inbox]],
        state: tuple[int, list[Any]],
        run: list[Any],
        begin: Begin | None,
    ) -> Result:
        if begin is not None:
            self.begin(*begin)
        with self.changed:
            self.call, self.events, self.taken, self.running = call, [], 0, True
            self.changed.notify_all()
        spans = SpanRecorder() if self.scope.get("traced") else None
        try:
            outboxes, failures, usage = self._process(step, batches, state, run, spans)
        finally:
            with self.changed:
                self.running = False
                rest, self.taken = self.events[self.taken :], len(self.events)
                self.changed.notify_all()
        rest = portable_events(rest)
        snapshots: dict[str, tuple[bool, Any]] = {}
        for executor_id, _ in batches:
            executor = self._executor(executor_id)
            if executor is not None and not _BASE_ATTRIBUTES.issuperset(executor._user_state()):
                self.stateful.add(executor_id)
            if outboxes is not None:
                taken = self._snapshot(executor)
                if taken is not None:
                    snapshots[executor_id] = taken
        records = spans.take() if spans is not None else []
        return outboxes, rest, failures, snapshots, usage, sorted(self.stateful), records

    def _process(
        self,
        step: int,
        batches: list[tuple[str, Inbox]],
        state: tuple[int, list[Any]],
        run: list[Any],
        spans: SpanRecorder | None,
    ) -> tuple[list[Outbox] | None, list[tuple[str, BaseException, int | None]], dict[str, Any]]:
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
            forked_from=scope.get("forked_from", ()),
        )
        run_scope.trace = spans
        work_batches: list[tuple[Node, Inbox]] = []
        for executor_id, inbox in batches:
            if any(type(m) is Shared for _, m in inbox):
                import ray

                inbox = [(s, ray.get(m.ref) if type(m) is Shared else m) for s, m in inbox]
            work_batches.append((self.nodes[executor_id], inbox))
        work = Superstep(step, run_scope, work_batches, self.state)
        try:
            outboxes = self.loop.run_until_complete(LocalBackend().run_superstep(work))
        except BaseException as exc:
            if work.failures:
                failures = [(f.executor_id, portable(f.cause), f.item) for f in work.failures]
            elif not isinstance(exc, Exception):  # (KeyboardInterrupt...: raised on the driver)
                failures = [(work_batches[0][0].id, portable(exc), None)]
            else:
                raise
            return None, failures, run_scope.usage
        return outboxes, [], run_scope.usage

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
            running = self.running
        return portable_events(batch), running

    def _executor(self, executor_id: str) -> Any:
        host = self.nodes[executor_id].host
        return host if host is not None else self.instances.get(executor_id)

    @staticmethod
    def _snapshot(executor: Any) -> tuple[bool, Any] | None:
        """What ``snapshot()`` returns now, for an executor that takes
        snapshots: ``(True, value)``, or ``(False, error)`` if it raised."""
        if executor is None or not executor.takes_snapshots:
            return None
        try:
            return True, executor.snapshot()
        except Exception as exc:
            return False, exc

    def export_portable(self) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
        """``export`` without the attributes Ray cannot serialize (asked
        when ``export`` could not come back), and those left out, by
        executor: ``name (TypeError: cannot pickle ...)``."""
        import ray

        out = self.export()
        stayed: dict[str, list[str]] = {}
        for executor_id, state in out.items():
            for key, value in list(state.items()):
                try:
                    ray.put(value)
                except Exception as exc:
                    del state[key]
                    inner: BaseException = exc  # (Ray's report: its cause says why)
                    while (inner.__cause__ or inner.__context__) is not None:
                        inner = inner.__cause__ or inner.__context__  # type: ignore[assignment]
                    why = error_line(inner, 200).splitlines()[0]
                    stayed.setdefault(executor_id, []).append(f"attribute {key!r} ({why})")
        return out, stayed

    def export(self) -> dict[str, dict[str, Any]]:
        """Its executors' attributes, for the driver's copies at the run's end."""
        out: dict[str, dict[str, Any]] = {}
        for executor_id in self.nodes:
            executor = self._executor(executor_id)
            if executor is not None:
                out[executor_id] = dict(executor._user_state())
        return out
