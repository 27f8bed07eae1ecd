"""The Postgres store's leases: a run's lease is a session-level advisory
lock, held on a connection of its own for as long as the run goes on.

When a process dies, its sessions end and Postgres frees their locks at
once — no timer decides that a lease is free. The session's
``application_name`` names the holder, so a refusal can say which process
has the run (read from ``pg_locks``). Taking and giving back write nothing
and commit nothing. Connections of given-back leases are kept for the next
one (a few): a lease then costs one round trip, not a new session.

A session the server ended (a restart) has lost its lock while the run goes
on: the store finds that out before the run's next save (``lost``) and
takes the run again — unless another process has taken it or written to it
meanwhile, when the save is refused.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import Any

from ._postgres_layout import lock_key
from ._postgres_sessions import ServerAway, away, ended

__all__ = ["Leases"]

_SPARE = 4  # lease connections kept open for the next lease


class Leases:
    """The leases one store holds; ``errors``: psycopg's base error (a
    failed call closes its connection and raises it on)."""

    def __init__(self, errors: type[BaseException]) -> None:
        self._errors = errors
        self._lock = threading.Lock()
        # run id -> (holder, the connection whose session holds the lock;
        # None once that session ended: the lock is gone until taken again).
        self._held: dict[str, tuple[str, Any]] = {}
        # Runs lost to another process (refused when taken back): every
        # later save of them is refused.
        self._forfeited: set[str] = set()
        self._spare: list[Any] = []

    def holds(self, run_id: str, holder: str) -> bool:
        held = self._held.get(run_id)
        return held is not None and held[0] == holder and held[1] is not None

    def take(self, run_id: str, holder: str, connect: Callable[[], Any]) -> str | None:
        """Take the run for ``holder``: ``None`` when taken (or held by it
        already), else who holds it. ``connect`` opens a new autocommit
        session when no spare one is left."""
        with self._lock:
            if self.holds(run_id, holder):
                return None
            conn = self._spare.pop() if self._spare else None
        try:
            if conn is not None and ended(conn):
                conn.close()
                conn = None
            if conn is None:
                try:
                    conn = connect()
                except self._errors as exc:
                    if away(exc):
                        raise ServerAway(exc) from exc
                    raise
            (got,) = conn.execute(
                "SELECT pg_try_advisory_lock(%s::bigint)", (lock_key(run_id),)
            ).fetchone()
            if got:
                conn.execute("SELECT set_config('application_name', %s, false)", (holder,))
                with self._lock:
                    self._held[run_id] = (holder, conn)
                    self._forfeited.discard(run_id)
                return None
            busy = _holder_of(conn, run_id, holder)
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
                held[1].close()
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
        try:
            conn.execute("SELECT pg_advisory_unlock(%s::bigint)", (lock_key(run_id),))
            conn.execute("SELECT set_config('application_name', '', false)")
        except self._errors:
            conn.close()  # ending the session frees the lock all the same
            return
        self._keep(conn)

    def close(self) -> None:
        """Give back every lease (their sessions end) and close the spare
        connections."""
        with self._lock:
            held = [conn for _, conn in self._held.values() if conn is not None]
            self._held = {}
            spare, self._spare = self._spare, []
        for conn in held:
            # Given back before the session ends: free when this returns, not
            # when the server gets round to ending the session.
            with suppress(self._errors):  # (a broken session has ended already)
                conn.execute("SELECT pg_advisory_unlock_all()")
        for conn in (*held, *spare):
            conn.close()  # (ending the session frees its advisory locks anyway)

    def _keep(self, conn: Any) -> None:
        with self._lock:
            if len(self._spare) < _SPARE and not conn.closed:
                self._spare.append(conn)
                return
        conn.close()


def _holder_of(conn: Any, run_id: str, holder: str) -> str:
    """Who holds the run's lock: the ``application_name`` of the session
    that has it (set just after taking it: wait for it a little)."""
    key = lock_key(run_id)
    for _ in range(20):
        row = conn.execute(
            "SELECT a.application_name FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s::oid "
            "AND l.objid = %s::oid AND l.objsubid = 1",
            ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF),
        ).fetchone()
        if row is not None and row[0] and row[0] != holder:
            return str(row[0])
        time.sleep(0.01)
    return "an unnamed session:?"
