"""The engine's semantics, run on every backend: the same tests for the local
asyncio backend and the Ray backend (a real local Ray cluster on loopback).

Handlers here communicate only through messages, outputs and state — never
through shared memory — so they mean the same whether they run in this
process or in Ray actors.
"""

from __future__ import annotations

import asyncio
import itertools
import operator
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import stepgraph as sg
from tests import subflows

ROOT = Path(__file__).resolve().parent.parent
# What Ray workers import: the tests' modules, and stepgraph from where this
# process took it — the sources under test, even where the environment has
# another copy installed (Ray's ``env_vars`` replace the driver's PYTHONPATH).
WORKER_PYTHONPATH = os.pathsep.join([str(ROOT), str(Path(sg.__file__).resolve().parents[1])])


_RAY_BACKENDS: list[sg.RayBackend] = []


@pytest.fixture(scope="module")
def ray_backend() -> Iterator[sg.RayBackend]:
    backend = sg.RayBackend(
        init_options={"num_cpus": 2, "runtime_env": {"env_vars": {"PYTHONPATH": WORKER_PYTHONPATH}}}
    )
    _RAY_BACKENDS.append(backend)
    yield backend
    _RAY_BACKENDS.remove(backend)
    backend.shutdown()


@pytest.fixture(scope="module")
def colocating_backend(ray_backend: sg.RayBackend) -> Iterator[sg.RayBackend]:
    """Executors without a placement of their own share one actor per run
    (on the cluster ``ray_backend`` started)."""
    backend = sg.RayBackend(colocate=True)
    _RAY_BACKENDS.append(backend)
    yield backend
    _RAY_BACKENDS.remove(backend)
    backend.close()


# "ray-again" runs every test a second time on the same Ray backend, whose
# warm actors (and whatever the first pass left in them) are still there;
# "ray-colocated" on a backend that runs the executors together in one actor.
@pytest.fixture(params=["local", "ray", "ray-again", "ray-colocated"])
def backend(request: pytest.FixtureRequest) -> sg.Backend:
    if request.param == "local":
        return sg.LocalBackend()
    if request.param == "ray-colocated":
        return request.getfixturevalue("colocating_backend")  # type: ignore[no-any-return]
    return request.getfixturevalue("ray_backend")  # type: ignore[no-any-return]


def alive_actors() -> int:
    """Actors alive in the Ray cluster (asked of Ray's control store, which
    needs no dashboard)."""
    import ray
    from ray._private import state

    if not ray.is_initialized():
        return 0
    return sum(a["State"] == "ALIVE" for a in state.actors().values())


def only_warm_actors(backend: sg.Backend) -> bool:
    """Whether every actor alive is a warm one waiting in the backend's pool
    (none is left running a handler); a moment is allowed for kills to land."""
    import gc

    gc.collect()  # (the actors of workflows no longer used are killed)
    warm = sum(len(b.pool) for b in _RAY_BACKENDS)  # (the module's backends share a cluster)
    for _ in range(50):
        if alive_actors() == warm:
            return True
        time.sleep(0.1)
    return False


@sg.executor(id="split")
async def split(items: list[Any], ctx: sg.WorkflowContext[Any]) -> None:
    for item in items:
        await ctx.send_message(item)


class Timed(sg.Executor):
    """Yields (id, item, start, end) so tests can check overlap from outputs."""

    def __init__(self, id: str, delay: float, jitter: bool = False) -> None:
        super().__init__(id)
        self.delay = delay
        self.jitter = jitter
        self.calls = 0

    @sg.handler
    async def on(self, item: Any, ctx: sg.WorkflowContext[Any, Any]) -> None:
        self.calls += 1
        started = time.time()
        await asyncio.sleep(self.delay * (random.random() if self.jitter else 1))
        await ctx.yield_output((self.id, item, started, time.time(), self.calls))
        await ctx.send_message(item)


async def test_serial_inbox_and_deterministic_order(backend: sg.Backend) -> None:
    target = Timed("target", 0.05)
    a, b = Timed("a", 0.02, jitter=True), Timed("b", 0.02, jitter=True)
    workflow = (
        sg.WorkflowBuilder(start=split)
        .add_fan_out(split, [a, b])
        .add_edge(a, target)
        .add_edge(b, target)
        .build()
    )
    result = await workflow.run([1, 2], backend=backend)
    calls = sorted((o for o in result.outputs if o[0] == "target"), key=lambda o: o[2])
    assert [o[1] for o in calls] == [1, 2, 1, 2]  # a's messages, then b's
    assert all(x[3] <= y[2] for x, y in itertools.pairwise(calls))  # never overlapping


async def test_concurrency_across_executors(backend: sg.Backend) -> None:
    sleepers = [Timed(f"s{i}", 0.4) for i in range(3)]
    workflow = sg.WorkflowBuilder(start=split).add_fan_out(split, sleepers).build()
    result = await workflow.run([0], backend=backend)
    intervals = [(o[2], o[3]) for o in result.outputs]
    assert len(intervals) == 3
    assert max(start for start, _ in intervals) < min(end for _, end in intervals)  # all at once


async def test_executor_state_persists_across_runs(backend: sg.Backend) -> None:
    counter = Timed("counter", 0)
    workflow = sg.WorkflowBuilder(start=counter).build()
    first = await workflow.run("x", backend=backend)
    second = await workflow.run("y", backend=backend)
    assert first.outputs[0][4] == 1 and second.outputs[0][4] == 2
    assert counter.calls == 2
    if isinstance(backend, sg.RayBackend):
        assert backend.started_last_run == 0  # the second run found its actor warm
    # What the driver's object holds is what the next run sees, on any backend.
    counter.calls = 10
    third = await workflow.run("z", backend=backend)
    assert third.outputs[0][4] == 11 and counter.calls == 11
    other = sg.LocalBackend() if isinstance(backend, sg.RayBackend) else backend
    await workflow.run("w", backend=other)
    fifth = await workflow.run("v", backend=backend)
    assert fifth.outputs[0][4] == 13 and counter.calls == 13
    assert only_warm_actors(backend)


@sg.executor(id="writer")
async def writer(n: int, ctx: sg.WorkflowContext[int]) -> None:
    ctx.state.set("k", n)
    ctx.state.set(f"own-{n}", True)
    await ctx.send_message(n)


@sg.executor(id="reader")
async def reader(n: int, ctx: sg.WorkflowContext[sg.Never, Any]) -> None:
    await ctx.yield_output((n, ctx.state.get("k"), sorted(k for k in ctx.state)))


async def test_barrier_commit_and_conflicts(backend: sg.Backend) -> None:
    workflow = (
        sg.WorkflowBuilder(start=split).add_edge(split, writer).add_edge(writer, reader).build()
    )
    result = await workflow.run([1, 2], backend=backend)
    assert result.outputs == [(1, 2, ["k", "own-1", "own-2"]), (2, 2, ["k", "own-1", "own-2"])]


@sg.executor(id="boom")
async def boom(item: Any) -> None:
    await asyncio.sleep(0.05)
    raise ValueError(f"boom {item}")


async def test_failure(backend: sg.Backend) -> None:
    slow = Timed("slow", 30.0)
    workflow = sg.WorkflowBuilder(start=split).add_fan_out(split, [boom, slow]).build()
    events: list[sg.Event] = []
    started = time.perf_counter()
    with pytest.raises(sg.WorkflowRunError) as raised:
        async for event in workflow.stream([7], backend=backend):
            events.append(event)
    assert time.perf_counter() - started < 20  # the 30 s sibling was not waited for
    assert raised.value.executor_id == "boom"
    assert isinstance(raised.value.__cause__, ValueError) and "boom 7" in str(raised.value)
    assert [e.kind for e in events][-3:] == ["executor_failed", "failed", "status"]
    assert "output" not in [e.kind for e in events]
    assert only_warm_actors(backend)
    again = await sg.WorkflowBuilder(start=Timed("t", 0)).build().run(1, backend=backend)
    assert again.status is sg.RunStatus.IDLE


async def test_cancellation(backend: sg.Backend) -> None:
    workflow = sg.WorkflowBuilder(start=Timed("hang", 30)).build()
    before = asyncio.all_tasks()
    task = asyncio.create_task(workflow.run(1, backend=backend))
    await asyncio.sleep(1.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert asyncio.all_tasks() - before == set()
    assert only_warm_actors(backend)
    quick = sg.WorkflowBuilder(start=Timed("quick", 0)).build()
    assert (await quick.run(1, backend=backend)).status is sg.RunStatus.IDLE


def _small(n: int) -> bool:
    return n < 10


async def test_fan_in_and_switch(backend: sg.Backend) -> None:
    low, high = Timed("low", 0), Timed("high", 0)

    @sg.executor(id="sum")
    async def total(values: list[Any], ctx: sg.WorkflowContext[sg.Never, Any]) -> None:
        await ctx.yield_output(("sum", sorted(values)))

    workflow = (
        sg.WorkflowBuilder(start=split)
        .add_switch(split, [sg.Case(_small, low), sg.Default(high)])
        .add_fan_in([low, high], total)
        .build()
    )
    result = await workflow.run([3, 30], backend=backend)
    assert result.outputs[-1] == ("sum", [3, 30])


@dataclass(frozen=True)
class Ask:
    text: str


class Approver(sg.Executor):
    @sg.handler
    async def on(self, text: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.request_info(Ask(text), bool)

    @sg.response_handler
    async def done(self, ask: Ask, ok: bool, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.yield_output(f"{ask.text}: {ok}")


async def test_human_in_the_loop(backend: sg.Backend) -> None:
    workflow = sg.WorkflowBuilder(start=Approver("approver")).build()
    first = await workflow.run("go?", backend=backend)
    [pending] = first.pending_requests
    done = await workflow.run(responses={pending.request_id: True}, backend=backend)
    assert done.outputs == ["go?: True"]


async def test_sub_workflows(backend: sg.Backend) -> None:
    workflow = subflows.with_child(subflows.asking_child())
    first = await workflow.run("plan", backend=backend)
    [pending] = first.pending_requests
    [asked] = [e for e in first.events if isinstance(e, sg.RequestInfoEvent)]
    assert (asked.path, asked.request_id) == ("sub", pending.request_id)
    done = await workflow.run(responses={pending.request_id: False}, backend=backend)
    assert done.outputs == ["plan rejected"]


async def test_checkpoints_cross_backends(
    backend: sg.Backend, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from tests import resumable

    store = sg.SqliteCheckpointStore(tmp_path / "x.sqlite")
    full = await resumable.build(store).run(1, backend=backend)
    infos = await store.list(full.run_id)
    # Resume on the other backend: started on Ray, finished locally, and back.
    other: sg.Backend = (
        sg.LocalBackend()
        if isinstance(backend, sg.RayBackend)
        else request.getfixturevalue("ray_backend")
    )
    resumed = await resumable.build(store).run(checkpoint=infos[4].id, backend=other)
    assert resumed.outputs == [
        e.data for e in full.events if e.kind == "output" and (e.superstep or 0) > 4
    ]
    store.close()


@sg.executor(id="big")
async def big(size: int, ctx: sg.WorkflowContext[bytes]) -> None:
    await ctx.send_message(bytes(size))


class Measure(sg.Executor):
    @sg.handler
    async def on(self, payload: bytes, ctx: sg.WorkflowContext[sg.Never, Any]) -> None:
        await ctx.yield_output((self.id, len(payload)))


async def test_large_payload_to_several_executors(backend: sg.Backend) -> None:
    readers = [Measure(f"m{i}") for i in range(3)]
    workflow = sg.WorkflowBuilder(start=big).add_fan_out(big, readers).build()
    result = await workflow.run(5_000_000, backend=backend)
    assert sorted(result.outputs) == [(f"m{i}", 5_000_000) for i in range(3)]
    if isinstance(backend, sg.RayBackend):
        assert backend.shared_last_superstep == 1  # one object-store copy for three inboxes


# -- core v2 on every backend: per-run executors, maps, reducers, pauses, cancel --


class Tally(sg.Executor):
    """A per-run executor: counts its calls in an attribute, reports the run
    context it was given."""

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.calls = 0

    @sg.handler
    async def on(self, item: int, ctx: sg.WorkflowContext[sg.Never, Any, str]) -> None:
        self.calls += 1
        await asyncio.sleep(0.01)
        await ctx.yield_output((ctx.context, self.id, item, self.calls))


def tallies() -> sg.Workflow:
    return (
        sg.WorkflowBuilder(start=split)
        .register("t1", Tally)
        .register("t2", Tally)
        .add_fan_out(split, ["t1", "t2"])
        .build()
    )


async def test_concurrent_runs_of_per_run_executors(backend: sg.Backend) -> None:
    workflow = tallies()
    assert workflow.concurrent
    results = await asyncio.gather(
        *(workflow.run([10 * r, 10 * r + 1], context=f"run{r}", backend=backend) for r in range(3))
    )
    for r, result in enumerate(results):
        assert sorted(result.outputs) == [
            (f"run{r}", t, 10 * r + i, i + 1) for t in ("t1", "t2") for i in (0, 1)
        ]
    assert only_warm_actors(backend)


class Square(sg.Executor):
    @sg.handler
    async def on(self, n: int, ctx: sg.WorkflowContext[int]) -> None:
        await asyncio.sleep(random.random() / 100)  # finish in any order
        ctx.state.set("notes", [n])
        await ctx.send_message(n * n)


@sg.executor(id="gather")
async def gather(values: list[int], ctx: sg.WorkflowContext[sg.Never, Any]) -> None:
    await ctx.yield_output((values, ctx.state.get("notes")))


async def test_a_map_with_a_reducer(backend: sg.Backend) -> None:
    workflow = (
        sg.WorkflowBuilder(start=split, reducers={"notes": operator.add})
        .add_map(split, Square, id="squares", to=gather, max_concurrency=3)
        .build()
    )
    result = await workflow.run(list(range(8)), backend=backend)
    assert result.outputs == [([n * n for n in range(8)], list(range(8)))]
    invoked = [e.item for e in result.events if e.kind == "executor_invoked"]
    assert sorted(i for i in invoked if i is not None) == list(range(8))


class Picky(sg.Executor):
    @sg.handler
    async def on(self, n: int, ctx: sg.WorkflowContext[int]) -> None:
        if n == 5:
            raise ValueError("not five")
        await ctx.send_message(n)


async def test_a_failing_map_item_is_named(backend: sg.Backend) -> None:
    workflow = sg.WorkflowBuilder(start=split).add_map(split, Picky, id="picky", to=gather).build()
    seen: list[sg.Event] = []
    with pytest.raises(sg.WorkflowRunError, match="not five"):
        async for event in workflow.stream([3, 4, 5], backend=backend):
            seen.append(event)
    [failed] = [e for e in seen if e.kind == "executor_failed"]
    assert (failed.executor_id, failed.item) == ("picky", 2)


@sg.executor(id="step")
async def step(n: int, ctx: sg.WorkflowContext[int, int]) -> None:
    await asyncio.sleep(0.05)
    if n < (ctx.context or 10_000):
        await ctx.send_message(n + 1)
    else:
        await ctx.yield_output(n)


def stepping(store: sg.CheckpointStore) -> sg.Workflow:
    return (
        sg.WorkflowBuilder(start=step, checkpoints=store, max_supersteps=20_000)
        .add_edge(step, step)
        .build()
    )


async def test_breakpoints_limits_and_cancel_from_the_store(
    backend: sg.Backend, tmp_path: Path
) -> None:
    with sg.SqliteCheckpointStore(tmp_path / "x.sqlite") as store:
        workflow = stepping(store)
        with pytest.raises(sg.ConvergenceError, match="max_supersteps=2"):
            await workflow.run(0, context=5, max_supersteps=2, backend=backend)
        paused = await workflow.run(0, context=3, interrupt_after=["step"], backend=backend)
        assert paused.status is sg.RunStatus.PAUSED
        assert (await workflow.get_state(paused.last_checkpoint or "")).messages == {"step": [1]}
        done = await workflow.run(checkpoint=paused.last_checkpoint, context=3, backend=backend)
        assert (done.status, done.outputs) == (sg.RunStatus.IDLE, [3])

        events: list[sg.Event] = []

        async def consume() -> None:
            async for event in workflow.stream(0, backend=backend):
                events.append(event)

        task = asyncio.create_task(consume())
        while not any(e.kind == "superstep_completed" for e in events):
            await asyncio.sleep(0.01)
        run_id = next(e.run_id for e in events if isinstance(e, sg.RunStartedEvent))
        assert await store.request_cancel(run_id)
        await asyncio.wait_for(task, timeout=60)
        assert events[-1] == sg.StatusEvent(status=sg.RunStatus.CANCELLED)
        info = await store.run_info(run_id)
        assert info is not None and info.status == "cancelled"
        steps = info.superstep
        resumed = await workflow.run(
            checkpoint=info.last_checkpoint, context=steps + 2, backend=backend
        )
        assert resumed.outputs == [steps + 2]
    assert only_warm_actors(backend)


class Keeper(sg.Executor):
    """A per-run executor whose attribute must live through supersteps and a
    request answered in a later call."""

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.seen: list[int] = []

    @sg.handler
    async def on(self, n: int, ctx: sg.WorkflowContext[int, Any]) -> None:
        self.seen.append(n)
        if n % 10 < 2:
            await ctx.send_message(n + 1)
        else:
            await ctx.request_info(Ask(str(n)), bool)

    @sg.response_handler
    async def done(self, ask: Ask, ok: bool, ctx: sg.WorkflowContext[sg.Never, Any]) -> None:
        await ctx.yield_output((ask.text, ok, list(self.seen)))


async def test_per_run_instances_live_through_supersteps_and_answers(
    backend: sg.Backend,
) -> None:
    workflow = (
        sg.WorkflowBuilder(start="keeper")
        .register("keeper", Keeper)
        .add_edge("keeper", "keeper")
        .build()
    )
    firsts = await asyncio.gather(*(workflow.run(10 * r, backend=backend) for r in (1, 2)))
    answers = {
        r: first.pending_requests[0].request_id for r, first in zip((1, 2), firsts, strict=True)
    }
    dones = await asyncio.gather(
        *(workflow.run(responses={answers[r]: r == 1}, backend=backend) for r in (2, 1))
    )
    assert [d.outputs for d in dones] == [
        [("22", False, [20, 21, 22])],
        [("12", True, [10, 11, 12])],
    ]


async def test_a_context_ray_cannot_send_fails_clearly(ray_backend: sg.RayBackend) -> None:
    import threading

    with pytest.raises(sg.WorkflowRunError, match=r"run context \(lock\) .* cannot be sent"):
        await tallies().run([1], context=threading.Lock(), backend=ray_backend)
    assert only_warm_actors(ray_backend)


class SnapshotKeeper(Keeper):
    def snapshot(self) -> list[int]:
        return list(self.seen)

    def restore(self, snapshot: list[int]) -> None:
        self.seen = list(snapshot)


def snapshot_keepers(store: sg.CheckpointStore) -> sg.Workflow:
    return (
        sg.WorkflowBuilder(start="keeper", checkpoints=store)
        .register("keeper", SnapshotKeeper)
        .add_edge("keeper", "keeper")
        .build()
    )


async def test_checkpoints_hold_what_per_run_executors_hold(
    backend: sg.Backend, tmp_path: Path
) -> None:
    with sg.SqliteCheckpointStore(tmp_path / "x.sqlite") as store:
        first = await snapshot_keepers(store).run(10, backend=backend)
        [request] = first.pending_requests
        middle = (await store.list(first.run_id))[2]  # after superstep 2: seen [10, 11]
        state = await snapshot_keepers(store).get_state(middle.id)
        assert state.snapshots == {"keeper": [10, 11]}
        # A fresh workflow object (as another process would build) answers from the store.
        done = await snapshot_keepers(store).run(
            checkpoint=first.last_checkpoint, responses={request.request_id: True}, backend=backend
        )
        assert done.outputs == [("12", True, [10, 11, 12])]


async def test_an_agent_with_a_tool_an_approval_and_usage(backend: sg.Backend) -> None:
    """An agent (registered per run) calls a tool, waits for an approval
    whose request id is its call's, and counts its tokens — on Ray too,
    where it runs in an actor."""
    from stepgraph.testing import ScriptedModel, ScriptedReply
    from tests.agents.test_agent import lookup, send_email

    def make() -> sg.Agent:
        model = ScriptedModel(
            [
                ScriptedReply(
                    tool_calls=[
                        sg.ToolCall("t1", "lookup", '{"topic": "tea"}'),
                        sg.ToolCall("t2", "send_email", '{"to": "ann", "body": "tea"}'),
                    ],
                    usage=sg.Usage(7, 3),
                ),
                ScriptedReply("done", usage=sg.Usage(11, 2)),
            ]
        )
        return sg.Agent("mailer", model=model, tools=[lookup, send_email])

    workflow = sg.WorkflowBuilder(start="mailer").register("mailer", make).build()
    first = await workflow.run("mail", backend=backend)
    [pending] = first.pending_requests
    assert pending.request_id == f"t2-{first.run_id[:8]}"
    assert first.usage.by_executor == {"mailer": sg.Usage(7, 3)}
    done = await workflow.run(
        responses={pending.request_id: sg.ToolApproval.approve()}, backend=backend
    )
    assert done.outputs[0].text == "done"
    assert done.usage.by_executor == {"mailer": sg.Usage(18, 5)}


class Half(sg.Executor):
    @sg.handler
    async def on(self, pair: tuple[int, int], ctx: sg.WorkflowContext[int]) -> None:
        await ctx.add_event(sg.UserEvent(kind="half", data=pair))
        await ctx.send_message(pair[1])


@sg.executor(id="pair")
async def pair(n: int, ctx: sg.WorkflowContext[tuple[int, int]]) -> None:
    for j in range(2):
        await ctx.send_message((n, j))


@sg.executor(id="listed")
async def listed(values: list[Any], ctx: sg.WorkflowContext[sg.Never, list[Any]]) -> None:
    await ctx.yield_output(values)


def halves() -> sg.Executor:
    """A sub-workflow mapping over two items of its own."""
    child = sg.WorkflowBuilder(start=pair, name="pair").add_map(pair, Half, id="h", to=listed)
    return sg.WorkflowExecutor(child.build(), id="halves")


async def test_a_map_in_a_mapped_sub_workflow_names_both_items(backend: sg.Backend) -> None:
    workflow = (
        sg.WorkflowBuilder(start=split).add_map(split, halves, id="halves", to=listed).build()
    )
    seen = [event async for event in workflow.stream([0, 1, 2], backend=backend)]
    outputs = [e.data for e in seen if e.kind == "output" and not e.workflow_path]
    assert outputs == [[[0, 1], [0, 1], [0, 1]]]
    found = sorted(
        (e.data, e.workflow_items, e.item, e.path) for e in seen if e.kind == "half"
    )  # fmt: skip
    assert found == [((n, j), (n,), j, f"halves[{n}]/h") for n in range(3) for j in range(2)]
