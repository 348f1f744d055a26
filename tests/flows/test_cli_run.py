"""`kiln run` through the entry point against this session's real Prefect server."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest

from flows.cli import main
from flows.settings import get_settings
from flows.store import ArtifactStore

pytestmark = pytest.mark.usefixtures("prefect_server")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_failed_run_ends_in_one_summary_line(tmp_path: Path, monkeypatch, capsys) -> None:
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
    monkeypatch.setenv("KILN_REGISTRY", f"127.0.0.1:{closed_port()}")  # the build fails
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
