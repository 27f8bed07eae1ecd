"""The Ray backend's warm actors and live events (a local Ray cluster on
loopback). Timing bounds are generous on purpose: they tell seconds of actor
start-up from a warm call, not milliseconds apart."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import stepgraph as sg
from tests.test_conformance import ROOT, WORKER_PYTHONPATH, alive_actors


async def actors_alive(count: int) -> None:
    """Wait (up to 5 s: kills land asynchronously) until ``count`` actors
    are alive; fail if they never are."""
    for _ in range(50):
        if alive_actors() == count:
            return
        await asyncio.sleep(0.1)
    assert alive_actors() == count


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A local cluster this module starts; the backends here only connect to
    it, so closing one kills its actors and leaves the cluster up."""
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": WORKER_PYTHONPATH}},
    )
    yield
    ray.shutdown()


@pytest.fixture
def backend(ray_cluster: None) -> Iterator[sg.RayBackend]:
    with sg.RayBackend() as backend:
        yield backend
    gc.collect()


@sg.executor(id="fan")
async def fan(n: int, ctx: sg.WorkflowContext[int]) -> None:
    await ctx.send_message(n)


class Nap(sg.Executor):
    def __init__(self, id: str, seconds: float) -> None:
        super().__init__(id)
        self.seconds = seconds

    @sg.handler
    async def on(self, n: int, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await asyncio.sleep(self.seconds)
        await ctx.yield_output(self.id)


def naps(*seconds: float) -> sg.Workflow:
    branches = [Nap(f"b{i}", s) for i, s in enumerate(seconds)]
    return sg.WorkflowBuilder(start=fan).add_fan_out(fan, branches).build()


async def timed_outputs(workflow: sg.Workflow, backend: sg.RayBackend) -> dict[str, float]:
    started = time.perf_counter()
    seen: dict[str, float] = {}
    async for event in workflow.stream(0, backend=backend):
        if event.kind == "output":
            seen[event.data] = time.perf_counter() - started
    seen["whole run"] = time.perf_counter() - started
    return seen


async def test_a_second_run_finds_its_actors_warm(backend: sg.RayBackend) -> None:
    workflow = naps(0.5, 0.5, 0.5, 0)
    first = await timed_outputs(workflow, backend)
    assert backend.started_last_run == 5
    second = await timed_outputs(workflow, backend)
    assert backend.started_last_run == 0
    assert len(backend.pool) == 5
    assert second["whole run"] < 1.2, second
    # The instant branch's output arrives as its call returns, not at the barrier.
    assert second["b3"] < 0.4, second
    assert first.keys() == second.keys()


async def test_ten_way_fan_out_reuses_every_actor(backend: sg.RayBackend) -> None:
    workflow = naps(*[0.0] * 10)
    for _ in range(3):
        result = await workflow.run(1, backend=backend)
        assert sorted(result.outputs) == sorted(f"b{i}" for i in range(10))
    assert backend.started_last_run == 0
    assert len(backend.pool) == 11


async def test_runs_of_different_workflows_never_share_an_actor(backend: sg.RayBackend) -> None:
    one, two = naps(0.2, 0.0), naps(0.2, 0.0)
    first, second = await asyncio.gather(one.run(0, backend=backend), two.run(0, backend=backend))
    assert sorted(first.outputs) == sorted(second.outputs) == ["b0", "b1"]
    assert len(backend.pool) == 6  # three executors each, kept apart
    await one.run(0, backend=backend)
    assert backend.started_last_run == 0


class Waiter(sg.Executor):
    """Says it is waiting, then waits (in its actor) for the file the
    listener creates once it has seen that event."""

    @sg.handler
    async def on(self, path: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.add_event(sg.UserEvent(kind="waiting", data=time.time()))
        while not Path(path).exists():
            await asyncio.sleep(0.01)
        await ctx.yield_output("released")


async def test_events_stream_from_an_actor_while_its_handler_runs(
    backend: sg.RayBackend, tmp_path: Path
) -> None:
    workflow = sg.WorkflowBuilder(start=Waiter("waiter")).build()
    gate = tmp_path / "go"
    kinds: list[str] = []

    async def listen() -> None:
        async for event in workflow.stream(str(gate), backend=backend):
            kinds.append(event.kind)
            if event.kind == "waiting":
                assert time.time() - event.data < 1.0  # (arrived live)
                gate.touch()  # only a live event can release the handler

    await asyncio.wait_for(listen(), timeout=60)
    assert kinds.count("waiting") == 1 and kinds.count("output") == 1
    assert kinds.index("waiting") < kinds.index("output")


class Ticker(sg.Executor):
    @sg.handler
    async def on(self, n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        for i in range(n):
            await ctx.add_event(sg.UserEvent(kind="tick", data=i))
            await asyncio.sleep(0.01)
        await ctx.yield_output(n)


async def test_live_events_arrive_once_and_in_order(backend: sg.RayBackend) -> None:
    workflow = sg.WorkflowBuilder(start=Ticker("ticker")).build()
    for n in (0, 3, 40):  # shorter and longer than the wait before following
        events = [e async for e in workflow.stream(n, backend=backend)]
        assert [e.data for e in events if e.kind == "tick"] == list(range(n))
        kinds = [e.kind for e in events]
        ticks = [i for i, kind in enumerate(kinds) if kind == "tick"]
        assert kinds.index("executor_invoked") < min(ticks, default=len(kinds))
        assert max(ticks, default=-1) < kinds.index("output") < kinds.index("executor_completed")


async def test_a_dead_warm_actor_is_replaced_with_a_warning(backend: sg.RayBackend) -> None:
    import ray

    workflow = naps(0.0, 0.0)
    await workflow.run(0, backend=backend)
    victim = backend.pool.take(workflow.graph.nodes["b0"])
    assert victim is not None
    ray.kill(victim.actor, no_restart=True)
    backend.pool.give(workflow.graph.nodes["b0"], victim.actor, victim.where)
    for _ in range(50):  # (the kill lands asynchronously)
        try:
            await victim.actor.export.remote()
        except ray.exceptions.RayActorError:
            break
        await asyncio.sleep(0.1)
    result = await workflow.run(0, backend=backend)
    assert sorted(result.outputs) == ["b0", "b1"]
    [warning] = [e for e in result.events if e.kind == "warning"]
    assert warning.executor_id == "b0" and "died since the last run" in warning.message
    assert backend.started_last_run == 1


class Counting(sg.Executor):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.calls = 0

    @sg.handler
    async def on(self, marker: str, ctx: sg.WorkflowContext[str]) -> None:
        self.calls += 1
        await ctx.send_message(marker)


@sg.executor(id="waiter")
async def waiter(marker: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
    for _ in range(3000):  # (until the test made the marker: at most 30 s)
        if Path(marker).exists():
            break
        await asyncio.sleep(0.01)
    await ctx.yield_output("done")


async def test_an_actor_dead_before_it_hands_back_its_attributes_is_said_to(
    backend: sg.RayBackend, tmp_path: Path
) -> None:
    """An actor that dies, idle, after its last call of a run: the run
    needs it no more and ends as usual, but what its executor changed
    during the run cannot come back — said in a warning, not silently."""
    import ray

    counting = Counting("counting")
    workflow = sg.WorkflowBuilder(start=counting).add_edge(counting, waiter).build()
    ready = tmp_path / "ready"
    ready.touch()
    await workflow.run(str(ready), backend=backend)  # (its actors warm)
    assert counting.calls == 1
    marker = tmp_path / "go"
    events = []
    async with workflow.stream(str(marker), backend=backend) as stream:
        async for event in stream:
            events.append(event)
            if event.kind == "executor_invoked" and event.executor_id == "waiter":
                [run] = backend._runs.values()
                victim = run.actors["=counting"]
                ray.kill(victim, no_restart=True)
                for _ in range(50):  # (the kill lands asynchronously)
                    try:
                        await victim.export.remote()
                    except ray.exceptions.RayActorError:
                        break
                    await asyncio.sleep(0.1)
                marker.touch()
    assert [e.data for e in events if e.kind == "output"] == ["done"]
    [warning] = [e for e in events if e.kind == "warning"]
    assert warning.executor_id == "counting"
    assert "its attributes could not be brought back from its Ray actor" in warning.message
    assert "what the run changed in them is lost" in warning.message
    assert counting.calls == 1  # (its earlier value)
    assert (await workflow.run(str(marker), backend=backend)).outputs == ["done"]
    assert counting.calls == 2


async def test_close_and_the_idle_timer_leave_no_actor(ray_cluster: None) -> None:
    backend = sg.RayBackend(idle_ttl=0.5)
    workflow = naps(0.0, 0.0, 0.0)
    await workflow.run(0, backend=backend)
    assert len(backend.pool) == 4
    await asyncio.sleep(2.0)
    assert len(backend.pool) == 0  # expired
    await workflow.run(0, backend=backend)
    assert backend.started_last_run == 4
    backend.close()
    assert len(backend.pool) == 0
    await actors_alive(0)


def test_warm_actors_go_with_their_workflow(ray_cluster: None) -> None:
    backend = sg.RayBackend()
    workflow = naps(0.0)
    asyncio.run(workflow.run(0, backend=backend))
    assert len(backend.pool) == 2
    del workflow
    gc.collect()  # the workflow is gone: its actors go too
    assert len(backend.pool) == 0
    asyncio.run(actors_alive(0))
    backend.close()


def test_a_backend_serves_successive_event_loops(ray_cluster: None) -> None:
    with sg.RayBackend() as backend:
        workflow = naps(0.0)
        outputs: list[Any] = []
        for _ in range(3):
            outputs.append(asyncio.run(workflow.run(0, backend=backend)).outputs)
        assert outputs == [["b0"]] * 3
        assert backend.started_last_run == 0


async def test_an_agents_deltas_stream_live_from_its_actor(backend: sg.RayBackend) -> None:
    from stepgraph.testing import FakeOpenAIServer, FakeReply

    chunks = ["one ", "two ", "three ", "four"]
    with FakeOpenAIServer([FakeReply.text(chunks, delay=0.2)] * 2) as server:
        model = sg.OpenAIChatModel("fake", base_url=server.base_url)
        workflow = (
            sg.WorkflowBuilder(start="writer")
            .register("writer", lambda: sg.Agent("writer", model=model))
            .build()
        )
        for _ in range(2):  # cold, then warm
            kinds: list[str] = []
            text = ""
            async for event in workflow.stream("go", backend=backend):
                kinds.append(event.kind)
                if event.kind == "agent_delta":
                    text += event.text
            assert text == "one two three four"
            assert kinds.index("agent_delta") < kinds.index("executor_completed")
        await model.aclose()


CLUSTER_GONE = """
import asyncio
import stepgraph as sg
from tests.test_ray_warm import naps

async def main():
    first = sg.RayBackend(init_options={"num_cpus": 2})
    second = sg.RayBackend()
    flow = naps(0.0)
    await flow.run(0, backend=first)  # (first starts the cluster)
    await flow.run(0, backend=second)
    first.close()  # the cluster goes, and with it second's warm actors
    result = await flow.run(0, backend=second)
    print(result.outputs, [e.message for e in result.events if e.kind == "warning"])
    second.close()

asyncio.run(main())
"""


def test_warm_actors_of_a_cluster_that_is_gone_are_replaced() -> None:
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", CLUSTER_GONE],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": WORKER_PYTHONPATH},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "['b0'] []"


async def test_colocated_executors_share_one_warm_actor(ray_cluster: None) -> None:
    with sg.RayBackend(colocate=True) as backend:
        workflow = naps(0.3, 0.3, 0.0)
        await workflow.run(0, backend=backend)
        assert backend.started_last_run == 1 and len(backend.pool) == 1
        started = time.perf_counter()
        result = await workflow.run(0, backend=backend)
        assert time.perf_counter() - started < 1.0  # (the two 0.3 s branches overlap)
        assert sorted(result.outputs) == ["b0", "b1", "b2"]
        assert backend.started_last_run == 0
        assert len(set(backend.last_run_nodes.values())) == 1


async def test_a_fork_on_ray_goes_on_with_the_agents_conversation(
    backend: sg.RayBackend,
) -> None:
    """The agent runs in its actor: the run's ``forked_from`` reaches it
    there, and a fork's approval is answered as locally."""
    from tests.agents.test_agent import RAN, mailer

    RAN.clear()
    store = sg.MemoryCheckpointStore()
    first = await mailer(store).run("mail the tea facts", backend=backend)
    forked = await mailer(store).run(checkpoint=first.last_checkpoint, fork=True, backend=backend)
    t2, t3 = (p.request_id for p in forked.pending_requests)
    done = await mailer(store).run(
        responses={t2: sg.ToolApproval.approve(), t3: sg.ToolApproval.reject("no")},
        checkpoint=forked.last_checkpoint,
        backend=backend,
    )
    assert done.status is sg.RunStatus.IDLE and "t2=sent to ann@example.com" in done.outputs[0].text


@sg.executor(id="slow")
async def slow(n: int, ctx: sg.WorkflowContext[int]) -> None:
    await asyncio.sleep(1.0)  # (long enough for every concurrent run to take its own actor)
    await ctx.send_message(n)


@sg.executor(id="done")
async def done(n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
    await ctx.yield_output(n)


async def test_warm_actors_per_executor_are_capped(ray_cluster: None) -> None:
    """Concurrent runs each take an actor per executor; when they give them
    back, at most ``max_idle`` per executor stay warm, the rest are killed."""
    assert sg.RayBackend().max_idle == 4  # (the documented default)
    workflow = sg.WorkflowBuilder(start=slow).add_edge(slow, done).build()
    with sg.RayBackend(max_idle=1) as backend:
        results = await asyncio.gather(*(workflow.run(n, backend=backend) for n in range(5)))
        assert [r.outputs for r in results] == [[n] for n in range(5)]
        assert len(backend.pool) == 2  # one per executor
        await actors_alive(2)  # (kills land asynchronously)
        await workflow.run(0, backend=backend)
        assert backend.started_last_run == 0  # the kept ones are used
    with sg.RayBackend(max_idle=0) as backend:  # no warm actors at all
        await workflow.run(0, backend=backend)
        assert len(backend.pool) == 0
        await actors_alive(0)


@pytest.mark.parametrize("cap", [-1, 2.5, float("inf"), "4", True])
def test_max_idle_is_a_whole_number(cap: Any) -> None:
    """(A fraction was taken, and each run that gave back more actors than
    it failed at its end with a TypeError, its other actors left alive.)"""
    with pytest.raises(ValueError, match="max_idle must be a whole number, 0 or more"):
        sg.RayBackend(max_idle=cap)
    assert sg.RayBackend(max_idle=10**12).max_idle == 10**12


class Tally(sg.Executor):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.n = 0

    @sg.handler
    async def on(self, _: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        self.n += 1
        await ctx.yield_output(self.n)


async def test_a_stream_left_at_its_output_hands_its_attributes_to_the_next_run(
    backend: sg.RayBackend,
) -> None:
    """A stream left once it has its answer cancels the run as its actor
    hands the executor's attributes back: the next run, started at once,
    waits for them rather than starting from the driver's older copy (which
    then overwrote the cancelled run's changes: 2 and 2, not 3 and 3)."""
    tally = Tally("tally")
    workflow = sg.WorkflowBuilder(start=tally).build()
    assert (await workflow.run(0, backend=backend)).outputs == [1]
    async with workflow.stream(0, backend=backend) as events:
        async for event in events:
            if event.kind == "output":
                assert event.data == 2
                break
    assert (await workflow.run(0, backend=backend)).outputs == [3]
    assert tally.n == 3


class Asking(sg.Executor):
    """Asks for a number, yields it doubled."""

    @sg.handler
    async def on(self, text: str, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        await ctx.request_info(text, int)

    @sg.response_handler
    async def got(self, text: str, n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        await ctx.yield_output(2 * n)


@pytest.mark.parametrize("on_ray", [False, True])
async def test_a_stream_left_at_its_request_leaves_the_run_answerable(
    backend: sg.RayBackend, on_ray: bool
) -> None:
    """A stream left at the ``request_info`` event cancels the run once it
    has ended waiting: it is kept as it ended, and the answer that follows
    (no store: in memory) goes on with it — on Ray it was lost ('unknown
    request id'), the cancel landing while the actors handed back."""
    workflow = sg.WorkflowBuilder(start=Asking("asking")).build()
    runs_on = backend if on_ray else None
    for _ in range(3):
        async with workflow.stream("how many?", backend=runs_on) as events:
            async for event in events:
                if isinstance(event, sg.RequestInfoEvent):
                    asked = event.request_id
                    break
        done = await workflow.run(responses={asked: 21}, backend=runs_on)
        assert done.outputs == [42]
