"""``stepgraph serve`` as a user starts it: a process, Ctrl-C / SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def start(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    """``stepgraph serve ARGS --port 0`` (with ``env`` added to the
    environment) and the address it printed."""
    # (the tests' own PYTHONPATH kept after the root: the stepgraph under test)
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [sys.executable, "-m", "stepgraph", "serve", *args, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": path, **(env or {})},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    found = re.search(r"(http://\S+)", line)
    assert found, (line, process.stderr.read() if process.poll() is not None else "")
    return process, found.group(1)


@contextmanager
def served(
    *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``start`` for the block: a server the block did not stop is killed."""
    process, url = start(*args, env=env)
    try:
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def stop(process: subprocess.Popen[str], how: int = signal.SIGTERM) -> tuple[int, str, str]:
    process.send_signal(how)
    out, err = process.communicate(timeout=30)
    return process.returncode, out, err


def test_sigterm_stops_runs_at_a_checkpoint_and_a_restart_resumes_them(tmp_path):
    store = f"sqlite:{tmp_path / 'runs.sqlite'}"
    with (
        served("tests.serve.flows:slow", "--store", store) as (process, url),
        httpx.Client(base_url=url, timeout=20) as client,
    ):
        body = {"input": {"steps": 60, "label": "z"}}
        run_id = client.post("/api/workflows/slow/runs", json=body).json()["run_id"]
        time.sleep(0.6)
        # A browser following the run does not hold the server up, and
        # hears that the run was stopped before its stream ends.
        with client.stream("GET", f"/api/runs/{run_id}/events") as events:
            lines = events.iter_lines()
            next(lines)
            process.send_signal(signal.SIGTERM)
            heard = list(lines)
        code, out, err = stop(process)
    assert code == 0, err
    assert f"stopped 1 run(s) at their last checkpoint: {run_id}" in out
    assert "Traceback" not in err
    data = [line.removeprefix("data: ") for line in heard if line.startswith("data: ")]
    assert data[-1] == '{"status": "cancelled"}' and heard[-3] == "event: end", heard[-6:]
    assert '"status": "cancelled"' in data[-2] and '"kind": "status"' in data[-2], data[-2]

    with served("tests.serve.flows:slow", "--store", store) as (process, url):
        with httpx.Client(base_url=url, timeout=20) as client:
            [run] = client.get("/api/runs").json()["runs"]
            assert run["run_id"] == run_id and run["interrupted"] and run["status"] == "cancelled"
            assert client.post(f"/api/runs/{run_id}/resume", json={}).status_code == 202
            deadline = time.monotonic() + 20
            while (run := client.get(f"/api/runs/{run_id}").json())["status"] != "idle":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert run["outputs"] == ["done z"]
        code, out, err = stop(process, signal.SIGINT)
    assert code == 0, err
    assert "stopped" not in out  # nothing was going on


def test_off_loopback_a_token_is_made_and_required(tmp_path):
    process, url = start("stepgraph.demo:build", "--store", f"sqlite:{tmp_path / 's.sqlite'}",
                         "--host", "0.0.0.0")  # fmt: skip
    try:
        token = url.split("#token=")[1]
        assert len(token) >= 24
        # (0.0.0.0 is no address to open: the machine's name is printed)
        assert url.startswith(f"http://{socket.gethostname()}:"), url
        base = url.split("#")[0].replace(socket.gethostname(), "127.0.0.1")
        with httpx.Client(base_url=base, timeout=20) as client:
            assert client.get("/api/workflows").status_code == 401
            ok = client.get("/api/workflows", headers={"Authorization": f"Bearer {token}"})
            assert ok.status_code == 200 and ok.json()[0]["name"] == "review-pipeline"
            assert ok.json()[0]["description"] == (
                "A fresh demo workflow: writer -> [punctuation, capitals] -> editor -> publisher."
            )
    finally:
        code, _, err = stop(process)
    assert code == 0, err


def test_help_names_the_targets_argument():
    # (it read "{targets}...": typer's default for a list argument; its braces
    # mark a required argument)
    shown = subprocess.run(
        [sys.executable, "-m", "stepgraph", "serve", "--help"],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "COLUMNS": "100"},
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "serve [OPTIONS] {TARGET}..." in shown.stdout, shown.stdout
    assert "{targets}" not in shown.stdout, shown.stdout


def test_usage_problems_are_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    taken = socket.create_server(("127.0.0.1", 0))
    port = str(taken.getsockname()[1])
    for args, words in [
        (["stepgraph.demo:build", "--port", port], f"cannot listen on 127.0.0.1:{port}"),
        (
            ["stepgraph.demo:build", "--host", "256.1.1.1"],
            "'256.1.1.1' is not an address or name of this machine",
        ),
        (["nope:build"], "no module named 'nope'"),
        (["stepgraph.demo:build", "--token", "short"], "at least 16 characters"),
        (["stepgraph.demo:build", "--token", "ü" * 16], "printable ASCII"),
        (["stepgraph.demo:build", "--token", " " + "x" * 16], "begin or end with a space"),
        (["stepgraph.demo:build", "stepgraph.demo:build"], "named 'review-pipeline'"),
        (["stepgraph.demo:build", "--store", "bogus"], "names no kind"),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "stepgraph", "serve", *args, "--store", f"sqlite:{tmp_path}/x.sqlite"]
            if "--store" not in args
            else [sys.executable, "-m", "stepgraph", "serve", *args],
            capture_output=True, text=True, cwd=ROOT, env=env, timeout=60,
        )  # fmt: skip
        assert done.returncode == 1, (args, done.stderr)
        assert words in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    taken.close()


def test_a_workflow_no_url_can_name_is_refused_at_start_naming_it(tmp_path):
    # (it was listed, and no route could start it: 'team/etl' split its URL)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for target, name in [
        ("tests.serve.flows:slashed", "'team/etl'"),
        ("tests.serve.flows:dots", "'..'"),
        ("tests.serve.flows:dot", "'.'"),
        ("tests.serve.flows:unnamed", "''"),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "stepgraph", "serve", "stepgraph.demo:build", target,
             "--store", f"sqlite:{tmp_path}/x.sqlite", "--port", "0"],
            capture_output=True, text=True, cwd=ROOT, env=env, timeout=60,
        )  # fmt: skip
        assert done.returncode == 1, (target, done.stdout, done.stderr)
        [line] = done.stderr.strip().splitlines()
        assert line.startswith(f"error: {target}: ") and name in line, line
        assert "another name" in line
