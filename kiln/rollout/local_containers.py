"""The local target's containers: what kiln runs on the container engine, found by labels.

Listing, creating, waiting for readiness, reading the last log lines and removing kiln's
containers (io.kiln.* labels say what each one is). kiln/rollout/local.py decides which
to start and stop, and when; this module only does it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kiln.config.errors import RolloutError
from kiln.rollout.smoke import http_caller

log = logging.getLogger(__name__)

LABEL_TARGET = "io.kiln.target"
LABEL_VERSION = "io.kiln.version"
LABEL_IMAGE = "io.kiln.image"
LABEL_ROLE = "io.kiln.role"
LABEL_PORT = "io.kiln.port"
CONTAINER_PORT = "8000/tcp"
CURRENT, CANDIDATE = "current", "candidate"


@dataclass(frozen=True)
class LocalContainer:
    name: str
    version: str
    image: str
    role: str
    port: int
    status: str

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class EngineContainers:
    """kiln's containers labelled `name_prefix` on one engine (a docker SDK client)."""

    docker: Any  # docker.DockerClient
    port: int  # the stable port, which current containers bind
    name_prefix: str
    timeout: float  # seconds for a container to answer /ready
    poll_interval: float  # seconds between /ready requests
    inspect_interval: float  # seconds between asking the engine whether it exited
    environment: dict[str, str]
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def list(self) -> list[LocalContainer]:
        found = self.docker.containers.list(
            all=True, filters={"label": [f"{LABEL_TARGET}={self.name_prefix}"]}
        )
        out = []
        for container in found:
            labels = container.labels or {}
            out.append(
                LocalContainer(
                    name=container.name,
                    version=labels.get(LABEL_VERSION, "?"),
                    image=labels.get(LABEL_IMAGE, "?"),
                    role=labels.get(LABEL_ROLE, "?"),
                    port=int(labels.get(LABEL_PORT, "0")),
                    status=container.status,
                )
            )
        return sorted(out, key=lambda c: (c.role, c.name))

    def wait_ready(self, name: str, base_url: str) -> None:
        """Ask /ready every `poll_interval` until `timeout`; ask the engine whether the
        container exited at most every `inspect_interval` (each inspect costs the engine
        CPU that the booting container needs)."""
        call = http_caller(base_url, timeout=2.0)
        deadline = time.monotonic() + self.timeout
        inspect_at = 0.0
        last = "no answer yet"
        while True:
            if time.monotonic() >= inspect_at:
                inspect_at = time.monotonic() + self.inspect_interval
                container = self.docker.containers.get(name)
                if container.status in ("exited", "dead"):
                    raise RolloutError(
                        f"container {name} exited with code "
                        f"{container.attrs.get('State', {}).get('ExitCode')} before it was "
                        f"ready; its last lines:\n{self._last_lines(container)}"
                    )
            try:
                reply = call("GET", "/ready", None)
                if reply.status == 200:
                    return
                last = f"/ready answered {reply.status}"
            except OSError as err:
                last = str(err)
            if time.monotonic() >= deadline:
                raise RolloutError(f"container {name} not ready after {self.timeout:g}s: {last}")
            self.sleep(self.poll_interval)

    def _last_lines(self, container: Any, tries: int = 10) -> str:
        """The container's last log lines (the engine may still be writing them out)."""
        for _ in range(tries):
            # podman's API sometimes answers a `tail` request with a bare newline: no tail
            logs = container.logs(stdout=True, stderr=True).decode(errors="replace").strip()
            if logs:
                return "\n".join(logs.splitlines()[-15:])
            self.sleep(0.1)
        return "(no output)"

    def run(self, name: str, image: str, version: str, role: str, port: int, start: bool) -> Any:
        """A container behind a published 127.0.0.1 port (the candidate)."""
        network = {"ports": {CONTAINER_PORT: ("127.0.0.1", port)}}
        return self._container(
            name, image, version, role, port, network, dict(self.environment), start
        )

    def create_current(self, name: str, image: str, version: str, check_port: int) -> Any:
        """A created (not started) container for the stable port, on the host network, that
        shares the port with the one it replaces and answers on `check_port` too."""
        environment = dict(self.environment)
        binds = f"--bind=127.0.0.1:{self.port} --bind=127.0.0.1:{check_port}"
        extra = environment.get("GUNICORN_CMD_ARGS", "")
        environment["GUNICORN_CMD_ARGS"] = f"{extra} --reuse-port {binds}".strip()
        network = {"network_mode": "host"}
        return self._container(
            name, image, version, CURRENT, self.port, network, environment, start=False
        )

    def _container(
        self,
        name: str,
        image: str,
        version: str,
        role: str,
        port: int,
        network: dict[str, Any],
        environment: dict[str, str],
        start: bool,
    ) -> Any:
        kwargs: dict[str, Any] = dict(
            image=image,
            name=name,
            labels={
                LABEL_TARGET: self.name_prefix,
                LABEL_VERSION: version,
                LABEL_IMAGE: image,
                LABEL_ROLE: role,
                LABEL_PORT: str(port),
            },
            environment=environment,
            detach=True,
            # the same confinement as the Kubernetes pod
            read_only=True,
            tmpfs={"/tmp": "rw,size=16m"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            **network,
        )
        try:
            if start:
                return self.docker.containers.run(**kwargs)
            kwargs.pop("detach")
            return self.docker.containers.create(**kwargs)
        except Exception as err:  # docker.errors.APIError and friends
            raise RolloutError(f"starting container {name} from {image}: {err}") from err

    def ensure_image(self, image: str) -> None:
        import docker.errors

        try:
            self.docker.images.get(image)
            return
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as err:
            log.debug("looking up %s: %s", image, err)
        log.info("pulling %s", image)
        try:
            self.docker.images.pull(image)
        except docker.errors.APIError as err:
            raise RolloutError(f"pulling {image}: {err}") from err

    def remove(self, name: str | None) -> None:
        import docker.errors

        if name is None:
            return
        with contextlib.suppress(docker.errors.NotFound):
            self.docker.containers.get(name).remove(force=True)

    def remove_broken(self, name: str) -> None:
        """Remove a container whose process is gone or stuck. Removing one whose process
        died unseen fails in podman ("container state improper"): stopping it first makes
        podman find out."""
        import docker.errors

        with contextlib.suppress(docker.errors.APIError):
            self.docker.containers.get(name).stop(timeout=0)
        self.remove(name)

    def remove_all(self) -> None:
        """Remove every kiln container on this engine (tests, `kiln undeploy`)."""
        for container in self.list():
            self.remove_broken(container.name)
