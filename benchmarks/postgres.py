"""W10: checkpoints on PostgreSQL — W5's 50-superstep chain on a local
server (a throwaway cluster with production settings: fsync and synchronous
commits on), `async` and `sync` durability, beside W1 without checkpoints;
the floor of `async` (W1, then one durable one-row commit through a store
thread, as the run's last save waits for); and the throughput of 4
processes running small checkpointed runs on one database at once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import stepgraph as sg

from . import workloads as w

ROOT = Path(__file__).resolve().parent.parent

_WRITER = """
import asyncio, json, sys, time
import stepgraph as sg
from benchmarks import workloads as w

async def main():
    store = sg.PostgresCheckpointStore(sys.argv[1])
    flow = w.chain(3, sg.CheckpointConfig(store, "async"))
    await flow.run(0)
    print("ready", flush=True)
    sys.stdin.readline()
    started, runs = time.perf_counter(), int(sys.argv[2])
    for _ in range(runs):
        await flow.run(0)
    print(json.dumps(time.perf_counter() - started), flush=True)
    store.close()

asyncio.run(main())
"""


class _Floor:
    """W1, then one durable single-row commit on a pooled connection through
    a store thread: what any ``async`` run of W1 waits for at its end, before
    encoding or storing a single checkpoint."""

    def __init__(self, dsn: str) -> None:
        import psycopg

        from stepgraph._checkpoint._worker import Worker

        self.flow = w.chain(50)
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute("CREATE TABLE floor (n bigint)")
        self.worker = Worker("floor", owner=self)

    async def run(self, n: int) -> None:
        await self.flow.run(n)
        await self.worker.run(self.conn.execute, "INSERT INTO floor (n) VALUES (1)")

    def close(self) -> None:
        self.worker.stop()
        self.conn.close()


def rows(repeats: int, runs_per_process: int) -> list[tuple[str, str, float, float | None]]:
    """(name, unit, value, beside) rows; needs PostgreSQL's server programs."""
    sys.path.insert(0, str(ROOT))
    from tests.pg import Cluster, find_binaries

    binaries = find_binaries()
    if binaries is None:
        raise RuntimeError("W10 needs PostgreSQL's server programs (Debian: postgresql)")
    cluster = Cluster(binaries, durable=True)
    cluster.start()
    try:
        out: list[tuple[str, str, float, float | None]] = []
        stores = [sg.PostgresCheckpointStore(cluster.create_database()) for _ in range(2)]
        flows = {
            "bare": w.chain(50),
            "async": w.chain(50, sg.CheckpointConfig(stores[0], "async")),
            "sync": w.chain(50, sg.CheckpointConfig(stores[1], "sync")),
        }
        floor = _Floor(cluster.create_database())

        async def measure() -> dict[str, float]:
            runs: dict[str, Callable[[int], Awaitable[Any]]] = {
                **{name: flow.run for name, flow in flows.items()},
                "floor": floor.run,
            }
            best = dict.fromkeys(runs, float("inf"))
            for run in runs.values():
                await run(0)
            for _ in range(repeats):
                for name, run in runs.items():
                    started = time.perf_counter()
                    await run(0)
                    best[name] = min(best[name], time.perf_counter() - started)
            return best

        best = asyncio.run(measure())
        base = best["bare"] / 50 * 1e6
        for name in ("async", "sync"):
            out.append((f"W10 W1 + Postgres {name}", "µs/superstep", best[name] / 50 * 1e6, base))
        out.append(("W10 async floor W1+commit", "µs/superstep", best["floor"] / 50 * 1e6, base))
        floor.close()
        for store in stores:
            store.close()
        dsn = cluster.create_database()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        writers = [
            subprocess.Popen(
                [sys.executable, "-c", _WRITER, dsn, str(runs_per_process)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
                env=env,
            )
            for _ in range(4)
        ]
        for writer in writers:
            assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        started = time.perf_counter()
        for writer in writers:
            assert writer.stdin is not None
            writer.stdin.write("go\n")
            writer.stdin.flush()
        for writer in writers:
            writer.communicate(timeout=600)
        elapsed = time.perf_counter() - started
        out.append(("W10 4 processes, Postgres", "runs/s", 4 * runs_per_process / elapsed, None))
        return out
    finally:
        cluster.stop()
