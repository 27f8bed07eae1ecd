"""``stepgraph serve``: uvicorn running the API over a run service.

Stopping (Ctrl-C, SIGTERM) ends the event streams first — so open browser
connections do not hold the server up — then stops the runs going on at
their last checkpoint and records them as interrupted (see
:class:`~._runs.RunService`), then exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import secrets
import signal
import socket
import sys
import urllib.parse
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

from .._checkpoint import CheckpointStore
from ._http import create_app
from ._runs import RunService
from ._served import ServedWorkflow

__all__ = ["bind", "console_address", "is_loopback", "serve"]

log = logging.getLogger("stepgraph.serve")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def console_address(host: str, port: int, token: str | None) -> str:
    """The address ``serve`` prints: the token goes in the fragment
    percent-encoded (the console decodes it), so a token holding ``%``,
    ``&``, ``#``, ``+`` or a space reaches the console as it is."""
    shown = _reachable_name(host)
    shown = f"[{shown}]" if ":" in shown else shown
    fragment = f"#token={urllib.parse.quote(token, safe='')}" if token else ""
    return f"http://{shown}:{port}/{fragment}"


def _reachable_name(host: str) -> str:
    """A name a browser can use for ``host``: ``0.0.0.0`` or ``::`` (every
    address) is no address to open, so the machine's own name stands in."""
    try:
        unspecified = ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return host
    return socket.gethostname() or host if unspecified else host


class _Server(uvicorn.Server):
    def __init__(
        self, config: uvicorn.Config, service: RunService, announce: Callable[[int], None]
    ) -> None:
        super().__init__(config)
        self.service = service
        self.announce = announce
        self.loop: asyncio.AbstractEventLoop | None = None
        self.exit = asyncio.Event()

    async def startup(self, sockets: Any = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets)
        if self.started:
            port = self.servers[0].sockets[0].getsockname()[1] if self.servers else self.config.port
            self.announce(port)

    async def main_loop(self) -> None:
        # uvicorn wakes ten times a second to see whether to stop; here the
        # loop wakes once a second (to keep the Date header current) or when
        # told to stop, so an idle server costs next to nothing.
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 10) % 864000  # (on_tick counts tenths of seconds)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self.exit.wait()

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        if self.loop is not None:  # (called from a signal handler: hand it to the loop)
            # The runs stop first, so that their event streams say so
            # before they end (uvicorn waits for those streams to end).
            self.loop.call_soon_threadsafe(self.service.begin_close)
            self.loop.call_soon_threadsafe(self.exit.set)


def serve(
    workflows: list[ServedWorkflow],
    store: CheckpointStore,
    *,
    host: str = "127.0.0.1",
    port: int = 8321,
    token: str | None = None,
    say: Callable[[str], None] = print,
    listening: socket.socket | None = None,
) -> None:
    """Serve until stopped (on ``listening``, if given: see :func:`bind`).
    Away from loopback a token is required; one is made (and printed once)
    when none is given."""
    if not token and not is_loopback(host):
        token = secrets.token_urlsafe(24)
    service = RunService(workflows, store)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        stopped = await service.close()
        if stopped:
            say(f"stopped {len(stopped)} run(s) at their last checkpoint: {', '.join(stopped)}")

    app = create_app(service, token=token, lifespan=lifespan)

    def announce(bound: int) -> None:
        address = console_address(host, bound, token)
        names = ", ".join(w.name for w in workflows)
        say(f"stepgraph serve: {address}  (workflows: {names}; Ctrl-C stops)")
        if _reachable_name(host) != host:
            say(
                f"(listening on every address, {host}: if {_reachable_name(host)!r} does not "
                "reach this machine, use one of its addresses instead)"
            )

    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=5
    )
    if not log.handlers:  # the server's own log (failures with their tracebacks) on stderr
        to_stderr = logging.StreamHandler(sys.stderr)
        to_stderr.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        log.addHandler(to_stderr)
        log.setLevel(logging.INFO)
        log.propagate = False
    listening = listening or bind(host, port)
    # uvicorn raises the signal that stopped it again once it has stopped;
    # stopping is this command's normal end, so that signal then does nothing.
    before = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        _Server(config, service, announce).run(sockets=[listening])
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _ignore(sig: int, frame: Any) -> None:
    pass


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; ``OSError`` with a short reason
    (the port in use, an address not this machine's)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host.strip("[]"), port), family=family)
    except OSError as exc:
        if exc.errno is not None and exc.errno < 0:  # (getaddrinfo's: not an errno)
            reason = f"{host!r} is not an address or name of this machine"
        else:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise OSError(exc.errno, reason) from None
