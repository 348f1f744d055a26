"""`kiln run` through the entry point against this session's real Prefect server."""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from flows.pipeline import RunResult
from kiln.cli.app import main
from kiln.config.settings import get_settings
from kiln.store.artifact_store import ArtifactStore

pytestmark = pytest.mark.usefixtures("prefect_server")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _BrokenStorage(BaseHTTPRequestHandler):
    """A registry whose storage fails: /v2/ answers (the check before training passes),
    every other request is a 500 with the registry's error body, so the build step fails."""

    def _answer(self) -> None:
        ok = self.command == "GET" and self.path == "/v2/"
        body = b"{}" if ok else b'{"errors":[{"code":"UNKNOWN","message":"storage failed"}]}'
        self.send_response(200 if ok else 500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _answer  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet tests
        pass


@pytest.fixture
def broken_registry() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BrokenStorage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_failed_run_ends_in_one_summary_line(
    tmp_path: Path, monkeypatch, capsys, broken_registry: str
) -> None:
    for key in list(os.environ):
        if key.startswith("KILN_"):
            monkeypatch.delenv(key)
    kubeconfig = tmp_path / "kubeconfig"  # loads (the check before the run) but is never used
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: k, cluster: {{server: 'http://127.0.0.1:{closed_port()}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("KILN_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("KILN_REGISTRY", broken_registry)  # the build fails
    monkeypatch.setenv("KILN_RETRIES", "0")
    monkeypatch.setenv("KILN_REPOSITORY", "cli-test/failed-run")
    get_settings.cache_clear()

    with pytest.raises(SystemExit) as exited:
        main(["run", "--target", "kubernetes", "--seed", "11"])
    _, err = capsys.readouterr()

    assert exited.value.code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: kiln run failed at build-image: "), err
    assert re.search(r"\| flow run [0-9a-f-]{36} \|", last)
    assert "| retry: " in last and "(stored steps are reused)" in last
    assert re.search(r"\| see http://127\.0\.0\.1:\d+/runs/flow-run/[0-9a-f-]{36}$", last)
    assert "Traceback" not in err and err.count("error:") == 1
    assert len(ArtifactStore(tmp_path / "store").list_versions()) == 1  # trained and stored


def _summary(**changes: Any) -> RunResult:
    summary: dict[str, Any] = {
        "version": "abc123",
        "data_hash": "0" * 64,
        "task": "classification",
        "model": "svm",
        "metrics": {"accuracy": 0.97},
        "decision": {"outcome": "same", "reason": "abc123 is the model local runs already"},
        "shipped": False,
        "sample_input": {"data": [[5.1, 3.5, 1.4, 0.2]]},
        "pruned": [],
    }
    return RunResult(**{**summary, **changes})


def test_a_run_with_nothing_to_do_says_where_the_model_answers(capsys) -> None:
    from kiln.cli.run import print_summary

    print_summary(_summary(target="local", endpoint="http://127.0.0.1:8000"), "text", "r1", None)
    out = capsys.readouterr().out
    assert "serving   local at http://127.0.0.1:8000" in out
    assert "curl -s -X POST http://127.0.0.1:8000/predict" in out and "[[5.1,3.5,1.4,0.2]]" in out
    assert "image" not in out


def test_a_refused_run_shows_no_endpoint(capsys) -> None:
    from kiln.cli.run import print_summary

    refused = _summary(decision={"outcome": "refuse", "reason": "worse"})
    print_summary(refused, "text", "r1", None)
    out = capsys.readouterr().out
    assert "serving" not in out and "curl" not in out


def test_a_run_that_shipped_the_same_model_again_says_why(capsys) -> None:
    from kiln.cli.run import print_summary

    again = _summary(
        shipped=True,
        shipped_again="http://127.0.0.1:8000 does not answer as abc123 (connection refused)",
        image="127.0.0.1:5000/kiln/iris@sha256:" + "0" * 64,
        builder="layer",
        target="local",
        endpoint="http://127.0.0.1:8000",
    )
    print_summary(again, "text", "r1", None)
    out = capsys.readouterr().out
    assert "shipped   again: http://127.0.0.1:8000 does not answer as abc123" in out
    assert "serving   local at http://127.0.0.1:8000" in out
