"""Agents from the command line: approvals answered by a second process,
token usage at the end, deltas in --json."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import stepgraph as sg
from stepgraph.testing import ScriptedCall, ScriptedModel, ScriptedReply
from tests.test_cli import cli

TARGET = "tests.agents.test_agent:mailer"


def test_approvals_answered_from_the_command_line_in_new_processes(tmp_path: Path) -> None:
    spec = f"sqlite:{tmp_path / 'agents.sqlite'}"
    first = cli("run", TARGET, "--input", '"mail the tea facts"', "--store", spec)
    assert first.returncode == 2, first.stderr  # waiting for answers
    commands = [line.strip() for line in first.stdout.splitlines() if "--respond" in line]
    assert len(commands) == 2 and '={"decision": "approve"}' in commands[0]
    t2, t3 = (shlex.split(c)[-1].split("=")[0] for c in commands)
    assert t2.startswith("t2-") and t3.startswith("t3-")
    assert "tokens: 10 prompt + 5 completion" in first.stdout
    # An edit that does not fit the tool: one line, the approval still open.
    unfit = json.dumps({"decision": "edit", "arguments": {"to": 5}})
    refused = cli("run", TARGET, "--store", spec, "--respond", f"{t2}={unfit}")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr + refused.stdout
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith("error: the response to request") and "do not fit tool" in line
    assert line.endswith("(nothing was recorded: still open)") and "failed:" not in refused.stdout
    # Answer the first as suggested, the second with a rejection.
    half = cli(*shlex.split(commands[0])[1:])
    assert half.returncode == 2 and f"{t3}=" in half.stdout and f"{t2}=" not in half.stdout
    reject = json.dumps({"decision": "reject", "reason": "not bob"})
    done = cli("run", TARGET, "--store", spec, "--respond", f"{t3}={reject}", "--json")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    [output] = [r for r in records if r["kind"] == "output"]
    assert "t2=sent to ann@example.com" in json.dumps(output["data"])
    deltas = [r for r in records if r["kind"] == "agent_delta"]
    assert deltas and {d["executor_id"] for d in deltas} == {"mailer"}
    [usage] = [r for r in records if r["kind"] == "usage"]
    assert usage["by_executor"]["mailer"]["prompt_tokens"] == 20  # both model turns
    again = cli("run", TARGET, "--store", spec, "--respond", f'{t2}={{"decision": "approve"}}')
    assert again.returncode == 1 and "answered already" in again.stderr


def _key_of(name: str) -> str:
    return {"tea": "green"}[name]


@sg.tool(errors="raise")
def strict_lookup(name: str) -> str:
    """Look a name up; a miss fails the run."""
    return _key_of(name)


def failing(store: sg.CheckpointStore | None = None) -> sg.Workflow:
    """A run that fails on a tool, or on max_turns when asked for 'loop'."""

    def reply(call: ScriptedCall) -> ScriptedReply:
        name = "strict_lookup" if call.messages[0].content == "coffee" else "missing"
        return ScriptedReply(tool_calls=[sg.ToolCall("c1", name, '{"name": "coffee"}')])

    model = ScriptedModel([reply] * 3)
    agent = sg.Agent("looker", model=model, tools=[strict_lookup], max_turns=2)
    return sg.WorkflowBuilder(start=agent, checkpoints=store).build()


def test_a_failed_agent_shows_where_its_tool_failed_not_the_agents_code() -> None:
    """The traceback under 'failed:' was three frames of the agent's own
    code (where it raised AgentError), never the tool's, which is where the
    user has to look; an agent's error without a cause (max_turns) needs
    none."""
    tool = cli("run", f"{__name__}:failing", "--input", '"coffee"', "--no-store")
    assert tool.returncode == 1, tool.stderr
    out = tool.stdout
    assert "failed: executor 'looker' failed in superstep 1: AgentError:" in out
    assert "KeyError: 'coffee'" in out and "in _key_of" in out and "in strict_lookup" in out
    assert "agents/_agent.py" not in out
    turns = cli("run", f"{__name__}:failing", "--input", '"loop"', "--no-store")
    assert turns.returncode == 1, turns.stderr
    assert "reached max_turns=2" in turns.stdout and "Traceback" not in turns.stdout


def test_the_live_view_shows_each_running_agents_latest_text() -> None:
    import io

    from rich.console import Console

    import stepgraph as sg
    from stepgraph._cli._render import LiveView

    console = Console(file=io.StringIO(), width=120, force_terminal=False)
    view = LiveView(console, "agents")
    view.handle(sg.ExecutorInvokedEvent(executor_id="writer", superstep=1))
    for text in ("Once ", "upon ", "a time"):
        view.handle(sg.AgentDelta(text=text, turn=1, attempt=1, executor_id="writer"))
    view.handle(
        sg.AgentDelta(text="Hi [b]", turn=1, attempt=1, executor_id="b", workflow_path=("sub",))
    )
    console.print(view)
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    assert "writer: Once upon a time" in shown and "sub/b: Hi [b]" in shown
    # A retried attempt starts its text over; a finished agent leaves the view.
    view.handle(sg.AgentDelta(text="Twice", turn=1, attempt=2, executor_id="writer"))
    view.handle(sg.ExecutorCompletedEvent(executor_id="b", workflow_path=("sub",), superstep=1))
    console.file = io.StringIO()
    console.print(view)
    shown = console.file.getvalue()
    assert "writer: Twice" in shown and "Once" not in shown and "sub/b:" not in shown
    # A map's agents write at once, their turns numbered alike: each its own
    # line, under its item (their text ran together on one), until it ends.
    for item, text in ((0, "first "), (1, "second "), (0, "draft"), (1, "draft")):
        view.handle(sg.AgentDelta(text=text, turn=1, attempt=1, executor_id="drafts", item=item))
    view.handle(sg.ExecutorCompletedEvent(executor_id="drafts", superstep=2, item=0))
    console.file = io.StringIO()
    console.print(view)
    shown = console.file.getvalue()
    assert "drafts[1]: second draft" in shown and "first" not in shown
