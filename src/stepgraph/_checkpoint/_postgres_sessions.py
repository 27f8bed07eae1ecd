"""Sessions the server ended while they sat idle — the server restarted or
failed over, an administrator or ``idle_session_timeout`` ended them — found
before a statement is sent on one, so that a store outlives its database's
restarts without failing a run.

A server that ends a session sends it a last message and closes the socket:
an idle session whose socket has something to read has probably ended. That
poll costs a system call, not a round trip; only a session found readable is
asked (an empty statement) whether it still works. A session that ends while
a statement of ours is under way is not retried (the statement may have
committed): that statement fails as before. psycopg's warnings about what
the store handles (see ``quiet_handled``) are not printed.
"""

from __future__ import annotations

import logging
import select
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["ServerAway", "connect_or_away", "ended", "live_connection", "quiet_handled"]


class ServerAway(Exception):
    """The server takes no connections — down, shutting down, starting up:
    nothing was sent. ``error``: psycopg's, with the server's reason."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def away(error: BaseException) -> bool:
    """Whether a failed connection attempt may mean the server is not there
    (no socket, refused, closed at once; or it said it cannot take one now:
    SQLSTATE 57P03). libpq gives most failed attempts no SQLSTATE, so a
    server refusing us (a changed password, a dropped database) counts too:
    a save waits for it in vain, then fails with its reason."""
    state = getattr(error, "sqlstate", None)
    return state is None or state == "57P03"


# What psycopg logs (as warnings, which Python prints on stderr when logging
# is not set up) about connections the store handles itself — the pool's
# dropping one the server ended, its tries to reconnect while the server is
# away, a pipeline cut by the server going away — when the store's own calls
# say what failed: printed, they only ran into the command line's output.
_HANDLED = {
    "psycopg.pool": ("discarding ", "error connecting in "),
    "psycopg": ("error ignored terminating ",),
}


def _not_handled(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_HANDLED.get(record.name, ()))


def quiet_handled() -> None:
    """Keep psycopg from printing warnings about connections the store
    handles (see ``_HANDLED``); its other messages are left as they are."""
    for name in _HANDLED:
        logger = logging.getLogger(name)
        if _not_handled not in logger.filters:
            logger.addFilter(_not_handled)


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


# How long a call waits for a pooled connection before connecting directly
# (the pool's server was away: the pool reconnects on a schedule of its own,
# backing off to tens of seconds; a server that is down says so at once).
PATIENCE = 0.25


@contextmanager
def live_connection(pool: Any, connect: Callable[[], Any]) -> Iterator[Any]:
    """A connection of ``pool`` (psycopg_pool) that the server has not
    ended; each one found ended is given back (the pool drops it and opens
    another in its place). After a restart every idle connection has ended:
    at most that many are passed over, then the last one is used as it is
    (its statement fails with the server's reason). When the pool has none
    within ``PATIENCE`` though it has fewer than it may (it is failing to
    connect, backing off), ``connect`` makes one of its own for this call
    (closed after): it works as soon as the server is back, or raises
    ``ServerAway`` with the reason it is not, rather than waiting it out. A
    pool whose every connection is in use is waited for."""
    conn, pooled = _getconn(pool, connect)
    for _ in range(pool.max_size):
        if not pooled or not ended(conn):
            break
        _give_back(pool, conn)
        conn, pooled = _getconn(pool, connect)
    try:
        with conn:  # commit, or roll back (as the pool's own ``connection()``); a
            yield conn  # connection of this call's own is closed too
    finally:
        if pooled:
            _give_back(pool, conn)


# How many connections of each pool the calls here hold: a pool counts the
# connections it is still trying to open (after an outage, backing off) in
# its size, so a pool "full" with fewer in use than that is failing to
# connect, not busy.
_held: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
_held_lock = threading.Lock()


def _taken(pool: Any, conn: Any) -> Any:
    with _held_lock:
        _held[pool] = _held.get(pool, 0) + 1
    return conn


def _give_back(pool: Any, conn: Any) -> None:
    with _held_lock:
        _held[pool] = _held.get(pool, 1) - 1
    pool.putconn(conn)


def _getconn(pool: Any, connect: Callable[[], Any]) -> tuple[Any, bool]:
    from psycopg_pool import PoolTimeout  # (installed: ``pool`` is one)

    try:
        return _taken(pool, pool.getconn(timeout=min(PATIENCE, pool.timeout))), True
    except PoolTimeout:
        pass
    size = pool.get_stats().get("pool_size", 0)
    with _held_lock:
        held = _held.get(pool, 0)
    if size >= pool.max_size and held >= size:
        # Every connection it may have is open and in use (a busy server):
        # wait for one. A connection of our own per waiting call would only
        # add sessions until the server refuses them (max_connections). (A
        # full pool with fewer in use is still trying to open the others:
        # the server was away, and may still be.)
        return _taken(pool, pool.getconn(timeout=max(pool.timeout - PATIENCE, 0.001))), True
    return connect_or_away(connect), False


def connect_or_away(connect: Callable[[], Any]) -> Any:
    """``connect()``; a failure that may mean the server is not there
    (see ``away``) is raised as ``ServerAway``."""
    import psycopg  # (installed: the store that calls this uses it)

    try:
        return connect()
    except psycopg.Error as exc:
        if away(exc):
            raise ServerAway(exc) from exc
        raise
