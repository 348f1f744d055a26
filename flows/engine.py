"""Where the container engine and kiln's local infrastructure live.

One place resolves them, so every caller (builders, rollout, tests) agrees with
`scripts/infra.sh`, which starts podman's Docker-compatible API socket under the state dir
(or uses a working Docker daemon) and writes the containers config files there.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path

from flows.errors import EngineUnavailable, KilnError
from flows.resources import resource_path
from flows.settings import DEFAULT_STATE_DIR, get_settings

INFRA_SCRIPT = resource_path("infra.sh")  # scripts/infra.sh, shipped in the package


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """KILN_STATE_DIR from the settings, or from `environ` when one is given (tests)."""
    if environ is None:
        return get_settings().state_dir
    return Path(environ.get("KILN_STATE_DIR") or DEFAULT_STATE_DIR)


def podman_socket(environ: Mapping[str, str] | None = None) -> Path:
    return state_dir(environ) / "podman.sock"


def docker_host(environ: Mapping[str, str] | None = None) -> str:
    """The engine API URL: DOCKER_HOST when set, else the podman socket infra.sh starts."""
    env = os.environ if environ is None else environ
    return env.get("DOCKER_HOST") or f"unix://{podman_socket(environ)}"


def containers_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for podman/buildah/skopeo commands: kiln's config files, when present."""
    env = dict(os.environ if environ is None else environ)
    state = state_dir(environ)
    for key, name in (
        ("CONTAINERS_CONF", "containers.conf"),
        ("CONTAINERS_REGISTRIES_CONF", "registries.conf"),
    ):
        if key not in env and (state / name).exists():
            env[key] = str(state / name)
    return env


def docker_client(host: str | None = None, timeout: int = 300):
    """A docker SDK client against the resolved engine (podman's socket or dockerd).

    The client asks the engine for its API version first, so an engine that does not
    answer fails here, as one EngineUnavailable that says how to start one.
    """
    import docker

    url = host or docker_host()
    try:
        _probe(url, timeout)
        return docker.DockerClient(base_url=url, timeout=timeout)
    except (docker.errors.DockerException, OSError) as err:
        raise EngineUnavailable(
            f"cannot reach the container engine at {url} ({_short_reason(err)}): "
            "start it with `kiln up`, or set DOCKER_HOST to a running Docker or podman"
        ) from err


def _probe(url: str, timeout: float) -> None:
    """Ask the engine once with a client closed either way (a docker SDK client that fails
    while negotiating its API version leaks its socket)."""
    import docker

    if url.startswith("unix://"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(url.removeprefix("unix://"))
        return
    probe = docker.APIClient(base_url=url, version="1.24", timeout=timeout)
    try:
        probe.ping()
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
