"""Hostile and slow clients against the real server (gunicorn, uvicorn worker, real sockets).

Each connection is bounded in bytes and in time, and the protocol's own errors carry the
API's JSON body. Timeouts are set to about a second here so the tests stay short.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from servers import WAIT, Server

FAST = {"HEADER_TIMEOUT": "1", "BODY_TIMEOUT": "1", "KEEPALIVE": "1"}
ROW = b'{"data": [[5.1, 3.5, 1.4, 0.2]]}'


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    started = Server(model_dir, tmp_path_factory.mktemp("limits"), workers=1, **FAST)
    started.wait_ready()
    yield started
    started.kill_group()


@dataclass
class Answer:
    status: int | None
    body: dict | None
    closed_after: float  # seconds from the first byte sent to the server closing


def _parse(raw: bytes) -> tuple[int | None, dict | None]:
    if not raw.startswith(b"HTTP/1.1 "):
        return None, None
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body else None


def _read_until_closed(sock: socket.socket, started: float) -> Answer:
    raw = b""
    sock.settimeout(WAIT)
    try:
        while chunk := sock.recv(65536):
            raw += chunk
    except ConnectionResetError:
        pass
    return Answer(*_parse(raw), closed_after=time.monotonic() - started)


def exchange(server: Server, *parts: bytes, pause: float = 0.0) -> Answer:
    """Send ``parts`` (``pause`` seconds apart), then read until the server closes."""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        started = time.monotonic()
        for i, part in enumerate(parts):
            if i and pause:
                time.sleep(pause)
            sock.sendall(part)
        return _read_until_closed(sock, started)


def trickle(server: Server, head: bytes, unit: bytes, every: float) -> tuple[Answer, int]:
    """Send ``head``, then ``unit`` every ``every`` seconds until the server hangs up."""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        started = time.monotonic()
        sock.sendall(head)
        sent = 0
        try:
            while time.monotonic() - started < WAIT:
                sock.sendall(unit)
                sent += 1
                time.sleep(every)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return _read_until_closed(sock, started), sent


def _assert_error(answer: Answer, status: int, code: str) -> None:
    assert answer.status == status, answer
    assert answer.body is not None and answer.body["code"] == code, answer
    assert answer.body["error"]


def test_invalid_requests_get_the_json_error_body(server):
    answer = exchange(server, b"GARBAGE\r\n\r\n")
    _assert_error(answer, 400, "bad_request")
    assert "Invalid method" in answer.body["error"]


def test_a_header_over_the_head_limit_is_431(server):
    answer = exchange(server, b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    _assert_error(answer, 431, "headers_too_large")


def test_a_long_request_line_is_414(server):
    answer = exchange(server, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n")
    _assert_error(answer, 414, "uri_too_long")


def test_too_many_headers_is_431(server):
    headers = b"".join(b"X-H%d: 1\r\n" % i for i in range(101))
    answer = exchange(server, b"GET /health HTTP/1.1\r\n" + headers + b"\r\n")
    _assert_error(answer, 431, "too_many_headers")


@pytest.mark.parametrize("length", [10**30, 2 * 1024 * 1024])
def test_a_declared_length_over_the_limit_is_413_before_any_body(server, length):
    answer = exchange(server, b"POST /predict HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % length)
    _assert_error(answer, 413, "body_too_large")


def test_one_huge_header_costs_only_its_own_connection(server):
    """64 MiB of one header value: cut off after the head limit; /health answers meanwhile."""
    worker_before = _workers(server)
    outcome: dict = {}

    def flood() -> None:
        chunk = b"a" * 65536
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nX-Huge: ")
            sent = 0
            try:
                while sent < 64 * 1024 * 1024:
                    sock.sendall(chunk)
                    sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                outcome["cut_off"] = True
            outcome["sent"] = sent

    sender = threading.Thread(target=flood)
    sender.start()
    healthy = 0
    while healthy == 0 or sender.is_alive():
        assert httpx.get(f"http://127.0.0.1:{server.port}/health", timeout=WAIT).status_code == 200
        healthy += 1
    sender.join()
    assert outcome.get("cut_off"), outcome
    assert outcome["sent"] < 64 * 1024 * 1024
    assert healthy >= 1
    assert _workers(server) == worker_before  # no worker was lost


def test_a_head_trickling_one_byte_at_a_time_is_408(server):
    answer, sent = trickle(server, b"GET /health HTTP/1.1\r\nX-Slow: ", b"a", every=0.1)
    _assert_error(answer, 408, "request_timeout")
    assert sent < WAIT * 10  # cut off, not served forever


def test_a_body_shorter_than_its_content_length_is_408(server):
    answer = exchange(server, b'POST /predict HTTP/1.1\r\nContent-Length: 100\r\n\r\n{"data"')
    _assert_error(answer, 408, "request_timeout")


def test_a_chunked_body_that_never_ends_slowly_is_408(server):
    head = b"POST /predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    answer, _ = trickle(server, head, b"1\r\n \r\n", every=0.1)
    _assert_error(answer, 408, "request_timeout")


def test_a_chunked_body_that_never_ends_quickly_is_413_and_closed(server):
    head = b"POST /predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
    answer, sent = trickle(server, head, chunk, every=0)
    _assert_error(answer, 413, "body_too_large")
    assert answer.closed_after < WAIT  # the connection was dropped, not fed forever


def test_a_connection_that_sends_nothing_is_closed(server):
    answer = exchange(server)
    assert answer.status is None  # nothing to answer: closed without a response
    assert answer.closed_after < WAIT


def test_normal_traffic_still_flows(server):
    """Keep-alive, pipelining, a body in two pieces, a large valid body."""
    two = b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n" * 2
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(two)
        raw = b""
        sock.settimeout(WAIT)
        while raw.count(b'{"health":"ok"}') < 2:
            raw += sock.recv(65536)
    head = b"POST /predict/label HTTP/1.1\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
    answer = exchange(server, head % len(ROW), ROW[:10], ROW[10:], pause=0.3)
    assert (answer.status, answer.body) == (200, {"prediction": ["setosa"]})
    rows = {"data": [[5.1, 3.5, 1.4, 0.2]] * 1000}
    big = httpx.post(f"http://127.0.0.1:{server.port}/predict/label", json=rows, timeout=WAIT)
    assert big.status_code == 200 and len(big.json()["prediction"]) == 1000


def test_connections_over_the_cap_evict_idle_ones_then_get_503(model_dir, server_factory):
    server = server_factory(model_dir, MAX_CONNECTIONS="4", BODY_TIMEOUT="60")
    url = server.wait_ready()
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(4)]
    assert httpx.get(f"{url}/health", timeout=WAIT).status_code == 200  # evicted one idle
    # The eviction happened before /health was answered, so its end of file is already
    # here; the others stay open until the header timeout (not waited for).
    closed = 0
    for sock in idle:
        sock.settimeout(0.5)
        with contextlib.suppress(TimeoutError):
            closed += sock.recv(1) == b""
        sock.close()
    assert closed >= 1
    # Four requests in flight (bodies still to come): none can be evicted.
    busy = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(4)]
    for sock in busy:
        sock.sendall(b"POST /predict HTTP/1.1\r\nContent-Length: 50\r\n\r\n")
    time.sleep(0.5)
    try:
        answer = exchange(server, b"GET /health HTTP/1.1\r\n\r\n")
        _assert_error(answer, 503, "server_busy")
    finally:
        for sock in busy:
            sock.close()
    assert httpx.get(f"{url}/health", timeout=WAIT).status_code == 200


def _workers(server: Server) -> list[str]:
    pid = server.process.pid
    return sorted(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


def _refused(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=WAIT).text
    found = re.findall(
        r'^kiln_refused_total\{model="model",reason="([a-z_]+)"\} ([0-9.e+]+)$', text, re.M
    )
    return {reason: float(value) for reason, value in found}


def test_refusals_are_counted_in_the_metrics_by_reason(model_dir, server_factory):
    server = server_factory(model_dir, MAX_CONNECTIONS="3", HEADER_TIMEOUT="1")
    url = server.wait_ready()
    before = _refused(url)
    assert before and set(before.values()) == {0.0}  # every reason shown from the start

    _assert_error(
        exchange(server, b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 20000),
        431,
        "headers_too_large",
    )
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(101))
    _assert_error(
        exchange(server, b"GET /health HTTP/1.1\r\n" + many + b"\r\n"), 431, "too_many_headers"
    )
    with socket.create_connection(("127.0.0.1", server.port)) as idle:
        idle.settimeout(WAIT)
        assert idle.recv(1) == b""  # closed after HEADER_TIMEOUT, unanswered
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
    assert httpx.get(f"{url}/health", timeout=WAIT).status_code == 200  # evicts an idle one
    for sock in idle:
        sock.close()

    after = _refused(url)
    assert after["headers_too_large"] == 1
    assert after["too_many_headers"] == 1
    assert after["idle_timeout"] >= 1
    assert after["evicted"] >= 1
    assert after["body_too_large"] == 0


def test_an_idle_keep_alive_connection_is_closed_after_its_requests(server):
    """KEEPALIVE counts from the last response: the timer armed after the first response
    finds a later one and waits again before closing."""
    request = b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(WAIT)
        for _ in range(3):
            sock.sendall(request)
            raw = b""
            while not raw.endswith(b'{"health":"ok"}'):
                chunk = sock.recv(65536)
                assert chunk, raw  # closed before answering
                raw += chunk
        assert sock.recv(1) == b""  # then, idle, closed without a word
