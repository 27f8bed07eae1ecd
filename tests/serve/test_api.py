"""The HTTP API against a real server on loopback (tests/serve/conftest.py)."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from typing import Any
from urllib.parse import quote

import httpx
import pytest

import stepgraph as sg
from stepgraph._recorder import CANCELLED_ON_REQUEST
from stepgraph._serve import INTERRUPTED, RunService, ServedWorkflow

from . import flows
from .conftest import sse


def wait_for(
    client: httpx.Client, run_id: str, *statuses: str, timeout: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = client.get(f"/api/runs/{run_id}").json()
        if run.get("status") in statuses and not run.get("live"):
            return run
        assert time.monotonic() < deadline, f"run {run_id} stayed {run.get('status')}"
        time.sleep(0.02)


def test_workflows_are_listed_with_schema_and_graph(serve):
    server = serve(flows.gate, flows.slow)
    with server.client() as client:
        listed = client.get("/api/workflows").json()
    by_name = {w["name"]: w for w in listed}
    assert sorted(by_name) == ["gate", "slow"]
    assert by_name["gate"]["input_schema"] == {"type": "string"}
    assert by_name["gate"]["description"] == "One question, one answer."
    assert by_name["gate"]["graph"] == {
        "nodes": [{"id": "gate", "label": "gate", "kind": "executor", "start": True}],
        "edges": [],
    }
    job = by_name["slow"]["input_schema"]
    assert job["properties"]["steps"] == {"title": "Steps", "type": "integer"}
    assert job["required"] == ["steps"]


def test_a_run_is_started_answered_once_and_streamed(serve):
    server = serve(flows.gate)
    with server.client() as client:
        started = client.post("/api/workflows/gate/runs", json={"input": "ship <it> [now]? ü"})
        assert started.status_code == 201, started.text
        run_id = started.json()["run_id"]
        first = sse(client, run_id)
        kinds = [e["kind"] for e in first]
        assert kinds[0] == "run_started" and kinds[-1] == "end"
        assert "request_info" in kinds
        ids = [e["id"] for e in first[:-1]]
        assert ids == list(range(ids[0], ids[0] + len(ids)))  # one apart, in order
        run = wait_for(client, run_id, "idle_with_pending_requests")
        [request] = run["pending_requests"]
        assert request["request"] == "ship <it> [now]? ü"
        assert request["response_schema"] == {"type": "boolean"}
        rid = request["request_id"]

        wrong = client.post(f"/api/runs/{run_id}/responses", json={"responses": {rid: "yes"}})
        assert wrong.status_code == 422 and rid in wrong.json()["error"]
        unknown = client.post(f"/api/runs/{run_id}/responses", json={"responses": {"nope": True}})
        assert unknown.status_code == 404 and "'nope'" in unknown.json()["error"]

        answered = client.post(f"/api/runs/{run_id}/responses", json={"responses": {rid: True}})
        assert answered.status_code == 202, answered.text
        assert answered.json() == {"run_id": run_id}
        rest = sse(client, run_id, last=ids[-1])
        assert rest[0]["id"] == ids[-1] + 1  # numbering goes on
        assert [e["kind"] for e in rest if e["kind"] == "output"] == ["output"]
        run = wait_for(client, run_id, "idle")
        assert run["outputs"] == ["ship <it> [now]? ü: yes"]
        assert run["pending_requests"] == []
        again = client.post(f"/api/runs/{run_id}/responses", json={"responses": {rid: False}})
        assert again.status_code == 409
        assert rid in again.json()["error"] and "answered already" in again.json()["error"]
        # The whole stream, read again after the end, is the two parts.
        assert sse(client, run_id) == first[:-1] + rest


def test_bad_requests_are_refused_naming_the_problem(serve):
    server = serve(flows.gate, flows.slow)
    with server.client() as client:
        cases = [
            (client.post("/api/workflows/gate/runs", json={"input": 5}), 422, "the input"),
            (client.post("/api/workflows/slow/runs", json={"input": {"steps": "x"}}), 422, "steps"),
            (client.post("/api/workflows/nope/runs", json={"input": "x"}), 404, "'nope'"),
            (client.post("/api/workflows/gate/runs", json={}), 422, "no input"),
            (client.post("/api/workflows/gate/runs", json=[1]), 422, "JSON object"),
            (
                client.post(
                    "/api/workflows/gate/runs",
                    content=b"{nope",
                    headers={"Content-Type": "application/json"},
                ),
                400,
                "not valid JSON",
            ),
            (client.post("/api/workflows/gate/runs", data={"input": "x"}), 415, "JSON"),
            (client.get("/api/runs/nope"), 404, "'nope'"),
            (client.get("/api/runs/nope/events"), 404, "'nope'"),
            (client.post("/api/runs/nope/cancel", json={}), 404, "'nope'"),
            (client.get("/api/runs?limit=0"), 422, "limit"),
            (client.get("/api/runs?status=bogus"), 422, "unknown status 'bogus'"),
            (client.get("/api/nothing"), 404, "/api/nothing"),
            (client.delete("/api/runs"), 405, "DELETE"),
        ]
        for response, status, words in cases:
            assert response.status_code == status, (response.request.url, response.text)
            assert words in response.json()["error"], response.json()
        assert "Traceback" not in str([r.text for r, _, _ in cases])


def test_a_body_that_is_not_utf8_is_refused_saying_so(serve):
    # (binary bytes were "not valid JSON: Expecting value", and a body in
    # UTF-16 or UTF-32 with its byte-order mark, which json.loads reads from
    # bytes, started a run)
    server = serve(flows.gate)
    json_type = {"Content-Type": "application/json"}
    with server.client() as client:
        for content, byte in [
            (b"\xff\xfe\x00", 0),
            ('{"input": "q"}'.encode("utf-16"), 0),
            ('{"input": "q"}'.encode("utf-32"), 0),
            (b'{"input": "caf\xe9"}', 14),
        ]:
            refused = client.post("/api/workflows/gate/runs", content=content, headers=json_type)
            assert refused.status_code == 400, (content, refused.text)
            assert refused.json()["error"] == (
                f"the body is not UTF-8 text (byte {byte} cannot be read)"
            ), content
        assert client.get("/api/runs").json()["runs"] == []
        # UTF-8 with a byte-order mark is UTF-8.
        marked = '\ufeff{"input": "q"}'.encode()
        started = client.post("/api/workflows/gate/runs", content=marked, headers=json_type)
        assert started.status_code == 201, started.text


def test_a_body_field_a_call_does_not_take_is_refused_naming_it(serve):
    # (a misspelt checkpoint_id resumed the run from its latest checkpoint,
    # and a start's or an answer's extra field was dropped without a word)
    server = serve(flows.gate, flows.slow)
    with server.client() as client:
        run_id = client.post("/api/workflows/gate/runs", json={"input": "q"}).json()["run_id"]
        run = wait_for(client, run_id, "idle_with_pending_requests")
        [request] = run["pending_requests"]
        checkpoint = run["checkpoints"][0]["checkpoint_id"]
        cases = [
            ("/api/workflows/gate/runs", {"input": "q", "inputs": "r"}, "'inputs'", "'input'"),
            (
                f"/api/runs/{run_id}/responses",
                {"responses": {request["request_id"]: True}, "fork": True},
                "'fork'",
                "'responses'",
            ),
            (f"/api/runs/{run_id}/resume", {"checkpoint": checkpoint}, "'checkpoint'", "_id'"),
            (f"/api/runs/{run_id}/fork", {"checkpoint_id": checkpoint, "x": 1}, "'x'", "_id'"),
            (f"/api/runs/{run_id}/cancel", {"now": True}, "'now'", "takes no field"),
        ]
        for path, body, field, takes in cases:
            refused = client.post(path, json=body)
            assert refused.status_code == 422, (path, refused.text)
            error = refused.json()["error"]
            assert f"unknown field {field}" in error and takes in error, error
        # Nothing of that went through: the run still waits, and only its own runs are listed.
        assert client.get(f"/api/runs/{run_id}").json()["status"] == "idle_with_pending_requests"
        assert [r["run_id"] for r in client.get("/api/runs").json()["runs"]] == [run_id]
        schema = client.get("/openapi.json").json()["paths"]["/api/runs/{run_id}/resume"]
        body_schema = schema["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body_schema["additionalProperties"] is False


def test_refusals_quote_at_most_100_characters_of_what_a_client_sent(serve):
    # (a 50,000-character id came back whole in each refusal's body)
    server = serve(flows.gate, flows.slow)
    long = "é" + "x" * 49_999
    cut = f"{long[:100]!r}... (49,900 more characters)"
    with server.client() as client:
        run_id = client.post("/api/workflows/gate/runs", json={"input": "q"}).json()["run_id"]
        wait_for(client, run_id, "idle_with_pending_requests")
        cases = [
            (client.get(f"/api/runs/{long}"), 404, f"no run {cut} in the store"),
            (client.get(f"/api/runs/{long}/events"), 404, f"no run {cut}"),
            (client.post(f"/api/runs/{long}/cancel", json={}), 404, f"no run {cut}"),
            (client.post(f"/api/runs/{long}/resume", json={}), 404, f"no run {cut}"),
            (client.post(f"/api/runs/{long}/responses", json={"responses": {"r": 1}}), 404, cut),
            (
                client.post(f"/api/workflows/{long}/runs", json={"input": 1}),
                404,
                f"no workflow {cut}",
            ),
            (client.get("/api/runs", params={"status": long}), 422, f"unknown status {cut}"),
            (client.get("/api/runs", params={"cursor": long}), 422, f"unknown cursor {cut}"),
            (client.get("/api/runs", params={"limit": long}), 422, f"got {cut}"),
            (client.get(f"/api/runs/{run_id}", params={"checkpoints": long}), 422, f"got {cut}"),
            (client.get(f"/api/{long}"), 404, "no such route: GET '/api/"),
            (
                client.post(f"/api/runs/{run_id}/responses", json={"responses": {long: True}}),
                404,
                f"has no open request {cut}",
            ),
            (
                client.post(f"/api/runs/{run_id}/fork", json={"checkpoint_id": long}),
                404,
                f"no checkpoint {cut} in the store",
            ),
        ]
        for response, status, words in cases:
            assert response.status_code == status, (str(response.request.url)[:80], response.text)
            error = response.json()["error"]
            assert words in error and len(error) < 400, error[:300]


def test_body_size_is_limited(serve):
    server = serve(flows.gate, max_body=1000)
    with server.client() as client:
        big = client.post("/api/workflows/gate/runs", json={"input": "x" * 2000})
        assert big.status_code == 413
        streamed = client.post(
            "/api/workflows/gate/runs",
            content=iter([b'{"input": "', b"x" * 1200, b'"}']),
            headers={"Content-Type": "application/json"},
        )  # (no Content-Length: counted as it arrives)
        assert streamed.status_code == 413


def test_token_is_required_everywhere_in_the_api(serve):
    token = "s3cret-token-for-tests"
    server = serve(flows.gate, token=token)
    with server.client(token=None) as anonymous, server.client() as client:
        assert anonymous.get("/api/workflows").status_code == 401
        assert anonymous.get("/api/runs").status_code == 401
        assert anonymous.get("/api/runs/x/events").status_code == 401
        assert anonymous.post("/api/workflows/gate/runs", json={"input": "x"}).status_code == 401
        wrong = anonymous.get("/api/workflows", headers={"Authorization": f"Bearer {token}x"})
        assert wrong.status_code == 401
        assert wrong.json()["error"] == "this token is not the server's"
        basic = anonymous.get("/api/workflows", headers={"Authorization": f"Basic {token}"})
        assert basic.status_code == 401
        # (it said "this token is not the server's" of the right token sent as Basic)
        assert basic.json()["error"] == (
            "send the token as Authorization: Bearer <token>, not 'Basic'"
        )
        assert anonymous.get("/").status_code == 200  # the page holds no data
        assert client.get("/api/workflows").status_code == 200
        run_id = client.post("/api/workflows/gate/runs", json={"input": "x"}).json()["run_id"]
        assert sse(client, run_id)[-1]["kind"] == "end"


def test_without_a_token_only_loopback_names_are_answered(serve):
    server = serve(flows.gate)
    with server.client() as client:
        for refused in ("evil.example:8321", "127.0.0.1.evil.example", "[::2]:8321", "10.0.0.1"):
            rebound = client.get("/api/workflows", headers={"Host": refused})
            assert rebound.status_code == 403, refused
        # Every loopback address (``--host 127.0.0.2`` serves on one of them).
        for name in ("localhost:8321", "127.0.0.1:80", "127.0.0.2:8321", "[::1]:8321", "[::1]"):
            assert client.get("/api/workflows", headers={"Host": name}).status_code == 200, name


def test_the_consoles_modules_are_served_as_javascript_with_the_pages_headers(serve):
    # (a browser runs a module only if it comes as JavaScript: nosniff)
    from importlib import resources

    folder = resources.files("stepgraph._serve").joinpath("static", "js")
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".js"))
    assert "main.js" in names and len(names) > 10
    server = serve(flows.gate)
    with server.client() as client:
        assert 'type="module" src="/static/js/main.js"' in client.get("/").text
        for name in names:
            response = client.get(f"/static/js/{name}")
            assert response.status_code == 200, name
            assert response.headers["content-type"] == "text/javascript; charset=utf-8", name
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["cache-control"] == "no-cache"
            for imported in re.findall(r'^import .* from "\./([^"]+)";$', response.text, re.M):
                assert imported in names, f"{name} imports {imported}, which is not served"


def test_console_page_and_openapi(serve):
    server = serve(flows.gate)
    with server.client() as client:
        page = client.get("/")
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert client.get("/static/console.css").headers["content-type"].startswith("text/css")
        for name in ("../_runs.py", "js/..%2F..%2F_http.py", "index.html", "js", "js/", "nope.js"):
            assert client.get(f"/static/{name}").status_code == 404, name
        schema = client.get("/openapi.json").json()
    assert schema["openapi"].startswith("3.")
    for path in ("/api/workflows", "/api/workflows/{name}/runs", "/api/runs", "/api/runs/{run_id}",
                 "/api/runs/{run_id}/events", "/api/runs/{run_id}/responses",
                 "/api/runs/{run_id}/cancel", "/api/runs/{run_id}/fork"):  # fmt: skip
        assert path in schema["paths"]
    # Every answer the server can give is in the document.
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            assert {"401", "503"} <= codes, (path, method)
            if method == "post":
                assert {"400", "413", "415"} <= codes, (path, method)
    assert "422" in schema["paths"]["/api/runs/{run_id}/events"]["get"]["responses"]


def read_some(client: httpx.Client, run_id: str, n: int, last: int | None) -> list[dict[str, Any]]:
    """``n`` events of the run's stream after ``last``, then the connection dropped."""
    headers = {"Last-Event-ID": str(last)} if last is not None else {}
    got: list[dict[str, Any]] = []
    with client.stream("GET", f"/api/runs/{run_id}/events", headers=headers) as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                got.append(json.loads(line[6:]))
                if len(got) == n:
                    break
    return got


def test_reconnecting_with_last_event_id_misses_nothing(serve):
    flows.STEP = 0.03
    server = serve(flows.slow)
    with server.client() as client:
        body = {"input": {"steps": 20}}
        run_id = client.post("/api/workflows/slow/runs", json=body).json()["run_id"]
        seen: list[dict[str, Any]] = []
        for n in (3, 7, 5):  # read a few while it runs, drop the connection, reconnect
            seen += read_some(client, run_id, n, seen[-1]["id"] if seen else None)
        assert client.get(f"/api/runs/{run_id}").json()["live"]  # (still going)
        rest = sse(client, run_id, last=seen[-1]["id"])
        assert rest[-1]["kind"] == "end"
        whole = sse(client, run_id)
    assert seen + rest[:-1] == whole[:-1]
    ids = [e["id"] for e in whole[:-1]]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert sum(e["kind"] == "tick" for e in whole) == 20


def test_two_clients_answering_at_once_one_wins(serve):
    server = serve(flows.gate)
    with server.client() as client:
        for _ in range(5):
            run_id = client.post("/api/workflows/gate/runs", json={"input": "go?"}).json()["run_id"]
            run = wait_for(client, run_id, "idle_with_pending_requests")
            rid = run["pending_requests"][0]["request_id"]
            answered: list[httpx.Response] = []
            barrier = threading.Barrier(2)

            def answer(
                value: bool, run_id: str = run_id, rid: str = rid, barrier=barrier, out=answered
            ) -> None:
                with server.client() as own:
                    barrier.wait()
                    body = {"responses": {rid: value}}
                    out.append(own.post(f"/api/runs/{run_id}/responses", json=body))

            threads = [threading.Thread(target=answer, args=(v,)) for v in (True, False)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            won, lost = sorted(answered, key=lambda r: r.status_code)
            assert (won.status_code, lost.status_code) == (202, 409), lost.text
            assert f"request {rid!r} of run {run_id} was answered already" in lost.json()["error"]
            run = wait_for(client, run_id, "idle")
            assert len(run["outputs"]) == 1


def test_cancel_and_fork(serve):
    flows.STEP = 0.05
    server = serve(flows.slow, flows.gate)
    with server.client() as client:
        run_id = client.post("/api/workflows/slow/runs", json={"input": {"steps": 200}}).json()[
            "run_id"
        ]
        assert client.post(f"/api/runs/{run_id}/cancel", json={}).status_code == 202
        run = wait_for(client, run_id, "cancelled")
        assert not run["interrupted"]
        # (it said "error": null: nobody could tell why the run had stopped)
        why = f"cancelled on request: POST /api/runs/{run_id}/cancel to the server running it"
        assert run["error"] == why
        [listed] = client.get("/api/runs", params={"workflow": "slow"}).json()["runs"]
        assert listed["error"] == why
        again = client.post(f"/api/runs/{run_id}/cancel", json={})
        assert again.status_code == 409 and "not running" in again.json()["error"]

        gate_id = client.post("/api/workflows/gate/runs", json={"input": "q"}).json()["run_id"]
        run = wait_for(client, gate_id, "idle_with_pending_requests")
        checkpoint = run["checkpoints"][-1]["checkpoint_id"]
        forked = client.post(f"/api/runs/{gate_id}/fork", json={"checkpoint_id": checkpoint})
        assert forked.status_code == 201, forked.text
        fork_id = forked.json()["run_id"]
        assert fork_id != gate_id
        fork = wait_for(client, fork_id, "idle_with_pending_requests")
        assert len(fork["pending_requests"]) == 1
        bad = client.post(f"/api/runs/{gate_id}/fork", json={"checkpoint_id": "nope"})
        assert bad.status_code == 404 and "'nope'" in bad.json()["error"]
        other = client.post(
            f"/api/runs/{gate_id}/fork",
            json={"checkpoint_id": fork["checkpoints"][0]["checkpoint_id"]},
        )
        assert other.status_code == 422 and "is not one of run" in other.json()["error"]


def test_runs_are_listed_a_page_at_a_time(serve):
    server = serve(flows.gate)
    with server.client() as client:
        ids = [
            client.post("/api/workflows/gate/runs", json={"input": f"q{n}"}).json()["run_id"]
            for n in range(5)
        ]
        for run_id in ids:
            wait_for(client, run_id, "idle_with_pending_requests")
        pages, cursor = [], None
        while True:
            page = client.get(
                "/api/runs", params={"limit": 2, **({"cursor": cursor} if cursor else {})}
            ).json()
            pages.append([r["run_id"] for r in page["runs"]])
            cursor = page["next"]
            if cursor is None:
                break
        assert [len(p) for p in pages] == [2, 2, 1]
        listed = [run_id for page in pages for run_id in page]
        assert listed == ids[::-1]  # newest first, each once
        waiting = client.get("/api/runs", params={"status": "idle_with_pending_requests"}).json()
        assert len(waiting["runs"]) == 5
        assert client.get("/api/runs", params={"workflow": "other"}).json()["runs"] == []


def test_a_server_stopped_mid_run_lists_it_interrupted_and_resumes_it(serve, tmp_path):
    flows.STEP = 0.05
    store = sg.SqliteCheckpointStore(tmp_path / "restart.sqlite")
    first = serve(flows.slow, store=store)
    with first.client() as client:
        run_id = client.post(
            "/api/workflows/slow/runs", json={"input": {"steps": 30, "label": "x"}}
        ).json()["run_id"]
        time.sleep(0.4)
    old = read_some(first.client(), run_id, 5, None)
    stopped = first.call(first.service.close)
    assert stopped == [run_id]
    info = first.call(lambda: store.run_info(run_id))
    assert (info.status, info.error) == ("cancelled", INTERRUPTED)
    assert 0 < info.superstep < 30

    second = serve(flows.slow, store=sg.SqliteCheckpointStore(tmp_path / "restart.sqlite"))
    with second.client() as client:
        [listed] = client.get("/api/runs").json()["runs"]
        assert listed["run_id"] == run_id and listed["interrupted"] is True
        resumed = client.post(f"/api/runs/{run_id}/resume", json={})
        assert resumed.status_code == 202, resumed.text
        assert resumed.json() == {"run_id": run_id}
        going = client.get(f"/api/runs/{run_id}").json()
        assert going["live"] and not going["interrupted"] and going["error"] is None
        # A client that saw the first server's events, reconnecting here,
        # gets every event of this server's continuation.
        again = sse(client, run_id, last=old[-1]["id"])
        assert again[0]["kind"] == "run_started" and again[0]["id"] > old[-1]["id"]
        run = wait_for(client, run_id, "idle")
        assert run["outputs"] == ["done x"]
        assert run["interrupted"] is False
        ticks = [e["data"]["left"] for e in sse(client, run_id) if e["kind"] == "tick"]
        assert ticks[-1] == 1 and ticks[0] <= 30 - info.superstep + 1


def test_failures_of_the_server_do_not_reach_the_client(serve, caplog):
    server = serve(flows.gate)

    def broken() -> Any:
        raise RuntimeError("secret internals at /srv/app.py line 3")

    server.service.describe_workflows = broken  # type: ignore[method-assign]
    with server.client() as client:
        response = client.get("/api/workflows")
    assert response.status_code == 500
    assert "secret" not in response.text and "Traceback" not in response.text
    assert "see the server's log" in response.json()["error"]
    assert any(
        "secret internals" in (r.exc_text or "") or "secret internals" in str(r.exc_info)
        for r in caplog.records
    )


@pytest.fixture(autouse=True)
def _step_back():
    yield
    flows.STEP = 0.05


def test_the_events_of_old_runs_are_forgotten_past_the_limits(serve):
    server = serve(flows.gate)
    server.service.keep_runs = 2
    with server.client() as client:
        ids = [
            client.post("/api/workflows/gate/runs", json={"input": f"q{n}"}).json()["run_id"]
            for n in range(3)
        ]
        for run_id in ids:
            wait_for(client, run_id, "idle_with_pending_requests")
        assert sorted(server.service.logs) == sorted(ids[1:])
        # A forgotten run is still described from the store; its stream just ends.
        assert client.get(f"/api/runs/{ids[0]}").json()["events_kept"] is False
        assert sse(client, ids[0]) == [{"status": "idle_with_pending_requests", "kind": "end"}]
        server.service.keep_runs, server.service.keep_bytes = 100, 1
        client.post("/api/workflows/gate/runs", json={"input": "q3"})
        assert len(server.service.logs) == 1  # (only the newest: every other ended)


def test_a_run_cancelled_through_another_server_says_it_was_asked_to(serve, tmp_path):
    flows.STEP = 0.05
    path = tmp_path / "shared.sqlite"
    running = serve(flows.slow, store=sg.SqliteCheckpointStore(path))
    other = serve(flows.slow, store=sg.SqliteCheckpointStore(path))
    with running.client() as a, other.client() as b:
        run_id = a.post("/api/workflows/slow/runs", json={"input": {"steps": 200}}).json()["run_id"]
        time.sleep(0.3)
        assert b.post(f"/api/runs/{run_id}/cancel", json={}).status_code == 202
        run = wait_for(a, run_id, "cancelled")
        assert (run["error"], run["interrupted"]) == (CANCELLED_ON_REQUEST, False)
        assert wait_for(b, run_id, "cancelled")["error"] == CANCELLED_ON_REQUEST


def test_a_waiting_run_of_a_workflow_not_served_here_shows_its_stored_requests(serve, tmp_path):
    # (it showed the run waiting for answers with "pending_requests": [])
    path = tmp_path / "shared.sqlite"
    serving = serve(flows.gate, store=sg.SqliteCheckpointStore(path))
    other = serve(flows.slow, store=sg.SqliteCheckpointStore(path))
    with serving.client() as a, other.client() as b:
        run_id = a.post("/api/workflows/gate/runs", json={"input": "q"}).json()["run_id"]
        there = wait_for(a, run_id, "idle_with_pending_requests")
        [request] = there["pending_requests"]
        assert there["served"] is True
        here = b.get(f"/api/runs/{run_id}").json()
        assert (here["status"], here["served"]) == ("idle_with_pending_requests", False)
        assert here["pending_requests"] == [
            {
                "request_id": request["request_id"],
                "executor_id": "gate",
                "request": "q",
                "request_type": None,
                "response_schema": None,
                "response_type": "builtins.bool",
            }
        ]
        answer = {"responses": {request["request_id"]: True}}
        refused = b.post(f"/api/runs/{run_id}/responses", json=answer)
        assert refused.status_code == 409 and "does not serve" in refused.json()["error"]


def test_a_cancel_reaches_the_stream_and_its_end(serve):
    flows.STEP = 0.05
    server = serve(flows.slow)
    with server.client() as client:
        run_id = client.post("/api/workflows/slow/runs", json={"input": {"steps": 100}}).json()[
            "run_id"
        ]
        time.sleep(0.3)
        assert client.post(f"/api/runs/{run_id}/cancel", json={}).status_code == 202
        events = sse(client, run_id)
    assert events[-1] == {"status": "cancelled", "kind": "end"}
    assert events[-2]["kind"] == "status" and events[-2]["status"] == "cancelled"


def test_answering_a_run_that_just_started_is_a_409(serve):
    flows.STEP = 0.2
    server = serve(flows.slow)
    with server.client() as client:
        run_id = client.post("/api/workflows/slow/runs", json={"input": {"steps": 3}}).json()[
            "run_id"
        ]
        for path, body in (("responses", {"responses": {"x": True}}), ("resume", {})):
            early = client.post(f"/api/runs/{run_id}/{path}", json=body)
            assert early.status_code == 409 and "still running" in early.json()["error"]


def test_outputs_come_from_the_store_along_the_branch(serve, tmp_path):
    flows.STEP = 0.01
    store = sg.SqliteCheckpointStore(tmp_path / "outputs.sqlite")
    first = serve(flows.gate, flows.slow, store=store)
    with first.client() as client:
        run_id = client.post("/api/workflows/gate/runs", json={"input": "ship?"}).json()["run_id"]
        run = wait_for(client, run_id, "idle_with_pending_requests")
        rid = run["pending_requests"][0]["request_id"]
        client.post(f"/api/runs/{run_id}/responses", json={"responses": {rid: True}})
        assert wait_for(client, run_id, "idle")["outputs"] == ["ship?: yes"]
        body = {"input": {"steps": 3, "label": "b"}}
        slow_id = client.post("/api/workflows/slow/runs", json=body).json()["run_id"]
        run = wait_for(client, slow_id, "idle")
        assert run["outputs"] == ["done b"]
        early = run["checkpoints"][1]["checkpoint_id"]
    # Another server on the store (or this one after a restart) shows them too.
    second = serve(
        flows.gate, flows.slow, store=sg.SqliteCheckpointStore(tmp_path / "outputs.sqlite")
    )
    with second.client() as client:
        run = client.get(f"/api/runs/{run_id}").json()
        assert run["outputs"] == ["ship?: yes"] and run["events_kept"] is False
        # A replay from an early checkpoint is another branch: its outputs
        # are its own, not the old branch's as well.
        replay = client.post(f"/api/runs/{slow_id}/resume", json={"checkpoint_id": early})
        assert replay.status_code == 202, replay.text
        run = wait_for(client, slow_id, "idle")
        assert run["outputs"] == ["done b"]
        assert len(run["checkpoints"]) > 5  # (both branches are kept)
    # Deleted from elsewhere: the server that ran it no longer shows it.
    assert asyncio.run(store.delete_run(run_id)) > 0
    with first.client() as client:
        gone = client.get(f"/api/runs/{run_id}")
        assert gone.status_code == 404 and run_id in gone.json()["error"], gone.text


def test_client_mistakes_are_4xx_never_500(serve):
    server = serve(flows.gate)
    with server.client() as client:
        cases = [
            (client.get("/api/runs?cursor=bogus"), 422, "unknown cursor"),
            (
                client.get("/api/runs/x/events", headers={"Last-Event-ID": "9" * 5000}),
                422,
                "Last-Event-ID",
            ),
            (
                client.get("/api/runs/x/events", headers=[(b"Last-Event-ID", "²".encode())]),
                422,
                "Last-Event-ID must be an event id (a number), got '²'",  # (shown as sent)
            ),
            (
                client.post(
                    "/api/workflows/gate/runs",
                    content=b'{"input": ' + b"9" * 5000 + b"}",
                    headers={"Content-Type": "application/json"},
                ),
                400,
                "not valid JSON",
            ),
            (
                client.post(
                    "/api/workflows/gate/runs",
                    content=b'{"input": NaN}',
                    headers={"Content-Type": "application/json"},
                ),
                400,
                "NaN is not a JSON value",
            ),
            (
                client.post(
                    "/api/workflows/gate/runs",
                    content=b'{"input": 1e999}',
                    headers={"Content-Type": "application/json"},
                ),
                400,
                "1e999 is too large for a number",
            ),
            (
                client.post(
                    "/api/workflows/gate/runs",
                    content=b"null",
                    headers={"Content-Type": "application/json"},
                ),
                422,
                "not null",
            ),
            (client.post("/api/workflows/gate/runs", json=[1]), 422, "not an array"),
            (client.post("/api/workflows", json={}), 405, "POST"),
        ]
        for response, status, words in cases:
            assert response.status_code == status, (response.request.url, response.text)
            assert words in response.json()["error"], response.json()


def test_a_wrong_token_is_told_apart_from_none(serve):
    server = serve(flows.gate, token="the-right-token-for-this")
    with server.client(token="not-the-right-token-at-all") as client:
        wrong = client.get("/api/workflows")
    with server.client(token=None) as client:
        missing = client.get("/api/workflows")
    assert wrong.status_code == missing.status_code == 401
    assert "not the server's" in wrong.json()["error"]
    assert "a token is needed" in missing.json()["error"]


def test_a_client_gone_mid_body_is_no_failure_of_the_server(serve, caplog):
    import logging
    import socket

    caplog.set_level(logging.DEBUG, logger="stepgraph.serve")
    server = serve(flows.gate)
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(
            b"POST /api/workflows/gate/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            b'{"input": "cut'
        )
    deadline = time.monotonic() + 20
    while not (said := [r for r in caplog.records if r.name == "stepgraph.serve"]):
        assert time.monotonic() < deadline, "the server did not notice the client going"
        time.sleep(0.01)
    [record] = said  # one line, no traceback: not a failure of the server
    assert (record.levelno, record.exc_info) == (logging.DEBUG, None), record.getMessage()
    assert "went away" in record.getMessage()
    with server.client() as client:  # (and it goes on serving)
        assert client.get("/api/workflows").status_code == 200


def test_a_long_runs_details_hold_its_newest_checkpoints_unless_more_are_asked_for(serve):
    server = serve(flows.long_counting)
    with server.client() as client:
        started = client.post("/api/workflows/long/runs", json={"input": {"steps": 130}})
        run_id = started.json()["run_id"]
        run = wait_for(client, run_id, "idle", timeout=60)
        every = server.call(lambda: server.store.list(run_id))
        assert len(every) > 100
        ids = [cp.id for cp in every]  # oldest first

        assert run["checkpoints_total"] == len(every)
        assert [cp["checkpoint_id"] for cp in run["checkpoints"]] == ids[-100:]
        steps = [cp["superstep"] for cp in run["checkpoints"]]
        assert steps == sorted(steps)  # newest last
        assert run["outputs"][-1] == "left 1" and len(run["outputs"]) == 130
        assert list(run)[:11] == [  # the summary's fields first, as before
            "run_id", "workflow", "status", "error", "started_at", "updated_at",
            "supersteps", "pending_requests", "checkpoints", "live", "interrupted",
        ]  # fmt: skip

        few = client.get(f"/api/runs/{run_id}", params={"checkpoints": 3}).json()
        assert [cp["checkpoint_id"] for cp in few["checkpoints"]] == ids[-3:]
        assert few["checkpoints_total"] == len(every)
        full = client.get(f"/api/runs/{run_id}?checkpoints=10000").json()
        assert [cp["checkpoint_id"] for cp in full["checkpoints"]] == ids
        assert {k: v for k, v in full.items() if k != "checkpoints"} == {
            k: v for k, v in run.items() if k != "checkpoints"
        }

        # An older checkpoint, asked for, can still be gone on from.
        resumed = client.post(
            f"/api/runs/{run_id}/fork",
            json={"checkpoint_id": full["checkpoints"][5]["checkpoint_id"]},
        )
        assert resumed.status_code == 201, resumed.text

        for bad in ("0", "10001", "-1", "abc", "1.5", ""):
            refused = client.get(f"/api/runs/{run_id}", params={"checkpoints": bad})
            assert refused.status_code == 422, (bad, refused.text)
            assert "checkpoints must be" in refused.json()["error"], refused.json()
        schema = client.get("/openapi.json").json()
    operation = schema["paths"]["/api/runs/{run_id}"]["get"]
    [parameter] = [p for p in operation["parameters"] if p["name"] == "checkpoints"]
    assert parameter["in"] == "query" and parameter["schema"]["maximum"] == 10000
    assert "422" in operation["responses"]
    run_schema = schema["components"]["schemas"]["Run"]["allOf"][1]["properties"]
    assert run_schema["checkpoints_total"]["type"] == "integer"


def test_workflow_names_a_url_holds_once_encoded_are_started_through_the_api(serve):
    names = ["what?", "100%", "#1", "  ", "ü b", "a+b&c"]
    server = serve(*(lambda name=name: flows.named(name) for name in names))
    with server.client() as client:
        assert [w["name"] for w in client.get("/api/workflows").json()] == names
        for name in names:
            started = client.post(
                f"/api/workflows/{quote(name, safe='')}/runs", json={"input": {"steps": 1}}
            )
            assert started.status_code == 201, (name, started.text)
            assert wait_for(client, started.json()["run_id"], "idle")["workflow"] == name


def test_a_service_of_a_workflow_no_url_can_name_is_refused(tmp_path):
    store = sg.SqliteCheckpointStore(tmp_path / "s.sqlite")
    try:
        for name in ["team/etl", "..", ".", ""]:
            with pytest.raises(ValueError, match="another name"):
                RunService([ServedWorkflow(flows.named(name))], store)
    finally:
        store.close()


def test_runs_a_signing_server_cannot_verify_are_a_409_naming_why(serve, tmp_path):
    """A store with unsigned runs (or one read with the wrong secret): their
    details, answers and resumes are refused naming the checkpoint and the
    likely cause — never a 500."""
    path = tmp_path / "mixed.sqlite"
    plain = sg.SqliteCheckpointStore(path)
    unsigned = asyncio.run(flows.gate().run("x", checkpoints=plain))
    plain.close()
    signing = sg.SqliteCheckpointStore(path, secret="0123456789abcdef-secret")
    server = serve(flows.gate, store=signing)
    with server.client() as client:
        run_id = unsigned.run_id
        [rid] = [p.request_id for p in unsigned.pending_requests]
        for method, url, body in (
            ("GET", f"/api/runs/{run_id}", None),
            ("POST", f"/api/runs/{run_id}/responses", {"responses": {rid: True}}),
            ("POST", f"/api/runs/{run_id}/resume", {}),
        ):
            refused = client.request(method, url, json=body)
            assert refused.status_code == 409, (url, refused.text)
            assert "is unsigned, but this store requires signed checkpoints" in refused.text
        signed = client.post("/api/workflows/gate/runs", json={"input": "y"})
        assert signed.status_code == 201
        wait_for(client, signed.json()["run_id"], "idle_with_pending_requests")


def test_a_server_without_the_secret_says_it_must_be_started_with_it(serve, tmp_path):
    # (an HTTP client was told "open the store with its secret (secret=, or
    # STEPGRAPH_SECRET for the command line)": Python's and the CLI's terms, of
    # something only the server's operator can do)
    path = tmp_path / "signed.sqlite"
    signing = sg.SqliteCheckpointStore(path, secret="0123456789abcdef-secret")
    waiting = asyncio.run(flows.gate().run("x", checkpoints=signing))
    signing.close()
    server = serve(flows.gate, store=sg.SqliteCheckpointStore(path))
    with server.client() as client:
        run_id = waiting.run_id
        [rid] = [p.request_id for p in waiting.pending_requests]
        assert client.get(f"/api/runs/{run_id}").status_code == 200  # (read, unverified)
        for url, body in (
            (f"/api/runs/{run_id}/responses", {"responses": {rid: True}}),
            (f"/api/runs/{run_id}/fork", {"checkpoint_id": waiting.last_checkpoint}),
        ):
            refused = client.post(url, json=body)
            assert refused.status_code == 409, (url, refused.text)
            error = refused.json()["error"]
            assert "is signed, but this store was opened without its secret" in error, error
            assert error.endswith(
                "this server must be started with the store's secret in STEPGRAPH_SECRET"
            ), error


class SlowLastSave(sg.SqliteCheckpointStore):
    """Saves a run's last checkpoint (idle) slowly, saying when it started."""

    started: threading.Event

    async def save(self, *checkpoints: sg.Checkpoint) -> None:
        if any(c.status == "idle" for c in checkpoints):
            self.started.set()
            await asyncio.sleep(0.3)
        await super().save(*checkpoints)


def test_a_run_stopped_while_its_last_checkpoint_is_saved_is_not_listed_interrupted(
    serve, tmp_path, monkeypatch
):
    # (supersteps longer than the batching delay: each barrier's checkpoint is
    # written before the next, and the last one as the run ends)
    monkeypatch.setattr(flows, "STEP", 0.02)
    store = SlowLastSave(tmp_path / "last.sqlite")
    store.started = threading.Event()
    server = serve(flows.slow, store=store)
    with server.client() as client:
        run_id = client.post(
            "/api/workflows/slow/runs", json={"input": {"steps": 2, "label": "x"}}
        ).json()["run_id"]
        assert store.started.wait(10)
        assert server.call(server.service.close) == [run_id]
    info = server.call(lambda: store.run_info(run_id))
    assert (info.status, info.error) == ("idle", None)
