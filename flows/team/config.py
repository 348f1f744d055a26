"""Where and how the team's parts run: ports, folders, names. Defaults fit one machine;
KILN_TEAM_* variables change them (tests give every part ports of their own)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from flows.errors import KilnError
from flows.team.postgres import Postgres
from flows.team.server import TeamServer
from flows.team.workers import Worker

NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


@dataclass(frozen=True)
class TeamConfig:
    home: Path  # the team's state: database, objects, logs, pid files
    prefect_port: int = 4200
    postgres_port: int = 54320
    s3_port: int = 8333
    bucket: str = "kiln"
    pool: str = "kiln"
    workers: int = 2
    runs_per_worker: int = 1  # a worker takes one flow run at a time: the pool spreads them
    crash_after: int = 90  # seconds without a heartbeat before a run is marked Crashed

    @property
    def postgres(self) -> Postgres:
        return Postgres(self.home / "postgres", self.postgres_port)

    def server(self, database_url: str = "") -> TeamServer:
        return TeamServer(self.home, database_url, self.prefect_port)

    def worker(self, number: int) -> Worker:
        return Worker(self.home, f"kiln-worker-{number}", self.pool)

    @classmethod
    def from_env(
        cls, state: Path, environ: Mapping[str, str], prefect_port: int | None = None
    ) -> TeamConfig:
        """KILN_TEAM_DIR (default <state dir>/team), KILN_TEAM_POSTGRES_PORT, KILN_TEAM_S3_PORT,
        KILN_TEAM_BUCKET, KILN_TEAM_POOL, KILN_TEAM_WORKERS, KILN_TEAM_CRASH_AFTER."""
        home = Path(environ.get("KILN_TEAM_DIR") or state / "team").absolute()
        config = cls(
            home=home,
            prefect_port=prefect_port or cls.prefect_port,
            postgres_port=_number(environ, "KILN_TEAM_POSTGRES_PORT", cls.postgres_port, 1, 65535),
            s3_port=_number(environ, "KILN_TEAM_S3_PORT", cls.s3_port, 1, 65535),
            bucket=_name(environ, "KILN_TEAM_BUCKET", cls.bucket),
            pool=_name(environ, "KILN_TEAM_POOL", cls.pool),
            workers=_number(environ, "KILN_TEAM_WORKERS", cls.workers, 0, 16),
            crash_after=_number(environ, "KILN_TEAM_CRASH_AFTER", cls.crash_after, 45, 86400),
        )
        if len({config.prefect_port, config.postgres_port, config.s3_port}) < 3:
            raise KilnError(
                "the Prefect, PostgreSQL and S3 ports must differ "
                f"({config.prefect_port}, {config.postgres_port}, {config.s3_port})"
            )
        return config


def _number(environ: Mapping[str, str], key: str, default: int, low: int, high: int) -> int:
    raw = environ.get(key)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise KilnError(f"{key} must be a whole number from {low} to {high}, not {raw!r}")
    return value


def _name(environ: Mapping[str, str], key: str, default: str) -> str:
    raw = environ.get(key) or default
    if not NAME.match(raw):
        raise KilnError(
            f"{key} must be 1-63 lowercase letters, digits or '-', starting with a letter "
            f"or digit, not {raw!r}"
        )
    return raw
