"""`kiln up` starts a Prefect server for the UI and `kiln down` stops it (a real server)."""

import httpx

from kiln.infra.prefect_server import start_prefect_server, stop_prefect_server
from tests.conftest import free_port


def test_start_is_idempotent_and_stop_stops(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))  # not the session's database
    port = free_port()
    url = start_prefect_server(tmp_path / "state", port=port)
    try:
        assert url == f"http://127.0.0.1:{port}/api"
        assert httpx.get(f"{url}/health", timeout=5).json() is True
        pid = (tmp_path / "state" / "run" / "prefect.pid").read_text()
        assert start_prefect_server(tmp_path / "state", port=port) == url  # already up
        assert (tmp_path / "state" / "run" / "prefect.pid").read_text() == pid
    finally:
        assert stop_prefect_server(tmp_path / "state") is True
    try:
        httpx.get(f"{url}/health", timeout=2)
        raise AssertionError("the server still answers after stop")
    except httpx.ConnectError:
        pass
    assert stop_prefect_server(tmp_path / "state") is False
