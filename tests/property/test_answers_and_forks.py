"""Answers, forks and edits over random graphs, against a reference model.

The graphs are ``test_random_graphs``' (chains, fan-outs, switches,
conditional edges, cycles; without fan-ins and maps, which group messages by
the superstep they arrive in, so that when an answer comes would change what
is sent). Every node asks for each message whose value is 1 mod 5, counts
its calls (its snapshot), and adds what it handled to the shared state under
a reducer. Whatever the order and timing of the answers, a run that is
answered to its end therefore yields one multiset of outputs, ends with one
shared state (as a sorted list) and one count per node — what ``model``
computes from the messages and requests a checkpoint holds.

Hypothesis answers the requests a few at a time, in memory or from the
checkpoint by a workflow built afresh, on the memory and SQLite stores; then
forks from any checkpoint of the lineage, edits one (``update_state``), or
cancels a call while its answers are being recorded — and the rest of the
run must be what the model says, every request answered once per run.
"""

from __future__ import annotations

import asyncio
import operator
import random
import tempfile
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, assume, event, given, settings
from hypothesis import strategies as st

import stepgraph as sg

from .test_random_graphs import Spec, behaviour, case, condition, graphs, value_of, wire

SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],  # (explaining is slow)
)
MAX_CALLS = 300  # calls of a whole run, in the model: longer graphs are not drawn


@dataclass(frozen=True)
class Ask:
    value: int


class Tally(sg.Executor):
    """A node: asks for every message whose value is 1 mod 5 (answered
    with the value plus one, then handled as that message would be),
    counts its calls (its snapshot) and adds each to ``state["seen"]``."""

    def __init__(self, index: int, jitter: random.Random, runs: list[Any]) -> None:
        super().__init__(f"n{index}")
        self.index = index
        self.jitter = jitter
        self.count = 0
        self.runs = runs  # (run id, forked_from) of every call

    def snapshot(self) -> int:
        return self.count

    def restore(self, snapshot: int) -> None:
        self.count = snapshot

    async def _call(self, what: str, sent: int, ctx: sg.WorkflowContext[int, str]) -> None:
        for _ in range(self.jitter.randrange(3)):
            await asyncio.sleep(0)
        self.count += 1
        self.runs.append((ctx.run_id, ctx.forked_from))
        ctx.state.set("seen", [f"n{self.index}:{what}"])
        await ctx.yield_output(f"n{self.index}:{what}")
        for value in behaviour(self.index, sent):
            await ctx.send_message(value)

    async def _handle(self, message: Any, ctx: sg.WorkflowContext[int, str]) -> None:
        value = value_of(message)
        if value % 5 == 1:
            self.count += 1
            self.runs.append((ctx.run_id, ctx.forked_from))
            ctx.state.set("seen", [f"n{self.index}:asked:{value}"])
            # (the id names the asker: read back through sub-workflows' paths)
            await ctx.request_info(Ask(value), int, request_id=f"{self.id}.{uuid.uuid4().hex}")
            await ctx.yield_output(f"n{self.index}:asked:{value}")
            return
        await self._call(str(value), value, ctx)

    @sg.handler
    async def on_int(self, message: int, ctx: sg.WorkflowContext[int, str]) -> None:
        await self._handle(message, ctx)

    @sg.handler
    async def on_list(self, message: list[int], ctx: sg.WorkflowContext[int, str]) -> None:
        await self._handle(message, ctx)

    @sg.response_handler
    async def answered(self, request: Ask, answer: int, ctx: sg.WorkflowContext[int, str]) -> None:
        await self._call(f"answer:{request.value}={answer}", answer, ctx)


@dataclass
class Graph:
    """One drawn graph: builds its workflow afresh, as another process would."""

    spec: Spec
    store: sg.CheckpointStore
    depth: int = 0  # how many sub-workflow levels wrap it
    durability: str = "sync"
    runs: list[Any] = field(default_factory=list)
    # Every request seen open: id -> (executor, asked value).
    asked: dict[str, tuple[str, int]] = field(default_factory=dict)

    def build(self) -> sg.Workflow:
        jitter = random.Random(self.spec.jitter_seed)
        nodes = [Tally(i, jitter, self.runs) for i in range(self.spec.size)]
        builder = sg.WorkflowBuilder(
            start=nodes[0],
            max_supersteps=200,
            name="tally",
            reducers={"seen": operator.add},
            checkpoints=self.config if not self.depth else None,
        )
        builder.add_executor(*nodes)
        workflow = wire(builder, self.spec, nodes.__getitem__, lambda _: None).build()
        for level in range(self.depth):
            outer = sg.WorkflowExecutor(workflow, id=f"w{level}", forward_outputs=True)
            store = self.config if level == self.depth - 1 else None
            workflow = sg.WorkflowBuilder(start=outer, name=f"level{level}", checkpoints=store)
            workflow = workflow.build()
        return workflow

    @property
    def config(self) -> sg.CheckpointConfig:
        return sg.CheckpointConfig(self.store, self.durability)  # type: ignore[arg-type]


# -- the model -------------------------------------------------------------------


def targets(spec: Spec, node: int, message: int) -> list[int]:
    """Where ``node``'s message goes (no fan-ins, no maps)."""
    found: list[int] = []
    for group in spec.groups:
        if node not in group.sources:
            continue
        if group.kind in ("edge", "fan_out") or (group.kind == "cond" and condition(message)):
            found += group.targets
        elif group.kind == "switch":
            found += group.targets[:1] if case(message) else group.targets[1:]
    return found


@dataclass
class Rest:
    """What a run does from some point to its end, every request answered:
    its outputs, what it adds to ``state["seen"]``, calls per node."""

    outputs: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)

    def __add__(self, other: Rest) -> Rest:
        return Rest(self.outputs + other.outputs, self.calls + other.calls)


def model(
    spec: Spec,
    messages: dict[str, list[Any]],
    answers: dict[str, tuple[str, int, int]],
    requests: list[tuple[str, int]],
) -> Rest:
    """The rest of a run whose next superstep delivers ``messages`` (by
    executor id) and ``answers`` ((executor, asked value, answer)), with
    ``requests`` open ((executor, asked value)), each answered with the
    value plus one. A call adds what it yields to ``state["seen"]``."""
    rest = Rest()
    work: deque[tuple[str, int, int | None]] = deque()  # (node, value, asked)
    for eid, inbox in messages.items():
        work.extend((eid, value_of(m), None) for m in inbox)
    work.extend((eid, answer, asked) for eid, asked, answer in answers.values())
    work.extend((eid, asked + 1, asked) for eid, asked in requests)
    while work:
        eid, value, asked = work.popleft()
        node = int(eid[1:])
        rest.calls[eid] += 1
        assume(sum(rest.calls.values()) <= MAX_CALLS)
        if asked is None and value % 5 == 1:
            rest.outputs[f"{eid}:asked:{value}"] += 1
            work.append((eid, value + 1, value))
            continue
        what = str(value) if asked is None else f"answer:{asked}={value}"
        rest.outputs[f"{eid}:{what}"] += 1
        for sent in behaviour(node, value):
            work.extend((f"n{t}", sent, None) for t in targets(spec, node, sent))
    return rest


def seen(rest: Rest) -> list[str]:
    """``state["seen"]`` at the end of a run whose whole is ``rest``, sorted."""
    return sorted(rest.outputs.elements())


def from_start(spec: Spec) -> Rest:
    return model(spec, {"n0": [spec.start_value]}, {}, [])


def plain(spec: Spec) -> Spec:
    """``spec`` without fan-ins and maps."""
    return replace(spec, groups=[g for g in spec.groups if g.kind != "fan_in"], maps=[])


# -- driving a run ---------------------------------------------------------------------


@contextmanager
def a_store(kind: str) -> Iterator[sg.CheckpointStore]:
    with tempfile.TemporaryDirectory() as folder:
        store = (
            sg.MemoryCheckpointStore()
            if kind == "memory"
            else sg.SqliteCheckpointStore(Path(folder) / "runs.sqlite")
        )
        try:
            yield store
        finally:
            store.close()


Draw = Callable[[st.SearchStrategy[Any]], Any]


async def answer_to_the_end(
    graph: Graph,
    result: sg.RunResult,
    workflow: sg.Workflow,
    draw: Draw | None,
    *,
    fork: bool = False,
    stored: bool = False,
) -> tuple[list[str], sg.RunResult, sg.Workflow]:
    """Answer ``result``'s requests until its run ends — all at once (no
    ``draw``), or a few at a time, in memory or from the checkpoint by a
    workflow built afresh. ``fork``: the first call forks off the
    checkpoint (on ``workflow``); ``stored``: every call answers from the
    checkpoint, on ``workflow``. Returns the outputs, the last result and
    the workflow that holds the run."""
    outputs: list[str] = []
    for _ in range(200):
        if result.status is sg.RunStatus.IDLE and not fork:
            return outputs, result, workflow
        call: dict[str, Any] = {}
        pending = result.pending_requests
        seen_open(graph, pending)
        if pending:
            some = draw(st.lists(st.sampled_from(pending), min_size=1, unique=True)) if draw else []
            call["responses"] = {p.request_id: p.request.value + 1 for p in some or pending}
        if fork or stored:
            call.update(checkpoint=result.last_checkpoint, fork=fork)
        elif draw is None or draw(st.booleans()):
            workflow = graph.build()  # another process goes on from the checkpoint
            call.update(checkpoint=result.last_checkpoint)
        fork = False
        result = await workflow.run(**call)
        outputs += result.outputs
    raise AssertionError("the run never ended")


def seen_open(graph: Graph, pending: list[sg.PendingRequest]) -> None:
    for p in pending:
        graph.asked[p.request_id] = (asker(p), p.request.value)


def asker(request: sg.PendingRequest) -> str:
    """The node that opened ``request``, however deep."""
    return request.request_id.rsplit("/", 1)[-1].split(".", 1)[0]


async def partly(
    graph: Graph, draw: Draw, rounds: int
) -> tuple[list[str], sg.RunResult, sg.Workflow]:
    """Start a run and answer up to ``rounds`` times, as drawn."""
    workflow = graph.build()
    result = await workflow.run(graph.spec.start_value)
    outputs = list(result.outputs)
    for _ in range(rounds):
        if result.status is not sg.RunStatus.IDLE_WITH_PENDING_REQUESTS:
            break
        pending = result.pending_requests
        seen_open(graph, pending)
        some = draw(st.lists(st.sampled_from(pending), min_size=1, unique=True))
        responses = {p.request_id: p.request.value + 1 for p in some}
        if draw(st.booleans()):
            workflow = graph.build()
            result = await workflow.run(responses=responses, checkpoint=result.last_checkpoint)
        else:
            result = await workflow.run(responses=responses)
        outputs += result.outputs
    return outputs, result, workflow


def refused(error: sg.RequestError, request_id: str) -> str:
    """The refusal of a second answer names the request and the checkpoint
    that recorded the first: that checkpoint's id."""
    message = str(error)
    assert "already answered" in message and repr(request_id) in message, message
    return message.split("(at checkpoint ", 1)[1].split(")", 1)[0]


async def ends(graph: Graph, checkpoint: str) -> tuple[list[str], dict[str, int]]:
    """``state["seen"]`` (sorted) and the nodes' counts (those that ran) at
    a checkpoint."""
    stored = await graph.build().get_state(checkpoint)
    counts = {eid: n for eid, n in stored.snapshots.items() if n}
    return sorted(stored.state.get("seen", [])), counts


def whole(graph: Graph, rest: Rest) -> tuple[list[str], dict[str, int]]:
    return seen(rest), dict(rest.calls)


async def pick(lineage: list[sg.CheckpointInfo], draw: Draw) -> sg.CheckpointInfo:
    """A checkpoint of the lineage, most often one with requests open."""
    asking = [cp for cp in lineage if cp.pending_requests]
    if asking and draw(st.integers(0, 3)):
        return draw(st.sampled_from(asking))  # type: ignore[no-any-return]
    return draw(st.sampled_from(lineage))  # type: ignore[no-any-return]


# -- forks -------------------------------------------------------------------------------


async def fork_anywhere(graph: Graph, draw: Draw) -> None:
    """Answer a run partway, fork it (on the same workflow object) from any
    checkpoint of its lineage and answer the fork to its end, then finish
    the original in memory: each is one whole run of the model, the fork
    refused nothing it answers again, and the original never noticed."""
    spec, store = graph.spec, graph.store
    expected = from_start(spec)
    before, result, workflow = await partly(graph, draw, draw(st.integers(0, 3)))
    original = result.run_id
    lineage = await store.list(original)
    info = await store.run_info(original)
    chosen = await pick(lineage, draw)
    at = await workflow.get_state(chosen.id)
    seen_open(graph, at.requests)
    # Without fork=True, a request answered along the run is refused, naming
    # the checkpoint that recorded its answer.
    for request in at.requests:
        answered = await store.answers(original, [request.request_id])
        if not answered:
            continue
        try:
            await graph.build().run(responses={request.request_id: 0}, checkpoint=chosen.id)
        except sg.RequestError as error:
            recorded = refused(error, request.request_id)
        else:
            raise AssertionError(f"{request.request_id} was answered twice")
        assert recorded == answered[request.request_id]
        assert request.request_id in (await workflow.get_state(recorded)).answers
        event("a second answer refused")
        break
    # The fork: a new run whose first checkpoint's parent is the one chosen.
    forked = sg.RunResult(
        run_id=original,
        status=sg.RunStatus(at.status) if at.requests else sg.RunStatus.IN_PROGRESS,
        outputs=[],
        pending_requests=at.requests,
        last_checkpoint=chosen.id,
    )
    event(f"forked with {'some' if at.requests else 'no'} requests open")
    event(f"the original {'waits' if result.pending_requests else 'ended'}")
    rest, ended, _ = await answer_to_the_end(graph, forked, workflow, draw, fork=True, stored=True)
    assert ended.status is sg.RunStatus.IDLE and ended.run_id != original
    [first, *_] = await store.list(ended.run_id)
    assert first.parent_id == chosen.id
    so_far = await store.outputs(chosen.id)
    assert Counter(so_far) + Counter(rest) == expected.outputs
    if not graph.depth:
        assert await ends(graph, ended.last_checkpoint or "") == whole(graph, expected)
        fork_calls = {f for r, f in graph.runs if r == ended.run_id}
        assert fork_calls <= {(original,)}, fork_calls
    # The original is as it was, and goes on in memory where it waited.
    again = await store.run_info(original)
    assert info is not None and again is not None
    assert (again.last_checkpoint, again.status, again.checkpoints) == (
        info.last_checkpoint,
        info.status,
        info.checkpoints,
    )
    after, done, _ = await answer_to_the_end(graph, result, workflow, draw)
    assert Counter(before) + Counter(after) == expected.outputs
    if not graph.depth:
        assert await ends(graph, done.last_checkpoint or "") == whole(graph, expected)
        assert {f for r, f in graph.runs if r == original} <= {()}


@SETTINGS
@given(graphs(), st.sampled_from(["memory", "sqlite"]), st.integers(0, 2), st.data())
def test_a_fork_from_any_checkpoint_leaves_the_original_alone(
    spec: Spec, kind: str, depth: int, data: st.DataObject
) -> None:
    spec = plain(spec)
    from_start(spec)  # (rejects graphs that run too long)
    with a_store(kind) as store:
        asyncio.run(fork_anywhere(Graph(spec, store, depth), data.draw))


# -- update_state ---------------------------------------------------------------------


def no_empty(messages: dict[str, list[Any]]) -> dict[str, list[Any]]:
    return {eid: inbox for eid, inbox in messages.items() if inbox}


async def edit_anywhere(graph: Graph, draw: Draw) -> None:
    """Answer a run partway, edit any checkpoint of its lineage (state,
    messages, requests dropped) and go on from the edit to the end: the
    edited checkpoint holds the edit, the original is unchanged, and the
    rest is the model's from the edited contents."""
    spec, store = graph.spec, graph.store
    expected = from_start(spec)
    before, result, workflow = await partly(graph, draw, draw(st.integers(0, 3)))
    run_id = result.run_id
    chosen = await pick(await store.list(run_id), draw)
    top = f"w{graph.depth - 1}" if graph.depth else None
    at = await workflow.get_state(chosen.id)
    seen_open(graph, at.requests)
    nodes = [f"n{i}" for i in range(spec.size)]
    state = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "note": st.integers(0, 9),
                "seen": st.lists(st.sampled_from(["x:1", "x:2"]), max_size=2),
            },
        )
    )
    messages = draw(
        st.dictionaries(st.sampled_from(nodes), st.lists(st.integers(0, 14), max_size=2))
    )
    if top is not None:  # (a new child run beside one waiting is refused)
        messages = {}
    dropped = draw(st.lists(st.sampled_from(at.requests), unique=True)) if at.requests else []
    kept = [r for r in at.requests if r not in dropped]
    original = await store.load(chosen.id)
    edited = await graph.build().update_state(
        chosen.id, state=state, messages=messages, drop_requests=[r.request_id for r in dropped]
    )
    assert (await store.load(chosen.id)).body == original.body
    now = await graph.build().get_state(edited)
    assert (now.run_id, now.parent_id, now.superstep) == (run_id, chosen.id, at.superstep)
    assert now.state == {**at.state, **state}
    assert no_empty(now.messages) == no_empty({**at.messages, **messages})
    assert now.answers == at.answers
    if top is None:
        assert now.snapshots == at.snapshots
    else:  # (the sub-workflow forgot the dropped requests)
        gone = {r.request_id for r in dropped}
        routes = {rid: r for rid, r in at.snapshots[top]["routes"].items() if rid not in gone}
        assert now.snapshots[top]["routes"] == routes
    assert [r.request_id for r in now.requests] == [r.request_id for r in kept]
    answers = {rid: (*graph.asked[rid], value) for rid, value in at.answers.items()}
    # (a sub-workflow's start: the child's own; its waiting messages and
    # requests are the child's, by the path of their ids)
    inboxes = {**at.messages, **messages} if top is None else {"n0": at.messages.get(top, [])}
    rest = model(spec, inboxes, answers, [(asker(r), r.request.value) for r in kept])
    # A dropped request is answered no more from the edit; one answered along
    # the run already is refused (naming where), as from any checkpoint.
    answered = await store.answers(run_id, [r.request_id for r in kept])
    for request in dropped[:1] + [r for r in kept if r.request_id in answered][:1]:
        try:
            await graph.build().run(responses={request.request_id: 0}, checkpoint=edited)
        except sg.RequestError as error:
            if request in kept:
                assert refused(error, request.request_id) == answered[request.request_id]
        else:
            raise AssertionError(f"{request.request_id} was answered from {edited}")
    # Going on from the edit (a fork: its requests may have been answered
    # along the original) is the model's rest.
    forked = sg.RunResult(
        run_id=run_id,
        status=sg.RunStatus.IDLE_WITH_PENDING_REQUESTS if kept else sg.RunStatus.IN_PROGRESS,
        outputs=[],
        pending_requests=kept,
        last_checkpoint=edited,
    )
    event(
        f"edited: {'some' if kept else 'no'} requests kept, {'some' if dropped else 'none'} dropped"
    )
    outputs, ended, _ = await answer_to_the_end(graph, forked, graph.build(), draw, fork=True)
    assert Counter(outputs) == rest.outputs
    if top is not None:
        assert await store.outputs(ended.last_checkpoint or "") == outputs
        return
    final = await graph.build().get_state(ended.last_checkpoint or "")
    assert sorted(final.state.get("seen", [])) == sorted([*now.state.get("seen", []), *seen(rest)])
    assert final.state.get("note") == state.get("note", at.state.get("note"))
    counts = Counter({eid: n for eid, n in now.snapshots.items()}) + rest.calls
    assert {eid: n for eid, n in final.snapshots.items() if n} == dict(counts)
    # The original lineage still ends as one whole run, from where it waited
    # (the copy kept in memory went on elsewhere: its checkpoint is named).
    if result.status is sg.RunStatus.IDLE_WITH_PENDING_REQUESTS:
        try:
            await workflow.run(responses={result.pending_requests[0].request_id: 0})
        except sg.RequestError as error:
            assert edited in str(error), error
        else:
            raise AssertionError("a run edited elsewhere was answered in memory")
    after, done, _ = await answer_to_the_end(graph, result, graph.build(), draw, stored=True)
    assert Counter(before) + Counter(after) == expected.outputs
    assert await ends(graph, done.last_checkpoint or "") == whole(graph, expected)


@SETTINGS
@given(graphs(), st.sampled_from(["memory", "sqlite"]), st.integers(0, 2), st.data())
def test_an_edited_checkpoint_goes_on_as_the_model_says(
    spec: Spec, kind: str, depth: int, data: st.DataObject
) -> None:
    """Sub-workflows' requests are dropped from the outermost run (their
    child runs forget them); their state and messages are not edited."""
    spec = plain(spec)
    from_start(spec)  # (rejects graphs that run too long)
    with a_store(kind) as store:
        asyncio.run(edit_anywhere(Graph(spec, store, depth), data.draw))


# -- cancelled while answering ---------------------------------------------------------


async def cancel_answering(graph: Graph, draw: Draw) -> None:
    """Answer a run partway, then cancel a call answering some of its
    requests — in memory or from the checkpoint — at a random moment: the
    run is given back, and either the answers were recorded (all of them, at
    one checkpoint: given again, in memory or from the checkpoint, they are
    refused naming it, and the run goes on from its last checkpoint) or
    none was (given again, they are taken). Either way the run's stored
    outputs end as the model's whole run, each answer handled once."""
    spec, store = graph.spec, graph.store
    expected = from_start(spec)
    _, result, workflow = await partly(graph, draw, draw(st.integers(0, 2)))
    if result.status is not sg.RunStatus.IDLE_WITH_PENDING_REQUESTS:
        event("nothing to answer")
        return
    run_id, waited = result.run_id, result.last_checkpoint
    pending = result.pending_requests
    seen_open(graph, pending)
    chosen = draw(st.lists(st.sampled_from(pending), min_size=1, unique=True))
    responses = {p.request_id: p.request.value + 1 for p in chosen}
    in_memory = draw(st.booleans())
    if in_memory:
        task = asyncio.ensure_future(workflow.run(responses=responses))
    else:
        call = graph.build().run(responses=responses, checkpoint=waited)
        task = asyncio.ensure_future(call)
    for _ in range(draw(st.integers(0, 40))):
        await asyncio.sleep(0)
    await asyncio.sleep(draw(st.sampled_from([0, 0, 0.001, 0.004])))
    task.cancel()
    try:
        done: sg.RunResult | None = await task
    except asyncio.CancelledError:
        done = None
    assert await store.lease_holder(run_id) is None  # (given back)
    recorded = await store.answers(run_id, list(responses))
    event(f"{'cancelled' if done is None else 'ended'}, answers {bool(recorded)}")
    if recorded or done is not None:
        assert set(recorded) == set(responses) and len(set(recorded.values())) == 1
        again = next(iter(responses))
        for answering in (
            lambda: workflow.run(responses={again: 0}),
            lambda: graph.build().run(responses={again: 0}, checkpoint=waited),
        ):
            try:
                await answering()
            except sg.RequestError as error:
                assert refused(error, again) == recorded[again]
            else:
                raise AssertionError(f"{again} was answered twice")
        info = await store.run_info(run_id)
        assert info is not None
        workflow = graph.build()
        going = await workflow.run(checkpoint=info.last_checkpoint)
    elif in_memory:
        going = await workflow.run(responses=responses)  # (still waiting for them)
    else:
        workflow = graph.build()
        going = await workflow.run(responses=responses, checkpoint=waited)
    _, ended, _ = await answer_to_the_end(graph, going, workflow, draw)
    outputs = await store.outputs(ended.last_checkpoint or "")
    assert Counter(outputs) == expected.outputs
    if not graph.depth:
        assert await ends(graph, ended.last_checkpoint or "") == whole(graph, expected)


@SETTINGS
@given(
    graphs(),
    st.sampled_from(["memory", "sqlite"]),
    st.sampled_from(["sync", "async"]),
    st.integers(0, 2),
    st.data(),
)
def test_a_call_cancelled_while_answering_leaves_the_run_answerable_once(
    spec: Spec, kind: str, durability: str, depth: int, data: st.DataObject
) -> None:
    spec = plain(spec)
    from_start(spec)  # (rejects graphs that run too long)
    with a_store(kind) as store:
        graph = Graph(spec, store, depth, durability)
        asyncio.run(cancel_answering(graph, data.draw))
