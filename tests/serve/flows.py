"""Workflows the server tests serve (importable as tests.serve.flows:...)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

import stepgraph as sg

# How long each step of ``slow`` takes, in seconds (tests change it).
STEP = 0.05


@dataclass(frozen=True)
class Job:
    steps: int
    label: str = ""


@sg.executor(id="step")
async def step(job: Job, ctx: sg.WorkflowContext[Job, str]) -> None:
    await asyncio.sleep(STEP)
    await ctx.add_event(sg.UserEvent(kind="tick", data={"left": job.steps, "label": job.label}))
    if job.steps > 1:
        await ctx.send_message(Job(job.steps - 1, job.label))
    else:
        await ctx.yield_output(f"done {job.label}")


def slow() -> sg.Workflow:
    """A chain that takes ``steps`` supersteps of ``STEP`` seconds each."""
    return sg.WorkflowBuilder(start=step, name="slow").add_edge(step, step).build()


class Gate(sg.Executor):
    """Asks a yes/no question about the text, then outputs the answer."""

    @sg.handler
    async def ask(self, text: str, ctx: sg.WorkflowContext[None, str]) -> None:
        await ctx.request_info(text, bool)

    @sg.response_handler
    async def decided(self, text: str, yes: bool, ctx: sg.WorkflowContext[None, str]) -> None:
        await ctx.yield_output(f"{text}: {'yes' if yes else 'no'}")


def gate() -> sg.Workflow:
    """One question, one answer."""
    return sg.WorkflowBuilder(start=Gate("gate"), name="gate").build()


class SlowGate(Gate):
    """As ``Gate``, taking a minute over the answer (to be killed meanwhile)."""

    @sg.response_handler
    async def decided(self, text: str, yes: bool, ctx: sg.WorkflowContext[None, str]) -> None:
        await asyncio.sleep(60)
        await super().decided(text, yes, ctx)


def slow_gate() -> sg.Workflow:
    """One question; a minute over its answer."""
    return sg.WorkflowBuilder(start=SlowGate("gate"), name="slow_gate").build()


@sg.executor(id="draft")
async def draft(topic: str, ctx: sg.WorkflowContext[str]) -> None:
    await asyncio.sleep(PACE)
    await ctx.send_message(f"a note on {topic}")


@sg.executor(id="check_facts")
async def check_facts(text: str, ctx: sg.WorkflowContext[str]) -> None:
    await asyncio.sleep(PACE)
    await ctx.send_message(f"{text} (facts checked)")


@sg.executor(id="check_style")
async def check_style(text: str, ctx: sg.WorkflowContext[str]) -> None:
    await asyncio.sleep(2 * PACE)
    await ctx.send_message(f"{text} (style checked)")


@sg.executor(id="merge")
async def merge(texts: list[str], ctx: sg.WorkflowContext[str]) -> None:
    await asyncio.sleep(PACE)
    await ctx.send_message(" + ".join(sorted(texts)))


PACE = 0.4  # seconds each step of ``paced`` takes (long enough to watch)


def paced() -> sg.Workflow:
    """A draft checked two ways at once, merged, then approved by a person."""
    checks = [check_facts, check_style]
    return (
        sg.WorkflowBuilder(start=draft, name="paced", output_from=["gate"])
        .add_fan_out(draft, checks)
        .add_fan_in(checks, merge)
        .add_edge(merge, Gate("gate"))
        .build()
    )


# ``count`` waits at the start of the superstep that handles ``steps ==
# HOLD_AT``, saying so in ``holding``, for as long as ``HOLD_AT`` stays: tests
# look at a run stopped there. Read at run time, so a replay holds too.
HOLD_AT: int | None = None
holding: int | None = None


@dataclass(frozen=True)
class Count:
    steps: int


@sg.executor(id="count")
async def count(job: Count, ctx: sg.WorkflowContext[Count, str]) -> None:
    global holding
    while job.steps == HOLD_AT:
        holding = job.steps
        await asyncio.sleep(0.01)
    holding = None
    await ctx.yield_output(f"left {job.steps}")
    if job.steps > 1:
        await ctx.send_message(Count(job.steps - 1))


def counting() -> sg.Workflow:
    """Counts ``steps`` down, one output per superstep."""
    return sg.WorkflowBuilder(start=count, name="counting").add_edge(count, count).build()


def long_counting() -> sg.Workflow:
    """``counting`` allowed many supersteps: a run of many checkpoints."""
    return (
        sg.WorkflowBuilder(start=count, name="long", max_supersteps=10_000)
        .add_edge(count, count)
        .build()
    )


class AskThenCount(sg.Executor):
    """Opens a request, then hands the count on: the run goes on (through
    ``count``, which ``HOLD_AT`` can hold) while the request waits."""

    @sg.handler
    async def ask(self, job: Count, ctx: sg.WorkflowContext[Count, str]) -> None:
        await ctx.request_info(f"go on from {job.steps}?", bool)
        await ctx.send_message(job)

    @sg.response_handler
    async def answered(self, question: str, yes: bool, ctx: sg.WorkflowContext[None, str]) -> None:
        await ctx.yield_output(f"{question} {'yes' if yes else 'no'}")


def asking() -> sg.Workflow:
    """A question asked in the first superstep while ``counting`` goes on."""
    asker = AskThenCount("asker")
    return (
        sg.WorkflowBuilder(start=asker, name="asking")
        .add_edge(asker, count)
        .add_edge(count, count)
        .build()
    )


def named(name: str) -> sg.Workflow:
    """``slow`` under another name."""
    return sg.WorkflowBuilder(start=step, name=name).add_edge(step, step).build()


def slashed() -> sg.Workflow:
    """A workflow whose name holds '/' (no URL can name it)."""
    return named("team/etl")


def dots() -> sg.Workflow:
    return named("..")


def dot() -> sg.Workflow:
    return named(".")


def unnamed() -> sg.Workflow:
    return named("")


@sg.executor(id="boom")
async def boom(text: str, ctx: sg.WorkflowContext[None, str]) -> None:
    await ctx.yield_output("before the boom")
    raise RuntimeError(f"kaboom {text}")


def failing() -> sg.Workflow:
    """Fails in its first superstep (no checkpoint of it is made)."""
    return sg.WorkflowBuilder(start=boom, name="failing").build()


@sg.executor(id="an_executor_with_a_WIDE_AND_LONG_IDENTIFIER")
async def wide(text: str, ctx: sg.WorkflowContext[None, str]) -> None:
    await ctx.yield_output(text)


@sg.executor(id="a_" + "VERY_long_executor_id_" * 7)
async def very_wide(text: str, ctx: sg.WorkflowContext[None, str]) -> None:
    await ctx.yield_output(text)


def very_wide_named() -> sg.Workflow:
    """One executor whose id (156 characters) is wider than the page's cards."""
    return sg.WorkflowBuilder(start=very_wide, name="very-wide").build()


def wide_named() -> sg.Workflow:
    """One executor whose id is too long for its box in the graph."""
    return sg.WorkflowBuilder(start=wide, name="wide").build()


@sg.executor(id="tally")
async def tally(counts: dict[str, int], ctx: sg.WorkflowContext[None, str]) -> None:
    await ctx.yield_output(" ".join(f"{key}={n}" for key, n in counts.items()))


def tallying() -> sg.Workflow:
    """Outputs the counts it is given, as given (a JSON field in the console)."""
    return sg.WorkflowBuilder(start=tally, name="tally").build()


@sg.executor(id="plus_two")
async def plus_two(job: Count, ctx: sg.WorkflowContext[None, int]) -> None:
    await ctx.yield_output(job.steps + 2)


def adding() -> sg.Workflow:
    """Outputs the whole number it is given, plus two."""
    return sg.WorkflowBuilder(start=plus_two, name="adding").build()


@sg.executor(id="echo")
async def echo(values: list[Any], ctx: sg.WorkflowContext[None, str]) -> None:
    await ctx.yield_output(json.dumps(values))


def echoing() -> sg.Workflow:
    """Outputs the JSON of the list it is given, as Python reads it (1.0 a float)."""
    return sg.WorkflowBuilder(start=echo, name="echo").build()


@dataclass(frozen=True)
class Far:
    start: int = 9007199254740993
    below: int = -9007199254740995


@sg.executor(id="far")
async def far(job: Far, ctx: sg.WorkflowContext[None, str]) -> None:
    await ctx.yield_output(f"{job.start} {job.below}")


def far_off() -> sg.Workflow:
    """Whole numbers past 2**53 as its input's defaults."""
    return sg.WorkflowBuilder(start=far, name="far").build()


@dataclass(frozen=True)
class Scale:
    factor: float = 1000.0


@sg.executor(id="scale")
async def scale(job: Scale, ctx: sg.WorkflowContext[None, str]) -> None:
    await ctx.yield_output(repr(job.factor))


def scaling() -> sg.Workflow:
    """Outputs the float it is given, as Python shows it (1000.0)."""
    return sg.WorkflowBuilder(start=scale, name="scale").build()


class Settings(BaseModel):
    retries: int = 1


class Tuning(BaseModel):
    weights: dict[str, int] = Field(default_factory=lambda: {"a": 1})
    tags: list[str] = Field(default_factory=lambda: ["x"])
    settings: Settings = Field(default_factory=lambda: Settings(retries=5))
    fallback: Settings | None = Field(default_factory=lambda: Settings(retries=6))
    fixed: Settings = Settings(retries=7)


@sg.executor(id="tune")
async def tune(job: Tuning, ctx: sg.WorkflowContext[None, str]) -> None:
    await ctx.yield_output(job.model_dump_json())


def tuning() -> sg.Workflow:
    """Fields whose defaults come from default factories, and a model instance."""
    return sg.WorkflowBuilder(start=tune, name="tune").build()


class Place(BaseModel):
    city: str = "Lyon"


class Trip(BaseModel):
    source: Place
    target: Place = Place(city="Oslo")
    direct: bool = Field(default_factory=lambda: True)
    return_too: bool | None = None


@sg.executor(id="travel")
async def travel(trip: Trip, ctx: sg.WorkflowContext[None, str]) -> None:
    await ctx.yield_output(trip.model_dump_json())


def travelling() -> sg.Workflow:
    """Two fields of one model type; yes/no fields whose default is no yes or no."""
    return sg.WorkflowBuilder(start=travel, name="trip").build()


@sg.executor(id="spread")
async def spread(n: int, ctx: sg.WorkflowContext[int]) -> None:
    for k in range(n):
        await ctx.send_message(k)


@sg.executor(id="split")
async def split(doc: int, ctx: sg.WorkflowContext[tuple[int, int]]) -> None:
    for page in range(2):
        await ctx.send_message((doc, page))


@sg.executor(id="page")
async def fussy_page(pair: tuple[int, int], ctx: sg.WorkflowContext[int]) -> None:
    if pair == (2, 1):
        raise ValueError("not this page")
    await ctx.send_message(pair[1])


@sg.executor(id="gather")
async def gather(values: list[Any], ctx: sg.WorkflowContext[sg.Never, list[Any]]) -> None:
    await ctx.yield_output(values)


def _doc() -> sg.Executor:
    pages = sg.WorkflowBuilder(start=split, name="doc").add_map(
        split, fussy_page, id="pages", to=gather
    )
    return sg.WorkflowExecutor(pages.build(), id="docs")


def failing_inside() -> sg.Workflow:
    """A map of sub-workflows whose item 2 fails in its own map ('docs[2]/pages')."""
    return (
        sg.WorkflowBuilder(start=spread, name="failing_inside")
        .add_map(spread, _doc, id="docs", to=gather)
        .build()
    )


# How large each of ``bulky``'s outputs is, and how long each superstep takes.
BULK = 10_000
BULK_STEP = 0.005


@sg.executor(id="bulk")
async def bulk(job: Count, ctx: sg.WorkflowContext[Count, str]) -> None:
    global holding
    while job.steps == HOLD_AT:
        holding = job.steps
        await asyncio.sleep(0.01)
    holding = None
    await asyncio.sleep(BULK_STEP)
    await ctx.yield_output(f"{job.steps:06d}:" + "x" * BULK)
    if job.steps > 1:
        await ctx.send_message(Count(job.steps - 1))


def bulky() -> sg.Workflow:
    """Counts ``steps`` down, one output of ``BULK`` characters per superstep."""
    return (
        sg.WorkflowBuilder(start=bulk, name="bulky", max_supersteps=100_000)
        .add_edge(bulk, bulk)
        .build()
    )
