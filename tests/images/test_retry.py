"""One retry policy: a build makes at most KILN_RETRIES + 1 attempts, whichever layer retries.

A real HTTP server stands in for a registry that is briefly away: it answers every request
503 and counts them, so the tests see how often kiln really asked.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prefect import flow
from prefect.logging import disable_run_logger

from flows.pipeline import build_task, retain_task, retried
from kiln.config.errors import BuildError
from kiln.config.settings import KilnSettings
from kiln.images.build import BuildOptions, build_image
from kiln.images.registry import Registry
from kiln.infra.retry import RetryPolicy
from kiln.store.artifact_store import ArtifactStore


class Unavailable(BaseHTTPRequestHandler):
    requests: list[str]

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.requests.append(self.path)
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def unavailable_registry() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    handler = type("Handler", (Unavailable,), {"requests": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def store(tmp_path) -> tuple[str, str]:
    store = ArtifactStore(tmp_path / "store")
    version = store.put(b"model", {0: "a", 1: "b"}, {"metrics": {}})
    return store.url, version


def test_policy_from_settings_matches_prefect_options():
    policy = RetryPolicy.from_settings(KilnSettings(retries=3, retry_delay=2.0))
    assert policy.attempts == 4 and list(policy.delays()) == [2.0, 4.0, 8.0]
    assert policy.task_options() == {
        "retries": 3,
        "retry_delay_seconds": [2.0, 4.0, 8.0],
        "retry_jitter_factor": 0.5,
    }
    assert policy.once().attempts == 1 and policy.once().task_options()["retries"] == 0
    with pytest.raises(ValueError, match="at least one attempt"):
        RetryPolicy(attempts=0)


def test_a_build_on_its_own_tries_retries_plus_one_times(unavailable_registry, store):
    host, seen = unavailable_registry
    policy = RetryPolicy.from_settings(KilnSettings(retries=2, retry_delay=0.0))
    with Registry(host, retry=policy) as registry, pytest.raises(BuildError) as err:
        build_image(ArtifactStore(store[0]), store[1], registry, BuildOptions(registry=host))
    assert "after 3 attempts" in str(err.value) and "HTTP 503" in str(err.value)
    assert seen == ["/v2/"] * 3


@pytest.mark.usefixtures("prefect_server")
def test_the_build_task_tries_retries_plus_one_times_in_all(unavailable_registry, store):
    host, seen = unavailable_registry
    settings = KilnSettings(registry=host, retries=2, retry_delay=0.0)

    @flow
    def build_once() -> None:
        retried(build_task, settings)(store[0], store[1], settings)

    state = build_once(return_state=True)
    assert state.is_failed()
    with pytest.raises(BuildError, match="HTTP 503"):
        state.result()
    assert seen == ["/v2/"] * 3  # not (retries + 1) squared: one layer retries


def test_the_build_task_body_tries_once_and_leaves_retries_to_prefect(unavailable_registry, store):
    host, seen = unavailable_registry
    settings = KilnSettings(registry=host, retries=2, retry_delay=0.0)
    with disable_run_logger(), pytest.raises(BuildError, match="HTTP 503"):
        build_task.fn(store[0], store[1], settings)
    assert seen == ["/v2/"]


def test_the_retain_task_body_prunes_the_store(tmp_path):
    the_store = ArtifactStore(tmp_path / "retain")
    for i in range(3):
        the_store.put(f"model {i}".encode(), {0: "a", 1: "b"}, {"metrics": {}})
    newest = the_store.list_versions()[0].version
    with disable_run_logger():
        summary = retain_task.fn(the_store.url, 1, KilnSettings())
    assert len(summary["removed_versions"]) == 2 and newest not in summary["removed_versions"]
    assert summary["deleted_images"] == [] and summary["dry_run"] is False
    assert [v.version for v in the_store.list_versions()] == [newest]
