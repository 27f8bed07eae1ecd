"""The workflow ``python -m benchmarks --serve`` serves: a ticker whose every
superstep emits an event stamped with the time it was emitted."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import stepgraph as sg


@dataclass(frozen=True)
class Ticks:
    count: int
    every: float = 0.01  # seconds between ticks
    first: float = 0.0  # seconds before the first (while followers connect)


@sg.executor(id="ticker")
async def ticker_step(ticks: Ticks, ctx: sg.WorkflowContext[Ticks, int]) -> None:
    await asyncio.sleep(ticks.every + ticks.first)
    await ctx.add_event(sg.UserEvent(kind="tick", data={"t": time.time(), "left": ticks.count}))
    if ticks.count > 1:
        await ctx.send_message(Ticks(ticks.count - 1, ticks.every))
    else:
        await ctx.yield_output(0)


def ticker() -> sg.Workflow:
    """Ticks: one event per superstep."""
    return (
        sg.WorkflowBuilder(start=ticker_step, name="ticker", max_supersteps=100_000)
        .add_edge(ticker_step, ticker_step)
        .build()
    )
