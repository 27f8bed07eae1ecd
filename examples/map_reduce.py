"""Map-reduce over documents: fan out to mappers, fan in to a reducer.

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


MAPPERS = 3


@sg.executor(id="split")
async def split(documents: list[str], ctx: sg.WorkflowContext[list[str]]) -> None:
    # Every mapper gets a share, even an empty one: the fan-in waits for all.
    for index in range(MAPPERS):
        await ctx.send_message(documents[index::MAPPERS], target=f"map{index}")


class Mapper(sg.Executor):
    @sg.handler
    async def count(self, share: list[str], ctx: sg.WorkflowContext[dict[str, int]]) -> None:
        words: Counter[str] = Counter()
        for text in share:
            words.update(text.split())
        await ctx.send_message(dict(words))


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
    mappers = [Mapper(f"map{i}") for i in range(MAPPERS)]
    return (
        sg.WorkflowBuilder(start=split, name="map-reduce")
        .add_fan_out(split, mappers)
        .add_fan_in(mappers, reduce)
        .build()
    )


if __name__ == "__main__":
    for line in asyncio.run(build().run(DOCUMENTS)).outputs:
        print(line)
