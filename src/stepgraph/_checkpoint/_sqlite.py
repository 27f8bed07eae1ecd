"""``SqliteCheckpointStore``: the embedded default — one file, WAL mode.

- Each ``save`` is one transaction: its checkpoints are stored whole or not
  at all, so a process killed mid-write (even ``kill -9``) leaves the last
  committed checkpoint intact.
- ``synchronous=NORMAL`` in WAL mode: a committed checkpoint survives the
  process crashing; an OS crash or power loss may lose the last few commits
  but never corrupts the file.
- All I/O runs on one worker thread owned by the store, never on the event
  loop; the store is not bound to any loop and may be used from several.
- ``prune`` and ``delete_run`` delete checkpoints, drop values nothing
  references, checkpoint the WAL (``TRUNCATE``) and ``VACUUM``: the file
  shrinks.

Layout: consecutive checkpoints of one run that one ``save`` writes are
stored together as one *segment* row: a JSON document ``[format, run_id, workflow,
signature, [entry, ...]]`` whose entries hold each checkpoint's own fields,
its body and its signature; ``checkpoint_ids`` maps each id to its segment.
A batch of async checkpoints thus costs one JSON encoding, one row and one
small index entry per checkpoint, instead of a wide row, two index entries
and a separate encoding each. A segment is cut at ``SEGMENT_BYTES`` (a
larger single checkpoint has one of its own), so loading one checkpoint
reads little besides it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from os import PathLike
from pathlib import Path
from typing import Any, TypeVar

from .._exceptions import (
    CheckpointDecodeError,
    CheckpointEncodeError,
    CheckpointError,
    CheckpointIntegrityError,
)
from ._codec import dumps_compact, loads
from ._model import FORMAT, Checkpoint, Row, body_bytes, check_types, seal, split_refs
from ._store import BaseStore
from ._worker import Worker

__all__ = ["SqliteCheckpointStore"]

T = TypeVar("T")

LAYOUT = 2  # PRAGMA user_version of the files this module writes
SEGMENT_BYTES = 1 << 20  # a longer batch is split (a bigger checkpoint has its own)
_SCHEMA = f"""
CREATE TABLE segments (
    seq INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX segments_by_run ON segments (run_id, seq);
CREATE TABLE checkpoint_ids (
    id TEXT PRIMARY KEY,
    segment INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE runs (
    workflow TEXT NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (workflow, run_id)
) WITHOUT ROWID;
CREATE TABLE blobs (
    hash TEXT PRIMARY KEY,
    data BLOB NOT NULL
) WITHOUT ROWID;
PRAGMA user_version = {LAYOUT}
"""


class SqliteCheckpointStore(BaseStore):
    """Checkpoints in one SQLite file::

        store = SqliteCheckpointStore("runs.sqlite")            # or secret=b"..."
        result = await workflow.run(x, checkpoints=store)
        store.close()

    With ``secret``, each checkpoint is signed (HMAC-SHA256) and unsigned or
    altered ones are refused with ``CheckpointIntegrityError``.
    """

    def __init__(self, path: str | PathLike[str], *, secret: str | bytes | None = None) -> None:
        super().__init__(secret=secret)
        self.path = Path(path)
        self._worker = Worker("stepgraph-sqlite", owner=self)
        self._conn: sqlite3.Connection | None = None
        # Test seam: called inside the write transaction, between statements.
        self._write_hook: Callable[[], None] | None = None

    # -- plumbing --------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._worker.run(fn, *args)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = None
            try:
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                _ensure_layout(conn, self.path)  # first: another file is left as it is
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            except BaseException as exc:
                if conn is not None:
                    conn.close()
                if isinstance(exc, sqlite3.DatabaseError):
                    raise CheckpointError(
                        f"cannot open checkpoint database {str(self.path)!r}: {exc} "
                        "(is it a stepgraph SQLite checkpoint file?)"
                    ) from exc
                raise
            self._conn = conn
        return self._conn

    def close(self) -> None:
        """Close the database and end the worker thread (idempotent; the
        store opens both again if used after)."""
        self._worker.call(self._close_conn)
        self._worker.stop()

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> SqliteCheckpointStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _guard(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return fn(self._db())
        except sqlite3.DatabaseError as exc:
            raise CheckpointIntegrityError(
                f"checkpoint database {str(self.path)!r} is unreadable: {exc}"
            ) from exc

    # -- primitives --------------------------------------------------------------

    def _write(
        self,
        checkpoints: tuple[Checkpoint, ...],
        blob_bytes: list[int],
        blobs: Mapping[str, bytes],
    ) -> None:
        segments = _encode_segments(checkpoints, blob_bytes, self._secret)

        def write(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                if blobs:
                    db.executemany(
                        "INSERT OR IGNORE INTO blobs (hash, data) VALUES (?, ?)", blobs.items()
                    )
                if self._write_hook is not None:
                    self._write_hook()
                _check_refs(db, checkpoints, blobs)
                db.executemany(
                    "INSERT OR IGNORE INTO runs (workflow, run_id) VALUES (?, ?)",
                    {(cp.workflow, cp.run_id) for cp in checkpoints},
                )
                for run_id, data, ids in segments:
                    seq = db.execute(
                        "INSERT INTO segments (run_id, data) VALUES (?, ?)", (run_id, data)
                    ).lastrowid
                    db.executemany(
                        "INSERT INTO checkpoint_ids (id, segment) VALUES (?, ?)",
                        [(cid, seq) for cid in ids],
                    )
                db.execute("COMMIT")
            except sqlite3.IntegrityError as exc:
                db.execute("ROLLBACK")
                taken = [cp.id for cp in checkpoints if _exists(db, cp.id)]
                raise CheckpointIntegrityError(
                    f"checkpoint ids already stored: {taken[:3]}" if taken else str(exc)
                ) from exc
            except BaseException:
                db.execute("ROLLBACK")
                raise

        self._guard(write)

    def _read(self, checkpoint_id: str) -> Row | None:
        found = self._guard(
            lambda db: db.execute(
                "SELECT s.data FROM checkpoint_ids i JOIN segments s ON s.seq = i.segment "
                "WHERE i.id = ?",
                (checkpoint_id,),
            ).fetchone()
        )
        if found is None:
            return None
        segment = _Segment(found[0])
        for entry in segment.entries:
            if isinstance(entry, list) and entry and entry[0] == checkpoint_id:
                return segment.row(entry)
        raise CheckpointIntegrityError(f"checkpoint {checkpoint_id!r} is missing from its segment")

    def _read_latest(self, run_id: str) -> Row | None:
        found = self._guard(
            lambda db: db.execute(
                "SELECT data FROM segments WHERE run_id = ? ORDER BY seq DESC LIMIT 1", (run_id,)
            ).fetchone()
        )
        if found is None:
            return None
        segment = _Segment(found[0])
        if not segment.entries:
            raise CheckpointIntegrityError("a stored checkpoint segment is empty")
        return segment.row(segment.entries[-1])

    def _read_blobs(self, hashes: Iterable[str]) -> dict[str, bytes]:
        wanted = list(dict.fromkeys(hashes))

        def read(db: sqlite3.Connection) -> dict[str, bytes]:
            out: dict[str, bytes] = {}
            for chunk in _chunks(wanted):
                marks = ",".join("?" * len(chunk))
                for h, data in db.execute(
                    f"SELECT hash, data FROM blobs WHERE hash IN ({marks})", chunk
                ):
                    out[h] = bytes(data)
            return out

        return self._guard(read)

    def _rows(self, run_id: str | None, workflow: str | None) -> list[Row]:
        clauses, args = [], []
        if run_id is not None:
            clauses.append("run_id = ?")
            args.append(run_id)
        if workflow is not None:
            clauses.append("run_id IN (SELECT run_id FROM runs WHERE workflow = ?)")
            args.append(workflow)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT data FROM segments {where} ORDER BY seq"
        found = self._guard(lambda db: db.execute(sql, args).fetchall())
        rows = [row for (data,) in found for row in _Segment(data).rows()]
        return rows if workflow is None else [r for r in rows if r.workflow == workflow]

    def _remove(self, ids: list[str]) -> None:
        doomed = set(ids)

        def remove(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                segments: set[int] = set()
                for chunk in _chunks(list(doomed)):
                    marks = ",".join("?" * len(chunk))
                    segments.update(
                        seq
                        for (seq,) in db.execute(
                            f"SELECT segment FROM checkpoint_ids WHERE id IN ({marks})", chunk
                        )
                    )
                    db.execute(f"DELETE FROM checkpoint_ids WHERE id IN ({marks})", chunk)
                for seq in segments:
                    (data,) = db.execute(
                        "SELECT data FROM segments WHERE seq = ?", (seq,)
                    ).fetchone()
                    kept = [r for r in _Segment(data).rows() if r.id not in doomed]
                    if kept:
                        db.execute(
                            "UPDATE segments SET data = ? WHERE seq = ?", (_reencode(kept), seq)
                        )
                    else:
                        db.execute("DELETE FROM segments WHERE seq = ?", (seq,))
                self._collect_garbage(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("VACUUM")  # in WAL mode VACUUM writes to the WAL: truncate it after
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

        self._guard(remove)

    @staticmethod
    def _collect_garbage(db: sqlite3.Connection) -> None:
        """Drop the values and run entries no remaining checkpoint references."""
        db.execute("CREATE TEMP TABLE IF NOT EXISTS keep (hash TEXT PRIMARY KEY)")
        db.execute("DELETE FROM keep")
        for (data,) in db.execute("SELECT data FROM segments").fetchall():
            db.executemany(
                "INSERT OR IGNORE INTO keep (hash) VALUES (?)",
                [(h,) for refs in _Segment(data).refs() for h in split_refs(refs)],
            )
        db.execute("DELETE FROM blobs WHERE hash NOT IN (SELECT hash FROM keep)")
        db.execute("DELETE FROM runs WHERE run_id NOT IN (SELECT run_id FROM segments)")

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check`` of the file ("ok" when sound); blocking."""
        with sqlite3.connect(self.path) as conn:
            result = conn.execute("PRAGMA integrity_check").fetchone()
        conn.close()
        return str(result[0])


def _chunks(items: list[str], size: int = 500) -> Iterator[list[str]]:
    """Slices small enough for one ``IN (...)`` (SQLite bounds parameters)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _present(db: sqlite3.Connection, hashes: set[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(list(hashes)):
        marks = ",".join("?" * len(chunk))
        found.update(
            h for (h,) in db.execute(f"SELECT hash FROM blobs WHERE hash IN ({marks})", chunk)
        )
    return found


def _exists(db: sqlite3.Connection, checkpoint_id: str) -> bool:
    query = "SELECT 1 FROM checkpoint_ids WHERE id = ?"
    return db.execute(query, (checkpoint_id,)).fetchone() is not None


def _check_refs(
    db: sqlite3.Connection, checkpoints: tuple[Checkpoint, ...], blobs: Mapping[str, bytes]
) -> None:
    needed = {h for cp in checkpoints for h in cp.refs}
    needed.difference_update(blobs)
    if needed:
        present = _present(db, needed)
        if present != needed:
            missing = sorted(needed - present)[:3]
            raise CheckpointIntegrityError(
                f"checkpoint references values the store does not hold: {missing}"
            )


def _encode_segments(
    checkpoints: tuple[Checkpoint, ...], blob_bytes: list[int], secret: bytes | None
) -> list[tuple[str, bytes, list[str]]]:
    """(run id, segment bytes, checkpoint ids) for each segment, in save
    order: consecutive checkpoints that share run, workflow and graph
    signature, encoded in one go; a group over ``SEGMENT_BYTES`` is encoded
    entry by entry and packed into segments up to that size."""
    groups: list[tuple[tuple[str, str, str], list[Checkpoint], list[Any]]] = []
    for cp, size in zip(checkpoints, blob_bytes, strict=True):
        key = (cp.run_id, cp.workflow, cp.signature)
        if not groups or groups[-1][0] != key:
            groups.append((key, [], []))
        groups[-1][1].append(cp)
        groups[-1][2].append(_entry(cp, size, secret))
    out: list[tuple[str, bytes, list[str]]] = []
    for (run_id, workflow, signature), group, entries in groups:
        try:
            data = dumps_compact([FORMAT, run_id, workflow, signature, entries])
            if len(data) <= SEGMENT_BYTES or len(entries) == 1:
                out.append((run_id, data, [cp.id for cp in group]))
                continue
            head = dumps_compact([FORMAT, run_id, workflow, signature])[:-1] + b",["
            pieces = [dumps_compact(entry) for entry in entries]
        except (TypeError, ValueError) as exc:
            for cp in group:
                body_bytes(cp)  # names the checkpoint whose body is at fault
            raise CheckpointEncodeError(f"checkpoints of run {run_id!r}: {exc}") from exc
        start = 0
        while start < len(pieces):
            end, size = start + 1, len(pieces[start])
            while end < len(pieces) and size + len(pieces[end]) <= SEGMENT_BYTES:
                size += len(pieces[end])
                end += 1
            data = head + b",".join(pieces[start:end]) + b"]]"
            out.append((run_id, data, [cp.id for cp in group[start:end]]))
            start = end
    return out


def _entry(cp: Checkpoint, blob_bytes: int, secret: bytes | None) -> list[Any]:
    mac = None if secret is None else seal(cp, blob_bytes, secret)[-1].hex()
    return [
        cp.id,
        cp.parent_id,
        cp.superstep,
        cp.created_at,
        cp.status,
        cp.pending_requests,
        ",".join(cp.refs),
        blob_bytes,
        cp.body,
        mac,
    ]


class _Segment:
    """A stored segment, parsed; its rows are built only when asked for (a
    body's bytes are its compact re-encoding: exactly the bytes that were
    signed, as parsing and writing JSON round-trip). Anything malformed is a
    ``CheckpointIntegrityError``."""

    def __init__(self, data: Any) -> None:
        with _corrupt_segment():
            if not isinstance(data, bytes):
                raise TypeError("not a blob")
            layout, self.run_id, self.workflow, self.signature, self.entries = loads(data)
            if layout != FORMAT or not isinstance(self.entries, list):
                raise ValueError(f"unknown format {layout!r}")

    def rows(self) -> list[Row]:
        return [self.row(entry) for entry in self.entries]

    def row(self, entry: Any) -> Row:
        with _corrupt_segment():
            cid, parent, step, created, status, pending, refs, blob_bytes, body, mac = entry
            if type(blob_bytes) is not int:
                raise TypeError("a size is not an int")
            encoded = dumps_compact(body)
            row = Row(
                cid,
                self.run_id,
                self.workflow,
                self.signature,
                parent,
                step,
                created,
                status,
                pending,
                refs,
                blob_bytes + len(encoded),
                encoded,
                None if mac is None else bytes.fromhex(mac),
            )
        check_types(row)
        return row

    def refs(self) -> list[str]:
        """Each checkpoint's ``refs`` field, nothing else decoded (collecting
        garbage reads every segment)."""
        with _corrupt_segment():
            refs = [entry[6] for entry in self.entries]
            if not all(isinstance(r, str) for r in refs):
                raise TypeError("a refs field is not a string")
        return refs


@contextmanager
def _corrupt_segment() -> Iterator[None]:
    try:
        yield
    except (CheckpointDecodeError, TypeError, ValueError, IndexError, KeyError) as exc:
        raise CheckpointIntegrityError(f"a stored checkpoint segment is corrupt: {exc}") from exc


def _reencode(rows: list[Row]) -> bytes:
    """A segment of rows read from one (what remains when some are deleted)."""
    first = rows[0]
    entries = [
        [r.id, r.parent_id, r.superstep, r.created_at, r.status, r.pending_requests, r.refs,
         r.size - len(r.body), loads(r.body), None if r.mac is None else r.mac.hex()]
        for r in rows
    ]  # fmt: skip
    return dumps_compact([FORMAT, first.run_id, first.workflow, first.signature, entries])


def _ensure_layout(conn: sqlite3.Connection, path: Path) -> None:
    """Create the tables in a new file; refuse a file of another layout."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        (layout,) = conn.execute("PRAGMA user_version").fetchone()
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if layout == 0 and tables == 0:
            for statement in _SCHEMA.split(";"):
                conn.execute(statement)
            layout = LAYOUT
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    if layout != LAYOUT:
        raise CheckpointError(
            f"checkpoint database {str(path)!r} has layout {layout}, but this version of "
            f"stepgraph reads layout {LAYOUT} (was it written by another version, or is it "
            "another application's database?)"
        )
