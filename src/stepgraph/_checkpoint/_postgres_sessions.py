"""Sessions the server ended while they sat idle — the server restarted or
failed over, an administrator or ``idle_session_timeout`` ended them — found
before a statement is sent on one, so that a store outlives its database's
restarts without failing a run.

A server that ends a session sends it a last message and closes the socket:
an idle session whose socket has something to read has probably ended. That
poll costs a system call, not a round trip; only a session found readable is
asked (an empty statement) whether it still works. A session that ends while
a statement of ours is under way is not retried (the statement may have
committed): that statement fails as before. psycopg_pool's warnings about
the connections it drops are not printed: the store handles them.
"""

from __future__ import annotations

import logging
import select
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["ServerAway", "ended", "live_connection", "quiet_discards"]


class ServerAway(Exception):
    """The server takes no connections — down, shutting down, starting up:
    nothing was sent. ``error``: psycopg's, with the server's reason."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def away(error: BaseException) -> bool:
    """Whether a failed connection attempt means the server is not there
    (no socket, refused, closed at once; or it said it cannot take one
    now: SQLSTATE 57P03) rather than refusing us (a password, a limit)."""
    state = getattr(error, "sqlstate", None)
    return state is None or state == "57P03"


def _not_a_discard(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("discarding ")


def quiet_discards() -> None:
    """Keep psycopg_pool from printing a warning for each connection it
    drops because the server ended it (without logging set up, Python
    prints warnings on stderr): the store handles those. Its other
    messages — why it cannot connect, say — are left as they are."""
    pool_log = logging.getLogger("psycopg.pool")
    if _not_a_discard not in pool_log.filters:
        pool_log.addFilter(_not_a_discard)


def ended(conn: Any) -> bool:
    """Whether the server ended this idle session (psycopg connection)."""
    if conn.closed or conn.broken:
        return True
    try:
        if not _readable(conn.fileno()):
            return False
    except (OSError, ValueError):
        return True
    try:  # a notice, a changed server setting — or the session's end
        if conn.autocommit:
            conn.execute("")
        else:  # (a pool of the user's own: no transaction left open)
            conn.autocommit = True
            conn.execute("")
            conn.autocommit = False
    except Exception:  # psycopg's error: the session has ended
        return True
    return False


def _readable(fd: int) -> bool:
    if hasattr(select, "poll"):  # (select.select refuses descriptors past 1023)
        poll = select.poll()
        poll.register(fd, select.POLLIN)
        return bool(poll.poll(0))
    return bool(select.select([fd], [], [], 0)[0])  # (Windows: no such limit)


# How long a call waits for a pooled connection before asking the server
# directly whether it takes connections at all (a pool whose server is
# down would make it wait the pool's whole timeout, 30 s by default).
PATIENCE = 0.25


@contextmanager
def live_connection(pool: Any, probe: Callable[[], None]) -> Iterator[Any]:
    """A connection of ``pool`` (psycopg_pool) that the server has not
    ended; each one found ended is given back (the pool drops it and opens
    another in its place). After a restart every idle connection has ended:
    at most that many are passed over, then the last one is used as it is
    (its statement fails with the server's reason). When no connection
    comes at once, ``probe`` connects directly: it raises the server's
    reason if the server cannot be reached, rather than waiting it out."""
    conn = _getconn(pool, probe)
    for _ in range(pool.max_size):
        if not ended(conn):
            break
        pool.putconn(conn)
        conn = _getconn(pool, probe)
    try:
        with conn:  # (as the pool's own ``connection()``: commit, or roll back)
            yield conn
    finally:
        pool.putconn(conn)


def _getconn(pool: Any, probe: Callable[[], None]) -> Any:
    from psycopg_pool import PoolTimeout  # (installed: ``pool`` is one)

    waited = min(PATIENCE, pool.timeout)
    try:
        return pool.getconn(timeout=waited)
    except PoolTimeout:
        try:
            probe()  # the server's reason, if it takes no connections
        except Exception as exc:
            if away(exc):
                raise ServerAway(exc) from exc
            raise
    return pool.getconn(timeout=max(pool.timeout - waited, 0.001))
