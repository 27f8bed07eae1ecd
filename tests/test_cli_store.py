"""The command line and its store: reading never creates one, listing is
paginated and shows how each run ended, damaged records are reported, ids
stay whole in 80 columns, and the demo cleans up after itself."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import shlex
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import stepgraph as sg
from stepgraph._recorder import CANCELLED_ON_REQUEST
from tests import cli_flows
from tests.test_cli import COMMAND, ROOT, cli, interrupt_slow_run, run_in_pty
from tests.test_cli_errors import one_line_error
from tests.test_conformance import WORKER_PYTHONPATH


def test_reading_commands_never_create_a_store(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "x.sqlite"
    spec = f"sqlite:{missing}"
    for args in (
        ("checkpoints", "list", "--store", spec),
        ("checkpoints", "show", "abc", "--store", spec),
        ("checkpoints", "delete", "--run", "abc", "--store", spec),
        ("checkpoints", "prune", "--keep-last", "1", "--store", spec),
        ("checkpoints", "vacuum", "--store", spec),
        ("run", "tests.cli_flows:asking", "--store", spec, "--resume", "latest"),
    ):
        one_line_error(cli(*args), f"no checkpoint store at '{missing}'")
    assert not missing.parent.exists()
    one_line_error(
        cli("run", "tests.cli_flows:asking", "--input", '"x"', "--store", spec),
        f"cannot create checkpoint store '{missing}': the folder '{missing.parent}' does not exist",
    )
    assert not missing.parent.exists()
    fresh = tmp_path / "fresh.sqlite"
    made = cli("run", "examples.hello:build", "--input", '"x"', "--store", f"sqlite:{fresh}")
    assert made.returncode == 0 and f"creating checkpoint store {fresh}" in made.stderr
    again = cli("run", "examples.hello:build", "--input", '"x"', "--store", f"sqlite:{fresh}")
    assert again.returncode == 0 and "creating" not in again.stderr


def test_only_a_run_creates_the_tables_in_an_empty_file(tmp_path: Path) -> None:
    """An empty file (0 bytes, or another application's database without
    tables) is no store: the commands that change a store refuse it and
    leave it as it was; only a new run creates the tables."""
    zero, other = tmp_path / "zero.sqlite", tmp_path / "other.sqlite"
    zero.touch()
    sqlite3.connect(other).execute("PRAGMA journal_mode=wal").fetchone()
    for path in (zero, other):
        before = path.read_bytes()
        spec = f"sqlite:{path}"
        for args in (
            ("checkpoints", "prune", "--keep-last", "1", "--store", spec),
            ("checkpoints", "delete", "--run", "abc", "--store", spec),
            ("checkpoints", "vacuum", "--store", spec),
            ("runs", "cancel", "abc", "--store", spec),
        ):
            one_line_error(cli(*args), "is empty: it holds no stepgraph checkpoint store")
        # (it said "nothing was created", not that a run creates the tables,
        # and failed: a deployment migrating a new store stopped there)
        migrated = cli("checkpoints", "migrate", "--store", spec)
        assert migrated.returncode == 0 and migrated.stderr == "", migrated.stderr
        assert "is empty: it holds no stepgraph checkpoint store" in migrated.stdout
        assert "nothing to migrate; the first run with this store creates its tables" in (
            migrated.stdout
        )
        assert path.read_bytes() == before
    made = cli("run", "examples.hello:build", "--input", '"x"', "--store", f"sqlite:{zero}")
    assert made.returncode == 0, made.stderr
    listed = cli("checkpoints", "list", "--store", f"sqlite:{zero}")
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) > 1, listed.stderr
    one_line_error(
        cli("checkpoints", "migrate", "--store", f"sqlite:{tmp_path}"), "is a folder, not a"
    )


def test_the_secret_of_a_signed_store_comes_from_stepgraph_secret(tmp_path: Path) -> None:
    """The command line signs and verifies with STEPGRAPH_SECRET; without
    it, it reads a signed store but will not add unsigned checkpoints to a
    signed run (its signing users could not load it any more)."""
    path, secret = tmp_path / "signed.sqlite", "0123456789abcdef-secret"
    spec, signing = f"sqlite:{path}", {"STEPGRAPH_SECRET": secret}
    started = cli("run", "tests.cli_flows:asking", "--input", '"x"', "--store", spec, env=signing)
    assert started.returncode == 2, started.stderr
    [answer] = re.findall(r"--respond '?([0-9a-f]+)=", started.stdout)
    listed = cli("checkpoints", "list", "--store", spec)  # (reading needs no secret)
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 2, listed.stderr
    refused = cli("run", "tests.cli_flows:asking", "--store", spec, "--respond", f"{answer}=true")
    one_line_error(refused, "is signed, but this store was opened without its secret")
    # (in the command line's terms: it advised "secret=, or STEPGRAPH_SECRET
    # for the command line")
    assert refused.stderr.rstrip().endswith("; set STEPGRAPH_SECRET to the store's secret")
    assert "secret=" not in refused.stderr
    assert cli("checkpoints", "list", "--store", spec).stdout == listed.stdout
    wrong = {"STEPGRAPH_SECRET": "another-secret-of-16"}
    shown = cli(
        "run", "tests.cli_flows:asking", "--store", spec, "--respond", f"{answer}=true", env=wrong
    )
    one_line_error(shown, "signature does not match: it was altered, or signed with another")
    one_line_error(
        cli("checkpoints", "list", "--store", spec, env={"STEPGRAPH_SECRET": "short"}),
        "STEPGRAPH_SECRET: a checkpoint signing secret must be at least 16 bytes",
    )
    done = cli(
        "run", "tests.cli_flows:asking", "--store", spec, "--respond", f"{answer}=true", env=signing
    )
    assert done.returncode == 0 and "let x through? yes" in done.stdout, done.stderr

    async def verified() -> int:
        with sg.SqliteCheckpointStore(path, secret=secret) as store:
            infos = await store.list()
            for info in infos:
                await store.load(info.id)  # (each one signed)
            return len(infos)

    assert asyncio.run(verified()) == 4  # (entry and barrier, then the answer's two)


def test_a_file_where_the_default_store_folder_goes_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / ".stepgraph").write_text("not a folder")
    done = cli("run", "examples.hello:build", "--input", '"x"', cwd=tmp_path)
    one_line_error(done, "cannot create the default checkpoint store", "--no-store")


def test_listing_reads_only_and_works_while_another_process_writes(tmp_path: Path) -> None:
    path = tmp_path / "busy.sqlite"
    assert (
        cli("run", "examples.hello:build", "--input", '"x"', "--store", f"sqlite:{path}").returncode
        == 0
    )
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    try:
        listed = cli("checkpoints", "list", "--store", f"sqlite:{path}")
        assert listed.returncode == 0, listed.stderr
        assert len(listed.stdout.splitlines()) == 2
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def make_runs(path: Path, count: int) -> list[str]:
    async def go() -> list[str]:
        with sg.SqliteCheckpointStore(path) as store:
            workflow = sg.WorkflowBuilder(
                start=cli_flows.Gate("gate"), name="asking", checkpoints=store
            ).build()
            return [(await workflow.run(f"n{i}")).run_id for i in range(count)]

    return asyncio.run(go())


def test_listing_is_paginated_newest_first(tmp_path: Path) -> None:
    path = tmp_path / "many.sqlite"
    made = make_runs(path, 25)
    seen: list[str] = []
    before: list[str] = []
    while True:
        page = cli("checkpoints", "list", "--store", f"sqlite:{path}", "--limit", "10", *before)
        assert page.returncode == 0, page.stderr
        rows = [line.split("\t")[0] for line in page.stdout.splitlines()[1:]]
        seen += rows
        more = re.search(r"more runs: add --before (\w+)", page.stderr)
        if not more:
            break
        assert more.group(1) == rows[-1] and len(rows) == 10
        before = ["--before", more.group(1)]
    assert seen == made[::-1]
    # A page after a run the store does not have says which option named it
    # (it said "(before=)", the Python argument).
    nope = cli("checkpoints", "list", "--store", f"sqlite:{path}", "--before", "nope")
    assert nope.returncode == 1
    assert f"no run 'nope' in sqlite:{path} (--before)" in nope.stderr


def test_failed_and_interrupted_runs_are_listed_as_such(tmp_path: Path) -> None:
    spec = f"sqlite:{tmp_path / 'ends.sqlite'}"
    assert cli("run", "tests.cli_flows:failing", "--input", '"x"', "--store", spec).returncode == 1
    assert interrupt_slow_run(spec, after=1)[0] == 130
    listed = cli("checkpoints", "list", "--store", spec, "--status", "failed")
    [failed] = [line.split("\t") for line in listed.stdout.splitlines()[1:]]
    assert failed[1:3] == ["failing", "failed"]
    shown = cli("checkpoints", "list", "--store", spec)
    statuses = {line.split("\t")[1]: line.split("\t")[2] for line in shown.stdout.splitlines()[1:]}
    assert statuses == {"failing": "failed", "slow": "cancelled"}


def test_damaged_records_are_reported_and_deletable(tmp_path: Path) -> None:
    path = tmp_path / "damaged.sqlite"
    good, bad = make_runs(path, 2)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE segments SET data = x'7b7b' WHERE run_id = ?", (bad,))
    db.close()
    spec = f"sqlite:{path}"
    listed = cli("checkpoints", "list", "--store", spec, "--run", bad)
    assert listed.returncode == 1 and f"no run '{bad}'" in listed.stderr
    assert "warning: skipped 2 damaged checkpoint record(s): checkpoints" in listed.stderr
    runs = cli("checkpoints", "list", "--store", spec)
    assert runs.returncode == 0 and len(runs.stdout.splitlines()) == 3
    deleted = cli("checkpoints", "delete", "--run", bad, "--store", spec)
    assert deleted.returncode == 0 and f"deleted run {bad} (2 checkpoints)" in deleted.stdout
    assert cli("checkpoints", "list", "--store", spec, "--run", good).returncode == 0
    vacuumed = cli("checkpoints", "vacuum", "--store", spec)
    assert vacuumed.returncode == 0 and re.search(r"vacuumed .*: .* -> ", vacuumed.stdout)
    one_line_error(
        cli("checkpoints", "delete", "--store", spec),
        "say what to delete: a checkpoint id, or --run RUN for a whole run",
    )


def test_ids_stay_whole_in_80_columns_with_time_and_parent(tmp_path: Path) -> None:
    path = tmp_path / "tty.sqlite"
    [run_id] = make_runs(path, 1)
    code, screen = run_in_pty(["checkpoints", "list", "--store", f"sqlite:{path}"])
    assert code == 0, screen
    assert re.search(rf"^{run_id} +asking +idle with", screen, re.M), screen
    assert re.search(r"\d+s ago", screen)
    code, screen = run_in_pty(["checkpoints", "list", "--store", f"sqlite:{path}", "--run", run_id])
    assert code == 0, screen
    rows = re.findall(
        r"^\s*(\d) +([0-9a-f]{32}) +(\d) .*?(-|#\d) +(\d\d-\d\d \d\d:\d\d:\d\d)", screen, re.M
    )
    assert [(n, parent) for n, _, _, parent, _ in rows] == [("1", "-"), ("2", "#1")], screen
    shown = cli("checkpoints", "show", rows[1][1], "--store", f"sqlite:{path}")
    created = dt.datetime.fromisoformat(__import__("json").loads(shown.stdout)["created_at"])
    assert created.tzinfo is not None


def test_the_demo_removes_its_temporary_store(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = cli("demo", env={"TMPDIR": str(scratch)})
    assert done.returncode == 0, done.stderr
    assert "a temporary store, now removed" in done.stdout
    assert "--store" not in done.stdout.replace("--store sqlite:PATH", "")
    assert list(scratch.iterdir()) == []


def test_the_demo_keeps_its_temporary_store_for_the_command_it_prints_when_its_output_closed(
    tmp_path: Path,
) -> None:
    """Its output closed under it (its reader gone before the first line),
    the demo names the command that lists the run: the store it names is
    kept for it, and says so on standard error."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    process = subprocess.Popen(
        [*COMMAND, "demo"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(scratch)},
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # (before the run prints anything)
    with process.stderr:
        errors = process.stderr.read()
    assert process.wait(timeout=120) == 141, errors
    [command] = re.findall(r"see (stepgraph checkpoints list .*)$", errors, re.M)
    [kept] = scratch.iterdir()
    assert f"checkpoints: kept in {kept} for the commands above" in errors
    listed = cli(*shlex.split(command)[1:])
    assert listed.returncode == 0, listed.stderr
    assert "idle_with_pending_requests" in listed.stdout


def ctrl_c(args: list[str], started: Path, times: int = 1) -> tuple[int, str, str]:
    """Run the CLI, press Ctrl-C ``times`` once the hog handler has started
    (it creates ``started``): however slowly the process starts."""
    import signal

    started.unlink(missing_ok=True)
    process = subprocess.Popen(
        [*COMMAND, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HOG_STARTED": str(started)},
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not started.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert started.exists(), process.communicate(timeout=60)
    time.sleep(0.2)  # (in its sleep now)
    for _ in range(times):
        process.send_signal(signal.SIGINT)
        time.sleep(0.3)
    stdout, stderr = process.communicate(timeout=60)
    return process.returncode, stdout, stderr


def test_ctrl_c_while_a_handler_holds_the_loop_keeps_what_it_produced(tmp_path: Path) -> None:
    spec = f"sqlite:{tmp_path / 'hog.sqlite'}"
    started = tmp_path / "started"
    code, stdout, _ = ctrl_c(
        ["run", "tests.cli_flows:hogging", "--input", "2", "--store", spec], started
    )
    assert code == 130
    assert "output: 2" in stdout  # the call finished after the Ctrl-C: its output is shown
    assert "stopped after the run's last superstep (idle)" in stdout
    code, stdout, stderr = ctrl_c(
        ["run", "tests.cli_flows:hogging", "--input", "2", "--store", spec, "--json"], started
    )
    assert code == 130
    kinds = [json.loads(line)["kind"] for line in stdout.splitlines()]
    # Its last status event says how the run ended — its work was done —
    # as its listing does (the command still exits 130: it was interrupted).
    assert "output" in kinds and json.loads(stdout.splitlines()[-1])["status"] == "idle"
    # Ctrl-C twice (the second inside the handler): still a cancelled run.
    code, _, stderr = ctrl_c(
        ["run", "tests.cli_flows:hogging", "--input", "2", "--store", spec], started, times=2
    )
    assert code == 130 and "stopped" in stderr + _
    statuses = cli("checkpoints", "list", "--store", spec).stdout.splitlines()[1:]
    # Newest first: the run stopped inside its handler is cancelled; the two
    # whose last superstep finished after the Ctrl-C are listed as their last
    # checkpoint says (the caller still saw a cancellation: exit 130).
    assert [line.split("\t")[2] for line in statuses] == ["cancelled", "idle", "idle"]


def test_narrow_terminals_get_whole_rows(tmp_path: Path) -> None:
    path = tmp_path / "narrow.sqlite"
    [run_id] = make_runs(path, 1)
    code, screen = run_in_pty(["checkpoints", "list", "--store", f"sqlite:{path}"], columns=50)
    assert code == 0 and run_id in screen.replace("\r\n", "\n").split("\n")[1], screen
    shown = cli("checkpoints", "show", "x", "--store", f"sqlite:{path}")
    assert "no checkpoint 'x'" in shown.stderr


def test_breakpoints_from_the_command_line(tmp_path: Path) -> None:
    spec = f"sqlite:{tmp_path / 'breaks.sqlite'}"
    paused = cli("run", "tests.test_pauses:pipeline", "--input", "1", "--store", spec,
                 "--break-before", "act")  # fmt: skip
    assert paused.returncode == 3, paused.stderr
    assert "paused after superstep 1; next: act" in paused.stdout
    command = next(line for line in paused.stdout.splitlines() if line.startswith("go on with:"))
    checkpoint = command.split("--resume ")[1]
    shown = json.loads(cli("checkpoints", "show", checkpoint, "--store", spec).stdout)
    assert shown["status"] == "paused" and shown["pending_messages"] == {"act": [2]}
    done = cli("run", "tests.test_pauses:pipeline", "--store", spec, "--resume", checkpoint)
    assert done.returncode == 0 and "output: 20" in done.stdout
    one_line_error(
        cli("run", "tests.test_pauses:pipeline", "--input", "1", "--no-store",
            "--break-after", "act"),
        "a run paused at a breakpoint goes on from its checkpoint: give a store",
    )  # fmt: skip
    one_line_error(
        cli("run", "tests.test_pauses:pipeline", "--input", "1", "--store", spec,
            "--break-before", "nope"),
        "no executor 'nope' to break at",
    )  # fmt: skip
    bounded = cli("run", "tests.test_pauses:pipeline", "--input", "1", "--no-store",
                  "--max-supersteps", "2")  # fmt: skip
    assert bounded.returncode == 1 and "did not converge within max_supersteps=2" in bounded.stdout
    # (without a store it said nothing of what to do)
    assert bounded.stdout.splitlines()[-1] == (
        "it has no checkpoint to go on from: run it again with a higher --max-supersteps, "
        "or with a store to go on later"
    )
    stored = cli("run", "tests.test_pauses:pipeline", "--input", "1", "--store", spec,
                 "--max-supersteps", "2")  # fmt: skip
    assert stored.returncode == 1 and "go on with: stepgraph run" in stored.stdout
    # (as docs/cli.md says: listed as failed until it goes on)
    newest = cli("checkpoints", "list", "--store", spec).stdout.splitlines()[1]
    assert newest.split("\t")[2:4] == ["failed", "2"]
    command = stored.stdout.split("go on with: ")[1].split()
    went_on = cli(*command[1:])
    assert went_on.returncode == 0 and "output: 20" in went_on.stdout
    enough = cli("run", "tests.test_pauses:pipeline", "--input", "1", "--no-store",
                 "--max-supersteps", "3")  # fmt: skip
    assert enough.returncode == 0 and "output: 20" in enough.stdout
    one_line_error(
        cli("run", "tests.test_pauses:pipeline", "--input", "1", "--max-supersteps", "0"),
        "--max-supersteps",
    )  # fmt: skip


def slow_run_elsewhere(spec: str) -> tuple[subprocess.Popen[str], str]:
    """``tests.cli_flows:slow`` going on in another process on store
    ``spec`` (its events as JSON lines on its stdout): it, and its run id.
    It ticks for a minute: ended by the test (cancelled or terminated), not
    by itself before a command of the test reaches it on a loaded machine."""
    process = subprocess.Popen(
        [*COMMAND, "run", "tests.cli_flows:slow", "--input", "-400", "--store", spec, "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": WORKER_PYTHONPATH},
    )  # fmt: skip
    assert process.stdout is not None
    return process, json.loads(process.stdout.readline())["run_id"]


def test_runs_cancel_stops_a_run_in_another_process(tmp_path: Path) -> None:
    spec = f"sqlite:{tmp_path / 'cancel.sqlite'}"
    process, run_id = slow_run_elsewhere(spec)
    time.sleep(0.5)
    asked = cli("runs", "cancel", run_id, "--store", spec)
    assert asked.returncode == 0 and f"asked run {run_id} to stop" in asked.stdout
    rest, stderr = process.communicate(timeout=60)
    assert process.returncode == 130  # it stopped at a barrier, as asked
    assert "cancelled. Resume with:" in stderr
    assert json.loads(rest.splitlines()[-1])["status"] == "cancelled"
    listed = cli("checkpoints", "list", "--store", spec).stdout.splitlines()[1]
    assert listed.split("\t")[2] == "cancelled"
    # Why it stopped (its run's "error" was missing: nothing said it was asked to)
    latest = stderr.split("--resume ")[1].split()[0]
    shown = json.loads(cli("checkpoints", "show", latest, "--store", spec).stdout)
    assert shown["run"] == {
        "status": "cancelled", "last_checkpoint": latest, "error": CANCELLED_ON_REQUEST
    }  # fmt: skip
    one_line_error(cli("runs", "cancel", "nope", "--store", spec), "no run 'nope'")


def test_going_on_with_a_run_held_elsewhere_is_refused_not_reported_failed(
    tmp_path: Path,
) -> None:
    # (it printed "failed: run ... is being continued elsewhere ... (fork=True,
    # stepgraph run --fork)": the run had not failed, and fork=True is Python's)
    spec = f"sqlite:{tmp_path / 'held.sqlite'}"
    process, run_id = slow_run_elsewhere(spec)
    try:
        refused = cli("run", "tests.cli_flows:slow", "--store", spec, "--resume", "latest")
        line = one_line_error(refused, f"run '{run_id}' is being continued elsewhere (process")
        assert line.endswith("wait for it to stop, or fork it: add --fork (a new run)"), line
        assert refused.stdout == "", refused.stdout
    finally:
        process.terminate()
        process.communicate(timeout=60)


def test_deleting_a_run_going_on_elsewhere_advises_the_command_that_stops_it(
    tmp_path: Path,
) -> None:
    # (it advised "stop it first (request_cancel, or stepgraph runs cancel)":
    # request_cancel is Python's, and the command lacked its run and store)
    spec = f"sqlite:{tmp_path / 'held.sqlite'}"
    started = tmp_path / "started"
    process = subprocess.Popen(  # (a run going on until it is killed)
        [*COMMAND, "run", "tests.cli_flows:hogging", "--input", "120", "--store", spec],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": WORKER_PYTHONPATH,
                       "HOG_STARTED": str(started)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.01)
        run_id = cli("checkpoints", "list", "--store", spec).stdout.splitlines()[1].split("\t")[0]
        listed = cli("checkpoints", "list", "--run", run_id, "--store", spec).stdout
        checkpoint = listed.splitlines()[-1].split("\t")[1]
        advice = (
            f"stop it first (stepgraph runs cancel {run_id} --store {spec}) or wait for it "
            "to end; nothing was deleted"
        )
        for what in (("--run", run_id), (checkpoint,)):
            refused = cli("checkpoints", "delete", *what, "--store", spec)
            line = one_line_error(refused, f"run '{run_id}' is running (process ")
            assert line.endswith(advice) and "request_cancel" not in line, line
        assert cli("checkpoints", "show", checkpoint, "--store", spec).returncode == 0
    finally:
        process.kill()  # (its loop is held: a Ctrl-C would land only when it lets go)
        process.wait()


def test_resuming_a_checkpoint_of_another_graph_is_refused_not_reported_failed(
    tmp_path: Path,
) -> None:
    # (it printed "failed: checkpoint ... was written by workflow ... with a
    # different graph": no run had started, let alone failed)

    spec = f"sqlite:{tmp_path / 'graphs.sqlite'}"
    asked = cli("run", "tests.cli_flows:asking", "--input", '"x"', "--store", spec)
    assert asked.returncode == 2, asked.stderr
    rows = cli("checkpoints", "list", "--store", spec).stdout.splitlines()
    run_id = rows[1].split("\t")[0]
    last = cli("checkpoints", "list", "--run", run_id, "--store", spec).stdout.splitlines()[-1]
    checkpoint = last.split("\t")[1]
    refused = cli("run", "tests.cli_flows:slow", "--store", spec, "--resume", checkpoint)
    one_line_error(refused, f"checkpoint {checkpoint} was written by workflow 'asking' with a")
    assert refused.stdout == "", refused.stdout


def test_a_store_must_be_given_as_sqlite_path(tmp_path: Path) -> None:
    bare = tmp_path / "bogus"
    for args in (
        ("run", "examples.hello:build", "--input", '"x"', "--store", str(bare)),
        ("runs", "cancel", "abc", "--store", str(bare)),
        ("checkpoints", "list", "--store", str(bare)),
        ("demo", "--store", str(bare)),
    ):
        one_line_error(
            cli(*args),
            f"store '{bare}' names no kind: give sqlite:PATH or postgresql://... (sqlite:{bare}?)",
        )
    assert list(tmp_path.iterdir()) == []  # nothing created
    for spec, said in (
        ("memory:", "unknown store 'memory:': give sqlite:PATH or postgresql://..."),
        ("postgres://h/db", "checkpoint database 'db' on h: opening it failed: failed to resolve"),
        # (libpq's two lines read as two sentences: it said "Connection refused Is the
        # server running")
        (
            "postgresql://u:pw@127.0.0.1:1/db",
            "on 127.0.0.1:1: opening it failed: connection failed: connection to server at "
            '"127.0.0.1", port 1 failed: Connection refused. Is the server running on that host',
        ),
    ):
        for args in (
            ("run", "examples.hello:build", "--input", '"x"', "--store", spec),
            ("runs", "cancel", "abc", "--store", spec),
        ):
            done = cli(*args)
            one_line_error(done, said)
            assert ":pw@" not in done.stderr  # never the password
    one_line_error(
        cli("checkpoints", "list", "--store", "sqlite:"),
        "the store 'sqlite:' names no file: use sqlite:PATH",
    )


def test_the_printed_command_after_a_breakpoint_keeps_the_breakpoints(tmp_path: Path) -> None:
    # Stepping through a loop, as with a debugger's "continue": each go on
    # stops before the executor again (the command dropped --break-before,
    # and the next run went to the end).
    spec = f"sqlite:{tmp_path / 'steps.sqlite'}"
    step = cli("run", "tests.cli_flows:slow", "--input", "11", "--store", spec,
               "--break-before", "tick", "--break-after", "tick")  # fmt: skip
    seen = []
    while step.returncode == 3:
        [line] = [line for line in step.stdout.splitlines() if line.startswith("go on with:")]
        command = shlex.split(line.removeprefix("go on with: "))
        assert command[:3] == ["stepgraph", "run", "tests.cli_flows:slow"]
        assert command[5:9] == ["--break-before", "tick", "--break-after", "tick"]
        seen.append(re.findall(r"paused after superstep (\d+)", step.stdout))
        step = cli(*command[1:])
    assert step.returncode == 0 and "output: 12" in step.stdout, step.stderr
    assert seen == [["0"], ["1"]]  # (tick(12) yields: the run ends)


def test_runs_cancel_refuses_a_run_that_is_not_running(tmp_path: Path) -> None:
    spec = f"sqlite:{tmp_path / 'still.sqlite'}"
    paused = cli("run", "tests.test_pauses:pipeline", "--input", "1", "--store", spec,
                 "--break-before", "act")  # fmt: skip
    assert paused.returncode == 3, paused.stderr
    idle = cli("run", "examples.hello:build", "--input", '"x"', "--store", spec)
    waiting = cli("run", "tests.cli_flows:asking", "--input", '"x"', "--store", spec)
    for done, status in (
        (paused, "paused"),
        (idle, "idle"),
        (waiting, "idle_with_pending_requests"),
    ):
        [run_id] = re.findall(r"\(run (\w+)\)", done.stdout)
        one_line_error(
            cli("runs", "cancel", run_id, "--store", spec),
            f"run {run_id} is not running (status: {status}); nothing to cancel",
        )
    # Going on is not affected by the refused cancels.
    command = next(line for line in paused.stdout.splitlines() if line.startswith("go on with:"))
    done = cli("run", "tests.test_pauses:pipeline", "--store", spec,
               "--resume", command.split("--resume ")[1])  # fmt: skip
    assert done.returncode == 0 and "output: 20" in done.stdout
    # A run whose process was killed is still listed as going on: nobody holds it.
    started = tmp_path / "started"
    killed = subprocess.Popen(
        [*COMMAND, "run", "tests.cli_flows:hogging", "--input", "30", "--store", spec],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "HOG_STARTED": str(started)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    killed.kill()
    killed.wait()
    listed = cli("checkpoints", "list", "--store", spec).stdout.splitlines()[1]
    run_id, status = listed.split("\t")[0], listed.split("\t")[2]
    assert status == "in_progress", listed
    one_line_error(
        cli("runs", "cancel", run_id, "--store", spec),
        f"run {run_id} is not running anywhere: it is listed as in_progress, but no process",
    )


def test_a_run_its_store_failed_before_any_save_is_not_offered_for_resuming(
    tmp_path: Path,
) -> None:
    """A store that failed a run's first save (a read-only file, a full
    disk) but answers reads: the CLI says nothing was stored instead of
    pointing to checkpoints and a run that do not exist."""
    from io import StringIO

    from rich.console import Console

    from stepgraph._cli._session import Session, _resume_later

    path = tmp_path / "empty.sqlite"
    make_runs(path, 1)  # a store with another run in it
    session = Session(cli_flows.asking(), "tests.cli_flows:asking", f"sqlite:{path}")
    session.run_id = "a-run-never-stored"
    said = StringIO()
    _resume_later(session, Console(file=said, width=200))
    assert said.getvalue().splitlines() == [
        "nothing of the run was stored: run it again once the store works"
    ]
    session.run_id = make_runs(path, 1)[0]  # one that was: go on from its newest checkpoint
    said = StringIO()
    _resume_later(session, Console(file=said, width=200))
    [line] = said.getvalue().splitlines()
    assert line.startswith("go on with: stepgraph run tests.cli_flows:asking --store sqlite:")
    assert line.split("--resume ")[1] in {c.id for c in asyncio.run(_list(path, session.run_id))}


async def _list(path: Path, run_id: str) -> list[sg.CheckpointInfo]:
    with sg.SqliteCheckpointStore(path) as store:
        return await store.list(run_id)


def test_store_specs_and_resuming_nothing_are_one_line_errors(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    make_runs(path, 1)
    one_line_error(
        cli("run", "tests.cli_flows:asking", "--resume", "nosuch", "--store", f"sqlite:{path}"),
        f"no checkpoint 'nosuch' in sqlite:{path}",
    )
    # Each "no run" (checkpoint, request) names the store as given: some said
    # "in this store" or "the store", others named it.
    spec = f"sqlite:{path}"
    for args, said in (
        (("checkpoints", "show", "nosuch"), f"no checkpoint 'nosuch' in {spec}"),
        (("checkpoints", "delete", "--run", "nosuch"), f"no run 'nosuch' in {spec}"),
        (("checkpoints", "list", "--run", "nosuch"), f"no run 'nosuch' in {spec}"),
        (("runs", "cancel", "nosuch"), f"no run 'nosuch' in {spec}"),
        (("run", "examples.hello:build", "--resume", "latest"),
         f"no run of workflow 'hello' to resume in {spec}"),
        (("run", "tests.cli_flows:asking", "--respond", "nosuch=true"),
         f"no request 'nosuch' in {spec} (is --store right?)"),
    ):  # fmt: skip
        assert one_line_error(cli(*args, "--store", spec), said).endswith(said)
    one_line_error(cli("checkpoints", "list", "--store", ""), "--store is empty")
    # A quoted ~ (the shell left it) is the home folder.
    listed = cli("checkpoints", "list", "--store", "sqlite:~/s.sqlite", env={"HOME": str(tmp_path)})
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 2, listed.stderr


def test_stored_names_with_control_characters_list_as_one_escaped_row(tmp_path: Path) -> None:
    path = tmp_path / "odd.sqlite"

    async def go() -> None:
        with sg.SqliteCheckpointStore(path) as store:
            workflow = sg.WorkflowBuilder(
                start=cli_flows.Gate("gate"), name="evil\x1b[31m\tname\nx", checkpoints=store
            ).build()
            await workflow.run("n")

    asyncio.run(go())
    listed = cli("checkpoints", "list", "--store", f"sqlite:{path}")
    assert listed.returncode == 0, listed.stderr
    [row] = listed.stdout.splitlines()[1:]
    assert row.split("\t")[1] == "evil\\x1b[31m\\tname\\nx" and "\x1b" not in listed.stdout


def test_a_store_this_process_cannot_write_is_refused_naming_file_or_folder(
    tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    # A read-only file system, or another user's file or folder: SQLite said
    # only "unable to open database file", or the run failed at its first
    # checkpoint. (os.access answers as that user would: root may write anything.)
    from stepgraph._cli import main

    kept = tmp_path / "kept"
    kept.mkdir()
    store = kept / "runs.sqlite"
    assert (
        main(["run", "examples.hello:build", "--input", '"a"', "--store", f"sqlite:{store}"]) == 0
    )
    read_only = {kept}
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode, **kw: Path(p) not in read_only and real_access(p, mode, **kw)
    )

    def refused(args: list[str], *fragments: str) -> None:
        capsys.readouterr()
        assert main(args) == 1
        out, err = capsys.readouterr()
        [line] = err.strip().splitlines()
        assert line.startswith("error: ") and "Traceback" not in out + err, err
        for fragment in fragments:
            assert fragment in line, line

    run = ["run", "examples.hello:build", "--input", '"a"']
    refused(
        [*run, "--store", f"sqlite:{store}"],
        f"its folder '{kept}' is read-only here, and SQLite writes its runs.sqlite-wal",
    )
    new = kept / "new.sqlite"
    refused(
        [*run, "--store", f"sqlite:{new}"],
        f"cannot create checkpoint store '{new}': the folder '{kept}' is read-only here",
    )
    assert not new.exists()
    read_only = {store}
    refused(
        [*run, "--store", f"sqlite:{store}"],
        f"cannot write checkpoint store '{store}': the file is read-only here",
    )
    refused(
        ["checkpoints", "prune", "--keep-last", "1", "--store", f"sqlite:{store}"],
        "the file is read-only here",
    )
    # A link in a read-only folder to a store in a writable one is written
    # through (SQLite puts its -wal and -shm files beside the store itself).
    links = tmp_path / "links"
    links.mkdir()
    (links / "runs.sqlite").symlink_to(store)
    read_only = {links}
    assert main([*run, "--store", f"sqlite:{links / 'runs.sqlite'}"]) == 0
    read_only = {store}
    capsys.readouterr()
    assert main(["checkpoints", "list", "--store", f"sqlite:{store}"]) == 0  # reading works
    assert "hello\tidle" in capsys.readouterr().out


def test_an_answered_request_pruned_away_is_not_offered_a_fork(tmp_path: Path) -> None:
    # (a second answer was told to add --fork, which then said "no checkpoint
    # of run ... has ... open to fork from": prune had taken them all)
    store = f"sqlite:{tmp_path / 'runs.sqlite'}"
    asked = cli("run", "tests.cli_flows:asking", "--input", '"x"', "--store", store)
    [request_id] = re.findall(r"--respond '?(\w+)=", asked.stdout)
    answer = ("run", "tests.cli_flows:asking", "--store", store, "--respond", f"{request_id}=true")
    assert cli(*answer).returncode == 0
    refused = one_line_error(cli(*answer), "was answered already")
    assert "add --fork" in refused, refused  # (a checkpoint has it open: forking works)
    assert cli("checkpoints", "prune", "--keep-last", "1", "--store", store).returncode == 0
    refused = one_line_error(cli(*answer), "was answered already")
    assert "no checkpoint of the run has it open any more (deleted or pruned" in refused, refused
    assert "add --fork" not in refused, refused


def test_a_link_into_a_folder_that_does_not_exist_says_so(tmp_path: Path) -> None:
    # (it said the folder "is read-only here (a read-only file system, or
    # another user's folder)": a folder that is not there is not read-only)
    link = tmp_path / "runs.sqlite"
    link.symlink_to(tmp_path / "gone" / "runs.sqlite")
    run = cli("run", "examples.hello:build", "--input", '"a"', "--store", f"sqlite:{link}")
    one_line_error(
        run,
        f"cannot create checkpoint store '{tmp_path / 'gone' / 'runs.sqlite'}': the folder "
        f"'{tmp_path / 'gone'}' does not exist",
    )
    assert not (tmp_path / "gone").exists()


def test_a_missing_default_store_says_it_is_looked_for_in_the_current_folder(
    tmp_path: Path,
) -> None:
    # Runs started in the project's root, listed from a subfolder: the
    # default store is relative, so the message says where it looked.
    elsewhere = tmp_path / "sub"
    elsewhere.mkdir()
    for args in (
        ("checkpoints", "list"),
        ("checkpoints", "migrate"),
        ("runs", "cancel", "abc"),
        ("run", "tests.cli_flows:asking", "--resume", "latest"),
    ):
        one_line_error(
            cli(*args, cwd=elsewhere),
            "no checkpoint store at '.stepgraph/checkpoints.sqlite' (no such file): the default "
            f"store is looked for in the current folder ({elsewhere}); run from the folder the "
            "runs were started in, or give --store sqlite:PATH",
        )
    assert not (elsewhere / ".stepgraph").exists()


def test_a_named_pipe_or_a_device_as_store_is_refused_naming_it(tmp_path: Path) -> None:
    # SQLite opened a named pipe and waited for a writer for ever; /dev/null
    # was "disk I/O error (SQLITE_IOERR_FSYNC)".
    pipe = tmp_path / "runs.sqlite"
    os.mkfifo(pipe)
    for args in (
        ("checkpoints", "list", "--store", f"sqlite:{pipe}"),
        ("checkpoints", "migrate", "--store", f"sqlite:{pipe}"),
        ("run", "examples.hello:build", "--input", '"x"', "--store", f"sqlite:{pipe}"),
    ):
        one_line_error(cli(*args), f"'{pipe}' is a named pipe, not a checkpoint store file")
    one_line_error(
        cli("run", "examples.hello:build", "--input", '"x"', "--store", "sqlite:/dev/null"),
        "'/dev/null' is a device, not a checkpoint store file",
    )


def test_a_file_the_system_makes_up_as_store_is_refused_naming_it() -> None:
    # /proc/self/status reads "0 bytes" to SQLite, which took it for an
    # empty database: "is empty: no checkpoint has been stored in it yet".
    made_up = Path("/proc/self/status")
    assert made_up.is_file() and made_up.stat().st_size == 0
    for args in (
        ("checkpoints", "list"),
        ("checkpoints", "migrate"),
        ("run", "examples.hello:build", "--input", '"x"'),
    ):
        one_line_error(
            cli(*args, "--store", f"sqlite:{made_up}"),
            "'/proc/self/status' is not a regular file (the system makes it up as it is read, "
            "as in /proc or /sys: its size reads 0), not a checkpoint store file",
        )


def test_checkpoints_show_escapes_what_a_terminal_would_obey(tmp_path: Path) -> None:
    # The stored messages are printed as JSON: json.dumps escapes only the
    # characters below U+0020, so a right-to-left override (U+202E), a C1
    # CSI (U+009B, ESC [ in one character) and DEL reached the terminal raw.
    store = f"sqlite:{tmp_path / 'runs.sqlite'}"
    paused = cli("run", "tests.cli_flows:hostile", "--input", '"a\\u202eb\\u009b31mc\\u007f"',
                 "--store", store, "--break-before", "[red]boom")  # fmt: skip
    assert paused.returncode == 3, paused.stderr
    checkpoint = paused.stdout.split("--resume ")[-1].strip()
    shown = cli("checkpoints", "show", checkpoint, "--store", store)
    assert shown.returncode == 0, shown.stderr
    assert not re.search("[\x7f-\x9f\u202a-\u202e\u2066-\u2069]", shown.stdout)
    assert '"a\\u202eb\\u009b31mc\\u007f"' in shown.stdout
    record = json.loads(shown.stdout)  # (the same JSON)
    assert record["pending_messages"] == {"[red]boom": ["a\u202eb\x9b31mc\x7f"]}


def test_half_a_character_in_the_input_is_refused_before_the_run(tmp_path: Path) -> None:
    # (the run failed at its first barrier and was listed failed, nothing run)
    path = tmp_path / "runs.sqlite"
    spec = f"sqlite:{path}"
    given = '{"k": ["x", "a\\udc80"]}'
    one_line_error(
        cli("run", "tests.cli_flows:echoing", "--input", given, "--store", spec),
        "error: workflow 'echoing' checkpoints its runs, and its input cannot be stored: "
        "the input['k'][1]: the string holds a lone surrogate ('\\udc80' at index 1)",
        "nothing ran",
    )
    assert not path.exists()  # (refused before a store was made for it)
    done = cli("run", "tests.cli_flows:echoing", "--input", given, "--no-store")
    assert done.returncode == 0, done.stderr


def test_an_empty_request_or_output_is_shown_quoted(tmp_path: Path) -> None:
    # (a request of "" read "str: " with nothing after it, an output "output: ")
    spec = f"sqlite:{tmp_path / 'runs.sqlite'}"
    asked = cli("run", "tests.cli_flows:relaying", "--input", '""', "--store", spec)
    assert asked.returncode == 2, asked.stderr
    lines = asked.stdout.splitlines()
    assert "  str: ''" in lines, asked.stdout
    answer = next(line for line in lines if "--respond" in line)
    done = cli(*shlex.split(answer.strip())[1:])
    assert done.returncode == 0, done.stderr
    assert "output: ''" in done.stdout.splitlines()
    spaced = cli("run", "tests.cli_flows:echoing", "--input", '" \\t"', "--no-store")
    assert "output: ' \\t'" in spaced.stdout.splitlines(), spaced.stdout
    plain = cli("run", "tests.cli_flows:echoing", "--input", '" a "', "--no-store")
    assert "output:  a " in plain.stdout.splitlines()  # (text to see: as it is)
