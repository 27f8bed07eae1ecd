"""Hello chain: three executors in a row, each transforming a string.

python examples/hello.py
"""

from __future__ import annotations

import asyncio

import stepgraph as sg


@sg.executor(id="greet")
async def greet(name: str) -> str:
    return f"hello, {name}"


class Shout(sg.Executor):
    @sg.handler
    async def shout(self, text: str, ctx: sg.WorkflowContext[str]) -> None:
        await ctx.send_message(text.upper() + "!")


@sg.executor(id="show")
async def show(text: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
    await ctx.yield_output(text)


def build() -> sg.Workflow:
    return (
        sg.WorkflowBuilder(start=greet, name="hello")
        .add_chain([greet, Shout(id="shout"), show])
        .build()
    )


async def main() -> None:
    result = await build().run("world")
    for output in result.outputs:
        print(output)


if __name__ == "__main__":
    asyncio.run(main())
