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
        # Shown (as the store keeps the output's copy for display) with the
        # half written as its escape (see jsonable): the run goes on.
        run = wait_for(client, run_id, "idle")
        assert run["outputs"] == ["hi \\ud83d"]
        answer = client.get(f"/api/runs/{run_id}")
        assert answer.status_code == 200
        assert b'"hi \\\\ud83d"' in answer.content
        events = sse(client, run_id)
        assert [e["data"] for e in events if e["kind"] == "note"] == ["hi \\ud83d"]
        assert [e["data"] for e in events if e["kind"] == "output"] == ["hi \\ud83d"]
        assert events[-1] == {"kind": "end", "status": "idle"}


def test_json_text_escapes_only_what_utf8_cannot_carry() -> None:
    # (what every answer of the server is written with: a lone surrogate that
    # reaches it another way than an event's rendering is escaped, not a 500)
    from stepgraph._serve._logs import json_text

    assert json_text({"a": "café 🙂"}) == '{"a": "café 🙂"}'
    assert json_text({"a": "x\ud83d"}, (",", ":")) == '{"a":"x\\ud83d"}'
