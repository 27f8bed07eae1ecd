"""Every Python code block in the README and docs runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
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
