"""The SQLite store's file layout: its tables, the statements that keep the
run index, and the small helpers every query uses.

Layout 4 (``PRAGMA user_version``): ``segments`` hold the checkpoints (see
``_segments``), with their ids, run, workflow and size beside the JSON so
that deleting needs no parsing; ``checkpoint_ids`` maps each id to its
segment; ``runs`` is one row per run (its latest checkpoint, status, counts,
times) ordered by ``seq``, its first segment (so a save updates the row in
place and leaves the indexes alone, and pages of runs stay put while runs go
on); ``run_blobs`` records which values each run references, so a value is
dropped when no run does; ``requests`` maps each request id to the run that
opened it; ``cancels`` holds the cancels asked for runs (read by each save of
a run, so a run learns of one at a barrier without asking); ``answers``
records each request a run answered, once (a second answer is refused by
its key); ``leases`` names the process that runs each run now.

A file of an older layout is refused by a normal open and brought up to date
only by :func:`migrate` (``stepgraph checkpoints migrate``); a newer one is
refused as written by a newer stepgraph.
"""

from __future__ import annotations

import functools
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from .._exceptions import CheckpointError, CheckpointIntegrityError
from ._codec import loads
from ._layouts import NOTHING_TO_MIGRATE, newer, older, step_up
from ._model import Checkpoint, RunInfo, answered_twice

__all__ = [
    "INSERT_RUN",
    "LAYOUT",
    "RUN_COLUMNS",
    "UPDATE_RUN",
    "check_refs",
    "chunks",
    "ensure_layout",
    "exists",
    "info_of",
    "infos_of",
    "marks",
    "migrate",
    "record_answers",
]

LAYOUT = 4  # PRAGMA user_version of the files this module writes
# What layout 4 added to layout 3 (``migrate`` creates it in a layout-3 file).
_LAYOUT_4 = """
CREATE TABLE answers (
    run_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    checkpoint_id TEXT NOT NULL,
    PRIMARY KEY (run_id, request_id)
) WITHOUT ROWID;
CREATE TABLE leases (
    run_id TEXT PRIMARY KEY,
    holder TEXT NOT NULL
) WITHOUT ROWID;
"""
_SCHEMA = f"""
CREATE TABLE segments (
    seq INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    workflow TEXT NOT NULL,
    ids TEXT NOT NULL,
    size INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX segments_by_run ON segments (run_id, seq);
CREATE TABLE checkpoint_ids (
    id TEXT PRIMARY KEY,
    segment INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    signature TEXT NOT NULL,
    seq INTEGER NOT NULL,
    last_checkpoint TEXT NOT NULL,
    superstep INTEGER NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    pending_requests INTEGER NOT NULL,
    checkpoints INTEGER NOT NULL,
    size INTEGER NOT NULL,
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX runs_by_seq ON runs (seq);
CREATE INDEX runs_by_workflow ON runs (workflow, seq);
CREATE TABLE run_blobs (
    run_id TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (run_id, hash)
) WITHOUT ROWID;
CREATE INDEX run_blobs_by_hash ON run_blobs (hash);
CREATE TABLE requests (
    request_id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX requests_by_run ON requests (run_id);
CREATE TABLE cancels (
    run_id TEXT PRIMARY KEY,
    requested_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE blobs (
    hash TEXT PRIMARY KEY,
    data BLOB NOT NULL
) WITHOUT ROWID;
{_LAYOUT_4}
PRAGMA user_version = {LAYOUT}
"""
RUN_COLUMNS = (
    "run_id, workflow, signature, status, superstep, pending_requests, last_checkpoint, "
    "checkpoints, size, started_at, updated_at, error"
)
# A save updates its run's row in place (one statement: cheaper than an
# upsert, which tries the insert first); a run's first save inserts it.
UPDATE_RUN = """
UPDATE runs SET workflow = ?, signature = ?, last_checkpoint = ?, superstep = ?, status = ?,
    error = NULL, pending_requests = ?, checkpoints = checkpoints + ?, size = size + ?,
    updated_at = ?
WHERE run_id = ?
"""
INSERT_RUN = """
INSERT INTO runs (workflow, signature, last_checkpoint, superstep, status, pending_requests,
                  checkpoints, size, updated_at, run_id, seq, started_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


# The types of a run's index row (SQLite keeps any value in any column, and
# PostgreSQL's double precision holds infinities): a row written otherwise
# is refused, not handed on to fail later (a time no JSON can hold, an error
# message that is bytes).
_RUN_FIELDS: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("run_id", str),
    ("workflow", str),
    ("signature", str),
    ("status", str),
    ("superstep", int),
    ("pending_requests", int),
    ("last_checkpoint", str),
    ("checkpoints", int),
    ("size", int),
    ("started_at", (float, int)),
    ("updated_at", (float, int)),
    ("error", (str, type(None))),
)


def info_of(row: tuple[Any, ...]) -> RunInfo:
    """A run's index row as a ``RunInfo``; ``CheckpointIntegrityError``
    naming the run and the field when a field has the wrong type."""
    for (name, kind), value in zip(_RUN_FIELDS, row, strict=True):
        wrong = not isinstance(value, kind) or isinstance(value, bool)
        if not wrong and name.endswith("_at"):
            wrong = not -sys.float_info.max <= value <= sys.float_info.max
        if wrong:
            raise CheckpointIntegrityError(
                f"the stored record of run {row[0]!r} is damaged: its field {name!r} holds "
                f"{'a ' + type(value).__name__ if not isinstance(value, float) else value}"
            )
    (run_id, workflow, signature, status, superstep, pending, last, count, size, started,
     updated, error) = row  # fmt: skip
    return RunInfo(
        run_id=run_id,
        workflow=workflow,
        signature=signature,
        status=status,
        superstep=superstep,
        pending_requests=pending,
        last_checkpoint=last,
        checkpoints=count,
        size=size,
        started_at=started,
        updated_at=updated,
        error=error,
    )


def infos_of(rows: Iterable[tuple[Any, ...]]) -> tuple[list[RunInfo], list[str]]:
    """The runs of index rows, and a description of each damaged row skipped."""
    infos: list[RunInfo] = []
    damaged: list[str] = []
    for row in rows:
        try:
            infos.append(info_of(row))
        except CheckpointIntegrityError as exc:
            damaged.append(str(exc))
    return infos, damaged


def chunks(items: list[str], size: int = 500) -> Iterator[list[str]]:
    """Slices small enough for one ``IN (...)`` (SQLite bounds parameters)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def marks(items: list[Any]) -> str:
    return ",".join("?" * len(items))


def exists(db: sqlite3.Connection, checkpoint_id: str) -> bool:
    query = "SELECT 1 FROM checkpoint_ids WHERE id = ?"
    return db.execute(query, (checkpoint_id,)).fetchone() is not None


def check_refs(
    db: sqlite3.Connection, checkpoints: tuple[Checkpoint, ...], blobs: Mapping[str, bytes]
) -> None:
    needed = {h for cp in checkpoints for h in cp.refs}
    needed.difference_update(blobs)
    if not needed:
        return
    present: set[str] = set()
    for chunk in chunks(list(needed)):
        present.update(
            h
            for (h,) in db.execute(f"SELECT hash FROM blobs WHERE hash IN ({marks(chunk)})", chunk)
        )
    if present != needed:
        missing = sorted(needed - present)[:3]
        raise CheckpointIntegrityError(
            f"checkpoint references values the store does not hold: {missing}"
        )


def record_answers(db: sqlite3.Connection, answers: list[tuple[str, str, str]]) -> None:
    """Record ``(run, request, checkpoint)`` answers, each once per run: an
    answer recorded before (by any process: saves hold the write lock)
    refuses the whole save."""
    for run_id, request_id, checkpoint_id in answers:
        before = db.execute(
            "SELECT checkpoint_id FROM answers WHERE run_id = ? AND request_id = ?",
            (run_id, request_id),
        ).fetchone()
        if before is not None:
            raise answered_twice(run_id, request_id, before[0])
        db.execute(
            "INSERT INTO answers (run_id, request_id, checkpoint_id) VALUES (?, ?, ?)",
            (run_id, request_id, checkpoint_id),
        )


def ensure_layout(
    conn: sqlite3.Connection, where: str, *, writable: bool, create: bool = True
) -> None:
    """Create the tables in a new (empty) file, unless not ``create``;
    refuse a file of another layout, and one whose ``user_version`` names a
    layout of ours without that layout's tables."""
    if writable and not create:
        _not_empty(conn, where)  # (before a write transaction, which would write a header)
    if writable:
        conn.execute("BEGIN IMMEDIATE")
    try:
        (layout,) = conn.execute("PRAGMA user_version").fetchone()
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if writable and create and layout == 0 and tables == 0:
            for statement in _SCHEMA.split(";"):
                conn.execute(statement)
            layout = LAYOUT
        if writable:
            conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    if layout == 0 and tables == 0:
        raise CheckpointError(f"{where} is empty: no checkpoint has been stored in it yet")
    if layout == LAYOUT or layout in _MIGRATIONS:
        _refuse_foreign(conn, where, layout)
        if layout != LAYOUT:
            raise older(where, layout, LAYOUT)
        return
    if _ours(conn) and layout > LAYOUT:
        raise newer(where, layout, LAYOUT)
    raise _not_a_store(where, layout)


def _ours(conn: sqlite3.Connection) -> bool:
    """Whether a file of a layout this version does not know is a stepgraph
    store (of a newer version): it has a ``segments`` table."""
    query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'segments'"
    return conn.execute(query).fetchone() is not None


def _not_a_store(where: str, layout: int) -> CheckpointError:
    return CheckpointError(
        f"{where} has layout {layout}, but this version of stepgraph reads layout {LAYOUT} "
        "(is it another application's database?)"
    )


def _columns(conn: sqlite3.Connection) -> dict[str, frozenset[str]]:
    """Each table of a database, with its columns' names."""
    found: dict[str, set[str]] = {}
    rows = conn.execute(
        "SELECT m.name, p.name FROM sqlite_master AS m, pragma_table_info(m.name) AS p "
        "WHERE m.type = 'table'"
    )
    for table, column in rows:
        found.setdefault(table, set()).add(column)
    return {table: frozenset(columns) for table, columns in found.items()}


@functools.cache
def _tables_of(layout: int) -> dict[str, frozenset[str]]:
    """The tables (and their columns) of a stepgraph file of ``layout``:
    this one's, as ``_SCHEMA`` creates them; layout 3's, without what
    layout 4 added."""
    made = sqlite3.connect(":memory:")
    added = sqlite3.connect(":memory:")
    try:
        made.executescript(_SCHEMA)
        added.executescript(_LAYOUT_4)
        tables, new = _columns(made), _columns(added)
    finally:
        made.close()
        added.close()
    return tables if layout == LAYOUT else {t: c for t, c in tables.items() if t not in new}


def _refuse_foreign(conn: sqlite3.Connection, where: str, layout: int) -> None:
    """Refuse a file whose ``user_version`` says ``layout`` (another
    application may use the number too) but whose tables are not that
    layout's: refused as such, not with the SQL error reading it as ours
    would raise ("no such table: segments"), and left as it is."""
    found = _columns(conn)
    lacking = [
        f"no table {table}" if table not in found else f"table {table} lacks its columns"
        for table, columns in _tables_of(layout).items()
        if not columns <= found.get(table, frozenset())  # (columns added by hand are fine)
    ]
    if lacking:
        raise CheckpointError(
            f"{where} has layout {layout} (its PRAGMA user_version) but not stepgraph's "
            f"tables of that layout ({', '.join(lacking[:3])}"
            f"{', ...' if len(lacking) > 3 else ''}): is it another application's database? "
            "(nothing was changed)"
        )


def _to_4(conn: sqlite3.Connection) -> None:
    """Layout 3 -> 4: the answers and leases tables; the answers of the
    stored runs are read from their checkpoints (each request once, at the
    first checkpoint that holds it answered)."""
    for statement in _LAYOUT_4.split(";"):
        conn.execute(statement)
    from ._segments import Segment

    rows = conn.execute("SELECT data FROM segments ORDER BY seq")
    for (data,) in rows.fetchall():
        segment = Segment(data)
        for row in segment.rows():
            body = loads(row.body)
            for request_id in body.get("answered", ()) if isinstance(body, dict) else ():
                conn.execute(
                    "INSERT OR IGNORE INTO answers (run_id, request_id, checkpoint_id) "
                    "VALUES (?, ?, ?)",
                    (row.run_id, request_id, row.id),
                )


# Layout -> the step that brings it to the next one.
_MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {3: _to_4}


def _not_empty(conn: sqlite3.Connection, where: str, *, migrating: bool = False) -> None:
    """Refuse a file without any table (and say nothing was created in it)."""
    (layout,) = conn.execute("PRAGMA user_version").fetchone()
    if layout == 0 and not conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
        raise CheckpointError(
            f"{where} is empty: it holds no stepgraph checkpoint store"
            + (f": {NOTHING_TO_MIGRATE}" if migrating else " (nothing was created)")
        )


def migrate(conn: sqlite3.Connection, where: str) -> tuple[int, int]:
    """Bring a file of an older layout up to date, in one transaction:
    (layout before, layout after). A file of this layout is left as it is
    (and only read: a read-only one has nothing to migrate either); any
    other is refused unchanged."""
    _not_empty(conn, where, migrating=True)
    (before,) = conn.execute("PRAGMA user_version").fetchone()
    if before == LAYOUT:
        _refuse_foreign(conn, where, before)
        return before, before
    if before not in _MIGRATIONS and not _ours(conn):
        raise _not_a_store(where, before)  # (not "cannot bring it to layout 4")
    conn.execute("BEGIN IMMEDIATE")
    try:
        (before,) = conn.execute("PRAGMA user_version").fetchone()  # (as of the lock)
        if before == LAYOUT or before in _MIGRATIONS:
            _refuse_foreign(conn, where, before)
        layout = step_up(where, before, LAYOUT, _MIGRATIONS, conn)
        conn.execute(f"PRAGMA user_version = {int(layout)}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return before, layout
