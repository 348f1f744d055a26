"""The team's Prefect server on PostgreSQL: migrate once, then start.

`prefect server start` migrates by itself on start-up, and two API processes starting
at once on a fresh database race that migration (duplicate keys). So the schema is
brought to head by one `prefect server database upgrade` first, and every server process
starts with migrate-on-start off: any number of them can then start together.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from kiln.config.errors import KilnError
from kiln.infra import daemon

MARKER = "prefect server start"


@dataclass(frozen=True)
class TeamServer:
    home: Path  # <team dir>: PREFECT_HOME, logs and pid files below it
    database_url: str
    port: int
    host: str = "127.0.0.1"

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    @property
    def pid_file(self) -> Path:
        return self.home / "run" / "prefect-server.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "prefect-server.log"

    def environment(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("PREFECT_")  # the caller's profile must not leak in
        }
        env.update(
            {
                "PREFECT_HOME": str(self.home / "prefect-home"),
                "PREFECT_API_DATABASE_CONNECTION_URL": self.database_url,
                "PREFECT_API_DATABASE_MIGRATE_ON_START": "false",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_UI_API_URL": self.api_url,
            }
        )
        return env


def healthy(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _migrated_marker(server: TeamServer) -> Path:
    return server.home / "prefect-schema"


def forget_migration(server: TeamServer) -> None:
    """The database is new (a fresh cluster): the next start migrates it."""
    _migrated_marker(server).unlink(missing_ok=True)


def migrate(server: TeamServer) -> None:
    """Bring the database schema to head, once per Prefect version (a marker file records
    it: the upgrade command alone takes seconds even when there is nothing to do)."""
    import prefect

    marker = _migrated_marker(server)
    if marker.exists() and marker.read_text().strip() == prefect.__version__:
        return
    server.log_file.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"],
        env=server.environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    with server.log_file.open("a") as out:
        out.write(done.stdout + done.stderr)
    if done.returncode != 0:
        raise KilnError(
            f"migrating the Prefect database failed (exit {done.returncode}); "
            f"see {server.log_file}:\n{daemon.tail(server.log_file, 8)}"
        )
    marker.write_text(prefect.__version__ + "\n")


def start(server: TeamServer, timeout: float = 120) -> bool:
    """Migrate, then start the server unless ours runs; True when started now."""
    if daemon.running(server.pid_file, MARKER) and healthy(server.api_url):
        return False
    if healthy(server.api_url):
        raise KilnError(
            f"a Prefect server not started by `kiln up --team` answers at {server.api_url} "
            "(the SQLite one of `kiln up`?): stop it with `kiln down`, or pick another port"
        )
    migrate(server)
    argv = [
        sys.executable,
        "-m",
        "prefect",
        "server",
        "start",
        "--host",
        server.host,
        "--port",
        str(server.port),
    ]
    pid = daemon.spawn(
        argv, env=server.environment(), log=server.log_file, pid_file=server.pid_file
    )
    deadline = time.monotonic() + timeout
    while not healthy(server.api_url):
        if daemon.exited(pid) or time.monotonic() > deadline:
            daemon.stop_group(server.pid_file, MARKER, [(signal.SIGTERM, 5)])
            raise KilnError(
                f"the Prefect server did not start at {server.api_url}; see {server.log_file}:"
                f"\n{daemon.tail(server.log_file, 8)}"
            )
        time.sleep(0.5)
    return True


def stop(server: TeamServer) -> bool:
    return daemon.stop_group(server.pid_file, MARKER, [(signal.SIGTERM, 15)])
