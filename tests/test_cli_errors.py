"""The command line with hostile and wrong input: user text is never read as
markup, and every problem is one clear line with exit code 1 (never a
traceback)."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.test_cli import cli, events_of, run_in_pty


def one_line_error(done: object, *fragments: str) -> str:
    code, stdout, stderr = done.returncode, done.stdout, done.stderr  # type: ignore[attr-defined]
    assert code == 1, (stdout, stderr)
    assert "Traceback" not in stderr + stdout
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return str(lines[0])


def test_markup_in_ids_inputs_outputs_and_errors_prints_as_is() -> None:
    plain = cli("run", "tests.cli_flows:hostile", "--input", '"[/tag]"', "--no-store")
    assert plain.returncode == 1, plain.stderr
    assert "output: [bold][/tag][/bold] list[str]" in plain.stdout
    assert (
        "failed: executor '[red]boom' failed in superstep 2: ValueError: cannot take [/tag] "
        "(expected list[str])"
    ) in plain.stdout
    assert "MarkupError" not in plain.stdout + plain.stderr
    # Terminal control sequences in what a workflow says are shown, not obeyed.
    escaped = cli(
        "run", "tests.cli_flows:hostile", "--input", '"\\u001b[31mred\\u0007"', "--no-store"
    )
    assert escaped.returncode == 1
    assert "\x1b" not in escaped.stdout + escaped.stderr and "\x07" not in escaped.stdout
    assert "cannot take \\x1b[31mred\\x07 (expected list[str])" in escaped.stdout
    assert "output: [bold]\\x1b[31mred\\x07[/bold] list[str]" in escaped.stdout
    as_json = cli("run", "tests.cli_flows:hostile", "--input", '"[/tag]"', "--no-store", "--json")
    assert as_json.returncode == 1
    [output] = [e for e in events_of(as_json.stdout) if e["kind"] == "output"]
    assert output["data"] == "[bold][/tag][/bold] list[str]" and output["path"] == "[bold]x"
    code, screen = run_in_pty(
        ["run", "tests.cli_flows:hostile", "--input", '"[/tag] ü"', "--no-store"]
    )
    assert code == 1, screen
    assert "[bold]x" in screen and "[b]hostile[/b]" in screen and "[red]boom" in screen
    assert "MarkupError" not in screen


def test_brackets_in_error_messages_survive() -> None:
    done = cli(
        "run", "tests.cli_flows:pricing", "--input", '{"item": [1], "quantity": 2}', "--no-store"
    )
    line = one_line_error(done, "the input does not fit the start executor 'price'")
    assert "item: Input should be a valid string (got [1])" in line


PROBLEMS = {
    "needs-args": (
        ("run", "tests.cli_flows:needs_arguments", "--input", "1"),
        "tests.cli_flows:needs_arguments needs arguments (size)",
    ),
    "raises-on-import": (
        ("run", "tests.cli_broken:build", "--input", "1"),
        "importing 'tests.cli_broken' failed: RuntimeError: this module is broken on purpose",
    ),
    "exits-on-import": (
        ("run", "tests.cli_exits:build", "--input", "1", "--no-store"),
        "importing 'tests.cli_exits' called sys.exit(3)",
    ),
    "factory-exits": (
        ("run", "tests.cli_flows:exits", "--input", "1", "--no-store"),
        "tests.cli_flows:exits() called sys.exit('no workflow today')",
    ),
    "unreadable-ray-address": (
        (
            "run",
            "examples.hello:build",
            "--input",
            '"x"',
            "--no-store",
            "--backend",
            "ray:nonsense",
        ),
        "cannot use 'nonsense' as a Ray address: Invalid address format",
    ),
    "a-file-not-a-module": (
        ("run", "./tests/cli_flows.py:pricing", "--input", "1"),
        "name a module, not a file: tests.cli_flows:pricing from here (or cli_flows:pricing "
        "from tests)",
    ),
    "factory-returns-an-int": (
        ("run", "tests.cli_flows:returns_int", "--input", "1"),
        "tests.cli_flows:returns_int returned an int, not a Workflow",
    ),
    "factory-is-async": (
        ("run", "tests.cli_flows:async_build", "--input", "1"),
        "tests.cli_flows:async_build is an async function; name a Workflow or a plain function",
    ),
    "factory-returns-a-coroutine": (
        ("viz", "tests.cli_flows:returns_a_coroutine"),
        "tests.cli_flows:returns_a_coroutine returned a coroutine (is it async?), not a Workflow",
    ),
    "null-input": (  # (it said "nothing to run: give --input", which was given)
        ("run", "tests.cli_flows:echoing", "--input", " null ", "--no-store"),
        "the input is null, and None is never a message: give the start executor 'echo' a "
        "value (it takes Any)",
    ),
    "null-input-with-resume": (
        ("run", "tests.cli_flows:echoing", "--input", "null", "--resume", "latest"),
        "the input is null, and None is never a message",
    ),
    "factory-returns-none": (
        ("run", "tests.cli_flows:returns_none", "--input", "1"),
        "tests.cli_flows:returns_none returned None, not a Workflow",
    ),
    "viz-bad-path": (
        ("viz", "tests.cli_flows:pricing", "-o", "/nonexistent/dir/x.mmd"),
        "cannot write '/nonexistent/dir/x.mmd': No such file or directory",
    ),
    "deep-json": (
        ("run", "tests.cli_flows:pricing", "--input", "[" * 5000 + "]" * 5000, "--no-store"),
        "the input is nested too deeply to read",
    ),
    "no-attribute": (
        ("run", "tests.cli_flows:nothing", "--input", "1"),
        "module 'tests.cli_flows' has no attribute 'nothing'",
    ),
    "store-is-a-folder": (
        ("run", "examples.hello:build", "--input", '"x"', "--store", "sqlite:tests"),
        "'tests' is a folder, not a checkpoint store file",
    ),
    "store-in-memory": (  # (SQLite opened it in memory: the run's checkpoints vanished)
        ("run", "tests.cli_flows:asking", "--input", '"x"', "--store", "sqlite::memory:"),
        "the store 'sqlite::memory:' is SQLite's in-memory database, gone when the command ends",
    ),
    "store-in-memory-listed": (
        ("checkpoints", "list", "--store", "sqlite:./:memory:"),
        "is SQLite's in-memory database",
    ),
    "store-and-no-store": (
        ("run", "examples.hello:build", "--input", '"x"', "--store", "sqlite:x.db", "--no-store"),
        "give --store or --no-store, not both",
    ),
    "unknown-option": (
        ("run", "examples.hello:build", "--bogus"),
        "No such option: --bogus (see: stepgraph run --help)",
    ),
    "bad-option-value": (
        ("checkpoints", "prune", "--keep-last", "0"),
        "Invalid value for '--keep-last'",
    ),
    "prune-says-how-many": (
        ("checkpoints", "prune"),
        "Missing option '--keep-last'",
    ),
    "unknown-status": (
        ("checkpoints", "list", "--status", "bogus"),
        "unknown status 'bogus'; use one of in_progress, ",
    ),
    "input-and-resume": (
        ("run", "examples.hello:build", "--input", '"x"', "--resume", "latest"),
        "both an input and --resume were given: give --input",
    ),
    "input-and-respond": (
        ("run", "examples.hello:build", "--input", '"x"', "--respond", "r=1"),
        "both an input and --respond were given",
    ),
    "empty-input": (
        ("run", "tests.cli_flows:asking", "--input", " ", "--no-store"),
        "the input is empty; JSON strings need quotes: '\"\"'",
    ),
    "empty-ray-address": (
        ("run", "examples.hello:build", "--input", '"x"', "--no-store", "--backend", "ray:"),
        "--backend ray: needs an address after the colon",
    ),
}


@pytest.mark.parametrize("case", sorted(PROBLEMS))
def test_problems_are_one_line(case: str) -> None:
    args, fragment = PROBLEMS[case]
    one_line_error(cli(*args), fragment)


def test_a_binary_input_file_is_one_line(tmp_path: Path) -> None:
    blob = tmp_path / "input.bin"
    blob.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    one_line_error(
        cli("run", "tests.cli_flows:pricing", "--input-file", str(blob), "--no-store"),
        f"--input-file '{blob}' is not UTF-8 text",
    )
    one_line_error(
        cli("run", "tests.cli_flows:pricing", "--input-file", str(tmp_path / "no.json")),
        "cannot read --input-file",
    )


def test_input_is_coerced_like_pydantic_and_errors_name_the_field() -> None:
    done = cli(
        "run",
        "tests.cli_flows:measuring",
        "--input",
        '{"label": "w", "value": 5, "tags": ["a", "b"]}',
        "--no-store",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    [output] = [e["data"] for e in events_of(done.stdout) if e["kind"] == "output"]
    assert output == "w=5.0 ['a', 'b']"  # 5 accepted for a float; a list for a tuple
    line = one_line_error(
        cli(
            "run",
            "tests.cli_flows:measuring",
            "--input",
            '{"label": "w", "value": "heavy"}',
            "--no-store",
        ),
        "value: Input should be a valid number, unable to parse string as a number",
    )
    assert '(got "heavy")' in line
    one_line_error(
        cli("run", "tests.cli_flows:measuring", "--input", '{"value": 1}', "--no-store"),
        "label: Field required",
    )


def test_a_bare_word_input_gets_a_quoting_hint() -> None:
    one_line_error(
        cli("run", "examples.hello:build", "--input", "hello", "--no-store"),
        "the input is not valid JSON",
        """JSON strings need quotes: '"hello"'""",
    )


def test_numbers_json_does_not_have_are_refused() -> None:
    for text, problem in (
        ("NaN", "NaN is not a JSON value"),
        ("[1, -Infinity]", "-Infinity is not a JSON value"),
        ('{"value": 1e999, "label": "x"}', "1e999 is too large for a number"),
    ):
        one_line_error(
            cli("run", "tests.cli_flows:measuring", "--input", text, "--no-store"),
            "the input is not valid JSON",
            problem,
        )


def test_a_string_for_a_number_json_does_not_have_is_refused_too() -> None:
    # (the literal NaN was refused, but "nan", "-Infinity" or "1e999" in
    # quotes became a float that is no number, which lax validation allows)
    line = one_line_error(
        cli(
            "run",
            "tests.cli_flows:measuring",
            "--input",
            '{"label": "w", "value": "nan"}',
            "--no-store",
        ),
        "value must be a finite number",
    )
    assert '(got "nan")' in line
    from stepgraph._cli._input import coerce
    from stepgraph._cli._load import CliError

    for annotation, value, field in [
        (float, "1e999", "the input"),
        (list[float], [1.5, " -Infinity"], "the value[1]"),
        (dict[str, float | None], {"a": "inf"}, "a"),
        (tuple[int, float], [1, "NaN"], "the value[1]"),
    ]:
        with pytest.raises(CliError, match="must be a finite number") as refused:
            coerce(value, annotation, "the input")
        assert f"{field} must be" in str(refused.value)
    # A number in a string stays a number; a string that may be text stays text.
    assert coerce({"a": "2.5"}, dict[str, float], "the input") == {"a": 2.5}
    assert coerce("nan", float | str, "the input") == "nan"


def test_a_bare_word_gets_a_hint_for_the_type_it_should_be(tmp_path: Path) -> None:
    line = one_line_error(
        cli("run", "tests.cli_flows:measuring", "--input", "heavy", "--no-store"),
        "the input is not valid JSON",
        'it takes Measure, e.g. {"label": "text", "value": 0.0',
    )
    assert "need quotes" not in line
    store = f"sqlite:{tmp_path / 'bools.sqlite'}"
    asked = cli("run", "tests.cli_flows:asking", "--input", '"dan"', "--store", store)
    [request_id] = re.findall(r"--respond (\w+)=true", asked.stdout)
    for word in ("maybe", "True", "yes"):
        line = one_line_error(
            cli(
                "run",
                "tests.cli_flows:asking",
                "--store",
                store,
                "--respond",
                f"{request_id}={word}",
            ),
            f"the answer to {request_id} is not valid JSON",
            "; it takes true or false",
        )
        assert "need quotes" not in line
    empty = cli("run", "tests.cli_flows:asking", "--store", store, "--respond", f"{request_id}=")
    one_line_error(empty, f"the answer to {request_id} is empty; it takes true or false")


def test_a_bool_answer_is_json_true_or_false_only(tmp_path: Path) -> None:
    store = f"sqlite:{tmp_path / 'strict.sqlite'}"
    asked = cli("run", "tests.cli_flows:asking", "--input", '"eve"', "--store", store)
    [request_id] = re.findall(r"--respond (\w+)=true", asked.stdout)
    for lax in ('"yes"', '"False"', "1", "0", '"true"', "null"):
        one_line_error(
            cli(
                "run",
                "tests.cli_flows:asking",
                "--store",
                store,
                "--respond",
                f"{request_id}={lax}",
            ),
            f"the answer to {request_id} is not a valid bool: Input should be a valid boolean, "
            f"true or false (got {lax})",
        )
    done = cli(
        "run", "tests.cli_flows:asking", "--store", store, "--respond", f"{request_id}=false",
        "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [e["data"] for e in events_of(done.stdout) if e["kind"] == "output"] == [
        "let eve through? no"
    ]


def test_answer_commands_show_the_json_shape_of_the_answer(tmp_path: Path) -> None:
    store = f"sqlite:{tmp_path / 'r.sqlite'}"
    first = cli("run", "tests.cli_flows:reviewing", "--input", '"the plan"', "--store", store)
    assert first.returncode == 2, first.stderr
    [command] = [line.strip() for line in first.stdout.splitlines() if "--respond" in line]
    request_id = command.split("--respond '")[1].split("=")[0]
    assert command.endswith(f"""--respond '{request_id}={{"approved": true, "note": "text"}}'""")
    answer = json.dumps({"approved": True, "note": "looks fine"})
    done = cli(
        "run",
        "tests.cli_flows:reviewing",
        "--store",
        store,
        "--respond",
        f"{request_id}={answer}",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    outputs = [e["data"] for e in events_of(done.stdout) if e["kind"] == "output"]
    assert outputs == ["review the plan: True (looks fine)"]


def test_respond_finds_the_run_that_owns_the_request(tmp_path: Path) -> None:
    store = f"sqlite:{tmp_path / 'owners.sqlite'}"
    ids = []
    for name in ("ann", "ben", "cid"):
        done = cli("run", "tests.cli_flows:asking", "--input", json.dumps(name), "--store", store)
        assert done.returncode == 2
        [line] = [x for x in done.stdout.splitlines() if "--respond" in x]
        ids.append(line.split("--respond ")[1].split("=")[0])
    # The oldest run's request, though two newer runs of this workflow exist.
    done = cli(
        "run", "tests.cli_flows:asking", "--store", store, "--respond", f"{ids[0]}=true", "--json"
    )
    assert done.returncode == 0, done.stderr
    assert [e["data"] for e in events_of(done.stdout) if e["kind"] == "output"] == [
        "let ann through? yes"
    ]
    one_line_error(
        cli("run", "tests.cli_flows:asking", "--store", store, "--respond", "nope=true"),
        f"no request 'nope' in {store} (is --store right?)",
    )

    def respond(*answers: str) -> object:
        flags = [arg for answer in answers for arg in ("--respond", answer)]
        return cli("run", "tests.cli_flows:asking", "--store", store, *flags)

    one_line_error(
        respond(f"{ids[1]}=true", f"{ids[2]}=true"), "the requests belong to different runs"
    )
    twice = respond(f"{ids[1]}=true", f"{ids[1]}=false")
    one_line_error(twice, f"--respond answers request {ids[1]!r} twice")
    # Refused before anything was recorded: the request is still open.
    done = respond(f"{ids[1]}=false")
    assert done.returncode == 0, done.stderr  # type: ignore[attr-defined]


def test_unnamed_workflows_do_not_share_latest(tmp_path: Path) -> None:
    store = f"sqlite:{tmp_path / 'unnamed.sqlite'}"
    assert (
        cli("run", "tests.cli_flows:unnamed_first", "--input", '"a"', "--store", store).returncode
        == 2
    )
    assert (
        cli("run", "tests.cli_flows:unnamed_second", "--input", '"b"', "--store", store).returncode
        == 2
    )
    # Both are named "workflow": --resume latest takes the newest run of *this* graph.
    resumed = cli(
        "run", "tests.cli_flows:unnamed_first", "--store", store, "--resume", "latest", "--json"
    )
    assert resumed.returncode == 2, resumed.stderr
    [asked] = [e for e in events_of(resumed.stdout) if e["kind"] == "request_info"]
    assert asked["executor_id"] == "first_gate"


def test_an_unreachable_ray_cluster_fails_fast() -> None:
    import socket
    import threading

    refused = cli("run", "examples.hello:build", "--input", '"x"', "--no-store",
                  "--backend", "ray:127.0.0.1:1", "--connect-timeout", "3")  # fmt: skip
    one_line_error(refused, "cannot reach a Ray cluster at '127.0.0.1:1': Connection refused")
    # Something listens there, but it is not Ray: it never answers.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        accepted: list[socket.socket] = []
        threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True).start()
        port = listener.getsockname()[1]
        silent = cli("run", "examples.hello:build", "--input", '"x"', "--no-store",
                     "--backend", f"ray:127.0.0.1:{port}", "--connect-timeout", "1")  # fmt: skip
        for conn in accepted:
            conn.close()
    one_line_error(
        silent, f"cannot reach a Ray cluster at '127.0.0.1:{port}': no answer within 1 s"
    )


def test_a_store_failing_after_the_run_still_ends_in_a_line(tmp_path: Path) -> None:
    """The run is stored; reading its open requests back fails: one line
    saying so and how to look later — still "waiting for answers" (2)."""
    path = tmp_path / "breaks.sqlite"
    done = cli("run", "tests.cli_flows:asking_breaking", "--input", json.dumps(str(path)),
               "--store", f"sqlite:{path}")  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "unexpected failure" not in done.stderr
    [line] = [x for x in done.stderr.splitlines() if x.startswith("error: ")]
    assert line.startswith("error: reading the open requests back failed: ") and "answers" in line
    assert "status: idle_with_pending_requests" in done.stdout
    assert "once the store answers, see them with: stepgraph checkpoints list" in done.stdout


def _interrupted_while_importing(child: subprocess.Popen[str]) -> None:
    """Ctrl-C ``child`` once it says it is importing: it stops in a line."""
    assert child.stderr is not None
    assert child.stderr.readline().strip() == "importing"
    child.send_signal(signal.SIGINT)
    stdout, stderr = child.communicate(timeout=60)
    assert child.returncode == 130, stderr
    assert stderr.strip() == "stopped." and stdout == ""


def test_ctrl_c_while_the_workflow_module_loads_stops_in_a_line() -> None:
    import os

    from tests.conftest import ROOT

    child = subprocess.Popen(
        [sys.executable, "-m", "stepgraph", "run", "tests.cli_slow_import:build", "--no-store",
         "--input", "1"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    _interrupted_while_importing(child)


# Slows the import of stepgraph's kernel down (a sitecustomize, which Python
# imports at startup): a Ctrl-C lands while the package loads.
_SLOW_PACKAGE = """
import sys, time

class SlowKernel:
    def find_spec(self, name, path=None, target=None):
        if name == "stepgraph._core":
            print("importing", file=sys.stderr, flush=True)
            time.sleep(60)
        return None

sys.meta_path.insert(0, SlowKernel())
"""


def test_ctrl_c_while_the_package_loads_stops_in_a_line(tmp_path: Path) -> None:
    """The console script as pip writes it for the entry point pyproject.toml
    names: a Ctrl-C while it imports stepgraph printed a KeyboardInterrupt
    traceback (and the process died of SIGINT)."""
    import os
    import tomllib

    from tests.conftest import ROOT
    from tests.test_conformance import WORKER_PYTHONPATH

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, function = scripts["stepgraph"].split(":")
    (tmp_path / "sitecustomize.py").write_text(_SLOW_PACKAGE)
    script = f"import sys\nfrom {module} import {function}\nsys.exit({function}())"
    child = subprocess.Popen(
        [sys.executable, "-c", script, "run", "examples.hello:build", "--input", '"x"',
         "--no-store"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join((str(tmp_path), WORKER_PYTHONPATH))},
    )  # fmt: skip
    _interrupted_while_importing(child)


class _Tone(enum.Enum):
    LOW = "low"


@dataclasses.dataclass(frozen=True)
class _Booking:
    day: datetime.date
    at: datetime.datetime
    price: decimal.Decimal
    ref: uuid.UUID
    slot: tuple[int, str]
    tone: _Tone
    note: str | None = None


@pytest.mark.parametrize(
    "annotation",
    [int, str, bool, float, tuple[int, str], tuple[str, ...], tuple[()], list[tuple[int, bool]],
     datetime.date, datetime.datetime, datetime.time, datetime.timedelta, decimal.Decimal,
     uuid.UUID, Path, dict[str, uuid.UUID], _Booking, uuid.UUID | None],
)  # fmt: skip
def test_the_printed_answer_shape_is_an_answer_the_cli_takes(annotation: object) -> None:
    """The --respond template printed for a request must be accepted as it
    is (dates, decimals, UUIDs were null; a 2-tuple had one item)."""
    from stepgraph._cli._input import coerce, example_json

    coerce(json.loads(example_json(annotation)), annotation, "the answer")


def test_an_output_nested_thousands_deep_is_printed_cut_and_the_run_ends_idle(
    tmp_path: Path,
) -> None:
    cut = "<a list nested more than 100 levels deep>"
    for store in (("--no-store",), ("--store", f"sqlite:{tmp_path / 'runs.sqlite'}")):
        done = cli("run", "tests.cli_flows:nesting", "--input", "3000", *store)
        assert done.returncode == 0, done.stderr
        assert "unexpected failure" not in done.stderr and "Traceback" not in done.stderr
        [output] = [line for line in done.stdout.splitlines() if line.startswith("output: ")]
        assert output == f"output: {'[' * 100}'{cut}'{']' * 100}"
        assert "status: idle" in done.stdout
    as_json = cli("run", "tests.cli_flows:nesting", "--input", "3000", "--no-store", "--json")
    assert as_json.returncode == 0, as_json.stderr
    [event] = [e for e in events_of(as_json.stdout) if e["kind"] == "output"]
    data = event["data"]
    for _ in range(100):
        data = data[0]
    assert data == cut


def test_bidirectional_overrides_in_what_a_workflow_says_are_shown_not_obeyed(
    tmp_path: Path,
) -> None:
    # U+202E (right-to-left override) would print the rest of its line
    # backwards in a terminal — the command that answers a request included.
    done = cli(
        "run", "tests.cli_flows:echoing", "--input", '"a\\u202etxt.exe \\u2067b"', "--no-store"
    )
    assert done.returncode == 0, done.stderr
    assert "output: a\\u202etxt.exe \\u2067b" in done.stdout.splitlines()
    asked = cli(
        "run", "tests.cli_flows:asking", "--input", '"\\u202eevil"',
        "--store", f"sqlite:{tmp_path / 'runs.sqlite'}",
    )  # fmt: skip
    assert asked.returncode == 2, asked.stderr
    assert "Confirm: Confirm(question='let \\u202eevil through?')" in asked.stdout
    for text in (done.stdout, done.stderr, asked.stdout, asked.stderr):
        assert "\u202e" not in text and "\u2067" not in text
    # Right-to-left text itself, and combining characters, print as they are.
    plain = cli("run", "tests.cli_flows:echoing", "--input", '"שלום e\\u0301"', "--no-store")
    assert "output: שלום e\u0301" in plain.stdout.splitlines()


def test_a_field_the_type_does_not_have_is_refused_not_dropped(tmp_path: Path) -> None:
    # Lax validation dropped unknown fields: a misspelt "tag" ran with tags=()
    # and exit 0; a misspelt field of an answer was ignored the same way.
    one_line_error(
        cli("run", "tests.cli_flows:measuring", "--no-store",
            "--input", '{"label": "w", "value": 1, "tag": ["x"], "unit": "kg"}'),
        "the input has unknown fields 'tag', 'unit': Measure has no such fields",
    )  # fmt: skip
    fine = cli("run", "tests.cli_flows:measuring", "--no-store",
               "--input", '{"label": "w", "value": 1, "tags": ["x"]}')  # fmt: skip
    assert fine.returncode == 0 and "output: w=1.0 ['x']" in fine.stdout, fine.stderr
    store = f"sqlite:{tmp_path / 'runs.sqlite'}"
    asked = cli("run", "tests.cli_flows:reviewing", "--input", '"plan"', "--store", store)
    [request_id] = re.findall(r"--respond '(\w+)=", asked.stdout)
    one_line_error(
        cli("run", "tests.cli_flows:reviewing", "--store", store,
            "--respond", f'{request_id}={{"approved": true, "note": "ok", "aproved": false}}'),
        f"the answer to {request_id} has an unknown field 'aproved': Verdict has no such field",
    )  # fmt: skip
    # A model that takes undeclared fields still gets them.
    taken = cli("run", "tests.cli_flows:configuring", "--no-store",
                "--input", '{"name": "x", "extra": 1}')  # fmt: skip
    assert taken.returncode == 0 and "output: x {'extra': 1}" in taken.stdout, taken.stderr


def test_a_model_taking_extra_fields_excuses_only_its_own() -> None:
    # A nested model with extra="allow" let a typo anywhere else through:
    # '"dryrun": true' ran with dry_run=False and exit 0.
    one_line_error(
        cli("run", "tests.cli_flows:deploying", "--no-store",
            "--input", '{"settings": {"name": "x", "region": "eu"}, "dryrun": true}'),
        "the input has an unknown field 'dryrun': Deploy has no such field",
    )  # fmt: skip
    # The model that takes them keeps them; one that says extra="ignore" drops
    # its own, as its author asked.
    fine = cli("run", "tests.cli_flows:deploying", "--no-store", "--input",
               '{"settings": {"name": "x", "region": "eu"}, "hook": {"event": "push", "id": 7},'
               ' "dry_run": true}')  # fmt: skip
    assert fine.returncode == 0, fine.stderr
    assert "output: x {'region': 'eu'} push True" in fine.stdout, fine.stdout
    from stepgraph._cli._input import coerce
    from tests.cli_flows import Hook

    assert coerce({"event": "push", "id": 7}, Hook, "the input") == Hook(event="push")


def test_an_answer_from_a_checkpoint_older_than_the_answer_needs_a_fork(tmp_path: Path) -> None:
    # (docs/agents.md said answering from an older checkpoint was time travel
    # that starts that part of the run over: it is refused, as elsewhere.)
    store = f"sqlite:{tmp_path / 'runs.sqlite'}"
    asked = cli("run", "examples.approval:build", "--input", '{"who": "dana", "amount": 420}',
                "--store", store)  # fmt: skip
    [request_id] = re.findall(r"--respond (\w+)=true", asked.stdout)
    first = cli(
        "run", "examples.approval:build", "--store", store, "--respond", f"{request_id}=true"
    )
    assert first.returncode == 0 and "output: approved 420.00 for dana" in first.stdout
    run_id = re.findall(r"run (\w+)\)", first.stdout)[0]
    rows = cli("checkpoints", "list", "--store", store, "--run", run_id).stdout.splitlines()[1:]
    [older] = [row.split("\t")[1] for row in rows if "\tidle_with_pending_requests\t" in row]
    again = ("run", "examples.approval:build", "--store", store, "--resume", older,
             "--respond", f"{request_id}=false")  # fmt: skip
    refused = one_line_error(cli(*again), f"request '{request_id}' of run", "was already answered")
    # (the command line's way to answer again, not Python's: it said "fork the
    # run: run(..., fork=True), or stepgraph run --fork")
    assert refused.endswith("add --fork (a new run)") and "fork=True" not in refused, refused
    forked = cli(*again, "--fork")
    assert forked.returncode == 0 and "output: rejected 420.00 for dana" in forked.stdout
    assert run_id not in forked.stdout  # (a new run)


@pytest.mark.parametrize("flow", ["jobs", "ext"])
def test_a_typeddict_input_is_taken_as_it_is_or_refused_saying_why(flow: str) -> None:
    """Of typing's TypedDict or typing_extensions' (pydantic's before 3.12)."""
    target = f"tests.cli_flows:{flow}"
    done = cli("run", target, "--input", '{"name": "a ✓", "n": 3}', "--no-store")
    assert done.returncode == 0 and "a ✓:3" in done.stdout, done.stderr
    done = cli("run", target, "--input", '{"name": "a", "n": "3", "z": 0}', "--no-store")
    line = one_line_error(done, "the input does not fit the start executor 'jobs'")
    assert "unknown key 'z'; n must be an int (got \"3\")" in line
    done = cli("run", target, "--input", '{"name": "a"}', "--no-store")
    assert "missing key 'n'" in one_line_error(done, "the input is not a valid ")


@pytest.mark.parametrize(
    "wrong",
    [
        ("--break-before", "nope"),
        ("--break-after", "nope"),
        ("--backend", "bogus"),
        ("--backend", "ray:"),
        ("--fork",),
    ],
)
def test_a_refused_run_leaves_no_new_store_behind(tmp_path: Path, wrong: tuple[str, ...]) -> None:
    """Arguments are checked before the store is opened: the refusal is the
    only thing that happens (it said 'creating checkpoint store' first, and
    left an empty store)."""
    path = tmp_path / "new.sqlite"
    done = cli(
        "run", "tests.test_pauses:pipeline", "--input", "1", "--store", f"sqlite:{path}", *wrong
    )
    one_line_error(done)
    assert not path.exists() and "creating checkpoint store" not in done.stderr


def test_a_huge_id_is_quoted_cut_short(tmp_path: Path) -> None:
    """An id of 3,000 characters (a paste gone wrong) is named by its first
    100 and how many more there were, not echoed whole in the error line."""
    store = f"sqlite:{tmp_path / 'runs.sqlite'}"
    assert (
        cli("run", "tests.test_pauses:pipeline", "--input", "1", "--store", store).returncode == 0
    )
    huge = "x" * 3000
    for command in (
        ("runs", "cancel", huge),
        ("checkpoints", "show", huge),
        ("checkpoints", "list", "--run", huge),
        ("checkpoints", "delete", huge),
        ("run", "tests.test_pauses:pipeline", "--resume", huge),
    ):
        line = one_line_error(cli(*command, "--store", store), "x" * 100, "(2,900 more characters)")
        assert len(line) < 400, (command, len(line))


def test_an_argument_that_is_not_utf8_is_refused_saying_which(tmp_path: Path) -> None:
    # (a byte that is not UTF-8 -- a file name's, say -- reached the store as
    # a lone surrogate: "an unexpected failure ... please report it")
    store = f"sqlite:{tmp_path / 's.sqlite'}"
    assert cli("run", "examples.hello:build", "--input", '"x"', "--store", store).returncode == 0
    for args in (
        ["checkpoints", "show", "\udcff", "--store", store],
        ["run", "stepgraph.demo:build", "--resume", "run\udce9", "--store", store],
    ):
        done = cli(*args)
        assert done.returncode == 1, done.stderr
        position = args.index(next(a for a in args if not a.isascii())) + 1
        assert done.stderr.startswith(f"error: argument {position} (")
        assert "holds a byte that is not UTF-8" in done.stderr and "unexpected" not in done.stderr
    # (text that is UTF-8, non-ASCII too, goes on as before)
    shown = cli("checkpoints", "show", "café", "--store", store)
    assert "no checkpoint 'café'" in shown.stderr
