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

The statements that delete from the tables are here too (``Plan``,
``drop_segments``, ``forget_run``); the store decides when they run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from .._exceptions import CheckpointError, CheckpointIntegrityError
from ._model import answered_twice, split_refs
from ._segments import Segment, reencode

__all__ = [
    "LAYOUT",
    "Plan",
    "SAVE_SEGMENT",
    "drop_segments",
    "ensure_layout",
    "forget_run",
    "lock_key",
    "lock_run",
    "migrate",
    "record_answers",
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


def _present(cur: Any) -> list[str]:
    cur.execute(
        "SELECT name FROM unnest(%s::text[]) AS name WHERE to_regclass(name) IS NOT NULL",
        (list(TABLES),),
    )
    return [name for (name,) in cur.fetchall()]


def _layout(cur: Any, where: str) -> int | None:
    """The layout the database's tables have; ``None`` when it has none of
    them. Tables with our names but no layout row are refused."""
    present = _present(cur)
    if not present:
        return None
    found = None
    if TABLES[0] in present:
        cur.execute("SELECT value FROM stepgraph_meta WHERE key = 'layout'")
        found = cur.fetchone()
    if found is None or not str(found[0]).isdigit():
        raise CheckpointError(
            f"{where} has tables named like stepgraph's ({', '.join(present[:3])}) but no "
            "stepgraph layout record: is it another application's database? (nothing was "
            "changed)"
        )
    return int(found[0])


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


def ensure_layout(conn: Any, where: str) -> None:
    """Create the tables in a database that has none of them (one
    transaction: processes starting at once create them once); refuse a
    database of another layout, changing nothing."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LAYOUT_LOCK,))
        layout = _layout(cur, where)
        if layout is None:
            for statement in _SCHEMA:
                cur.execute(statement)
            _fast_compression(conn, cur)
            cur.execute(
                "INSERT INTO stepgraph_meta (key, value) VALUES ('layout', %s)", (str(LAYOUT),)
            )
            return
    if layout < LAYOUT:
        raise CheckpointError(
            f"{where} has layout {layout}, written by an earlier stepgraph; this version reads "
            f"layout {LAYOUT}: bring it up to date with `stepgraph checkpoints migrate` (nothing "
            "was changed)"
        )
    if layout > LAYOUT:
        raise CheckpointError(
            f"{where} has layout {layout}, written by a newer stepgraph; this version reads "
            f"layout {LAYOUT} (nothing was changed)"
        )


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
            raise CheckpointError(f"{where} holds no stepgraph checkpoint tables")
        layout = before
        if layout != LAYOUT and layout not in _MIGRATIONS:
            raise CheckpointError(
                f"{where} has layout {layout}, which this version of stepgraph cannot bring "
                f"to layout {LAYOUT}" + (" (it is newer)" if layout > LAYOUT else "")
            )
        while layout in _MIGRATIONS:
            _MIGRATIONS[layout](cur)
            layout += 1
        if layout != before:
            cur.execute("UPDATE stepgraph_meta SET value = %s WHERE key = 'layout'", (str(layout),))
    return before, layout


def lock_run(cur: Any, run_id: str) -> None:
    """Hold the run's index row: its saves wait until this transaction ends."""
    cur.execute("SELECT 1 FROM stepgraph_runs WHERE run_id = %s FOR UPDATE", (run_id,))


def drop_segments(cur: Any, seqs: list[int]) -> tuple[int, int]:
    """Delete whole segments and their ids (nothing parsed: damaged ones go
    too); the checkpoints and bytes they held."""
    if not seqs:
        return 0, 0
    cur.execute("DELETE FROM stepgraph_segments WHERE seq = ANY(%s) RETURNING ids, size", (seqs,))
    ids: list[str] = []
    size = 0
    for members, bytes_ in cur.fetchall():
        ids += members.split(",")
        size += bytes_
    cur.execute("DELETE FROM stepgraph_checkpoint_ids WHERE id = ANY(%s)", (ids,))
    return len(ids), size


def forget_run(cur: Any, run_id: str) -> None:
    for table in (
        "stepgraph_requests",
        "stepgraph_cancels",
        "stepgraph_answers",
        "stepgraph_runs",
    ):  # table names are constants: nothing from outside is formatted into SQL
        cur.execute(f"DELETE FROM {table} WHERE run_id = %s", (run_id,))


class Plan:
    """What deleting checkpoints of one run changes, read before any lock is
    taken: the partly deleted segments rewritten, and the values the rest of
    the run references (``None`` when a damaged segment hides them, so none
    is dropped)."""

    def __init__(self, run_id: str, upto: int) -> None:
        self.run_id = run_id
        self.upto = upto  # the newest segment read; newer ones are read at the end
        self.refs: set[str] | None = set()
        self.rewrites: dict[int, tuple[bytes, bytes, str, int]] = {}  # seq -> old, new, ids, size

    @classmethod
    def read(
        cls,
        found: list[tuple[Any, ...]],
        run_id: str,
        doomed: set[str],
        whole: set[int],
        partial: list[int],
    ) -> Plan:
        """From the run's segments as ``(seq, data)``, in order."""
        plan = cls(run_id, found[-1][0] if found else 0)
        data_of = dict(found)
        for seq in partial:
            if seq in data_of:
                plan.rewrite(seq, data_of[seq], doomed)
        for seq, data in found:
            if seq not in whole and seq not in plan.rewrites:
                plan.note(data)
        return plan

    def rewrite(self, seq: int, data: bytes, doomed: set[str]) -> None:
        kept = [r for r in Segment(data).rows() if r.id not in doomed]
        encoded, size = reencode(kept)
        self.rewrites[seq] = (data, encoded, ",".join(r.id for r in kept), size)
        if self.refs is not None:
            for row in kept:
                self.refs.update(row.ref_list)

    def note(self, data: bytes) -> None:
        """Add the values one remaining segment references."""
        if self.refs is None:
            return
        try:
            for field in Segment(data).refs():
                self.refs.update(split_refs(field))
        except CheckpointIntegrityError:
            self.refs = None  # a damaged segment's values are unknown: keep them all

    def finish(self, cur: Any, doomed: set[str]) -> list[str]:
        """The last transaction: rewrite, unlink the ids, fix the run's index
        entry, drop the run's references to values it no longer uses (the
        values themselves go after, see ``_drop_values``); returns those."""
        run_id = self.run_id
        lock_run(cur, run_id)
        for seq, (old, encoded, ids, size) in list(self.rewrites.items()):
            cur.execute(
                "SELECT data, ids, size FROM stepgraph_segments WHERE seq = %s FOR UPDATE", (seq,)
            )
            now = cur.fetchone()
            if now is None:
                continue  # deleted meanwhile
            data, held, held_size = now
            if bytes(data) != old:  # changed meanwhile (another deletion): redo it
                self.rewrite(seq, bytes(data), doomed)
                _, encoded, ids, size = self.rewrites[seq]
            cur.execute(
                "UPDATE stepgraph_segments SET data = %s, ids = %s, size = %s WHERE seq = %s",
                (encoded, ids, size, seq),
            )
            cur.execute(
                "UPDATE stepgraph_runs SET checkpoints = checkpoints - %s, size = size - %s "
                "WHERE run_id = %s",
                (len(held.split(",")) - len(ids.split(",")), held_size - size, run_id),
            )
        cur.execute("DELETE FROM stepgraph_checkpoint_ids WHERE id = ANY(%s)", (sorted(doomed),))
        cur.execute(
            "SELECT seq, data FROM stepgraph_segments WHERE run_id = %s ORDER BY seq DESC LIMIT 1",
            (run_id,),
        )
        latest = cur.fetchone()
        if latest is None:  # nothing left of the run
            cur.execute(
                "DELETE FROM stepgraph_run_blobs WHERE run_id = %s RETURNING hash", (run_id,)
            )
            hashes = [h for (h,) in cur.fetchall()]
            forget_run(cur, run_id)
            return hashes
        cur.execute("SELECT last_checkpoint FROM stepgraph_runs WHERE run_id = %s", (run_id,))
        current = cur.fetchone()
        if current is not None and current[0] in doomed:  # an earlier one is latest now
            segment = Segment(bytes(latest[1]))
            last = segment.row(segment.entries[-1])
            cur.execute(
                "UPDATE stepgraph_runs SET last_checkpoint = %s, superstep = %s, "
                "pending_requests = %s, status = %s, error = NULL WHERE run_id = %s",
                (last.id, last.superstep, last.pending_requests, last.status, run_id),
            )
        if self.refs is None:
            return []
        cur.execute(  # written while this plan was made
            "SELECT data FROM stepgraph_segments WHERE run_id = %s AND seq > %s",
            (run_id, self.upto),
        )
        for (data,) in cur.fetchall():
            self.note(bytes(data))
        if self.refs is None:
            return []
        cur.execute(
            "DELETE FROM stepgraph_run_blobs WHERE run_id = %s AND NOT hash = ANY(%s) "
            "RETURNING hash",
            (run_id, sorted(self.refs)),
        )
        return [h for (h,) in cur.fetchall()]
