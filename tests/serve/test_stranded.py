"""A run whose process was killed (kill -9, a machine gone) is still listed
by the store as going on, but no process holds it: the API says it is
interrupted, a cancel says to resume it instead, and the console offers to
resume it — not a Cancel that can only fail and resume buttons held "while
the run goes on" for ever (the page's test is in test_console.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import stepgraph as sg

from . import flows
from .test_api import wait_for

ROOT = Path(__file__).resolve().parents[2]


def killed_mid_run(path: Path) -> str:
    """A run of ``slow`` by ``stepgraph run`` on the store at ``path``,
    killed (SIGKILL) after its second checkpoint: its id."""
    command = [sys.executable, "-m", "stepgraph", "run", "tests.serve.flows:slow",
               "--input", '{"steps": 80}', "--store", f"sqlite:{path}", "--json"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while not (runs := _runs(path)) or runs[0].checkpoints < 2:
            assert time.monotonic() < deadline, "the run made no checkpoints"
            time.sleep(0.05)
    finally:
        process.kill()
        process.wait()
    [run] = _runs(path)
    assert run.status == "in_progress"  # (what the store still says)
    return run.run_id


def _runs(path: Path) -> list[sg.RunInfo]:
    try:
        # (in a thread of its own: a Playwright test's thread runs a loop)
        with sg.SqliteCheckpointStore(path, create=False) as store, ThreadPoolExecutor(1) as thread:
            return thread.submit(asyncio.run, store.runs()).result()
    except sg.CheckpointError:  # (not created yet)
        return []


def test_a_run_whose_process_was_killed_is_interrupted_and_resumes(serve, tmp_path):
    flows.STEP = 0.01
    path = tmp_path / "killed.sqlite"
    run_id = killed_mid_run(path)
    server = serve(flows.slow, store=sg.SqliteCheckpointStore(path))
    with server.client() as client:
        details = client.get(f"/api/runs/{run_id}").json()
        assert (details["status"], details["live"], details["interrupted"]) == (
            "in_progress",
            False,
            True,
        )
        refused = client.post(f"/api/runs/{run_id}/cancel", json={})
        assert refused.status_code == 409
        message = refused.json()["error"]
        assert "not running anywhere" in message and f"/api/runs/{run_id}/resume" in message
        # A run that is simply not running says so, with its status.
        client.post(f"/api/runs/{run_id}/resume", json={}).raise_for_status()
        done = wait_for(client, run_id, "idle", timeout=60)
        assert done["outputs"] == ["done "] and done["interrupted"] is False
        refused = client.post(f"/api/runs/{run_id}/cancel", json={})
        assert refused.status_code == 409
        assert refused.json()["error"] == (
            f"run {run_id} is not running (status: idle); nothing to cancel"
        )


class _ResumedFromElsewhere(sg.SqliteCheckpointStore):
    """A store that, the moment anything in the server takes ``run_id``'s
    lease, has another process resume that run (a user's 'stepgraph run
    --resume' while the page asks about the run); what it answered is kept."""

    def __init__(self, path: Path, run_id: str) -> None:
        super().__init__(path)
        self.run_id = run_id
        self.armed = False
        self.elsewhere: list[subprocess.CompletedProcess[str]] = []

    async def lease(self, run_id: str, holder: str) -> str | None:
        busy = await super().lease(run_id, holder)
        if self.armed and run_id == self.run_id and busy is None:
            self.armed = False
            self.elsewhere.append(_resume_elsewhere(self.path, run_id))
        return busy


def _resume_elsewhere(path: Path, run_id: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "stepgraph", "run", "tests.serve.flows:slow",
               "--resume", "latest", "--store", f"sqlite:{path}"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_asking_about_an_interrupted_run_never_stands_in_a_resumes_way(serve, tmp_path):
    # GET /api/runs/{id} found out whether a run was interrupted by taking its
    # lease and giving it back: a resume from another process at that moment
    # was refused ("being continued elsewhere" -- by a page asking every few
    # seconds). It reads who holds the run instead.
    flows.STEP = 0.01
    path = tmp_path / "killed.sqlite"
    run_id = killed_mid_run(path)
    store = _ResumedFromElsewhere(path, run_id)
    server = serve(flows.slow, store=store)
    with server.client() as client:
        store.armed = True
        details = client.get(f"/api/runs/{run_id}").json()
        assert details["interrupted"] is True
        if store.armed:  # (the page took nothing: the other process resumes now)
            store.elsewhere.append(_resume_elsewhere(path, run_id))
        [resumed] = store.elsewhere
        assert resumed.returncode == 0, resumed.stderr
        assert "being continued elsewhere" not in resumed.stderr
        assert client.get(f"/api/runs/{run_id}").json()["status"] == "idle"


def test_a_second_answer_to_a_run_killed_after_taking_the_first_says_to_resume_it(serve, tmp_path):
    # (the CLI said so; the API said only "answered already ... fork it", of a
    # run whose process had died with the answer: nothing went on with it)
    path = tmp_path / "answered.sqlite"
    server = serve(flows.slow_gate, store=sg.SqliteCheckpointStore(path))
    with server.client() as client:
        run_id = client.post("/api/workflows/slow_gate/runs", json={"input": "go?"}).json()[
            "run_id"
        ]
        [request] = wait_for(client, run_id, "idle_with_pending_requests")["pending_requests"]
        rid = request["request_id"]
        command = [sys.executable, "-m", "stepgraph", "run", "tests.serve.flows:slow_gate",
                   "--store", f"sqlite:{path}", "--respond", f"{rid}=true"]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:  # killed once the answer is stored, its handler taking its minute
            deadline = time.monotonic() + 60
            while _runs(path)[0].checkpoints < 3:
                assert time.monotonic() < deadline, "the answer was not taken"
                time.sleep(0.05)
        finally:
            process.kill()
            process.wait()
        again = client.post(f"/api/runs/{run_id}/responses", json={"responses": {rid: False}})
        assert again.status_code == 409, again.text
        error = again.json()["error"]
        assert error.startswith(f"request {rid!r} of run {run_id} was answered already (at "), error
        assert (
            "; the run took that answer and stopped since (in_progress): go on "
            f"with it: POST /api/runs/{run_id}/resume with {{}}; to answer it anew"
        ) in error, error
        assert client.get(f"/api/runs/{run_id}").json()["interrupted"] is True
