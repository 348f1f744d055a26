"""Where the container engine and kiln's local infrastructure live.

One place resolves them, so every caller (builders, rollout, tests) agrees with
`scripts/infra.sh`, which starts podman's Docker-compatible API socket under the state dir
(or uses a working Docker daemon) and writes the containers config files there.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from flows.errors import KilnError

DEFAULT_STATE_DIR = "/var/lib/kiln"
REPO_ROOT = Path(__file__).resolve().parent.parent
INFRA_SCRIPT = REPO_ROOT / "scripts" / "infra.sh"


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get("KILN_STATE_DIR") or DEFAULT_STATE_DIR)


def podman_socket(environ: Mapping[str, str] | None = None) -> Path:
    return state_dir(environ) / "podman.sock"


def docker_host(environ: Mapping[str, str] | None = None) -> str:
    """The engine API URL: DOCKER_HOST when set, else the podman socket infra.sh starts."""
    env = os.environ if environ is None else environ
    return env.get("DOCKER_HOST") or f"unix://{podman_socket(env)}"


def containers_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for podman/buildah/skopeo commands: kiln's config files, when present."""
    env = dict(os.environ if environ is None else environ)
    state = state_dir(env)
    for key, name in (
        ("CONTAINERS_CONF", "containers.conf"),
        ("CONTAINERS_REGISTRIES_CONF", "registries.conf"),
    ):
        if key not in env and (state / name).exists():
            env[key] = str(state / name)
    return env


def docker_client(host: str | None = None, timeout: int = 300):
    """A docker SDK client against the resolved engine (podman's socket or dockerd)."""
    import docker

    return docker.DockerClient(base_url=host or docker_host(), timeout=timeout)


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
