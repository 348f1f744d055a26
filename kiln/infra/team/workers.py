"""Process workers of the team's work pool, each a session (process group) of its own.

A worker that has run a flow ignores the first SIGINT (it begins a graceful shutdown) and
exits on the second, so `stop_worker` sends SIGINT twice, then SIGKILLs the group. Flow
runs are started by the worker in sessions of their own and are not stopped with it:
a run in progress finishes (or is marked crashed by the server when its process dies).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kiln.config.errors import KilnError
from kiln.infra import daemon

MARKER = "prefect worker start"


@dataclass(frozen=True)
class Worker:
    home: Path  # <team dir>
    name: str  # e.g. kiln-worker-1; also the worker's name in the UI
    pool: str

    @property
    def pid_file(self) -> Path:
        return self.home / "run" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / f"{self.name}.log"


def worker_pid(worker: Worker) -> int | None:
    return daemon.running(worker.pid_file, MARKER)


def start_worker(
    worker: Worker, env: Mapping[str, str], cwd: Path, limit: int = 1, timeout: float = 90
) -> bool:
    """Start the worker unless it runs; True when started now. Returns once it has
    registered with the API (its first heartbeat), so runs can be scheduled right away."""
    if worker_pid(worker) is not None:
        return False
    argv = [
        sys.executable,
        "-m",
        "prefect",
        "worker",
        "start",
        "--pool",
        worker.pool,
        "--name",
        worker.name,
        "--type",
        "process",
        "--limit",  # flow runs at once: with one each, the pool spreads runs over workers
        str(limit),
    ]
    # `python` in the pool's command (kiln/infra/team/orchestration.py) is this interpreter
    path = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    env = {**env, "PATH": path}
    pid = daemon.spawn(argv, env=env, log=worker.log_file, pid_file=worker.pid_file, cwd=cwd)
    deadline = time.monotonic() + timeout
    while not _registered(worker, env["PREFECT_API_URL"]):
        if daemon.exited(pid) or time.monotonic() > deadline:
            stop_worker(worker)
            raise KilnError(
                f"worker {worker.name} did not start; see {worker.log_file}:\n"
                f"{daemon.tail(worker.log_file, 8)}"
            )
        time.sleep(0.5)
    return True


def _registered(worker: Worker, api_url: str) -> bool:
    import httpx

    try:
        reply = httpx.post(f"{api_url}/work_pools/{worker.pool}/workers/filter", timeout=5)
    except httpx.HTTPError:
        return False
    if reply.status_code != 200:
        return False
    return any(
        item.get("name") == worker.name and item.get("status") == "ONLINE" for item in reply.json()
    )


def stop_worker(worker: Worker, grace: float = 20) -> bool:
    """SIGINT twice (a worker that ran a flow ignores the first), then SIGKILL the group."""
    steps = [(signal.SIGINT, 3.0), (signal.SIGINT, grace)]
    return daemon.stop_group(worker.pid_file, MARKER, steps)
