"""The container engine and kiln's local infrastructure: a checked client, infra.sh.

`scripts/infra.sh` starts podman's Docker-compatible API socket under the state dir (or
uses a working Docker daemon) and writes the containers config files there. Which engine
and which state dir are the caller's to say: kiln/wiring.py resolves them from settings.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path

from kiln.config.errors import EngineUnavailable, KilnError
from kiln.infra.resources import resource_path

INFRA_SCRIPT = resource_path("infra.sh")  # scripts/infra.sh, shipped in the package


def containers_env(state_dir: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for podman/buildah/skopeo commands: `environ` (default: this
    process's) plus the containers config files infra.sh writes into `state_dir`, when
    they are there and the environment names none of its own."""
    env = dict(os.environ if environ is None else environ)
    for key, name in (
        ("CONTAINERS_CONF", "containers.conf"),
        ("CONTAINERS_REGISTRIES_CONF", "registries.conf"),
    ):
        if key not in env and (state_dir / name).exists():
            env[key] = str(state_dir / name)
    return env


def docker_client(host: str, timeout: int = 300):
    """A docker SDK client against the engine at `host` (a Docker API URL: podman's socket
    or dockerd); kiln/wiring.py's `engine_host` resolves it from the settings.

    The client asks the engine for its API version first, so an engine that does not
    answer fails here, as one EngineUnavailable that says how to start one.
    """
    import docker

    try:
        version = _probe(host, timeout)
        return docker.DockerClient(base_url=host, version=version, timeout=timeout)
    except (docker.errors.DockerException, OSError) as err:
        raise EngineUnavailable(
            f"cannot reach the container engine at {host} ({_short_reason(err)}): "
            "start it with `kiln up`, or set DOCKER_HOST to a running Docker or podman"
        ) from err


def _probe(url: str, timeout: float) -> str:
    """Ask the engine for its API version with a client closed either way (a docker SDK
    client that fails while negotiating its version leaks its socket).

    `GET /_ping` says it in a header, at once; the SDK's own negotiation asks `/version`,
    which podman answers slowly (docs/benchmarks.md), and a `kiln run` builds two clients.
    """
    import docker

    if url.startswith("unix://"):  # a missing socket: the plainest error there is
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(url.removeprefix("unix://"))
    probe = docker.APIClient(base_url=url, version="1.24", timeout=timeout)
    try:
        reply = probe.get(f"{probe.base_url}/_ping", timeout=timeout)
        reply.raise_for_status()
        return reply.headers.get("Api-Version") or "auto"
    finally:
        probe.close()


def _short_reason(err: Exception) -> str:
    text = str(err)
    for needle, reason in (
        ("No such file or directory", "no socket there"),
        ("Connection refused", "connection refused"),
        ("Permission denied", "permission denied"),
        ("timed out", "timed out"),
        ("Invalid bind address", "not a Docker address"),
    ):
        if needle in text:
            return reason
    return text if len(text) <= 160 else text[:160] + "..."


def run_infra(action: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `scripts/infra.sh ACTION` (up, down, status, env); its log goes to stderr."""
    if action not in {"up", "down", "status", "env"}:
        raise ValueError(f"unknown infra action {action!r}")
    proc = subprocess.run(
        ["bash", str(INFRA_SCRIPT), action], capture_output=False, stdout=subprocess.PIPE, text=True
    )
    if check and proc.returncode != 0:
        raise KilnError(f"scripts/infra.sh {action} failed with exit code {proc.returncode}")
    return proc
