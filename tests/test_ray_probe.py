"""Before Ray's own minutes (or a Ray Client's 30 s) of retrying, the
backend asks the address itself within ``connect_timeout``: a ``ray://``
address without a port is asked at Ray Client's default port, 10001. (No
network here: the connection is a stand-in that records where it went.)"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from stepgraph._ray import _cluster


@pytest.fixture
def tried(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []

    def refuse(address: Any, timeout: float) -> Any:
        calls.append((address, timeout))
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(_cluster.socket, "create_connection", refuse)
    return calls


@pytest.mark.parametrize(
    ("address", "where"),
    [
        ("ray://head.example", ("head.example", 10001)),
        ("ray://head.example:10002", ("head.example", 10002)),
        ("ray://[::1]", ("::1", 10001)),
        ("10.0.0.5:6379", ("10.0.0.5", 6379)),
    ],
)
def test_an_address_is_asked_within_the_timeout(
    tried: list[Any], address: str, where: tuple[str, int]
) -> None:
    with pytest.raises(ConnectionError) as caught:
        _cluster.probe(address, 3.0)
    assert tried == [(where, 3.0)]
    assert str(caught.value) == f"cannot reach a Ray cluster at {address!r}: Connection refused"


def test_an_address_without_a_port_of_a_gcs_is_left_to_ray(tried: list[Any]) -> None:
    _cluster.probe("head.example", 3.0)  # (Ray says what it makes of it)
    assert tried == []


class StartingRay:
    """A stand-in for Ray whose ``init`` gets Ctrl-C (``presses`` times)
    while it starts a cluster."""

    def __init__(self, presses: int) -> None:
        self.presses = presses
        self.initialized = False
        self.shut_down = False

    def is_initialized(self) -> bool:
        return self.initialized

    def init(self, address: str, **options: Any) -> None:
        for _ in range(self.presses):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # (the handler runs here)
        self.initialized = True

    def shutdown(self) -> None:
        self.initialized, self.shut_down = False, True


def test_ctrl_c_while_ray_starts_waits_until_it_has_started() -> None:
    """Ray interrupted halfway through ``ray.init`` crashes the process at
    exit: a Ctrl-C is held until Ray has started, then raised, and the
    backend stops the cluster it started."""
    import stepgraph as sg

    backend = sg.RayBackend()
    backend._ray = ray = StartingRay(presses=1)
    with pytest.raises(KeyboardInterrupt):
        backend.connect()
    assert ray.initialized  # (started whole)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    backend.close()
    assert ray.shut_down


def test_a_second_ctrl_c_while_ray_starts_interrupts_it_at_once() -> None:
    import stepgraph as sg

    backend = sg.RayBackend()
    backend._ray = ray = StartingRay(presses=2)
    with pytest.raises(KeyboardInterrupt):
        backend.connect()
    assert not ray.initialized
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


class _Utils:
    def __init__(self) -> None:
        self.set_sigterm_handler = lambda handler: signal.signal(signal.SIGTERM, handler)


class _Private:
    def __init__(self) -> None:
        self.utils = _Utils()
        self.ray_constants = type("Constants", (), {"RAY_DISABLE_FAILURE_SIGNAL_HANDLER": False})()


class RaysExit(SystemExit):
    pass


def _rays_handler(signum: int, frame: object) -> None:
    raise RaysExit(signum)  # (Ray 2.60's: sys.exit(signum))


class TerminatedRay(StartingRay):
    """A stand-in for Ray whose ``init`` puts in a SIGTERM handler of its
    own (the process ends with 15, saying nothing) and gets a SIGTERM while
    it starts."""

    def __init__(self) -> None:
        super().__init__(presses=0)
        self._private = _Private()
        self.failure_handler_off: bool | None = None

    def init(self, address: str, **options: Any) -> None:
        self._private.utils.set_sigterm_handler(_rays_handler)
        self.failure_handler_off = self._private.ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # (a handler runs here)
        self.initialized = True


class Stopped(Exception):
    pass


def test_a_sigterm_while_ray_starts_waits_and_the_processes_handler_stays() -> None:
    """``ray.init`` puts in its SIGTERM handler (the process ends with 15,
    saying nothing): a SIGTERM handler of the process's own stays, and a
    SIGTERM while Ray starts goes to it once Ray has started."""
    import stepgraph as sg

    def stop(signum: int, frame: object) -> None:
        raise Stopped

    before = signal.signal(signal.SIGTERM, stop)
    try:
        backend = sg.RayBackend()
        backend._ray = ray = TerminatedRay()
        with pytest.raises(Stopped):
            backend.connect()
        assert ray.initialized  # (started whole)
        assert signal.getsignal(signal.SIGTERM) is stop
        # (nor does Ray's C++ failure handler take SIGTERM in this process)
        assert ray.failure_handler_off is True
        assert ray._private.ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER is False
        backend.close()
    finally:
        signal.signal(signal.SIGTERM, before)
