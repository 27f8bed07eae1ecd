"""WorkflowContext: declared-type checks (warning, or error when strict),
event rules, output designation."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

import stepgraph as sg
from tests.conftest import warnings


@sg.executor(id="sink")
async def sink(m: Any, ctx: sg.WorkflowContext[sg.Never, Any]) -> None:
    await ctx.yield_output(m)


@sg.executor(id="liar")
async def liar(n: int, ctx: sg.WorkflowContext[int, int]) -> None:
    await ctx.send_message("not an int")  # type: ignore[arg-type]
    await ctx.yield_output("not an int either")  # type: ignore[arg-type]


async def test_contradicting_declared_types_warns() -> None:
    result = await sg.WorkflowBuilder(start=liar).add_edge(liar, sink).build().run(1)
    sent, yielded = warnings(result.events)
    assert sent == "executor 'liar' sent a str, which is not among its declared output types: int"
    assert yielded == (
        "executor 'liar' yielded a str, which is not among its declared workflow output types: int"
    )
    # Non-strict: still delivered and still an output.
    assert sorted(result.outputs) == ["not an int", "not an int either"]


async def test_a_container_of_the_wrong_elements_says_what_it_holds() -> None:
    @sg.executor(id="lists")
    async def lists(n: int, ctx: sg.WorkflowContext[list[int]]) -> None:
        await ctx.send_message([1, "x", 2.5])  # type: ignore[list-item]

    @sg.executor(id="ints")
    async def ints(values: list[int], ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        await ctx.yield_output(sum(values))

    result = await sg.WorkflowBuilder(start=lists).add_edge(lists, ints).build().run(1)
    declared, undelivered = warnings(result.events)
    assert declared.endswith(
        "sent a list[int | str | float], which is not among its declared output types: list[int]"
    )
    assert undelivered.startswith("a list[int | str | float] sent by 'lists' in superstep 1")
    from stepgraph._core._typing import a_value_type

    assert a_value_type([]) == "an empty list"
    assert a_value_type({"a": 1, "b": "x"}) == "a dict[str, int | str]"
    assert a_value_type((0, 1, 2, "a", b"", None, 1.0)) == (
        "a tuple[int | str | bytes | None | ...]"
    )
    assert a_value_type(3) == "an int"


async def test_contradicting_declared_types_fails_when_strict() -> None:
    workflow = sg.WorkflowBuilder(start=liar, strict=True).add_edge(liar, sink).build()
    with pytest.raises(sg.WorkflowRunError) as raised:
        await workflow.run(1)
    assert isinstance(raised.value.__cause__, sg.MessageTypeError)
    assert "'liar'" in str(raised.value) and "sent a str" in str(raised.value)


async def test_bare_context_declares_nothing() -> None:
    @sg.executor(id="quiet")
    async def quiet(n: int, ctx: sg.WorkflowContext) -> None:
        await ctx.yield_output(n)  # type: ignore[arg-type]

    result = await sg.WorkflowBuilder(start=quiet).build().run(1)
    assert "declared workflow output types: none (Never)" in warnings(result.events)[0]


async def test_sending_none_is_an_error() -> None:
    @sg.executor(id="nothing")
    async def nothing(n: int, ctx: sg.WorkflowContext[Any]) -> None:
        await ctx.send_message(None)

    with pytest.raises(sg.WorkflowRunError, match="'nothing' sent None"):
        await sg.WorkflowBuilder(start=nothing).build().run(1)


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress(sg.Event):
    kind: ClassVar[str] = "progress"
    fraction: float


async def test_user_events_are_stamped_and_streamed() -> None:
    @sg.executor(id="worker")
    async def worker(n: int, ctx: sg.WorkflowContext) -> None:
        await ctx.add_event(Progress(fraction=0.5))
        await ctx.add_event(sg.UserEvent(kind="note", data={"n": n}))

    result = await sg.WorkflowBuilder(start=worker).build().run(1)
    custom = [e for e in result.events if e.kind in ("progress", "note")]
    assert custom == [
        Progress(fraction=0.5, executor_id="worker", superstep=1),
        sg.UserEvent(kind="note", data={"n": 1}, executor_id="worker", superstep=1),
    ]


@pytest.mark.parametrize(
    "event",
    [
        sg.OutputEvent(data=1),
        sg.StatusEvent(status=sg.RunStatus.IDLE),
        sg.FailedEvent(error="x"),
        sg.UserEvent(kind="output"),
        sg.UserEvent(kind="status"),
        sg.Event(),
        "not an event",
    ],
)
async def test_framework_events_are_rejected(event: Any) -> None:
    @sg.executor(id="forger")
    async def forger(n: int, ctx: sg.WorkflowContext) -> None:
        await ctx.add_event(event)

    with pytest.raises(sg.WorkflowRunError) as raised:
        await sg.WorkflowBuilder(start=forger).build().run(1)
    assert isinstance(raised.value.__cause__, sg.EventError)
    assert "'forger'" in str(raised.value)


async def test_output_from_limits_outputs_and_reports_others() -> None:
    @sg.executor(id="first")
    async def first(n: int, ctx: sg.WorkflowContext[int, int]) -> None:
        await ctx.yield_output(-n)
        await ctx.send_message(n)

    @sg.executor(id="final")
    async def final(n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        await ctx.yield_output(n)

    workflow = sg.WorkflowBuilder(start=first, output_from=[final]).add_edge(first, final).build()
    result = await workflow.run(3)
    assert result.outputs == [3]
    assert (
        "'first' yielded an output but is not one of the workflow's output executors"
        in (warnings(result.events)[0])
    )


async def test_context_properties_and_use_after_the_call() -> None:
    kept: list[sg.WorkflowContext[Any, Any]] = []

    @sg.executor(id="peek")
    async def peek(n: int, ctx: sg.WorkflowContext[sg.Never, Any]) -> None:
        kept.append(ctx)
        await ctx.yield_output((ctx.executor_id, ctx.superstep, len(ctx.run_id)))

    result = await sg.WorkflowBuilder(start=peek).build().run(1)
    assert result.outputs == [("peek", 1, 32)]
    assert len(result.run_id) == 32
    with pytest.raises(RuntimeError, match="used after its handler call ended"):
        kept[0].send_message(1)


async def test_outputs_are_emitted_when_the_call_returns() -> None:
    gate = asyncio.Event()
    seen: list[str] = []

    @sg.executor(id="slow")
    async def slow(n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        await ctx.yield_output(n)
        await gate.wait()

    workflow = sg.WorkflowBuilder(start=slow).build()

    async def consume() -> None:
        async for event in workflow.stream(1):
            seen.append(event.kind)

    task = asyncio.create_task(consume())
    for _ in range(20):
        await asyncio.sleep(0)
    assert "executor_invoked" in seen and "output" not in seen
    gate.set()
    await task
    assert seen.index("output") < seen.index("executor_completed")


async def test_an_abandoned_sync_call_changes_nothing_beside_its_retry() -> None:
    # A sync call that times out runs on in its thread. Its retry shares the
    # executor's outbox for the superstep: the abandoned call's late sends,
    # yields and state writes used to land there and be committed with the
    # retry's (guarantees §6: its context refuses further use).
    retry_started, abandoned_done = threading.Event(), threading.Event()
    late: list[str] = []
    attempts: list[int] = []

    @sg.executor(id="slow", timeout=0.2, retry=sg.RetryPolicy(attempts=2))
    def slow(n: int, ctx: sg.WorkflowContext[int, str]) -> None:
        attempts.append(n)
        if len(attempts) == 1:
            retry_started.wait(10)  # times out meanwhile; the retry runs
            for use in (
                lambda: ctx.send_message(999),
                lambda: ctx.yield_output("late"),
                lambda: ctx.state.set("k", "late"),
                lambda: ctx.state.delete("k"),
            ):
                try:
                    use()
                    late.append("accepted")
                except RuntimeError as error:
                    late.append(str(error))
            abandoned_done.set()
            return
        retry_started.set()
        abandoned_done.wait(10)  # the abandoned call has tried everything
        ctx.state.set("k", "retry")
        ctx.send_message(n)

    @sg.executor(id="show")
    async def show(n: int, ctx: sg.WorkflowContext[sg.Never, Any]) -> None:
        await ctx.yield_output((n, ctx.state.get("k")))

    result = await sg.WorkflowBuilder(start=slow).add_edge(slow, show).build().run(1)
    assert result.outputs == [(1, "retry")]
    assert (
        late
        == ["the context of executor 'slow' (superstep 1) was used after its handler call ended"]
        * 4
    )


class _PaidOnce(sg.Executor):
    """Makes a paid call once per message, saving its progress right after."""

    calls: ClassVar[list[int]] = []

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.paid: list[int] = []
        self.fail = True

    def snapshot(self) -> Any:
        return {"paid": list(self.paid)}

    def restore(self, snapshot: Any) -> None:
        self.paid = list(snapshot["paid"])

    @sg.handler
    def on(self, n: int, ctx: sg.WorkflowContext[sg.Never, list[int]]) -> None:
        if n not in self.paid:
            self.paid.append(n)
            _PaidOnce.calls.append(n)  # the paid call
            assert ctx.save_progress() is not None  # the thread waits: saved on return
        if self.fail:
            raise RuntimeError("the process dies here")
        ctx.yield_output(list(self.paid))


async def test_a_sync_handler_saves_its_progress() -> None:
    # save_progress was a coroutine function: a sync handler calling it got a
    # coroutine that never ran, and no progress was saved.
    store = sg.MemoryCheckpointStore()
    executor = _PaidOnce("paid")
    workflow = sg.WorkflowBuilder(start=executor, checkpoints=store).build()
    with pytest.raises(sg.WorkflowRunError):
        await workflow.run(7)
    [entry, progress] = sorted(await store.list(), key=lambda c: c.created_at)
    assert progress.parent_id == entry.id  # the run as at its entry, with the snapshot
    state = await workflow.get_state(progress.id)
    assert state.snapshots == {"paid": {"paid": [7]}} and state.messages == {"paid": [7]}
    executor.paid, executor.fail = [], False  # a fresh process would know nothing
    result = await workflow.run(checkpoint=progress.id)
    assert result.outputs == [[7]]
    assert _PaidOnce.calls == [7]  # restored from the save: the call was not made again


async def test_a_sync_handlers_save_under_way_ends_with_its_cancelled_run() -> None:
    # A sync handler's save ran on the loop as a task of its own: cancelling
    # the run left it going, and it wrote a checkpoint after the run had
    # ended (its lease given back) while the abandoned thread was told
    # 'saved'. An async handler's awaited save is cancelled with it.
    class HeldStore(sg.MemoryCheckpointStore):
        def __init__(self) -> None:
            super().__init__()
            self.held = asyncio.Event()
            self.gate = asyncio.Event()
            self.cancelled = asyncio.Event()

        async def save(self, *checkpoints: sg.Checkpoint) -> None:
            if not self.held.is_set() and await self.list():  # the progress save
                self.held.set()
                try:
                    await self.gate.wait()
                except asyncio.CancelledError:
                    self.cancelled.set()
                    raise
            await super().save(*checkpoints)

    told: list[str] = []
    thread_done = threading.Event()

    class Saver(sg.Executor):
        def snapshot(self) -> Any:
            return 1

        def restore(self, snapshot: Any) -> None:
            pass

        @sg.handler
        def on(self, n: int, ctx: sg.WorkflowContext) -> None:
            try:
                ctx.save_progress()
                told.append("saved")
            except Exception as error:
                told.append(str(error))
            thread_done.set()

    store = HeldStore()
    workflow = sg.WorkflowBuilder(start=Saver("saver"), checkpoints=store).build()
    run = asyncio.create_task(workflow.run(1))
    await store.held.wait()
    [entry] = await store.list()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    await asyncio.wait_for(store.cancelled.wait(), 30)  # (hangs only when it is not)
    store.gate.set()
    assert await asyncio.to_thread(thread_done.wait, 30)
    assert [c.id for c in await store.list()] == [entry.id]  # nothing written after the run
    assert told == [
        "the context of executor 'saver' (superstep 1) was used after its handler call ended"
    ]


async def test_a_handler_returning_what_a_ctx_method_returned() -> None:
    # 'return ctx.send_message(x)' sent x, then the call's own done-marker (a
    # _Done object) downstream as a second message; in a sync handler it, and
    # 'return ctx.request_info(...)' (a str: the request's id), failed the run
    # with 'returned _Done/RequestId; define it with async def'.
    class Sends(sg.Executor):
        @sg.handler
        async def on_async(self, q: str, ctx: sg.WorkflowContext[str]) -> None:
            return ctx.send_message(f"async {q}")

        @sg.handler
        def on_sync(self, n: int, ctx: sg.WorkflowContext[str]) -> None:
            return ctx.send_message(f"sync {n}")

    class Asks(sg.Executor):
        @sg.handler
        def ask(self, q: str, ctx: sg.WorkflowContext[str]) -> str:
            return ctx.request_info(q, str, request_id="asked")

        @sg.response_handler
        def answered(self, q: str, a: str, ctx: sg.WorkflowContext[str]) -> None:
            pass

    @sg.executor(id="fan")
    async def fan(n: int, ctx: sg.WorkflowContext[str | int]) -> None:
        await ctx.send_message("a")
        await ctx.send_message(n)

    got: list[Any] = []

    @sg.executor(id="seen")
    async def seen(m: str, ctx: sg.WorkflowContext[sg.Never, Any]) -> None:
        got.append(m)

    sends = Sends("sends")
    result = await (
        sg.WorkflowBuilder(start=fan, strict=True)
        .add_edge(fan, sends)
        .add_edge(sends, seen)
        .build()
        .run(1)
    )
    assert result.status is sg.RunStatus.IDLE
    assert sorted(got) == ["async a", "sync 1"]
    got.clear()
    asks = Asks("asks")
    result = await sg.WorkflowBuilder(start=asks).add_edge(asks, seen).build().run("why?")
    assert result.status is sg.RunStatus.IDLE_WITH_PENDING_REQUESTS
    assert got == ["asked"]
