"""HTTP/1.1 edges at the transport, against the real server over raw sockets: pipelined
requests with a bad one behind a good one, upgrades the server does not take (h2c,
websocket), CONNECT, 405 with ``Allow`` and HEAD on GET routes."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from servers import WAIT, Server

ROW = b'{"data": [[5.1, 3.5, 1.4, 0.2]]}'
SETOSA = {"prediction": ["setosa"]}


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    started = Server(model_dir, tmp_path_factory.mktemp("transport"), workers=1, KEEPALIVE="5")
    started.wait_ready()
    yield started
    started.kill_group()


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self):
        return json.loads(self.body)


def _read_exactly(sock: socket.socket, buffer: bytearray, size: int) -> bool:
    while len(buffer) < size:
        chunk = sock.recv(65536)
        if not chunk:
            return False
        buffer += chunk
    return True


def read_responses(sock: socket.socket, count: int, head: bool = False) -> list[Response]:
    """Up to ``count`` responses (Content-Length framed), fewer if the server closes."""
    sock.settimeout(WAIT)
    buffer = bytearray()
    answers: list[Response] = []
    while len(answers) < count:
        while b"\r\n\r\n" not in buffer:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return answers
            buffer += chunk
        raw_head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
        lines = raw_head.decode("latin-1").split("\r\n")
        assert lines[0].startswith("HTTP/1.1 "), lines[0]
        response = Response(int(lines[0].split(" ", 2)[1]))
        for line in lines[1:]:
            name, _, value = line.partition(":")
            response.headers[name.strip().lower()] = value.strip()
        length = 0 if head else int(response.headers.get("content-length", "0"))
        buffer = bytearray(rest)
        if not _read_exactly(sock, buffer, length):
            return answers
        response.body, buffer = bytes(buffer[:length]), buffer[length:]
        answers.append(response)
    return answers


def send(server: Server, data: bytes, count: int, head: bool = False) -> list[Response]:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(data)  # one write: the requests share a TCP segment
        return read_responses(sock, count, head=head)


def post(path: bytes, body: bytes = ROW, extra: bytes = b"") -> bytes:
    head = b"POST %s HTTP/1.1\r\nHost: kiln\r\nContent-Type: application/json\r\n" % path
    return head + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body


def _error(response: Response, status: int, code: str) -> None:
    assert response.status == status, response
    assert response.headers["content-type"] == "application/json", response
    assert response.json()["code"] == code, response


# -- pipelining ---------------------------------------------------------------------------


def test_a_good_request_pipelined_before_a_malformed_one_is_answered_first(server):
    answers = send(server, post(b"/predict/label") + b"GARBAGE\r\n\r\n", 3)
    assert [a.status for a in answers] == [200, 400], answers
    assert answers[0].json() == SETOSA
    _error(answers[1], 400, "bad_request")


def test_a_431_for_the_second_request_never_comes_back_first(server):
    many = b"".join(b"X-H%d: 1\r\n" % i for i in range(101))
    second = b"GET /health HTTP/1.1\r\nHost: kiln\r\n" + many + b"\r\n"
    answers = send(server, post(b"/predict/label") + second, 3)
    assert [a.status for a in answers] == [200, 431], answers
    assert answers[0].json() == SETOSA
    _error(answers[1], 431, "too_many_headers")


def test_an_oversized_head_behind_good_requests_is_answered_last(server):
    huge = b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    good = b"GET /health HTTP/1.1\r\nHost: kiln\r\n\r\n"
    answers = send(server, good + post(b"/predict/label") + huge, 4)
    assert [a.status for a in answers] == [200, 200, 431], answers
    assert answers[0].json() == {"health": "ok"}
    assert answers[1].json() == SETOSA
    _error(answers[2], 431, "headers_too_large")


def test_a_head_begun_behind_a_request_is_charged_what_it_had_in_that_read(server):
    """Its first 10 KB arrive with a whole request, the next 10 KB later: 20 KB in all,
    over the 16 KB limit, though neither read is."""
    big = b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(post(b"/predict/label") + big[:10000])
        [first] = read_responses(sock, 1)
        sock.sendall(big[10000:])
        answers = read_responses(sock, 2)
    assert (first.status, first.json()) == (200, SETOSA)
    assert len(answers) == 1, answers
    _error(answers[0], 431, "headers_too_large")


def test_many_pipelined_requests_are_answered_in_order(server):
    batch = b"".join(post(b"/predict/label") for _ in range(20))
    batch += b"GET /health HTTP/1.1\r\nHost: kiln\r\nConnection: close\r\n\r\n"
    answers = send(server, batch, 22)
    assert [a.status for a in answers] == [200] * 21
    assert [a.json() for a in answers] == [SETOSA] * 20 + [{"health": "ok"}]


# -- upgrades the server does not take -----------------------------------------------------

H2C = (  # what curl --http2 adds on plain http
    b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
    b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
)


def test_an_h2c_upgrade_is_ignored_and_the_body_kept(server):
    """What `curl --http2` sends on plain http: answered over HTTP/1.1, body read; the
    connection stays HTTP/1.1 for the next request."""
    answers = send(server, post(b"/predict/label", extra=H2C) + post(b"/predict/label"), 2)
    assert [(a.status, a.json()) for a in answers] == [(200, SETOSA)] * 2


def test_an_h2c_upgrade_with_a_chunked_body_keeps_the_body(server):
    chunked = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (10, ROW[:10], len(ROW) - 10, ROW[10:])
    request = (
        b"POST /predict/label HTTP/1.1\r\nHost: kiln\r\nContent-Type: application/json\r\n"
        + H2C
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + chunked
    )
    answers = send(server, request + b"GET /health HTTP/1.1\r\nHost: kiln\r\n\r\n", 2)
    assert [(a.status, a.json()) for a in answers] == [(200, SETOSA), (200, {"health": "ok"})]


def test_an_h2c_upgrade_whose_body_arrives_later_keeps_it(server):
    request = post(b"/predict/label", extra=H2C)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(request[: -len(ROW) + 5])
        time.sleep(0.2)  # the rest in another segment (no timing is asserted)
        sock.sendall(request[-len(ROW) + 5 :])
        answers = read_responses(sock, 1)
    assert [(a.status, a.json()) for a in answers] == [(200, SETOSA)]


def test_a_websocket_upgrade_gets_json_not_a_handshake(server):
    request = (
        b"GET /ws HTTP/1.1\r\nHost: kiln\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    answers = send(server, request, 1)
    assert len(answers) == 1 and answers[0].status != 101, answers
    _error(answers[0], 404, "not_found")
    on_a_route = request.replace(b"/ws", b"/health")
    assert [(a.status, a.json()) for a in send(server, on_a_route, 1)] == [(200, {"health": "ok"})]


# -- request targets the server has no use for ----------------------------------------------


def _log_after(server: Server, mark: int, needle: str) -> list[str]:
    """The log lines from ``mark`` on, once one containing ``needle`` has arrived."""
    deadline = time.monotonic() + WAIT
    while not any(needle in line for line in server.lines[mark:]):
        assert time.monotonic() < deadline, server.lines[mark:]
        time.sleep(0.05)
    return server.lines[mark:]


@pytest.mark.parametrize(
    "request_line",
    [b"CONNECT example.com:443 HTTP/1.1", b"GET example.com HTTP/1.1"],
)
def test_a_target_that_is_not_a_path_is_400_without_an_error_in_the_log(server, request_line):
    mark = len(server.lines)
    answers = send(server, request_line + b"\r\nHost: example.com:443\r\n\r\n", 1)
    assert len(answers) == 1, answers
    _error(answers[0], 400, "bad_request")
    logged = _log_after(server, mark, "refused (400)")
    assert not any("ERROR" in line or "Traceback" in line for line in logged), logged


def test_an_absolute_form_target_is_served(server):
    request = b"GET http://kiln/health HTTP/1.1\r\nHost: kiln\r\n\r\n"
    assert [(a.status, a.json()) for a in send(server, request, 1)] == [(200, {"health": "ok"})]


# -- methods -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        (b"DELETE", b"/health", {"GET", "HEAD"}),
        (b"POST", b"/metadata", {"GET", "HEAD"}),
        (b"GET", b"/predict", {"POST"}),
        (b"PUT", b"/v2/models/model/infer", {"POST"}),
    ],
)
def test_a_405_names_the_allowed_methods(server, method, path, allowed):
    request = b"%s %s HTTP/1.1\r\nHost: kiln\r\nContent-Length: 0\r\n\r\n" % (method, path)
    [answer] = send(server, request, 1)
    _error(answer, 405, "method_not_allowed")
    assert {m.strip() for m in answer.headers["allow"].split(",")} == allowed


@pytest.mark.parametrize("path", [b"/health", b"/metadata", b"/v2/health/live", b"/metrics"])
def test_head_answers_like_get_without_a_body(server, path):
    get = b"GET %s HTTP/1.1\r\nHost: kiln\r\n\r\n" % path
    head = b"HEAD %s HTTP/1.1\r\nHost: kiln\r\n\r\n" % path
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head)
        [answer] = read_responses(sock, 1, head=True)
        sock.sendall(get)  # the same connection: no body bytes were left behind
        [full] = read_responses(sock, 1)
    assert answer.status == full.status == 200
    assert answer.body == b""
    assert answer.headers["content-type"] == full.headers["content-type"]
    if path != b"/metrics":  # its length moves with every scrape
        assert answer.headers["content-length"] == full.headers["content-length"]


def test_the_open_head_of_a_pipelined_read_is_measured_from_its_start():
    from serving.protocol import _open_head_bytes

    get = b"GET /health HTTP/1.1\r\nHost: kiln\r\n\r\n"
    partial = b"GET /health HTTP/1.1\r\nX-A: 1"
    assert _open_head_bytes(get + post(b"/predict") + partial, 0) == len(partial)
    assert _open_head_bytes(get + b"\r\n" + partial, 0) == len(partial)  # blank line between
    assert _open_head_bytes(get + get, 0) == 0
    chunked = b"POST /predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\n0\r\n\r\n"
    body_and_partial = len(chunked) - chunked.index(b"\r\n\r\n") - 4 + len(partial)
    assert _open_head_bytes(chunked + partial, 0) == body_and_partial  # an upper bound
