"""Checkpoint and resume after a crash.

A child process runs a five-step pipeline with SQLite checkpoints and is
killed (SIGKILL) in the middle of step 3. This process then resumes the run
from its latest checkpoint and finishes it.

    python examples/crash_resume.py
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import stepgraph as sg


@sg.executor(id="step")
async def step(n: int, ctx: sg.WorkflowContext[int, str]) -> None:
    if n == 3 and os.environ.get("CRASH_AT_STEP_3"):
        os.kill(os.getpid(), signal.SIGKILL)  # the process dies mid-superstep
    ctx.state.set("done", [*ctx.state.get("done", []), n])
    if n < 5:
        await ctx.send_message(n + 1)
    else:
        await ctx.yield_output(f"finished steps {ctx.state.get('done')}")


def build(store: sg.CheckpointStore) -> sg.Workflow:
    return (
        sg.WorkflowBuilder(start=step, name="pipeline", checkpoints=store)
        .add_edge(step, step)
        .build()
    )


async def run_from_scratch(path: str) -> None:
    with sg.SqliteCheckpointStore(path) as store:
        await build(store).run(1)


async def resume(path: str) -> None:
    with sg.SqliteCheckpointStore(path) as store:
        [run] = await store.runs()
        print(f"crashed run stopped after superstep {run.superstep}; resuming")
        result = await build(store).run(checkpoint=run.last_checkpoint)
    print(result.outputs[0])


def main() -> None:
    if sys.argv[1:2] == ["child"]:
        asyncio.run(run_from_scratch(sys.argv[2]))
        return
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "pipeline.sqlite")
        child = subprocess.run(
            [sys.executable, __file__, "child", path], env={**os.environ, "CRASH_AT_STEP_3": "1"}
        )
        print(f"child process exited with signal {-child.returncode}")
        asyncio.run(resume(path))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("stopped.", file=sys.stderr)
        sys.exit(130)
