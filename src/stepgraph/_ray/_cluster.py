"""Reaching Ray: the lazy import (loopback only, usage stats off), a
quick probe of an address before Ray's own minutes of retrying, and a
Ctrl-C or SIGTERM held while Ray starts."""

from __future__ import annotations

import contextlib
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
def held_interrupts(ray: Any = None) -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) or a SIGTERM until the block ends, then act on
    it as the handler in place would have. ``ray.init`` interrupted halfway
    leaves Ray half started, and the process then dies at exit of a
    segmentation fault (Ray 2.60) instead of stopping; a local cluster
    starts in about 5 s. A second signal of the same kind goes through at
    once. Only on the main thread, where signals are handled, and for a
    signal that has a Python handler.

    ``ray.init`` (of ``ray``, when given) puts in a SIGTERM handler of its
    own (``sys.exit(15)``: the process ends saying nothing) and leaves it
    there: a SIGTERM handler the process had (not the default) is kept
    instead, and holds a SIGTERM meanwhile as above."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with contextlib.ExitStack() as stack:
        stack.enter_context(_held(signal.SIGINT))
        if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
            stack.enter_context(_held(signal.SIGTERM))
            stack.enter_context(_sigterm_kept(ray))
        yield


@contextmanager
def _held(signum: int) -> Iterator[None]:
    before = signal.getsignal(signum)
    if not callable(before):
        yield
        return
    held: list[FrameType | None] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        held.append(frame)
        if len(held) > 1:  # (sent again: the user insists)
            signal.signal(signum, before)
            before(signum, frame)

    signal.signal(signum, hold)
    try:
        yield
    finally:
        if signal.getsignal(signum) is hold:
            signal.signal(signum, before)
        if len(held) == 1:
            before(signum, held[0])


@contextmanager
def _sigterm_kept(ray: Any) -> Iterator[None]:
    """Keep the process's SIGTERM handler while Ray starts, and after.
    Ray 2.60 puts in its own as it starts (``ray._private.utils.
    set_sigterm_handler``), and its C++ failure signal handler takes SIGTERM
    too (it prints a stack, then calls the one before) and, as Ray stops,
    leaves SIGTERM to the default (the process is killed, whatever Python
    has as its handler): the one is skipped, the other not put in for this
    process (``RAY_DISABLE_FAILURE_SIGNAL_HANDLER``, read as Ray starts; Ray's
    own processes keep theirs). The handler before is put back if Ray put in
    its own anyway."""
    before = signal.getsignal(signal.SIGTERM)
    private: Any = getattr(ray, "_private", None)
    utils: Any = getattr(private, "utils", None)
    constants: Any = getattr(private, "ray_constants", None)
    setter = getattr(utils, "set_sigterm_handler", None)
    if callable(setter):
        utils.set_sigterm_handler = _keep_sigterm_handler
    disabled = getattr(constants, _NO_FAILURE_HANDLER, None)
    if disabled is not None:
        setattr(constants, _NO_FAILURE_HANDLER, True)
    try:
        yield
    finally:
        if callable(setter):
            utils.set_sigterm_handler = setter
        if disabled is not None:
            setattr(constants, _NO_FAILURE_HANDLER, disabled)
        if signal.getsignal(signal.SIGTERM) is not before:
            signal.signal(signal.SIGTERM, before)


_NO_FAILURE_HANDLER = "RAY_DISABLE_FAILURE_SIGNAL_HANDLER"


def _keep_sigterm_handler(handler: Any) -> None:
    """(In place of Ray's ``set_sigterm_handler`` while it starts.)"""
