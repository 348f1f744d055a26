"""Where and how the team's parts run: ports, folders, names. Defaults fit one machine;
the KILN_TEAM_* settings change them (tests give every part ports of their own)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kiln.config.errors import SettingsError
from kiln.config.settings import KilnSettings
from kiln.infra.team.postgres import Postgres
from kiln.infra.team.server import TeamServer
from kiln.infra.team.workers import Worker


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
    def from_settings(cls, settings: KilnSettings) -> TeamConfig:
        """The team's parts as the KILN_TEAM_* settings (kiln/config/settings.py) place them."""
        config = cls(
            home=(settings.team_dir or settings.state_dir / "team").absolute(),
            prefect_port=settings.prefect_port,
            postgres_port=settings.team_postgres_port,
            s3_port=settings.team_s3_port,
            bucket=settings.team_bucket,
            pool=settings.team_pool,
            workers=settings.team_workers,
            crash_after=settings.team_crash_after,
        )
        ports = (config.prefect_port, config.postgres_port, config.s3_port)
        if len(set(ports)) < 3:
            raise SettingsError(
                "KILN_PREFECT_PORT, KILN_TEAM_POSTGRES_PORT and KILN_TEAM_S3_PORT must differ "
                f"({', '.join(map(str, ports))})",
                setting="team_s3_port",
            )
        return config
