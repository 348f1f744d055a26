"""A Prefect server in the background, for the UI, deployments and schedules (`kiln up`)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import httpx

from flows.errors import KilnError


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
    log_fd = os.open(state / "logs" / "prefect.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        # A daemon in its own session: it outlives `kiln up`, and `kiln down` stops its group.
        pid = os.posix_spawn(
            argv[0],
            argv,
            env,
            setsid=True,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log_fd, 1),
                (os.POSIX_SPAWN_DUP2, log_fd, 2),
            ],
        )
    finally:
        os.close(log_fd)
    (state / "run" / "prefect.pid").write_text(str(pid))
    deadline = time.monotonic() + timeout  # about 10 s here when idle, minutes under load
    while not healthy(url):
        exited = os.waitpid(pid, os.WNOHANG)[0] == pid
        if exited or time.monotonic() > deadline:
            if not exited:  # never leave a half-started server behind
                stop_prefect_server(state)
            raise KilnError(
                f"the Prefect server did not start on {host}:{port}; "
                f"see {state / 'logs' / 'prefect.log'}"
            )
        time.sleep(0.5)
    return url


def stop_prefect_server(state: Path) -> bool:
    """Stop the server `start_prefect_server` started; False when none was running."""
    pid_file = state / "run" / "prefect.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text())
    pid_file.unlink()
    try:
        os.killpg(pid, signal.SIGTERM)  # the server and the processes it started
    except ProcessLookupError:
        return False
    for _ in range(100):
        if _gone(pid):
            return True
        time.sleep(0.1)
    os.killpg(pid, signal.SIGKILL)
    return True


def _gone(pid: int) -> bool:
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child: reap it
            return True
    except ChildProcessError:
        pass  # started by another process (an earlier `kiln up`)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False
