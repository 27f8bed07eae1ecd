"""A multi-superstep workflow for the resume and crash tests (imported by
tests and run as a subprocess by the crash test).

split -> [fast, slow1]; slow1 -> slow2; fan-in [fast, slow2] -> join -> loop,
and loop -> loop three times. The fan-in's sources arrive in different
supersteps, ``loop`` keeps instance state through snapshot()/restore(), and
handlers read and write shared state.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import stepgraph as sg

PAUSE = float(os.environ.get("STEPGRAPH_TEST_PAUSE", "0"))


@sg.executor(id="split")
async def split(n: int, ctx: sg.WorkflowContext[int, str]) -> None:
    ctx.state.set("n", n)
    ctx.state.set("history", [n])
    await ctx.yield_output(f"split {n}")
    await ctx.send_message(n)


@sg.executor(id="fast")
async def fast(n: int) -> int:
    return n * 10


@sg.executor(id="slow1")
async def slow1(n: int) -> int:
    return n + 1


@sg.executor(id="slow2")
async def slow2(n: int) -> int:
    return n + 2


@sg.executor(id="join")
async def join(values: list[int], ctx: sg.WorkflowContext[int, str]) -> None:
    history = ctx.state.get("history")
    ctx.state.set("history", [*history, *values])
    await ctx.yield_output(f"join {values}")
    await ctx.send_message(sum(values))


class Loop(sg.Executor):
    def __init__(self) -> None:
        super().__init__("loop")
        self.count = 0

    @sg.handler
    async def step(self, value: int, ctx: sg.WorkflowContext[int, str]) -> None:
        if PAUSE:
            print(f"HANDLER {ctx.superstep}", flush=True)
            await asyncio.sleep(PAUSE)
        self.count += 1
        ctx.state.set("loops", self.count)
        await ctx.yield_output(f"loop {self.count} {value} n={ctx.state.get('n')}")
        if self.count % 4:
            await ctx.send_message(value + 1)
        else:
            await ctx.yield_output(f"history {ctx.state.get('history')}")

    def snapshot(self) -> Any:
        return {"count": self.count}

    def restore(self, snapshot: Any) -> None:
        self.count = snapshot["count"]


def build(store: sg.CheckpointStore | None = None, durability: str = "sync") -> sg.Workflow:
    config = sg.CheckpointConfig(store, durability) if store is not None else None  # type: ignore[arg-type]
    return (
        sg.WorkflowBuilder(start=split, name="resumable", checkpoints=config)
        .add_fan_out(split, [fast, slow1])
        .add_edge(slow1, slow2)
        .add_fan_in([fast, slow2], join)
        .add_edge(join, Loop())
        .add_edge("loop", "loop")
        .build()
    )


async def _main(mode: str, path: str) -> None:
    store = sg.SqliteCheckpointStore(path)
    workflow = build(store)
    if mode == "run":
        if os.environ.get("STEPGRAPH_TEST_HOOK_WRITE"):
            nth = int(os.environ["STEPGRAPH_TEST_HOOK_WRITE"])
            writes = 0

            def hook() -> None:
                nonlocal writes
                writes += 1
                if writes == nth:
                    print("WRITING", flush=True)
                    time.sleep(30)  # killed here, inside the transaction

            store._write_hook = hook
        result = await workflow.run(1)
    else:
        [run] = await store.runs()
        latest = await store.latest(run.run_id)
        assert latest is not None
        result = await workflow.run(checkpoint=latest.id)
    print("OUTPUTS " + json.dumps(result.outputs), flush=True)
    store.close()


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], sys.argv[2]))
