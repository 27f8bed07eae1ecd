"""Workflows used by the sub-workflow tests (importable by a subprocess)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import stepgraph as sg


@dataclass(frozen=True)
class Question:
    text: str


class Asker(sg.Executor):
    """Asks whether to accept its text; yields the decision."""

    @sg.handler
    async def on(self, text: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        ctx.state.set("text", text)
        await ctx.request_info(Question(f"accept {text}?"), bool)

    @sg.response_handler
    async def decided(self, q: Question, ok: bool, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.yield_output(f"{ctx.state.get('text')} {'accepted' if ok else 'rejected'}")


def asking_child(name: str = "child") -> sg.Workflow:
    return sg.WorkflowBuilder(start=Asker(f"{name}-asker"), name=name).build()


class Shout(sg.Executor):
    """A child that upper-cases, records overlap, and may wait."""

    def __init__(self, id: str, delay: float = 0.0) -> None:
        super().__init__(id)
        self.delay = delay
        self.active = 0
        self.max_active = 0

    @sg.handler
    async def on(self, text: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        ctx.state.set("k", f"child saw {text}")
        await asyncio.sleep(self.delay)
        await ctx.yield_output(text.upper())
        self.active -= 1


def shouting_child(name: str = "shout", delay: float = 0.0) -> sg.Workflow:
    return sg.WorkflowBuilder(start=Shout(f"{name}-exec", delay), name=name).build()


@sg.executor(id="collect")
async def collect(value: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
    await ctx.yield_output(value)


def with_child(child: sg.Workflow, **options: Any) -> sg.Workflow:
    sub = sg.WorkflowExecutor(child, id="sub", **options)
    return sg.WorkflowBuilder(start=sub, name="parent").add_edge(sub, collect).build()


def three_levels(store: sg.CheckpointStore | None = None) -> sg.Workflow:
    inner = asking_child("inner")
    mid = sg.WorkflowBuilder(
        start=sg.WorkflowExecutor(inner, id="inner", forward_outputs=True), name="mid"
    ).build()
    outer = sg.WorkflowBuilder(
        start=sg.WorkflowExecutor(mid, id="mid", forward_outputs=True),
        name="outer",
        checkpoints=store,
    )
    return outer.build()
