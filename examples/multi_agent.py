"""A multi-agent pipeline driven by a deterministic fake model (runs offline).

A writer drafts, three reviewers critique the draft in parallel, and an
editor revises it with all reviews (a fan-in). The agents are plain executors
around ``FakeModel.complete(role, prompt)``: give them a class of your own with
that method, calling an LLM, and the workflow does not change. For agents that
converse with a chat model, call tools and ask for approvals, see ``sg.Agent``
(docs/agents.md, examples/agent_approval.py).

    python examples/multi_agent.py
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass

import stepgraph as sg


class FakeModel:
    """Answers prompts with canned, deterministic text."""

    async def complete(self, role: str, prompt: str) -> str:
        await asyncio.sleep(0.01)  # pretend to wait for a network
        if role == "writer":
            return f"Draft about {prompt}: supersteps make agents predictable."
        if role.startswith("reviewer"):
            focus = role.split(":", 1)[1]
            return f"[{focus}] {'ok' if focus != 'tone' else 'more friendly, please'}"
        draft, _, reviews = prompt.rpartition(REVIEWS)  # the editor: the draft, then the reviews
        if "friendly" in reviews:
            draft = draft.replace("predictable", "predictable and friendly")
        return draft


REVIEWS = "\n\nReviews:\n"  # what separates the draft from the reviews in the editor's prompt


@dataclass(frozen=True)
class Draft:
    text: str


@dataclass(frozen=True)
class Critique:
    focus: str
    note: str
    draft: Draft


class Writer(sg.Executor):
    def __init__(self, model: FakeModel) -> None:
        super().__init__("writer")
        self.model = model

    @sg.handler
    async def write(self, topic: str, ctx: sg.WorkflowContext[Draft]) -> None:
        await ctx.send_message(Draft(await self.model.complete("writer", topic)))


class Reviewer(sg.Executor):
    def __init__(self, focus: str, model: FakeModel) -> None:
        super().__init__(f"review-{focus}")
        self.focus = focus
        self.model = model

    @sg.handler
    async def review(self, draft: Draft, ctx: sg.WorkflowContext[Critique]) -> None:
        note = await self.model.complete(f"reviewer:{self.focus}", draft.text)
        await ctx.send_message(Critique(self.focus, note, draft))


class Editor(sg.Executor):
    def __init__(self, model: FakeModel) -> None:
        super().__init__("editor")
        self.model = model

    @sg.handler
    async def edit(self, critiques: list[Critique], ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        for critique in critiques:
            await ctx.add_event(sg.UserEvent(kind="critique", data=critique.note))
        reviews = "\n".join(f"- {c.note}" for c in critiques)
        prompt = f"{critiques[0].draft.text}{REVIEWS}{reviews}"
        revised = await self.model.complete("editor", prompt)
        await ctx.yield_output(revised)


def build(model: FakeModel | None = None) -> sg.Workflow:
    model = model or FakeModel()
    writer = Writer(model)
    reviewers = [Reviewer(focus, model) for focus in ("facts", "tone", "length")]
    editor = Editor(model)
    return (
        sg.WorkflowBuilder(start=writer, name="newsroom")
        .add_fan_out(writer, reviewers)
        .add_fan_in(reviewers, editor)
        .build()
    )


async def main() -> None:
    async with build().stream("workflow engines") as events:
        async for event in events:
            if event.kind == "critique":
                print(f"critique: {event.data}")  # type: ignore[attr-defined]
            elif isinstance(event, sg.OutputEvent):
                print(f"final: {event.data}")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        print("stopped.", file=sys.stderr)
        sys.exit(130)
