"""SIGKILL while a tool runs: the resumed run repeats neither the model
turn nor the tools that had finished (each saved its progress)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT

SCRIPT = str(Path(__file__).with_name("crashing.py"))


def test_a_killed_agent_resumes_without_repeating_finished_work(tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AGENT_LOG": str(log)}
    store = str(tmp_path / "crash.sqlite")
    child = subprocess.Popen(
        [sys.executable, SCRIPT, store, "start"], env={**env, "AGENT_HANG": "1"}, cwd=ROOT
    )
    deadline = time.monotonic() + 60
    while "slow 1 started" not in (log.read_text() if log.exists() else ""):
        assert child.poll() is None and time.monotonic() < deadline, "the tool never started"
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    assert log.read_text().splitlines() == ["model", "quick 1", "quick 2", "slow 1 started"]
    done = subprocess.run(
        [sys.executable, SCRIPT, store, "resume"],
        env={**env, "AGENT_HANG": "0"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["q1: quick 1 done / q2: quick 2 done / s1: slow 1 done"]
    assert log.read_text().splitlines() == [
        "model",
        "quick 1",
        "quick 2",
        "slow 1 started",  # killed here
        "slow 1 started",  # it had not finished: it runs again, alone
        "slow 1 finished",
        "model",
    ]
