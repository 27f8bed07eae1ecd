"""Text that UTF-8 cannot carry (a lone surrogate, which a model or a handler
may produce) reaches clients escaped: the run's details and its event stream
never break on it."""

from __future__ import annotations

import stepgraph as sg

from .conftest import sse
from .test_api import wait_for


@sg.executor(id="halved")
async def halved(text: str, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
    await ctx.add_event(sg.UserEvent(kind="note", data=f"{text} \ud83d"))  # half an emoji
    await ctx.yield_output(f"{text} \ud83d")


def halves() -> sg.Workflow:
    return sg.WorkflowBuilder(start=halved, name="halves").build()


def test_a_lone_surrogate_is_sent_escaped_in_details_and_events(serve):
    server = serve(halves)
    with server.client() as client:
        run_id = client.post("/api/workflows/halves/runs", json={"input": "hi"}).json()["run_id"]
        # (the store cannot hold the output either: the run fails at its barrier)
        run = wait_for(client, run_id, "failed")
        assert run["outputs"] == ["hi \ud83d"]
        answer = client.get(f"/api/runs/{run_id}")
        assert answer.status_code == 200
        assert b'"hi \\ud83d"' in answer.content
        events = sse(client, run_id)
        assert [e["data"] for e in events if e["kind"] == "note"] == ["hi \ud83d"]
        assert [e["data"] for e in events if e["kind"] == "output"] == ["hi \ud83d"]
        assert events[-1] == {"kind": "end", "status": "failed"}
