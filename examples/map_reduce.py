"""Map-reduce over documents: a worker per document, decided at run time,
then one reducer over their counts (in document order).

python examples/map_reduce.py
"""

from __future__ import annotations

import asyncio
from collections import Counter

import stepgraph as sg

DOCUMENTS = [
    "the graph runs in supersteps",
    "every executor has one inbox and the inbox is serial",
    "the barrier commits state and routes the messages",
]


@sg.executor(id="split")
async def split(documents: list[str], ctx: sg.WorkflowContext[str, str]) -> None:
    if not documents:  # a map of no items delivers nothing: answer here
        await ctx.yield_output("no words")
    for text in documents:
        await ctx.send_message(text)


class Count(sg.Executor):
    """Counts the words of one document (a fresh worker per document)."""

    @sg.handler
    async def count(self, text: str, ctx: sg.WorkflowContext[dict[str, int]]) -> None:
        await ctx.send_message(dict(Counter(text.split())))


@sg.executor(id="reduce")
async def reduce(partials: list[dict[str, int]], ctx: sg.WorkflowContext[sg.Never, str]) -> None:
    total: Counter[str] = Counter()
    for partial in partials:
        total.update(partial)
    if not total:
        await ctx.yield_output("no words")
    for word, n in sorted(total.items(), key=lambda item: (-item[1], item[0]))[:3]:
        await ctx.yield_output(f"{word}: {n}")


def build() -> sg.Workflow:
    return (
        sg.WorkflowBuilder(start=split, name="map-reduce")
        .add_map(split, Count, id="count", to=reduce, max_concurrency=64)
        .build()
    )


if __name__ == "__main__":
    for line in asyncio.run(build().run(DOCUMENTS)).outputs:
        print(line)
