"""The Ray backend on a real two-node cluster on this machine, and faults.

A head node and a second node with a custom resource run on loopback
(``ray.cluster_utils.Cluster``); executors pinned to each node must run there,
and outputs must equal the local backend's. A worker killed mid-superstep
fails the run with an error naming the executor and node; the run resumes
from its last checkpoint, and with a ``RetryPolicy`` the lost batch re-runs on
a fresh actor.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import stepgraph as sg
from tests import resumable
from tests.test_conformance import WORKER_PYTHONPATH

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    nodes = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "resources": {"head": 1}, "include_dashboard": False},
    )
    nodes.add_node(num_cpus=1, resources={"edge": 1})
    nodes.wait_for_nodes()
    ray.init(
        address=nodes.address,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": WORKER_PYTHONPATH}},
    )
    yield nodes
    ray.shutdown()
    nodes.shutdown()


class Where(sg.Executor):
    """Yields which node it ran on."""

    @sg.handler
    async def on(self, n: int, ctx: sg.WorkflowContext[int, Any]) -> None:
        import ray

        await ctx.yield_output((self.id, n, ray.get_runtime_context().get_node_id()))
        await ctx.send_message(n + 1)


@sg.executor(id="end")
async def end(n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
    await ctx.yield_output(n)


def pinned() -> sg.Workflow:
    first = Where("first", placement=sg.Placement(resources={"head": 0.01}))
    second = Where("second", placement=sg.Placement(resources={"edge": 0.01}))
    return sg.WorkflowBuilder(start=first).add_chain([first, second, end]).build()


async def test_executors_run_on_the_nodes_they_are_pinned_to(cluster: Any) -> None:
    backend = sg.RayBackend(placement={"end": sg.Placement(resources={"edge": 0.01})})
    result = await pinned().run(1, backend=backend)
    nodes = {eid: nid for eid, _, nid in result.outputs[:2]}
    assert nodes["first"] != nodes["second"]
    assert backend.last_run_nodes["first"] == nodes["first"]
    assert backend.last_run_nodes["end"] == nodes["second"]
    assert len(set(backend.last_run_nodes.values())) == 2
    local = await pinned().run(1)
    assert [o[:2] for o in result.outputs[:2]] == [o[:2] for o in local.outputs[:2]]
    assert result.outputs[2] == local.outputs[2] == 3


async def test_resumable_workflow_matches_local_on_the_cluster(cluster: Any) -> None:
    remote = await resumable.build().run(1, backend=sg.RayBackend())
    local = await resumable.build().run(1)
    assert remote.outputs == local.outputs


class Sleeper(sg.Executor):
    """Writes its process id to a file, then sleeps: the test kills it."""

    def __init__(self, id: str, marker: str, retry: sg.RetryPolicy | None = None) -> None:
        super().__init__(id, retry=retry)
        self.marker = marker

    @sg.handler
    async def on(self, n: int, ctx: sg.WorkflowContext[int, int]) -> None:
        if n == 2 and not Path(self.marker).exists():
            Path(self.marker).write_text(str(os.getpid()))
            await asyncio.sleep(60)
        await ctx.yield_output(n)
        if n < 4:
            await ctx.send_message(n + 1)


def sleeper_flow(
    marker: str, store: sg.CheckpointStore, retry: sg.RetryPolicy | None = None
) -> sg.Workflow:
    node = Sleeper("sleeper", marker, retry)
    return sg.WorkflowBuilder(start=node, checkpoints=store).add_edge(node, node).build()


async def kill_when_marked(marker: Path) -> None:
    for _ in range(600):
        if marker.exists() and marker.read_text():
            os.kill(int(marker.read_text()), signal.SIGKILL)
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the handler never started")


async def test_killed_worker_fails_clearly_then_resumes(cluster: Any, tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    store = sg.SqliteCheckpointStore(tmp_path / "kill.sqlite")
    killer = asyncio.create_task(kill_when_marked(marker))
    with pytest.raises(sg.WorkflowRunError) as raised:
        await sleeper_flow(str(marker), store).run(1, backend=sg.RayBackend())
    await killer
    message = str(raised.value)
    assert "'sleeper'" in message and "on node" in message and "died" in message
    [run] = await store.runs()
    resumed = await sleeper_flow(str(marker), store).run(
        checkpoint=run.last_checkpoint, backend=sg.RayBackend()
    )
    assert resumed.outputs == [2, 3, 4]  # superstep 2 re-ran; 1 was before the checkpoint
    store.close()


async def test_retry_policy_reruns_the_lost_batch_on_a_fresh_actor(
    cluster: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "pid"
    store = sg.SqliteCheckpointStore(tmp_path / "retry.sqlite")
    killer = asyncio.create_task(kill_when_marked(marker))
    flow = sleeper_flow(str(marker), store, sg.RetryPolicy(attempts=2))
    result = await flow.run(1, backend=sg.RayBackend())
    await killer
    assert result.outputs == [1, 2, 3, 4]
    # The lost attempt is announced, as every retry is.
    [warning] = [e for e in result.events if e.kind == "warning"]
    assert "attempt 1/2 lost its Ray actor" in warning.message and "retrying" in warning.message
    store.close()


def test_missing_ray_gives_an_install_hint(tmp_path: Path) -> None:
    blocker = tmp_path / "ray.py"
    blocker.write_text("raise ImportError('ray is not installed here')\n")
    code = "import stepgraph as sg\ntry:\n    sg.RayBackend()\nexcept ImportError as e:\n    print(e)\n"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": f"{tmp_path}:{ROOT}"},
    )
    assert done.stdout.strip() == "the Ray backend needs Ray: pip install 'stepgraph[ray]'"
