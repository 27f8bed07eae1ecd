"""W9: an agent turn against a fake OpenAI server on loopback (no delays),
beside a bare SDK streaming call that returns the same chunks; and 100
concurrent agent runs in one process (time, peak RSS).

Both sides pay the same HTTP round trip to the same in-process server, so
the ratio is what the agent adds to a model call: its executor, the
workflow around it, the stream adapter, the deltas and the usage."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import stepgraph as sg
from stepgraph.testing import FakeReply

CHUNKS = [f"word{i} " for i in range(40)]


def _reply(body: dict[str, Any]) -> FakeReply:
    return FakeReply.text(CHUNKS)


_SERVE = """
import sys, time
from benchmarks.agents import _reply
from stepgraph.testing import FakeOpenAIServer
server = FakeOpenAIServer(responder=_reply).start()
print(server.base_url, flush=True)
sys.stdin.readline()  # until the benchmark is done
server.close()
"""


@contextlib.contextmanager
def _server() -> Iterator[str]:
    """The fake server in a process of its own (in this one, its threads
    would take turns with the client for the GIL): its base URL."""
    child = subprocess.Popen(
        [sys.executable, "-c", _SERVE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        yield child.stdout.readline().strip()
        child.stdin.write("\n")
        child.stdin.flush()
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()


def turn_vs_sdk(repeats: int) -> dict[str, float]:
    """Best seconds, measured round-robin, of: an agent run of one model
    turn (``run``: nobody listens), a bare SDK streaming call; the agent run
    streamed to a listener (``stream``), and the bare call forwarding each
    chunk to a listener task (the like-for-like floor of streaming)."""
    import openai

    async def measure(base_url: str) -> dict[str, float]:
        client = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0)
        model = sg.OpenAIChatModel("fake", client=client)
        workflow = sg.WorkflowBuilder(start=sg.Agent("agent", model=model)).build()

        async def sdk_chunks() -> AsyncIterator[str]:
            stream = await client.chat.completions.create(
                model="fake",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content

        async def bare() -> str:
            return "".join([text async for text in sdk_chunks()])

        async def bare_listened() -> str:
            queue: asyncio.Queue[str | None] = asyncio.Queue()

            async def produce() -> None:
                async for text in sdk_chunks():
                    queue.put_nowait(text)
                queue.put_nowait(None)

            producer = asyncio.create_task(produce())
            heard = []
            while (text := await queue.get()) is not None:
                heard.append(text)
            await producer
            return "".join(heard)

        async def agent() -> str:
            return str((await workflow.run("hi")).outputs[0].text)

        async def agent_listened() -> str:
            heard = []
            async for event in workflow.stream("hi"):
                if isinstance(event, sg.AgentDelta):
                    heard.append(event.text)
            return "".join(heard)

        calls = {
            "agent": agent,
            "bare": bare,
            "agent streamed": agent_listened,
            "bare streamed": bare_listened,
        }
        expected = "".join(CHUNKS)
        for call in calls.values():
            assert await call() == expected
        best = dict.fromkeys(calls, float("inf"))
        for _ in range(repeats):
            for name, call in calls.items():
                started = time.perf_counter()
                await call()
                best[name] = min(best[name], time.perf_counter() - started)
        await client.close()
        return best

    with _server() as base_url:
        return asyncio.run(measure(base_url))


_CONCURRENT = """
import asyncio, json, sys, time
import stepgraph as sg
from benchmarks.agents import CHUNKS

runs, base_url = int(sys.argv[1]), sys.argv[2]

async def main():
    model = sg.OpenAIChatModel("fake", base_url=base_url)
    workflow = (
        sg.WorkflowBuilder(start="agent")
        .register("agent", lambda: sg.Agent("agent", model=model))
        .build()
    )
    started = time.perf_counter()
    results = await asyncio.gather(*(workflow.run(f"run {i}") for i in range(runs)))
    elapsed = time.perf_counter() - started
    assert all(r.outputs[0].text == "".join(CHUNKS) for r in results)
    assert all(r.usage.total.total_tokens == 15 for r in results)
    await model.aclose()
    return elapsed

elapsed = asyncio.run(main())
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps([elapsed, int(hwm.split()[1]) / 1024]))
"""


def concurrent_runs(runs: int) -> tuple[float, float]:
    """``runs`` concurrent agent runs in a fresh process: (seconds, peak RSS
    MiB of the whole process, the fake server's threads included)."""
    with _server() as base_url:
        out = subprocess.run(
            [sys.executable, "-c", _CONCURRENT, str(runs), base_url],
            capture_output=True,
            text=True,
            check=True,
        )
    seconds, mib = json.loads(out.stdout)
    return float(seconds), float(mib)
