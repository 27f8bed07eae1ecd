"""How the PostgreSQL store reaches its database: psycopg imported (with
an install hint), a pool passed in checked, the connection string of the
store's own connections (with a connect timeout), and the database named
in messages — never with its password."""

from __future__ import annotations

import os
import re
from typing import Any

from ._postgres_sessions import quiet_handled

__all__ = [
    "CONNECT_TIMEOUT",
    "check_pool",
    "database_named",
    "one_line",
    "own_conninfo",
    "psycopg_modules",
    "redacted",
]

# Seconds a connection attempt may take when the DSN names no connect_timeout.
CONNECT_TIMEOUT = 10


def psycopg_modules() -> tuple[Any, Any]:
    """psycopg and psycopg_pool, imported; ``ImportError`` with the hint."""
    try:
        import psycopg
        import psycopg_pool
    except ImportError as exc:
        raise ImportError(
            "PostgresCheckpointStore needs psycopg 3 and psycopg_pool: "
            "pip install 'stepgraph[postgres]'"
        ) from exc
    quiet_handled()
    return psycopg, psycopg_pool


def check_pool(pool: Any, dsn: str | None, pg_pool: Any) -> None:
    """Refuse a ``pool`` the store cannot use, saying why (it failed later
    with an ``AttributeError``, an async pool's with a coroutine never
    awaited), and a ``dsn`` beside it: the store connects with the pool's
    connection string, so a second one would name another database in
    messages, and redact another password."""
    if isinstance(pool, pg_pool.AsyncConnectionPool):
        raise TypeError(
            "PostgresCheckpointStore(pool=...) takes a psycopg_pool.ConnectionPool, not an "
            "AsyncConnectionPool: an async pool belongs to the event loop that opened it, and "
            "the store works across event loops, on threads of its own"
        )
    if not isinstance(pool, pg_pool.ConnectionPool):
        raise TypeError(
            "PostgresCheckpointStore(pool=...) takes a psycopg_pool.ConnectionPool, got "
            f"{type(pool).__name__} (a connection string goes in dsn)"
        )
    if dsn:
        raise ValueError(
            "PostgresCheckpointStore takes a dsn or a pool, not both: with a pool, the store "
            "connects as the pool does (its conninfo)"
        )


def database_named(pg: Any, dsn: str) -> str:
    """The database, for messages: host, port and name, never a password."""
    try:
        info = pg.conninfo.conninfo_to_dict(dsn)
    except pg.Error:
        return "checkpoint database (unparsable connection string)"
    host = (
        info.get("host")
        or info.get("hostaddr")
        or os.environ.get("PGHOST")
        or "the local socket"  # (libpq's default where no host is named)
    )
    port = f":{info['port']}" if info.get("port") else ""
    name = info.get("dbname") or info.get("user") or "(default)"
    return f"checkpoint database {name!r} on {host}{port}"


def one_line(text: str) -> str:
    """A message of several lines in one, each line's end kept as a
    sentence's: libpq's "...failed: Connection refused" then "Is the server
    running...?" read as one sentence once the newline was a space."""
    lines = [" ".join(line.split()) for line in text.splitlines()]
    joined = ""
    for line in filter(None, lines):
        if joined:
            if joined[-1] in ".?!:;,":
                joined += " "
            else:
                joined += ". " if line[0].isupper() else "; "
        joined += line
    return joined


def redacted(pg: Any, dsn: str, text: str) -> str:
    """``text`` without the password: libpq quotes a connection string it
    cannot parse, or the part of it at fault (the password, maybe)."""
    try:
        password = pg.conninfo.conninfo_to_dict(dsn).get("password")
    except pg.Error:
        return re.sub(r'"[^"]*"', '"…"', text)
    if password:
        text = text.replace(str(password), "…")
    return text


def own_conninfo(pg: Any, dsn: str, pool: Any) -> str:
    """The connection string of the store's own connections (its pool's,
    its leases'): with a ``connect_timeout`` when it names none — a
    server that accepts and never answers fails a call in that time
    instead of hanging it (libpq would wait for ever)."""
    extra: dict[str, Any] = {}
    if pool is not None:
        extra = {  # connection parameters only (not options such as autocommit)
            k: v
            for k, v in (pool.kwargs or {}).items()
            if isinstance(v, str | int) and not isinstance(v, bool)
        }
    base = dsn if pool is None else pool.conninfo
    try:
        named = pg.conninfo.conninfo_to_dict(base)
    except pg.Error:
        return base  # (connecting says what is wrong with it)
    if "connect_timeout" not in named and "connect_timeout" not in extra:
        extra["connect_timeout"] = CONNECT_TIMEOUT
    return str(pg.conninfo.make_conninfo(base, **extra)) if extra else base
