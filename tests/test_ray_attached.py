"""A ``RayBackend`` in a process where Ray is already initialized (the
application called ``ray.init``, or another backend did) runs on that
cluster — and says so rather than silently dropping what it was given: an
address of another cluster is refused, ``runtime_env`` still reaches every
actor, and ``init_options`` it cannot apply are named in a warning."""

from __future__ import annotations

import os
from typing import Any

import pytest

import stepgraph as sg
from tests.test_ray_warm import ray_cluster  # noqa: F401  (fixture: ray.init by the "application")


@sg.executor(id="env")
async def env(name: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
    await ctx.yield_output(os.environ.get(name, "unset"))


def gcs_address() -> str:
    import ray

    return str(ray.get_runtime_context().gcs_address)


def other_address() -> str:
    host, _, port = gcs_address().rpartition(":")
    return f"{host}:{int(port) + 1}"


@pytest.mark.parametrize("address", [other_address, lambda: "ray://127.0.0.1:10001"])
async def test_an_address_of_another_cluster_is_refused(
    ray_cluster: None,  # noqa: F811
    address: Any,
) -> None:
    asked = address()
    flow = sg.WorkflowBuilder(start=env).build()
    with sg.RayBackend(address=asked) as backend, pytest.raises(ConnectionError) as caught:
        await flow.run("HOME", backend=backend)
    said = str(caught.value)
    assert "already initialized" in said and repr(asked) in said and gcs_address() in said, said


async def test_the_address_of_the_cluster_it_is_connected_to_is_taken(
    ray_cluster: None,  # noqa: F811
) -> None:
    flow = sg.WorkflowBuilder(start=env).build()
    with sg.RayBackend(address=gcs_address().replace("127.0.0.1", "localhost")) as backend:
        result = await flow.run("STEPGRAPH_NOT_SET", backend=backend)
    assert result.outputs == ["unset"]


async def test_runtime_env_reaches_the_actors(ray_cluster: None) -> None:  # noqa: F811
    flow = sg.WorkflowBuilder(start=env).build()
    with sg.RayBackend(runtime_env={"env_vars": {"STEPGRAPH_MARK": "from the backend"}}) as b:
        result = await flow.run("STEPGRAPH_MARK", backend=b)
    assert result.outputs == ["from the backend"]


async def test_a_placements_runtime_env_goes_on_top_of_the_backends(
    ray_cluster: None,  # noqa: F811
) -> None:
    @sg.executor(
        id="both",
        placement=sg.Placement(runtime_env={"env_vars": {"STEPGRAPH_OWN": "own"}}),
    )
    async def both(n: int, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.yield_output(
            os.environ.get("STEPGRAPH_MARK", "unset") + "+" + os.environ.get("STEPGRAPH_OWN", "")
        )

    flow = sg.WorkflowBuilder(start=both).build()
    with sg.RayBackend(runtime_env={"env_vars": {"STEPGRAPH_MARK": "mark"}}) as backend:
        result = await flow.run(1, backend=backend)
    assert result.outputs == ["mark+own"]


async def test_init_options_it_cannot_apply_are_named_in_a_warning(
    ray_cluster: None,  # noqa: F811
) -> None:
    flow = sg.WorkflowBuilder(start=env).build()
    with sg.RayBackend(init_options={"num_cpus": 8, "namespace": "x"}) as backend:
        first = await flow.run("HOME", backend=backend)
        second = await flow.run("HOME", backend=backend)
    [warned] = [e for e in first.events if e.kind == "warning"]
    assert "namespace, num_cpus not used" in warned.message
    assert "already initialized" in warned.message
    assert not [e for e in second.events if e.kind == "warning"]  # (said once)
