"""``SqliteCheckpointStore``: the embedded default — one file, WAL mode.

- Each ``save`` is one transaction: its checkpoints are stored whole or not
  at all, so a process killed mid-write (even ``kill -9``) leaves the last
  committed checkpoint intact.
- ``synchronous=NORMAL`` in WAL mode: a committed checkpoint survives the
  process crashing; an OS crash or power loss may lose the last few commits
  but never corrupts the file.
- All I/O runs on one worker thread owned by the store, never on the event
  loop; the store is not bound to any loop and may be used from several.
- Listing runs reads the ``runs`` index; deleting and pruning read only the
  run concerned and work in short transactions, so writers in other
  processes never wait long. Freed pages are reused; ``vacuum()`` shrinks
  the file.

The file layout is in ``_sqlite_layout``; deleting, in ``_sqlite_delete``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from os import PathLike
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from .._core import quoted
from .._exceptions import CheckpointError, CheckpointIntegrityError, CheckpointNotFoundError
from ._leases import alive
from ._model import Checkpoint, Row, RunInfo, RunQuery
from ._segments import (
    Segment,
    encode_segments,
    holding,
    newest_first,
    page_of,
    parse_segments,
    picked,
)
from ._sqlite_delete import CHUNK, MAX_PAUSE, Plan, drop_segments, forget_run, release
from ._sqlite_layout import (
    INSERT_RUN,
    RUN_COLUMNS,
    UPDATE_RUN,
    check_refs,
    chunks,
    ensure_layout,
    exists,
    info_of,
    infos_of,
    marks,
    migrate,
    record_answers,
)
from ._store import RUNNING_STATUSES, BaseStore, equal_to, where
from ._worker import Worker

__all__ = ["SqliteCheckpointStore"]

T = TypeVar("T")

# SQLite's primary result codes for a damaged file, and for another kind of file.
_CORRUPT, _NOT_A_DATABASE = 11, 26  # SQLITE_CORRUPT, SQLITE_NOTADB


class SqliteCheckpointStore(BaseStore):
    """Checkpoints in one SQLite file::

        store = SqliteCheckpointStore("runs.sqlite")            # or secret=b"..."
        result = await workflow.run(x, checkpoints=store)
        store.close()

    With ``secret``, each checkpoint is signed (HMAC-SHA256) and unsigned or
    altered ones are refused with ``CheckpointIntegrityError``.

    The file, or the tables in an empty file, are created on first use
    unless ``create=False`` (then an empty file is refused, unchanged); its
    folder must exist. ``readonly=True`` opens an existing file for reading only (a file
    the process may not write can still be listed and loaded).
    ``busy_timeout`` is how long a write waits for another process's write
    lock before failing with a ``CheckpointError``.
    """

    def __init__(
        self,
        path: str | PathLike[str],
        *,
        secret: str | bytes | None = None,
        busy_timeout: float = 5.0,
        create: bool = True,
        readonly: bool = False,
    ) -> None:
        super().__init__(secret=secret)
        if busy_timeout < 0:
            raise ValueError(f"busy_timeout must be >= 0 seconds, got {busy_timeout}")
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.readonly = readonly
        self.create = create and not readonly
        self.created = False  # whether opening the store created its file
        self._worker = Worker("stepgraph-sqlite", owner=self)
        self._conn: sqlite3.Connection | None = None
        # Test seam: called inside the write transaction, between statements.
        self._write_hook: Callable[[], None] | None = None

    # -- plumbing --------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._worker.run(fn, *args)

    async def _run_save(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._worker.run(fn, *args, to_the_end=True)

    async def _breathe(self, busy: float) -> None:
        # SQLite's busy handler retries a waiting writer on a backing-off
        # schedule (up to 100 ms between tries): a deletion that takes the
        # lock back at once would starve it. Leave the lock free as long as
        # it was held.
        await asyncio.sleep(min(busy, MAX_PAUSE))

    def _where(self) -> str:
        return f"checkpoint database {str(self.path)!r}"

    def open(self) -> None:
        """Open the file now (otherwise it opens on first use), so that a bad
        path or a file of another kind fails here; blocking."""
        self._worker.call(self._open_checked)

    def _open_checked(self) -> None:
        try:
            self._db()
        except sqlite3.Error as exc:
            raise self._failure(exc, "opening it") from exc

    def _db(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        if self.path.is_dir():
            raise CheckpointError(f"{str(self.path)!r} is a folder, not a checkpoint store file")
        exists = self.path.exists()
        if not exists:
            if not self.create:
                raise CheckpointError(f"no checkpoint store at {str(self.path)!r}: no such file")
            if not self.path.parent.is_dir():
                raise CheckpointError(
                    f"cannot create checkpoint store {str(self.path)!r}: the folder "
                    f"{str(self.path.parent)!r} does not exist"
                )
        conn = None
        try:
            conn = self._connect()
            ensure_layout(conn, self._where(), writable=not self.readonly, create=self.create)
            if not self.readonly:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
        except BaseException as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, sqlite3.Error):
                raise self._failure(exc, "opening it") from exc
            raise
        self._conn = conn
        self.created = not exists
        return conn

    def _connect(self) -> sqlite3.Connection:
        def connect(target: str | Path, uri: bool = False) -> sqlite3.Connection:
            return sqlite3.connect(
                target,
                uri=uri,
                isolation_level=None,
                check_same_thread=False,
                timeout=self.busy_timeout,
            )

        if not self.readonly:
            return connect(self.path)
        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
        conn = connect(uri, uri=True)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError:
            # A WAL file needs its shared-memory file, which a folder we may
            # not write cannot get: read the file as it stands instead.
            conn.close()
            return connect(f"{uri}&immutable=1", uri=True)

    def _failure(self, exc: sqlite3.Error, doing: str) -> CheckpointError:
        """A store error carrying SQLite's own: integrity errors only for a
        damaged file; a full disk, a lock held elsewhere, a read-only file
        are plain ``CheckpointError``s."""
        code = getattr(exc, "sqlite_errorcode", None)
        name = getattr(exc, "sqlite_errorname", None)
        text = f"{self._where()}: {doing} failed: {exc}" + (f" ({name})" if name else "")
        primary = None if code is None else code & 0xFF
        if primary == _NOT_A_DATABASE or (code is None and "not a database" in str(exc)):
            return CheckpointError(
                f"{text}; it is not a SQLite database (another kind of file, or one whose "
                "header is damaged), so not a stepgraph checkpoint store"
            )
        if primary == _CORRUPT or (code is None and "malformed" in str(exc)):
            return CheckpointIntegrityError(f"{text}; the file is damaged")
        if code is not None and code & 0xFF == 5:  # SQLITE_BUSY
            text += (
                f"; another connection held a write lock longer than busy_timeout="
                f"{self.busy_timeout:g} s"
            )
        return CheckpointError(text)

    def _guard(self, fn: Callable[[sqlite3.Connection], T], doing: str) -> T:
        try:
            return fn(self._db())
        except sqlite3.Error as exc:
            raise self._failure(exc, doing) from exc

    def _transaction(self, fn: Callable[[sqlite3.Connection], T], doing: str) -> T:
        """``fn`` in one write transaction; rolled back when it raises (unless
        SQLite already rolled back on its own, as after a full disk)."""

        def run(db: sqlite3.Connection) -> T:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(db)
                db.execute("COMMIT")
                return result
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

        return self._guard(run, doing)

    def close(self) -> None:
        """Close the database and end the worker thread (idempotent; the
        store opens both again if used after)."""
        self._worker.call(self._close_conn)
        self._worker.stop()

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- writing -------------------------------------------------------------------

    def _write(
        self,
        checkpoints: tuple[Checkpoint, ...],
        blob_bytes: list[int],
        blobs: Mapping[str, bytes],
    ) -> None:
        segments = encode_segments(checkpoints, blob_bytes, self._secret)

        def write(db: sqlite3.Connection) -> None:
            if blobs:
                db.executemany(
                    "INSERT OR IGNORE INTO blobs (hash, data) VALUES (?, ?)", blobs.items()
                )
            if self._write_hook is not None:
                self._write_hook()
            check_refs(db, checkpoints, blobs)
            for segment in segments:
                group = segment.checkpoints
                seq = db.execute(
                    "INSERT INTO segments (run_id, workflow, ids, size, data) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (segment.run_id, segment.workflow, segment.ids, segment.size, segment.data),
                ).lastrowid
                db.executemany(
                    "INSERT INTO checkpoint_ids (id, segment) VALUES (?, ?)",
                    [(cp.id, seq) for cp in group],
                )
                last = group[-1]
                values = (
                    last.workflow, last.signature, last.id, last.superstep, last.status,
                    last.pending_requests, len(group), segment.size, last.created_at,
                    segment.run_id,
                )  # fmt: skip
                if not db.execute(UPDATE_RUN, values).rowcount:
                    db.execute(INSERT_RUN, (*values, seq, group[0].created_at))
                refs = {h for cp in group for h in cp.refs}
                if refs:
                    db.executemany(
                        "INSERT OR IGNORE INTO run_blobs (run_id, hash) VALUES (?, ?)",
                        [(segment.run_id, h) for h in refs],
                    )
                requests = {r for cp in group for r in cp.request_ids}
                if requests:
                    db.executemany(
                        "INSERT OR IGNORE INTO requests (request_id, run_id) VALUES (?, ?)",
                        [(r, segment.run_id) for r in requests],
                    )
                answered = [(segment.run_id, r, cp.id) for cp in group for r in cp.answered]
                if answered:
                    record_answers(db, answered)
                taken = next((cp.holder for cp in group if cp.holder and not cp.release), None)
                given = next((cp.holder for cp in group if cp.holder and cp.release), None)
                if taken is not None and given != taken:  # (both in one write: nothing to do)
                    db.execute(
                        "INSERT OR REPLACE INTO leases (run_id, holder) VALUES (?, ?)",
                        (segment.run_id, taken),
                    )
                elif given is not None and taken is None:
                    db.execute(
                        "DELETE FROM leases WHERE run_id = ? AND holder = ?",
                        (segment.run_id, given),
                    )
                asked = db.execute(
                    "SELECT requested_at FROM cancels WHERE run_id = ?", (segment.run_id,)
                ).fetchone()
                if asked is not None:
                    self._cancels[segment.run_id] = asked[0]

        try:
            self._transaction(write, "writing checkpoints")
        except CheckpointError as error:
            if not isinstance(error.__cause__, sqlite3.IntegrityError):
                raise
            # Rolled back: what is stored now is what was stored before.
            ids = [cp.id for cp in checkpoints]

            def stored(db: sqlite3.Connection) -> list[str]:
                return [i for i in ids if exists(db, i)]

            taken = self._guard(stored, "reading checkpoint ids")
            taken += [i for n, i in enumerate(ids) if i in ids[:n]]  # twice in this save
            raise CheckpointIntegrityError(
                f"checkpoint ids already stored: {taken[:3]}" if taken else str(error)
            ) from error.__cause__

    def _set_status(self, run_id: str, status: str, error: str | None) -> None:
        def record(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE runs SET status = ?, error = ?, updated_at = ? WHERE run_id = ?",
                (status, error, time.time(), run_id),
            )
            db.execute("DELETE FROM cancels WHERE run_id = ?", (run_id,))

        self._transaction(record, "recording a run's status")
        self._cancels.pop(run_id, None)

    def _request_cancel(self, run_id: str, at: float) -> bool:
        def ask(db: sqlite3.Connection) -> bool:
            found = db.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if found is None or found[0] not in RUNNING_STATUSES:
                return False
            db.execute(
                "INSERT OR REPLACE INTO cancels (run_id, requested_at) VALUES (?, ?)",
                (run_id, at),
            )
            return True

        return self._transaction(ask, "asking a run to stop")

    # -- reading -------------------------------------------------------------------

    def _read(self, checkpoint_id: str) -> Row | None:
        found = self._guard(
            lambda db: db.execute(
                "SELECT s.data FROM checkpoint_ids i JOIN segments s ON s.seq = i.segment "
                "WHERE i.id = ?",
                (checkpoint_id,),
            ).fetchone(),
            "reading a checkpoint",
        )
        if found is None:
            return None
        return Segment(found[0], f"of checkpoint {checkpoint_id!r}").find(checkpoint_id)

    def _read_many(self, ids: list[str]) -> dict[str, Row]:
        def read(db: sqlite3.Connection) -> dict[str, Row]:
            out: dict[str, Row] = {}
            for part in chunks(ids):
                sql = holding("segments", "checkpoint_ids", "?", part)
                out.update(picked(db.execute(sql, part).fetchall(), part))
            return out

        return self._guard(read, "reading checkpoints")

    def _read_latest(self, run_id: str) -> Row | None:
        found = self._guard(
            lambda db: db.execute(
                "SELECT data FROM segments WHERE run_id = ? ORDER BY seq DESC LIMIT 1", (run_id,)
            ).fetchone(),
            "reading a run's latest checkpoint",
        )
        if found is None:
            return None
        return Segment(found[0], f"of run {run_id!r}").last()

    def _read_blobs(self, hashes: Iterable[str]) -> dict[str, bytes]:
        wanted = list(dict.fromkeys(hashes))

        def read(db: sqlite3.Connection) -> dict[str, bytes]:
            out: dict[str, bytes] = {}
            for chunk in chunks(wanted):
                for h, data in db.execute(
                    f"SELECT hash, data FROM blobs WHERE hash IN ({marks(chunk)})", chunk
                ):
                    out[h] = bytes(data)
            return out

        return self._guard(read, "reading stored values")

    def _rows(self, run_id: str | None, workflow: str | None) -> tuple[list[Row], list[str]]:
        clauses, args = equal_to((("run_id", run_id), ("workflow", workflow)), "?")
        sql = f"SELECT run_id, ids, data FROM segments {where(clauses)} ORDER BY seq"
        records = self._guard(lambda db: db.execute(sql, args).fetchall(), "listing checkpoints")
        return parse_segments(records)

    def _rows_page(
        self, run_id: str, before: int | None, count: int
    ) -> tuple[list[Row], list[str], int | None]:
        sql, args = newest_first("segments", "?", run_id, before, count)
        found = self._guard(lambda db: db.execute(sql, args).fetchall(), "listing checkpoints")
        return page_of(found, count)

    def _runs(self, query: RunQuery) -> tuple[list[RunInfo], list[str]]:
        clauses, args = equal_to(query.equalities(), "?")
        before, limit = query.before, query.limit

        def select(db: sqlite3.Connection) -> tuple[list[RunInfo], list[str]]:
            if before is not None:
                found = db.execute("SELECT seq FROM runs WHERE run_id = ?", (before,)).fetchone()
                if found is None:
                    raise CheckpointNotFoundError(
                        f"no run {quoted(before)} in this store (before=)"
                    )
                clauses.append("seq < ?")
                args.append(found[0])
            tail = "" if limit is None else f" LIMIT {int(limit)}"
            sql = f"SELECT {RUN_COLUMNS} FROM runs {where(clauses)} ORDER BY seq DESC{tail}"
            return infos_of(db.execute(sql, args))

        return self._guard(select, "listing runs")

    def _run_of_request(self, request_id: str) -> RunInfo | None:
        found = self._guard(
            lambda db: db.execute(
                f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = "
                "(SELECT run_id FROM requests WHERE request_id = ?)",
                (request_id,),
            ).fetchone(),
            "finding a request",
        )
        return None if found is None else info_of(found)

    def _run_info(self, run_id: str) -> RunInfo | None:
        found = self._guard(
            lambda db: db.execute(
                f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone(),
            "reading a run",
        )
        return None if found is None else info_of(found)

    def _run_ids(self, run_id: str | None, more_than: int) -> dict[str, list[str]]:
        def query(db: sqlite3.Connection) -> dict[str, list[str]]:
            sql = "SELECT run_id FROM runs WHERE checkpoints > ?"
            args: list[Any] = [more_than]
            if run_id is not None:
                sql += " AND run_id = ?"
                args.append(run_id)
            out: dict[str, list[str]] = {}
            for (run,) in db.execute(sql, args).fetchall():
                found = db.execute(
                    "SELECT ids FROM segments WHERE run_id = ? ORDER BY seq", (run,)
                ).fetchall()
                out[run] = [i for (ids,) in found for i in ids.split(",")]
            return out

        return self._guard(query, "listing checkpoints to prune")

    # -- deleting --------------------------------------------------------------------

    def _remove(self, ids: list[str]) -> None:
        doomed = set(ids)

        def segments_of(db: sqlite3.Connection) -> list[tuple[int, str, str]]:
            found: list[tuple[int, str, str]] = []
            for chunk in chunks(sorted(doomed)):
                found += db.execute(
                    "SELECT DISTINCT s.seq, s.run_id, s.ids FROM checkpoint_ids i JOIN segments s "
                    f"ON s.seq = i.segment WHERE i.id IN ({marks(chunk)})",
                    chunk,
                ).fetchall()
            return sorted(found)

        by_run: dict[str, list[tuple[int, str]]] = {}
        for seq, run, members in self._guard(segments_of, "finding checkpoints to delete"):
            by_run.setdefault(run, []).append((seq, members))
        for run, segments in by_run.items():
            self._remove_from_run(run, doomed, segments)

    def _remove_from_run(
        self, run_id: str, doomed: set[str], segments: list[tuple[int, str]]
    ) -> None:
        """Delete checkpoints of one run. The work that reads the run (which
        values the rest of it references, the rewritten segments) is done
        before taking the write lock, so writers wait only for short
        transactions, however long the run."""
        whole = [seq for seq, members in segments if doomed.issuperset(members.split(","))]
        partial = [seq for seq, members in segments if seq not in set(whole)]
        plan = self._guard(
            lambda db: Plan.read(db, run_id, doomed, set(whole), partial), "reading a run"
        )
        for start in range(0, len(whole), CHUNK):
            chunk = whole[start : start + CHUNK]

            def drop(db: sqlite3.Connection, chunk: list[int] = chunk) -> None:
                count, size = drop_segments(db, chunk)
                db.execute(
                    "UPDATE runs SET checkpoints = checkpoints - ?, size = size - ? "
                    "WHERE run_id = ?",
                    (count, size, run_id),
                )

            began = time.perf_counter()
            self._transaction(drop, "deleting checkpoints")
            time.sleep(min(time.perf_counter() - began, MAX_PAUSE))
        self._transaction(lambda db: plan.finish(db, doomed), "deleting checkpoints")

    def _remove_run(self, run_id: str) -> int:
        removed = 0
        while True:  # oldest segments first, a chunk per transaction, pausing between

            def chunk(db: sqlite3.Connection) -> int:
                found = db.execute(
                    "SELECT seq, ids FROM segments WHERE run_id = ? ORDER BY seq LIMIT ?",
                    (run_id, CHUNK),
                ).fetchall()
                drop_segments(db, [seq for seq, _ in found])
                return sum(len(ids.split(",")) for _, ids in found)

            started = time.perf_counter()
            count = self._transaction(chunk, "deleting a run")
            removed += count
            if not count:
                break
            time.sleep(min(time.perf_counter() - started, MAX_PAUSE))

        def forget(db: sqlite3.Connection) -> bool:
            release(db, run_id, None)
            return forget_run(db, run_id)

        self._transaction(forget, "deleting a run")
        return removed

    def _cancel_mark(self, run_id: str) -> float | None:
        found = self._guard(
            lambda db: db.execute(
                "SELECT requested_at FROM cancels WHERE run_id = ?", (run_id,)
            ).fetchone(),
            "reading a cancel mark",
        )
        return None if found is None else float(found[0])

    def _answers(self, run_id: str, request_ids: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}

        def read(db: sqlite3.Connection) -> None:
            for chunk in chunks(request_ids):
                found.update(
                    db.execute(
                        f"SELECT request_id, checkpoint_id FROM answers WHERE run_id = ? "
                        f"AND request_id IN ({marks(chunk)})",
                        (run_id, *chunk),
                    ).fetchall()
                )

        self._guard(read, "reading answers")
        return found

    def _lease(self, run_id: str, holder: str) -> str | None:
        def take(db: sqlite3.Connection) -> str | None:
            busy = _live_holder(db, run_id)
            if busy is not None and busy != holder:
                return busy
            db.execute(
                "INSERT OR REPLACE INTO leases (run_id, holder) VALUES (?, ?)", (run_id, holder)
            )
            return None

        return self._transaction(take, "taking a run")

    def _holder(self, run_id: str) -> str | None:
        return self._guard(lambda db: _live_holder(db, run_id), "reading who holds a run")

    def _release_lease(self, run_id: str, holder: str) -> None:
        def give(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM leases WHERE run_id = ? AND holder = ?", (run_id, holder))

        self._transaction(give, "giving a run back")

    def migrate(self) -> tuple[int, int]:
        """Bring a file written by an earlier stepgraph to this version's
        layout (blocking; the one place a layout changes): (layout before,
        layout after)."""

        def run() -> tuple[int, int]:
            conn = self._connect()
            try:
                return migrate(conn, self._where())
            except sqlite3.Error as exc:
                raise self._failure(exc, "migrating it") from exc
            finally:
                conn.close()

        if not self.path.is_file():
            raise CheckpointError(f"no checkpoint store at {str(self.path)!r}: no such file")
        return self._worker.call(run)

    def vacuum(self) -> None:
        """Rebuild the file without its free pages and truncate the WAL
        (blocking; writers wait while it runs)."""

        def vacuum(db: sqlite3.Connection) -> None:
            db.execute("VACUUM")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

        self._worker.call(self._guard, vacuum, "vacuuming")

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check`` of the file ("ok" when sound); blocking."""
        with sqlite3.connect(self.path) as conn:
            result = conn.execute("PRAGMA integrity_check").fetchone()
        conn.close()
        return str(result[0])


def _live_holder(db: sqlite3.Connection, run_id: str) -> str | None:
    """The run's lease holder, if its process is alive (a lease of a process
    that ended holds nothing)."""
    row = db.execute("SELECT holder FROM leases WHERE run_id = ?", (run_id,)).fetchone()
    return str(row[0]) if row is not None and alive(str(row[0])) else None
