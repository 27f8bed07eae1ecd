"""``stepgraph checkpoints``: list, show, delete, prune, vacuum and migrate a store.

Reading commands open the store read-only and never create one. Listing
reads the store's run index a page at a time, so it costs the same on a
store of twenty runs and of twenty thousand. On a terminal, ids are printed
whole on one line (never folded), so they can be copied; elsewhere each row
is one line of whole values, for scripts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import time
import warnings
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .._checkpoint import TERMINAL_STATUSES, CheckpointInfo, RunInfo, SqliteCheckpointStore
from .._checkpoint._layouts import NOTHING_TO_MIGRATE
from .._checkpoint._postgres import PostgresCheckpointStore
from .._checkpoint._store import RUNNING_STATUSES, STOP_FIRST
from .._core import RunStatus, quoted
from .._exceptions import (
    CheckpointError,
    CheckpointNotFoundError,
    CheckpointWarning,
    StepgraphError,
)
from ._load import (
    DEFAULT_STORE,
    CliError,
    CliStore,
    StoreMode,
    in_named_store,
    is_postgres,
    missing_store,
    not_a_store_file,
    open_store,
    shown_store,
    store_path,
)
from ._render import json_printable, printable, say

__all__ = ["checkpoints_app", "runs_app"]

T = TypeVar("T")
EXIT_FAILED = 1

checkpoints_app = typer.Typer(
    help="List, show, delete, prune, vacuum and migrate stored checkpoints.", no_args_is_help=True
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

StoreOption = Annotated[str, typer.Option("--store", help="sqlite:PATH or postgresql://...")]
# What a run's status can be in a listing: a checkpoint's, or how it ended.
STATUSES = tuple(
    [s.value for s in RunStatus if s is not RunStatus.FAILED and s is not RunStatus.CANCELLED]
    + sorted(TERMINAL_STATUSES)
)


def fail(message: str) -> typer.Exit:
    say(err, ("error: ", "red"), message)
    return typer.Exit(EXIT_FAILED)


def with_store(spec: str, mode: StoreMode, use: Callable[[CliStore], Coroutine[Any, Any, T]]) -> T:
    """Open the store, run ``use`` on it, close it; problems are one line,
    warnings about damaged records are printed."""
    try:
        store = open_store(spec, mode)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", CheckpointWarning)
                result: T = asyncio.run(use(store))
        finally:
            store.close()
    except (CliError, StepgraphError) as exc:
        raise fail(in_named_store(str(exc), spec)) from None
    for warning in caught:
        say(err, ("warning: ", "yellow"), str(warning.message))
    return result


def size_text(n: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="milliseconds")


def ago(timestamp: float) -> str:
    seconds = max(0.0, time.time() - timestamp)
    for unit, span in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= span:
            return f"{int(seconds // span)}{unit} ago"
    return f"{int(seconds)}s ago"


def words(status: str) -> str:
    """``idle_with_pending_requests`` as words a narrow column can wrap."""
    return status.replace("_", " ")


def table(*columns: str) -> Table:
    grid = Table(box=None, pad_edge=False, padding=(0, 1, 0, 0), header_style="dim")
    for column in columns:
        if column in ("run", "checkpoint"):  # ids: whole, on one line
            grid.add_column(column, no_wrap=True, overflow="ignore")
        elif column == "workflow":
            grid.add_column(column, overflow="ellipsis", no_wrap=True, min_width=6, ratio=1)
        else:
            grid.add_column(column, overflow="fold")
    return grid


@checkpoints_app.command("list")
def checkpoints_list(
    store: StoreOption = DEFAULT_STORE,
    run_id: Annotated[str | None, typer.Option("--run", help="list one run's checkpoints")] = None,
    workflow: Annotated[str | None, typer.Option("--workflow", help="only this workflow")] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="only runs with this status")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="runs per page")] = 20,
    before: Annotated[
        str | None, typer.Option("--before", help="the page after this run (from the last page)")
    ] = None,
) -> None:
    """The most recently started runs (a page at a time), or one run's checkpoints."""
    if status is not None and status not in STATUSES:
        raise fail(f"unknown status {status!r}; use one of {', '.join(STATUSES)}")
    if run_id is not None:
        infos, elsewhere = with_store(store, StoreMode.READ, lambda s: _listing(s, run_id))
        if not infos:
            raise fail(f"no run {quoted(run_id)} in {shown_store(store)}")
        _show_checkpoints(infos, elsewhere)
        return

    async def page(s: CliStore) -> tuple[list[RunInfo], bool]:
        if before is not None and await s.run_info(before) is None:
            raise fail(f"no run {quoted(before)} in {shown_store(store)} (--before)")
        runs = await s.runs(
            workflow=workflow, status=status, limit=limit + 1, before=before
        )  # one more: is there a next page?
        return runs[:limit], len(runs) > limit

    runs, more = with_store(store, StoreMode.READ, page)
    _show_runs(runs)
    if more:
        say(err, f"more runs: add --before {runs[-1].run_id}", style="dim")


def cell(text: str) -> str:
    """Stored text (a workflow's name, ids) in one cell of a row: control
    characters escaped, tabs and newlines too (they would split the row)."""
    return printable(text).replace("\t", "\\t").replace("\n", "\\n")


def _show_runs(runs: list[RunInfo]) -> None:
    head = ("run", "workflow", "status", "step", "open", "size", "updated")
    if not out.is_terminal or out.width < 80:  # too narrow for ids on one line: plain rows
        print("\t".join(head))
        for r in runs:
            print("\t".join((cell(r.run_id), cell(r.workflow), r.status, str(r.superstep),
                             str(r.pending_requests), str(r.size), iso(r.updated_at))))  # fmt: skip
        return
    grid = table(*head)
    for r in runs:
        grid.add_row(
            Text(cell(r.run_id)), Text(cell(r.workflow)), Text(words(r.status)), str(r.superstep),
            str(r.pending_requests), size_text(r.size), ago(r.updated_at),
        )  # fmt: skip
    out.print(grid)
    if not runs:
        say(out, "no runs")


async def _listing(store: CliStore, run_id: str) -> tuple[list[CheckpointInfo], dict[str, str]]:
    """A run's checkpoints, and the run of each parent outside it (a fork's
    first checkpoint branches off another run's)."""
    infos = await store.list(run_id)
    ours = {info.id for info in infos}
    elsewhere: dict[str, str] = {}
    for parent in {i.parent_id for i in infos if i.parent_id and i.parent_id not in ours}:
        with contextlib.suppress(CheckpointNotFoundError):  # (else deleted: pruned, say)
            elsewhere[parent] = (await store.load(parent)).run_id
    return infos, elsewhere


def _show_checkpoints(infos: list[CheckpointInfo], elsewhere: dict[str, str]) -> None:
    head = ("#", "checkpoint", "step", "status", "open", "parent", "time")
    row_of = {info.id: n for n, info in enumerate(infos, 1)}

    def parent(info: CheckpointInfo) -> str:
        if info.parent_id is None:
            return "-"
        n = row_of.get(info.parent_id)
        if n is not None:
            return f"#{n}"
        other = elsewhere.get(info.parent_id)
        return f"run {cell(other)}" if other is not None else "deleted"

    if not out.is_terminal or out.width < 80:
        # (the row number too: the parent column refers to rows by it)
        print("\t".join((*head, "parent_id", "size")))
        for n, info in enumerate(infos, 1):
            print("\t".join((str(n), cell(info.id), str(info.superstep), info.status,
                             str(info.pending_requests), parent(info), iso(info.created_at),
                             cell(info.parent_id or "-"), str(info.size))))  # fmt: skip
        return
    grid = table(*head)
    for n, info in enumerate(infos, 1):
        stamp = datetime.fromtimestamp(info.created_at).strftime("%m-%d %H:%M:%S")
        grid.add_row(
            str(n), Text(cell(info.id)), str(info.superstep), Text(words(info.status)),
            str(info.pending_requests), parent(info), stamp,
        )  # fmt: skip
    out.print(grid)


@checkpoints_app.command("show")
def checkpoints_show(
    checkpoint: Annotated[str, typer.Argument(help="checkpoint id")],
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """One checkpoint's metadata and contents (as stored, without decoding)."""

    async def read(s: CliStore) -> tuple[Any, RunInfo | None]:
        cp = await s.load(checkpoint)
        return cp, await s.run_info(cp.run_id)

    cp, run = with_store(store, StoreMode.READ, read)
    body = cp.body
    summary: dict[str, Any] = {
        "id": cp.id,
        "run_id": cp.run_id,
        "workflow": cp.workflow,
        "superstep": cp.superstep,
        "parent_id": cp.parent_id,
        "status": cp.status,
        "created_at": iso(cp.created_at),
        "inboxes": {eid: len(entries) for eid, entries in body.get("inboxes", [])},
        # As stored (tagged JSON): nothing is decoded, so nothing named runs.
        "pending_messages": {
            eid: [entry[2] if entry[1] == "m" else {"answer": entry[2]["id"]} for entry in entries]
            for eid, entries in body.get("inboxes", [])
        },
        "state_keys": sorted(body.get("state", {})),
        "snapshots": sorted(body.get("snapshots", {})),
        "open_requests": [
            {"id": r["id"], "executor": r["executor"], "response_type": r["response_type"]}
            for r in body.get("requests", [])
        ],
        "value_bytes": sum(len(b) for b in cp.blobs.values()),  # the values it references
    }
    if run is not None:
        summary["run"] = {"status": run.status, "last_checkpoint": run.last_checkpoint}
        if run.error:
            summary["run"]["error"] = run.error
    print(json_printable(json.dumps(summary, indent=2, ensure_ascii=False)))


@checkpoints_app.command("delete")
def checkpoints_delete(
    checkpoint: Annotated[str | None, typer.Argument(help="checkpoint id")] = None,
    store: StoreOption = DEFAULT_STORE,
    run_id: Annotated[str | None, typer.Option("--run", help="delete a whole run")] = None,
) -> None:
    """Delete one checkpoint, or a whole run (damaged ones too). The space is
    reused by later checkpoints; ``vacuum`` shrinks the file."""
    if checkpoint is None and run_id is None:
        raise fail("say what to delete: a checkpoint id, or --run RUN for a whole run")
    if checkpoint is not None and run_id is not None:
        raise fail("give a checkpoint id or --run RUN, not both")

    async def delete(s: CliStore) -> int:
        try:
            if run_id is not None:
                return await s.delete_run(run_id)
            assert checkpoint is not None
            await s.delete(checkpoint)
            return 1
        except CheckpointError as exc:
            if STOP_FIRST not in str(exc):
                raise
            # (the store's advice names the Python API too: the commands here)
            run = run_id
            if run is None:
                with contextlib.suppress(StepgraphError):
                    run = (await s.load(str(checkpoint))).run_id
            cancel = shlex.join(
                ("stepgraph", "runs", "cancel", run or "RUN", "--store", shown_store(store))
            )
            advice = f"stop it first ({cancel}) or wait for it to end"
            raise CheckpointError(str(exc).replace(STOP_FIRST, advice)) from None

    count = with_store(store, StoreMode.WRITE, delete)
    if run_id is not None:
        say(out, f"deleted run {run_id} ({_checkpoints(count)})")
    else:
        say(out, f"deleted checkpoint {checkpoint}")


@checkpoints_app.command("prune")
def checkpoints_prune(
    keep_last: Annotated[
        int, typer.Option("--keep-last", min=1, help="how many to keep per run (required)")
    ],
    store: StoreOption = DEFAULT_STORE,
    run_id: Annotated[str | None, typer.Option("--run", help="only this run")] = None,
) -> None:
    """Keep the last N checkpoints of each run (or of one) and delete the
    rest, with the outputs they recorded."""

    async def prune(s: CliStore) -> int:
        if run_id is not None and await s.run_info(run_id) is None:
            raise CheckpointNotFoundError(f"no run {quoted(run_id)} in {shown_store(store)}")
        return await s.prune(run_id, keep_last=keep_last)

    count = with_store(store, StoreMode.WRITE, prune)
    say(out, f"deleted {_checkpoints(count)}")


def _checkpoints(count: int) -> str:
    return f"{count} checkpoint{'' if count == 1 else 's'}"


@checkpoints_app.command("vacuum")
def checkpoints_vacuum(store: StoreOption = DEFAULT_STORE) -> None:
    """Shrink the file to what it holds (writers wait while it runs)."""

    if is_postgres(store):
        raise fail("vacuum shrinks a SQLite file; PostgreSQL vacuums its tables itself")

    async def vacuum(s: CliStore) -> tuple[int, int]:
        assert isinstance(s, SqliteCheckpointStore)
        await s.list("")  # opens the file (and its WAL) before measuring it
        before = _file_bytes(s)
        await asyncio.to_thread(s.vacuum)
        return before, _file_bytes(s)

    before, after = with_store(store, StoreMode.WRITE, vacuum)
    say(out, f"vacuumed {store}: {size_text(before)} -> {size_text(after)}")


@checkpoints_app.command("migrate")
def checkpoints_migrate(store: StoreOption = DEFAULT_STORE) -> None:
    """Bring a store written by an earlier stepgraph to this version's layout
    (the one command that changes a layout; one transaction)."""
    opened: CliStore
    try:
        if is_postgres(store):
            opened = PostgresCheckpointStore(store, create=False)
        else:
            path = store_path(store)
            if (problem := not_a_store_file(path)) is not None:
                raise fail(problem)
            if not path.is_file():
                raise fail(missing_store(store, path))
            opened = SqliteCheckpointStore(path, create=False)
    except (CliError, ImportError) as exc:
        raise fail(str(exc)) from None
    try:
        before, after = opened.migrate()
    except StepgraphError as exc:
        if NOTHING_TO_MIGRATE not in str(exc):
            raise fail(str(exc)) from None
        # (not a failure: a deployment migrating a new database goes on)
        say(out, str(exc))
        return
    finally:
        opened.close()
    if before == after:
        say(out, f"{shown_store(store)} has layout {after} already: nothing to do")
    else:
        say(out, f"migrated {shown_store(store)}: layout {before} -> {after}")


def _file_bytes(store: SqliteCheckpointStore) -> int:
    """The file and its write-ahead log."""
    wal = store.path.with_name(store.path.name + "-wal")
    return store.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


runs_app = typer.Typer(help="Act on runs in a store (from any process).", no_args_is_help=True)


@runs_app.command("cancel")
def runs_cancel(
    run_id: Annotated[str, typer.Argument(help="the run to stop")],
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """Ask a running run to stop at its next barrier (or within a second,
    cutting a long superstep), wherever it runs; it is then listed as
    cancelled and can be resumed. A run that is not running (paused, idle,
    waiting for answers, ended) is an error: nothing to stop."""

    async def cancel(s: CliStore) -> tuple[bool, RunInfo | None]:
        if await s.request_cancel(run_id):
            return True, None
        return False, await s.run_info(run_id)

    asked, info = with_store(store, StoreMode.WRITE, cancel)
    if not asked:
        if info is None:
            raise fail(f"no run {quoted(run_id)} in {shown_store(store)}")
        if info.status in RUNNING_STATUSES:
            raise fail(
                f"run {run_id} is not running anywhere: it is listed as {info.status}, but no "
                "process holds it (it stopped without recording how); resume it or delete it"
            )
        raise fail(f"run {run_id} is not running (status: {info.status}); nothing to cancel")
    say(out, f"asked run {run_id} to stop (at its next barrier, or within a second)")
