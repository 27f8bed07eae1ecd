"""The Postgres store's tables, the statements that keep them, and the layout
check.

Layout 4 mirrors the SQLite file (see ``_sqlite_layout``), each table named
with a ``stepgraph_`` prefix so that a database shared with an application
cannot mix them up: ``segments`` (the checkpoints, packed by
``_segments``), ``checkpoint_ids``, the ``runs`` index, ``run_blobs``,
``blobs``, ``requests``, ``cancels``, ``answers`` and ``leases``; and
``stepgraph_meta``, whose ``layout`` row says which layout the tables have.
Tables are created in the schema the connection's ``search_path`` names
first (``options=-csearch_path=...`` in the DSN picks another).

A database with none of these tables gets them on first use. One whose
layout differs is refused and left untouched: an older one until
:func:`migrate` brings it up to date (``stepgraph checkpoints migrate``), a
newer one as written by a newer stepgraph, and tables with our names but no
layout row as another application's.

The statements that delete from the tables are in ``_postgres_delete``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from typing import Any

from .._exceptions import CheckpointError
from ._layouts import NOTHING_TO_MIGRATE, newer, older, step_up
from ._model import answered_twice
from ._segments import Packed

__all__ = [
    "LAYOUT",
    "SAVE_SEGMENT",
    "clock_skew",
    "ensure_layout",
    "has_nul",
    "insert_values",
    "lock_key",
    "migrate",
    "record_answers",
    "segment_write",
    "unwritable",
]

LAYOUT = 4
# Every table this layout has; the first one is the layout record.
TABLES = (
    "stepgraph_meta",
    "stepgraph_segments",
    "stepgraph_checkpoint_ids",
    "stepgraph_runs",
    "stepgraph_run_blobs",
    "stepgraph_requests",
    "stepgraph_cancels",
    "stepgraph_blobs",
    "stepgraph_answers",
)
_SCHEMA = (
    "CREATE TABLE stepgraph_meta (key text PRIMARY KEY, value text NOT NULL)",
    """CREATE TABLE stepgraph_segments (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        run_id text NOT NULL,
        workflow text NOT NULL,
        ids text NOT NULL,
        size bigint NOT NULL,
        data bytea NOT NULL
    )""",
    "CREATE INDEX stepgraph_segments_by_run ON stepgraph_segments (run_id, seq)",
    "CREATE INDEX stepgraph_segments_by_workflow ON stepgraph_segments (workflow, seq)",
    "CREATE TABLE stepgraph_checkpoint_ids (id text PRIMARY KEY, segment bigint NOT NULL)",
    """CREATE TABLE stepgraph_runs (
        run_id text PRIMARY KEY,
        workflow text NOT NULL,
        signature text NOT NULL,
        seq bigint NOT NULL,
        last_checkpoint text NOT NULL,
        superstep bigint NOT NULL,
        status text NOT NULL,
        error text,
        pending_requests bigint NOT NULL,
        checkpoints bigint NOT NULL,
        size bigint NOT NULL,
        started_at double precision NOT NULL,
        updated_at double precision NOT NULL
    )""",
    "CREATE INDEX stepgraph_runs_by_seq ON stepgraph_runs (seq)",
    "CREATE INDEX stepgraph_runs_by_workflow ON stepgraph_runs (workflow, seq)",
    """CREATE TABLE stepgraph_run_blobs (
        run_id text NOT NULL,
        hash text NOT NULL,
        PRIMARY KEY (run_id, hash)
    )""",
    "CREATE INDEX stepgraph_run_blobs_by_hash ON stepgraph_run_blobs (hash)",
    "CREATE TABLE stepgraph_requests (request_id text PRIMARY KEY, run_id text NOT NULL)",
    "CREATE INDEX stepgraph_requests_by_run ON stepgraph_requests (run_id)",
    """CREATE TABLE stepgraph_cancels (
        run_id text PRIMARY KEY,
        requested_at double precision NOT NULL
    )""",
    "CREATE TABLE stepgraph_blobs (hash text PRIMARY KEY, data bytea NOT NULL)",
    """CREATE TABLE stepgraph_answers (
        run_id text NOT NULL,
        request_id text NOT NULL,
        checkpoint_id text NOT NULL,
        PRIMARY KEY (run_id, request_id)
    )""",
)
# A save's writes for one segment, in one statement (a save of one segment
# is then one round trip, atomic on its own without BEGIN and COMMIT): the
# values it references locked against deletion (``locks``: in hash order,
# as every writer; when one is missing, nothing is written and no row comes
# back), the segment row, its checkpoint ids, the run's references to values
# and its requests, and the run's index entry — inserted by the run's first
# save (at the seq of its first segment), moved on by later ones. The row
# that comes back holds the time a cancel was asked for the run, if one was.
SAVE_SEGMENT = """
WITH held AS (
    SELECT count(*) AS n FROM (
        SELECT 1 FROM stepgraph_blobs WHERE hash = ANY(%(locks)s::text[])
        ORDER BY hash FOR KEY SHARE
    ) AS locked
), segment AS (
    INSERT INTO stepgraph_segments (run_id, workflow, ids, size, data)
    SELECT %(run_id)s, %(workflow)s, %(ids)s, %(size)s, %(data)s FROM held
    WHERE held.n = cardinality(%(locks)s::text[])
    RETURNING seq
), checkpoint_ids AS (
    INSERT INTO stepgraph_checkpoint_ids (id, segment)
    SELECT unnest(string_to_array(%(ids)s, ',')), seq FROM segment
), run_blobs AS (
    INSERT INTO stepgraph_run_blobs (run_id, hash)
    SELECT %(run_id)s, unnest(%(refs)s::text[]) FROM segment ON CONFLICT DO NOTHING
), requests AS (
    INSERT INTO stepgraph_requests (request_id, run_id)
    SELECT unnest(%(requests)s::text[]), %(run_id)s FROM segment ON CONFLICT DO NOTHING
)
INSERT INTO stepgraph_runs (workflow, signature, last_checkpoint, superstep, status,
    pending_requests, checkpoints, size, updated_at, run_id, seq, started_at)
SELECT %(workflow)s, %(signature)s, %(last)s, %(superstep)s, %(status)s, %(pending)s,
    %(count)s, %(size)s, %(updated_at)s, %(run_id)s, seq, %(started_at)s FROM segment
ON CONFLICT (run_id) DO UPDATE SET workflow = EXCLUDED.workflow,
    signature = EXCLUDED.signature, last_checkpoint = EXCLUDED.last_checkpoint,
    superstep = EXCLUDED.superstep, status = EXCLUDED.status, error = NULL,
    pending_requests = EXCLUDED.pending_requests,
    checkpoints = stepgraph_runs.checkpoints + EXCLUDED.checkpoints,
    size = stepgraph_runs.size + EXCLUDED.size, updated_at = EXCLUDED.updated_at
RETURNING (SELECT requested_at FROM stepgraph_cancels WHERE run_id = %(run_id)s)
"""


def segment_write(segment: Packed) -> dict[str, Any]:
    """The parameters of ``SAVE_SEGMENT`` for one packed segment (but its locks)."""
    group = segment.checkpoints
    last = group[-1]
    return {
        "run_id": segment.run_id, "workflow": segment.workflow, "ids": segment.ids,
        "size": segment.size, "data": segment.data,
        "refs": sorted({h for cp in group for h in cp.refs}),
        "requests": sorted({r for cp in group for r in cp.request_ids}),
        "signature": last.signature, "last": last.id, "superstep": last.superstep,
        "status": last.status, "pending": last.pending_requests, "count": len(group),
        "updated_at": last.created_at, "started_at": group[0].created_at,
    }  # fmt: skip


def clock_skew(conn: Any) -> float:
    """The server's clock minus this machine's, in seconds (to about half a
    round trip)."""
    before = time.time()
    (server,) = conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()
    return float(server) - (before + time.time()) / 2


def has_nul(values: Any) -> bool:
    """Whether a text parameter holds NUL, which PostgreSQL text cannot: a
    lookup by it finds nothing (as on the other stores), rather than failing."""
    for value in values:
        if isinstance(value, str) and "\x00" in value:
            return True
        if isinstance(value, list) and has_nul(value):
            return True
    return False


def insert_values(cur: Any, blobs: Mapping[str, bytes]) -> None:
    """Store values not stored yet, in hash order, as every writer (two
    saves never wait for each other's values in opposite orders)."""
    cur.executemany(
        "INSERT INTO stepgraph_blobs (hash, data) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        sorted(blobs.items()),
    )


# Serialises creating and migrating the tables between processes (the
# pg_advisory_xact_lock key; the lease keys are hashes, see ``lock_key``).
_LAYOUT_LOCK = 0x73746570_67726170  # "stepgrap"


def lock_key(run_id: str) -> int:
    """The advisory lock key of a run's lease: 64 bits of a SHA-256, stable
    across processes and versions (Python's ``hash`` is salted)."""
    digest = hashlib.sha256(b"stepgraph lease\0" + run_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def record_answers(cur: Any, answers: list[tuple[str, str, str]]) -> None:
    """Record ``(run, request, checkpoint)`` answers, each once per run. The
    primary key decides between concurrent saves: the second insert waits
    for the first transaction, then does nothing, and the save is refused
    naming the checkpoint that holds the answer (rolling all of it back)."""
    for run_id, request_id, checkpoint_id in answers:
        cur.execute(
            "INSERT INTO stepgraph_answers (run_id, request_id, checkpoint_id) "
            "VALUES (%s, %s, %s) ON CONFLICT (run_id, request_id) DO NOTHING RETURNING 1",
            (run_id, request_id, checkpoint_id),
        )
        if cur.fetchone() is not None:  # (a row back: this save recorded it)
            continue
        # A new statement: it sees the answer the other transaction committed.
        cur.execute(
            "SELECT checkpoint_id FROM stepgraph_answers WHERE run_id = %s AND request_id = %s",
            (run_id, request_id),
        )
        before = cur.fetchone()
        raise answered_twice(run_id, request_id, before[0] if before else "(unknown)")


# What every save writes: a role without these (one that only reads) cannot
# run anything -- each run would fail at its first save.
_SAVE_NEEDS = (
    ("stepgraph_segments", "INSERT"),
    ("stepgraph_checkpoint_ids", "INSERT"),
    ("stepgraph_runs", "INSERT"),
    ("stepgraph_runs", "UPDATE"),
)
UNWRITABLE = (
    "SELECT current_user::text, array_agg(p || ' on ' || t) FILTER "
    "(WHERE NOT has_table_privilege(to_regclass(t), p)) "
    "FROM unnest(%s::text[], %s::text[]) AS needed(t, p)"
)


def unwritable(conn: Any) -> tuple[str, list[str]]:
    """The session's role, and what a save needs that it may not do
    (``"INSERT on stepgraph_runs"``; none: it may save)."""
    tables, privileges = zip(*_SAVE_NEEDS, strict=True)
    role, missing = conn.execute(UNWRITABLE, (list(tables), list(privileges))).fetchone()
    return str(role), list(missing or ())


def _columns_made(statement: str) -> tuple[str, frozenset[str]]:
    """The table a ``CREATE TABLE`` statement of ``_SCHEMA`` makes, and its
    columns: the first word of each item between its outer parentheses
    (but a ``PRIMARY KEY (...)`` item's)."""
    head, _, body = statement.partition("(")
    items, depth, item = [], 0, ""
    for char in body[: body.rindex(")")]:
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            items.append(item)
            item = ""
        else:
            item += char
    items.append(item)
    columns = {item.split()[0] for item in items if item.split()[0] != "PRIMARY"}
    return head.split()[-1], frozenset(columns)


# Each table's columns, as this layout creates them.
_COLUMNS = dict(_columns_made(sql) for sql in _SCHEMA if sql.startswith("CREATE TABLE"))


def _shape(cur: Any) -> dict[str, frozenset[str]]:
    """The tables of ours the search path finds, in ``TABLES`` order, with
    their columns' names."""
    cur.execute(
        "SELECT t.name, a.attname FROM unnest(%s::text[]) WITH ORDINALITY AS t(name, n) "
        "LEFT JOIN pg_attribute AS a ON a.attrelid = to_regclass(t.name) AND a.attnum > 0 "
        "AND NOT a.attisdropped WHERE to_regclass(t.name) IS NOT NULL ORDER BY t.n",
        (list(TABLES),),
    )
    found: dict[str, set[str]] = {}
    for table, column in cur.fetchall():
        found.setdefault(table, set()).update([column] if column is not None else [])
    return {table: frozenset(columns) for table, columns in found.items()}


def _layout(cur: Any, where: str) -> int | None:
    """The layout the database's tables have; ``None`` when it has none of
    them. Tables with our names but no layout row are refused, and so are
    tables of this layout's record that are not this layout's."""
    shape = _shape(cur)
    if not shape:
        return None
    found = None
    if {"key", "value"} <= shape.get(TABLES[0], frozenset()):
        import psycopg  # (installed: ``cur`` is one of its cursors)

        try:
            # (as text: another application's stepgraph_meta may type them otherwise)
            cur.execute("SELECT value::text FROM stepgraph_meta WHERE key::text = 'layout'")
        except psycopg.errors.InsufficientPrivilege as exc:
            raise CheckpointError(
                f"{where}: role {cur.connection.info.user!r} may not read stepgraph's tables "
                f"({exc.diag.message_primary or 'permission denied'}): grant it SELECT on the "
                "stepgraph_* tables (and INSERT, UPDATE and DELETE to run workflows), or "
                "connect as another role"
            ) from None
        found = cur.fetchone()
    if found is None or not str(found[0]).isdigit():
        raise CheckpointError(
            f"{where} has tables named like stepgraph's ({', '.join(list(shape)[:3])}) but no "
            "stepgraph layout record: is it another application's database? (nothing was "
            "changed)"
        )
    layout = int(found[0])
    lacking = [
        f"no table {table}" if table not in shape else f"table {table} lacks its columns"
        for table, columns in _COLUMNS.items()
        if not columns <= shape.get(table, frozenset())  # (columns added by hand are fine)
    ]
    if layout == LAYOUT and lacking:
        raise CheckpointError(
            f"{where} has stepgraph's layout record (layout {layout}) but not that layout's "
            f"tables ({', '.join(lacking[:3])}{', ...' if len(lacking) > 3 else ''}): were "
            "they changed by hand, or are they another application's? (nothing was changed)"
        )
    return layout


def _fast_compression(conn: Any, cur: Any) -> None:
    """Compress stored bytes with lz4 where the server has it (PostgreSQL 14
    or later, built with lz4): a segment of 50 checkpoints is compressed in
    a tenth of pglz's time (0.05 ms less per save here), and reads are the
    same either way. A server without lz4 keeps its default, pglz."""
    import psycopg  # (installed: ``conn`` is one of its connections)

    unsupported = (psycopg.errors.FeatureNotSupported, psycopg.errors.SyntaxError)
    try:
        with conn.transaction():  # (a savepoint: its failure leaves the rest)
            for table in ("stepgraph_segments", "stepgraph_blobs"):  # (constants)
                cur.execute(f"ALTER TABLE {table} ALTER COLUMN data SET COMPRESSION lz4")
    except unsupported:
        pass


def _create_tables(cur: Any, where: str) -> None:
    """The tables, in the schema the search path names first -- or a
    ``CheckpointError`` saying why they cannot be (the server's own
    message quotes the statement: "LINE 1: CREATE TABLE ...")."""
    import psycopg  # (installed: ``cur`` is one of its cursors)

    try:
        for statement in _SCHEMA:
            cur.execute(statement)
    except psycopg.errors.InvalidSchemaName:
        raise CheckpointError(
            f"{where} has no schema to create stepgraph's tables in: the connection's "
            "search_path names none that exists (nothing was created)"
        ) from None
    except psycopg.errors.InsufficientPrivilege as exc:
        reason = exc.diag.message_primary or "permission denied"
        raise CheckpointError(
            f"{where}: its role may not create stepgraph's tables ({reason}): grant it CREATE "
            "on that schema, or let a role that may run stepgraph there once (it creates "
            "them) and grant this one INSERT, UPDATE and DELETE on them (nothing was created)"
        ) from None


def ensure_layout(conn: Any, where: str, *, create: bool = True) -> None:
    """Create the tables in a database that has none of them (one
    transaction: processes starting at once create them once) — unless not
    ``create``: then refuse it; refuse a database of another layout,
    changing nothing."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LAYOUT_LOCK,))
        layout = _layout(cur, where)
        if layout is None and not create:
            raise CheckpointError(
                f"{where} holds no stepgraph checkpoint store (no stepgraph_* tables; nothing "
                "was created)"
            )
        if layout is None:
            _create_tables(cur, where)
            _fast_compression(conn, cur)
            cur.execute(
                "INSERT INTO stepgraph_meta (key, value) VALUES ('layout', %s)", (str(LAYOUT),)
            )
            return
    if layout < LAYOUT:
        raise older(where, layout, LAYOUT)
    if layout > LAYOUT:
        raise newer(where, layout, LAYOUT)


# Layout -> the step that brings it to the next one (none yet: layout 4 is
# the first Postgres layout). A step runs inside migrate's transaction.
_MIGRATIONS: dict[int, Callable[[Any], None]] = {}


def migrate(conn: Any, where: str) -> tuple[int, int]:
    """Bring the tables of an older layout up to date, in one transaction:
    (layout before, layout after). Tables of this layout are left as they
    are; any other layout is refused unchanged."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LAYOUT_LOCK,))
        before = _layout(cur, where)
        if before is None:
            raise CheckpointError(
                f"{where} holds no stepgraph checkpoint tables: {NOTHING_TO_MIGRATE}"
            )
        layout = step_up(where, before, LAYOUT, _MIGRATIONS, cur)
        if layout != before:
            cur.execute("UPDATE stepgraph_meta SET value = %s WHERE key = 'layout'", (str(layout),))
    return before, layout
