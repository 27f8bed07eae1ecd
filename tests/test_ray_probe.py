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
