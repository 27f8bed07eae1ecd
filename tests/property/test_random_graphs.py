"""Random graphs against a tiny sequential reference interpreter.

Hypothesis draws graphs of chains, fan-outs, fan-ins, switches, conditional
edges, maps and cycles (bounded by a counter in the messages). The engine
runs them with random scheduling jitter; a plain sequential interpreter
written here from the design's rules computes what must happen. Per executor,
deliveries, outputs and the shared state each call saw must match exactly (a
map's workers run at once, so theirs as a multiset), the schedule of every
superstep must match, the run's outputs must come in one order (superstep,
schedule, item), every message no edge delivers must be reported (a message
a condition declined is not) as must every fan-in left waiting, and no
executor may ever run two handler calls at once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

import stepgraph as sg

LIMIT = 14  # messages stop growing past this, so cycles end
MAX_DELIVERIES = 1500


def behaviour(index: int, message: int | list[int]) -> list[int]:
    """What node ``index`` sends for ``message``: the same in engine and reference."""
    value = sum(message) if isinstance(message, list) else message
    if value >= LIMIT:
        return []
    step = 2 + index % 3
    return [value + step] if value % 4 else [value + step, value + step + 1]


def value_of(message: int | list[int]) -> int:
    return sum(message) if isinstance(message, list) else message


@dataclass(frozen=True)
class Group:
    kind: str  # edge, cond, fan_out, fan_in, switch
    sources: tuple[int, ...]
    targets: tuple[int, ...]


@dataclass
class Spec:
    size: int
    groups: list[Group]
    jitter_seed: int
    start_value: int
    # Maps (source, target): map k is node size + k, with edges source -> it -> target.
    maps: list[tuple[int, int]] = field(default_factory=list)
    # Map k's max_concurrency (None: unbounded).
    bounds: list[int | None] = field(default_factory=list)

    def map_groups(self) -> list[Group]:
        groups = []
        for k, (source, target) in enumerate(self.maps):
            groups += [Group("edge", (source,), (self.size + k,)),
                       Group("edge", (self.size + k,), (target,))]  # fmt: skip
        return groups


@st.composite
def graphs(draw: st.DrawFn) -> Spec:
    size = draw(st.integers(2, 8))
    groups: list[Group] = []
    used: set[tuple[int, int]] = set()

    def free(pairs: list[tuple[int, int]]) -> bool:
        return len(set(pairs)) == len(pairs) and not (set(pairs) & used)

    def add(group: Group) -> bool:
        pairs = [(s, t) for s in group.sources for t in group.targets]
        if free(pairs) and len(set(group.sources)) == len(group.sources):
            groups.append(group)
            used.update(pairs)
            return True
        return False

    # A spanning structure first, so every node is reachable from node 0.
    for node in range(1, size):
        parent = draw(st.integers(0, node - 1))
        kind = draw(st.sampled_from(["edge", "edge", "cond", "switch"]))
        if kind == "switch":  # with a Default, or without (what matches no case: reported)
            other = draw(st.integers(0, size - 1))
            targets = (node, other) if other != node and draw(st.booleans()) else (node,)
            if not add(Group("switch", (parent,), targets)):
                add(Group("edge", (parent,), (node,)))
        else:
            add(Group(kind, (parent,), (node,)))
    # Extra edges: cycles, fan-outs and fan-ins anywhere.
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["edge", "cond", "switch", "fan_out", "fan_in", "fan_in"]))
        a, b, c = (draw(st.integers(0, size - 1)) for _ in range(3))
        if kind == "fan_out" and b != c:
            add(Group(kind, (a,), (b, c)))
        elif kind == "fan_in" and a != b:
            add(Group(kind, (a, b), (c,)))
        elif kind == "switch":
            add(Group(kind, (a,), (b, c) if b != c else (b,)))
        elif kind in ("edge", "cond"):
            add(Group(kind, (a,), (b,)))
    maps = [
        (draw(st.integers(0, size - 1)), draw(st.integers(0, size - 1)))
        for _ in range(draw(st.integers(0, 2)))
    ]
    bounds = [draw(st.sampled_from([None, 1, 2, 3])) for _ in maps]
    return Spec(size, groups, draw(st.integers(0, 2**32)), draw(st.integers(0, 5)), maps, bounds)


def condition(value: Any) -> bool:
    return value_of(value) % 3 != 0


def case(value: Any) -> bool:
    return value_of(value) % 2 == 0


# -- the reference ------------------------------------------------------------


@dataclass
class Trace:
    deliveries: dict[int, list[Any]] = field(default_factory=dict)
    outputs: dict[int, list[Any]] = field(default_factory=dict)
    schedule: list[tuple[int, ...]] = field(default_factory=list)
    # What the run yields, in order: RunResult.outputs.
    yielded: list[tuple[int, int]] = field(default_factory=list)
    # Messages reported as not delivered: (the sender or the waiting fan-in's
    # target, superstep), in order.
    dropped: list[tuple[int, int]] = field(default_factory=list)
    # A map's workers running at once: now, and at most (by map).
    running: dict[int, int] = field(default_factory=dict)
    peak: dict[int, int] = field(default_factory=dict)
    # After each barrier: the committed state, the next superstep's inboxes
    # and what each fan-in holds (by its sources).
    barriers: list[tuple[dict[str, Any], dict[int, list[Any]], list[dict[int, list[Any]]]]] = field(
        default_factory=list
    )


def reference(spec: Spec) -> Trace:
    trace = Trace()
    state: dict[str, Any] = {}
    buffers: dict[int, dict[int, list[Any]]] = {}
    inboxes: dict[int, list[Any]] = {0: [spec.start_value]}
    groups = spec.groups + spec.map_groups()
    total = 0
    while inboxes:
        order = sorted(inboxes)
        trace.schedule.append(tuple(order))
        outboxes: list[tuple[int, list[Any]]] = []
        writes: list[dict[str, Any]] = []
        for node in order:
            if node >= spec.size:  # a map: each message on a fresh worker
                batch: list[Any] = []
                for message in inboxes[node]:
                    total += 1
                    trace.deliveries.setdefault(node, []).append(message)
                    trace.outputs.setdefault(node, []).append(
                        (value_of(message), state.get("last"))
                    )
                    trace.yielded.append((node, value_of(message)))  # (item order)
                    writes.append({"last": (node, value_of(message))})
                    batch.extend(behaviour(node, message))
                outboxes.append((node, [batch]))
                continue
            own: dict[str, Any] = {}
            sent: list[Any] = []
            for message in inboxes[node]:
                total += 1
                trace.deliveries.setdefault(node, []).append(message)
                seen = own.get("last", state.get("last"))
                trace.outputs.setdefault(node, []).append((value_of(message), seen))
                trace.yielded.append((node, value_of(message)))
                own["last"] = (node, value_of(message))
                sent.extend(behaviour(node, message))
            outboxes.append((node, sent))
            writes.append(own)
        assume(total <= MAX_DELIVERIES)
        for own in writes:
            state.update(own)
        inboxes = {}
        step = len(trace.schedule)
        for node, sent in outboxes:
            for message in sent:
                # Reported unless routed somewhere, or only declined by a condition.
                delivered = declined = unmatched = False
                for index, group in enumerate(groups):
                    if node not in group.sources:
                        continue
                    if group.kind == "edge" or (group.kind == "cond" and condition(message)):
                        chosen: tuple[int, ...] = group.targets
                    elif group.kind == "fan_out":
                        chosen = group.targets
                    elif group.kind == "switch":
                        # The first target is the case's; the second, if any, the Default.
                        chosen = group.targets[:1] if case(message) else group.targets[1:]
                        unmatched |= not chosen
                    elif group.kind == "fan_in":
                        buffers.setdefault(index, {}).setdefault(node, []).append(message)
                        delivered = True
                        continue
                    else:
                        declined = True
                        continue
                    for target in chosen:
                        inboxes.setdefault(target, []).append(message)
                        delivered = True
                if not delivered and (unmatched or not declined):
                    trace.dropped.append((node, step))
        # After every direct delivery: each fan-in whose sources have all sent
        # delivers everything they sent, in source order, in edge order.
        for index in sorted(buffers):
            group = groups[index]
            buffer = buffers[index]
            if len(buffer) == len(group.sources):
                batch = [m for s in group.sources for m in buffer[s]]
                del buffers[index]
                inboxes.setdefault(group.targets[0], []).append(batch)
        held = [{s: list(m) for s, m in buffers[i].items()} for i in sorted(buffers)]
        trace.barriers.append((dict(state), {n: list(m) for n, m in inboxes.items()}, held))
    # Fan-ins still waiting when the run goes idle: reported, in edge order.
    for index in sorted(buffers):
        trace.dropped.append((groups[index].targets[0], len(trace.schedule)))
    return trace


# -- the engine -------------------------------------------------------------


class Node(sg.Executor):
    def __init__(self, index: int, jitter: random.Random, trace: Trace) -> None:
        super().__init__(f"n{index}")
        self.index = index
        self.jitter = jitter
        self.trace = trace
        self.active = 0
        self.overlapped = False

    async def _handle(self, message: Any, ctx: sg.WorkflowContext[int, Any]) -> None:
        self.active += 1
        self.overlapped |= self.active > 1
        running = self.trace.running
        running[self.index] = running.get(self.index, 0) + 1
        self.trace.peak[self.index] = max(self.trace.peak.get(self.index, 0), running[self.index])
        try:
            self.trace.deliveries.setdefault(self.index, []).append(message)
            for _ in range(self.jitter.randrange(4)):
                await asyncio.sleep(0)
            seen = ctx.state.get("last")
            self.trace.outputs.setdefault(self.index, []).append((value_of(message), seen))
            ctx.state.set("last", (self.index, value_of(message)))
            await ctx.yield_output((self.index, value_of(message)))
            for value in behaviour(self.index, message):
                await ctx.send_message(value)
        finally:
            self.active -= 1
            running[self.index] -= 1

    @sg.handler
    async def on_int(self, message: int, ctx: sg.WorkflowContext[int, Any]) -> None:
        await self._handle(message, ctx)

    @sg.handler
    async def on_list(self, message: list[int], ctx: sg.WorkflowContext[int, Any]) -> None:
        await self._handle(message, ctx)


def wire(
    builder: sg.WorkflowBuilder, spec: Spec, ref: Callable[[int], Any], worker: Callable[[int], Any]
) -> sg.WorkflowBuilder:
    """Add ``spec``'s edges and maps: node ``i`` is ``ref(i)``; map ``k``'s
    worker is ``worker(size + k)``."""
    for group in spec.groups:
        sources = [ref(i) for i in group.sources]
        targets = [ref(i) for i in group.targets]
        if group.kind == "edge":
            builder.add_edge(sources[0], targets[0])
        elif group.kind == "cond":
            builder.add_edge(sources[0], targets[0], condition=condition)
        elif group.kind == "fan_out":
            builder.add_fan_out(sources[0], targets)
        elif group.kind == "fan_in":
            builder.add_fan_in(sources, targets[0])
        else:
            cases: list[sg.Case | sg.Default] = [sg.Case(case, targets[0])]
            if len(targets) > 1:
                cases.append(sg.Default(targets[1]))
            builder.add_switch(sources[0], cases)
    for k, (source, target) in enumerate(spec.maps):
        index = spec.size + k
        bound = spec.bounds[k] if k < len(spec.bounds) else None
        builder.add_map(
            ref(source), worker(index), id=f"n{index}", to=ref(target), max_concurrency=bound
        )
    return builder


def engine(spec: Spec) -> tuple[Trace, list[Node]]:
    trace = Trace()
    jitter = random.Random(spec.jitter_seed)
    nodes = [Node(i, jitter, trace) for i in range(spec.size)]
    builder = sg.WorkflowBuilder(start=nodes[0], max_supersteps=1000)
    builder.add_executor(*nodes)

    def worker(index: int) -> Callable[[], Node]:
        return lambda: Node(index, jitter, trace)

    wire(builder, spec, nodes.__getitem__, worker)
    workflow = builder.build()
    result = asyncio.run(workflow.run(spec.start_value))
    assert result.status is sg.RunStatus.IDLE
    trace.yielded = result.outputs
    trace.dropped = [
        (int((event.executor_id or "?")[1:]), event.superstep or 0)
        for event in result.events
        if isinstance(event, sg.WarningEvent)
        and ("was not delivered" in event.message or "went idle" in event.message)
    ]
    trace.schedule = [
        tuple(int(e[1:]) for e in event.executors)
        for event in result.events
        if isinstance(event, sg.SuperstepStartedEvent)
    ]
    return trace, nodes


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(graphs())
def test_engine_matches_reference(spec: Spec) -> None:
    expected = reference(spec)
    got, nodes = engine(spec)
    assert got.schedule == expected.schedule
    for trace in (expected, got):  # a map's workers run at once: compare as multisets
        for index in range(spec.size, spec.size + len(spec.maps)):
            for table in (trace.deliveries, trace.outputs):
                if index in table:
                    table[index] = sorted(table[index], key=repr)
    assert got.deliveries == expected.deliveries
    assert got.outputs == expected.outputs
    # The run's outputs, maps' included, in one order whatever the jitter:
    # by superstep, schedule, item.
    assert got.yielded == expected.yielded
    # Nothing dropped silently: a warning for each message no edge delivered
    # (but not for those a condition declined), and for each waiting fan-in.
    assert got.dropped == expected.dropped
    event("messages reported" if expected.dropped else "nothing reported")
    assert not any(node.overlapped for node in nodes)
    # A map's workers run at once, never more than its max_concurrency.
    for k, bound in enumerate(spec.bounds):
        peak = got.peak.get(spec.size + k, 0)
        assert bound is None or peak <= bound, (k, peak, bound)
        if bound is None and peak > 1:
            event("a map's workers ran at once")
        elif bound is not None and peak == bound > 1:
            event("a bounded map ran up to its bound")
