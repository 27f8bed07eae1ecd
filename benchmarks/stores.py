"""W6: checkpoint stores at scale — what a store of many runs costs.

- Memory store: the time a small run takes when the store already holds
  many runs, as a ratio to the same run on a store of 100 (flat is right).
- SQLite with many runs: listing a page of runs, listing one run's
  checkpoints, deleting one run; and the longest a writer in another process
  waits for its save while a big run is deleted and the store is pruned.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import stepgraph as sg

from .workloads import Forward

_WRITER = """
import asyncio, json, os, sys, time
import stepgraph as sg
from stepgraph._checkpoint import blob_hash

async def main() -> None:
    store = sg.SqliteCheckpointStore(sys.argv[1], busy_timeout=30)
    worst, saves, n, run = 0.0, 0, 0, os.urandom(8).hex()
    print("ready", flush=True)
    stop = asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    while not stop.done():
        n += 1
        value = b"v%d" % n
        cp = sg.Checkpoint(id=f"{run}-{n}", run_id=run, workflow="w", signature="s",
                           superstep=n, parent_id=None, created_at=time.time(),
                           status="in_progress", body={"n": n}, refs=(blob_hash(value),),
                           blobs={blob_hash(value): value})
        started = time.perf_counter()
        await store.save(cp)
        worst = max(worst, time.perf_counter() - started)
        saves += 1
        await asyncio.sleep(0.001)
    store.close()
    print(json.dumps([worst, saves]), flush=True)

asyncio.run(main())
"""


def _small_run(store: sg.CheckpointStore, durability: str) -> sg.Workflow:
    nodes = [Forward(f"s{i}", limit=10**9) for i in range(2)] + [Forward("s2", limit=0)]
    config = sg.CheckpointConfig(store, durability)  # type: ignore[arg-type]
    return sg.WorkflowBuilder(start=nodes[0], checkpoints=config).add_chain(nodes).build()


async def _fill(workflow: sg.Workflow, runs: int) -> None:
    for _ in range(runs):
        await workflow.run(0)


def memory_scale(big: int) -> tuple[float, float]:
    """µs per run on a store of 100 runs, and on a store of ``big`` runs (in
    a fresh process, so that the heap of other workloads does not count)."""
    code = f"""
import asyncio, gc, json
from benchmarks import stores
import stepgraph as sg

async def measure():
    store = sg.MemoryCheckpointStore()
    workflow = stores._small_run(store, "sync")
    await stores._fill(workflow, 100)
    gc.collect()
    small = await stores._timed(workflow, 200)
    await stores._fill(workflow, {big} - 300)
    gc.collect()
    return small, await stores._timed(workflow, 200)

print(json.dumps(asyncio.run(measure())))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    small, large = json.loads(done.stdout)
    return float(small), float(large)


async def _timed(workflow: sg.Workflow, runs: int) -> float:
    started = time.perf_counter()
    await _fill(workflow, runs)
    return (time.perf_counter() - started) / runs * 1e6


def sqlite_scale(runs: int, big_run: int) -> dict[str, float]:
    """Milliseconds for listing and deleting on a store of ``runs`` runs, and
    the longest save another process waited for meanwhile."""
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "scale.sqlite"
        store = sg.SqliteCheckpointStore(path)

        async def fill() -> str:
            await _fill(_small_run(store, "async"), runs)
            chain = _small_run(store, "async")
            long = sg.WorkflowBuilder(
                start=Forward("a", limit=big_run), max_supersteps=big_run + 5,
                checkpoints=sg.CheckpointConfig(store, "sync"),
            )  # fmt: skip
            result = await long.add_edge("a", "a").build().run(0)
            await chain.run(0)  # a run newer than the big one
            return result.run_id

        big = asyncio.run(fill())

        async def timed(what: str, work: object) -> None:
            started = time.perf_counter()
            await work  # type: ignore[misc]
            out[what] = (time.perf_counter() - started) * 1e3

        async def reads() -> None:
            await timed("runs page", store.runs(limit=20))
            one = (await store.runs(limit=1))[0].run_id
            await timed("one run's checkpoints", store.list(one))
            await timed("delete a run", store.delete_run(one))

        asyncio.run(reads())
        out["writer alone"] = _writer_worst(path, 2.0, None)

        async def deletes() -> None:
            await timed("delete a big run", store.delete_run(big))
            await timed("prune every run", store.prune(keep_last=1))

        out["writer meanwhile"] = _writer_worst(path, 0.0, deletes)
        store.close()
    return out


def _writer_worst(path: Path, seconds: float, meanwhile: Any) -> float:
    """The longest save (ms) of a writer in another process, for ``seconds``
    or while ``meanwhile()`` runs here."""
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert writer.stdout is not None
    writer.stdout.readline()  # ready
    time.sleep(0.3 + seconds)
    if meanwhile is not None:
        asyncio.run(meanwhile())
    time.sleep(0.3)
    worst, _ = json.loads(writer.communicate("stop\n", timeout=60)[0].splitlines()[-1])
    return float(worst) * 1e3
