"""A research agent whose emails need a person's approval, then a reviewer
agent with structured output.

The researcher may call ``search`` freely; ``send_email`` opens an approval
request (its id is the tool call's id) and the run waits — here a reviewer
approves from a fresh workflow object through the SQLite checkpoint, as
another process would. The reviewer answers with a validated ``Review``.

Offline by default: the agents talk to a fake OpenAI-compatible server on
loopback (real HTTP, the real ``openai`` SDK). Set ``OPENAI_BASE_URL`` and/or
``OPENAI_API_KEY`` (and ``OPENAI_MODEL``) to use a real endpoint — OpenAI,
Ollama, vLLM, llama.cpp, LM Studio::

    pip install 'stepgraph[openai]'
    python examples/agent_approval.py
    stepgraph run examples.agent_approval:build --input '"supersteps"'
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import pydantic

import stepgraph as sg
from stepgraph.testing import FakeOpenAIServer, FakeReply

TOPIC = "why supersteps make agent workflows predictable"
SENT: list[str] = []  # the emails this process sent


class Review(pydantic.BaseModel):
    verdict: str
    score: int
    comment: str


@sg.tool
def search(query: str) -> list[str]:
    """Search the team's notes.

    Args:
        query: What to look for.
    """
    return [f"note: {query} (barrier commits)", f"note: {query} (one task per inbox)"]


@sg.tool(approval="always")
def send_email(to: str, subject: str, body: str) -> str:
    """Send an email (a person approves each one first).

    Args:
        to: The recipient's address.
        subject: The subject line.
        body: The text.
    """
    SENT.append(to)
    return f"sent to {to}"


RESEARCHER = "You research a topic with search, then email a summary to team@example.com."
REVIEWER = "You review a research summary. Answer as JSON: verdict, score (0-10), comment."


def build(store: sg.CheckpointStore | None = None, model: Any = None) -> sg.Workflow:
    """A research agent whose emails need a person's approval, then a
    reviewer agent with structured output.

    The CLI passes its own store; ``model`` defaults to the endpoint in the
    environment, or the offline fake server."""
    model = model if model is not None else default_model()
    return (
        sg.WorkflowBuilder(start="researcher", name="research", checkpoints=store)
        .register(
            "researcher",
            lambda: sg.Agent(
                "researcher", model=model, instructions=RESEARCHER, tools=[search, send_email]
            ),
        )
        .register(
            "reviewer",
            lambda: sg.Agent("reviewer", model=model, instructions=REVIEWER, output_type=Review),
        )
        .add_edge("researcher", "reviewer")
        .build()
    )


# -- the model: a real endpoint, or a fake one that answers by the conversation ---

_FAKE: FakeOpenAIServer | None = None


def default_model() -> sg.OpenAIChatModel:
    if os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_KEY"):
        name = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")
        return sg.OpenAIChatModel(name, base_url=os.environ.get("OPENAI_BASE_URL"))
    global _FAKE
    if _FAKE is None:
        _FAKE = FakeOpenAIServer(responder=fake_llm).start()
    return sg.OpenAIChatModel("fake-model", base_url=_FAKE.base_url)


def fake_llm(body: dict[str, Any]) -> FakeReply:
    """What a model might answer, decided by the conversation so far."""
    messages = body["messages"]
    if messages[0]["content"] == REVIEWER:
        review = {"verdict": "accept", "score": 8, "comment": "clear, and it cites its notes"}
        return FakeReply.text(json.dumps(review), usage=sg.Usage(61, 19))
    results = [m["content"] for m in messages if m["role"] == "tool"]
    if not results:
        topic = messages[-1]["content"]
        email = {"to": "team@example.com", "subject": f"Notes: {topic}", "body": "Summary."}
        calls = [
            sg.ToolCall("call_search", "search", json.dumps({"query": topic})),
            sg.ToolCall("call_email", "send_email", json.dumps(email)),
        ]
        return FakeReply.tool_calls(calls, text="Searching, and drafting the email.")
    return FakeReply.text(f"Summary from {len(results)} tool results: {results[-1]}.")


async def main() -> None:
    model = default_model()
    with tempfile.TemporaryDirectory() as folder:
        store = sg.SqliteCheckpointStore(Path(folder) / "agents.sqlite")
        first = await build(store, model).run(TOPIC)
        for pending in first.pending_requests:
            ask = pending.request
            print(f"approval needed: {ask.tool} to {ask.arguments.get('to')}")
        # A reviewer approves, from a workflow object of its own.
        answers = {p.request_id: sg.ToolApproval.approve() for p in first.pending_requests}
        done = await build(store, model).run(responses=answers, checkpoint=first.last_checkpoint)
        store.close()
    [review] = done.outputs
    print(f"emails sent: {len(SENT)}")
    print(f"review: {review.verdict} ({review.score}/10): {review.comment}")
    for agent, used in done.usage.by_executor.items():
        print(f"{agent}: {used.total_tokens} tokens")
    await model.aclose()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        print("stopped.", file=sys.stderr)
        sys.exit(130)
    except ImportError as missing:  # (the openai extra: its message says how to install it)
        sys.exit(f"error: {missing}")
    if _FAKE is not None:
        _FAKE.close()
