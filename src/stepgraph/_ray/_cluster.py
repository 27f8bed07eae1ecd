"""Reaching Ray: the lazy import (loopback only, usage stats off), a
quick probe of an address before Ray's own minutes of retrying, and a
Ctrl-C held while Ray starts."""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

__all__ = ["current_address", "held_interrupts", "probe", "ray_module", "same_address"]

_INSTALL_HINT = "the Ray backend needs Ray: pip install 'stepgraph[ray]'"


def ray_module() -> Any:
    # Keep every address on loopback and usage stats off (before importing ray).
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    if not hasattr(ray, "remote"):  # e.g. a stray ./ray folder imported as a namespace package
        raise ImportError(f"{_INSTALL_HINT} (the 'ray' found on sys.path is not Ray)")
    return ray


# The port of a head's Ray Client server when a ray:// address gives none.
_CLIENT_PORT = 10001

# HTTP/2's client preface and an empty SETTINGS frame: a Ray cluster's gRPC
# endpoints answer with a SETTINGS frame of their own.
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_SETTINGS = 0x04


def probe(address: str, timeout: float) -> None:
    """Ray retries an address for minutes, whatever is (or is not) there: ask
    it first whether it speaks gRPC, within ``timeout`` seconds."""
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if address.startswith("ray://") and (not sep or not port.isdigit()):
        host, port = rest, str(_CLIENT_PORT)  # (Ray Client's default port)
    elif not sep or not port.isdigit():
        return  # no port to try: Ray's own defaults apply
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as conn:
            conn.settimeout(timeout)
            conn.sendall(_HTTP2_HELLO)
            head = conn.recv(9)
    except TimeoutError:
        raise ConnectionError(
            f"cannot reach a Ray cluster at {address!r}: no answer within {timeout:g} s"
        ) from None
    except OSError as exc:
        raise ConnectionError(
            f"cannot reach a Ray cluster at {address!r}: {exc.strerror or exc}"
        ) from None
    if len(head) < 9 or head[3] != _SETTINGS:
        raise ConnectionError(
            f"{address!r} answers, but not as a Ray cluster does (no gRPC); is the port right? "
            "(a Ray head listens on 6379, its client server on 10001)"
        )


def current_address(ray: Any) -> str | None:
    """The GCS address this process is connected to (``None``: not
    knowable — a Ray Client connection)."""
    try:
        if ray.util.client.ray.is_connected():
            return None
        return str(ray.get_runtime_context().gcs_address)
    except Exception:
        return None


def same_address(asked: str, here: str) -> bool:
    """Whether ``asked`` (as given to the backend) is the GCS at ``here``.
    A ``ray://`` address is a client server's, never a GCS's."""
    if asked.startswith("ray://"):
        return False

    def norm(address: str) -> str:
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        return f"{'127.0.0.1' if host == 'localhost' else host}:{port}"

    return norm(asked) == norm(here)


@contextmanager
def held_interrupts() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) until the block ends, then act on it as the
    handler in place would have. ``ray.init`` interrupted halfway leaves Ray
    half started, and the process then dies at exit of a segmentation fault
    (Ray 2.60) instead of stopping; a local cluster starts in about 5 s. A
    second Ctrl-C goes through at once. Only on the main thread, where
    signals are handled, and when SIGINT has a Python handler."""
    before = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(before):
        yield
        return
    held: list[FrameType | None] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        held.append(frame)
        if len(held) > 1:  # (pressed again: the user insists)
            signal.signal(signal.SIGINT, before)
            before(signum, frame)

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGINT) is hold:
            signal.signal(signal.SIGINT, before)
        if len(held) == 1:
            before(signal.SIGINT, held[0])
