"""A PostgreSQL 15 cluster of kiln's own for the Prefect server (Debian's package).

The cluster lives in <team dir>/postgres, created by initdb and run by pg_ctl as the
postgres user (PostgreSQL refuses to run as root); it listens on 127.0.0.1 only and
checks a password generated once (scram-sha-256) and kept 0600 beside it. The
distribution's default cluster is never touched.
"""

from __future__ import annotations

import logging
import os
import pwd
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from kiln.config.errors import KilnError
from kiln.infra.daemon import tail

log = logging.getLogger(__name__)

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "postgres"
DATABASE = "prefect"


class PostgresError(KilnError):
    """The team database cannot be created, started or reached."""


@dataclass(frozen=True)
class Postgres:
    root: Path  # <team dir>/postgres, owned by the postgres user
    port: int
    host: str = "127.0.0.1"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    @property
    def password_file(self) -> Path:  # beside the cluster, readable by root only
        return self.root.parent / "postgres.password"

    def password(self) -> str:
        try:
            return self.password_file.read_text().strip()
        except FileNotFoundError as err:
            raise PostgresError(f"no password for the cluster in {self.root}") from err

    def url(self, database: str = DATABASE, driver: str = "postgresql+asyncpg") -> str:
        """The connection URL Prefect's server takes (PREFECT_API_DATABASE_CONNECTION_URL)."""
        secret = quote(self.password(), safe="")
        return f"{driver}://{SUPERUSER}:{secret}@{self.host}:{self.port}/{database}"


def _binary(name: str) -> str:
    path = PG_BIN / name
    if not path.exists():
        raise PostgresError(
            f"PostgreSQL 15 is not installed ({path} is missing): run scripts/setup.sh, "
            "or apt-get install postgresql-15"
        )
    return str(path)


def _as_owner(argv: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL program as the cluster's owner: the postgres user when we are root."""
    if os.geteuid() == 0:
        argv = ["runuser", "-u", SUPERUSER, "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, **kwargs)


def _check_reachable(path: Path) -> None:
    """Every parent folder must be searchable by others, or the postgres user cannot enter."""
    for parent in path.parents:
        if parent.exists() and not os.stat(parent).st_mode & 0o001:
            raise PostgresError(
                f"the postgres user cannot reach {path}: {parent} is not searchable by others "
                f"(chmod o+x {parent}, or choose another KILN_STATE_DIR)"
            )


def init_cluster(pg: Postgres) -> bool:
    """Create the cluster unless it exists; True when created now."""
    if (pg.data / "PG_VERSION").exists():
        return False
    initdb = _binary("initdb")
    pg.root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        _check_reachable(pg.root)
        owner = pwd.getpwnam(SUPERUSER)
        os.chown(pg.root, owner.pw_uid, owner.pw_gid)
    os.chmod(pg.root, 0o700)
    if pg.data.exists():  # a half-made cluster from an interrupted initdb
        shutil.rmtree(pg.data)
    password = secrets.token_urlsafe(24)
    pg.password_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(pg.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(password + "\n")
    # initdb reads the password from a file the postgres user can read; gone right after.
    pwfile = pg.root / "initdb.pw"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)
    os.chmod(pwfile, 0o600)
    try:
        done = _as_owner(
            [
                initdb,
                "-N",  # no fsync: initdb is far faster; a crash of the host loses runs
                "-D",
                str(pg.data),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",
                "-E",
                "UTF8",
            ]
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if done.returncode != 0:
        raise PostgresError(f"initdb in {pg.data} failed: {done.stderr.strip()[-800:]}")
    log.info("created a PostgreSQL cluster in %s", pg.data)
    return True


def is_running(pg: Postgres) -> bool:
    if not (pg.data / "postmaster.pid").exists():
        return False
    return _as_owner([_binary("pg_ctl"), "-D", str(pg.data), "status"]).returncode == 0


def start_cluster(pg: Postgres) -> bool:
    """Start the cluster on 127.0.0.1:port unless it runs; True when started now."""
    if is_running(pg):
        return False
    options = f"-p {pg.port} -k {pg.root} -c listen_addresses={pg.host}"
    done = _as_owner(
        [
            _binary("pg_ctl"),
            "-D",
            str(pg.data),
            "-l",
            str(pg.log_file),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        ]
    )
    if done.returncode != 0:
        raise PostgresError(
            f"PostgreSQL did not start on {pg.host}:{pg.port}: {done.stderr.strip()}\n"
            f"{tail(pg.log_file)}"
        )
    return True


def ensure_database(pg: Postgres, database: str = DATABASE) -> None:
    env = {**os.environ, "PGPASSWORD": pg.password(), "PGCONNECT_TIMEOUT": "10"}
    common = ["-h", pg.host, "-p", str(pg.port), "-U", SUPERUSER]
    query = f"SELECT 1 FROM pg_database WHERE datname = '{database}'"
    found = subprocess.run(
        [_binary("psql"), *common, "-d", "postgres", "-tAc", query],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    if found.returncode != 0:
        raise PostgresError(f"cannot query {pg.host}:{pg.port}: {found.stderr.strip()}")
    if found.stdout.strip() == "1":
        return
    made = subprocess.run(
        [_binary("createdb"), *common, database],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    if made.returncode != 0:
        raise PostgresError(f"createdb {database} failed: {made.stderr.strip()}")


def stop_cluster(pg: Postgres) -> bool:
    """Stop the cluster (fast shutdown: open sessions are ended); False when not running."""
    if not is_running(pg):
        return False
    done = _as_owner([_binary("pg_ctl"), "-D", str(pg.data), "-m", "fast", "-w", "stop"])
    if done.returncode != 0:
        raise PostgresError(f"pg_ctl stop in {pg.data} failed: {done.stderr.strip()}")
    return True


def up(pg: Postgres) -> str:
    """Create (once), start and prepare the database; return Prefect's connection URL."""
    init_cluster(pg)
    start_cluster(pg)
    ensure_database(pg)
    return pg.url()
