"""Per-run executors (``register(id, factory)``): concurrent runs of one
workflow object, each with its own instances, state, events and outputs —
compared one by one with the same runs made one after another (design §1.11)."""

from __future__ import annotations

import asyncio
import random
import sys
import threading
from dataclasses import dataclass
from typing import Any

import pytest

import stepgraph as sg


@dataclass(frozen=True)
class Job:
    name: str
    size: int


class Splitter(sg.Executor):
    """Counts its calls in an attribute: per run, it must be 1."""

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.calls = 0

    @sg.handler
    async def split(self, job: Job, ctx: sg.WorkflowContext[tuple[str, int]]) -> None:
        self.calls += 1
        ctx.state.set("job", job.name)
        ctx.state.set("trail", [f"split {job.name} call {self.calls}"])
        await asyncio.sleep(random.random() / 500)
        for part in range(job.size):
            await ctx.send_message((job.name, part))


class Worker(sg.Executor):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.seen: list[int] = []

    @sg.handler
    async def work(self, item: tuple[str, int], ctx: sg.WorkflowContext[str]) -> None:
        name, part = item
        self.seen.append(part)
        await asyncio.sleep(random.random() / 500)
        ctx.state.set("trail", [f"{self.id} {name}/{part} (my {len(self.seen)})"])
        await ctx.send_message(f"{self.id}:{name}:{part}:{ctx.state.get('job')}")


class Join(sg.Executor):
    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.batches = 0

    @sg.handler
    async def join(self, parts: list[str], ctx: sg.WorkflowContext[sg.Never, Any]) -> None:
        self.batches += 1
        await ctx.yield_output(
            {"parts": parts, "trail": ctx.state.get("trail"), "batches": self.batches,
             "context": ctx.context}
        )  # fmt: skip


def build() -> sg.Workflow:
    return (
        sg.WorkflowBuilder(start="split", name="concurrent", reducers={"trail": lambda a, b: a + b})
        .register("split", Splitter)
        .register("left", Worker)
        .register("right", lambda: Worker("right"))
        .register("join", Join)
        .add_fan_out("split", ["left", "right"])
        .add_fan_in(["left", "right"], "join")
        .build()
    )


def digest(result: sg.RunResult) -> tuple[Any, ...]:
    """What must not depend on other runs: outputs, and per executor the
    sequence of its events (without times)."""
    per_executor: dict[str, list[str]] = {}
    for event in result.events:
        if event.executor_id is not None:
            per_executor.setdefault(event.executor_id, []).append(event.kind)
    return result.status, result.outputs, per_executor


async def test_two_hundred_concurrent_runs_match_sequential_runs() -> None:
    jobs = [Job(f"job{i}", 1 + i % 4) for i in range(200)]
    workflow = build()
    assert workflow.concurrent
    concurrent = await asyncio.gather(
        *(workflow.run(job, context={"user": job.name}) for job in jobs)
    )
    for job, result in zip(jobs, concurrent, strict=True):
        alone = await build().run(job, context={"user": job.name})
        assert digest(result) == digest(alone), job
        [output] = result.outputs
        # Each run's own instances: one call each, whatever ran beside it.
        assert output["trail"][0] == f"split {job.name} call 1"
        assert output["batches"] == 1 and output["context"] == {"user": job.name}
        assert all(p.endswith(f":{job.name}") for p in output["parts"])
    assert len({r.run_id for r in concurrent}) == 200
    # The prototypes made at build time never ran.
    assert workflow.executors["split"].calls == 0  # type: ignore[attr-defined]


async def test_streams_of_concurrent_runs_do_not_mix() -> None:
    workflow = build()

    async def collect(job: Job) -> list[sg.Event]:
        return [e async for e in workflow.stream(job)]

    streams = await asyncio.gather(*(collect(Job(f"s{i}", 3)) for i in range(20)))
    for i, events in enumerate(streams):
        [started] = [e for e in events if isinstance(e, sg.RunStartedEvent)]
        outputs = [e.data for e in events if isinstance(e, sg.OutputEvent)]
        assert len(outputs) == 1 and all(p.endswith(f":s{i}") for p in outputs[0]["parts"])
        assert started.run_id not in {
            e.run_id for other in streams if other is not events for e in other
            if isinstance(e, sg.RunStartedEvent)
        }  # fmt: skip


async def test_per_run_executors_are_checkpointed_through_their_snapshots(
    store: sg.CheckpointStore,
) -> None:
    class Tally(sg.Executor):
        def __init__(self, id: str) -> None:
            super().__init__(id)
            self.total = 0

        @sg.handler
        async def add(self, n: int, ctx: sg.WorkflowContext[int, int]) -> None:
            self.total += n
            if n > 1:
                await ctx.send_message(n - 1)
            else:
                await ctx.yield_output(self.total)

        def snapshot(self) -> int:
            return self.total

        def restore(self, snapshot: int) -> None:
            self.total = snapshot

    def tallying() -> sg.Workflow:
        return (
            sg.WorkflowBuilder(start="tally", checkpoints=store)
            .register("tally", Tally)
            .add_edge("tally", "tally")
            .build()
        )

    first, second = await asyncio.gather(tallying().run(4), tallying().run(5))
    assert (first.outputs, second.outputs) == ([10], [15])
    # Resume each from the middle: its own total comes back, not the other's.
    for result, expected in ((first, 10), (second, 15)):
        middle = (await store.list(result.run_id))[2]
        resumed = await tallying().run(checkpoint=middle.id)
        assert resumed.outputs == [expected]


def test_register_checks_its_factory() -> None:
    class Named(sg.Executor):
        @sg.handler
        async def on(self, n: int) -> None: ...

    builder = sg.WorkflowBuilder(start="a")
    with pytest.raises(sg.WorkflowDefinitionError, match=r"made an executor with id 'other'"):
        builder.register("a", lambda: Named("other"))
    with pytest.raises(sg.WorkflowDefinitionError, match="not .*Named.*an instance is shared"):
        builder.register("a", Named("a"))  # type: ignore[arg-type]
    with pytest.raises(sg.WorkflowDefinitionError, match="raised ZeroDivisionError"):
        builder.register("a", lambda: 1 // 0)  # type: ignore[arg-type, return-value]
    with pytest.raises(
        sg.WorkflowDefinitionError, match="the start executor 'a' is not registered"
    ):
        builder.build()
    builder.register("a", Named)
    with pytest.raises(sg.WorkflowDefinitionError, match="'a' is already registered"):
        builder.register("a", Named)
    with pytest.raises(sg.WorkflowDefinitionError, match="registered as a factory and used"):
        builder.add_edge("a", Named("a")).build()


async def test_a_shared_instance_keeps_one_run_at_a_time_and_its_attributes() -> None:
    gate = asyncio.Event()

    class Count(sg.Executor):
        def __init__(self) -> None:
            super().__init__("count")
            self.runs = 0

        @sg.handler
        async def on(self, n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
            self.runs += 1
            await gate.wait()
            await ctx.yield_output(self.runs)

    shared = sg.WorkflowBuilder(start=Count()).build()
    assert not shared.concurrent
    first = asyncio.create_task(shared.run(1))
    await asyncio.sleep(0)
    with pytest.raises(sg.WorkflowBusyError):
        await shared.run(2)
    gate.set()
    assert (await first).outputs == [1]
    assert (await shared.run(3)).outputs == [2]  # the attribute carried over: shared


async def test_a_sub_workflow_of_shared_instances_is_not_concurrent_even_per_run() -> None:
    calls: list[str] = []

    class Slow(sg.Executor):
        @sg.handler
        async def on(self, text: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
            calls.append(text)
            await asyncio.sleep(0.05)
            await ctx.yield_output(text)

    def parent_of(child: sg.Workflow) -> sg.Workflow:
        return (
            sg.WorkflowBuilder(start="sub")
            .register("sub", lambda: sg.WorkflowExecutor(child, id="sub", forward_outputs=True))
            .build()
        )

    shared = parent_of(sg.WorkflowBuilder(start=Slow("slow"), name="shared-child").build())
    assert not shared.concurrent  # (its runs would meet in the child's shared instance)
    results = await asyncio.gather(*(shared.run(f"r{i}") for i in range(3)), return_exceptions=True)
    # Refused at once, as a workflow of shared instances is: nothing of them ran.
    busy = [r for r in results if isinstance(r, sg.WorkflowBusyError)]
    assert len(busy) == 2 and calls == ["r0"], results
    assert "factory 'sub' makes runs sub-workflow 'shared-child'" in str(busy[0])
    assert "('slow')" in str(busy[0])
    # A factory that builds the child at each call runs its runs at once.
    fresh = (
        sg.WorkflowBuilder(start="sub")
        .register(
            "sub",
            lambda: sg.WorkflowExecutor(
                sg.WorkflowBuilder(start=Slow("slow")).build(), id="sub", forward_outputs=True
            ),
        )
        .build()
    )
    assert fresh.concurrent
    results = await asyncio.gather(*(fresh.run(f"f{i}") for i in range(3)))
    assert [r.outputs for r in results] == [["f0"], ["f1"], ["f2"]]
    own = parent_of(
        sg.WorkflowBuilder(start="slow", name="own-child")
        .register("slow", lambda: Slow("slow"))
        .build()
    )
    assert own.concurrent
    results = await asyncio.gather(*(own.run(f"r{i}") for i in range(3)))
    assert [r.outputs for r in results] == [["r0"], ["r1"], ["r2"]]


async def test_a_child_built_per_call_around_a_shared_grandchild_is_not_concurrent() -> None:
    # The factory builds its child at each call, but every child runs one
    # grandchild workflow built once (of shared instances): 'concurrent' said
    # True, and a second concurrent run failed mid-run in the grandchild
    # (a SubworkflowError after its first supersteps) instead of being
    # refused at once.
    calls: list[str] = []
    gate = asyncio.Event()

    class Held(sg.Executor):
        @sg.handler
        async def on(self, text: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
            calls.append(text)
            await gate.wait()
            await ctx.yield_output(text)

    grandchild = sg.WorkflowBuilder(start=Held("held"), name="grandchild").build()

    def make() -> sg.WorkflowExecutor:
        child = sg.WorkflowBuilder(
            start=sg.WorkflowExecutor(grandchild, id="g", forward_outputs=True), name="child"
        ).build()
        return sg.WorkflowExecutor(child, id="sub", forward_outputs=True)

    parent = sg.WorkflowBuilder(start="sub").register("sub", make).build()
    assert not parent.concurrent

    async def open_gate() -> None:
        while not calls:
            await asyncio.sleep(0)
        gate.set()

    *results, _ = await asyncio.gather(
        *(parent.run(f"r{i}") for i in range(3)), open_gate(), return_exceptions=True
    )
    busy = [r for r in results if isinstance(r, sg.WorkflowBusyError)]
    assert len(busy) == 2 and calls == ["r0"], results
    assert "factory 'sub' makes runs a sub-workflow that uses the executor instance at " in str(
        busy[0]
    )
    assert "'sub/g/held'" in str(busy[0])
    [done] = [r for r in results if isinstance(r, sg.RunResult)]
    assert done.outputs == ["r0"]


async def test_context_reaches_sub_workflows_and_is_not_checkpointed(
    store: sg.CheckpointStore,
) -> None:
    @sg.executor(id="inner")
    async def inner(text: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.yield_output(f"{text} for {ctx.context}")

    child = sg.WorkflowBuilder(start=inner, name="child").build()

    def parent() -> sg.Workflow:
        return (
            sg.WorkflowBuilder(start="sub", checkpoints=store)
            .register("sub", lambda: sg.WorkflowExecutor(child, id="sub", forward_outputs=True))
            .build()
        )

    result = await parent().run("hello", context="ann")
    assert result.outputs == ["hello for ann"]
    entry = (await store.list(result.run_id))[0]
    again = await parent().run(checkpoint=entry.id, context="bob")
    assert again.outputs == ["hello for bob"]


def test_a_factory_that_hands_out_one_instance_again_is_refused() -> None:
    class Keeper(sg.Executor):
        @sg.handler
        async def on(self, n: int) -> None: ...

    shared = Keeper("k")
    with pytest.raises(sg.WorkflowDefinitionError, match="returned before"):
        sg.WorkflowBuilder(start="k").register("k", lambda: shared).register("k2", lambda: shared)


async def test_a_shared_instance_from_a_factory_fails_the_second_run() -> None:
    class Keeper(sg.Executor):
        @sg.handler
        async def on(self, n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
            await ctx.yield_output(n)

    made: list[Keeper] = []

    def once() -> Keeper:  # a new one for the prototype, then the same one
        if len(made) < 2:
            made.append(Keeper("k"))
        return made[-1]

    workflow = sg.WorkflowBuilder(start="k").register("k", once).build()
    assert (await workflow.run(1)).outputs == [1]
    with pytest.raises(sg.WorkflowRunError, match="returned an executor it returned before"):
        await workflow.run(2)


async def test_a_factory_failing_in_a_run_fails_like_a_handler() -> None:
    class Keeper(sg.Executor):
        @sg.handler
        async def on(self, n: int) -> None: ...

    calls: list[int] = []

    def flaky() -> Keeper:
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("db down")
        return Keeper("k")

    workflow = sg.WorkflowBuilder(start="k").register("k", flaky).build()
    with pytest.raises(sg.WorkflowRunError) as raised:
        await workflow.run(1)
    assert str(raised.value) == (
        "executor 'k' failed in superstep 1: RuntimeError: db down "
        "(raised by the factory of executor 'k')"
    )
    assert isinstance(raised.value.__cause__, RuntimeError)


async def test_an_answer_to_an_id_open_in_two_runs_in_memory_asks_which_run() -> None:
    class Answered(sg.Executor):
        @sg.handler
        async def on(self, text: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
            await ctx.request_info(text, bool, request_id="ok")

        @sg.response_handler
        async def answered(self, q: str, ok: bool, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
            await ctx.yield_output(f"{q} {ok}")

    workflow = sg.WorkflowBuilder(start="gate").register("gate", Answered).build()
    assert workflow.concurrent
    await asyncio.gather(workflow.run("a"), workflow.run("b"))
    with pytest.raises(sg.RequestError, match=r"request id 'ok' is open in several runs \("):
        await workflow.run(responses={"ok": True})


@dataclass(frozen=True)
class Question:
    n: int


class Asking(sg.Executor):
    """Asks for a number, yields what it was told."""

    @sg.handler
    async def on(self, n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        await ctx.request_info(Question(n), int)

    @sg.response_handler
    async def told(
        self, asked: Question, answer: int, ctx: sg.WorkflowContext[sg.Never, int]
    ) -> None:
        await ctx.yield_output(asked.n * 1000 + answer)


def test_runs_waiting_in_memory_are_answered_from_several_threads_at_once() -> None:
    """Each thread runs its own event loop; all start and answer runs of the
    one workflow, in memory, at once."""
    workflow = sg.WorkflowBuilder(start="asking").register("asking", Asking).build()
    failures: list[BaseException] = []

    def serve(seed: int) -> None:
        async def main() -> None:
            waiting = await asyncio.gather(*[workflow.run(seed) for _ in range(100)])
            for result in waiting:
                [asked] = result.pending_requests
                done = await workflow.run(responses={asked.request_id: 7})
                assert done.outputs == [seed * 1000 + 7] and done.run_id == result.run_id

        try:
            asyncio.run(main())
        except BaseException as exc:
            failures.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # (threads switch often: races show at once)
    try:
        threads = [threading.Thread(target=serve, args=(seed,)) for seed in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert failures == []
    assert workflow.pending_requests == []
