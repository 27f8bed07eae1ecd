"""The console script runs the demo end to end."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import stepgraph as sg
from stepgraph import demo


def test_demo_command_prints_events_output_and_checkpoints(tmp_path: Path) -> None:
    exe = shutil.which("stepgraph")
    command = [exe, "demo"] if exe else [sys.executable, "-m", "stepgraph._cli", "demo"]
    path = tmp_path / "demo.sqlite"
    out = subprocess.run(
        [*command, "--store", str(path)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    lines = out.strip().splitlines()
    assert lines[0].startswith("run_started")
    assert "superstep_started    step=2" in out
    assert lines[-2] == (
        "output: Stepgraph runs in supersteps. Every executor has one inbox. "
        "(2 review notes applied)"
    )
    assert lines[-1].startswith(f"checkpoints: 4 saved to {path} (run ")

    async def count() -> int:
        with sg.SqliteCheckpointStore(path) as store:
            return len(await store.list())

    assert asyncio.run(count()) == 4


async def test_demo_workflow_is_importable_and_keeps_executor_state() -> None:
    workflow = demo.build()
    first = await workflow.run("a topic")
    second = await workflow.run("another")
    assert first.status is sg.RunStatus.IDLE and len(second.outputs) == 1
    reviewer = workflow.executors["punctuation"]
    assert isinstance(reviewer, demo.Reviewer) and reviewer.reviews == 2
