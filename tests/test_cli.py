"""The console script runs the demo end to end."""

from __future__ import annotations

import shutil
import subprocess
import sys

import stepgraph as sg
from stepgraph import demo


def test_demo_command_prints_events_and_output() -> None:
    exe = shutil.which("stepgraph")
    command = [exe, "demo"] if exe else [sys.executable, "-m", "stepgraph._cli", "demo"]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.splitlines()[0].startswith("run_started")
    assert "superstep_started    step=2" in out
    assert out.strip().splitlines()[-1] == (
        "output: Stepgraph runs in supersteps. Every executor has one inbox. "
        "(2 review notes applied)"
    )


async def test_demo_workflow_is_importable_and_keeps_executor_state() -> None:
    workflow = demo.build()
    first = await workflow.run("a topic")
    second = await workflow.run("another")
    assert first.status is sg.RunStatus.IDLE and len(second.outputs) == 1
    reviewer = workflow.executors["punctuation"]
    assert isinstance(reviewer, demo.Reviewer) and reviewer.reviews == 2
