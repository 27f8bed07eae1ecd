"""Shared helpers for the tests."""

from __future__ import annotations

import signal
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

import stepgraph as sg
from tests.pg import pg_dsn, postgres_dsn  # noqa: F401  (fixtures)

# The tests that press Ctrl-C in a child process need SIGINT to reach it: a
# test run started as a background job of a script (``.ci/run &``) ignores
# SIGINT, and its children would inherit that.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def kinds(events: Iterable[sg.Event]) -> list[str]:
    return [e.kind for e in events]


def warnings(events: Iterable[sg.Event]) -> list[str]:
    return [e.message for e in events if isinstance(e, sg.WarningEvent)]


def invocations(events: Iterable[sg.Event], executor_id: str) -> list[sg.Event]:
    """The ``executor_invoked`` events of one executor."""
    return [e for e in events if e.kind == "executor_invoked" and e.executor_id == executor_id]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sg.CheckpointStore]:
    """Every store test runs on each store: memory, SQLite, and PostgreSQL (a
    throwaway cluster, a new database per test: tests/pg.py)."""
    if request.param == "memory":
        yield sg.MemoryCheckpointStore()
    elif request.param == "sqlite":
        sqlite = sg.SqliteCheckpointStore(tmp_path / "checkpoints.sqlite")
        yield sqlite
        sqlite.close()
    else:
        postgres = sg.PostgresCheckpointStore(request.getfixturevalue("pg_dsn"))
        yield postgres
        postgres.close()


ROOT = Path(__file__).resolve().parent.parent


def run_script(script: str, *args: str) -> Any:
    """Run ``python -c script args...`` from the project root in a new
    process; its stdout is one JSON document."""
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
