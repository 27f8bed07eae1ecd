"""The console script, run for real in subprocesses: exit codes, JSON events,
resume and respond across invocations, drawings parsed back, checkpoints
commands, Ctrl-C, and the live view in an 80x24 pseudo-terminal."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import stepgraph as sg
from stepgraph import demo
from tests import cli_flows
from tests.test_conformance import WORKER_PYTHONPATH

ROOT = Path(__file__).resolve().parent.parent
EXE = shutil.which("stepgraph")
COMMAND = [EXE] if EXE else [sys.executable, "-m", "stepgraph"]


def cli(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": WORKER_PYTHONPATH, **(env or {})},
    )


def test_demo_runs_end_to_end_with_an_approval(tmp_path: Path) -> None:
    (tmp_path / "my runs").mkdir()
    path = tmp_path / "my runs" / "demo.sqlite"  # (a space: the printed commands quote it)
    done = cli("demo", "--store", f"sqlite:{path}")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("approving automatically: Stepgraph runs") for line in lines)
    assert (
        "output: published: Stepgraph runs in supersteps. Every executor has one inbox. "
        "(2 review notes applied)"
    ) in lines
    inspect = f"stepgraph checkpoints list --store {shlex.quote(f'sqlite:{path}')}"
    assert f"inspect:    {inspect}" in lines
    listed = cli(*shlex.split(inspect)[1:])
    assert listed.returncode == 0 and "review-pipeline" in listed.stdout, listed.stderr
    assert not any("--resume" in line for line in lines)  # the run finished: nothing to resume
    assert lines[-1] == "draw it:    stepgraph viz stepgraph.demo:build"

    async def count() -> int:
        with sg.SqliteCheckpointStore(path) as store:
            return len(await store.list())

    # First run: entry + 4 barriers; the answer: its entry + 1 barrier.
    assert asyncio.run(count()) == 7


async def test_demo_workflow_is_importable_and_keeps_executor_state() -> None:
    workflow = demo.build()
    first = await workflow.run("a topic")
    assert first.status is sg.RunStatus.IDLE_WITH_PENDING_REQUESTS
    [pending] = first.pending_requests
    second = await workflow.run(responses={pending.request_id: False})
    assert second.outputs[0].startswith("held back: A topic runs")
    await workflow.run("again")
    reviewer = workflow.executors["punctuation"]
    assert isinstance(reviewer, demo.Reviewer) and reviewer.reviews == 2


@pytest.mark.parametrize(
    ("topic", "published"),
    [(".", ". Runs in supersteps."), ("a. . b", "A. . B runs in supersteps."), ("", "Runs in")],
)
async def test_demo_publishes_a_topic_holding_empty_sentences(topic: str, published: str) -> None:
    # A topic of "." or "a. . b" makes sentences with nothing in them: the
    # editor capitalised each one's first character, and failed on those.
    workflow = demo.build()
    [pending] = (await workflow.run(topic)).pending_requests
    done = await workflow.run(responses={pending.request_id: True})
    assert done.status is sg.RunStatus.IDLE
    assert done.outputs[0].startswith(f"published: {published}")


def events_of(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_run_json_events_and_typed_input(tmp_path: Path) -> None:
    done = cli(
        "run",
        "tests.cli_flows:pricing",
        "--input",
        '{"item": "pen", "quantity": 4}',
        "--json",
        "--no-store",
    )
    assert done.returncode == 0, done.stderr
    events = events_of(done.stdout)
    assert [e["kind"] for e in events] == [
        "run_started",
        "status",
        "superstep_started",
        "executor_invoked",
        "output",
        "executor_completed",
        "superstep_completed",
        "status",
    ]
    assert events[4]["data"] == "4 x pen = 10.00" and events[4]["path"] == "price"
    assert events[-1]["status"] == "idle"


def test_input_file_and_bad_input(tmp_path: Path) -> None:
    source = tmp_path / "order.json"
    source.write_text('{"item": "ink", "quantity": 2}')
    done = cli("run", "tests.cli_flows:pricing", "--input-file", str(source), "--no-store")
    assert done.returncode == 0 and "output: 2 x ink = 5.00" in done.stdout
    bad = cli("run", "tests.cli_flows:pricing", "--input", '"text"', "--no-store")
    assert bad.returncode == 1 and "does not fit the start executor 'price'" in bad.stderr
    broken = cli("run", "tests.cli_flows:pricing", "--input", "{oops", "--no-store")
    assert broken.returncode == 1 and "not valid JSON" in broken.stderr
    missing = cli("run", "tests.nowhere:build", "--input", "1", "--no-store")
    assert missing.returncode == 1 and "no module named 'tests.nowhere'" in missing.stderr
    shape = cli("run", "no-colon", "--input", "1")
    assert shape.returncode == 1 and "MODULE:ATTR" in shape.stderr


def test_a_refused_input_and_a_failing_check_of_it_are_said_as_such() -> None:
    refused = cli("run", "tests.cli_flows:picky", "--input", "[]", "--no-store")
    assert refused.returncode == 1, refused
    assert refused.stdout == (
        "failed: the input of workflow 'picky' is refused by its start executor 'picky': "
        "no items to add up\n"
    )
    broken = cli("run", "tests.cli_flows:picky", "--input", "[1]", "--no-store")
    assert broken.returncode == 1, broken
    said = broken.stdout + broken.stderr
    assert "executor 'picky': its check_input() raised IndexError: list index out of range" in said
    assert "unexpected failure" not in said and "please report" not in said
    assert cli("run", "tests.cli_flows:picky", "--input", "[1, 2]", "--no-store").stdout.startswith(
        "output: 3"
    )


def test_failure_exit_code_names_the_executor() -> None:
    done = cli("run", "tests.cli_flows:failing", "--input", '"x"', "--no-store")
    assert done.returncode == 1
    first, *trace = done.stdout.splitlines()
    assert first == "failed: executor 'explode' failed in superstep 1: ValueError: cannot take 'x'"
    assert trace[-1] == "ValueError: cannot take 'x'"  # the end of the handler's traceback


def test_a_failure_in_a_sub_workflow_shows_the_handlers_traceback() -> None:
    """Not the engine's frames where the sub-workflow's error was raised."""
    done = cli("run", "tests.cli_flows:failing_deep", "--input", '"x"', "--no-store")
    assert done.returncode == 1
    first, *trace = done.stdout.splitlines()
    assert first == (
        "failed: executor 'mid/inner/explode' failed in a sub-workflow: executor 'explode' "
        "failed in superstep 1: ValueError: cannot take 'x' (executor 'mid', superstep 1)"
    )
    assert trace[-1] == "ValueError: cannot take 'x'" and "in explode" in trace[-3], trace
    assert "_scheduler.py" not in done.stdout


def test_pending_requests_then_respond_in_a_second_invocation(tmp_path: Path) -> None:
    store = f"sqlite:{tmp_path / 'runs.sqlite'}"
    first = cli("run", "tests.cli_flows:asking", "--input", '"alice"', "--store", store)
    assert first.returncode == 2, first.stderr
    command = next(
        line.strip()
        for line in first.stdout.splitlines()
        if line.strip().startswith("stepgraph run")
    )
    match = re.search(r"--respond (\w+)=true$", command)
    assert match, command
    request_id = match.group(1)
    second = cli(
        "run", "tests.cli_flows:asking", "--store", store, "--respond", f"{request_id}=false",
        "--json",
    )  # fmt: skip
    assert second.returncode == 0, second.stderr
    outputs = [e["data"] for e in events_of(second.stdout) if e["kind"] == "output"]
    assert outputs == ["let alice through? no"]
    again = cli(
        "run", "tests.cli_flows:asking", "--store", store, "--respond", f"{request_id}=true"
    )
    assert again.returncode == 1 and "was answered already (at checkpoint" in again.stderr
    third = cli("run", "tests.cli_flows:asking", "--input", '"carol"', "--store", store)
    other = re.search(r"--respond (\w+)=true", third.stdout)
    assert other
    wrong = cli(
        "run", "tests.cli_flows:asking", "--store", store, "--respond", f'{other.group(1)}="maybe"'
    )
    assert wrong.returncode == 1 and "is not a valid bool" in wrong.stderr
    assert "Input should be a valid boolean" in wrong.stderr


def _checkpoints_of(path: Path) -> list[sg.CheckpointInfo]:
    async def listing() -> list[sg.CheckpointInfo]:
        store = sg.SqliteCheckpointStore(path)
        try:
            [run] = await store.runs()
            return await store.list(run.run_id)
        finally:
            store.close()

    return asyncio.run(listing())


def test_a_replay_to_before_an_answer_prints_how_to_answer_again(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    store = f"sqlite:{path}"
    asked = cli("run", "tests.cli_flows:asking", "--input", '"ann"', "--store", store)
    [request_id] = re.findall(r"--respond (\w+)=true", asked.stdout)
    opened = _checkpoints_of(path)[-1].id  # (the request open there)
    answered = cli(
        "run", "tests.cli_flows:asking", "--store", store, "--respond", f"{request_id}=true"
    )
    assert answered.returncode == 0, answered.stderr
    # Back to where the request was open: it is open on this branch, but
    # answered along the run — the summary says so and how to answer again.
    replay = cli("run", "tests.cli_flows:asking", "--store", store, "--resume", opened)
    assert replay.returncode == 2, replay.stderr
    lines = [line.strip() for line in replay.stdout.splitlines()]
    assert "1 open request(s). Answer with:" in lines
    assert any(line.startswith("(answered already, at checkpoint") for line in lines), lines
    [command] = [line for line in lines if line.startswith("stepgraph run")]
    assert f"--resume {opened} --fork --respond {request_id}=true" in command
    again = cli(*shlex.split(command)[1:-1], f"{request_id}=false", "--json")
    assert again.returncode == 0, again.stderr
    outputs = [e["data"] for e in events_of(again.stdout) if e["kind"] == "output"]
    assert outputs == ["let ann through? no"]


def test_respond_goes_on_from_the_branch_where_the_request_is_open(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"
    store = f"sqlite:{path}"
    first = cli("run", "tests.cli_flows:asking", "--input", '"bo"', "--store", store)
    [old] = re.findall(r"--respond (\w+)=true", first.stdout)
    entry = _checkpoints_of(path)[0].id  # before the gate asked
    replay = cli("run", "tests.cli_flows:asking", "--store", store, "--resume", entry)
    [new] = re.findall(r"--respond (\w+)=true", replay.stdout)
    assert new != old  # asked again on the new branch: two branches, one open request each
    for request_id, answer, said in ((old, "true", "yes"), (new, "false", "no")):
        done = cli(
            "run", "tests.cli_flows:asking", "--store", store, "--respond", f"{request_id}={answer}",
            "--json",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "on another branch of the run: going on from there" in done.stderr
        outputs = [e["data"] for e in events_of(done.stdout) if e["kind"] == "output"]
        assert outputs == [f"let bo through? {said}"]


def test_the_printed_answer_command_answers_its_own_run_when_ids_repeat(tmp_path: Path) -> None:
    store = f"sqlite:{tmp_path / 'runs.sqlite'}"
    flow = "tests.cli_flows:asking_fixed"

    def command_of(done: subprocess.CompletedProcess[str]) -> list[str]:
        [line] = [x.strip() for x in done.stdout.splitlines() if x.strip().startswith("stepgraph")]
        return shlex.split(line)[1:]

    first = cli("run", flow, "--input", '"ann"', "--store", store)
    assert command_of(first)[-2:] == ["--respond", "r1=true"]  # (its id is its own here)
    second = cli("run", flow, "--input", '"bob"', "--store", store)
    answer = command_of(second)  # r1 is the first run's too: this one is named
    assert answer[-4:-2] == ["--resume", _checkpoints_of_run(tmp_path, 1)[-1].id]
    done = cli(*answer[:-1], "r1=false", "--json")
    assert done.returncode == 0, done.stderr
    outputs = [e["data"] for e in events_of(done.stdout) if e["kind"] == "output"]
    assert outputs == ["let bob through? no"]
    done = cli(*command_of(first))  # the first run's own command still answers it
    assert done.returncode == 0 and "output: let ann through? yes" in done.stdout, done.stderr


def _checkpoints_of_run(tmp_path: Path, index: int) -> list[sg.CheckpointInfo]:
    async def listing() -> list[sg.CheckpointInfo]:
        store = sg.SqliteCheckpointStore(tmp_path / "runs.sqlite")
        try:
            runs = sorted(await store.runs(), key=lambda r: r.started_at)
            return await store.list(runs[index].run_id)
        finally:
            store.close()

    return asyncio.run(listing())


def test_a_forks_listing_names_the_run_it_branched_off(tmp_path: Path) -> None:
    store = f"sqlite:{tmp_path / 'runs.sqlite'}"
    asked = cli("run", "tests.cli_flows:asking", "--input", '"cy"', "--store", store, "--json")
    original = events_of(asked.stdout)[0]["run_id"]
    [request_id] = [e["request_id"] for e in events_of(asked.stdout) if e["kind"] == "request_info"]
    forked = cli(
        "run", "tests.cli_flows:asking", "--store", store, "--fork", "--respond",
        f"{request_id}=true", "--json",
    )  # fmt: skip
    fork = events_of(forked.stdout)[0]["run_id"]
    assert fork != original

    def parents() -> list[str]:
        listed = cli("checkpoints", "list", "--store", store, "--run", fork)
        return [line.split("\t")[5] for line in listed.stdout.splitlines()[1:]]

    assert parents() == [f"run {original}", "#1"]
    assert cli("checkpoints", "delete", "--run", original, "--store", store).returncode == 0
    assert parents() == ["deleted", "#1"]


def test_a_huge_request_is_shown_cut_short(tmp_path: Path) -> None:
    store = f"sqlite:{tmp_path / 'runs.sqlite'}"
    asked = cli("run", "tests.cli_flows:asking_big", "--input", "100000", "--store", store)
    assert asked.returncode == 2, asked.stderr
    [line] = [line for line in asked.stdout.splitlines() if line.strip().startswith("str: ")]
    assert line.strip() == "str: " + "x" * 2_000 + "… (98,000 more characters)"
    [request_id] = re.findall(r"--respond (\w+)=true", asked.stdout)
    done = cli(
        "run", "tests.cli_flows:asking_big", "--store", store, "--respond", f"{request_id}=true"
    )
    assert done.returncode == 0 and "output: 100000 True" in done.stdout, done.stderr


def cli_process(
    args: list[str], preexec_fn: Callable[[], None] | None = None
) -> subprocess.Popen[str]:
    """The CLI started from the repository, its output and errors piped."""
    return subprocess.Popen(
        [*COMMAND, *args],
        preexec_fn=preexec_fn,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": WORKER_PYTHONPATH},
    )


def interrupt_slow_run(
    store: str, after: int, how: signal.Signals = signal.SIGINT, ignoring_sigint: bool = False
) -> tuple[int, str]:
    """Start the slow workflow (``ignoring_sigint``: as a shell script's
    background job is), press Ctrl-C (or send ``how``) after ``after``
    supersteps; returns (exit code, stderr)."""

    def ignore() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    process = cli_process(
        ["run", "tests.cli_flows:slow", "--input", "0", "--store", store, "--json"],
        preexec_fn=ignore if ignoring_sigint else None,
    )
    with process:
        assert process.stdout is not None
        completed = 0
        for line in process.stdout:
            if json.loads(line)["kind"] == "superstep_completed":
                completed += 1
                if completed == after:
                    process.send_signal(how)
                    break
        _, stderr = process.communicate(timeout=30)
    return process.returncode, stderr


def run_with_output_closed(args: list[str], after_lines: int) -> tuple[int, str]:
    """Run the CLI, read ``after_lines`` lines of its standard output, then
    close it — as ``| head`` does; returns (exit code, stderr)."""
    process = cli_process(args)
    with process:
        assert process.stdout is not None and process.stderr is not None
        for _ in range(after_lines):
            process.stdout.readline()
        process.stdout.close()
        stderr = process.stderr.read()
        return process.wait(timeout=60), stderr


def test_a_run_whose_output_is_closed_says_so_and_resumes(tmp_path: Path) -> None:
    # `stepgraph run ... --json | head -3`: it ended with 1 and nothing said,
    # though the run was stopped half-way (listed cancelled, resumable).
    store = f"sqlite:{tmp_path / 'slow.sqlite'}"
    code, stderr = run_with_output_closed(
        ["run", "tests.cli_flows:slow", "--input", "0", "--store", store, "--json"], 3
    )
    assert code == 141 and "Traceback" not in stderr, stderr
    match = re.search(r"^stopped: standard output was closed\. Resume with: (.*)$", stderr, re.M)
    assert match, stderr
    listed = cli("checkpoints", "list", "--store", store).stdout.splitlines()[1:]
    assert [line.split("\t")[2] for line in listed] == ["cancelled"]
    resumed = cli(*shlex.split(match.group(1))[1:])
    assert resumed.returncode == 0 and "output: 12" in resumed.stdout, resumed.stderr
    # A run that had ended when its output closed (text: printed at the end).
    code, stderr = run_with_output_closed(
        ["run", "tests.cli_flows:asking", "--input", '"x"', "--store", store], 0
    )
    assert code == 141 and "Traceback" not in stderr, stderr
    assert (
        "standard output was closed; the run had ended (idle_with_pending_requests): see "
        f"stepgraph checkpoints list --store {store} --run "
    ) in stderr
    code, stderr = run_with_output_closed(
        ["run", "examples.hello:build", "--input", '"x"', "--no-store"], 0
    )
    assert (code, stderr) == (141, "standard output was closed; the run had ended (idle)\n")


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--version"],
        ["--help"],
        ["checkpoints"],
        ["viz", "tests.cli_flows:pricing", "-o", "-"],
        ["checkpoints", "list", "--store", "STORE"],
    ],
)
def test_a_command_whose_output_is_closed_ends_as_sigpipe_would(
    args: list[str], tmp_path: Path
) -> None:
    # `stepgraph | head`, `stepgraph checkpoints list | head -1`: rich and
    # click ended the process with exit 1 ("failed") when the reader had gone
    # (a test that replaced print() saw 141, the real process never did).
    store = f"sqlite:{tmp_path / 'runs.sqlite'}"
    if "STORE" in args:
        made = cli("run", "tests.cli_flows:pricing", "--input", '{"item": "x", "quantity": 1}',
                   "--store", store)  # fmt: skip
        assert made.returncode == 0, made.stderr
    reader, writer = os.pipe()
    os.close(reader)  # (the reader is gone before the first line is written)
    try:
        done = subprocess.run(
            [*COMMAND, *[store if a == "STORE" else a for a in args]],
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": WORKER_PYTHONPATH},
            timeout=120,
        )
    finally:
        os.close(writer)
    assert (done.returncode, done.stderr) == (141, "")


def test_ctrl_c_stops_cleanly_and_the_run_resumes(tmp_path: Path) -> None:
    store = f"sqlite:{tmp_path / 'slow.sqlite'}"
    code, stderr = interrupt_slow_run(store, after=3)
    assert code == 130
    match = re.search(r"--resume (\w+)", stderr)
    assert match, stderr
    resumed = cli("run", "tests.cli_flows:slow", "--store", store, "--resume", "latest", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert [e["data"] for e in events_of(resumed.stdout) if e["kind"] == "output"] == [12]
    assert "had finished" not in resumed.stderr
    # Once more: the run has finished, and the user is told nothing runs.
    again = cli("run", "tests.cli_flows:slow", "--store", store, "--resume", "latest")
    assert again.returncode == 0, again.stderr
    assert "had finished (idle) at checkpoint" in again.stderr
    assert "runs nothing; a new run takes --input" in again.stderr


def test_resuming_a_finished_run_says_only_how_it_stays(tmp_path: Path) -> None:
    # (its --json said "in_progress" first, though it runs nothing)
    store = f"sqlite:{tmp_path / 'done.sqlite'}"
    done = cli("run", "examples.hello:build", "--input", '"x"', "--store", store, "--json")
    assert done.returncode == 0, done.stderr
    again = cli("run", "examples.hello:build", "--store", store, "--resume", "latest", "--json")
    assert again.returncode == 0, again.stderr
    events = events_of(again.stdout)
    assert [e["kind"] for e in events] == ["run_started", "status"]
    assert events[-1]["status"] == "idle"
    assert "had finished (idle) at checkpoint" in again.stderr


@pytest.mark.parametrize("ignoring_sigint", [False, True])
def test_sigterm_stops_like_ctrl_c(tmp_path: Path, ignoring_sigint: bool) -> None:
    """What systemd, docker stop and kill send: the run stops at a
    checkpoint, is listed cancelled, says how to resume; exit 143 — also in
    a process that ignores SIGINT (``cmd &`` in a script)."""
    store = f"sqlite:{tmp_path / 'slow.sqlite'}"
    code, stderr = interrupt_slow_run(
        store, after=2, how=signal.SIGTERM, ignoring_sigint=ignoring_sigint
    )
    assert code == 143, stderr
    assert "Traceback" not in stderr
    assert re.search(r"stopped\. Resume with: .*--resume \w+", stderr), stderr
    listed = cli("checkpoints", "list", "--store", store).stdout.splitlines()[1:]
    assert [line.split("\t")[2] for line in listed] == ["cancelled"]


def mermaid_counts(text: str) -> tuple[int, int]:
    nodes = re.findall(r'^\s+n\d+(?:\["|\[\[")', text, re.M)
    edges = re.findall(r"^\s+n\d+ (?:-->|-\.->|==>)", text, re.M)
    return len(nodes), len(edges)


def test_viz_mermaid_counts_match_the_graph(tmp_path: Path) -> None:
    done = cli("viz", "tests.cli_flows:fancy")
    assert done.returncode == 0, done.stderr
    workflow = cli_flows.fancy()
    arrows = sum(
        len(e.targets) if e.kind != "fan_in" else len(e.sources) for e in workflow.graph.edges
    )
    assert mermaid_counts(done.stdout) == (len(workflow.executors), arrows)
    # Punctuation-only differences stay distinct nodes; kinds look different.
    assert {'["a-b"]', '["a.b"]', '["a_b"]', '[["sub"]]'} <= set(
        re.findall(r'\[\[?"[^"]+"\]\]?', done.stdout)
    )
    assert "==>" in done.stdout and '-.->|"default"|' in done.stdout
    demo_drawing = cli("viz", "stepgraph.demo:build", "-o", str(tmp_path / "demo.mmd"))
    assert demo_drawing.returncode == 0
    assert mermaid_counts((tmp_path / "demo.mmd").read_text()) == (5, 5)


def test_viz_dot_and_svg(tmp_path: Path) -> None:
    dot = cli("viz", "tests.cli_flows:fancy", "--format", "dot")
    assert dot.returncode == 0 and dot.stdout.startswith('digraph "fancy" {')
    workflow = cli_flows.fancy()
    arrows = sum(
        len(e.targets) if e.kind != "fan_in" else len(e.sources) for e in workflow.graph.edges
    )
    assert len(re.findall(r"^\s+n\d+ -> n\d+", dot.stdout, re.M)) == arrows == 8
    if not shutil.which("dot"):
        # .ci/run installs Graphviz and sets STEPGRAPH_REQUIRE_GRAPHVIZ: never skipped there.
        if os.environ.get("STEPGRAPH_REQUIRE_GRAPHVIZ"):
            pytest.fail("Graphviz's dot is missing, but STEPGRAPH_REQUIRE_GRAPHVIZ is set")
        pytest.skip("Graphviz's dot is not installed (apt-get install graphviz)")
    svg = cli("viz", "tests.cli_flows:fancy", "--format", "svg", "-o", str(tmp_path / "g.svg"))
    assert svg.returncode == 0, svg.stderr
    assert "<svg" in (tmp_path / "g.svg").read_text()
    png = cli("viz", "tests.cli_flows:fancy", "--format", "png", "-o", str(tmp_path / "g.png"))
    assert png.returncode == 0 and (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"


def test_version_is_printed() -> None:
    done = cli("--version")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"stepgraph {sg.__version__}\n", "")
    assert "--version" in cli("--help").stdout


def test_viz_output_dash_is_standard_output(tmp_path: Path) -> None:
    # As --input-file - reads standard input: -o - never makes a file named "-".
    done = cli("viz", "stepgraph.demo:build", "-o", "-", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("flowchart LR\n") and mermaid_counts(done.stdout) == (5, 5)
    dot = cli("viz", "stepgraph.demo:build", "--format", "dot", "--output", "-", cwd=tmp_path)
    assert dot.returncode == 0 and dot.stdout.startswith('digraph "review-pipeline" {')
    assert list(tmp_path.iterdir()) == []


def test_viz_without_graphviz_gives_a_hint(tmp_path: Path) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    python_dir = str(Path(sys.executable).parent)
    done = cli(
        "viz", "tests.cli_flows:fancy", "--format", "svg", env={"PATH": f"{bare}:{python_dir}"}
    )
    assert done.returncode == 1 and "needs Graphviz's dot program" in done.stderr


def test_checkpoints_commands(tmp_path: Path) -> None:
    store = f"sqlite:{tmp_path / 'c.sqlite'}"
    assert (
        cli("run", "tests.cli_flows:asking", "--input", '"bob"', "--store", store).returncode == 2
    )
    listed = cli("checkpoints", "list", "--store", store)
    assert listed.returncode == 0
    head, row = listed.stdout.splitlines()
    assert head.split("\t") == ["run", "workflow", "status", "step", "open", "size", "updated"]
    run_id, workflow, status, step, pending, _, _ = row.split("\t")
    assert (workflow, status, step, pending) == ("asking", "idle_with_pending_requests", "1", "1")
    per_run = cli("checkpoints", "list", "--store", store, "--run", run_id)
    head, *lines = per_run.stdout.splitlines()
    assert head.split("\t") == [
        "#", "checkpoint", "step", "status", "open", "parent", "time", "parent_id", "size"
    ]  # fmt: skip
    rows = [line.split("\t") for line in lines]
    ids = [r[1] for r in rows]
    assert len(ids) == 2  # entry + one barrier
    assert [(r[0], r[5], r[7]) for r in rows] == [("1", "-", "-"), ("2", "#1", ids[0])]  # parents
    shown = cli("checkpoints", "show", ids[-1], "--store", store)
    record = json.loads(shown.stdout)
    assert record["status"] == "idle_with_pending_requests"
    assert record["open_requests"][0]["executor"] == "gate"
    assert cli("checkpoints", "delete", ids[0], "--store", store).returncode == 0
    deleted = cli("checkpoints", "delete", "--run", run_id, "--store", store)
    assert deleted.returncode == 0 and deleted.stdout.endswith("(1 checkpoint)\n"), deleted.stdout
    assert "no checkpoint" in cli("checkpoints", "show", ids[-1], "--store", store).stderr
    for gone in (("delete",), ("prune", "--keep-last", "1")):  # (a run it does not hold)
        again = cli("checkpoints", *gone, "--run", run_id, "--store", store)
        # (the store named as given, as "checkpoints list --run" does: it said "in this store")
        assert again.returncode == 1 and f"no run {run_id!r} in {store}\n" in again.stderr


def run_in_pty(argv: list[str], answer: bytes | None = None, columns: int = 80) -> tuple[int, str]:
    """Run the CLI in a pseudo-terminal 24 lines high (80 columns unless
    told); type ``answer`` at the first prompt. Returns (exit code,
    everything the terminal showed)."""
    import fcntl
    import pty
    import struct
    import termios

    pid, fd = pty.fork()
    if pid == 0:  # child: become the CLI in the pseudo-terminal
        os.environ["PYTHONPATH"] = WORKER_PYTHONPATH
        os.chdir(ROOT)
        os.execvp(COMMAND[0], [*COMMAND, *argv])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    screen = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
        if answer is not None and b"?" in chunk and b"[Y/n]" in screen:
            os.write(fd, answer)
            answer = None
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), screen.decode(errors="replace")


def test_live_view_in_an_80x24_terminal(tmp_path: Path) -> None:
    store = f"sqlite:{tmp_path / 'tty.sqlite'}"
    code, text = run_in_pty(["run", "tests.cli_flows:slow", "--input", "5", "--store", store])
    assert code == 0, text
    assert "superstep" in text and "tick" in text and "running" in text
    assert "output: 12" in text and "status: idle" in text


def test_the_live_view_shows_a_map_running_until_its_last_item_ends() -> None:
    """A map's items share its path and run at once: it shows as running,
    with how many calls go on, until the last one ends (it showed done as
    soon as the first ended); a run that ended shows nothing running (calls
    cut short by a failing item end without an event)."""
    import io

    from rich.console import Console

    from stepgraph._cli._render import LiveView

    def shown(view: LiveView) -> list[str]:
        console = Console(file=io.StringIO(), width=120, force_terminal=False)
        console.print(view)
        return [" ".join(line.split()) for line in console.file.getvalue().splitlines()]  # type: ignore[attr-defined]

    view = LiveView(Console(file=io.StringIO()), "maps")
    path = {"executor_id": "pages", "superstep": 2, "workflow_path": ("docs",)}
    for item in range(3):
        view.handle(sg.ExecutorInvokedEvent(**path, workflow_items=(1,), item=item))
    assert any(line.startswith("docs[1]/pages running (3) ") for line in shown(view))
    view.handle(sg.ExecutorCompletedEvent(**path, workflow_items=(1,), item=2, duration=0.1))
    lines = shown(view)
    assert any(line.startswith("docs[1]/pages running (2) ") for line in lines)
    assert not any(line.startswith("docs[1]/pages done") for line in lines)
    view.handle(sg.ExecutorFailedEvent(**path, workflow_items=(1,), item=0, error="E: no"))
    view.handle(sg.StatusEvent(status=sg.RunStatus.FAILED))
    lines = shown(view)
    assert "docs[1]/pages failed" in lines and not any("running" in line for line in lines)


def test_the_live_view_times_a_map_by_its_wall_time() -> None:
    """A finished map shows the time from its first item's start to its
    last item's end (three items of 0.5 s at once showed 1.500 s, their
    sum); an executor's calls one after another, in supersteps of their
    own, add up; a map's items that completed count even when a sibling's
    failure ended the run. The view's clock is a fake: no sleeps."""
    import io

    from rich.console import Console

    from stepgraph._cli._render import LiveView

    now = [100.0]

    def shown(view: LiveView) -> list[str]:
        console = Console(file=io.StringIO(), width=120, force_terminal=False)
        console.print(view)
        return [" ".join(line.split()) for line in console.file.getvalue().splitlines()]  # type: ignore[attr-defined]

    view = LiveView(Console(file=io.StringIO()), "maps", clock=lambda: now[0])
    pages = {"executor_id": "pages", "superstep": 2, "workflow_path": ("docs",)}
    for item in range(3):
        view.handle(sg.ExecutorInvokedEvent(**pages, workflow_items=(0,), item=item))
    now[0] = 100.5
    for item, took in ((1, 0.499), (0, 0.5), (2, 0.497)):
        view.handle(
            sg.ExecutorCompletedEvent(**pages, workflow_items=(0,), item=item, duration=took)
        )
    assert "docs[0]/pages done 0.500 s" in shown(view)
    # Items that overlap in part (max_concurrency=2: the third starts as the
    # first ends): from the first's start to the last's end.
    outer = {"executor_id": "docs", "superstep": 1}
    view.handle(sg.ExecutorInvokedEvent(**outer, item=0))
    view.handle(sg.ExecutorInvokedEvent(**outer, item=1))
    now[0] = 101.0
    view.handle(sg.ExecutorCompletedEvent(**outer, item=0, duration=0.5))
    view.handle(sg.ExecutorInvokedEvent(**outer, item=2))
    now[0] = 101.2
    view.handle(sg.ExecutorCompletedEvent(**outer, item=1, duration=0.6))
    assert any(line.startswith("docs running ") for line in shown(view))
    now[0] = 101.7
    view.handle(sg.ExecutorCompletedEvent(**outer, item=2, duration=0.7))
    assert "docs done 1.200 s" in shown(view)
    # One executor's calls in supersteps of their own add up.
    for step, took in ((3, 0.25), (4, 0.125)):
        view.handle(sg.ExecutorInvokedEvent(executor_id="tick", superstep=step))
        now[0] += 1.0
        view.handle(sg.ExecutorCompletedEvent(executor_id="tick", superstep=step, duration=took))
    assert "tick done 0.375 s" in shown(view)
    # A failing item ends the run: what its siblings completed still counts.
    for item in range(3):
        view.handle(sg.ExecutorInvokedEvent(executor_id="fold", superstep=5, item=item))
    now[0] += 0.25
    view.handle(sg.ExecutorCompletedEvent(executor_id="fold", superstep=5, item=0, duration=0.25))
    view.handle(sg.ExecutorFailedEvent(executor_id="fold", superstep=5, item=1, error="E: no"))
    view.handle(sg.StatusEvent(status=sg.RunStatus.FAILED))
    lines = shown(view)
    assert "fold failed" in lines and "fold done 0.250 s" in lines
    assert not any("running" in line for line in lines)


def test_demo_asks_on_a_terminal(tmp_path: Path) -> None:
    code, text = run_in_pty(["demo", "--store", f"sqlite:{tmp_path / 'd.sqlite'}"], answer=b"n\r")
    assert code == 0, text
    assert "Publish 'Stepgraph runs in supersteps." in text
    assert "output: held back: Stepgraph runs" in text
    # Ctrl-D (or Ctrl-C) at the prompt: the run waits in the store, and the
    # demo says how to answer it later.
    spec = f"sqlite:{tmp_path / 'later.sqlite'}"
    code, text = run_in_pty(["demo", "--store", spec], answer=b"\x04")
    assert code == 130, text
    assert "stopped at the approval; the run waits for its answer in the store:" in text
    [command] = [line.strip() for line in text.splitlines() if "--respond" in line]
    answered = cli(*shlex.split(command)[1:])
    assert answered.returncode == 0, answered.stderr
    assert "output: published: Stepgraph runs" in answered.stdout
    # The same in the demo's temporary store: kept for that command.
    code, text = run_in_pty(["demo"], answer=b"\x04")
    assert code == 130, text
    [command] = [line.strip() for line in text.splitlines() if "--respond" in line]
    [kept] = [line for line in text.splitlines() if line.startswith("checkpoints: kept in ")]
    folder = Path(kept.removeprefix("checkpoints: kept in ").split(" for ")[0])
    try:
        answered = cli(*shlex.split(command)[1:])
        assert answered.returncode == 0, answered.stderr
        assert "output: published: Stepgraph runs" in answered.stdout
    finally:
        shutil.rmtree(folder)


def test_run_on_the_ray_backend() -> None:
    done = cli(
        "run",
        "examples.hello:build",
        "--input",
        '"ray"',
        "--no-store",
        "--backend",
        "ray",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    assert [e["data"] for e in events_of(done.stdout) if e["kind"] == "output"] == ["HELLO, RAY!"]
    bad = cli("run", "examples.hello:build", "--input", '"x"', "--no-store", "--backend", "nope")
    assert bad.returncode == 1 and "unknown backend 'nope'" in bad.stderr


RAY_RUN = ["run", "examples.hello:build", "--input", '"ray"', "--no-store", "--backend", "ray"]


def test_sigterm_while_the_ray_cluster_starts_stops_with_143() -> None:
    """ray.init puts in a SIGTERM handler of its own (exit 15, nothing
    said): a SIGTERM while the local cluster starts stops as documented."""
    # Ray's first line comes as it starts (a warning) or once it has started
    # (where a previous start left what it warns of): a SIGTERM sent after
    # it may land in the run instead, which stops as documented too (saying
    # so on standard output); then it is sent sooner, until one lands while
    # the cluster starts.
    for delay in (0.3, 0.1, 0.0):
        process = cli_process(RAY_RUN)
        with process:
            assert process.stderr is not None
            first = process.stderr.readline()  # (Ray says something as it starts)
            time.sleep(delay)
            process.send_signal(signal.SIGTERM)
            stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 143, stderr
        if "stopped" in stderr:
            break  # (stopped while the cluster started)
        assert "stopped (no checkpoint was written)" in stdout, (first, stdout, stderr)
    else:
        pytest.fail("no SIGTERM landed while the Ray cluster started")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_while_the_ray_cluster_stops_keeps_the_runs_exit_code(signum: int) -> None:
    """The run has ended (idle) and said so; a Ctrl-C or SIGTERM during the
    1-2 s the local Ray cluster takes to stop does not turn it into a
    stopped run (Ray leaves SIGTERM to the default as it stops: the process
    was killed)."""
    process = cli_process(RAY_RUN)
    with process:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("status: idle"):
                time.sleep(0.3)  # (its print done; the cluster takes 1-2 s to stop)
                process.send_signal(signum)
                break
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "stopped" not in stderr


def test_sigterm_during_a_run_on_ray_stops_it_resumable(tmp_path: Path) -> None:
    store = f"sqlite:{tmp_path / 's.db'}"
    process = cli_process(
        [
            "run",
            "tests.cli_flows:slow",
            "--input",
            "0",
            "--store",
            store,
            "--json",
            "--backend",
            "ray",
        ]
    )
    with process:
        assert process.stdout is not None
        for line in process.stdout:
            if json.loads(line)["kind"] == "superstep_completed":
                process.send_signal(signal.SIGTERM)
                break
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert "stopped. Resume with: stepgraph run tests.cli_flows:slow" in stderr
    # The command printed goes on on Ray too (it named no backend: it ran locally).
    [command] = [line for line in stderr.splitlines() if "Resume with: " in line]
    words = shlex.split(command.split("Resume with: ")[1])
    assert words[words.index("--backend") + 1] == "ray", words
    resumed = cli(*words[1:], "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert [e["data"] for e in events_of(resumed.stdout) if e["kind"] == "output"] == [12]


def test_help_reflows_to_the_terminal() -> None:
    """Help lines break where the terminal does, not where a docstring did."""
    wide = cli("--help", env={"COLUMNS": "200"})
    assert wide.returncode == 0
    assert "start runs, watch them live, answer requests" in wide.stdout
    assert "2 idle with pending requests, 3 paused at a breakpoint, 1 failed" in wide.stdout
    deleting = cli("checkpoints", "delete", "--help", env={"COLUMNS": "200"})
    assert "The space is reused by later checkpoints; 'vacuum' shrinks" in deleting.stdout
    assert "``" not in deleting.stdout


def test_the_checkpoints_group_names_each_of_its_commands() -> None:
    """Its one-line help (in ``stepgraph --help`` and its own) lists what it
    holds, as docs/cli.md does: ``migrate`` included."""
    import typer.main

    from stepgraph._cli._checkpoints import checkpoints_app

    group = typer.main.get_command(checkpoints_app)
    commands = list(group.commands)  # type: ignore[attr-defined]
    assert "migrate" in commands
    helped = cli("checkpoints", "--help", env={"COLUMNS": "200"})
    summary = helped.stdout.split("Usage:")[1].split("╭")[0]
    assert all(name in summary.lower() for name in commands), summary
