"""kiln/infra/engine.py's client: its API version comes from `GET /_ping`, never `/version`.

The engine here is a STAND-IN (a few lines of http.server) that records the paths it is
asked for: the point is which requests the client makes, which a real engine cannot show.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest

from kiln.infra.engine import docker_client
from tests.support.http_standins import QuietHandler


class _Engine(QuietHandler):
    asked: list[str] = []
    api_version: str | None = "1.40"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        type(self).asked.append(self.path)
        body = b'{"ApiVersion": "1.39"}' if self.path.endswith("/version") else b"OK"
        headers = [("Api-Version", self.api_version)] if self.api_version else []
        self.reply(200, body, headers)


@pytest.fixture
def engine() -> Iterator[type[_Engine]]:
    handler = type("Engine", (_Engine,), {"asked": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    handler.url = f"tcp://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield handler
    server.shutdown()
    server.server_close()


def test_the_version_comes_from_ping_in_one_request(engine) -> None:
    client = docker_client(engine.url, timeout=10)
    assert client.api.api_version == "1.40"
    assert engine.asked == ["/_ping"]
    client.close()


def test_an_engine_that_does_not_say_its_version_is_asked_for_it(engine) -> None:
    engine.api_version = None
    client = docker_client(engine.url, timeout=10)
    assert client.api.api_version == "1.39"  # the SDK's own negotiation
    assert engine.asked == ["/_ping", "/version"]
    client.close()
