"""The Ray backend against the local one on random graphs (those of
``property/test_random_graphs``: chains, fan-outs, fan-ins, switches,
conditional edges, maps, cycles; nodes with shared state and snapshots): the
same outputs and the same events in the same order per executor, and a run
checkpointed on one backend goes on from any of its checkpoints on the other
as it would have gone on where it started; the executors' attributes carry
over to the workflow's next run on Ray as they do locally. Few examples:
each Ray run costs actor calls, not microseconds."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stepgraph as sg
from tests.property.test_event_loops import per_executor
from tests.property.test_random_graphs import Spec, graphs, reference
from tests.property.test_resume_anywhere import build
from tests.test_ray_warm import ray_cluster  # noqa: F401  (the module's local cluster)


@pytest.fixture(scope="module")
def backend(ray_cluster: None) -> Iterator[sg.RayBackend]:  # noqa: F811
    with sg.RayBackend() as backend:
        yield backend


def after(events: list[sg.Event], superstep: int) -> dict[Any, list[tuple[Any, ...]]]:
    """The events of the supersteps after ``superstep``, per executor."""
    return per_executor([e for e in events if e.superstep is not None and e.superstep > superstep])


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(graphs(), st.integers(0, 10**6), st.booleans())
def test_ray_runs_and_resumes_random_graphs_as_the_local_backend(
    backend: sg.RayBackend, spec: Spec, pick: int, ray_first: bool
) -> None:
    reference(spec)  # (rejects graphs whose cycles run too long)

    async def check() -> None:
        locally = build(spec, sg.MemoryCheckpointStore(), "sync")
        local = await locally.run(spec.start_value)
        store = sg.MemoryCheckpointStore()
        first, then = (backend, None) if ray_first else (None, backend)
        workflow = build(spec, store, "async")
        whole = await workflow.run(spec.start_value, backend=first)
        assert whole.status is local.status
        assert whole.outputs == local.outputs  # (in one order on either backend)
        # The same events, in the same order per executor (and the run's own).
        assert per_executor(whole.events) == per_executor(local.events)
        checkpoints = await store.list(whole.run_id)
        chosen = checkpoints[pick % len(checkpoints)]
        before = await store.outputs(chosen.id)
        rest = await build(spec, store, "async").run(
            checkpoint=chosen.id, checkpoints=store, backend=then
        )
        assert before + rest.outputs == whole.outputs, chosen.superstep
        # ... and going on from a checkpoint on the other backend, the events
        # of the supersteps after it.
        assert after(rest.events, chosen.superstep) == after(whole.events, chosen.superstep)
        # The executors' attributes (their counts) carry over to the
        # workflow's next run on either backend.
        again = await workflow.run(spec.start_value, backend=first)
        assert again.outputs == (await locally.run(spec.start_value)).outputs

    asyncio.run(check())
