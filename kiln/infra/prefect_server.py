"""A Prefect server in the background, for the UI, deployments and schedules (`kiln up`)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import httpx

from kiln.config.errors import KilnError
from kiln.infra import daemon

MARKER = "prefect server start"  # what a live pid of ours runs


def api_url(host: str, port: int) -> str:
    return f"http://{host}:{port}/api"


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def start_prefect_server(
    state: Path, host: str = "127.0.0.1", port: int = 4200, timeout: float = 180.0
) -> str:
    """Start `prefect server start` (SQLite in PREFECT_HOME) unless one answers already."""
    url = api_url(host, port)
    if healthy(url):
        return url
    (state / "run").mkdir(parents=True, exist_ok=True)
    (state / "logs").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    argv = [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]
    # A daemon in its own session: it outlives `kiln up`, and `kiln down` stops its group.
    log = state / "logs" / "prefect.log"
    pid = daemon.spawn(argv, env=env, log=log, pid_file=state / "run" / "prefect.pid")
    deadline = time.monotonic() + timeout  # seconds when idle, far longer under load
    while not healthy(url):
        exited = daemon.exited(pid)
        if exited or time.monotonic() > deadline:
            if not exited:  # never leave a half-started server behind
                stop_prefect_server(state)
            raise KilnError(f"the Prefect server did not start on {host}:{port}; see {log}")
        time.sleep(0.5)
    return url


def stop_prefect_server(state: Path) -> bool:
    """Stop the server `start_prefect_server` started; False when none was running."""
    # SIGTERM reaches the server and the processes it started.
    return daemon.stop_group(state / "run" / "prefect.pid", MARKER, [(signal.SIGTERM, 10)])
