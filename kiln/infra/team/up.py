"""`kiln up --team` and `kiln down`: every part a team runs, on loopback, in order.

    PostgreSQL  ->  Prefect server on it (migrated once, before anything connects)
    SeaweedFS (S3) with a bucket  ->  result storage block, set as the default
    process work pool, one rollout concurrency limit per target  ->  workers

State lives in <state dir>/team. Each step is idempotent: a second `up` finds what runs
and only prints it again. The exports at the end let the caller's shell (and anything it
starts) use the same server, store and results as the workers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kiln.config.settings import TARGETS
from kiln.infra.team import orchestration, postgres, server, workers
from kiln.infra.team.config import TeamConfig
from kiln.infra.team.limits import rollout_limit_name
from kiln.infra.team.run_logging import write_logging_config

log = logging.getLogger(__name__)

STORE_PREFIX = "models"
RESULTS_PREFIX = "prefect-results"
# Library loggers whose records Prefect sends to a run's log (registry retries, builds, rollouts).
EXTRA_LOGGERS = "kiln,flows"


@dataclass
class TeamUp:
    parts: list[tuple[str, str]] = field(default_factory=list)  # (part, what runs where)
    exports: dict[str, str] = field(default_factory=dict)


def _said(started: bool) -> str:
    return "started" if started else "already running"


def team_up(
    config: TeamConfig, machine_env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> TeamUp:
    """Start (or find) every part; `machine_env` is what the workers need to reach this
    machine's registry and container engine (scripts/infra.sh's exports). Workers start
    in `cwd` (default: the current folder, the repository root), where flow runs of
    deployments without a pull step find their entrypoints."""
    from kiln.infra.team import seaweedfs

    result = TeamUp()
    config.home.mkdir(parents=True, exist_ok=True)

    pg = config.postgres
    if postgres.init_cluster(pg):
        server.forget_migration(config.server())
    started = postgres.start_cluster(pg)
    postgres.ensure_database(pg)
    result.parts.append(("postgres", f"{_said(started)}: 127.0.0.1:{pg.port}, cluster {pg.data}"))

    api = config.server(pg.url())
    started = server.start(api)
    result.parts.append(("prefect", f"{_said(started)}: {api.api_url} (PostgreSQL)"))

    s3_was_up = seaweedfs.running_seaweedfs(config.home) is not None
    s3 = seaweedfs.start_seaweedfs(config.home, bucket=config.bucket, s3_port=config.s3_port)
    result.parts.append(("seaweedfs", f"{_said(not s3_was_up)}: {s3.endpoint}, bucket {s3.bucket}"))

    # The block and the limits are created with the S3 variables set, as the workers see them.
    block = orchestration.ensure_result_storage(api.api_url, f"s3://{s3.bucket}/{RESULTS_PREFIX}")
    result.parts.append(("results", f"{block} at s3://{s3.bucket}/{RESULTS_PREFIX}"))
    created = orchestration.ensure_work_pool(api.api_url, config.pool)
    result.parts.append(("pool", f"{config.pool} (process) {'created' if created else 'exists'}"))
    orchestration.ensure_crash_detection(api.api_url, config.crash_after)
    result.parts.append(("crashes", f"a run without heartbeat for {config.crash_after} s: Crashed"))
    orchestration.ensure_rollout_limits(api.api_url, TARGETS)
    limits = ", ".join(rollout_limit_name(t) for t in TARGETS)
    result.parts.append(("limits", f"{limits} (1 slot each)"))

    exports = {
        "PREFECT_API_URL": api.api_url,
        "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": block,
        "KILN_STORE": f"s3://{s3.bucket}/{STORE_PREFIX}",
        "PREFECT_DEFAULT_WORK_POOL_NAME": config.pool,
        **s3.env(),
    }
    env = worker_environment(config, exports, machine_env or {})
    for number in range(1, config.workers + 1):
        worker = config.worker(number)
        started = workers.start_worker(worker, env, cwd or Path.cwd(), limit=config.runs_per_worker)
        pid = workers.worker_pid(worker)
        result.parts.append((worker.name, f"{_said(started)}: pool {config.pool}, pid {pid}"))
    result.exports = exports
    return result


# How often a worker asks its pool for runs: a retried run waits half of this on average.
# One request a second per worker is nothing to the API server.
WORKER_QUERY_SECONDS = 1


def worker_environment(
    config: TeamConfig, exports: Mapping[str, str], machine_env: Mapping[str, str]
) -> dict[str, str]:
    """A worker's environment: this process's, without its Prefect profile, plus the
    machine's infrastructure and the team's exports. Flow runs inherit it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(machine_env)
    env.update(exports)
    env.update(
        {
            "PREFECT_HOME": str(config.home / "worker-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_EXTRA_LOGGERS": EXTRA_LOGGERS,
            # ... and at INFO: registry, build and rollout steps in the run's log in the UI
            "PREFECT_LOGGING_SETTINGS_PATH": str(write_logging_config(config.home / "logging.yml")),
            # poll the pool every 2 s (Prefect's default is 10 s): a retried or new run waits
            # about a second for a worker, not five (bench/bench_team.py's resume)
            "PREFECT_WORKER_QUERY_SECONDS": str(WORKER_QUERY_SECONDS),
            # a heartbeat per run, so a run whose machine died is marked Crashed
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(heartbeat_seconds(config)),
        }
    )
    return env


def heartbeat_seconds(config: TeamConfig) -> int:
    """Two heartbeats at least within the crash window; Prefect's minimum is 30 s."""
    return max(30, config.crash_after // 3)


def team_down(config: TeamConfig, max_workers: int = 16) -> list[str]:
    """Stop every part `team_up` started, workers first; the names of what was stopped.
    Data (database, objects, credentials) stays for the next `up`."""
    from kiln.infra.team import seaweedfs

    stopped = []
    for number in range(1, max_workers + 1):
        worker = config.worker(number)
        if workers.stop_worker(worker):
            stopped.append(worker.name)
    if seaweedfs.stop_seaweedfs(config.home):
        stopped.append("seaweedfs")
    if server.stop(config.server()):
        stopped.append("prefect")
    if postgres.stop_cluster(config.postgres):
        stopped.append("postgres")
    return stopped
