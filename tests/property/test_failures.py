"""A handler failing anywhere in a random graph fails its superstep, and
nothing of that superstep is kept.

The graphs and nodes are ``test_resume_anywhere``'s (shared state, executor
snapshots, fan-ins, maps, cycles), checkpointed with ``sync`` or ``async``
durability. Hypothesis picks one handler call of the run (by its position
among the calls an uninterrupted run makes) to raise. The run must raise
``WorkflowRunError`` naming that executor and superstep with the error as
its cause, end its events with ``executor_failed``, ``failed`` and status
``FAILED``, have stored the barrier before that superstep and nothing after
it (its state untouched by the failed superstep's writes), and go on from
there — once the fault is gone — to yield what the uninterrupted run
yielded. The same workflow object then runs again as if nothing happened.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stepgraph as sg

from .test_random_graphs import Spec, graphs, reference, wire
from .test_resume_anywhere import Counting


class Boom(Exception):
    pass


@dataclass
class Fault:
    """Raise at the ``at``-th handler call of the run (counted from 0)."""

    at: int
    calls: int = 0
    armed: bool = True
    where: tuple[str, int] | None = None  # (executor, superstep) that raised


class Faulty(Counting):
    def __init__(self, index: int, jitter: random.Random, fault: Fault) -> None:
        super().__init__(index, jitter)
        self.fault = fault

    async def _handle(self, message: Any, ctx: sg.WorkflowContext[int, str]) -> None:
        fault = self.fault
        if fault.armed:
            fault.calls += 1
            if fault.calls - 1 == fault.at:
                await asyncio.sleep(0)  # (after some of the superstep's writes)
                ctx.state.set("last", ["boom", fault.at])
                fault.where = (ctx.executor_id, ctx.superstep)
                raise Boom(fault.at)
        await super()._handle(message, ctx)


def build(spec: Spec, store: sg.CheckpointStore, durability: str, fault: Fault) -> sg.Workflow:
    jitter = random.Random(spec.jitter_seed)
    nodes = [Faulty(i, jitter, fault) for i in range(spec.size)]
    builder = sg.WorkflowBuilder(
        start=nodes[0],
        max_supersteps=1000,
        checkpoints=sg.CheckpointConfig(store, durability),  # type: ignore[arg-type]
    )
    builder.add_executor(*nodes)
    wire(builder, spec, nodes.__getitem__, lambda index: lambda: Faulty(index, jitter, fault))
    return builder.build()


async def fail_and_go_on(spec: Spec, pick: int, durability: str) -> None:
    reference(spec)  # (rejects graphs whose cycles run too long)
    whole = await build(spec, sg.MemoryCheckpointStore(), "sync", Fault(-1)).run(spec.start_value)
    calls = sum(1 for e in whole.events if e.kind == "executor_invoked")
    fault = Fault(pick % calls)
    store = sg.MemoryCheckpointStore()
    workflow = build(spec, store, durability, fault)
    events: list[sg.Event] = []
    try:
        async for e in workflow.stream(spec.start_value):
            events.append(e)
    except sg.WorkflowRunError as error:
        failed = error
    else:
        raise AssertionError("the run did not fail")
    assert fault.where is not None
    executor, step = fault.where
    # (a map's item fails its map: the error names the map)
    assert (failed.executor_id, failed.superstep) == (executor, step)
    assert isinstance(failed.__cause__, Boom)
    assert [e.kind for e in events[-3:]] == ["executor_failed", "failed", "status"]
    assert events[-1] == sg.StatusEvent(status=sg.RunStatus.FAILED)
    # Nothing the failed superstep did was delivered, committed or stored.
    assert max(e.superstep or 0 for e in events if e.kind == "executor_invoked") == step
    [run] = await store.runs()
    assert run.status == "failed"
    assert await store.lease_holder(run.run_id) is None
    listed = await store.list(run.run_id)
    assert [c.superstep for c in listed] == list(range(step))
    last = listed[-1].id
    state = await workflow.get_state(last)
    assert state.state.get("last") != ["boom", fault.at]
    # Gone on from there without the fault: the rest of the uninterrupted run.
    fault.armed = False
    done = list(await store.outputs(last))
    rest = await build(spec, store, durability, fault).run(checkpoint=last, checkpoints=store)
    assert rest.status is sg.RunStatus.IDLE
    assert done + rest.outputs == whole.outputs
    # The failed workflow runs again (its instances' counts carried over).
    again = await workflow.run(spec.start_value)
    assert again.status is sg.RunStatus.IDLE
    assert len(again.outputs) == len(whole.outputs)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(graphs(), st.integers(0, 10**6), st.sampled_from(["sync", "async"]))
def test_a_failure_anywhere_keeps_nothing_of_its_superstep(
    spec: Spec, pick: int, durability: str
) -> None:
    asyncio.run(fail_and_go_on(spec, pick, durability))
