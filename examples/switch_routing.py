"""Conditional routing with a switch: tickets go to the first matching team.

python examples/switch_routing.py
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import stepgraph as sg


@dataclass(frozen=True)
class Ticket:
    subject: str


def is_billing(ticket: Ticket) -> bool:
    return any(word in ticket.subject.lower() for word in ("invoice", "refund", "charge"))


def is_outage(ticket: Ticket) -> bool:
    return "down" in ticket.subject.lower()


@sg.executor(id="intake")
async def intake(subjects: list[str], ctx: sg.WorkflowContext[Ticket]) -> None:
    for subject in subjects:
        await ctx.send_message(Ticket(subject))


def team(name: str) -> sg.FunctionExecutor:
    async def handle(ticket: Ticket, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.yield_output(f"{name:<8} <- {ticket.subject}")

    return sg.executor(id=name)(handle)


def build() -> sg.Workflow:
    billing, oncall, support = team("billing"), team("oncall"), team("support")
    return (
        sg.WorkflowBuilder(start=intake, name="triage")
        .add_switch(
            intake,
            [sg.Case(is_outage, oncall), sg.Case(is_billing, billing), sg.Default(support)],
        )
        .build()
    )


if __name__ == "__main__":
    subjects = ["Refund for March invoice", "Site is down", "How do I export?"]
    for line in asyncio.run(build().run(subjects)).outputs:
        print(line)
