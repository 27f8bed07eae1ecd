"""The Postgres store's leases: a run's lease is a session-level advisory
lock, held for as long as the run goes on.

When a process dies, its sessions end and Postgres frees their locks at
once — no timer decides that a lease is free. Every run a store holds is
locked on one session of the store's own (Postgres counts each session
against ``max_connections``: a server running hundreds of runs at once
must not need a session per run), named after the process
(``application_name``), so a refusal can say which process has the run
(read from ``pg_locks``). Advisory locks are re-entrant within a session,
so the store itself keeps two calls of this process from taking one run.
A deletion holds its run on a session of its own, named after the
deletion (a few such sessions are kept for the next one). Taking and
giving back write nothing and commit nothing: one round trip each.

A session the server ended (a restart) has lost its locks while the runs
go on: the store finds that out before a run's next save (``lost``) and
takes the run again, on a new session — unless another process has taken
it or written to it meanwhile, when the save is refused.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from ._leases import deleting, this_process
from ._postgres_layout import lock_key
from ._postgres_sessions import connect_or_away, ended

__all__ = ["Leases", "SavesUnderWay", "held_by"]

_SPARE = 4  # deletion sessions kept open for the next deletion


class Leases:
    """The leases one store holds; ``errors``: psycopg's base error (a
    failed call closes its connection and raises it on)."""

    def __init__(self, errors: type[BaseException]) -> None:
        self._errors = errors
        self._lock = threading.Lock()
        # run id -> (holder, the connection whose session holds the lock;
        # None once that session ended: the lock is gone until taken again).
        self._held: dict[str, tuple[str, Any]] = {}
        # Runs being taken right now (run id -> holder): a second call of
        # this process for one of them is refused without asking the server
        # (the shared session would lock it again).
        self._taking: dict[str, str] = {}
        # Runs lost to another process (refused when taken back): every
        # later save of them is refused.
        self._forfeited: set[str] = set()
        self._shared: Any = None  # the session holding the runs' locks
        self._name = this_process()  # its application_name
        self._spare: list[Any] = []  # deletions' sessions, for the next one

    def holder(self, run_id: str) -> str | None:
        """Who of this process holds the run, or is taking it (``None``:
        no call of this process)."""
        with self._lock:
            held = self._held.get(run_id)
            if held is not None and held[1] is not None:
                return held[0]
            return self._taking.get(run_id)

    def holds(self, run_id: str, holder: str) -> bool:
        held = self._held.get(run_id)
        return held is not None and held[0] == holder and held[1] is not None

    def take(self, run_id: str, holder: str, connect: Callable[[], Any]) -> str | None:
        """Take the run for ``holder``: ``None`` when taken (or held by it
        already), else who holds it. ``connect`` opens a new autocommit
        session when one is needed."""
        with self._lock:
            held = self._held.get(run_id)
            if held is not None and held[0] == holder and held[1] is not None:
                return None
            if held is not None and held[0] != holder:
                return held[0]  # another call of this process has it
            if run_id in self._taking:
                return self._taking[run_id]
            self._taking[run_id] = holder
        try:
            if deleting(holder):
                return self._take_alone(run_id, holder, connect)
            conn = self._session(connect)
            try:
                (got,) = conn.execute(
                    "SELECT pg_try_advisory_lock(%s::bigint)", (lock_key(run_id),)
                ).fetchone()
                busy = None if got else _holder_of(conn, run_id)
            except self._errors:
                self._drop(conn)  # (its locks end with it: the runs on it are lost)
                raise
            if busy is None:
                with self._lock:
                    self._held[run_id] = (holder, conn)
                    self._forfeited.discard(run_id)
            return busy
        finally:
            with self._lock:
                del self._taking[run_id]

    def _session(self, connect: Callable[[], Any]) -> Any:
        """The shared session, opened again if the server ended it."""
        with self._lock:
            conn = self._shared
        if conn is not None and not ended(conn):
            return conn
        if conn is not None:
            self._drop(conn)
        conn = connect_or_away(connect)
        try:
            conn.execute("SELECT set_config('application_name', %s, false)", (self._name,))
        except self._errors:
            conn.close()
            raise
        with self._lock:
            if self._shared is None:
                self._shared = conn
                return conn
            racing, conn = conn, self._shared  # (another thread opened one first)
        racing.close()
        return conn

    def _drop(self, conn: Any) -> None:
        with self._lock:
            if self._shared is conn:
                self._shared = None
        conn.close()

    def _take_alone(self, run_id: str, holder: str, connect: Callable[[], Any]) -> str | None:
        """A deletion's lease: on a session of its own, named after it."""
        with self._lock:
            conn = self._spare.pop() if self._spare else None
        try:
            if conn is not None and ended(conn):
                conn.close()
                conn = None
            if conn is None:
                conn = connect_or_away(connect)
            (got,) = conn.execute(
                "SELECT pg_try_advisory_lock(%s::bigint)", (lock_key(run_id),)
            ).fetchone()
            if got:
                conn.execute("SELECT set_config('application_name', %s, false)", (holder,))
                with self._lock:
                    self._held[run_id] = (holder, conn)
                    self._forfeited.discard(run_id)
                return None
            busy = _holder_of(conn, run_id)
        except self._errors:
            if conn is not None:
                conn.close()  # (a lock it took dies with its session)
            raise
        self._keep(conn)
        return busy

    def lost(self, run_ids: Iterable[str]) -> list[tuple[str, str]]:
        """The leases of these runs held here whose session the server
        ended (a restart): their locks are gone until taken again. (run,
        holder) each."""
        out = []
        for run_id in run_ids:
            held = self._held.get(run_id)
            if held is None or (held[1] is not None and not ended(held[1])):
                continue
            if held[1] is not None:
                with self._lock:
                    if self._held.get(run_id) is held:
                        self._held[run_id] = (held[0], None)
                self._drop(held[1])
            out.append((run_id, held[0]))
        return out

    def lose(self, run_id: str) -> None:
        """Unlock a run taken back before it was checked (the check failed):
        lost again, so the next save takes it back and checks it anew."""
        with self._lock:
            held = self._held.get(run_id)
            if held is None or held[1] is None:
                return
            self._held[run_id] = (held[0], None)
        self._unlock(run_id, held[1])

    def forfeit(self, run_id: str) -> None:
        """Give up a run another process took or wrote to (unlocked if it
        was taken back): its later saves are refused."""
        with self._lock:
            held = self._held.pop(run_id, None)
            self._forfeited.add(run_id)
        if held is not None and held[1] is not None:
            self._unlock(run_id, held[1])  # (never a spare session still holding it)

    def forfeited(self, run_ids: Iterable[str]) -> list[str]:
        return [run_id for run_id in run_ids if run_id in self._forfeited]

    def give_back(self, run_id: str, holder: str) -> None:
        with self._lock:
            held = self._held.get(run_id)
            if held is None or held[0] != holder:
                return  # not held here
            del self._held[run_id]
        if held[1] is not None:  # (else its session ended: nothing to unlock)
            self._unlock(run_id, held[1])

    def _unlock(self, run_id: str, conn: Any) -> None:
        shared = conn is self._shared
        try:
            conn.execute("SELECT pg_advisory_unlock(%s::bigint)", (lock_key(run_id),))
            if not shared:
                conn.execute("SELECT set_config('application_name', '', false)")
        except self._errors:
            self._drop(conn)  # ending the session frees the lock all the same
            return
        if not shared:
            self._keep(conn)

    def close(self) -> None:
        """Give back every lease (their sessions end) and close the spare
        connections."""
        with self._lock:
            held = {id(c): c for _, c in self._held.values() if c is not None}
            if self._shared is not None:
                held[id(self._shared)] = self._shared
            self._held, self._shared = {}, None
            spare, self._spare = self._spare, []
        for conn in held.values():
            # Given back before the session ends: free when this returns, not
            # when the server gets round to ending the session.
            with suppress(self._errors):  # (a broken session has ended already)
                conn.execute("SELECT pg_advisory_unlock_all()")
        for conn in (*held.values(), *spare):
            conn.close()  # (ending the session frees its advisory locks anyway)

    def _keep(self, conn: Any) -> None:
        with self._lock:
            if len(self._spare) < _SPARE and not conn.closed:
                self._spare.append(conn)
                return
        conn.close()


class SavesUnderWay:
    """The saves under way, per run. A run cancelled while one is (Ctrl-C)
    records its ending, and gives its lease back, only after it: the
    store's threads run calls side by side, and the save would else commit
    last, listing the run as still going on (and a lease given back under
    it would let another process write the run at the same time)."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._ended = threading.Condition()

    @contextmanager
    def of(self, run_ids: Iterable[str]) -> Iterator[None]:
        """A save of these runs under way, within."""
        runs = set(run_ids)
        with self._ended:
            for run_id in runs:
                self._counts[run_id] = self._counts.get(run_id, 0) + 1
        try:
            yield
        finally:
            with self._ended:
                for run_id in runs:
                    left = self._counts.pop(run_id) - 1
                    if left:
                        self._counts[run_id] = left
                self._ended.notify_all()

    def wait(self, run_id: str) -> None:
        """Until no save of the run is under way."""
        with self._ended:
            self._ended.wait_for(lambda: run_id not in self._counts)


def held_by(run_id: str) -> tuple[str, tuple[int, int]]:
    """The statement (and its arguments) reading the ``application_name``
    of the other session that holds the run's lock ('' if it has none; no
    row: nobody — a lock of a process that ended went with its session)."""
    key = lock_key(run_id)
    return (
        "SELECT coalesce(a.application_name, '') FROM pg_locks l "
        "LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s::oid "
        "AND l.objid = %s::oid AND l.objsubid = 1 AND l.pid <> pg_backend_pid()",
        ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF),
    )


def _holder_of(conn: Any, run_id: str) -> str:
    """Who holds the run's lock: the ``application_name`` of the session
    that has it (a deletion's is set just after taking it: wait for it a
    little)."""
    for _ in range(20):
        row = conn.execute(*held_by(run_id)).fetchone()
        if row is not None and row[0]:
            return str(row[0])
        time.sleep(0.01)
    return "an unnamed session:?"
