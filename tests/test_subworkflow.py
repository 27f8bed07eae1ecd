"""Sub-workflows (design §6): outputs, live events, requests, checkpoints,
failures, nesting, isolation, concurrency."""

from __future__ import annotations

import asyncio
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import stepgraph as sg
from tests import subflows
from tests.conftest import run_script, warnings
from tests.subflows import Question


async def test_child_outputs_become_messages() -> None:
    result = await subflows.with_child(subflows.shouting_child()).run("hi")
    assert result.outputs == ["HI"]
    child_outputs = [e for e in result.events if isinstance(e, sg.OutputEvent) and e.workflow_path]
    assert [(e.path, e.data) for e in child_outputs] == [("sub/shout-exec", "HI")]


async def test_forwarded_outputs_are_parent_outputs() -> None:
    sub = sg.WorkflowExecutor(subflows.shouting_child(), id="sub", forward_outputs=True)
    result = await sg.WorkflowBuilder(start=sub).build().run("hey")
    assert result.outputs == ["HEY"]


async def test_child_events_stream_live() -> None:
    gate = asyncio.Event()

    @sg.executor(id="slow")
    async def slow(text: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.add_event(sg.UserEvent(kind="child_started", data=text))
        await asyncio.wait_for(gate.wait(), timeout=5)  # released only by the caller
        await ctx.yield_output(text)

    child = sg.WorkflowBuilder(start=slow, name="child").build()
    seen: list[str] = []
    async for event in subflows.with_child(child).stream("x"):
        seen.append(f"{event.kind}@{event.path}")
        if event.kind == "child_started":
            assert event.workflow_path == ("sub",) and event.path == "sub/slow"
            gate.set()
    assert seen.index("child_started@sub/slow") < seen.index("output@sub/slow")
    assert seen[-1] == "status@"


async def test_child_request_bubbles_to_the_caller() -> None:
    workflow = subflows.with_child(subflows.asking_child())
    result = await workflow.run("plan")
    assert result.status is sg.RunStatus.IDLE_WITH_PENDING_REQUESTS
    [pending] = result.pending_requests
    assert pending.request_id.startswith("sub/") and pending.executor_id == "sub"
    assert pending.request == Question("accept plan?")
    done = await workflow.run(responses={pending.request_id: True})
    assert done.outputs == ["plan accepted"]
    assert done.status is sg.RunStatus.IDLE


class _Stalling(sg.Executor):
    """Asks for its message; the first answer it gets stalls until cancelled."""

    def __init__(self, stalled: asyncio.Event) -> None:
        super().__init__("asker")
        self.stalled = stalled
        self.answers: list[int] = []

    @sg.handler
    async def ask(self, n: int, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.request_info(Question(str(n)), int)

    @sg.response_handler
    async def answered(
        self, question: Question, answer: int, ctx: sg.WorkflowContext[sg.Never, str]
    ) -> None:
        self.answers.append(answer)
        if len(self.answers) == 1:
            self.stalled.set()
            await asyncio.Event().wait()  # (until the call is cancelled)
        await ctx.yield_output(f"{question.text}={answer}")


async def _answered_then_cancelled(asker: _Stalling) -> tuple[sg.Workflow, sg.PendingRequest]:
    """A parent whose child's ``asker`` asks (no store), its answer 1 given
    and cancelled while the child handles it."""
    child = sg.WorkflowBuilder(start=asker, name="child").build()
    sub = sg.WorkflowExecutor(child, id="sub", forward_outputs=True)
    workflow = sg.WorkflowBuilder(start=sub, name="parent").build()
    [request] = (await workflow.run(7)).pending_requests
    answering = asyncio.ensure_future(workflow.run(responses={request.request_id: 1}))
    await asyncio.wait_for(asker.stalled.wait(), timeout=5)
    answering.cancel()
    with pytest.raises(asyncio.CancelledError):
        await answering
    return workflow, request


async def test_an_answer_to_a_child_cancelled_midway_can_be_given_again_without_a_store() -> None:
    asker = _Stalling(asyncio.Event())
    workflow, request = await _answered_then_cancelled(asker)
    # Not answered after all: the run waits for it as before, its child run too.
    assert [r.request_id for r in workflow.pending_requests] == [request.request_id]
    done = await workflow.run(responses={request.request_id: 2})
    assert (done.status, done.outputs) == (sg.RunStatus.IDLE, ["7=2"])
    assert asker.answers == [1, 2]


class _CountingStaller(_Stalling):
    """``_Stalling`` keeping a count of its answers in its snapshot."""

    def __init__(self, stalled: asyncio.Event) -> None:
        super().__init__(stalled)
        self.count = 0

    @sg.response_handler
    async def answered(
        self, question: Question, answer: int, ctx: sg.WorkflowContext[sg.Never, str]
    ) -> None:
        self.count += 1
        await super().answered(question, answer, ctx)

    def snapshot(self) -> int:
        return self.count

    def restore(self, snapshot: int) -> None:
        self.count = snapshot


async def test_a_child_answer_cancelled_midway_leaves_the_childs_executors_as_they_were() -> None:
    # (without a store, the child's executor kept what the cancelled answer
    # had done: the answer given again counted twice — where a parent's own
    # executor is given back its state)
    asker = _CountingStaller(asyncio.Event())
    workflow, request = await _answered_then_cancelled(asker)
    assert asker.count == 0 and asker.answers == [1]  # (it had counted it, then was given back)
    done = await workflow.run(responses={request.request_id: 2})
    assert (done.outputs, asker.count) == (["7=2"], 1)


async def test_parent_executor_can_intercept_child_requests() -> None:
    class Reviewer(sg.Executor):
        @sg.handler
        async def review(
            self, asked: sg.SubworkflowRequest, ctx: sg.WorkflowContext[sg.SubworkflowResponse]
        ) -> None:
            assert isinstance(asked.request, Question)
            await ctx.send_message(
                asked.respond("reject" not in asked.request.text), target=asked.source
            )

    sub = sg.WorkflowExecutor(subflows.asking_child(), id="sub", intercept_requests=True)
    reviewer = Reviewer("reviewer")
    workflow = (
        sg.WorkflowBuilder(start=sub)
        .add_edge(sub, reviewer)
        .add_edge(reviewer, sub)
        .add_edge(sub, subflows.collect)
        .build()
    )
    result = await workflow.run("merge")
    assert result.status is sg.RunStatus.IDLE and result.pending_requests == []
    assert result.outputs == ["merge accepted"]


async def test_wrong_intercepted_answer_fails_clearly() -> None:
    class Bad(sg.Executor):
        @sg.handler
        async def review(
            self, asked: sg.SubworkflowRequest, ctx: sg.WorkflowContext[sg.SubworkflowResponse]
        ) -> None:
            await ctx.send_message(asked.respond("yes"), target=asked.source)

    sub = sg.WorkflowExecutor(subflows.asking_child(), id="sub", intercept_requests=True)
    bad = Bad("bad")
    workflow = sg.WorkflowBuilder(start=sub).add_edge(sub, bad).add_edge(bad, sub).build()
    with pytest.raises(sg.WorkflowRunError, match="must be a bool, not a str") as raised:
        await workflow.run("x")
    # The interceptor that replied is named, not the WorkflowExecutor it replied to.
    assert raised.value.executor_id == "bad"
    assert isinstance(raised.value.__cause__, sg.ResponseValueError)


async def test_responses_reach_the_right_child_run() -> None:
    # Two WorkflowExecutors wrapping separate child instances, and two runs of one.
    left = sg.WorkflowExecutor(subflows.asking_child("left"), id="left")
    right = sg.WorkflowExecutor(subflows.asking_child("right"), id="right")

    @sg.executor(id="split")
    async def split(texts: list[str], ctx: sg.WorkflowContext[str]) -> None:
        for text in texts:
            await ctx.send_message(text)

    workflow = (
        sg.WorkflowBuilder(start=split)
        .add_fan_out(split, [left, right])
        .add_edge(left, subflows.collect)
        .add_edge(right, subflows.collect)
        .build()
    )
    result = await workflow.run(["a", "b"])
    by_owner: dict[str, list[str]] = {}
    for p in result.pending_requests:
        by_owner.setdefault(p.executor_id, []).append(p.request_id)
    assert {k: len(v) for k, v in by_owner.items()} == {"left": 2, "right": 2}
    questions = {p.request_id: p.request.text for p in result.pending_requests}
    target = by_owner["right"][1]
    assert questions[target] == "accept b?"
    answered = await workflow.run(responses={target: False})
    assert answered.outputs == ["b rejected"]
    assert len(answered.pending_requests) == 3
    rest = {p.request_id: True for p in answered.pending_requests}
    final = await workflow.run(responses=rest)
    assert sorted(final.outputs) == ["a accepted", "a accepted", "b accepted"]
    assert final.status is sg.RunStatus.IDLE


async def test_child_failure_names_the_path() -> None:
    @sg.executor(id="leaf")
    async def leaf(text: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        raise ValueError(f"cannot handle {text}")

    child = sg.WorkflowBuilder(start=leaf, name="child").build()
    events: list[sg.Event] = []
    with pytest.raises(sg.SubworkflowError) as raised:  # (a WorkflowRunError)
        async for event in subflows.with_child(child).stream("x"):
            events.append(event)
    assert "'sub/leaf'" in str(raised.value) and "cannot handle x" in str(raised.value)
    assert raised.value.path == ("sub", "leaf") and raised.value.executor_id == "sub"
    assert raised.value.detail.endswith("ValueError: cannot handle x")
    # Each level once in the chain: the child's run error, then the handler's.
    cause = raised.value.__cause__
    assert type(cause) is sg.WorkflowRunError and cause.executor_id == "leaf"
    assert isinstance(cause.__cause__, ValueError) and cause.__cause__.__cause__ is None
    assert [e.path for e in events if e.kind == "executor_failed"] == ["sub/leaf", "sub"]


async def test_three_levels() -> None:
    workflow = subflows.three_levels()
    result = await workflow.run("deep")
    [pending] = result.pending_requests
    assert pending.request_id.startswith("mid/inner/")
    # Announced once, by the outermost workflow, with the id the caller answers.
    [asked] = [e for e in result.events if isinstance(e, sg.RequestInfoEvent)]
    assert (asked.path, asked.request_id) == ("mid", pending.request_id)
    assert asked.request == subflows.Question("accept deep?")
    # A wrong answer names the child executor that asked, by its path.
    with pytest.raises(
        sg.ResponseValueError, match=r"\(opened by 'mid/inner/inner-asker'\) must be a bool"
    ):
        await workflow.run(responses={pending.request_id: "yes"})
    done = await workflow.run(responses={pending.request_id: True})
    assert done.outputs == ["deep accepted"]
    assert {e.path for e in done.events if e.kind == "output"} == {
        "mid/inner/inner-asker",
        "mid/inner",
        "mid",
    }


async def test_three_level_failure_path() -> None:
    @sg.executor(id="bottom")
    async def bottom(text: str) -> None:
        raise RuntimeError("deep failure")

    inner = sg.WorkflowBuilder(start=bottom, name="inner").build()
    mid = sg.WorkflowBuilder(start=sg.WorkflowExecutor(inner, id="inner"), name="mid").build()
    # (no edges after the sub-workflows: their outputs would have nowhere to go)
    outer = sg.WorkflowBuilder(start=sg.WorkflowExecutor(mid, id="mid")).build()
    with pytest.raises(sg.WorkflowRunError, match="'mid/inner/bottom'.*deep failure") as raised:
        await outer.run("x")
    chain: list[BaseException] = []
    error: BaseException | None = raised.value
    while error is not None:
        chain.append(error)
        error = error.__cause__
    # Each level once: outer's, mid's, inner's run errors, then the handler's.
    assert [(type(e).__name__, getattr(e, "executor_id", None)) for e in chain] == [
        ("SubworkflowError", "mid"),
        ("SubworkflowError", "inner"),
        ("WorkflowRunError", "bottom"),
        ("RuntimeError", None),
    ]
    assert [getattr(e, "path", None) for e in chain[:2]] == [
        ("mid", "inner", "bottom"),
        ("inner", "bottom"),
    ]


async def test_state_is_isolated() -> None:
    @sg.executor(id="before")
    async def before(text: str, ctx: sg.WorkflowContext[str]) -> None:
        ctx.state.set("k", "parent value")
        await ctx.send_message(text)

    @sg.executor(id="after")
    async def after(text: str, ctx: sg.WorkflowContext[sg.Never, Any]) -> None:
        await ctx.yield_output((text, ctx.state.get("k")))

    one = sg.WorkflowExecutor(subflows.shouting_child("one"), id="one")
    two = sg.WorkflowExecutor(subflows.shouting_child("two"), id="two")
    workflow = (
        sg.WorkflowBuilder(start=before)
        .add_fan_out(before, [one, two])
        .add_edge(one, after)
        .add_edge(two, after)
        .build()
    )
    result = await workflow.run("x")
    assert result.outputs == [("X", "parent value"), ("X", "parent value")]
    assert warnings(result.events) == []  # the children wrote "k" in scopes of their own


async def test_serial_per_executor_concurrent_across() -> None:
    child_a = subflows.shouting_child("a", delay=0.2)
    child_b = subflows.shouting_child("b", delay=0.2)
    a = sg.WorkflowExecutor(child_a, id="a")
    b = sg.WorkflowExecutor(child_b, id="b")

    @sg.executor(id="split")
    async def split(texts: list[str], ctx: sg.WorkflowContext[str]) -> None:
        for text in texts:
            await ctx.send_message(text)

    workflow = sg.WorkflowBuilder(start=split).add_fan_out(split, [a, b]).build()
    started = time.perf_counter()
    await workflow.run(["1", "2"])
    elapsed = time.perf_counter() - started
    shout_a = child_a.executors["a-exec"]
    assert isinstance(shout_a, subflows.Shout) and shout_a.max_active == 1  # serial within
    assert 0.4 <= elapsed < 0.75, elapsed  # two messages each, serially; a and b concurrently


def test_one_child_instance_in_two_places_is_refused() -> None:
    child = subflows.shouting_child()
    one, two = sg.WorkflowExecutor(child, id="one"), sg.WorkflowExecutor(child, id="two")
    with pytest.raises(sg.WorkflowDefinitionError, match="wrapped by both 'one' and 'two'"):
        sg.WorkflowBuilder(start=one).add_edge(one, two).build()


def test_a_sub_workflow_id_that_request_ids_cannot_hold_is_refused() -> None:
    child = subflows.shouting_child()
    for bad in ("a=b", "two words", "tab\there"):
        with pytest.raises(sg.WorkflowDefinitionError, match="starts the ids of the child's"):
            sg.WorkflowExecutor(child, id=bad)
    named = sg.WorkflowBuilder(start=subflows.Shout("s"), name="my child").build()
    with pytest.raises(sg.WorkflowDefinitionError, match=r"the workflow's name, 'my child'"):
        sg.WorkflowExecutor(named)
    assert sg.WorkflowExecutor(named, id="my-child").id == "my-child"


def test_shared_executor_between_parent_and_child_is_refused() -> None:
    shared = subflows.Shout("shared")
    child = sg.WorkflowBuilder(start=shared, name="child").build()
    sub = sg.WorkflowExecutor(child, id="sub")
    with pytest.raises(sg.WorkflowDefinitionError, match="appears twice.*'shared'.*'sub/shared'"):
        sg.WorkflowBuilder(start=shared).add_edge(shared, sub).build()


async def test_a_function_executor_may_serve_in_two_children_at_once() -> None:
    """Stateless: one ``@executor`` function in two places of a tree (two
    children running in one superstep) is allowed, as across workflows."""

    @sg.executor(id="leaf")
    async def leaf(n: int, ctx: sg.WorkflowContext[sg.Never, int]) -> None:
        await asyncio.sleep(0.01)
        await ctx.yield_output(n)

    @sg.executor(id="root")
    async def root(n: int, ctx: sg.WorkflowContext[int]) -> None:
        await ctx.send_message(n)

    children = [sg.WorkflowBuilder(start=leaf, name=f"c{i}").build() for i in (1, 2)]
    subs = [sg.WorkflowExecutor(c, id=c.name, forward_outputs=True) for c in children]
    parent = sg.WorkflowBuilder(start=root).add_fan_out(root, subs).build()
    assert sorted((await parent.run(7)).outputs) == [7, 7]


def test_child_graph_is_part_of_the_parent_signature() -> None:
    first = subflows.with_child(subflows.shouting_child())
    same = subflows.with_child(subflows.shouting_child())
    other_child = sg.WorkflowBuilder(start=subflows.Shout("other-exec"), name="shout").build()
    different = subflows.with_child(other_child)
    assert first.signature == same.signature != different.signature


def test_type_checks_see_through_the_child() -> None:
    @sg.executor(id="ints")
    async def ints(n: int) -> None: ...

    sub = sg.WorkflowExecutor(subflows.shouting_child(), id="sub")
    with pytest.raises(sg.WorkflowDefinitionError, match="sub -> ints.*str is sent"):
        sg.WorkflowBuilder(start=sub).add_edge(sub, ints).build()


def test_an_edge_from_a_sub_workflow_that_sends_nothing_says_why() -> None:
    @sg.executor(id="ints")
    async def ints(n: int) -> None: ...

    @sg.executor(id="quiet")
    async def quiet(n: int, ctx: sg.WorkflowContext[int]) -> None: ...

    silent = sg.WorkflowExecutor(sg.WorkflowBuilder(start=quiet, name="kid").build(), id="sub")
    with pytest.raises(
        sg.WorkflowDefinitionError,
        match=r"edge sub -> ints: 'sub' declares no message types it sends \(it sends what its "
        r"child workflow 'kid' yields, and the child declares no workflow output\); declare "
        r"one where the child yields, e.g. WorkflowContext\[Never, str\], or remove the edge",
    ):
        sg.WorkflowBuilder(start=silent).add_edge(silent, ints).build()
    forwarding = sg.WorkflowExecutor(subflows.shouting_child(), id="sub", forward_outputs=True)
    with pytest.raises(
        sg.WorkflowDefinitionError,
        match=r"\(with forward_outputs=True, what its child workflow 'shout' yields is yielded "
        r"by the parent\); pass forward_outputs=False to send it on, or remove the edge",
    ):
        sg.WorkflowBuilder(start=forwarding).add_edge(forwarding, ints).build()


async def test_a_shared_sub_workflow_stores_only_its_runs_own_waiting_child_runs(
    store: sg.CheckpointStore,
) -> None:
    """One WorkflowExecutor instance serves every run of its parent and
    holds the child runs each left waiting; a run's checkpoints store its
    own (and a fork's, the ones it was forked with) — never other runs'
    (they grew with every earlier run waiting) — and each run goes on from
    them."""

    def build() -> sg.Workflow:
        sub = sg.WorkflowExecutor(subflows.asking_child(), id="sub")
        builder = sg.WorkflowBuilder(start=sub, name="parent", checkpoints=store)
        return builder.add_edge(sub, subflows.collect).build()

    flow = build()
    waiting = [await flow.run(text) for text in ("a", "b", "c")]
    for result in waiting:
        state = await flow.get_state(result.last_checkpoint or "")
        assert list(state.snapshots["sub"]["routes"]) == [
            p.request_id for p in result.pending_requests
        ]
        assert len(state.snapshots["sub"]["runs"]) == 1
    first, _, third = waiting
    forked = await build().run(checkpoint=first.last_checkpoint, fork=True)
    state = await flow.get_state(forked.last_checkpoint or "")
    assert list(state.snapshots["sub"]["routes"]) == [first.pending_requests[0].request_id]
    for result, answer, told in ((third, True, "c accepted"), (forked, False, "a rejected")):
        [asked] = result.pending_requests
        done = await build().run(
            checkpoint=result.last_checkpoint, responses={asked.request_id: answer}
        )
        assert done.outputs == [told] and done.status is sg.RunStatus.IDLE


async def test_a_nested_shared_sub_workflow_stores_only_its_runs_own_waiting_child_runs(
    store: sg.CheckpointStore,
) -> None:
    """Two levels down too: the inner WorkflowExecutor, shared by every
    child run of the middle one, stores with each middle child run only
    the inner child runs it left waiting (a run's checkpoints held every
    earlier run's, nested), and each run goes on from its checkpoint, in
    memory or elsewhere."""
    flow = subflows.three_levels(store)
    waiting = [await flow.run(text) for text in ("a", "b", "c")]
    for result in waiting:
        state = await flow.get_state(result.last_checkpoint or "")
        [mid_run] = state.snapshots["mid"]["runs"].values()
        inner = mid_run["snapshots"]["inner"]
        assert len(inner["runs"]) == 1 and len(inner["routes"]) == 1
    first, second, third = waiting
    for result, answer, told, runner in (
        (third, True, "c accepted", subflows.three_levels(store)),
        (first, False, "a rejected", flow),
    ):
        [asked] = result.pending_requests
        done = await runner.run(
            checkpoint=result.last_checkpoint, responses={asked.request_id: answer}
        )
        assert done.outputs == [told] and done.status is sg.RunStatus.IDLE
    [asked] = second.pending_requests
    done = await flow.run(responses={asked.request_id: True})
    assert done.outputs == ["b accepted"] and done.status is sg.RunStatus.IDLE


async def test_checkpoint_resume_with_a_waiting_child(store: sg.CheckpointStore) -> None:
    result = await subflows.three_levels(store).run("saved")
    [pending] = result.pending_requests
    fresh = subflows.three_levels(store)
    done = await fresh.run(responses={pending.request_id: False}, checkpoint=result.last_checkpoint)
    assert done.outputs == ["saved rejected"]


SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    import stepgraph as sg
    from tests import subflows

    async def main(mode, path, *rest):
        with sg.SqliteCheckpointStore(path) as store:
            workflow = subflows.three_levels(store)
            if mode == "ask":
                result = await workflow.run("across")
                [p] = result.pending_requests
                print(json.dumps([result.last_checkpoint, p.request_id, result.status.value]))
            else:
                result = await workflow.run(responses={rest[1]: True}, checkpoint=rest[0])
                print(json.dumps([result.outputs, result.status.value]))

    asyncio.run(main(*sys.argv[1:]))
    """
)


def test_child_waiting_on_a_request_resumes_in_a_new_process(tmp_path: Path) -> None:
    path = str(tmp_path / "nested.sqlite")

    def call(*args: str) -> Any:
        return run_script(SCRIPT, *args)

    checkpoint, request_id, status = call("ask", path)
    assert status == "idle_with_pending_requests" and request_id.startswith("mid/inner/")
    assert call("answer", path, checkpoint, request_id) == [["across accepted"], "idle"]


async def test_intercepted_requests_are_checkpointed_and_resume(
    store: sg.CheckpointStore,
) -> None:
    class Reviewer(sg.Executor):
        @sg.handler
        async def review(
            self, asked: sg.SubworkflowRequest, ctx: sg.WorkflowContext[sg.SubworkflowResponse]
        ) -> None:
            await ctx.send_message(asked.respond(True), target=asked.source)

    def build() -> sg.Workflow:
        sub = sg.WorkflowExecutor(subflows.asking_child(), id="sub", intercept_requests=True)
        reviewer = Reviewer("reviewer")
        return (
            sg.WorkflowBuilder(start=sub, checkpoints=store)
            .add_edge(sub, reviewer)
            .add_edge(reviewer, sub)
            .add_edge(sub, subflows.collect)
            .build()
        )

    result = await build().run("merge")
    assert result.outputs == ["merge accepted"]
    infos = await store.list(result.run_id)
    # The checkpoint whose inbox holds the SubworkflowRequest (its response
    # type is stored as a reference) resumes in a fresh workflow.
    holding = infos[1]
    loaded = await store.load(holding.id)
    assert [eid for eid, _ in loaded.body["inboxes"]] == ["reviewer"]
    resumed = await build().run(checkpoint=holding.id)
    assert resumed.outputs == ["merge accepted"]


async def test_two_child_runs_waiting_at_once_need_their_own_stateful_executors() -> None:
    """A child whose agent is one shared instance cannot have two runs
    waiting for answers at once (their conversations would overwrite each
    other): refused naming it; registered, each child run has its own."""
    from tests.agents.test_agent import CountingModel, lookup, send_email

    def child(shared: bool) -> sg.Workflow:
        builder = sg.WorkflowBuilder(start="mailer", name="mail")
        make = lambda: sg.Agent("mailer", model=CountingModel(), tools=[lookup, send_email])  # noqa: E731
        (builder.add_executor(make()) if shared else builder.register("mailer", make))
        return builder.build()

    @sg.executor(id="split")
    async def split(texts: list[str], ctx: sg.WorkflowContext[str]) -> None:
        for text in texts:
            await ctx.send_message(text)

    def parent(shared: bool) -> sg.Workflow:
        sub = sg.WorkflowExecutor(child(shared), id="sub")
        return sg.WorkflowBuilder(start=split).add_edge(split, sub).build()

    refusing = parent(True)
    with pytest.raises(sg.WorkflowRunError) as raised:
        await refusing.run(["tea facts", "coffee facts"])
    assert "a new child run would start while 1 of this run wait(s)" in str(raised.value)
    assert "register it (builder.register('mailer', factory))" in str(raised.value)
    # The failed run's child runs went with it: one child run at a time works.
    one = await refusing.run(["tea facts"])
    assert len(one.pending_requests) == 2
    # A sub-workflow of sub-workflows keeps each child run apart: never refused.
    mid = sg.WorkflowBuilder(start=sg.WorkflowExecutor(child(False), id="inner"), name="mid")
    nested = sg.WorkflowBuilder(start=split).add_edge(
        split, sg.WorkflowExecutor(mid.build(), id="outer")
    )
    waiting_nested = await nested.build().run(["tea facts", "coffee facts"])
    assert len(waiting_nested.pending_requests) == 4
    # Child runs of other parent runs are not this run's: never counted, even
    # restored from a checkpoint — and each parent run answers its own.
    store = sg.MemoryCheckpointStore()
    several = sg.WorkflowBuilder(start=split, checkpoints=store).add_edge(
        split, sg.WorkflowExecutor(child(True), id="sub")
    )
    flow = several.build()
    first = await flow.run(["tea facts"])
    await flow.run(["coffee facts"])
    again = await flow.run(checkpoint=first.last_checkpoint)  # (restores first's child run)
    third = await flow.run(["milk facts"])
    for waiting in (third, again):
        answers = {p.request_id: sg.ToolApproval.approve() for p in waiting.pending_requests}
        done = await flow.run(responses=answers)
        assert done.status is sg.RunStatus.IDLE and done.run_id == waiting.run_id
    flow = parent(False)
    waiting = await flow.run(["tea facts", "coffee facts"])
    assert len(waiting.pending_requests) == 4  # two approvals in each child run
    done = await flow.run(
        responses={p.request_id: sg.ToolApproval.approve() for p in waiting.pending_requests}
    )
    assert done.status is sg.RunStatus.IDLE


def _kept(sub: sg.WorkflowExecutor) -> int:
    """How many waiting child runs ``sub`` keeps in memory."""
    return len(sub.snapshot()["runs"])


async def test_a_shared_sub_workflow_keeps_no_child_run_its_workflow_let_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A WorkflowExecutor serving every run of its parent kept each waiting
    child run for ever — of parent runs let go past the limit, failed, or
    ended — growing with every run of a long-lived workflow object. It keeps
    those of the runs the workflow keeps waiting, which stay answerable."""
    monkeypatch.setattr("stepgraph._waiting.SUSPENDED_LIMIT", 3)
    sub = sg.WorkflowExecutor(subflows.asking_child(), id="sub")
    flow = sg.WorkflowBuilder(start=sub, name="parent").add_edge(sub, subflows.collect).build()
    results = [await flow.run(f"t{i}") for i in range(3)]
    with pytest.warns(RuntimeWarning, match="keeps at most 3 runs waiting"):
        for i in range(3, 10):
            results.append(await flow.run(f"t{i}"))
    assert _kept(sub) == 3
    [first] = results[0].pending_requests
    with pytest.raises(sg.RequestError, match="unknown request id"):
        await flow.run(responses={first.request_id: True})
    for i, result in enumerate(results[7:], start=7):
        [asked] = result.pending_requests
        done = await flow.run(responses={asked.request_id: True})
        assert done.outputs == [f"t{i} accepted"]
    assert _kept(sub) == 0

    # A parent run that fails for good, or ends with its child run waiting
    # on an intercepted request it never answers: nothing answers them.
    @sg.executor(id="relay")
    async def relay(text: str, ctx: sg.WorkflowContext[str]) -> None:
        await ctx.send_message(text)

    @sg.executor(id="fail")
    async def fail(text: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        raise RuntimeError("boom")

    @sg.executor(id="ignore")
    async def ignore(asked: sg.SubworkflowRequest, ctx: sg.WorkflowContext[sg.Never]) -> None:
        pass

    failing = sg.WorkflowExecutor(subflows.asking_child(), id="sub")
    builder = sg.WorkflowBuilder(start=relay, name="failing").add_edge(relay, failing)
    builder.add_edge(failing, subflows.collect).add_edge(relay, fail)
    broken = builder.build()
    silent = sg.WorkflowExecutor(subflows.asking_child(), id="sub", intercept_requests=True)
    ignoring = sg.WorkflowBuilder(start=silent, name="ignoring").add_edge(silent, ignore)
    ignoring.add_edge(silent, subflows.collect)
    ignored = ignoring.build()
    for _ in range(5):
        with pytest.raises(sg.WorkflowRunError, match="boom"):
            await broken.run("x")
        assert (await ignored.run("y")).status is sg.RunStatus.IDLE
    assert (_kept(failing), _kept(silent)) == (0, 0)


async def test_a_nested_shared_sub_workflow_keeps_no_child_run_its_workflow_let_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two levels down too: the child runs of child runs let go go with them
    (and so do those a new child run that fails left waiting)."""
    monkeypatch.setattr("stepgraph._waiting.SUSPENDED_LIMIT", 2)
    flow = subflows.three_levels()
    mid = flow.executors["mid"]
    assert isinstance(mid, sg.WorkflowExecutor)
    inner = mid.workflow.executors["inner"]
    assert isinstance(inner, sg.WorkflowExecutor)
    results = [await flow.run(f"t{i}") for i in range(2)]
    with pytest.warns(RuntimeWarning, match="keeps at most 2 runs waiting"):
        results += [await flow.run(f"t{i}") for i in range(2, 6)]
    assert (_kept(mid), _kept(inner)) == (2, 2)
    [asked] = results[-1].pending_requests
    done = await flow.run(responses={asked.request_id: False})
    assert done.outputs == ["t5 rejected"] and (_kept(mid), _kept(inner)) == (1, 1)

    @sg.executor(id="fail")
    async def fail(text: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        raise RuntimeError("boom")

    @sg.executor(id="relay")
    async def relay(text: str, ctx: sg.WorkflowContext[str]) -> None:
        await ctx.send_message(text)

    deep = sg.WorkflowExecutor(subflows.asking_child("inner"), id="inner", forward_outputs=True)
    middle = sg.WorkflowBuilder(start=relay, name="mid").add_edge(relay, deep)
    middle = middle.add_edge(relay, fail)
    failing = sg.WorkflowExecutor(middle.build(), id="mid", forward_outputs=True)
    broken = sg.WorkflowBuilder(start=failing, name="outer").build()

    @sg.executor(id="ignore")
    async def ignore(asked: sg.SubworkflowRequest, ctx: sg.WorkflowContext[sg.Never]) -> None:
        pass

    silent = sg.WorkflowExecutor(
        subflows.asking_child("inner"), id="inner", intercept_requests=True
    )
    quiet = sg.WorkflowBuilder(start=silent, name="mid").add_edge(silent, ignore)
    ending = sg.WorkflowExecutor(quiet.add_edge(silent, subflows.collect).build(), id="mid")
    ended = sg.WorkflowBuilder(start=ending, name="outer").build()
    for _ in range(3):
        with pytest.raises(sg.SubworkflowError, match="boom"):
            await broken.run("x")
        assert (await ended.run("y")).status is sg.RunStatus.IDLE
    assert (_kept(failing), _kept(deep), _kept(ending), _kept(silent)) == (0, 0, 0, 0)


async def test_a_shared_sub_workflow_let_go_in_memory_goes_on_from_its_checkpoint(
    store: sg.CheckpointStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a store, a parent run let go past the limit keeps its waiting
    child run in its checkpoint: answered from there — by this workflow
    object or another — it goes on."""
    monkeypatch.setattr("stepgraph._waiting.SUSPENDED_LIMIT", 2)

    def build() -> tuple[sg.Workflow, sg.WorkflowExecutor]:
        sub = sg.WorkflowExecutor(subflows.asking_child(), id="sub")
        builder = sg.WorkflowBuilder(start=sub, name="parent", checkpoints=store)
        return builder.add_edge(sub, subflows.collect).build(), sub

    flow, sub = build()
    results = [await flow.run(f"t{i}") for i in range(2)]
    with pytest.warns(RuntimeWarning, match="keeps at most 2 runs waiting"):
        results += [await flow.run(f"t{i}") for i in range(2, 8)]
    assert _kept(sub) == 2
    for i, runner in ((0, flow), (1, build()[0])):
        [asked] = results[i].pending_requests
        done = await runner.run(
            checkpoint=results[i].last_checkpoint, responses={asked.request_id: True}
        )
        assert done.outputs == [f"t{i} accepted"]
    # The runs it keeps waiting are answered in memory (from their checkpoints).
    for i in (7, 6):
        [asked] = results[i].pending_requests
        done = await flow.run(responses={asked.request_id: False})
        assert done.outputs == [f"t{i} rejected"]
    assert _kept(sub) == 0
