"""Each example runs as a script and prints what it promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

EXPECTED = {
    "hello.py": "HELLO, WORLD!\n",
    "map_reduce.py": "the: 4\nand: 2\ninbox: 2\n",
    "switch_routing.py": (
        "oncall   <- Site is down\n"
        "billing  <- Refund for March invoice\n"
        "support  <- How do I export?\n"
    ),
    "loop.py": "guess 50: lower\nguess 24: higher\nguess 37: found\n",
    "approval.py": "waiting for approval of 420.00\napproved 420.00 for dana\n",
    "agent_approval.py": (
        "approval needed: send_email to team@example.com\n"
        "emails sent: 1\n"
        "review: accept (8/10): clear, and it cites its notes\n"
        "researcher: 30 tokens\n"
        "reviewer: 80 tokens\n"
    ),
    "crash_resume.py": (
        "child process exited with signal 9\n"
        "crashed run stopped after superstep 2; resuming\n"
        "finished steps [1, 2, 3, 4, 5]\n"
    ),
    "multi_agent.py": (
        "critique: [facts] ok\n"
        "critique: [tone] more friendly, please\n"
        "critique: [length] ok\n"
        "final: Draft about workflow engines: supersteps make agents predictable and friendly.\n"
    ),
}


def test_every_example_has_an_expectation() -> None:
    assert {p.name for p in EXAMPLES.glob("*.py")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name: str) -> None:
    offline = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=120,
        env=offline,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == EXPECTED[name]


@pytest.mark.parametrize(
    ("documents", "expected"),
    [
        (["x"] * 6, ["x: 6"]),
        ([], ["no words"]),  # no items: split answers, nothing waits
        (["", "  "], ["no words"]),  # items without words
        (["x"], ["x: 1"]),
        (["a [b] ü", "[/x] ü"], ["ü: 2", "[/x]: 1", "[b]: 1"]),
        ([f"w{i % 7}" for i in range(500)], ["w0: 72", "w1: 72", "w2: 72"]),
        ([f"w{i % 7} z" for i in range(5_000)], ["z: 5000", "w0: 715", "w1: 715"]),
    ],
)
def test_map_reduce_counts_every_document(documents: list[str], expected: list[str]) -> None:
    import json

    from tests.test_cli import cli

    done = cli(
        "run", "examples.map_reduce:build", "--input", json.dumps(documents), "--json",
        "--no-store",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["data"] for e in events if e["kind"] == "output"] == expected
    assert [e for e in events if e["kind"] == "warning"] == []


@pytest.mark.parametrize(
    ("low", "high", "last"),
    [
        (0, 100, "guess 37: found"),
        (37, 37, "guess 37: found"),
        (50, 60, "no number left to guess: the secret is outside the range"),
        (0, 10, "no number left to guess: the secret is outside the range"),
        (60, 50, "no number left to guess: the secret is outside the range"),  # (empty)
    ],
)
async def test_the_loop_ends_whether_or_not_the_secret_is_in_range(
    low: int, high: int, last: str
) -> None:
    from examples import loop

    result = await loop.build().run(loop.Guess(low, high))
    assert result.outputs[-1] == last
    assert len(result.outputs) <= 8  # a binary search over at most 101 numbers


async def test_the_editor_revises_with_every_review() -> None:
    from examples import multi_agent

    prompts: dict[str, str] = {}

    class Recording(multi_agent.FakeModel):
        async def complete(self, role: str, prompt: str) -> str:
            prompts[role] = prompt
            return await super().complete(role, prompt)

    result = await multi_agent.build(Recording()).run("engines")
    draft, reviews = prompts["editor"].split(multi_agent.REVIEWS)
    assert draft == "Draft about engines: supersteps make agents predictable."
    assert sorted(reviews.split("\n")) == [
        "- [facts] ok",
        "- [length] ok",
        "- [tone] more friendly, please",
    ]
    assert result.outputs == [
        "Draft about engines: supersteps make agents predictable and friendly."
    ]
    # A topic of several lines, brackets and all, comes through whole.
    topic = "[{}] ünï©ødé 🎉 a=b c\nsecond line"
    result = await multi_agent.build().run(topic)
    assert result.outputs == [
        f"Draft about {topic}: supersteps make agents predictable and friendly."
    ]


def example(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, cwd=EXAMPLES.parent
    )


def test_the_approval_example_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    """Answers are yes or no (anything else is not read as a rejection), a
    mistyped store is not created, a second answer is refused in a line."""
    store = tmp_path / "runs.sqlite"
    started = example("examples/approval.py", "start", str(store))
    assert started.returncode == 0, started.stderr
    command = started.stdout.splitlines()[-1].split()[3:]  # (after "answer with: python")
    assert command[:2] == ["examples/approval.py", "answer"] and command[-1] == "yes"
    for wrong in ([*command[:-1], "Yes please"], command[:2], [command[0], "start"]):
        refused = example(*wrong)
        assert refused.returncode == 2 and refused.stderr.startswith("usage:"), refused
    missing = example(*command[:2], str(tmp_path / "typo.sqlite"), *command[3:])
    assert missing.returncode == 1 and missing.stderr.startswith("error: "), missing
    assert "Traceback" not in missing.stderr and not (tmp_path / "typo.sqlite").exists()
    answered = example(*command[:-1], "NO")
    assert (answered.returncode, answered.stdout) == (0, "rejected 420.00 for dana\n")
    again = example(*command)
    assert again.returncode == 1 and "already answered" in again.stderr, again
    assert "Traceback" not in again.stderr


def test_the_agent_example_without_the_openai_sdk_says_how_to_install_it() -> None:
    hidden = (
        "import runpy, sys; sys.modules['openai'] = None; "  # (imports of it fail)
        f"sys.argv = ['agent_approval.py']; runpy.run_path({str(EXAMPLES / 'agent_approval.py')!r},"
        " run_name='__main__')"
    )
    run = subprocess.run(
        [sys.executable, "-c", hidden], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip() == (
        "error: OpenAIChatModel needs the openai package: pip install 'stepgraph[openai]'"
    )
