"""serving/reuseport.py on real sockets: two listeners share a port, as two versions do
during the local target's switch."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from serving.reuseport import oldest_takes_all


def listener(port: int = 0) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def accepted(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


def connect(port: int, times: int) -> None:
    for _ in range(times):
        socket.create_connection(("127.0.0.1", port)).close()


@pytest.fixture
def old() -> Iterator[socket.socket]:
    sock = listener()
    yield sock
    sock.close()


def test_the_oldest_listener_takes_every_new_connection(old: socket.socket) -> None:
    assert oldest_takes_all(old)
    port = old.getsockname()[1]
    with listener(port) as new:
        assert oldest_takes_all(new)  # the newer one attaches too, changing nothing
        connect(port, 64)
        assert (accepted(old), accepted(new)) == (64, 0)

        old.close()  # the old version stops: the newer one is the oldest now
        connect(port, 8)
        assert accepted(new) == 8


def test_without_it_the_kernel_spreads_them(old: socket.socket) -> None:
    port = old.getsockname()[1]
    with listener(port) as new:
        connect(port, 64)
        taken = (accepted(old), accepted(new))
    assert sum(taken) == 64 and min(taken) > 0  # a hash over source ports: both get some


def test_a_socket_that_does_not_share_its_port_is_left_alone() -> None:
    with socket.socket() as alone:
        alone.bind(("127.0.0.1", 0))
        alone.listen(1)
        assert oldest_takes_all(alone) is False
