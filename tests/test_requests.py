"""Human in the loop (design §4): requests, statuses, responses, validation."""

from __future__ import annotations

import asyncio
import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import stepgraph as sg
from tests.conftest import kinds, run_script


@dataclass(frozen=True)
class Ask:
    question: str


@dataclass(frozen=True)
class UrgentAsk(Ask):
    pass


class Approver(sg.Executor):
    """Asks one question per message; yields what it was told."""

    @sg.handler
    async def on(self, text: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        ask = UrgentAsk(text) if text.startswith("!") else Ask(text)
        await ctx.request_info(ask, bool)

    @sg.response_handler
    async def any_answer(
        self, ask: Ask, answer: object, ctx: sg.WorkflowContext[sg.Never, str]
    ) -> None:
        await ctx.yield_output(f"generic {ask.question} {answer}")

    @sg.response_handler
    async def yes_no(self, ask: Ask, answer: bool, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.yield_output(f"{ask.question}: {'yes' if answer else 'no'}")

    @sg.response_handler
    async def urgent(
        self, ask: UrgentAsk, answer: bool, ctx: sg.WorkflowContext[sg.Never, str]
    ) -> None:
        await ctx.yield_output(f"URGENT {ask.question}: {answer}")


@sg.executor(id="fan")
async def fan(texts: list[str], ctx: sg.WorkflowContext[str]) -> None:
    for text in texts:
        await ctx.send_message(text)


def build(store: sg.CheckpointStore | None = None) -> sg.Workflow:
    return (
        sg.WorkflowBuilder(start=fan, checkpoints=store).add_edge(fan, Approver("approver")).build()
    )


async def test_request_opens_and_run_goes_idle_with_pending_requests() -> None:
    workflow = build()
    result = await workflow.run(["ship it?"])
    assert result.status is sg.RunStatus.IDLE_WITH_PENDING_REQUESTS
    [pending] = result.pending_requests
    assert pending.executor_id == "approver" and pending.request == Ask("ship it?")
    assert pending.response_type is bool
    statuses = [e.status for e in result.events if isinstance(e, sg.StatusEvent)]
    assert statuses == [
        sg.RunStatus.IN_PROGRESS,
        sg.RunStatus.IN_PROGRESS_PENDING_REQUESTS,
        sg.RunStatus.IDLE_WITH_PENDING_REQUESTS,
    ]
    [info] = [e for e in result.events if isinstance(e, sg.RequestInfoEvent)]
    assert (info.request_id, info.executor_id, info.request, info.response_type) == (
        pending.request_id,
        "approver",
        Ask("ship it?"),
        bool,
    )
    assert kinds(result.events)[-4:] == ["request_info", "status", "superstep_completed", "status"]
    assert workflow.pending_requests == [pending]

    answered = await workflow.run(responses={pending.request_id: True})
    assert answered.outputs == ["ship it?: yes"]  # (Ask, bool) beats (Ask, object)
    assert answered.status is sg.RunStatus.IDLE and answered.pending_requests == []
    assert answered.run_id == result.run_id
    assert workflow.pending_requests == []


async def test_most_specific_response_handler_wins() -> None:
    workflow = build()
    result = await workflow.run(["!now", "later"])
    ids = {p.request.question: p.request_id for p in result.pending_requests}
    done = await workflow.run(responses={ids["!now"]: False, ids["later"]: True})
    assert done.outputs == ["URGENT !now: False", "later: yes"]


async def test_partial_answers_leave_the_rest_open() -> None:
    workflow = build()
    result = await workflow.run(["a", "b", "c"])
    ids = [p.request_id for p in result.pending_requests]
    partial = await workflow.run(responses={ids[1]: True})
    assert partial.outputs == ["b: yes"]
    assert partial.status is sg.RunStatus.IDLE_WITH_PENDING_REQUESTS
    assert [p.request_id for p in partial.pending_requests] == [ids[0], ids[2]]
    statuses = [e.status for e in partial.events if isinstance(e, sg.StatusEvent)]
    assert statuses[0] is sg.RunStatus.IN_PROGRESS_PENDING_REQUESTS
    rest = await workflow.run(responses={ids[0]: False, ids[2]: True})
    assert rest.outputs == ["a: no", "c: yes"] and rest.status is sg.RunStatus.IDLE


async def test_invalid_responses_consume_nothing() -> None:
    workflow = build()
    result = await workflow.run(["q1", "q2"])
    first, second = (p.request_id for p in result.pending_requests)
    with pytest.raises(sg.RequestError, match="unknown request id 'nope'"):
        await workflow.run(responses={first: True, "nope": True})
    with pytest.raises(
        sg.RequestError, match=f"response to request '{second}'.*must be a bool, not a str"
    ):
        await workflow.run(responses={first: True, second: "yes"})
    assert [p.request_id for p in workflow.pending_requests] == [first, second]
    await workflow.run(responses={first: True})
    with pytest.raises(
        sg.RequestError, match=f"request '{first}' of run '{result.run_id}' was already answered$"
    ):
        await workflow.run(responses={first: True})
    assert [p.request_id for p in workflow.pending_requests] == [second]
    with pytest.raises(sg.RequestError, match="non-empty mapping"):
        await workflow.run(responses={})


async def test_a_request_id_or_checkpoint_that_is_no_string_is_refused_naming_it() -> None:
    # (an int request id failed with "object of type 'int' has no len()", an
    # int checkpoint with "'int' object has no attribute 'isascii'")
    store = sg.MemoryCheckpointStore()
    workflow = build(store)
    result = await workflow.run(["q1"])
    with pytest.raises(sg.RequestError, match="request ids, which are strings.*: 1 is an int"):
        await workflow.run(responses={1: True})  # type: ignore[dict-item]
    with pytest.raises(sg.CheckpointError, match="a checkpoint id, a string: 7 is an int"):
        await workflow.run(checkpoint=7)  # type: ignore[arg-type]
    [asked] = workflow.pending_requests  # (nothing consumed)
    done = await workflow.run(responses={asked.request_id: True}, checkpoint=result.last_checkpoint)
    assert done.status is sg.RunStatus.IDLE


async def test_answering_again_in_memory_names_the_checkpoint_of_the_answer(
    store: sg.CheckpointStore,
) -> None:
    workflow = build(store)
    result = await workflow.run(["once?"])
    [asked] = result.pending_requests
    done = await workflow.run(responses={asked.request_id: True})
    ids = [i.id for i in await store.list(done.run_id)]
    entry = ids[ids.index(result.last_checkpoint) + 1]  # (the answer's: it records it)
    with pytest.raises(sg.RequestError, match=f"already answered \\(at checkpoint {entry}\\)"):
        await workflow.run(responses={asked.request_id: False})


async def test_responses_without_open_requests() -> None:
    with pytest.raises(sg.RequestError, match="no run this workflow keeps in memory has it open"):
        await build().run(responses={"x": True})


async def test_request_without_a_response_handler_fails_naming_the_executor() -> None:
    class Asker(sg.Executor):
        @sg.handler
        async def on(self, n: int, ctx: sg.WorkflowContext) -> None:
            await ctx.request_info(Ask("?"), int)

        @sg.response_handler
        async def answer(self, ask: Ask, value: str) -> None: ...

    with pytest.raises(sg.WorkflowRunError) as raised:
        await sg.WorkflowBuilder(start=Asker("asker")).build().run(1)
    assert isinstance(raised.value.__cause__, sg.RequestError)
    assert "'asker'" in str(raised.value) and "none of its @response_handler" in str(raised.value)


class NarrowAsker(sg.Executor):
    """Asks for an int, and takes only a bool: a response type that overlaps
    its handler's, so the request opens, and an int that is no bool fits none."""

    @sg.handler
    async def on(self, n: int, ctx: sg.WorkflowContext) -> None:
        await ctx.request_info(Ask("?"), int)

    @sg.response_handler
    async def answer(self, ask: Ask, value: bool, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.yield_output(f"{ask.question} {value}")


@pytest.mark.parametrize("nested", [False, True])
async def test_an_answer_no_response_handler_takes_is_refused_and_consumes_nothing(
    nested: bool, store: sg.CheckpointStore
) -> None:
    start: sg.Executor = NarrowAsker("asker")
    if nested:
        child = sg.WorkflowBuilder(start=start).build()
        start = sg.WorkflowExecutor(child, id="sub")
    workflow = sg.WorkflowBuilder(start=start, checkpoints=store).build()
    result = await workflow.run(1)
    [asked] = result.pending_requests
    asker = "sub/asker" if nested else "asker"
    with pytest.raises(
        sg.ResponseValueError,
        match=f"\\(opened by '{asker}'\\) is an int, which none of its @response_handler",
    ):
        await workflow.run(responses={asked.request_id: 5})
    assert [p.request_id for p in workflow.pending_requests] == [asked.request_id]
    with pytest.raises(sg.ResponseValueError, match="none of its @response_handler"):
        await workflow.run(
            responses={asked.request_id: 5}, checkpoint=result.last_checkpoint, checkpoints=store
        )
    done = await workflow.run(responses={asked.request_id: True})
    assert done.status is sg.RunStatus.IDLE and not done.pending_requests
    assert done.outputs == ([] if nested else ["? True"])  # (a child's go to the parent's edges)


class CheckingAsker(sg.Executor):
    """Refuses False; its check is broken for None (a fault of its own)."""

    @sg.handler
    async def on(self, n: int, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.request_info(f"{n}?", bool | None)

    @sg.response_handler
    async def back(
        self, ask: str, answer: bool | None, ctx: sg.WorkflowContext[sg.Never, str]
    ) -> None:
        await ctx.yield_output(f"{ask} {answer}")

    def check_response(self, request: sg.PendingRequest, response: Any) -> None:
        if response is False:
            raise ValueError("only a yes is taken")
        if response is None:
            {}["missing"]  # (KeyError)


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "sub-workflow"])
async def test_a_check_of_an_answer_refuses_it_or_fails_naming_its_executor(
    nested: bool, store: sg.CheckpointStore
) -> None:
    start: sg.Executor = CheckingAsker("asker")
    if nested:
        start = sg.WorkflowExecutor(sg.WorkflowBuilder(start=start).build(), id="sub")
    workflow = sg.WorkflowBuilder(start=start, checkpoints=store).build()
    [asked] = (await workflow.run(1)).pending_requests
    with pytest.raises(sg.ResponseValueError, match="is refused: only a yes is taken$"):
        await workflow.run(responses={asked.request_id: False})
    with pytest.raises(sg.WorkflowRunError) as broken:  # (not a bare KeyError)
        await workflow.run(responses={asked.request_id: None})
    owner = "sub" if nested else "asker"
    assert (
        str(broken.value) == f"executor {owner!r}: its check_response() raised KeyError: 'missing'"
    )
    assert broken.value.executor_id == owner and isinstance(broken.value.__cause__, KeyError)
    assert [p.request_id for p in workflow.pending_requests] == [asked.request_id]
    done = await workflow.run(responses={asked.request_id: True})
    assert done.status is sg.RunStatus.IDLE and not done.pending_requests


@pytest.mark.parametrize(
    ("response_type", "reason"),
    [(5, "5 is not a type"), ("bool", "unresolved forward reference 'bool'")],
)
async def test_a_response_type_that_is_not_a_type_fails_the_request(
    response_type: Any, reason: str
) -> None:
    # The request opened, and the answer failed with stepgraph's internal
    # TypeSpecError ("5 is not a type"); a string failed the handler with it.
    class Asker(sg.Executor):
        @sg.handler
        async def on(self, n: int, ctx: sg.WorkflowContext) -> None:
            await ctx.request_info(Ask("?"), response_type)

        @sg.response_handler
        async def answer(self, ask: Ask, value: object) -> None: ...

    with pytest.raises(sg.WorkflowRunError) as raised:
        await sg.WorkflowBuilder(start=Asker("asker")).build().run(1)
    assert isinstance(raised.value.__cause__, sg.RequestError)
    assert str(raised.value.__cause__) == (
        f"executor 'asker' opened a request with response_type {response_type!r}: {reason}; "
        "pass the type an answer must have, e.g. ctx.request_info(request, str)"
    )


async def test_failed_superstep_opens_no_request() -> None:
    class Flaky(sg.Executor):
        @sg.handler
        async def on(self, n: int, ctx: sg.WorkflowContext) -> None:
            await ctx.request_info(Ask("?"), bool)
            raise RuntimeError("after asking")

        @sg.response_handler
        async def answer(self, ask: Ask, value: bool) -> None: ...

    workflow = sg.WorkflowBuilder(start=Flaky("flaky")).build()
    events: list[sg.Event] = []
    with pytest.raises(sg.WorkflowRunError):
        async for event in workflow.stream(1):
            events.append(event)
    assert "request_info" not in kinds(events)
    assert workflow.pending_requests == []


async def test_answer_through_a_checkpoint(store: sg.CheckpointStore) -> None:
    result = await build(store).run(["persist?"])
    [pending] = result.pending_requests
    fresh = build(store)
    done = await fresh.run(responses={pending.request_id: True}, checkpoint=result.last_checkpoint)
    assert done.outputs == ["persist?: yes"]
    # The answered checkpoint cannot be answered again from its successor...
    with pytest.raises(sg.RequestError, match="already answered"):
        await build(store).run(
            responses={pending.request_id: True}, checkpoint=done.last_checkpoint
        )
    # ...nor the one before the answer, unless as a fork (a new run).
    with pytest.raises(sg.RequestError, match="already answered"):
        await build(store).run(
            responses={pending.request_id: False}, checkpoint=result.last_checkpoint
        )
    again = await build(store).run(
        responses={pending.request_id: False}, checkpoint=result.last_checkpoint, fork=True
    )
    assert again.outputs == ["persist?: no"] and again.run_id != done.run_id


async def test_a_fork_leaves_the_original_waiting_in_memory(store: sg.CheckpointStore) -> None:
    workflow = build(store)
    result = await workflow.run(["keep?"])
    [pending] = result.pending_requests
    fork = await workflow.run(
        responses={pending.request_id: False}, checkpoint=result.last_checkpoint, fork=True
    )
    assert fork.outputs == ["keep?: no"]
    # The original still waits, in memory, for its own answer.
    assert [r.request_id for r in workflow.pending_requests] == [pending.request_id]
    done = await workflow.run(responses={pending.request_id: True})
    assert done.outputs == ["keep?: yes"] and done.run_id == result.run_id
    # A fork that waits too: the same request open in two runs must be named.
    second = await workflow.run(["two?"])
    [asked] = second.pending_requests
    await workflow.run(checkpoint=second.last_checkpoint, fork=True)
    with pytest.raises(sg.RequestError, match="open in several runs"):
        await workflow.run(responses={asked.request_id: True})
    done = await workflow.run(responses={asked.request_id: True}, checkpoint=second.last_checkpoint)
    assert done.outputs == ["two?: yes"] and done.run_id == second.run_id


async def test_a_fork_without_answers_is_a_stored_run(store: sg.CheckpointStore) -> None:
    result = await build(store).run(["fork?"])
    fork = await build(store).run(checkpoint=result.last_checkpoint, fork=True)
    assert fork.run_id != result.run_id
    assert [r.request.question for r in fork.pending_requests] == ["fork?"]
    info = await store.run_info(fork.run_id)
    assert info is not None and info.pending_requests == 1
    [entry] = await store.list(fork.run_id)
    assert entry.parent_id == result.last_checkpoint  # (its lineage)
    [request] = fork.pending_requests
    done = await build(store).run(responses={request.request_id: True}, checkpoint=entry.id)
    assert done.outputs == ["fork?: yes"] and done.run_id == fork.run_id


SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    import stepgraph as sg
    from tests.test_requests import build

    async def main(mode, path, *rest):
        store = sg.SqliteCheckpointStore(path)
        workflow = build(store)
        if mode == "ask":
            result = await workflow.run(["deploy?", "!rollback?"])
            print(json.dumps({
                "status": result.status.value,
                "checkpoint": result.last_checkpoint,
                "requests": {p.request.question: p.request_id for p in result.pending_requests},
            }))
        else:
            checkpoint, answers = rest[0], json.loads(rest[1])
            result = await workflow.run(responses=answers, checkpoint=checkpoint)
            print(json.dumps({"status": result.status.value, "outputs": result.outputs}))
        store.close()

    asyncio.run(main(*sys.argv[1:]))
    """
)


def test_request_and_response_across_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "hitl.sqlite")

    def call(*args: str) -> Any:
        return run_script(SCRIPT, *args)

    asked = call("ask", path)
    assert asked["status"] == "idle_with_pending_requests"
    ids = asked["requests"]
    answered = call(
        "answer",
        path,
        asked["checkpoint"],
        json.dumps({ids["deploy?"]: True, ids["!rollback?"]: False}),
    )
    assert answered == {
        "status": "idle",
        "outputs": ["deploy?: yes", "URGENT !rollback?: False"],
    }


def announced(events: list[sg.Event]) -> list[tuple[str, Any]]:
    return [(e.request_id, e.request) for e in events if isinstance(e, sg.RequestInfoEvent)]


async def test_still_open_requests_are_announced_again_when_a_run_continues(
    store: sg.CheckpointStore,
) -> None:
    workflow = build(store)
    first = await workflow.run(["a?", "b?"])
    ids = {p.request.question: p.request_id for p in first.pending_requests}
    # Resuming from the checkpoint without answers: both are announced again,
    # right after the run starts; it runs nothing, so its one status is how
    # it stays (it said "in_progress_pending_requests" first).
    events = [e async for e in build(store).stream(checkpoint=first.last_checkpoint)]
    assert kinds(events) == ["run_started", "request_info", "request_info", "status"]
    assert events[-1] == sg.StatusEvent(status=sg.RunStatus.IDLE_WITH_PENDING_REQUESTS)
    assert announced(events) == [(ids["a?"], Ask("a?")), (ids["b?"], Ask("b?"))]
    assert events[1].superstep == 2  # the superstep that opened it
    # Answering one of them (in memory, or from the checkpoint): the other again.
    in_memory = await workflow.run(responses={ids["a?"]: True})
    assert announced(in_memory.events) == [(ids["b?"], Ask("b?"))]
    assert in_memory.outputs == ["a?: yes"]
    # (from the checkpoint before that answer: a branch, where a? is open again)
    branch = await build(store).run(checkpoint=first.last_checkpoint, responses={ids["b?"]: False})
    assert announced(branch.events) == [(ids["a?"], Ask("a?"))]


async def test_a_run_kept_in_memory_that_went_on_elsewhere_is_answered_from_its_checkpoint(
    store: sg.CheckpointStore,
) -> None:
    """Another process answered one request of a run this object keeps
    waiting: answering another in memory would go on from the older
    checkpoint, where the first is open again and its answer's results are
    missing — refused, naming the checkpoint to answer from, nothing
    consumed."""
    workflow = build(store)
    first = await workflow.run(["a?", "b?"])
    ids = {p.request.question: p.request_id for p in first.pending_requests}
    elsewhere = await build(store).run(
        checkpoint=first.last_checkpoint, responses={ids["a?"]: True}
    )
    with pytest.raises(
        sg.RequestError,
        match=f"run '{first.run_id}' went on elsewhere since this workflow object kept it "
        f"waiting at checkpoint {first.last_checkpoint}: its latest checkpoint is "
        f"{elsewhere.last_checkpoint}",
    ):
        await workflow.run(responses={ids["b?"]: False})
    done = await workflow.run(checkpoint=elsewhere.last_checkpoint, responses={ids["b?"]: False})
    assert done.outputs == ["b?: no"] and done.status is sg.RunStatus.IDLE
    assert await store.outputs(done.last_checkpoint or "") == ["a?: yes", "b?: no"]


class _ContinuedMeanwhile(sg.MemoryCheckpointStore):
    """A store where another process continues a run just before this
    call takes it (``meanwhile`` runs once, on the next lease)."""

    meanwhile: Any = None

    async def lease(self, run_id: str, holder: str) -> str | None:
        meanwhile, self.meanwhile = self.meanwhile, None
        if meanwhile is not None:
            await meanwhile()
        return await super().lease(run_id, holder)


async def test_a_run_kept_in_memory_continued_elsewhere_as_it_is_answered_is_refused() -> None:
    """Another process answers a? from the checkpoint after this object's
    answer to b? was checked but before it took the run: still refused (it
    went on from the older checkpoint, reopening a?), and the run is given
    back, answerable from its latest checkpoint."""
    store = _ContinuedMeanwhile()
    workflow = build(store)
    first = await workflow.run(["a?", "b?"])
    ids = {p.request.question: p.request_id for p in first.pending_requests}
    elsewhere: list[sg.RunResult] = []

    async def answer_a() -> None:
        other = build(store)
        elsewhere.append(
            await other.run(checkpoint=first.last_checkpoint, responses={ids["a?"]: True})
        )

    store.meanwhile = answer_a
    with pytest.raises(sg.RequestError, match=f"run '{first.run_id}' went on elsewhere"):
        await workflow.run(responses={ids["b?"]: False})
    [latest] = elsewhere
    done = await workflow.run(checkpoint=latest.last_checkpoint, responses={ids["b?"]: False})
    assert done.outputs == ["b?: no"] and done.status is sg.RunStatus.IDLE
    assert await store.outputs(done.last_checkpoint or "") == ["a?: yes", "b?: no"]


async def test_a_run_this_object_continues_from_its_checkpoint_meanwhile_is_not_kept_twice() -> (
    None
):
    """An answer in memory and one through the checkpoint, to one run of
    one workflow object at once (a server's two requests): the first to
    take the run goes on; the copy the other claimed in memory is not put
    back when it is refused, so nothing lists the answered request as open
    and answering it again says it was answered."""
    store = _ContinuedMeanwhile()
    builder = sg.WorkflowBuilder(start=fan, checkpoints=store).register("approver", Approver)
    workflow = builder.add_edge(fan, "approver").build()
    first = await workflow.run(["a?"])
    [pending] = first.pending_requests
    through_checkpoint: list[sg.RunResult] = []

    async def answer_from_the_checkpoint() -> None:
        through_checkpoint.append(
            await workflow.run(
                checkpoint=first.last_checkpoint, responses={pending.request_id: True}
            )
        )

    store.meanwhile = answer_from_the_checkpoint
    with pytest.raises(sg.RequestError, match=f"run '{first.run_id}' went on elsewhere"):
        await workflow.run(responses={pending.request_id: False})
    [done] = through_checkpoint
    assert done.outputs == ["a?: yes"] and done.status is sg.RunStatus.IDLE
    assert workflow.pending_requests == []
    with pytest.raises(sg.RequestError, match="already answered"):
        await workflow.run(responses={pending.request_id: False})


async def test_a_sub_workflow_request_is_announced_once_with_the_id_to_answer() -> None:
    from tests import subflows

    workflow = subflows.with_child(subflows.asking_child())
    events = [e async for e in workflow.stream("plan")]
    [(request_id, request)] = announced(events)
    assert request_id.startswith("sub/") and request == subflows.Question("accept plan?")
    done = await workflow.run(responses={request_id: True})  # the id from the stream works
    assert done.outputs == ["plan accepted"]


async def test_runs_waiting_for_answers_are_all_kept_up_to_a_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    workflow = build()
    first = await workflow.run(["first?"])
    second = await workflow.run(["second?"])
    assert [e for e in second.events if isinstance(e, sg.WarningEvent)] == []
    # Both stay answerable, in either order, and each continues its own run.
    done = await workflow.run(responses={first.pending_requests[0].request_id: True})
    assert (done.run_id, done.outputs) == (first.run_id, ["first?: yes"])
    [waiting] = workflow.pending_requests
    assert waiting == second.pending_requests[0]
    with pytest.raises(sg.RequestError, match="already answered"):
        await workflow.run(responses={first.pending_requests[0].request_id: True})
    # Past the limit the oldest is dropped, and named, with where to answer it.
    monkeypatch.setattr("stepgraph._waiting.SUSPENDED_LIMIT", 1)
    store = sg.MemoryCheckpointStore()
    stored = build(store)
    one = await stored.run(["one?"])
    with pytest.warns(RuntimeWarning) as issued:
        two = await stored.run(["two?"])
    # The process is told which run, and where to answer it; the run that
    # pushed it out only that one was (it may be another user's run).
    [told] = [str(w.message) for w in issued]
    assert f"run {one.run_id} still had open requests" in told
    assert f"run(checkpoint={one.last_checkpoint!r}, responses=...)" in told
    [warning] = [e for e in two.events if isinstance(e, sg.WarningEvent)]
    assert warning.message == (
        "this workflow object keeps at most 1 runs waiting for answers in memory, so the "
        "oldest of them no longer waits here"
    )
    assert one.run_id not in repr(two.events)
    assert one.pending_requests[0].request_id not in repr(two.events)
    with pytest.raises(sg.RequestError, match="unknown request id"):
        await stored.run(responses={one.pending_requests[0].request_id: True})
    answered = await stored.run(
        responses={one.pending_requests[0].request_id: True}, checkpoint=one.last_checkpoint
    )
    assert answered.outputs == ["one?: yes"]


async def test_a_run_continued_from_its_checkpoint_is_not_answerable_again_in_memory(
    store: sg.CheckpointStore,
) -> None:
    workflow = build(store)
    result = await workflow.run(["pay?"])
    [pending] = result.pending_requests
    done = await workflow.run(
        responses={pending.request_id: True}, checkpoint=result.last_checkpoint
    )
    assert done.outputs == ["pay?: yes"]
    assert workflow.pending_requests == []  # the copy in memory is superseded
    with pytest.raises(sg.RequestError, match="already answered"):
        await workflow.run(responses={pending.request_id: False})


async def test_unknown_request_errors_list_a_bounded_number_of_open_ids() -> None:
    workflow = build()
    for i in range(25):
        await workflow.run([f"q{i}"])
    with pytest.raises(sg.RequestError) as raised:
        await workflow.run(responses={"nope": True})
    text = str(raised.value)
    assert "(25 in all)" in text and len(text) < 800


class Asker(sg.Executor):
    @sg.handler
    async def on(self, request_id: Any, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.request_info(Ask("ok?"), bool, request_id=request_id)

    @sg.response_handler
    async def told(self, ask: Ask, answer: bool, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.yield_output(f"{ask.question} {answer}")


@pytest.mark.parametrize(
    ("request_id", "problem"),
    [
        ("", "must have 1 to 200 characters"),
        ("x" * 201, "must have 1 to 200 characters"),
        ("a b", "may not contain whitespace, '=' or control characters"),
        ("a=b", "may not contain whitespace, '=' or control characters"),
        ("a\x00b", "may not contain whitespace, '=' or control characters"),
        ("a\x1bb", "may not contain whitespace, '=' or control characters"),
        ("a\x85b", "may not contain whitespace, '=' or control characters"),
        ("a\udc80", "holds half a character (a lone surrogate)"),  # (no checkpoint held it)
        (5, "is a int, not a str"),
        ("sub/x", "may not contain '/', which joins a sub-workflow's id"),  # (a collision)
    ],
)
async def test_a_request_id_that_cannot_be_answered_is_refused(
    request_id: Any, problem: str
) -> None:
    """An id is typed as ``ID=VALUE`` and stored as text: one that could not
    be (NUL, which PostgreSQL text cannot hold, too) fails the superstep,
    naming the executor."""
    flow = sg.WorkflowBuilder(start=Asker("asker")).build()
    with pytest.raises(sg.WorkflowRunError, match="executor 'asker'") as raised:
        await flow.run(request_id)
    assert problem in str(raised.value)


@pytest.mark.parametrize("request_id", ["t2-1a2b3c4d", "ünï©ødé", "[red]x", "a\u200bb", "-x"])
async def test_odd_but_typeable_request_ids_are_kept(request_id: str) -> None:
    flow = sg.WorkflowBuilder(start=Asker("asker")).build()
    result = await flow.run(request_id)
    assert [p.request_id for p in result.pending_requests] == [request_id]
    assert (await flow.run(responses={request_id: True})).outputs == ["ok? True"]


class PathAsker(sg.Executor):
    @sg.handler
    async def on(self, text: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.request_info(Ask(text), Path)
        await ctx.request_info(Ask(f"{text} (anything)"), object)

    @sg.response_handler
    async def where(self, ask: Ask, answer: Path, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.yield_output(f"{ask.question}: {answer.as_posix()} ({type(answer).__name__})")

    @sg.response_handler
    async def anything(
        self, ask: Ask, answer: object, ctx: sg.WorkflowContext[sg.Never, str]
    ) -> None:
        await ctx.yield_output(f"{ask.question}: {answer!r}")


async def test_a_path_answer_is_stored_and_an_unstorable_one_refused_before_it_counts(
    store: sg.CheckpointStore,
) -> None:
    """A path goes into checkpoints like any supported value; an answer no
    checkpoint can hold is refused as the answer (the request stays open),
    not by failing the run at its next save."""
    flow = sg.WorkflowBuilder(start=PathAsker("asker"), checkpoints=store).build()
    first = await flow.run("where?")
    where, anything = (p.request_id for p in first.pending_requests)
    done = await flow.run(responses={where: Path("ü [x]/y")})
    assert done.outputs == ["where?: ü [x]/y (PosixPath)"]
    resumed = (
        await sg.WorkflowBuilder(start=PathAsker("asker"), checkpoints=store)
        .build()
        .run(checkpoint=done.last_checkpoint)
    )
    assert [p.request_id for p in resumed.pending_requests] == [anything]
    for how in ({}, {"checkpoint": done.last_checkpoint}):
        with pytest.raises(sg.ResponseValueError, match="cannot store .*still open"):
            await flow.run(responses={anything: object()}, **how)  # type: ignore[arg-type]
    info = await store.run_info(first.run_id)
    assert info is not None and info.status != "failed" and info.pending_requests == 1
    done = await flow.run(responses={anything: 5}, checkpoint=done.last_checkpoint)
    assert done.outputs == ["where? (anything): 5"]


async def test_request_info_opens_at_once_in_sync_handlers_and_without_await() -> None:
    # request_info was a coroutine function: a sync handler could not await
    # it, and an async one that forgot to left a coroutine never run - either
    # way no request was opened and the run went idle as if nothing was asked.
    class SyncAsker(sg.Executor):
        @sg.handler
        def ask(self, question: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
            request_id = ctx.request_info(question, str)
            ctx.state.set("asked", [request_id])  # copied as the plain str it is
            assert isinstance(request_id, str) and len(request_id) == 32

        @sg.response_handler
        async def answered(
            self, question: str, answer: str, ctx: sg.WorkflowContext[sg.Never, str]
        ) -> None:
            await ctx.yield_output(f"{question} {answer} {ctx.state.get('asked')}")

    class Forgetful(sg.Executor):
        @sg.handler
        async def ask(self, question: str, ctx: sg.WorkflowContext) -> None:
            ctx.request_info(question, str)  # no await

        @sg.response_handler
        async def answered(self, question: str, answer: str, ctx: sg.WorkflowContext) -> None:
            pass

    store = sg.MemoryCheckpointStore()
    workflow = sg.WorkflowBuilder(start=SyncAsker("sync"), checkpoints=store).build()
    first = await workflow.run("why?")
    [pending] = first.pending_requests
    assert first.status is sg.RunStatus.IDLE_WITH_PENDING_REQUESTS
    done = await workflow.run(responses={pending.request_id: "because"})
    assert done.outputs == [f"why? because ['{pending.request_id}']"]

    forgetful = await sg.WorkflowBuilder(start=Forgetful("f")).build().run("when?")
    assert [p.request for p in forgetful.pending_requests] == ["when?"]

    class Awaits(sg.Executor):
        @sg.handler
        async def ask(self, n: int, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
            chosen = await ctx.request_info(n, int, request_id="mine")
            await ctx.yield_output(f"{type(chosen).__name__} {chosen}")  # awaited: a plain str

        @sg.response_handler
        async def answered(self, n: int, answer: int, ctx: sg.WorkflowContext) -> None:
            pass

    awaited = await sg.WorkflowBuilder(start=Awaits("a")).build().run(1)
    assert awaited.outputs == ["str mine"]


async def test_a_request_id_goes_anywhere_a_str_goes(tmp_path: Path) -> None:
    """The id a sync handler gets from ``request_info`` is sent, yielded
    and kept in state — alone, in a list and as a dict key — and the
    checkpoints store it as the str it is."""

    class Ask(sg.Executor):
        @sg.handler
        def ask(self, n: int, ctx: sg.WorkflowContext[str, str]) -> None:
            request_id = ctx.request_info(f"q{n}", bool)
            ctx.send_message(request_id)
            ctx.yield_output(request_id)
            ctx.yield_output({request_id: [request_id]})

        @sg.response_handler
        def answered(self, question: str, ok: bool, ctx: sg.WorkflowContext[str, str]) -> None:
            ctx.yield_output(f"{question}={ok}")

    @sg.executor(id="echo")
    async def echo(text: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.yield_output(f"echo {text}")

    store = sg.SqliteCheckpointStore(tmp_path / "runs.sqlite")
    workflow = sg.WorkflowBuilder(start=Ask("ask"), checkpoints=store).add_edge("ask", echo).build()
    first = await workflow.run(1)
    [pending] = first.pending_requests
    rid = pending.request_id
    assert first.outputs == [rid, {rid: [rid]}, f"echo {rid}"]
    assert await store.outputs(first.last_checkpoint or "") == first.outputs
    again = sg.WorkflowBuilder(start=Ask("ask"), checkpoints=store).add_edge("ask", echo).build()
    done = await again.run(responses={rid: True}, checkpoint=first.last_checkpoint)
    assert done.outputs == ["q1=True"]
    store.close()


class SlowApprover(sg.Executor):
    """Asks one question per message; an answer waits for ``release`` (per class)."""

    release: asyncio.Event

    @sg.handler
    async def on(self, text: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.request_info(Ask(text), bool)

    @sg.response_handler
    async def answer(self, ask: Ask, yes: bool, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await SlowApprover.release.wait()
        await ctx.yield_output(f"{ask.question}: {yes}")


async def test_an_answer_while_another_call_continues_its_run_says_so() -> None:
    SlowApprover.release = asyncio.Event()
    workflow = sg.WorkflowBuilder(start=fan).register("approver", SlowApprover)
    workflow = workflow.add_edge(fan, "approver").build()
    assert workflow.concurrent
    result = await workflow.run(["a", "b"])
    first, second = (p.request_id for p in result.pending_requests)
    going = asyncio.ensure_future(workflow.run(responses={first: True}))
    await asyncio.sleep(0.01)  # (it waits in the response handler)
    with pytest.raises(
        sg.RequestError,
        match=f"request '{second}' is open in run '{result.run_id}', which another call is "
        f"continuing right now \\(answering '{first}'\\); answer it once that call returns",
    ):
        await workflow.run(responses={second: False})
    with pytest.raises(
        sg.RequestError,
        match=f"request '{first}' of run '{result.run_id}' is being answered right now",
    ):
        await workflow.run(responses={first: False})
    SlowApprover.release.set()
    partial = await going
    assert partial.outputs == ["a: True"] and [p.request_id for p in partial.pending_requests] == [
        second
    ]
    rest = await workflow.run(responses={second: False})
    assert rest.outputs == ["b: False"] and rest.status is sg.RunStatus.IDLE
    with pytest.raises(sg.RequestError, match="unknown request id 'nope'"):
        await workflow.run(responses={"nope": True})  # (the run is no longer going on)
