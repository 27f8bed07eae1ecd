"""What the run service says about a run agrees with the store, whichever
server asks and whatever changed the store (tests/serve/conftest.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import stepgraph as sg
from stepgraph._checkpoint._leases import new_holder
from stepgraph._checkpoint._model import answered_twice
from stepgraph._serve import Problem
from stepgraph._serve._refusals import refusal
from stepgraph._serve._shutdown import INTERRUPTED

from . import flows
from .conftest import sse
from .test_api import wait_for


@pytest.fixture(autouse=True)
def _no_holds() -> Iterator[None]:
    yield
    flows.HOLD_AT = None  # (a run still held goes on, so its server can stop)


def until(check: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)
    return value


def hold_at(steps: int) -> None:
    """Hold ``counting`` runs at the superstep handling ``steps``; once one
    waits there, return."""
    flows.HOLD_AT = steps
    until(lambda: flows.holding == steps, f"a run to hold at steps={steps}")


def in_other_process(path: Path, fn: Callable[[sg.SqliteCheckpointStore], Any]) -> Any:
    """``fn(store)`` on a store of its own on the file, as the CLI would."""
    store = sg.SqliteCheckpointStore(path)
    try:
        return asyncio.run(fn(store))
    finally:
        store.close()


def test_outputs_of_a_run_going_on_are_its_branchs_and_those_it_yielded_since(serve):
    server = serve(flows.counting)
    all_four = ["left 4", "left 3", "left 2", "left 1"]
    with server.client() as client:
        run_id = client.post("/api/workflows/counting/runs", json={"input": {"steps": 4}}).json()[
            "run_id"
        ]
        run = wait_for(client, run_id, "idle")
        assert run["outputs"] == all_four

        # Replayed from superstep 1, held in the first superstep it runs
        # (nothing of the replay stored yet): the branch it left is not its.
        early = run["checkpoints"][1]
        assert early["superstep"] == 1
        flows.HOLD_AT = 3
        body = {"checkpoint_id": early["checkpoint_id"]}
        assert client.post(f"/api/runs/{run_id}/resume", json=body).status_code == 202
        hold_at(3)
        going = client.get(f"/api/runs/{run_id}").json()
        assert going["live"] and going["outputs"] == ["left 4"]
        # A superstep on (its output stored or not yet): that output too.
        hold_at(2)
        assert client.get(f"/api/runs/{run_id}").json()["outputs"] == ["left 4", "left 3"]
        flows.HOLD_AT = None
        assert wait_for(client, run_id, "idle")["outputs"] == all_four

        # A new run, held in its third superstep: the same.
        flows.HOLD_AT = 2
        run_id = client.post("/api/workflows/counting/runs", json={"input": {"steps": 4}}).json()[
            "run_id"
        ]
        hold_at(2)
        going = client.get(f"/api/runs/{run_id}").json()
        assert going["live"] and going["outputs"] == ["left 4", "left 3"]
        flows.HOLD_AT = None
        assert wait_for(client, run_id, "idle")["outputs"] == all_four


def test_a_run_going_on_is_read_back_only_as_far_as_the_last_look(serve, tmp_path):
    """Each look at a run going on reads its outputs from the store only
    back to the checkpoint the previous look read up to (``after=``) — a
    long run's details cost what its newest checkpoints hold — and says the
    same as reading the whole lineage."""
    store = sg.SqliteCheckpointStore(tmp_path / "looks.sqlite")
    afters: list[str | None] = []
    whole = store.outputs

    async def outputs(checkpoint_id: str, *, after: str | None = None) -> list[Any]:
        afters.append(after)
        return await whole(checkpoint_id, after=after)

    counted = store.outputs_slice

    async def outputs_slice(checkpoint_id: str, offset: int, limit: int | None) -> Any:
        afters.append(None)  # (the whole lineage read back: its newest kept)
        return await counted(checkpoint_id, offset, limit)

    store.outputs = outputs  # type: ignore[method-assign]
    store.outputs_slice = outputs_slice  # type: ignore[method-assign]
    server = serve(flows.counting, store=store)
    with server.client() as client:
        flows.HOLD_AT = 10
        run_id = client.post("/api/workflows/counting/runs", json={"input": {"steps": 12}}).json()[
            "run_id"
        ]
        for step in (10, 7, 6, 3):
            hold_at(step)
            # (once its checkpoints up to here are stored: async saves lag)
            going = until(
                lambda step=step: (
                    (r := client.get(f"/api/runs/{run_id}").json())["supersteps"] == 12 - step and r
                ),
                f"superstep {12 - step} stored",
            )
            assert going["live"] and going["outputs"] == [f"left {n}" for n in range(12, step, -1)]
            looked = len(afters)
        flows.HOLD_AT = None
        done = wait_for(client, run_id, "idle")
        assert done["outputs"] == [f"left {n}" for n in range(12, 0, -1)]
    # Read whole at the first look (counted, only the newest kept), then each
    # look only since the last one; once the run ended, whole again (once).
    assert afters[0] is None and None not in afters[1:looked], afters
    assert afters[-1] is None and afters[looked:].count(None) == 1, afters


def test_a_prune_elsewhere_shows_on_a_server_that_had_shown_the_run(serve, tmp_path):
    path = tmp_path / "pruned.sqlite"
    server = serve(flows.counting, store=sg.SqliteCheckpointStore(path))
    with server.client() as client:
        run_id = client.post("/api/workflows/counting/runs", json={"input": {"steps": 10}}).json()[
            "run_id"
        ]
        assert len(wait_for(client, run_id, "idle")["outputs"]) == 10
        assert in_other_process(path, lambda store: store.prune(run_id, keep_last=2)) == 9
        pruned = client.get(f"/api/runs/{run_id}").json()
    fresh = serve(flows.counting, store=sg.SqliteCheckpointStore(path))
    with fresh.client() as client:
        assert client.get(f"/api/runs/{run_id}").json()["outputs"] == pruned["outputs"]
    assert pruned["outputs"] == ["left 2", "left 1"] and len(pruned["checkpoints"]) == 2


def test_the_events_of_a_run_deleted_elsewhere_are_gone_too(serve, tmp_path):
    path = tmp_path / "deleted.sqlite"
    server = serve(flows.gate, store=sg.SqliteCheckpointStore(path))
    with server.client() as client:
        run_id = client.post("/api/workflows/gate/runs", json={"input": "q"}).json()["run_id"]
        wait_for(client, run_id, "idle_with_pending_requests")
        assert sse(client, run_id)[-1] == {"status": "idle_with_pending_requests", "kind": "end"}
        assert in_other_process(path, lambda store: store.delete_run(run_id)) > 0
        for path_ in (f"/api/runs/{run_id}/events", f"/api/runs/{run_id}"):
            gone = client.get(path_)
            assert gone.status_code == 404 and run_id in gone.json()["error"], (path_, gone.text)
    assert run_id not in server.service.logs  # (forgotten here too)


def test_the_stream_of_a_run_another_server_went_on_with_ends_with_its_status_now(serve):
    # The server that ran the run to its question kept its event log, and its
    # stream ended with the status that log last saw, "idle_with_pending_requests",
    # though another server had answered and run it to its end.
    a = serve(flows.gate)
    b = serve(flows.gate)  # (the same store file)
    with a.client() as on_a, b.client() as on_b:
        run_id = on_a.post("/api/workflows/gate/runs", json={"input": "go?"}).json()["run_id"]
        [request] = wait_for(on_a, run_id, "idle_with_pending_requests")["pending_requests"]
        answer = {"responses": {request["request_id"]: True}}
        assert on_b.post(f"/api/runs/{run_id}/responses", json=answer).status_code == 202
        assert wait_for(on_b, run_id, "idle")["outputs"] == ["go?: yes"]
        assert on_a.get(f"/api/runs/{run_id}").json()["status"] == "idle"
        heard = sse(on_a, run_id)
        assert heard[-2]["status"] == "idle_with_pending_requests"  # (where a left it)
        assert heard[-1] == {"status": "idle", "kind": "end"}
        # A run followed while it goes on here ends with how it ended here.
        run_id = on_a.post("/api/workflows/gate/runs", json={"input": "again?"}).json()["run_id"]
        assert sse(on_a, run_id)[-1] == {"status": "idle_with_pending_requests", "kind": "end"}


class _Gate2(sg.Executor):
    """``gate``'s next version: another executor, asking for a number."""

    @sg.handler
    async def ask(self, text: str, ctx: sg.WorkflowContext[None, str]) -> None:
        await ctx.request_info(text, int)

    @sg.response_handler
    async def decided(self, text: str, n: int, ctx: sg.WorkflowContext[None, str]) -> None:
        await ctx.yield_output(f"{text}: {n}")


def _gate_v2() -> sg.Workflow:
    return sg.WorkflowBuilder(start=_Gate2("gate2"), name="gate").build()


def test_a_run_of_another_graph_of_the_workflow_is_refused_naming_it_not_a_500(serve):
    # Two servers on one store serving two versions of "gate" (a rolling
    # upgrade): the run's page and an answer on the other were a 500 (the
    # checkpoint's graph differs), where its resume and fork were a 409.
    a = serve(flows.gate)
    b = serve(_gate_v2)  # (the same store file)
    with a.client() as on_a, b.client() as on_b:
        run_id = on_a.post("/api/workflows/gate/runs", json={"input": "go?"}).json()["run_id"]
        waiting = wait_for(on_a, run_id, "idle_with_pending_requests")
        [request] = waiting["pending_requests"]
        answer = {"responses": {request["request_id"]: True}}
        first = {"checkpoint_id": waiting["checkpoints"][0]["checkpoint_id"]}
        for refused in (
            on_b.get(f"/api/runs/{run_id}"),
            on_b.post(f"/api/runs/{run_id}/responses", json=answer),
            on_b.post(f"/api/runs/{run_id}/fork", json=first),
        ):
            assert refused.status_code == 409, refused.text
            assert "was written by workflow 'gate' with a different graph" in refused.text
        assert on_b.get("/api/runs").json()["runs"][0]["run_id"] == run_id
        assert on_a.post(f"/api/runs/{run_id}/responses", json=answer).status_code == 202
        assert wait_for(on_a, run_id, "idle")["outputs"] == ["go?: yes"]


def answer_twice_at_once(server: Any, run_id: str, answers: list[dict[str, Any]]) -> list[Any]:
    """Each answer sent to the server at the same moment (one event loop
    turn): what each call gave, a run id or the ``Problem``."""

    async def both() -> list[Any]:
        calls = [server.service.respond(run_id, a) for a in answers]
        return await asyncio.gather(*calls, return_exceptions=True)

    return server.call(both)  # type: ignore[no-any-return]


def test_of_two_answers_to_one_request_in_one_server_the_second_is_answered_already(serve):
    server = serve(flows.gate)
    with server.client() as client:
        run_id = client.post("/api/workflows/gate/runs", json={"input": "go?"}).json()["run_id"]
        [request] = wait_for(client, run_id, "idle_with_pending_requests")["pending_requests"]
        rid = request["request_id"]
        won, lost = answer_twice_at_once(server, run_id, [{rid: True}, {rid: False}])
        assert won == run_id
        assert isinstance(lost, Problem) and lost.status == 409, lost
        assert f"request {rid!r} of run {run_id} was answered already" in lost.message
        assert "elsewhere" not in lost.message and "process" not in lost.message
        assert wait_for(client, run_id, "idle")["outputs"] == ["go?: yes"]
        # Later, the checkpoint that recorded it is named.
        again = client.post(f"/api/runs/{run_id}/responses", json={"responses": {rid: False}})
        assert again.status_code == 409 and "answered already (at checkpoint" in again.text


def test_refusals_tell_an_http_client_the_apis_way_not_pythons_or_the_clis(serve):
    # (a trial was told "fork the run: run(..., fork=True), or stepgraph run --fork")
    server = serve(flows.gate)
    fork_route = 'POST /api/runs/{}/fork with {{"checkpoint_id": ...}}'
    with server.client() as client:
        run_id = client.post("/api/workflows/gate/runs", json={"input": "go?"}).json()["run_id"]
        [request] = wait_for(client, run_id, "idle_with_pending_requests")["pending_requests"]
        rid = request["request_id"]
        answer = {"responses": {rid: True}}
        other = new_holder()  # (another process's call, as the engine sees it)
        assert server.call(lambda: server.store.lease(run_id, other)) is None
        busy = client.post(f"/api/runs/{run_id}/responses", json=answer)
        assert busy.status_code == 409, busy.text
        assert busy.json()["error"].startswith(f"run {run_id} is being continued elsewhere (")
        assert busy.json()["error"].endswith(
            "a run goes on in one place at a time: wait for it to stop, or fork it: "
            + fork_route.format(run_id)
        )
        server.call(lambda: server.store.release(run_id, other))
        assert client.post(f"/api/runs/{run_id}/responses", json=answer).status_code == 202
        wait_for(client, run_id, "idle")
        again = client.post(f"/api/runs/{run_id}/responses", json=answer)
        at = server.call(lambda: server.store.answers(run_id, [rid]))[rid]
        said = (
            f"request {rid!r} of run {run_id} was answered already (at checkpoint {at}); "
            f"to answer it anew from an earlier checkpoint, fork it: {fork_route.format(run_id)}"
        )
        assert (again.status_code, again.json()["error"]) == (409, said)
    # The store's own refusal of a second answer (two servers racing) reads the same.
    refused = refusal(answered_twice(run_id, rid, at))
    assert (refused.status, refused.message) == (409, said)
    for text in (busy.text, again.text, refused.message):
        assert "fork=True" not in text and "stepgraph run" not in text


def test_of_two_resumes_at_once_in_one_server_the_second_waits_for_the_first(serve):
    flows.STEP = 0.05
    server = serve(flows.slow)
    try:
        with server.client() as client:
            body = {"input": {"steps": 400}}
            run_id = client.post("/api/workflows/slow/runs", json=body).json()["run_id"]
            assert client.post(f"/api/runs/{run_id}/cancel", json={}).status_code == 202
            wait_for(client, run_id, "cancelled")

            async def both() -> list[Any]:
                calls = [server.service.resume(run_id, None, fork=False) for _ in range(2)]
                return await asyncio.gather(*calls, return_exceptions=True)

            won, lost = server.call(both)
            assert won == run_id
            assert isinstance(lost, Problem) and lost.status == 409, lost
            assert lost.message == (
                f"run {run_id} is still running; answer or resume it once it stops"
            )
            assert client.post(f"/api/runs/{run_id}/cancel", json={}).status_code == 202
    finally:
        flows.STEP = 0.05


def test_a_resume_that_would_run_nothing_is_refused_saying_what_to_do(serve):
    server = serve(flows.gate)
    with server.client() as client:
        run_id = client.post("/api/workflows/gate/runs", json={"input": "q"}).json()["run_id"]
        waiting = wait_for(client, run_id, "idle_with_pending_requests")
        refused = client.post(f"/api/runs/{run_id}/resume", json={})
        assert refused.status_code == 409
        assert f"run {run_id} waits for answers" in refused.json()["error"]
        assert "/responses" in refused.json()["error"]

        [request] = waiting["pending_requests"]
        body = {"responses": {request["request_id"]: True}}
        assert client.post(f"/api/runs/{run_id}/responses", json=body).status_code == 202
        done = wait_for(client, run_id, "idle")
        events = len(sse(client, run_id))
        for checkpoint in (None, done["checkpoints"][-1]["checkpoint_id"]):
            body = {"checkpoint_id": checkpoint} if checkpoint else {}
            refused = client.post(f"/api/runs/{run_id}/resume", json=body)
            assert refused.status_code == 409, refused.text
            assert f"run {run_id} is idle at checkpoint" in refused.json()["error"]
            assert "nothing is left to run" in refused.json()["error"]
        asked_at = waiting["checkpoints"][-1]["checkpoint_id"]
        refused = client.post(f"/api/runs/{run_id}/resume", json={"checkpoint_id": asked_at})
        assert refused.status_code == 409, refused.text
        assert (
            f'POST /api/runs/{run_id}/fork with {{"checkpoint_id": "{asked_at}"}}'
            in (refused.json()["error"])
        )
        assert len(sse(client, run_id)) == events  # (nothing ran)
        after = client.get(f"/api/runs/{run_id}").json()
        assert (after["status"], after["checkpoints"]) == ("idle", done["checkpoints"])
        # From the start it runs again: the question is asked anew.
        first = done["checkpoints"][0]["checkpoint_id"]
        replay = client.post(f"/api/runs/{run_id}/resume", json={"checkpoint_id": first})
        assert replay.status_code == 202, replay.text
        assert wait_for(client, run_id, "idle_with_pending_requests")["outputs"] == []


def test_a_run_going_on_here_lists_the_requests_its_status_says_it_waits_for(serve):
    # (a trial saw `in_progress_pending_requests`, and even
    # `idle_with_pending_requests`, with `pending_requests: []` just after the start)
    server = serve(flows.asking)
    with server.client() as client:
        flows.HOLD_AT = 2
        run_id = client.post("/api/workflows/asking/runs", json={"input": {"steps": 3}}).json()[
            "run_id"
        ]
        hold_at(2)
        going = until(
            lambda: (
                (d := client.get(f"/api/runs/{run_id}").json())["status"]
                == "in_progress_pending_requests"
                and d
            ),
            "the run to say it waits for an answer",
        )
        assert going["live"]
        assert [r["request"] for r in going["pending_requests"]] == ["go on from 3?"]
        assert going["pending_requests"][0]["response_type"] == "bool"
        listed = client.get("/api/runs?workflow=asking").json()["runs"][0]
        assert listed["status"] == "in_progress_pending_requests"
        assert listed["pending_requests"] == 1
        flows.HOLD_AT = None
        ended = wait_for(client, run_id, "idle_with_pending_requests")
        assert [r["request"] for r in ended["pending_requests"]] == ["go on from 3?"]
        request_id = ended["pending_requests"][0]["request_id"]
        body = {"responses": {request_id: True}}
        assert client.post(f"/api/runs/{run_id}/responses", json=body).status_code == 202
        done = wait_for(client, run_id, "idle")
        assert done["pending_requests"] == []


def test_a_run_just_started_never_says_it_waits_without_listing_what_for(serve):
    # Looked at over and over as it starts and goes idle waiting: whatever
    # moment a look catches (its first save not made, or ending meanwhile),
    # the status and the requests agree, in its details and in the list.
    server = serve(flows.gate)
    seen: set[str] = set()
    with server.client() as client:
        for _ in range(15):
            run_id = client.post("/api/workflows/gate/runs", json={"input": "x"}).json()["run_id"]
            while True:
                run = client.get(f"/api/runs/{run_id}").json()
                listed = client.get("/api/runs?workflow=gate&limit=1").json()["runs"][0]
                seen.add(run["status"])
                if run["status"].endswith("pending_requests"):
                    assert len(run["pending_requests"]) == 1, run
                if listed["status"].endswith("pending_requests"):
                    assert listed["pending_requests"] == 1, listed
                if not run["live"] and run["status"] == "idle_with_pending_requests":
                    break
    assert "idle_with_pending_requests" in seen


class _RecordingLate(sg.PostgresCheckpointStore):
    """A store whose server, stopping, is slow to record a run as
    interrupted: ``meanwhile()`` runs first (in a thread), once."""

    meanwhile: Callable[[], None] | None = None

    async def set_status(self, run_id: str, status: str, error: str | None = None) -> None:
        if error == INTERRUPTED and (meanwhile := self.meanwhile) is not None:
            self.meanwhile = None
            await asyncio.to_thread(meanwhile)
        await super().set_status(run_id, status, error)


def test_a_server_stopping_never_marks_interrupted_a_run_another_server_went_on_with(serve, pg_dsn):
    # Stopping, a server read each run's status, then recorded the run as
    # interrupted in a second call: a resume by another server between the
    # two went on, ended idle, and was listed as cancelled (interrupted).
    a_store = _RecordingLate(pg_dsn)
    a = serve(flows.counting, store=a_store)
    b = serve(flows.counting, store=sg.PostgresCheckpointStore(pg_dsn))
    with a.client() as on_a, b.client() as on_b:
        flows.HOLD_AT = 2
        run_id = on_a.post("/api/workflows/counting/runs", json={"input": {"steps": 3}}).json()[
            "run_id"
        ]
        hold_at(2)
        resumed: list[int] = []

        def resume_on_b() -> None:
            flows.HOLD_AT = None
            answer = on_b.post(f"/api/runs/{run_id}/resume", json={})
            resumed.append(answer.status_code)
            if answer.status_code == 202:
                wait_for(on_b, run_id, "idle")
            else:  # (refused while the stopping server records the run)
                assert "being continued elsewhere" in answer.json()["error"], answer.text

        a_store.meanwhile = resume_on_b
        a.stop()
        assert resumed, "the stopping server recorded no run as interrupted"
        if resumed == [202]:  # (it went on, and had ended, before the record)
            done = on_b.get(f"/api/runs/{run_id}").json()
        else:
            stopped = on_b.get(f"/api/runs/{run_id}").json()
            assert (stopped["status"], stopped["interrupted"]) == ("cancelled", True)
            assert on_b.post(f"/api/runs/{run_id}/resume", json={}).status_code == 202
            done = wait_for(on_b, run_id, "idle")
        assert (done["status"], done["error"], done["interrupted"]) == ("idle", None, False)
        assert done["outputs"] == ["left 3", "left 2", "left 1"]


def test_a_run_started_on_one_server_is_found_at_once_by_another(serve, pg_dsn):
    # (a load balancer may send a client's next call to another server: that
    # one said "no run ... in the store" for 10-60 ms after the 201, until
    # the run's first checkpoint was written in the background)
    a = serve(flows.gate, store=sg.PostgresCheckpointStore(pg_dsn))
    b = serve(flows.gate, store=sg.PostgresCheckpointStore(pg_dsn))
    with a.client() as on_a, b.client() as on_b:
        for n in range(10):
            started = on_a.post("/api/workflows/gate/runs", json={"input": f"q{n}"})
            assert started.status_code == 201, started.text
            run_id = started.json()["run_id"]
            seen = on_b.get(f"/api/runs/{run_id}")
            assert seen.status_code == 200, seen.text
            assert seen.json()["workflow"] == "gate"
            first = seen.json()["checkpoints"][0]["checkpoint_id"]
            forked = on_b.post(f"/api/runs/{run_id}/fork", json={"checkpoint_id": first})
            assert forked.status_code == 201, forked.text
            fork = on_a.get(f"/api/runs/{forked.json()['run_id']}")
            assert fork.status_code == 200, fork.text


class _SlowAnswers(sg.SqliteCheckpointStore):
    """Records answers slowly, saying when it began (``recording``)."""

    recording: threading.Event

    async def save(self, *checkpoints: sg.Checkpoint) -> None:
        if any(c.answered for c in checkpoints):
            self.recording.set()
            await asyncio.sleep(0.5)
        await super().save(*checkpoints)


def test_a_call_the_server_stops_under_is_refused_as_stopping_not_a_500(serve, tmp_path):
    # (an answer sent as the server was told to stop got a bare "Internal
    # Server Error", the server logging a CancelledError's traceback)
    store = _SlowAnswers(tmp_path / "slow.sqlite")
    store.recording = threading.Event()
    server = serve(flows.gate, store=store)
    with server.client() as client:
        run_id = client.post("/api/workflows/gate/runs", json={"input": "q"}).json()["run_id"]
        waiting = wait_for(client, run_id, "idle_with_pending_requests")
        body = {"responses": {waiting["pending_requests"][0]["request_id"]: True}}
        with ThreadPoolExecutor(1) as other:
            answer = other.submit(client.post, f"/api/runs/{run_id}/responses", json=body)
            assert store.recording.wait(10)
            server.call(server.service.close)
            refused = answer.result(20)
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"].startswith("the server is stopping")
    again = serve(flows.gate, store=sg.SqliteCheckpointStore(tmp_path / "slow.sqlite"))
    with again.client() as client:  # (asked again, once a server is back)
        assert client.post(f"/api/runs/{run_id}/responses", json=body).status_code == 202
        assert wait_for(client, run_id, "idle")["outputs"] == ["q: yes"]
