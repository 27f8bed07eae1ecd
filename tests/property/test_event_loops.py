"""One workflow object, run on random graphs under one event loop after
another, does what it does under a single loop.

The graphs and nodes are ``test_resume_anywhere``'s (shared state, executor
snapshots, fan-ins, maps, cycles), checkpointed in a memory or SQLite store
with ``sync`` or ``async`` durability. Hypothesis draws a sequence of calls —
a new run (``run`` or ``stream``), a resume from a checkpoint of the last run,
or a run cancelled after a random number of the loop's turns and gone on from
its last checkpoint in the next loop — and where each call runs: a fresh
``asyncio.run``, a uvloop runner, or ``asyncio.run`` in a new thread. A
second workflow of the same graph makes the same calls (without the cancels)
in one loop. Each call must yield what the reference's yields, with the same
events per executor and the same schedule, a cancelled call must leave no
task behind and its run no longer held, and the executors' attributes must
carry over from loop to loop as they do within one.

A workflow of registered factories is also run in several threads at once,
each with its own loop, from checkpoints of one store.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import uvloop
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import stepgraph as sg

from .test_random_graphs import Spec, graphs, reference, wire
from .test_resume_anywhere import Counting, build

T = TypeVar("T")

LOOPS = ["asyncio", "uvloop", "thread"]


def on_loop(kind: str, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main()`` under a loop of its own: ``asyncio.run``, a uvloop
    runner, or ``asyncio.run`` in a new thread."""
    if kind == "asyncio":
        return asyncio.run(main())
    if kind == "uvloop":
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main())
    with ThreadPoolExecutor(1) as pool:  # (a new thread each time)
        return pool.submit(asyncio.run, main()).result()


def signature(event: sg.Event) -> tuple[Any, ...]:
    """What an event says, without what changes from run to run (ids, times)."""
    said: Any = None
    if isinstance(event, sg.OutputEvent):
        said = event.data
    elif isinstance(event, sg.SuperstepStartedEvent):
        said = event.executors
    elif isinstance(event, sg.StatusEvent):
        said = event.status
    elif isinstance(event, sg.WarningEvent):
        said = event.message
    return (event.kind, event.superstep, event.item, said)


def per_executor(events: list[sg.Event]) -> dict[Any, list[tuple[Any, ...]]]:
    """Each executor's events in order (a map's per item), and the run's own."""
    seen: dict[Any, list[tuple[Any, ...]]] = {}
    for e in events:
        seen.setdefault((e.executor_id, e.item), []).append(signature(e))
    return seen


@dataclass(frozen=True)
class Call:
    what: str  # start, stream, resume, cancel
    loop: str
    pick: int  # resume: which superstep's checkpoint; cancel: turns before the cancel


calls = st.lists(
    st.builds(
        Call,
        st.sampled_from(["start", "stream", "resume", "cancel"]),
        st.sampled_from(LOOPS),
        st.integers(0, 60),
    ),
    min_size=2,
    max_size=4,
)


async def checkpoint_at(store: sg.CheckpointStore, run_id: str, pick: int) -> str:
    """A checkpoint of ``run_id`` at a superstep chosen by ``pick``: the same
    superstep holds the same on every branch of a deterministic run."""
    listed = await store.list(run_id)
    steps = sorted({c.superstep for c in listed})
    step = steps[pick % len(steps)]
    return next(c.id for c in listed if c.superstep == step)


@dataclass(frozen=True)
class Got:
    """What a call did."""

    run_id: str
    status: sg.RunStatus
    outputs: list[Any]
    events: list[sg.Event]

    @classmethod
    def of(cls, result: sg.RunResult) -> Got:
        return cls(result.run_id, result.status, result.outputs, result.events)


async def one_call(
    workflow: sg.Workflow, store: sg.CheckpointStore, call: Call, spec: Spec, last: str | None
) -> Got:
    """``call`` on ``workflow`` (a cancel made a plain run: the reference's)."""
    if call.what == "resume" and last is not None:
        at = await checkpoint_at(store, last, call.pick)
        return Got.of(await workflow.run(checkpoint=at, checkpoints=store))
    if call.what == "stream":
        async with workflow.stream(spec.start_value) as events:
            seen = [e async for e in events]
        [started] = [e for e in seen if isinstance(e, sg.RunStartedEvent)]
        [*_, ended] = [e for e in seen if isinstance(e, sg.StatusEvent)]
        # (a stream's outputs come as they happen: their order per executor
        # is in the events; here, which)
        outputs = sorted((e.data for e in seen if isinstance(e, sg.OutputEvent)), key=repr)
        return Got(started.run_id, ended.status, outputs, seen)
    return Got.of(await workflow.run(spec.start_value))


async def cancelled(
    workflow: sg.Workflow, store: sg.CheckpointStore, spec: Spec, turns: int
) -> Any:
    """Start a run and cancel it after ``turns`` turns of the loop: when the
    cancel came, and what the run had stored (its last checkpoint and
    outputs), or its result if it ended first."""
    before = asyncio.all_tasks()
    known = {r.run_id for r in await store.runs()}
    task = asyncio.ensure_future(workflow.run(spec.start_value))
    for _ in range(turns):
        await asyncio.sleep(0)
    task.cancel()
    try:
        ended = await task
    except asyncio.CancelledError:
        pass
    else:
        return "the run ended first", ended
    await asyncio.sleep(0)
    assert asyncio.all_tasks() - before == set()  # (nothing left behind)
    [run] = [r for r in await store.runs() if r.run_id not in known] or [None]
    if run is None:
        return "before the run began", None  # (nothing stored, nothing ran)
    assert await store.lease_holder(run.run_id) is None
    return "while running", (run.last_checkpoint, list(await store.outputs(run.last_checkpoint)))


def check_loops(spec: Spec, plan: list[Call], kind: str, durability: str, folder: str) -> None:
    reference(spec)  # (rejects graphs whose cycles run too long)
    ref_store = sg.MemoryCheckpointStore()
    expected: list[Got] = []

    async def reference_calls() -> list[int]:
        workflow = build(spec, ref_store, "sync")
        last = None
        for call in plan:
            result = await one_call(workflow, ref_store, call, spec, last)
            expected.append(result)
            last = result.run_id
        return [node.count for node in nodes_of(workflow, spec)]

    ref_counts = asyncio.run(reference_calls())

    store = (
        sg.MemoryCheckpointStore()
        if kind == "memory"
        else sg.SqliteCheckpointStore(Path(folder) / "runs.sqlite")
    )
    try:
        workflow = build(spec, store, durability)
        last: str | None = None
        for call, want in zip(plan, expected, strict=True):
            if call.what == "cancel":
                when, stopped = on_loop(
                    call.loop,
                    lambda: cancelled(workflow, store, spec, call.pick),  # noqa: B023
                )
                event(f"cancelled {when}")
                if isinstance(stopped, tuple):  # go on under the next loop
                    at, done = stopped
                    rest = on_loop(
                        LOOPS[(LOOPS.index(call.loop) + 1) % 3],
                        lambda: workflow.run(checkpoint=at, checkpoints=store),  # noqa: B023
                    )
                    assert rest.status is sg.RunStatus.IDLE
                    assert done + rest.outputs == want.outputs
                    last = rest.run_id
                    continue
                if stopped is None:
                    stopped = on_loop(call.loop, lambda: workflow.run(spec.start_value))
                got = Got.of(stopped)
            else:
                got = on_loop(call.loop, lambda: one_call(workflow, store, call, spec, last))  # noqa: B023
            assert got.status is want.status
            assert got.outputs == want.outputs, call
            assert per_executor(got.events) == per_executor(want.events), call
            last = got.run_id
        # Attributes of the shared instances carried over from loop to loop.
        assert [node.count for node in nodes_of(workflow, spec)] == ref_counts
    finally:
        store.close()


def nodes_of(workflow: sg.Workflow, spec: Spec) -> list[Counting]:
    nodes = [workflow.executors[f"n{i}"] for i in range(spec.size)]
    assert all(isinstance(n, Counting) for n in nodes)
    return nodes  # type: ignore[return-value]


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(graphs(), calls, st.sampled_from(["memory", "sqlite"]), st.sampled_from(["sync", "async"]))
def test_one_workflow_across_event_loops_does_what_it_does_in_one(
    spec: Spec, plan: list[Call], kind: str, durability: str
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        check_loops(spec, plan, kind, durability, folder)


def per_run(spec: Spec, store: sg.CheckpointStore) -> sg.Workflow:
    """The graph of registered factories: every run its own instances."""
    builder = sg.WorkflowBuilder(
        start="n0", max_supersteps=1000, checkpoints=sg.CheckpointConfig(store, "async")
    )
    jitter = random.Random(spec.jitter_seed)
    for i in range(spec.size):
        builder.register(f"n{i}", lambda i=i: Counting(i, jitter))
    return wire(builder, spec, lambda i: f"n{i}", lambda i: lambda: Counting(i, jitter)).build()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(graphs(), st.lists(st.integers(0, 10**6), min_size=3, max_size=3))
def test_runs_in_threads_at_once_each_do_what_one_does(spec: Spec, picks: list[int]) -> None:
    """Three threads, each under its own loop, run the one workflow of
    factories at the same time — a new run, or a resume from a checkpoint of
    a first run — on one SQLite store: each does what it does alone."""
    reference(spec)
    with tempfile.TemporaryDirectory() as folder:
        store = sg.SqliteCheckpointStore(Path(folder) / "runs.sqlite")
        try:
            workflow = per_run(spec, store)
            assert workflow.concurrent
            first = asyncio.run(workflow.run(spec.start_value))
            starts = [asyncio.run(checkpoint_at(store, first.run_id, p)) for p in picks]
            alone = [
                asyncio.run(workflow.run(checkpoint=at, checkpoints=store, fork=True))
                for at in starts
            ]
            barrier = threading.Barrier(len(starts))

            async def together(at: str) -> sg.RunResult:
                barrier.wait()
                return await workflow.run(checkpoint=at, checkpoints=store, fork=True)

            with ThreadPoolExecutor(len(starts)) as pool:
                got = list(pool.map(lambda at: asyncio.run(together(at)), starts))
            for mine, want in zip(got, alone, strict=True):
                assert mine.status is sg.RunStatus.IDLE
                assert mine.outputs == want.outputs
                assert per_executor(mine.events) == per_executor(want.events)
        finally:
            store.close()
