"""serving/reuseport.py on real sockets: two listeners share a port, as two versions do
during the local target's switch."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from serving import reuseport
from serving.reuseport import Drain, hand_over, oldest_takes_all, queued


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


def test_a_stopping_server_hands_new_connections_to_the_next(old: socket.socket) -> None:
    assert oldest_takes_all(old)
    port = old.getsockname()[1]
    with listener(port) as new:
        oldest_takes_all(new)
        connect(port, 5)
        assert (queued(old), queued(new)) == (5, 0)
        assert hand_over(old)
        connect(port, 7)
        assert (queued(old), queued(new)) == (5, 7)
        assert (accepted(old), accepted(new)) == (5, 7)


def test_closing_resets_what_is_queued_and_a_drained_handover_loses_nothing(
    old: socket.socket,
) -> None:
    """The reason for the handover: a connection the kernel queued on a socket that then
    closes is reset. Handed over and drained, the old socket closes with nothing queued
    while clients keep connecting."""
    port = old.getsockname()[1]
    oldest_takes_all(old)
    with listener(port) as beside:  # the baseline: close with connections queued
        waiting = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        old.close()
        beside.close()
        assert [reply(conn) for conn in waiting] == ["reset"] * 3

    first = listener(port)
    oldest_takes_all(first)
    with listener(port) as new:
        oldest_takes_all(new)
        with Clients(port) as clients:
            while len(clients.outcomes) < 10:
                answer_queued(first)
            assert hand_over(first)
            drain = Drain([first], time.monotonic())
            while not drain.settled(time.monotonic()):
                answer_queued(first)
                answer_queued(new)
                time.sleep(0.005)
            first.close()
            for _ in range(20):
                answer_queued(new)
                time.sleep(0.005)
            clients.stop(while_waiting=lambda: answer_queued(new))
    assert len(clients.outcomes) > 20
    assert set(clients.outcomes) == {"ok"}, clients.outcomes


def test_a_drain_waits_for_an_empty_queue_then_a_settling_moment(old: socket.socket) -> None:
    port = old.getsockname()[1]
    drain = Drain([old], start=100.0)
    connect(port, 2)
    assert not drain.settled(100.0)  # two wait to be accepted
    accepted(old)
    assert not drain.settled(100.1)  # empty from now on
    assert not drain.settled(100.1 + reuseport.DRAIN_SETTLE / 2)
    assert drain.settled(100.1 + reuseport.DRAIN_SETTLE)
    connect(port, 1)
    assert drain.settled(100.0 + reuseport.DRAIN_LIMIT)  # the limit, however full


def reply(conn: socket.socket) -> str:
    """What a client sees on a connection: the server's word, or a reset."""
    with conn:
        try:
            conn.settimeout(5)
            data = conn.recv(16)
        except ConnectionResetError:
            return "reset"
        except TimeoutError:
            return "no answer"
        return data.decode() or "closed"


def answer_queued(sock: socket.socket) -> None:
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return
        with conn:
            conn.sendall(b"ok")


class Clients:
    """A thread that connects to the port again and again until stopped, keeping what each
    connection saw."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.outcomes: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.outcomes.append(reply(socket.create_connection(("127.0.0.1", self.port))))

    def __enter__(self) -> Clients:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(while_waiting=lambda: None)

    def stop(self, while_waiting: Callable[[], None]) -> None:
        """Stop connecting; `while_waiting` answers the last connection meanwhile."""
        self._stop.set()
        while self._thread.is_alive():
            while_waiting()
            self._thread.join(0.01)
