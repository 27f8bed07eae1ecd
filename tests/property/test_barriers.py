"""Each barrier of a random graph commits, routes and stores what the rules
say, before it says the superstep completed.

The graphs and nodes are ``test_random_graphs``', run with a checkpoint store
(memory or SQLite, ``sync`` durability) and streamed. For every superstep the
checkpoint of its barrier must hold the shared state the reference committed
(every write of the superstep, last in schedule order winning), the inboxes
of the next superstep in order, and what each fan-in holds; that checkpoint
is stored by the time ``superstep_completed`` is read, which comes after
every executor event of the superstep and before the next one starts.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import stepgraph as sg

from .test_answers_and_forks import a_store
from .test_random_graphs import Node, Spec, Trace, graphs, reference, wire


def build(spec: Spec, store: sg.CheckpointStore) -> sg.Workflow:
    trace = Trace()
    jitter = random.Random(spec.jitter_seed)
    nodes = [Node(i, jitter, trace) for i in range(spec.size)]
    builder = sg.WorkflowBuilder(start=nodes[0], max_supersteps=1000, checkpoints=store)
    builder.add_executor(*nodes)
    wire(builder, spec, nodes.__getitem__, lambda index: lambda: Node(index, jitter, trace))
    return builder.build()


def by_name(table: dict[int, list[Any]]) -> dict[str, list[Any]]:
    return {f"n{k}": v for k, v in table.items()}


async def check(spec: Spec, store: sg.CheckpointStore) -> None:
    expected = reference(spec)
    workflow = build(spec, store)
    events: list[sg.Event] = []
    stored_when_completed: dict[int, bool] = {}
    run_id = ""
    async with workflow.stream(spec.start_value) as stream:
        async for e in stream:
            events.append(e)
            if isinstance(e, sg.RunStartedEvent):
                run_id = e.run_id
            if isinstance(e, sg.SuperstepCompletedEvent):
                assert e.superstep is not None
                listed = await store.list(run_id)
                stored_when_completed[e.superstep] = e.superstep in {c.superstep for c in listed}
    steps = len(expected.schedule)
    assert stored_when_completed == {k: True for k in range(1, steps + 1)}
    # superstep_completed after every event of its superstep, before the next.
    marks = [
        (e.kind, e.superstep)
        for e in events
        if e.superstep is not None and e.kind in ("superstep_started", "superstep_completed")
    ]
    assert marks == [
        (kind, k)
        for k in range(1, steps + 1)
        for kind in ("superstep_started", "superstep_completed")
    ]
    position = {mark: i for i, mark in enumerate((e.kind, e.superstep) for e in events)}
    for i, e in enumerate(events):
        if e.executor_id is not None and e.superstep is not None and e.kind != "warning":
            assert position[("superstep_started", e.superstep)] < i
            assert i < position[("superstep_completed", e.superstep)], e
    listed = await store.list(run_id)
    at = {c.superstep: c.id for c in listed}
    assert sorted(at) == list(range(steps + 1))
    for step, (state, inboxes, held) in enumerate(expected.barriers, start=1):
        snapshot = await workflow.get_state(at[step])
        assert snapshot.state == state, step
        assert snapshot.messages == by_name(inboxes), step
        got = sorted(({s: m for s, m in f.items()} for f in snapshot.fan_in.values()), key=repr)
        assert got == sorted((by_name(h) for h in held), key=repr), step
    if any(held for _, _, held in expected.barriers):
        event("a fan-in held messages at a barrier")


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(graphs(), st.sampled_from(["memory", "sqlite"]))
def test_every_barrier_commits_and_stores_what_the_rules_say(spec: Spec, kind: str) -> None:
    with a_store(kind) as store:
        asyncio.run(check(spec, store))
