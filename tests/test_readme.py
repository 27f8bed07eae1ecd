"""Every code block in the README and docs runs.

Python blocks run as scripts. The ``bash`` blocks of docs/ run command by
command from the project root (each must succeed). The README's ``bash``
blocks are the install and test commands: ``.ci/run`` runs exactly those, and
``tests/test_cli.py`` runs ``stepgraph demo``. A docs ``text`` block that
starts with ``$ stepgraph ...`` is a transcript: the command runs, and what it
prints must match the block line for line.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import stepgraph as sg

ROOT = Path(__file__).resolve().parent.parent
SOURCE = Path(sg.__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def blocks() -> list[tuple[str, int, str]]:
    found = []
    for path in DOCS:
        for i, match in enumerate(BLOCK.finditer(path.read_text())):
            found.append((path.name, i, match.group(1)))
    return found


@pytest.mark.parametrize(("doc", "index", "code"), blocks(), ids=lambda v: str(v)[:20])
def test_code_block_runs(doc: str, index: int, code: str, tmp_path: Path) -> None:
    script = tmp_path / f"{Path(doc).stem}_{index}.py"
    script.write_text(code)
    run = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert run.returncode == 0, f"{doc} block {index} failed:\n{run.stderr}"


def test_there_are_blocks_to_run() -> None:
    assert any(doc == "README.md" for doc, _, _ in blocks())


SHELL = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)


def commands() -> list[tuple[str, str]]:
    found = []
    for path in sorted((ROOT / "docs").glob("*.md")):
        for match in SHELL.finditer(path.read_text()):
            for line in match.group(1).splitlines():
                if line.strip():
                    found.append((path.name, line.strip()))
    return found


@pytest.mark.parametrize(("doc", "command"), commands(), ids=lambda v: str(v)[:40])
def test_docs_command_runs(doc: str, command: str) -> None:
    import os
    import shlex
    import shutil

    argv = shlex.split(command)
    assert argv[0] == "stepgraph", f"{doc}: only stepgraph commands belong in docs bash blocks"
    exe = shutil.which("stepgraph")
    argv = ([exe] if exe else [sys.executable, "-m", "stepgraph"]) + argv[1:]
    run = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert run.returncode == 0, f"{doc}: {command}\n{run.stdout}\n{run.stderr}"


def test_there_are_commands_to_run() -> None:
    assert any(doc == "cli.md" for doc, _ in commands())


TRANSCRIPT = re.compile(r"^```text\n\$ (.*?)\n(.*?)^```", re.S | re.M)


def transcripts() -> list[tuple[str, str, str]]:
    found = []
    for path in sorted((ROOT / "docs").glob("*.md")):
        for match in TRANSCRIPT.finditer(path.read_text()):
            found.append((path.name, match.group(1), match.group(2)))
    return found


def shown(line: str) -> re.Pattern[str]:
    """A transcript line as a pattern: ids (hex runs, or the start of one cut
    short: ``9ef2…``) and elisions (``...``, ``…``) stand for whatever the run
    printed there."""
    pattern = ""
    for part in re.split(r"([0-9a-f]{8,}|[0-9a-f]*(?:\.\.\.|…))", line):
        if re.fullmatch("[0-9a-f]{8,}", part):
            pattern += "[0-9a-f]+"
        elif part.endswith(("...", "…")):
            pattern += ".*"
        else:
            pattern += re.escape(part)
    return re.compile(pattern)


@pytest.mark.parametrize(("doc", "command", "output"), transcripts(), ids=lambda v: str(v)[:40])
def test_docs_transcript_matches_what_the_command_prints(
    doc: str, command: str, output: str, tmp_path: Path
) -> None:
    """A ``text`` block that starts with ``$ stepgraph ...`` shows what that
    command prints on standard output, line for line (run in an empty folder)."""
    import os
    import shlex

    argv = shlex.split(command)
    assert argv[0] == "stepgraph", f"{doc}: {command}"
    run = subprocess.run(
        [sys.executable, "-m", "stepgraph", *argv[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        # (the stepgraph under test, not whichever the interpreter installed)
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(SOURCE)])},
        stdin=subprocess.DEVNULL,
    )
    printed = run.stdout.splitlines()
    expected = output.splitlines()
    assert len(printed) == len(expected), f"{doc}: {command}\n{run.stdout}\n{run.stderr}"
    for line, want in zip(printed, expected, strict=True):
        assert shown(want).fullmatch(line), f"{doc}: {command}\nshown:   {want}\nprinted: {line}"


def test_there_are_transcripts_to_check() -> None:
    assert {doc for doc, _, _ in transcripts()} >= {"cli.md", "agents.md"}
