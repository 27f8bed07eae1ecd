"""Looking inside checkpoints and forking edited ones (``get_state`` /
``update_state``): decoded by the safe codec, checked against the graph, the
original never changed."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

import stepgraph as sg

from . import subflows


@dataclass(frozen=True)
class Order:
    item: str
    quantity: int


class Clerk(sg.Executor):
    def __init__(self) -> None:
        super().__init__("clerk")
        self.orders = 0

    @sg.handler
    async def take(self, order: Order, ctx: sg.WorkflowContext[Order]) -> None:
        self.orders += 1
        ctx.state.set("last", order.item)
        await ctx.send_message(order)

    def snapshot(self) -> int:
        return self.orders

    def restore(self, snapshot: int) -> None:
        self.orders = snapshot


class Cashier(sg.Executor):
    @sg.handler
    async def price(self, order: Order, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.request_info(order, bool)

    @sg.response_handler
    async def paid(self, order: Order, ok: bool, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        total = f"{order.quantity} x {order.item}"
        await ctx.yield_output(f"{total} for {ctx.state.get('customer', 'someone')}: {ok}")


def build(store: sg.CheckpointStore) -> sg.Workflow:
    return (
        sg.WorkflowBuilder(start=Clerk(), checkpoints=store, name="shop")
        .add_edge("clerk", Cashier("cashier"))
        .build()
    )


async def test_get_state_decodes_a_checkpoint_without_touching_executors(
    store: sg.CheckpointStore,
) -> None:
    workflow = build(store)
    result = await workflow.run(Order("pen", 2))
    infos = await store.list(result.run_id)
    clerk = workflow.executors["clerk"]
    assert clerk.orders == 1  # type: ignore[attr-defined]
    after_clerk = await build(store).get_state(infos[1].id)
    assert after_clerk.state == {"last": "pen"}
    assert after_clerk.messages == {"cashier": [Order("pen", 2)]}
    assert after_clerk.snapshots == {"clerk": 1} and after_clerk.requests == []
    waiting = await workflow.get_state(result.last_checkpoint or "")
    [request] = waiting.requests
    assert (request.request, request.response_type) == (Order("pen", 2), bool)
    assert waiting.status == "idle_with_pending_requests" and waiting.parent_id == infos[1].id
    assert clerk.orders == 1  # type: ignore[attr-defined]  # no restore() called


async def test_update_state_forks_with_lineage_and_goes_on(store: sg.CheckpointStore) -> None:
    result = await build(store).run(Order("pen", 2))
    infos = await store.list(result.run_id)
    before = await store.load(infos[1].id)
    fork = await build(store).update_state(
        infos[1].id,
        state={"customer": "ann"},
        messages={"cashier": [Order("ink", 5)]},
    )
    assert (await store.load(infos[1].id)).body == before.body  # the original is untouched
    forked = await build(store).get_state(fork)
    assert forked.parent_id == infos[1].id and forked.run_id == result.run_id
    assert forked.messages == {"cashier": [Order("ink", 5)]}
    assert forked.state == {"last": "pen", "customer": "ann"}
    assert forked.snapshots == {"clerk": 1}  # carried over as stored
    asked = await build(store).run(checkpoint=fork)
    [request] = asked.pending_requests
    done = await build(store).run(
        checkpoint=asked.last_checkpoint, responses={request.request_id: True}
    )
    assert done.outputs == ["5 x ink for ann: True"]
    # The original branch still resumes as it was.
    original = await build(store).run(checkpoint=infos[1].id)
    assert original.pending_requests[0].request == Order("pen", 2)


async def test_update_state_drops_requests(store: sg.CheckpointStore) -> None:
    result = await build(store).run(Order("pen", 2))
    [request] = result.pending_requests
    fork = await build(store).update_state(
        result.last_checkpoint or "", drop_requests=[request.request_id]
    )
    state = await build(store).get_state(fork)
    assert state.requests == [] and state.status == "idle"
    with pytest.raises(sg.RequestError, match="is not open"):
        await build(store).update_state(fork, drop_requests=[request.request_id])


async def test_update_state_checks_edits_against_the_graph(store: sg.CheckpointStore) -> None:
    result = await build(store).run(Order("pen", 2))
    checkpoint = result.last_checkpoint or ""
    workflow = build(store)
    with pytest.raises(sg.MessageTypeError, match="executor 'cashier' has no handler for a str"):
        await workflow.update_state(checkpoint, messages={"cashier": ["not an order"]})
    with pytest.raises(sg.MessageTypeError, match=r"'cashier' has no handler for a list\[int\]"):
        await workflow.update_state(checkpoint, messages={"cashier": [[1, 2]]})
    with pytest.raises(sg.MessageTypeError, match="for 'cashier' is None; None is never a message"):
        await workflow.update_state(checkpoint, messages={"cashier": [None]})
    with pytest.raises(sg.MessageTypeError, match="'nobody' is not an executor"):
        await workflow.update_state(checkpoint, messages={"nobody": [1]})
    with pytest.raises(sg.CheckpointEncodeError, match=r"state\['bad'\]"):
        await workflow.update_state(checkpoint, state={"bad": object()})
    assert len(await store.list(result.run_id)) == 3  # nothing written by the refused edits
    with pytest.raises(sg.CheckpointError, match="has no checkpoint store"):
        await sg.WorkflowBuilder(start=Clerk()).build().get_state(checkpoint)


async def test_update_state_is_refused_while_the_run_goes_on(store: sg.CheckpointStore) -> None:
    """Editing a run that another call is continuing would write into a run
    someone else holds: refused, naming it, and nothing is written."""
    gate = asyncio.Event()

    @sg.executor(id="slow")
    async def slow(n: int, ctx: sg.WorkflowContext[int]) -> None:
        if n == 1:
            await gate.wait()
        if n < 3:
            await ctx.send_message(n + 1)

    def counting() -> sg.Workflow:
        return (
            sg.WorkflowBuilder(start=slow, checkpoints=store, name="slow")
            .add_edge(slow, slow)
            .build()
        )

    task = asyncio.create_task(counting().run(0))
    for _ in range(500):  # until its checkpoint before the held superstep is stored
        await asyncio.sleep(0.01)
        runs = await store.runs(workflow="slow")
        if runs and runs[0].superstep >= 1:
            break
    [info] = await store.runs(workflow="slow")
    checkpoints = await store.list(info.run_id)
    with pytest.raises(sg.CheckpointError, match=f"run '{info.run_id}' is being continued"):
        await counting().update_state(checkpoints[-1].id, state={"edited": True})
    assert len(await store.list(info.run_id)) == len(checkpoints)
    gate.set()
    done = await task
    # Once it stopped, the same edit is written (a branch of the run).
    fork = await counting().update_state(done.last_checkpoint or "", state={"edited": True})
    assert (await counting().get_state(fork)).state == {"edited": True}


class KeepingAsker(subflows.Asker):
    """A child executor keeping state (one instance for every child run)."""

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.asked = 0

    @sg.handler
    async def on(self, text: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        self.asked += 1
        await super().on(text, ctx)

    def snapshot(self) -> int:
        return self.asked

    def restore(self, snapshot: int) -> None:
        self.asked = snapshot


def asking_parent(
    store: sg.CheckpointStore, levels: int, child: sg.Workflow | None = None
) -> sg.Workflow:
    """``child`` (by default: one KeepingAsker) ``levels`` sub-workflows down."""
    if child is None:
        child = sg.WorkflowBuilder(start=KeepingAsker("asker"), name="child").build()
    for level in range(1, levels):
        wrapped = sg.WorkflowExecutor(child, id=f"level{level}", forward_outputs=True)
        child = sg.WorkflowBuilder(start=wrapped, name=f"level{level}").build()
    sub = sg.WorkflowExecutor(child, id="sub")
    return (
        sg.WorkflowBuilder(start=sub, checkpoints=store, name="parent")
        .add_edge(sub, subflows.collect)
        .build()
    )


@pytest.mark.parametrize("levels", [1, 3])
async def test_dropping_a_sub_workflow_request_ends_the_child_run_waiting_for_it(
    store: sg.CheckpointStore, levels: int
) -> None:
    first = await asking_parent(store, levels).run("draft")
    [request] = first.pending_requests
    # Dropped, with a new input for the sub-workflow in its place.
    fork = await asking_parent(store, levels).update_state(
        first.last_checkpoint or "", drop_requests=[request.request_id], messages={"sub": ["v2"]}
    )
    state = await asking_parent(store, levels).get_state(fork)
    assert state.requests == [] and state.snapshots["sub"]["runs"] == {}
    assert state.snapshots["sub"]["routes"] == {}
    # The child run waiting for it is gone: the next one starts (its executor
    # keeps state, so it was refused while one of this run waited) and is the
    # only one stored, its request the only one open.
    again = await asking_parent(store, levels).run(checkpoint=fork)
    [asked] = again.pending_requests
    assert asked.request == subflows.Question("accept v2?")
    stored = await asking_parent(store, levels).get_state(again.last_checkpoint or "")
    assert len(stored.snapshots["sub"]["runs"]) == 1
    done = await asking_parent(store, levels).run(
        checkpoint=again.last_checkpoint, responses={asked.request_id: True}
    )
    assert done.outputs == ["v2 accepted"]
    final = await asking_parent(store, levels).get_state(done.last_checkpoint or "")
    assert final.snapshots["sub"]["runs"] == {}


@pytest.mark.parametrize("levels", [1, 3])
async def test_dropping_one_of_a_child_runs_requests_keeps_it_waiting_for_the_other(
    store: sg.CheckpointStore, levels: int
) -> None:
    @sg.executor(id="both")
    async def both(text: str, ctx: sg.WorkflowContext[str]) -> None:
        await ctx.send_message(text)

    def build_parent() -> sg.Workflow:
        child = (
            sg.WorkflowBuilder(start=both, name="child")
            .add_fan_out(both, [subflows.Asker("left"), subflows.Asker("right")])
            .build()
        )
        return asking_parent(store, levels, child)

    first = await build_parent().run("plan")
    dropped, kept = first.pending_requests
    fork = await build_parent().update_state(
        first.last_checkpoint or "", drop_requests=[dropped.request_id]
    )
    forked = await build_parent().get_state(fork)
    assert [r.request_id for r in forked.requests] == [kept.request_id]
    # Every level down keeps the route of the other request only.
    snapshot, routes = forked.snapshots["sub"], [len(forked.snapshots["sub"]["routes"])]
    for level in range(levels - 1, 0, -1):  # (the outermost wraps the highest level)
        [child_run] = snapshot["runs"].values()
        snapshot = child_run["snapshots"][f"level{level}"]
        routes.append(len(snapshot["routes"]))
    assert routes == [1] * levels
    done = await build_parent().run(checkpoint=fork, responses={kept.request_id: True})
    assert done.outputs == ["plan accepted"] and done.pending_requests == []
    # Every level forgot the dropped request: the child run ended with the answer.
    final = await build_parent().get_state(done.last_checkpoint or "")
    assert final.snapshots["sub"]["runs"] == {}


async def test_get_and_update_state_refuse_arguments_of_the_wrong_type_naming_them() -> None:
    # (get_state(123) failed with "'int' object has no attribute 'isascii'",
    # state=[...] with "'list' object has no attribute 'items'", and
    # drop_requests="abc" dropped request 'a')
    store = sg.MemoryCheckpointStore()
    workflow = build(store)
    result = await workflow.run(Order("tea", 2))
    cp = result.last_checkpoint
    assert cp is not None
    with pytest.raises(
        sg.CheckpointError, match="checkpoint= takes a checkpoint id, a string: 123"
    ):
        await workflow.get_state(123)  # type: ignore[arg-type]
    with pytest.raises(sg.CheckpointError, match="a checkpoint id, a string: 123 is an int"):
        await workflow.update_state(123)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="state= maps keys to values, not a list"):
        await workflow.update_state(cp, state=[1])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="messages= maps executor ids to lists of messages"):
        await workflow.update_state(cp, messages=[Order("tea", 1)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="state= maps keys, which are strings.*: 1 is an int"):
        await workflow.update_state(cp, state={1: "x"})  # type: ignore[dict-item]
    for wrong in ("abc", 5):
        with pytest.raises(TypeError, match="drop_requests= takes a list of request ids, not"):
            await workflow.update_state(cp, drop_requests=wrong)  # type: ignore[arg-type]
    with pytest.raises(sg.RequestError, match="drop_requests= lists request ids.*: 5 is an int"):
        await workflow.update_state(cp, drop_requests=[5])  # type: ignore[list-item]
    assert [c.id for c in await store.list(result.run_id)][-1] == cp  # (nothing written)
