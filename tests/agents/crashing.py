"""A workflow for the crash test: an agent whose tools and model calls
write to a log file, and whose second tool waits until it is killed."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import stepgraph as sg
from stepgraph.testing import ScriptedCall, ScriptedModel, ScriptedReply

LOG = Path(os.environ.get("AGENT_LOG", "agent.log"))


def log(what: str) -> None:
    with LOG.open("a") as file:
        file.write(what + "\n")


@sg.tool
async def quick(n: int) -> str:
    log(f"quick {n}")
    return f"quick {n} done"


@sg.tool
def slow(n: int) -> str:
    log(f"slow {n} started")
    if os.environ.get("AGENT_HANG") == "1":
        time.sleep(60)  # killed meanwhile
    log(f"slow {n} finished")
    return f"slow {n} done"


def reply(call: ScriptedCall) -> ScriptedReply:
    done = {m.tool_call_id: m.content for m in call.messages if m.role == "tool"}
    if not done:
        return ScriptedReply(
            tool_calls=[
                sg.ToolCall("q1", "quick", json.dumps({"n": 1})),
                sg.ToolCall("q2", "quick", json.dumps({"n": 2})),
                sg.ToolCall("s1", "slow", json.dumps({"n": 1})),
            ]
        )
    return ScriptedReply(" / ".join(f"{k.split('-')[0]}: {v}" for k, v in sorted(done.items())))


class LoggedModel:
    name = "logged"

    def stream(
        self,
        messages: Sequence[sg.ChatMessage],
        *,
        tools: Sequence[Mapping[str, Any]] = (),
        response_format: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[sg.ModelEvent]:
        log("model")
        return ScriptedModel([reply]).stream(messages, tools=tools)


def build(store: sg.CheckpointStore | None = None) -> sg.Workflow:
    agent = sg.Agent("worker", model=LoggedModel(), tools=[quick, slow], max_parallel_tools=1)
    return sg.WorkflowBuilder(start=agent, checkpoints=store).build()


if __name__ == "__main__":
    import asyncio

    store = sg.SqliteCheckpointStore(sys.argv[1])
    if sys.argv[2] == "start":
        result = asyncio.run(build(store).run("go"))
    else:
        latest = asyncio.run(store.runs())[0].last_checkpoint
        result = asyncio.run(build(store).run(checkpoint=latest))
    print(json.dumps([r.text for r in result.outputs]))
