"""Crash safety: a process running with SqliteCheckpointStore is killed with
SIGKILL during a handler or in the middle of a checkpoint write; a new process
resumes from the latest checkpoint and finishes with the uninterrupted run's
outputs, and the database passes PRAGMA integrity_check."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import stepgraph as sg
from tests import resumable
from tests.test_resume import outputs_after

ROOT = Path(__file__).resolve().parent.parent


def start(path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.resumable", "run", str(path)],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_at(process: subprocess.Popen[str], marker: str, nth: int) -> None:
    seen = 0
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(marker):
            seen += 1
            if seen == nth:
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=30)
                return
    raise AssertionError(
        f"process ended before {marker} #{nth}: {process.stderr.read() if process.stderr else ''}"
    )


@pytest.mark.parametrize(
    ("env", "marker", "nth"),
    [
        ({"STEPGRAPH_TEST_PAUSE": "30"}, "HANDLER", 1),  # inside a handler, first loop step
        ({"STEPGRAPH_TEST_PAUSE": "0.05"}, "HANDLER", 3),  # a later handler
        ({"STEPGRAPH_TEST_HOOK_WRITE": "1"}, "WRITING", 1),  # writing the entry checkpoint
        ({"STEPGRAPH_TEST_HOOK_WRITE": "5"}, "WRITING", 1),  # writing a mid-run checkpoint
    ],
    ids=["handler-first", "handler-later", "write-entry", "write-mid"],
)
def test_kill_and_resume(tmp_path: Path, env: dict[str, str], marker: str, nth: int) -> None:
    path = tmp_path / "crash.sqlite"
    with start(path, env) as process:
        kill_at(process, marker, nth)
    assert sg.SqliteCheckpointStore(path).integrity_check() == "ok"

    async def inspect() -> tuple[int | None, sg.RunResult]:
        store = sg.SqliteCheckpointStore(path)
        runs = await store.runs()
        store.close()
        uninterrupted = await resumable.build().run(1)
        return (runs[0].superstep if runs else None), uninterrupted

    superstep, uninterrupted = asyncio.run(inspect())
    if superstep is None:
        # Killed before the entry checkpoint committed: nothing to resume, start over.
        assert marker == "WRITING"
        rerun = subprocess.run(
            [sys.executable, "-m", "tests.resumable", "run", str(path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert rerun.stdout.strip() == "OUTPUTS " + json.dumps(uninterrupted.outputs)
        return
    resumed = subprocess.run(
        [sys.executable, "-m", "tests.resumable", "resume", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert resumed.returncode == 0, resumed.stderr
    expected = outputs_after(uninterrupted, superstep)
    assert resumed.stdout.strip() == "OUTPUTS " + json.dumps(expected)
    assert expected[-1] == "history [1, 10, 4]"
    assert sg.SqliteCheckpointStore(path).integrity_check() == "ok"


CPU_CHAIN = """
import asyncio, sys, time
import stepgraph as sg

@sg.executor(id="burn")
async def burn(n: int, ctx: sg.WorkflowContext[int]) -> None:
    print("HANDLER", n, flush=True)
    end = time.perf_counter() + 0.02
    while time.perf_counter() < end:  # CPU-bound, never yields to the loop
        pass
    if n < 100:
        await ctx.send_message(n + 1)

store = sg.SqliteCheckpointStore(sys.argv[1])
config = sg.CheckpointConfig(store, durability="async")
workflow = sg.WorkflowBuilder(start=burn, checkpoints=config).add_edge(burn, burn).build()
asyncio.run(workflow.run(1))
"""


def test_async_durability_writes_while_handlers_hold_the_loop(tmp_path: Path) -> None:
    """Handlers that never yield keep the batching timer from firing; the
    barrier writes the overdue queue itself, so a SIGKILL loses at most the
    superstep that was running."""
    path = tmp_path / "cpu.sqlite"
    with subprocess.Popen(
        [sys.executable, "-c", CPU_CHAIN, str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        kill_at(process, "HANDLER 30", 1)

    async def stored() -> list[int]:
        with sg.SqliteCheckpointStore(path) as store:
            return [info.superstep for info in await store.list()]

    # Handler 30 runs in superstep 30: the entry and barriers 1..29 are stored.
    assert asyncio.run(stored()) == list(range(30))
