"""The bundled demo: a review pipeline that runs offline.

A writer drafts a text, two reviewers check it in parallel (one superstep,
concurrently), a fan-in hands both reviews to the editor, and a publisher asks
a human to approve before it yields the final text. ``stepgraph demo`` runs
it; ``build()`` returns a fresh workflow (``stepgraph viz stepgraph.demo:build``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ._builder import WorkflowBuilder
from ._core import WorkflowContext
from ._executor import Executor, executor, handler, response_handler
from ._workflow import Workflow

__all__ = ["Approval", "Draft", "Review", "build"]


@dataclass(frozen=True)
class Draft:
    topic: str
    text: str


@dataclass(frozen=True)
class Review:
    reviewer: str
    draft: Draft
    notes: tuple[str, ...]


@dataclass(frozen=True)
class Approval:
    text: str


@executor(id="writer")
async def writer(topic: str, ctx: WorkflowContext[Draft]) -> None:
    text = f"{topic.strip().capitalize()} runs in supersteps. every executor has one inbox"
    await ctx.send_message(Draft(topic=topic, text=text))


class Reviewer(Executor):
    """Checks one rule; the counter shows that executor state persists across runs."""

    def __init__(self, id: str, rule: str) -> None:
        super().__init__(id)
        self.rule = rule
        self.reviews = 0

    @handler
    async def review(self, draft: Draft, ctx: WorkflowContext[Review]) -> None:
        self.reviews += 1
        notes: list[str] = []
        if self.rule == "punctuation" and not draft.text.endswith("."):
            notes.append("end with a full stop")
        if self.rule == "capitals":
            notes.extend(
                f"capitalise {s.strip().split()[0]!r}"
                for s in draft.text.split(". ")[1:]
                if s.strip() and s.strip()[0].islower()
            )
        await ctx.send_message(Review(reviewer=self.id, draft=draft, notes=tuple(notes)))


@executor(id="editor")
async def editor(reviews: list[Review], ctx: WorkflowContext[str]) -> None:
    text = reviews[0].draft.text
    sentences = [s.strip() for s in text.rstrip(".").split(". ")]
    text = ". ".join(s[:1].upper() + s[1:] for s in sentences) + "."  # (a topic of "." or ". .")
    applied = sum(len(r.notes) for r in reviews)
    await ctx.send_message(f"{text} ({applied} review notes applied)")


class Publisher(Executor):
    """Asks a human before publishing."""

    @handler
    async def publish(self, text: str, ctx: WorkflowContext[None, str]) -> None:
        await ctx.request_info(Approval(text), bool)

    @response_handler
    async def decided(
        self, request: Approval, approved: bool, ctx: WorkflowContext[None, str]
    ) -> None:
        await ctx.yield_output(("published: " if approved else "held back: ") + request.text)


def build() -> Workflow:
    """A fresh demo workflow: writer -> [punctuation, capitals] -> editor -> publisher."""
    punctuation = Reviewer("punctuation", "punctuation")
    capitals = Reviewer("capitals", "capitals")
    publisher = Publisher("publisher")
    return (
        WorkflowBuilder(start=writer, name="review-pipeline", output_from=[publisher])
        .add_fan_out(writer, [punctuation, capitals])
        .add_fan_in([punctuation, capitals], editor)
        .add_edge(editor, publisher)
        .build()
    )
