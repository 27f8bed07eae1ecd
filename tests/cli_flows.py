"""Workflows for the CLI tests, named on the command line as tests.cli_flows:NAME."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from dataclasses import dataclass
from typing import Any, TypedDict

import pydantic
import typing_extensions

import stepgraph as sg


@dataclass(frozen=True)
class Order:
    item: str
    quantity: int


@sg.executor(id="price")
async def price(order: Order, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
    await ctx.yield_output(f"{order.quantity} x {order.item} = {order.quantity * 2.5:.2f}")


def pricing() -> sg.Workflow:
    return sg.WorkflowBuilder(start=price, name="pricing").build()


@sg.executor(id="tick")
async def tick(n: int, ctx: sg.WorkflowContext[int, int]) -> None:
    await asyncio.sleep(0.15)
    if n < 12:
        await ctx.send_message(n + 1)
    else:
        await ctx.yield_output(n)


def slow() -> sg.Workflow:
    return sg.WorkflowBuilder(start=tick, name="slow").add_edge(tick, tick).build()


@sg.executor(id="explode")
async def explode(text: str) -> None:
    raise ValueError(f"cannot take {text!r}")


def failing() -> sg.Workflow:
    return sg.WorkflowBuilder(start=explode, name="failing").build()


def failing_deep() -> sg.Workflow:
    """``explode`` two sub-workflows down."""
    inner = sg.WorkflowBuilder(start=explode, name="inner").build()
    mid = sg.WorkflowBuilder(start=sg.WorkflowExecutor(inner, id="inner"), name="mid").build()
    return sg.WorkflowBuilder(start=sg.WorkflowExecutor(mid, id="mid"), name="deep").build()


@dataclass(frozen=True)
class Confirm:
    question: str


class Gate(sg.Executor):
    @sg.handler
    async def on(self, text: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.request_info(Confirm(f"let {text} through?"), bool)

    @sg.response_handler
    async def answered(self, c: Confirm, ok: bool, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.yield_output(f"{c.question} {'yes' if ok else 'no'}")


def asking() -> sg.Workflow:
    return sg.WorkflowBuilder(start=Gate("gate"), name="asking").build()


class Relay(sg.Executor):
    """Asks its input as it is (an empty string too)."""

    @sg.handler
    async def on(self, text: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.request_info(text, bool)

    @sg.response_handler
    async def answered(self, text: str, ok: bool, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.yield_output(text)


def relaying() -> sg.Workflow:
    return sg.WorkflowBuilder(start=Relay("relay"), name="relaying").build()


def _is_small(n: int) -> bool:
    return n < 10


@sg.executor(id="route.me")
async def route(n: int) -> int:
    return n


def _child() -> sg.Workflow:
    @sg.executor(id="inner")
    async def inner(n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        await ctx.yield_output(n)

    return sg.WorkflowBuilder(start=inner, name="child").build()


def fancy() -> sg.Workflow:
    """Every edge kind, a sub-workflow, and ids that differ only by punctuation."""

    def sink(eid: str) -> sg.FunctionExecutor:
        async def take(n: int, ctx: sg.WorkflowContext[int]) -> None:
            await ctx.send_message(n)

        return sg.executor(id=eid)(take)

    a_b, a_dot_b, a_under_b = sink("a-b"), sink("a.b"), sink("a_b")
    joined, last = sink("join"), sink("last")

    @sg.executor(id="end")
    async def end(values: list[int]) -> None: ...

    # "last" forwards ints but has nowhere to send them: that is a runtime warning,
    # not a build error, and the drawing does not care.
    sub = sg.WorkflowExecutor(_child(), id="sub")
    return (
        sg.WorkflowBuilder(start=route, name="fancy")
        .add_switch(route, [sg.Case(_is_small, a_b), sg.Default(a_dot_b)])
        .add_edge(route, a_under_b, condition=lambda n: n > 100)
        .add_fan_out(a_b, [joined, sub])
        .add_fan_in([a_dot_b, a_under_b], end)
        .add_multi_select(joined, [last], lambda n, targets: [])
        .build()
    )


# -- hostile text: rich markup in ids, inputs, outputs and errors ----------------


@sg.executor(id="[bold]x")
async def markup_echo(text: str, ctx: sg.WorkflowContext[str, str]) -> None:
    await ctx.yield_output(f"[bold]{text}[/bold] list[str]")
    await ctx.send_message(text)


@sg.executor(id="[red]boom")
async def markup_boom(text: str) -> None:
    raise ValueError(f"cannot take {text} (expected list[str])")


def hostile() -> sg.Workflow:
    return (
        sg.WorkflowBuilder(start=markup_echo, name="[b]hostile[/b]")
        .add_edge(markup_echo, markup_boom)
        .build()
    )


# -- typed input and answers -------------------------------------------------------


@dataclass(frozen=True)
class Measure:
    label: str
    value: float
    tags: tuple[str, ...] = ()


@sg.executor(id="measure")
async def measure(m: Measure, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
    await ctx.yield_output(f"{m.label}={m.value!r} {list(m.tags)}")


def measuring() -> sg.Workflow:
    return sg.WorkflowBuilder(start=measure, name="measuring").build()


@dataclass(frozen=True)
class Verdict:
    approved: bool
    note: str


class Reviewer(sg.Executor):
    @sg.handler
    async def on(self, text: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.request_info(Confirm(f"review {text}"), Verdict)

    @sg.response_handler
    async def answered(
        self, c: Confirm, verdict: Verdict, ctx: sg.WorkflowContext[sg.Never, str]
    ) -> None:
        await ctx.yield_output(f"{c.question}: {verdict.approved} ({verdict.note})")


def reviewing() -> sg.Workflow:
    return sg.WorkflowBuilder(start=Reviewer("reviewer"), name="reviewing").build()


# -- two unnamed workflows (both default to the name "workflow") ---------------------


def unnamed_first() -> sg.Workflow:
    return sg.WorkflowBuilder(start=Gate("first_gate")).build()


def unnamed_second() -> sg.Workflow:
    return sg.WorkflowBuilder(start=Gate("second_gate")).build()


def needs_arguments(size: int, label: str = "x") -> sg.Workflow:
    return pricing()


def returns_int() -> int:
    return 3


def returns_none() -> None:
    return None


def exits() -> None:
    sys.exit("no workflow today")


@sg.executor(id="hog")
async def hog(n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
    import os
    import time

    mark = os.environ.get("HOG_STARTED")  # (a test waits for this file, then presses Ctrl-C)
    if mark:
        open(mark, "w").close()  # noqa: ASYNC230
    time.sleep(n)  # noqa: ASYNC251  (holds the loop: a Ctrl-C lands when it returns)
    await ctx.yield_output(n)


def hogging() -> sg.Workflow:
    return sg.WorkflowBuilder(start=hog, name="hogging").build()


@sg.executor(id="echo")
async def echo(value: Any, ctx: sg.WorkflowContext[sg.Never, Any]) -> None:
    await ctx.yield_output(value)


def echoing() -> sg.Workflow:
    return sg.WorkflowBuilder(start=echo, name="echoing").build()


@sg.executor(id="quitter")
async def quitter(n: int) -> None:
    raise SystemExit(3)


def quitting() -> sg.Workflow:
    return sg.WorkflowBuilder(start=quitter, name="quitting").build()


class BigGate(sg.Executor):
    @sg.handler
    async def on(self, size: int, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.request_info("x" * size, bool)

    @sg.response_handler
    async def answered(self, text: str, ok: bool, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.yield_output(f"{len(text)} {ok}")


def asking_big() -> sg.Workflow:
    return sg.WorkflowBuilder(start=BigGate("big"), name="asking-big").build()


class FixedGate(sg.Executor):
    @sg.handler
    async def on(self, text: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.request_info(Confirm(f"let {text} through?"), bool, request_id="r1")

    @sg.response_handler
    async def answered(self, c: Confirm, ok: bool, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.yield_output(f"{c.question} {'yes' if ok else 'no'}")


def asking_fixed() -> sg.Workflow:
    """Every run asks under one request id ("r1")."""
    return sg.WorkflowBuilder(start=FixedGate("gate"), name="asking-fixed").build()


class BreakingGate(sg.Executor):
    """Asks, and damages the SQLite store it is told of (its answers table
    dropped), as a store failing right after the run would."""

    @sg.handler
    async def on(self, path: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.request_info(Confirm("go on?"), bool)
        with sqlite3.connect(path) as db:
            db.execute("DROP TABLE answers")
        db.close()

    @sg.response_handler
    async def answered(self, c: Confirm, ok: bool, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.yield_output(str(ok))


def asking_breaking() -> sg.Workflow:
    return sg.WorkflowBuilder(start=BreakingGate("gate"), name="asking-breaking").build()


async def async_build() -> sg.Workflow:
    return pricing()


def returns_a_coroutine() -> Any:
    """A plain function that hands back a coroutine (a wrapped async factory)."""
    return async_build()


@sg.executor(id="nest")
async def nest(depth: int, ctx: sg.WorkflowContext[sg.Never, Any]) -> None:
    value: Any = "core"
    for _ in range(depth):
        value = [value]
    await ctx.yield_output(value)


def nesting() -> sg.Workflow:
    """Outputs a list nested ``depth`` deep (deeper than Python's repr goes)."""
    return sg.WorkflowBuilder(start=nest, name="nesting").build()


class Settings(pydantic.BaseModel):
    """A model that takes fields it does not declare (kept in model_extra)."""

    model_config = pydantic.ConfigDict(extra="allow")
    name: str


@sg.executor(id="configure")
async def configure(settings: Settings, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
    await ctx.yield_output(f"{settings.name} {settings.model_extra}")


def configuring() -> sg.Workflow:
    return sg.WorkflowBuilder(start=configure, name="configuring").build()


class Hook(pydantic.BaseModel):
    """A model that says itself that fields it does not declare are dropped."""

    model_config = pydantic.ConfigDict(extra="ignore")
    event: str


class Deploy(pydantic.BaseModel):
    """A plain model holding one that takes undeclared fields, and one that drops them."""

    settings: Settings
    hook: Hook | None = None
    dry_run: bool = False


@sg.executor(id="deploy")
async def deploy(d: Deploy, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
    hook = d.hook.event if d.hook else None
    await ctx.yield_output(f"{d.settings.name} {d.settings.model_extra} {hook} {d.dry_run}")


def deploying() -> sg.Workflow:
    return sg.WorkflowBuilder(start=deploy, name="deploying").build()


class Job(TypedDict):
    name: str
    n: int


class Jobs(sg.Executor):
    @sg.handler
    async def on(self, job: Job, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.yield_output(f"{job['name']}:{job['n']}")


jobs = sg.WorkflowBuilder(start=Jobs("jobs"), name="jobs").build()


class ExtJob(typing_extensions.TypedDict):  # (the kind pydantic asks for before Python 3.12)
    name: str
    n: int


@sg.executor(id="jobs")
async def ext_jobs(job: ExtJob, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
    await ctx.yield_output(f"{job['name']}:{job['n']}")


ext = sg.WorkflowBuilder(start=ext_jobs, name="ext-jobs").build()


class Picky(sg.Executor):
    """Refuses an empty list up front; its check is broken for a list of one."""

    @sg.handler
    async def on(self, items: list[int], ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        await ctx.yield_output(sum(items))

    def check_input(self, message: Any) -> None:
        if not message:
            raise ValueError("no items to add up")
        if len(message) == 1:
            message[5]  # (a fault of its own: IndexError)


picky = sg.WorkflowBuilder(start=Picky("picky"), name="picky").build()
