"""``PostgresCheckpointStore``: checkpoints in a PostgreSQL database, shared
by every process that connects to it.

- Each ``save`` is one transaction: its checkpoints are stored whole or not
  at all. Values are content-addressed and stored once
  (``ON CONFLICT DO NOTHING``); a save locks the values it references
  (``FOR KEY SHARE``) so a concurrent deletion cannot drop one under it.
- Every blocking call runs on one of the store's threads (``_worker``, as
  many as the pool has connections; saves on threads of their own,
  ``_saver``, as many again: a save may wait for a server that is away, and
  the other calls must not wait behind it) over psycopg's *sync*
  ``ConnectionPool``. Not the ``AsyncConnectionPool``: its connections and
  workers belong to the event loop that opened them, and the project's rule
  is "no loop-bound state" — a store must keep working across successive
  ``asyncio.run`` calls, as the SQLite store does.
- A run's lease is a session-level advisory lock (``_postgres_leases``):
  when a process dies, its session ends and Postgres frees the lock at once.
- An answer is recorded under a primary key in the save's transaction: of
  two processes answering one request at once, exactly one commits.
- Deleting and pruning work in short transactions with pauses between them.

The tables, the layout check and the save statement are in
``_postgres_layout``; deleting, in ``_postgres_delete``; leases, in
``_postgres_leases``; sessions the server ended while idle (a restart),
in ``_postgres_sessions``; how it connects and names its database, in
``_postgres_connect``. psycopg is imported when a store is created:
``pip install 'stepgraph[postgres]'``.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

from .._core import quoted
from .._exceptions import (
    CheckpointEncodeError,
    CheckpointError,
    CheckpointIntegrityError,
    CheckpointLeaseLostError,
    CheckpointNotFoundError,
)
from ._leases import holding
from ._model import Checkpoint, Row, RunInfo, RunQuery
from ._postgres_connect import (
    check_pool,
    database_named,
    one_line,
    own_conninfo,
    psycopg_modules,
    redacted,
)
from ._postgres_delete import (
    CHUNK,
    MAX_PAUSE,
    Plan,
    drop_oldest,
    drop_segments,
    drop_unreferenced,
    forget_run,
    lock_run,
)
from ._postgres_layout import (
    SAVE_SEGMENT,
    clock_skew,
    ensure_layout,
    has_nul,
    insert_values,
    migrate,
    record_answers,
    segment_write,
    unwritable,
)
from ._postgres_leases import Leases, SavesUnderWay, held_by
from ._postgres_sessions import ServerAway, live_connection
from ._segments import (
    Segment,
    encode_segments,
    newest_first,
    page_of,
    parse_segments,
    picked,
)
from ._sqlite_layout import RUN_COLUMNS, info_of, infos_of
from ._store import RUNNING_STATUSES, BaseStore, equal_to, where
from ._worker import Worker

__all__ = ["PostgresCheckpointStore"]

T = TypeVar("T")

_RETRIES = 3  # tries of a save that Postgres aborted to break a deadlock
_AWAY_PAUSE = 0.25  # between tries of a save while the server takes no connections


class PostgresCheckpointStore(BaseStore):
    """Checkpoints in a PostgreSQL database::

        store = PostgresCheckpointStore("postgresql://app@db/app")   # or secret=b"..."
        result = await workflow.run(x, checkpoints=store)
        store.close()

    The tables are created on first use (see ``_postgres_layout``). With
    ``secret``, each checkpoint is signed (HMAC-SHA256) and unsigned or
    altered ones are refused with ``CheckpointIntegrityError``. ``pool``
    passes a ``psycopg_pool.ConnectionPool`` of your own instead of ``dsn``
    (``close`` leaves that pool open; an ``AsyncConnectionPool`` is
    refused); otherwise the store
    opens one of ``min_size``..``max_size`` connections on first use. The
    leases of all the runs it holds take one more connection. A
    save while the server takes no connections (a restart, a failover)
    waits for it up to ``reconnect_timeout`` seconds before failing the run;
    other calls fail at once. ``create=False`` refuses a database without
    stepgraph's tables rather than creating them (for reading: a mistyped
    database name is an error, not a new store).
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        pool: Any = None,
        secret: str | bytes | None = None,
        min_size: int = 1,
        max_size: int = 8,
        reconnect_timeout: float = 10.0,
        create: bool = True,
    ) -> None:
        super().__init__(secret=secret)
        self._pg, self._pg_pool = psycopg_modules()
        if pool is None and not dsn:
            raise ValueError("PostgresCheckpointStore needs a dsn or a pool")
        if pool is not None:
            check_pool(pool, dsn, self._pg_pool)
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ValueError(f"need 0 <= min_size <= max_size >= 1, got {min_size}, {max_size}")
        self.dsn: str = dsn if dsn else str(pool.conninfo)
        self.min_size, self.max_size = min_size, max_size
        if not reconnect_timeout >= 0:
            raise ValueError(f"reconnect_timeout must be >= 0 seconds, got {reconnect_timeout}")
        self.reconnect_timeout = reconnect_timeout
        self._given_pool = pool
        self._pool: Any = pool
        self.create = create  # whether a database without our tables gets them
        self._ready = False  # whether the layout was checked (tables created)
        # The server's clock minus this machine's (measured when the layout
        # is checked): cancel marks are stamped by the server's clock, so a
        # run and a canceller on machines whose clocks differ agree on them.
        self._skew = 0.0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._saving = SavesUnderWay()
        self._leases = Leases(self._pg.Error)  # (no reference back: no cycle)
        # Threads for the blocking calls: as many as pooled connections.
        self._worker = Worker("stepgraph-postgres", owner=self, threads=max_size)
        # Saves on threads of their own: one waiting for a server that is
        # away (``reconnect_timeout``) holds its thread, and a call that
        # lists or reads must fail at once then, not wait behind the saves.
        self._saver = Worker("stepgraph-postgres-saves", owner=self, threads=max_size)

    # -- plumbing --------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._worker.run(fn, *args)

    async def _run_save(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._saver.run(fn, *args, to_the_end=True)

    async def _breathe(self, busy: float) -> None:
        # Saves of the run being deleted wait for its index row: leave it
        # free about as long as it was held.
        await asyncio.sleep(min(busy, MAX_PAUSE))

    def where(self) -> str:
        """The database, for messages: host, port and name, never a password."""
        return database_named(self._pg, self.dsn)

    def open(self) -> None:
        """Connect now and check (or create) the tables, so that a bad DSN or a
        database of another layout fails here; blocking."""
        with self._connection("opening it"):
            pass

    def check_writable(self) -> None:
        """Refuse, with a ``CheckpointError`` naming the database and the
        role, a database whose tables the store's role may not write (one
        that only reads: each run would fail at its first save); blocking.
        The command line asks it for each command that writes."""
        with self._connection("checking what its role may write") as conn:
            role, missing = unwritable(conn)
        if missing:
            raise CheckpointError(
                f"{self.where()}: role {role!r} may not write its tables (no "
                f"{', '.join(missing)}): grant it INSERT, UPDATE and DELETE on the "
                "stepgraph_* tables, or connect as another role"
            )

    def _connections(self) -> Any:
        with self._lock:
            if self._pool is None:
                self._pool = self._pg_pool.ConnectionPool(
                    self._conninfo(),
                    min_size=self.min_size,
                    max_size=self.max_size,
                    kwargs={"autocommit": True},
                    name="stepgraph-checkpoints",
                    open=True,
                )
                # A store dropped without ``close`` closes its pool where it
                # is dropped (or at exit), not where the pool's last worker
                # lets go of it (a worker cannot wait for itself to end).
                weakref.finalize(self, self._pool.close)
            return self._pool

    @contextmanager
    def _connection(self, doing: str) -> Iterator[Any]:
        """A pooled connection, the tables checked; psycopg's errors become
        ``CheckpointError``s naming the database and what was being done."""
        try:
            if not self._ready:
                # On a connection of its own: a wrong DSN fails at once with
                # the server's reason, not after the pool's timeout.
                with self._pg.connect(self._conninfo(), autocommit=True) as conn:
                    ensure_layout(conn, self.where(), create=self.create)
                    self._skew = clock_skew(conn)
                self._ready = True
            with live_connection(self._connections(), self._direct) as conn:
                yield conn
        except ServerAway as away:
            raise self._failure(away.error, doing) from away
        except self._pg.Error as exc:
            raise self._failure(exc, doing) from exc

    def _direct(self) -> Any:
        """A connection outside the pool, for one call the pool had none
        for (as the pool's: autocommit)."""
        return self._pg.connect(self._conninfo(), autocommit=True)

    def _failure(self, exc: BaseException, doing: str) -> CheckpointError:
        reason = one_line(str(exc))  # (libpq's and the server's messages span lines)
        return CheckpointError(f"{self.where()}: {doing} failed: {self._redacted(reason)}")

    def _redacted(self, text: str) -> str:
        return redacted(self._pg, self.dsn, text)

    def _fetch(self, sql: str, args: Any, doing: str) -> list[tuple[Any, ...]]:
        if has_nul(args):
            return []  # (no stored text holds one: nothing to find)
        with self._connection(doing) as conn:
            return list(conn.execute(sql, args).fetchall())

    def _transaction(self, fn: Callable[[Any], T], doing: str, pipelined: bool = False) -> T:
        """``fn`` in one transaction; ``pipelined``: the transaction in one
        pipeline — BEGIN, ``fn``'s statements and COMMIT sent without waiting
        for each one's answer (a round trip only where ``fn`` reads a result)."""
        with self._connection(doing) as conn, conn.cursor() as cur:
            if not pipelined:
                with conn.transaction():
                    return fn(cur)
            try:
                with conn.pipeline():
                    cur.execute("BEGIN")
                    result = fn(cur)
                    cur.execute("COMMIT")
            except BaseException:
                if conn.info.transaction_status != self._pg.pq.TransactionStatus.IDLE:
                    with suppress(self._pg.Error):  # (a broken connection: the pool drops it)
                        conn.execute("ROLLBACK")
                raise
            return result

    def stop_waiting(self) -> None:
        """End now any save's wait for a server that takes no connections
        (see ``reconnect_timeout``), and wait no more until ``close`` — for
        a process stopping its runs (``stepgraph serve`` does)."""
        self._closing.set()

    def close(self) -> None:
        """Give back every lease this store holds and close its connections
        (a pool passed in stays open); the store connects again if used after."""
        self._closing.set()  # (a save waiting for the server gives up now)
        try:
            self._saver.stop()  # (the calls under way end first)
            self._worker.stop()
        finally:
            self._closing.clear()
        self._leases.close()
        with self._lock:
            pool = self._pool if self._given_pool is None else None
            self._pool = self._given_pool
        if pool is not None:
            pool.close()

    # -- writing -------------------------------------------------------------------

    def _write(
        self,
        checkpoints: tuple[Checkpoint, ...],
        blob_bytes: list[int],
        blobs: Mapping[str, bytes],
    ) -> None:
        """Save; while the server takes no connections (a restart), wait for
        it up to ``reconnect_timeout`` seconds — nothing was sent, so the
        save is tried again whole."""
        deadline = time.monotonic() + self.reconnect_timeout
        with self._saving.of({cp.run_id for cp in checkpoints}):
            while True:
                try:
                    self._write_now(checkpoints, blob_bytes, blobs)
                    return
                except CheckpointError as error:
                    if not isinstance(error.__cause__, ServerAway) or time.monotonic() >= deadline:
                        raise
                    if self._closing.wait(_AWAY_PAUSE):
                        raise  # (the store is being closed, or told to stop waiting)

    def _write_now(
        self,
        checkpoints: tuple[Checkpoint, ...],
        blob_bytes: list[int],
        blobs: Mapping[str, bytes],
    ) -> None:
        for name in {cp.workflow for cp in checkpoints if "\x00" in cp.workflow}:
            # (SQLite and memory stores keep it: refused here by name, rather
            # than with the driver's error, which reads as a store gone wrong)
            raise CheckpointEncodeError(
                f"{self.where()}: the workflow name {name!r} holds a NUL character, which "
                "PostgreSQL cannot store in text: rename the workflow (nothing was written)"
            )
        segments = encode_segments(checkpoints, blob_bytes, self._secret)
        # The leases this save takes (a new run's first save) and gives back
        # (a run's last): per run, both in one save cancel out.
        taking: dict[str, str] = {}
        giving: dict[str, str] = {}
        for cp in checkpoints:
            if cp.holder:
                (giving if cp.release else taking).setdefault(cp.run_id, cp.holder)
        for run_id in [r for r in taking if giving.get(r) == taking[r]]:
            del taking[run_id], giving[run_id]
        # Taken before the transaction (on the leases' session); given back
        # once the save has committed.
        taken: list[tuple[str, str]] = []
        try:
            runs = {cp.run_id: None for cp in checkpoints}
            for run_id in self._leases.forfeited(runs):
                raise CheckpointLeaseLostError(
                    f"{self.where()}: run {run_id!r} was taken over by another process after "
                    "this one lost its lease: nothing more of it is written from here"
                )
            for run_id, holder in self._leases.lost(runs):
                self._take_again(run_id, holder, checkpoints)
            for run_id, holder in taking.items():
                if self._leases.holds(run_id, holder):
                    continue  # (taken already: not this save's to undo)
                busy = self._lease(run_id, holder)
                if busy is not None:
                    raise CheckpointError(
                        f"{self.where()}: run {run_id!r} is held by {busy}; a new run's "
                        "first save cannot take it"
                    )
                taken.append((run_id, holder))
            self._write_once(checkpoints, segments, blobs)
        except BaseException:
            for run_id, holder in taken:  # the save did not happen: nor did the taking
                self._leases.give_back(run_id, holder)
            raise
        for run_id, holder in giving.items():
            self._leases.give_back(run_id, holder)

    def _take_again(self, run_id: str, holder: str, checkpoints: tuple[Checkpoint, ...]) -> None:
        """Take back a run whose lease's session the server ended (its lock
        went with it) — refused if another process took the run meanwhile,
        or wrote to it (or the server lost its latest writes): the run's
        newest stored checkpoint must be the parent of this save's first."""
        lost = (
            f"{self.where()}: run {run_id!r} lost its lease (the server ended this "
            "process's session)"
        )
        busy = self._lease(
            run_id, holder, f"taking back run {run_id!r} (its lease's session ended)"
        )
        if busy is not None:
            self._leases.forfeit(run_id)
            raise CheckpointLeaseLostError(
                f"{lost} and {holding(busy)} holds it now: this process stops writing it"
            )
        parent = next(cp.parent_id for cp in checkpoints if cp.run_id == run_id)
        try:
            found = self._fetch(
                "SELECT last_checkpoint FROM stepgraph_runs WHERE run_id = %s",
                (run_id,),
                "taking a run",
            )
        except BaseException:
            self._leases.lose(run_id)  # (taken back only once checked: the next try checks)
            raise
        newest = found[0][0] if found else None
        if newest is None:  # (it said "its newest stored checkpoint is None")
            self._leases.forfeit(run_id)
            raise CheckpointLeaseLostError(
                f"{lost}, and none of its checkpoints is stored any more (the newest this "
                f"process wrote was {parent}): it was deleted meanwhile, or the server lost "
                "its writes in a crash; this process stops writing it"
            )
        if newest != parent:
            self._leases.forfeit(run_id)
            raise CheckpointLeaseLostError(
                f"{lost}, and its newest stored checkpoint is {newest}, not {parent}: another "
                "process continued it meanwhile, or the server lost its latest writes in a "
                "crash; this process stops writing it"
            )

    def _write_once(
        self, checkpoints: tuple[Checkpoint, ...], segments: list[Any], blobs: Mapping[str, bytes]
    ) -> None:
        errors = self._pg.errors
        writes = [segment_write(segment) for segment in segments]
        needed = sorted({h for cp in checkpoints for h in cp.refs})
        # One segment, no new values, no answers: one statement, atomic on
        # its own — a single round trip.
        alone = len(writes) == 1 and not blobs and not any(cp.answered for cp in checkpoints)
        for attempt in range(_RETRIES):
            try:
                if alone:
                    with self._connection("writing checkpoints") as conn:
                        marks = [self._save_segment(conn.cursor(), writes[0], needed)]
                else:
                    marks = self._transaction(
                        lambda cur: self._save(cur, checkpoints, writes, needed, blobs),
                        "writing checkpoints",
                        pipelined=True,
                    )
                break
            except CheckpointError as error:
                cause = error.__cause__
                if isinstance(cause, errors.DeadlockDetected) and attempt < _RETRIES - 1:
                    continue  # Postgres rolled this save back to let another go on
                if isinstance(cause, errors.UniqueViolation):
                    raise self._ids_taken(checkpoints, error) from cause
                raise
        for run_id, asked in marks:
            if asked is not None:
                self._cancels[run_id] = asked - self._skew  # (on this machine's clock)

    def _save(
        self,
        cur: Any,
        checkpoints: tuple[Checkpoint, ...],
        writes: list[dict[str, Any]],
        needed: list[str],
        blobs: Mapping[str, bytes],
    ) -> list[tuple[str, float | None]]:
        if blobs:
            insert_values(cur, blobs)
        answered = [(cp.run_id, r, cp.id) for cp in checkpoints for r in cp.answered]
        if answered:
            record_answers(cur, answered)
        # The first segment locks every value the save references, in one go.
        return [
            self._save_segment(cur, write, needed if n == 0 else [], blobs)
            for n, write in enumerate(writes)
        ]

    def _save_segment(
        self,
        cur: Any,
        write: dict[str, Any],
        locks: list[str],
        blobs: Mapping[str, bytes] | None = None,
    ) -> tuple[str, float | None]:
        """One segment's statement: (its run, when a cancel was asked). A
        value it brings may have been deleted just after its insert found it
        stored (by the deletion of another run that used it): it is put back
        and the statement runs again."""
        for _ in range(_RETRIES):
            cur.execute(SAVE_SEGMENT, {**write, "locks": locks})
            found = cur.fetchone()
            if found is not None:
                return write["run_id"], found[0]
            # A value it references is missing: nothing was written.
            cur.execute("SELECT hash FROM stepgraph_blobs WHERE hash = ANY(%s)", (locks,))
            missing = sorted(set(locks) - {h for (h,) in cur.fetchall()})
            if not blobs or not missing or any(h not in blobs for h in missing):
                break
            insert_values(cur, {h: blobs[h] for h in missing})
        raise CheckpointIntegrityError(
            f"checkpoint references values the store does not hold: {missing[:3]}"
        )

    def _ids_taken(
        self, checkpoints: tuple[Checkpoint, ...], error: CheckpointError
    ) -> CheckpointIntegrityError:
        """The error for a save refused by a checkpoint id's key (rolled
        back: what is stored now is what was stored before)."""
        ids = [cp.id for cp in checkpoints]
        found = self._fetch(
            "SELECT id FROM stepgraph_checkpoint_ids WHERE id = ANY(%s)", (ids,), "reading ids"
        )
        stored = {i for (i,) in found}
        taken = [i for i in ids if i in stored]
        taken += [i for n, i in enumerate(ids) if i in ids[:n]]  # twice in this save
        return CheckpointIntegrityError(
            f"checkpoint ids already stored: {taken[:3]}" if taken else str(error)
        )

    def _set_status(self, run_id: str, status: str, error: str | None) -> None:
        if has_nul([run_id]):  # (no such run)
            return
        self._saving.wait(run_id)

        def record(cur: Any) -> None:
            cur.execute(
                "UPDATE stepgraph_runs SET status = %s, error = %s, updated_at = %s "
                "WHERE run_id = %s",
                (status, error, time.time(), run_id),
            )
            cur.execute("DELETE FROM stepgraph_cancels WHERE run_id = %s", (run_id,))

        self._transaction(record, "recording a run's status")
        self._cancels.pop(run_id, None)

    def _request_cancel(self, run_id: str, at: float) -> bool:
        if has_nul([run_id]):  # (no such run)
            return False

        # (stamped by the server's clock, not ``at``: see ``_skew``)
        def ask(cur: Any) -> bool:
            # Locked: a save changing the run's status waits, or is waited for.
            cur.execute("SELECT status FROM stepgraph_runs WHERE run_id = %s FOR UPDATE", (run_id,))
            found = cur.fetchone()
            if found is None or found[0] not in RUNNING_STATUSES:
                return False
            cur.execute(
                "INSERT INTO stepgraph_cancels (run_id, requested_at) "
                "VALUES (%s, extract(epoch FROM clock_timestamp())) "
                "ON CONFLICT (run_id) DO UPDATE SET requested_at = EXCLUDED.requested_at",
                (run_id,),
            )
            return True

        return self._transaction(ask, "asking a run to stop")

    def _cancel_mark(self, run_id: str) -> float | None:
        found = self._fetch(
            "SELECT requested_at FROM stepgraph_cancels WHERE run_id = %s",
            (run_id,),
            "reading a cancel mark",
        )
        return None if not found else float(found[0][0]) - self._skew

    # -- reading -------------------------------------------------------------------

    def _read(self, checkpoint_id: str) -> Row | None:
        found = self._fetch(
            "SELECT s.data FROM stepgraph_checkpoint_ids i JOIN stepgraph_segments s "
            "ON s.seq = i.segment WHERE i.id = %s",
            (checkpoint_id,),
            "reading a checkpoint",
        )
        if not found:
            return None
        return Segment(found[0][0], f"of checkpoint {checkpoint_id!r}").find(checkpoint_id)

    def _read_many(self, ids: list[str]) -> dict[str, Row]:
        ids = [cid for cid in ids if not has_nul([cid])]  # (no such checkpoint)
        if not ids:
            return {}
        sql = (
            "SELECT run_id, data FROM stepgraph_segments WHERE seq IN "
            "(SELECT segment FROM stepgraph_checkpoint_ids WHERE id = ANY(%s))"
        )
        return picked(self._fetch(sql, (ids,), "reading checkpoints"), ids)

    def _read_latest(self, run_id: str) -> Row | None:
        found = self._fetch(
            "SELECT data FROM stepgraph_segments WHERE run_id = %s ORDER BY seq DESC LIMIT 1",
            (run_id,),
            "reading a run's latest checkpoint",
        )
        if not found:
            return None
        return Segment(found[0][0], f"of run {run_id!r}").last()

    def _read_blobs(self, hashes: Iterable[str]) -> dict[str, bytes]:
        wanted = list(dict.fromkeys(hashes))
        if not wanted:
            return {}
        found = self._fetch(
            "SELECT hash, data FROM stepgraph_blobs WHERE hash = ANY(%s)",
            (wanted,),
            "reading stored values",
        )
        return {h: bytes(data) for h, data in found}

    def _rows(self, run_id: str | None, workflow: str | None) -> tuple[list[Row], list[str]]:
        clauses, args = equal_to((("run_id", run_id), ("workflow", workflow)), "%s")
        sql = f"SELECT run_id, ids, data FROM stepgraph_segments {where(clauses)} ORDER BY seq"
        return parse_segments(self._fetch(sql, args, "listing checkpoints"))

    def _rows_page(
        self, run_id: str, before: int | None, count: int
    ) -> tuple[list[Row], list[str], int | None]:
        if has_nul([run_id]):  # (no such run)
            return [], [], None
        sql, args = newest_first("stepgraph_segments", "%s", run_id, before, count)
        return page_of(self._fetch(sql, args, "listing checkpoints"), count)

    def _runs(self, query: RunQuery) -> tuple[list[RunInfo], list[str]]:
        clauses, args = equal_to(query.equalities(), "%s")
        if query.before is not None:
            found = self._fetch(
                "SELECT seq FROM stepgraph_runs WHERE run_id = %s", (query.before,), "listing runs"
            )
            if not found:
                raise CheckpointNotFoundError(
                    f"no run {quoted(query.before)} in this store (before=)"
                )
            clauses.append("seq < %s")
            args.append(found[0][0])
        tail = ""
        if query.limit is not None:
            tail = " LIMIT %s"
            args.append(query.limit)
        sql = f"SELECT {RUN_COLUMNS} FROM stepgraph_runs {where(clauses)} ORDER BY seq DESC{tail}"
        return infos_of(self._fetch(sql, args, "listing runs"))

    def _run_of_request(self, request_id: str) -> RunInfo | None:
        found = self._fetch(
            f"SELECT {RUN_COLUMNS} FROM stepgraph_runs WHERE run_id = "
            "(SELECT run_id FROM stepgraph_requests WHERE request_id = %s)",
            (request_id,),
            "finding a request",
        )
        return info_of(found[0]) if found else None

    def _run_info(self, run_id: str) -> RunInfo | None:
        found = self._fetch(
            f"SELECT {RUN_COLUMNS} FROM stepgraph_runs WHERE run_id = %s",
            (run_id,),
            "reading a run",
        )
        return info_of(found[0]) if found else None

    def _answers(self, run_id: str, request_ids: list[str]) -> dict[str, str]:
        found = self._fetch(
            "SELECT request_id, checkpoint_id FROM stepgraph_answers "
            "WHERE run_id = %s AND request_id = ANY(%s)",
            (run_id, request_ids),
            "reading answers",
        )
        return {r: c for r, c in found}

    def _run_ids(self, run_id: str | None, more_than: int) -> dict[str, list[str]]:
        if has_nul([run_id]):  # (no such run)
            return {}
        sql = "SELECT run_id FROM stepgraph_runs WHERE checkpoints > %s"
        args: list[Any] = [more_than]
        if run_id is not None:
            sql += " AND run_id = %s"
            args.append(run_id)
        out: dict[str, list[str]] = {}
        with self._connection("listing checkpoints to prune") as conn:
            for (run,) in conn.execute(sql + " ORDER BY seq", args).fetchall():
                found = conn.execute(
                    "SELECT ids FROM stepgraph_segments WHERE run_id = %s ORDER BY seq", (run,)
                ).fetchall()
                out[run] = [i for (ids,) in found for i in ids.split(",")]
        return out

    # -- leases ----------------------------------------------------------------------

    def _lease(self, run_id: str, holder: str, doing: str = "taking a run") -> str | None:
        try:
            return self._leases.take(run_id, holder, self._session)
        except ServerAway as away:
            raise self._failure(away.error, doing) from away
        except self._pg.Error as exc:
            raise self._failure(exc, doing) from exc

    def _holder(self, run_id: str) -> str | None:
        here = self._leases.holder(run_id)
        if here is not None:
            return here
        found = self._fetch(*held_by(run_id), "reading who holds a run")
        if not found:
            return None
        return str(found[0][0]) or "an unnamed session:?"

    def _release_lease(self, run_id: str, holder: str) -> None:
        self._saving.wait(run_id)
        self._leases.give_back(run_id, holder)

    def _session(self) -> Any:
        """A new autocommit session outside the pool (for leases), the
        tables checked. It sits idle while the runs' handlers work: exempt
        from ``idle_session_timeout`` (PostgreSQL 14 and later), which would
        end it and free the runs for another process."""
        if not self._ready:
            self.open()  # (the tables exist before a lease is recorded)
        conn = self._pg.connect(self._conninfo(), autocommit=True)
        if conn.info.server_version >= 140000:
            conn.execute("SET idle_session_timeout = 0")
        return conn

    def _conninfo(self) -> str:
        return own_conninfo(self._pg, self.dsn, self._given_pool)

    # -- deleting --------------------------------------------------------------------

    def _remove(self, ids: list[str]) -> None:
        found = self._fetch(
            "SELECT DISTINCT s.seq, s.run_id, s.ids FROM stepgraph_checkpoint_ids i "
            "JOIN stepgraph_segments s ON s.seq = i.segment WHERE i.id = ANY(%s) ORDER BY s.seq",
            (ids,),
            "finding checkpoints to delete",
        )
        by_run: dict[str, list[tuple[int, str]]] = {}
        for seq, run, members in found:
            by_run.setdefault(run, []).append((seq, members))
        for run, segments in by_run.items():
            self._remove_from_run(run, set(ids), segments)

    def _remove_from_run(
        self, run_id: str, doomed: set[str], segments: list[tuple[int, str]]
    ) -> None:
        """Delete checkpoints of one run: what must be read (the rest of the
        run's values, the rewritten segments) is read first, outside any
        transaction; then whole segments go a chunk per short transaction,
        and a last one rewrites, fixes the index and lets values go."""
        whole = [seq for seq, members in segments if doomed.issuperset(members.split(","))]
        partial = [seq for seq, _ in segments if seq not in set(whole)]
        found = self._fetch(
            "SELECT seq, data FROM stepgraph_segments WHERE run_id = %s ORDER BY seq",
            (run_id,),
            "reading a run",
        )
        plan = Plan.read(found, run_id, doomed, set(whole), partial)
        for start in range(0, len(whole), CHUNK):
            chunk = whole[start : start + CHUNK]

            def drop(cur: Any, chunk: list[int] = chunk) -> None:
                lock_run(cur, run_id)
                count, size = drop_segments(cur, chunk)
                cur.execute(
                    "UPDATE stepgraph_runs SET checkpoints = checkpoints - %s, "
                    "size = size - %s WHERE run_id = %s",
                    (count, size, run_id),
                )

            began = time.perf_counter()
            self._transaction(drop, "deleting checkpoints")
            time.sleep(min(time.perf_counter() - began, MAX_PAUSE))
        dropped = self._transaction(lambda cur: plan.finish(cur, doomed), "deleting checkpoints")
        self._drop_values(dropped)

    def _remove_run(self, run_id: str) -> int:
        if has_nul([run_id]):  # (no such run)
            return 0
        removed = 0
        while True:  # oldest segments first, a chunk per transaction, pausing between
            started = time.perf_counter()
            count = self._transaction(lambda cur: drop_oldest(cur, run_id), "deleting a run")
            removed += count
            if not count:
                break
            time.sleep(min(time.perf_counter() - started, MAX_PAUSE))

        def forget(cur: Any) -> list[str]:
            lock_run(cur, run_id)
            return forget_run(cur, run_id)

        self._drop_values(self._transaction(forget, "deleting a run"))
        return removed

    def _drop_values(self, hashes: list[str]) -> None:
        """Delete the values among ``hashes`` no run references (``drop_unreferenced``)."""
        if hashes:
            self._transaction(lambda cur: drop_unreferenced(cur, hashes), "deleting stored values")

    def migrate(self) -> tuple[int, int]:
        """Bring tables written by an earlier stepgraph to this version's
        layout (blocking; the one place a layout changes): (layout before,
        layout after)."""
        try:
            with self._pg.connect(self._conninfo(), autocommit=True) as conn:
                return migrate(conn, self.where())
        except self._pg.Error as exc:
            raise self._failure(exc, "migrating it") from exc
