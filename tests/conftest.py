"""Session-wide set-up shared by every suite.

Prefect reads its settings when it is first imported, so the fresh PREFECT_HOME and the
address of this session's own Prefect server are set here, before any test module loads.
The server itself starts only when a test asks for the `prefect_server` fixture.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from kiln.infra.team.seaweedfs import S3Server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def engine_client(timeout: int = 300) -> Any:
    """A docker SDK client for the engine this environment's settings name (DOCKER_HOST, or
    the podman socket in KILN_STATE_DIR), built by kiln/wiring.py as the CLI builds it;
    `timeout`: seconds per engine request."""
    from kiln import wiring
    from kiln.config.settings import get_settings

    return wiring.engine_client(get_settings().with_overrides(engine_timeout=timeout))


_PREFECT_HOME = Path(tempfile.mkdtemp(prefix="kiln-prefect-home-"))
_PREFECT_PORT = free_port()
os.environ.update(
    {
        "PREFECT_HOME": str(_PREFECT_HOME),
        "PREFECT_API_URL": f"http://127.0.0.1:{_PREFECT_PORT}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    }
)


PREFECT_START_TIMEOUT = 300


def _flush_prefect_logs() -> None:
    """Send buffered run logs before the server goes, so none are lost at teardown."""
    if "prefect" in sys.modules:
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """A real Prefect API server (SQLite in the session's PREFECT_HOME) on loopback."""
    api = os.environ["PREFECT_API_URL"]
    log = open(_PREFECT_HOME / "server.log", "wb")  # noqa: SIM115 (open for the session)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(_PREFECT_PORT),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # About 10 s on a quiet machine; well over 90 s on a shared one under load.
        deadline = time.monotonic() + PREFECT_START_TIMEOUT
        while time.monotonic() < deadline:
            if server.poll() is not None:
                output = (_PREFECT_HOME / "server.log").read_text()
                raise RuntimeError(f"prefect server exited: {output}")
            try:
                if httpx.get(f"{api}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            raise RuntimeError(f"prefect server did not answer within {PREFECT_START_TIMEOUT} s")
        yield api
    finally:
        _flush_prefect_logs()
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real SeaweedFS S3 server for the session (own state dir, ports, credentials, bucket).

    The S3 variables s3fs reads (endpoint, key pair, region) are set for the session, so
    `s3://<bucket>/...` URLs reach it; use a prefix of your own per test.
    """
    from kiln.infra.team.seaweedfs import start_seaweedfs, stop_seaweedfs

    state = tmp_path_factory.mktemp("seaweedfs")
    server = start_seaweedfs(state)
    saved = {name: os.environ.get(name) for name in server.env()}
    os.environ.update(server.env())
    try:
        yield server
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        stop_seaweedfs(state)


@pytest.fixture
def kiln_cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`kiln ARGS` through the console script's function (`kiln.cli.app.main`) in this process:
    the same parsing, settings and error handling as the installed command, without a new
    interpreter's imports for every call. `store` becomes KILN_STORE, `env` is set too;
    settings are read afresh for each call."""
    from kiln.cli.app import main
    from kiln.config.settings import get_settings

    def run(
        *args: str, store: object | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        if store is not None:
            monkeypatch.setenv("KILN_STORE", str(getattr(store, "url", store)))
        capsys.readouterr()  # only this call's output
        get_settings.cache_clear()
        try:
            main(list(args))
            status = 0
        except SystemExit as exited:
            status = exited.code if isinstance(exited.code, int) else 1
        finally:
            get_settings.cache_clear()
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["kiln", *args], status, out, err)

    return run
