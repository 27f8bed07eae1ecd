"""The benchmark runner works (a smoke run; timings are not asserted here —
targets are checked by reading the table, never by timed unit tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmark_prints_every_workload() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    for name in ("W1 chain of 50", "W2 fan-out/in 100", "W3 ping-pong", "W4 50 -> 1", "peak RSS"):
        assert name in out, out
    # Every stepgraph figure has a ratio to its floor.
    for line in out.splitlines()[2:]:
        if line.startswith(("W1", "W3", "W4")):
            assert line.split()[-1].endswith(("x", "ok", "MISSED")), line


def test_quick_server_benchmark_prints_its_rows() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--only-serve", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    for name in ("W11 100 SSE on 1 run", "W11 50 runs, 1 SSE each", "W11 idle 2 s"):
        assert name in out, out
    assert "p99 latency" in out and "server RSS MiB" in out


def test_a_missing_dependency_is_said_before_anything_is_measured() -> None:
    """Without the OpenAI SDK (W9), the runner stops at once naming it and
    the extra to install, rather than failing after minutes of measuring."""
    hide = (
        "import sys, runpy; sys.modules['openai'] = None; "  # (imports of it fail)
        "sys.argv = ['benchmarks', '--quick']; runpy.run_module('benchmarks', run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", hide], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and done.stdout == "", (done.stdout, done.stderr)
    assert done.stderr.strip().endswith("needs openai: pip install -e '.[openai]'"), done.stderr
