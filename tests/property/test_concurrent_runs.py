"""Concurrent runs of one workflow over random graphs.

The graphs of ``test_random_graphs`` are built again from registered
factories (per-run executors, maps' workers included), and several runs of
the *one* workflow go at once, each with its own scheduling jitter and its own
trace reached through the run context. Each run must match the sequential
reference on its own — deliveries, outputs, the state each call saw and the
schedule — no instance may serve two runs, and no instance may ever run two
handler calls at once.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stepgraph as sg

from .test_random_graphs import Spec, Trace, behaviour, graphs, reference, value_of, wire

RUNS = 4


@dataclass
class Run:
    """One run's own record, reached as ``ctx.context``."""

    trace: Trace
    jitter: random.Random
    foreign: list[str] = field(default_factory=list)  # instances seen in another run
    overlapped: list[str] = field(default_factory=list)


class PerRunNode(sg.Executor):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.index = int(id[1:])
        self.active = 0
        self.run: Run | None = None

    async def _handle(self, message: Any, ctx: sg.WorkflowContext[int, Any, Run]) -> None:
        run = ctx.context
        if self.run is None:
            self.run = run
        elif self.run is not run:
            run.foreign.append(self.id)
        self.active += 1
        if self.active > 1:
            run.overlapped.append(self.id)
        try:
            run.trace.deliveries.setdefault(self.index, []).append(message)
            for _ in range(run.jitter.randrange(4)):
                await asyncio.sleep(0)
            seen = ctx.state.get("last")
            run.trace.outputs.setdefault(self.index, []).append((value_of(message), seen))
            ctx.state.set("last", (self.index, value_of(message)))
            for value in behaviour(self.index, message):
                await ctx.send_message(value)
        finally:
            self.active -= 1

    @sg.handler
    async def on_int(self, message: int, ctx: sg.WorkflowContext[int, Any, Run]) -> None:
        await self._handle(message, ctx)

    @sg.handler
    async def on_list(self, message: list[int], ctx: sg.WorkflowContext[int, Any, Run]) -> None:
        await self._handle(message, ctx)


def build(spec: Spec) -> sg.Workflow:
    builder = sg.WorkflowBuilder(start="n0", max_supersteps=1000)
    for i in range(spec.size):
        builder.register(f"n{i}", PerRunNode)
    return wire(builder, spec, lambda i: f"n{i}", lambda index: PerRunNode).build()


def sorted_maps(trace: Trace, spec: Spec) -> Trace:
    """A map's workers run at once: compare their records as multisets."""
    for index in range(spec.size, spec.size + len(spec.maps)):
        for table in (trace.deliveries, trace.outputs):
            if index in table:
                table[index] = sorted(table[index], key=repr)
    return trace


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(graphs(), st.lists(st.integers(0, 2**32), min_size=RUNS, max_size=RUNS))
def test_concurrent_runs_each_match_the_reference(spec: Spec, seeds: list[int]) -> None:
    expected = sorted_maps(reference(spec), spec)
    workflow = build(spec)
    assert workflow.concurrent
    runs = [Run(Trace(), random.Random(seed)) for seed in seeds]

    async def together() -> list[sg.RunResult]:
        return await asyncio.gather(*(workflow.run(spec.start_value, context=r) for r in runs))

    results = asyncio.run(together())
    for run, result in zip(runs, results, strict=True):
        assert result.status is sg.RunStatus.IDLE
        schedule = [
            tuple(int(e[1:]) for e in event.executors)
            for event in result.events
            if isinstance(event, sg.SuperstepStartedEvent)
        ]
        assert schedule == expected.schedule
        got = sorted_maps(run.trace, spec)
        assert got.deliveries == expected.deliveries
        assert got.outputs == expected.outputs
        assert run.foreign == [] and run.overlapped == []
