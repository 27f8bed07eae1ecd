"""Two processes racing to answer one request, on a store that processes
share (SQLite, Postgres): each round, both are told the same checkpoint and
request at once; each says whether it ``won`` (went on), found the request
``answered``, or found the run ``busy`` (the other one holds it)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import stepgraph as sg
from tests.conftest import ROOT
from tests.test_requests import build

__all__ = ["open_requests", "race"]

RACER = """
import asyncio, sys
import stepgraph as sg
from tests.test_requests import build

kind, where = sys.argv[1], sys.argv[2]
store = sg.SqliteCheckpointStore(where) if kind == "sqlite" else sg.PostgresCheckpointStore(where)
async def answer(checkpoint, request_id):
    try:
        await build(store).run(responses={request_id: True}, checkpoint=checkpoint)
        return "won"
    except sg.RequestError:
        return "answered"
    except sg.CheckpointError:
        return "busy"
print("ready", flush=True)
for line in sys.stdin:
    checkpoint, request_id = line.split()
    print(asyncio.run(answer(checkpoint, request_id)), flush=True)
"""


async def open_requests(
    store: Callable[[], sg.CheckpointStore], rounds: int
) -> list[tuple[str, str]]:
    """``rounds`` runs each waiting for one answer: (checkpoint, request id)."""
    opened = store()
    try:
        made = []
        for i in range(rounds):
            result = await build(opened).run([f"q{i}"])
            made.append((result.last_checkpoint or "", result.pending_requests[0].request_id))
        return made
    finally:
        close = getattr(opened, "close", None)
        if close is not None:
            close()


def race(kind: str, where: str, runs: list[tuple[str, str]]) -> list[list[str]]:
    """Each round's two answers, sorted; ``kind`` is sqlite or postgres."""
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, kind, where],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for _ in range(2)
    ]
    tallies = []
    try:
        for racer in racers:
            assert racer.stdout is not None and racer.stdout.readline().strip() == "ready"
        for checkpoint, request_id in runs:
            for racer in racers:  # both at once
                assert racer.stdin is not None
                racer.stdin.write(f"{checkpoint} {request_id}\n")
                racer.stdin.flush()
            tallies.append(sorted(r.stdout.readline().strip() for r in racers))  # type: ignore[union-attr]
    finally:
        for racer in racers:
            racer.kill()
            racer.communicate()  # (closes its pipes)
    return tallies
