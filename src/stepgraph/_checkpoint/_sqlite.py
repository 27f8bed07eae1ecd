"""``SqliteCheckpointStore``: the embedded default — one file, WAL mode.

- Each ``save`` is one transaction: its checkpoints are stored whole or not
  at all, so a process killed mid-write (even ``kill -9``) leaves the last
  committed checkpoint intact.
- ``synchronous=NORMAL`` in WAL mode: a committed checkpoint survives the
  process crashing; an OS crash or power loss may lose the last few commits
  but never corrupts the file.
- All I/O runs on one worker thread owned by the store, never on the event
  loop; the store is not bound to any loop and may be used from several.
- ``prune`` and ``delete_run`` delete rows, drop values nothing references,
  checkpoint the WAL (``TRUNCATE``) and ``VACUUM``: the file shrinks.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from os import PathLike
from pathlib import Path
from typing import Any, TypeVar

from .._exceptions import CheckpointError, CheckpointIntegrityError
from ._store import BaseStore, Row, refs_json

__all__ = ["SqliteCheckpointStore"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    run_id TEXT NOT NULL,
    workflow TEXT NOT NULL,
    parent_id TEXT,
    superstep INTEGER NOT NULL,
    created_at REAL NOT NULL,
    status TEXT NOT NULL,
    pending_requests INTEGER NOT NULL,
    record BLOB NOT NULL,
    mac BLOB,
    refs TEXT NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS checkpoints_by_run ON checkpoints (run_id, seq);
CREATE INDEX IF NOT EXISTS checkpoints_by_workflow ON checkpoints (workflow, run_id);
CREATE TABLE IF NOT EXISTS blobs (
    hash TEXT PRIMARY KEY,
    data BLOB NOT NULL
) WITHOUT ROWID;
"""
_COLUMNS = (
    "id, run_id, workflow, parent_id, superstep, created_at, status, pending_requests, "
    "record, mac, refs, size"
)


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
        self._pool: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        # Test seam: called inside the write transaction, between statements.
        self._write_hook: Callable[[], None] | None = None

    # -- plumbing --------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="stepgraph-sqlite"
                )
            pool = self._pool
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA foreign_keys=ON")
                conn.executescript(_SCHEMA)
            except sqlite3.DatabaseError as exc:
                raise CheckpointError(
                    f"cannot open checkpoint database {str(self.path)!r}: {exc} "
                    "(is it a stepgraph SQLite checkpoint file?)"
                ) from exc
            self._conn = conn
        return self._conn

    def close(self) -> None:
        """Close the database and the worker thread (idempotent)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.submit(self._close_conn).result()
            pool.shutdown(wait=True)
        else:
            self._close_conn()

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

    def _write(self, rows: list[Row], blobs: Mapping[str, bytes]) -> None:
        def write(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "INSERT OR IGNORE INTO blobs (hash, data) VALUES (?, ?)", blobs.items()
                )
                if self._write_hook is not None:
                    self._write_hook()
                needed = {h for r in rows for h in r.refs} - set(blobs)
                if needed:
                    present = _present(db, needed)
                    if present != needed:
                        missing = sorted(needed - present)[:3]
                        raise CheckpointIntegrityError(
                            f"checkpoint references values the store does not hold: {missing}"
                        )
                db.executemany(
                    f"INSERT INTO checkpoints ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    [
                        (
                            r.id,
                            r.run_id,
                            r.workflow,
                            r.parent_id,
                            r.superstep,
                            r.created_at,
                            r.status,
                            r.pending_requests,
                            r.record,
                            r.mac,
                            refs_json(r.refs),
                            r.size,
                        )
                        for r in rows
                    ],
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        self._guard(write)

    def _read(self, checkpoint_id: str) -> Row | None:
        return self._one(f"SELECT {_COLUMNS} FROM checkpoints WHERE id = ?", (checkpoint_id,))

    def _read_latest(self, run_id: str) -> Row | None:
        return self._one(
            f"SELECT {_COLUMNS} FROM checkpoints WHERE run_id = ? ORDER BY seq DESC LIMIT 1",
            (run_id,),
        )

    def _one(self, sql: str, args: tuple[Any, ...]) -> Row | None:
        found = self._guard(lambda db: db.execute(sql, args).fetchone())
        return None if found is None else _row(found)

    def _read_blobs(self, hashes: Iterable[str]) -> dict[str, bytes]:
        wanted = list(dict.fromkeys(hashes))

        def read(db: sqlite3.Connection) -> dict[str, bytes]:
            out: dict[str, bytes] = {}
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
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
            clauses.append("workflow = ?")
            args.append(workflow)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT {_COLUMNS} FROM checkpoints {where} ORDER BY seq"
        return [_row(r) for r in self._guard(lambda db: db.execute(sql, args).fetchall())]

    def _remove(self, ids: list[str]) -> None:
        def remove(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("DELETE FROM checkpoints WHERE id = ?", [(i,) for i in ids])
                db.execute("CREATE TEMP TABLE IF NOT EXISTS keep (hash TEXT PRIMARY KEY)")
                db.execute("DELETE FROM keep")
                for (refs,) in db.execute("SELECT refs FROM checkpoints").fetchall():
                    db.executemany(
                        "INSERT OR IGNORE INTO keep (hash) VALUES (?)",
                        [(h,) for h in json.loads(refs)],
                    )
                db.execute("DELETE FROM blobs WHERE hash NOT IN (SELECT hash FROM keep)")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("VACUUM")  # in WAL mode VACUUM writes to the WAL: truncate it after
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

        self._guard(remove)

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check`` of the file ("ok" when sound); blocking."""
        with sqlite3.connect(self.path) as conn:
            result = conn.execute("PRAGMA integrity_check").fetchone()
        conn.close()
        return str(result[0])


def _present(db: sqlite3.Connection, hashes: set[str]) -> set[str]:
    found: set[str] = set()
    wanted = list(hashes)
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        marks = ",".join("?" * len(chunk))
        found.update(
            h for (h,) in db.execute(f"SELECT hash FROM blobs WHERE hash IN ({marks})", chunk)
        )
    return found


def _row(found: tuple[Any, ...]) -> Row:
    (
        cid,
        run_id,
        workflow,
        parent_id,
        superstep,
        created_at,
        status,
        pending,
        record,
        mac,
        refs,
        size,
    ) = found
    try:
        parsed_refs = tuple(json.loads(refs))
    except ValueError as exc:
        raise CheckpointIntegrityError(f"checkpoint {cid!r}: its value list is corrupt") from exc
    return Row(
        id=cid,
        run_id=run_id,
        workflow=workflow,
        parent_id=parent_id,
        superstep=superstep,
        created_at=created_at,
        status=status,
        pending_requests=pending,
        record=bytes(record),
        mac=None if mac is None else bytes(mac),
        refs=parsed_refs,
        size=size,
    )
