"""Routing: turn a superstep's outboxes into the next superstep's inboxes.

Senders are visited in schedule order and each sender's messages in send order,
so every inbox is ordered by (sender position, send order) — design §1.4.
A message goes through each of its sender's edge groups in the order they were
added. A message that reaches no inbox (and no fan-in buffer) is reported; a
message that conditional edges decline on purpose (every condition false, or a
multi-select choosing nobody) is a routing decision, not a loss.

A fan-in buffers what its sources send; once every source has sent, it
delivers everything each source sent up to that barrier as one list (source
order, then send order). The list is decided after all of a superstep's
messages are routed — a source may send several messages in one superstep —
and lands in its target's inbox after the messages routed there directly, fan-ins
in the order they were added.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .._exceptions import RoutingError
from ._context import Outbox
from ._graph import (
    DirectEdge,
    EdgeGroup,
    FanInEdge,
    FanOutEdge,
    Graph,
    MultiSelectEdge,
    SwitchEdge,
)
from ._typing import a_value_type, type_name

__all__ = ["Inbox", "Router", "FanInBuffers"]

# One delivery: (sender id, message). Sender "" is the run's input.
Inbox = list[tuple[str, Any]]
# Per fan-in edge (by position in Graph.edges): source id -> buffered messages.
FanInBuffers = dict[int, dict[str, list[Any]]]


async def _resolve(value: Any) -> Any:
    return (await value) if inspect.isawaitable(value) else value


async def _predicate(
    predicate: Callable[[Any], Any], message: Any, group: EdgeGroup, what: str
) -> bool:
    """Call a sync or async predicate; its exception, or ``None`` for an
    answer (most likely a forgotten ``return``, which would drop every
    message unseen), fails the run as a ``RoutingError`` naming ``what``."""
    try:
        result = predicate(message)
        if type(result) is not bool:
            result = await _resolve(result)
    except Exception as exc:
        raise RoutingError(
            f"{what} raised {type(exc).__name__}: {exc}", executor_id=group.sources[0]
        ) from exc
    if result is None:
        raise RoutingError(
            f"{what} returned None for {a_value_type(message)}; it must return true or "
            "false (is a return missing?)",
            executor_id=group.sources[0],
        )
    return bool(result)


class Router:
    """Routes for one run; holds that run's fan-in buffers."""

    __slots__ = ("_fan_in_index", "_graph", "buffers")

    def __init__(self, graph: Graph, buffers: FanInBuffers | None = None) -> None:
        self._graph = graph
        self._fan_in_index = {id(g): i for i, g in enumerate(graph.edges) if type(g) is FanInEdge}
        self.buffers: FanInBuffers = buffers if buffers is not None else {}

    async def route(
        self,
        outboxes: Iterable[Outbox],
        superstep: int,
        report: Callable[[str, str], None],
    ) -> dict[str, Inbox]:
        """Route every sent message. ``report(source, text)`` is called for
        each undeliverable message (it raises in strict mode)."""
        inboxes: dict[str, Inbox] = {}
        filled: dict[int, str] = {}  # fan-in edges that buffered now -> their last sender
        out_edges = self._graph.out_edges
        nodes = self._graph.nodes
        for outbox in outboxes:
            if not outbox.sent:
                continue
            source = outbox.executor_id
            groups = out_edges.get(source, ())
            for message, target in outbox.sent:
                delivered = declined = False
                rejected: list[str] = []
                for group in groups:
                    if target is not None and target not in group.targets:
                        continue
                    kind = type(group)
                    if kind is DirectEdge:
                        dst = group.targets[0]
                        condition = group.condition  # type: ignore[attr-defined]
                        if condition is not None and not await self._test(
                            condition, message, group
                        ):
                            declined = True
                            continue
                        chosen: Sequence[str] = (dst,)
                    elif kind is FanOutEdge:
                        chosen = group.targets if target is None else (target,)
                    elif kind is FanInEdge:
                        index = self._fan_in_index[id(group)]
                        buffer = self.buffers.get(index)
                        if buffer is None:
                            buffer = self.buffers[index] = {}
                        held = buffer.get(source)
                        if held is None:
                            buffer[source] = [message]
                        else:
                            held.append(message)
                        filled[index] = source
                        delivered = True
                        continue
                    elif kind is SwitchEdge:
                        dst_or_none = await self._switch(group, message)  # type: ignore[arg-type]
                        if dst_or_none is None or (target is not None and dst_or_none != target):
                            if dst_or_none is None:
                                rejected.append(f"no case of {group.label()} matched")
                            continue
                        chosen = (dst_or_none,)
                    else:
                        chosen = await self._select(group, message)  # type: ignore[arg-type]
                        if target is not None:
                            chosen = [t for t in chosen if t == target]
                        if not chosen:
                            declined = True
                            continue
                    for dst in chosen:
                        if nodes[dst].accepts(message):
                            inbox = inboxes.get(dst)
                            if inbox is None:
                                inboxes[dst] = [(source, message)]
                            else:
                                inbox.append((source, message))
                            delivered = True
                        else:
                            rejected.append(f"{dst!r} has no handler for it")
                if not delivered and not (declined and not rejected):
                    report(source, self._why(source, message, target, groups, rejected, superstep))
        for index in sorted(filled):
            self._release(index, filled[index], inboxes, report)
        return inboxes

    def _release(
        self,
        index: int,
        source: str,
        inboxes: dict[str, Inbox],
        report: Callable[[str, str], None],
    ) -> None:
        """Deliver fan-in ``index``'s list if every source has sent."""
        group = self._graph.edges[index]
        buffer = self.buffers[index]
        if len(buffer) < len(group.sources):
            return
        batch = [m for s in group.sources for m in buffer[s]]
        del self.buffers[index]
        dst = group.targets[0]
        if self._graph.nodes[dst].accepts(batch):
            inboxes.setdefault(dst, []).append((source, batch))
        else:
            report(
                source,
                f"the list of {len(batch)} message(s) collected by {group.label()} was not "
                f"delivered: {dst!r} has no handler for {_describe_list(batch)}",
            )

    async def _test(self, condition: Callable[[Any], Any], message: Any, group: EdgeGroup) -> bool:
        return await _predicate(condition, message, group, f"the condition of {group.label()}")

    async def _switch(self, group: SwitchEdge, message: Any) -> str | None:
        for predicate, dst in group.cases:
            what = f"a case predicate of {group.label()} (case -> {dst!r})"
            if await _predicate(predicate, message, group, what):
                return dst
        return group.default

    async def _select(self, group: MultiSelectEdge, message: Any) -> Sequence[str]:
        assert group.selector is not None
        try:
            chosen = await _resolve(group.selector(message, list(group.targets)))
        except Exception as exc:
            raise RoutingError(
                f"the selector of {group.label()} raised {type(exc).__name__}: {exc}",
                executor_id=group.sources[0],
            ) from exc
        if isinstance(chosen, str) or not isinstance(chosen, Iterable):
            raise RoutingError(
                f"the selector of {group.label()} returned {chosen!r}; it must return a list "
                "of target ids",
                executor_id=group.sources[0],
            )
        chosen = list(chosen)
        unknown = [t for t in chosen if t not in group.targets]
        if unknown:
            raise RoutingError(
                f"the selector of {group.label()} returned unknown target(s) {unknown}; "
                f"its targets are {list(group.targets)}",
                executor_id=group.sources[0],
            )
        return list(dict.fromkeys(chosen))  # each target at most once, in selector order

    @staticmethod
    def _why(
        source: str,
        message: Any,
        target: str | None,
        groups: Sequence[EdgeGroup],
        rejected: list[str],
        superstep: int,
    ) -> str:
        what = f"{a_value_type(message)} sent by {source!r} in superstep {superstep}"
        if not groups:
            reason = f"{source!r} has no outgoing edges"
        elif target is not None and not any(target in g.targets for g in groups):
            reason = f"no edge of {source!r} leads to target {target!r}"
        else:
            reason = "; ".join(dict.fromkeys(rejected)) or "no edge routed it"
        return f"{what} was not delivered: {reason}"


def _describe_list(batch: list[Any]) -> str:
    names = sorted({type_name(type(m)) for m in batch})
    return f"list[{' | '.join(names)}]"
