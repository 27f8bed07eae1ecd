"""A tool approval of the agent layer, through the API (fake model server)."""

from __future__ import annotations

from examples import agent_approval

from .conftest import sse
from .test_api import wait_for


def test_a_tool_call_is_approved_through_the_api_and_deltas_stream(serve):
    model = agent_approval.default_model()
    server = serve(lambda: agent_approval.build(model=model))
    try:
        check(server)
    finally:
        server.call(model.aclose)  # (its connections belong to the server's loop)


def check(server):
    with server.client() as client:
        [workflow] = client.get("/api/workflows").json()
        assert workflow["name"] == "research"
        assert {n["id"] for n in workflow["graph"]["nodes"]} == {"researcher", "reviewer"}
        run_id = client.post("/api/workflows/research/runs", json={"input": "supersteps"}).json()[
            "run_id"
        ]
        first = sse(client, run_id)
        deltas = [e for e in first if e["kind"] == "agent_delta"]
        assert "".join(d["text"] for d in deltas) == "Searching, and drafting the email."
        assert deltas[0]["path"] == "researcher"
        run = wait_for(client, run_id, "idle_with_pending_requests")
        [request] = run["pending_requests"]
        assert request["request_type"] == "ToolApprovalRequest"
        assert request["request"]["tool"] == "send_email"
        assert request["request"]["arguments"]["to"] == "team@example.com"
        assert request["response_schema"]["properties"]["decision"]["enum"] == [
            "approve",
            "reject",
            "edit",
        ]
        rid = request["request_id"]
        bad = client.post(
            f"/api/runs/{run_id}/responses", json={"responses": {rid: {"decision": "maybe"}}}
        )
        assert bad.status_code == 422 and "decision" in bad.json()["error"]
        # An edit whose arguments do not fit the tool: 422, saying why; still open.
        unfit = {"decision": "edit", "arguments": {"to": "me@example.com"}}
        refused = client.post(f"/api/runs/{run_id}/responses", json={"responses": {rid: unfit}})
        assert refused.status_code == 422, refused.text
        assert "do not fit tool 'send_email'" in refused.json()["error"]
        assert wait_for(client, run_id, "idle_with_pending_requests")["pending_requests"]
        edited = {
            "decision": "edit",
            "arguments": {**request["request"]["arguments"], "to": "me@example.com"},
        }
        ok = client.post(f"/api/runs/{run_id}/responses", json={"responses": {rid: edited}})
        assert ok.status_code == 202, ok.text
        run = wait_for(client, run_id, "idle")
        [review] = run["outputs"]
        assert review == {
            "verdict": "accept",
            "score": 8,
            "comment": "clear, and it cites its notes",
        }
        assert "me@example.com" in agent_approval.SENT
        tool_events = [e for e in sse(client, run_id) if e["kind"] == "tool_call"]
        assert any(e.get("tool") == "send_email" for e in tool_events)


def test_an_agent_run_with_no_messages_is_refused_up_front(serve):
    model = agent_approval.default_model()
    server = serve(lambda: agent_approval.build(model=model))
    try:
        with server.client() as client:
            refused = client.post("/api/workflows/research/runs", json={"input": []})
            assert refused.status_code == 422, refused.text
            error = refused.json()["error"]
            assert error.startswith("the input of workflow 'research'"), error
            assert "start executor 'researcher'" in error and "empty list of messages" in error
            assert client.get("/api/runs").json()["runs"] == []  # (no run started)
    finally:
        server.call(model.aclose)
