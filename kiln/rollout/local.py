"""The local target: serving images run on the container engine behind 127.0.0.1 ports.

The stable endpoint is http://127.0.0.1:<port>; the container that owns that port is the
current version. Every current container runs on the host network and binds the stable
port with SO_REUSEPORT (gunicorn's `--reuse-port`, handed over in GUNICORN_CMD_ARGS, which
every kiln image reads), plus a check port of its own. A kiln server keeps every new
connection on a shared port for the oldest server there (serving/reuseport.py; its image
says so in the label io.kiln.reuseport). So `ship`:

1. on a first deploy (no kiln container serves the port, and nothing else holds it):
   starts the new version on the stable port, checks it on its check port (/ready, then
   the smoke test: /metadata and /predict) and removes it if it fails;
2. beside a current container whose server keeps the port's new connections: starts the
   new version beside it, where it takes no client, and checks it on its check port. On
   failure it is removed; no client ever reached it. On success the old one is stopped:
   on SIGTERM its server hands the port's new connections to the new one, answers what is
   queued on its socket until the queue stays empty, then exits (serving/worker.py);
3. beside a current container from before serving/reuseport.py (the kernel would spread
   new connections over both): starts a *candidate* container on a free port first (the
   stable port's container is created, not started, while it boots), checks it there,
   removes it either way, and only then goes on as in 2.

A container from an earlier kiln still (bridge network, port published, no SO_REUSEPORT)
holds the port alone: it is stopped before the new one starts (the port refuses
connections for a few seconds, once); `restore` then starts it again if the new one fails.

Shipping the version that already serves checks it on the stable port instead. The engine's
word that a container runs is not enough: when its process died with its monitor (a
machine's processes killed without a reboot), podman still lists it running. A container
that fails that check is removed and the version starts again, as on a first deploy.

Two deploys to one stable port never interleave: `ship` and `restore` hold a machine-wide
file lock named after the port (kiln.infra.locks.FileLocks); the second waits, saying so.
A stable port that a program other than kiln holds fails the deploy at once, in one line naming
the port, before any container starts.

Containers carry labels (io.kiln.*), so the engine itself says what runs where. This module
decides what to start, check and stop; kiln/rollout/local_containers.py does it on the engine.
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
from kiln.infra import locks
from kiln.rollout.local_containers import (
    CANDIDATE,
    CURRENT,
    EngineContainers,
    LocalContainer,
    free_port,
)
from kiln.rollout.smoke import SmokeTest, http_caller
from kiln.rollout.target import LOCAL, Deployed
from serving import reuseport

log = logging.getLogger(__name__)


@dataclass
class LocalTarget:
    """kiln's containers on one engine (a docker SDK client: dockerd or podman's socket)."""

    docker: Any  # docker.DockerClient
    port: int = 8000
    name_prefix: str = "kiln"
    timeout: float = 120.0  # seconds for a container to answer /ready
    candidate_port: Callable[[], int] = free_port
    poll_interval: float = 0.05  # seconds between /ready requests
    inspect_interval: float = 0.25  # seconds between asking the engine whether it exited
    stop_timeout: int = 10
    check_timeout: float = 5.0  # seconds per request when checking what already serves
    lock_timeout: float = 600.0  # seconds a deploy waits for another on the same port
    environment: dict[str, str] = field(default_factory=lambda: {"WORKERS": "1"})
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    name = LOCAL
    where = "locally"

    # -- what runs -------------------------------------------------------------------------

    @property
    def on_engine(self) -> EngineContainers:
        """The containers' side of the job, with this target's settings as they are now."""
        return EngineContainers(
            self.docker,
            self.port,
            self.name_prefix,
            self.timeout,
            self.poll_interval,
            self.inspect_interval,
            self.environment,
            self.sleep,
        )

    def containers(self) -> list[LocalContainer]:
        return self.on_engine.list()

    def current(self) -> Deployed | None:
        running = [c for c in self.containers() if c.role == CURRENT and c.status == "running"]
        if not running:
            return None
        return Deployed(running[0].version, running[0].image, handle=running[0].name)

    def live(self) -> list[str]:
        return [
            f"{c.version} {c.image} {c.role} {c.status} {c.endpoint} ({c.name})"
            for c in self.containers()
        ]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- the rollout -----------------------------------------------------------------------

    def _lock(self) -> contextlib.AbstractContextManager[None]:
        # Machine-wide, per stable port: two stores deploying to one port collide too.
        file_locks = locks.FileLocks(locks.machine_lock_dir(), wait=self.lock_timeout)
        return file_locks.hold(f"local-port-{self.port}", f"deploying locally on port {self.port}")

    def ship(self, version: str, image: str, smoke: SmokeTest) -> str:
        """Run `image` as `version` on the stable port, or raise (the old one not removed)."""
        with self._lock():
            return self._ship(version, image, smoke)

    def _ship(self, version: str, image: str, smoke: SmokeTest) -> str:
        before = self.current()
        if before is None:
            self._check_port_free()
        if before is not None and before.version == version and before.image == image:
            try:
                self.check(smoke)
                log.info("%s already serves %s, and answers", self.endpoint, version)
                return self.endpoint
            except Exception as err:  # listed running, yet nothing good answers
                log.warning(
                    "%s is listed running but fails its check (%s): replacing it",
                    before.handle,
                    err,
                )
                self.on_engine.remove_broken(before.handle)
                before = None
                self._check_port_free()
        self.on_engine.ensure_image(image)
        name = f"{self.name_prefix}-{version[:12]}"
        if before is not None and before.handle == name:  # same version, another image
            name = f"{name}-{int(time.time())}"
        self.on_engine.remove(name)
        check_port = self.candidate_port()
        if before is None:
            self._first(name, image, version, check_port, smoke)
            return self.endpoint
        old = self.docker.containers.get(before.handle)
        # One worker per container (the environment's default): one socket each on the port
        if _oldest_takes_all(old) and self.environment.get("WORKERS") == "1":
            log.info("starting %s (%s) beside %s", name, image, old.name)
            new = self.on_engine.create_current(name, image, version, check_port)
            self._switch(new, name, check_port, None, old, smoke)
        else:
            self._through_candidate(name, image, version, check_port, old, smoke)
        return self.endpoint

    def _through_candidate(
        self, name: str, image: str, version: str, check_port: int, old: Any, smoke: SmokeTest
    ) -> None:
        """The old container's server spreads the shared port's connections over both (a
        server from before serving/reuseport.py), or holds the port alone: the new version
        must pass its checks on a port of its own first."""
        candidate = f"{self.name_prefix}-{version[:12]}-candidate"
        self.on_engine.remove(candidate)
        port = self.candidate_port()
        log.info("starting candidate %s (%s) on 127.0.0.1:%d", candidate, image, port)
        self.on_engine.run(candidate, image, version, CANDIDATE, port, start=True)
        try:
            # Created, not started, while the candidate boots: it binds nothing until started.
            new = self.on_engine.create_current(name, image, version, check_port)
            self._check(candidate, f"http://127.0.0.1:{port}", smoke)
        except Exception:
            self.on_engine.remove(candidate)
            self.on_engine.remove(name)
            raise
        self._switch(new, name, check_port, candidate, old, smoke)

    def _first(
        self, name: str, image: str, version: str, check_port: int, smoke: SmokeTest
    ) -> None:
        """A first deploy: nothing serves on the stable port (checked under the lock), so
        no candidate is needed; the version starts once, there, and is removed if it fails."""
        log.info("first deploy on %s: starting %s (%s)", self.endpoint, name, image)
        new = self.on_engine.create_current(name, image, version, check_port)
        try:
            new.start()
            self._check(name, f"http://127.0.0.1:{check_port}", smoke)
        except Exception as err:
            self.on_engine.remove(name)
            if isinstance(err, RolloutError):
                raise
            raise RolloutError(f"starting {name} on {self.endpoint}: {err}") from err
        log.info("%s now serves %s (%s)", self.endpoint, version, image)

    def _switch(
        self,
        new: Any,
        name: str,
        check_port: int,
        candidate: str | None,
        old: Any,
        smoke: SmokeTest,
    ) -> None:
        alone = not _shares_port(old)
        if alone:  # an earlier kiln's container holds the port alone: a gap, this once
            self.on_engine.remove(candidate)
            log.info(
                "switching %s: stopping %s (it does not share the port)", self.endpoint, old.name
            )
            old.stop(timeout=self.stop_timeout)
        try:
            try:
                new.start()
            finally:
                # The candidate passed its checks: removed while the new one boots.
                self.on_engine.remove(candidate)
            # its own port: a reply through the stable one may come from the old version
            self._check(name, f"http://127.0.0.1:{check_port}", smoke)
        except Exception as err:
            self.on_engine.remove(
                name
            )  # the old one serves on; restore() starts it if it was stopped
            raise RolloutError(f"on {self.endpoint}: {err}") from err
        if not alone:
            log.info("switching %s: draining %s", self.endpoint, old.name)
            old.stop(timeout=self.stop_timeout)  # SIGTERM: hand over, drain, exit
        old.remove(force=True)
        log.info("%s now serves %s", self.endpoint, name)

    def check(self, smoke: SmokeTest) -> None:
        smoke(http_caller(self.endpoint, timeout=self.check_timeout))

    def restore(self, before: Deployed) -> str:
        """Start `before`'s container again if the switch stopped it."""
        with self._lock():
            return self._restore(before)

    def _restore(self, before: Deployed) -> str:
        found = [
            c
            for c in self.containers()
            if c.role == CURRENT and (c.version, c.image) == (before.version, before.image)
        ]
        if not found:
            raise RolloutError(f"no container of {before.version} is left to start again")
        if found[0].status == "running":  # the candidate failed: it was never touched
            return f"{before.version} keeps serving on {self.endpoint}"
        self.docker.containers.get(found[0].name).start()
        self.on_engine.wait_ready(found[0].name, self.endpoint)
        return f"{before.version} serves again"

    # -- helpers ---------------------------------------------------------------------------

    def _check_port_free(self) -> None:
        """No kiln container serves: the stable port must be free for the new one."""
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is free
            try:
                sock.bind(("127.0.0.1", self.port))
            except OSError as err:
                raise RolloutError(
                    f"port {self.port} on 127.0.0.1 is taken by a program that is not a kiln "
                    f"container ({err.strerror}); stop it or choose another port with "
                    "KILN_LOCAL_PORT"
                ) from None

    def _check(self, name: str, base_url: str, smoke: SmokeTest) -> None:
        self.on_engine.wait_ready(name, base_url)
        try:
            smoke(http_caller(base_url))
        except Exception as err:
            raise RolloutError(f"smoke test on {base_url}: {err}") from err

    def stop_all(self) -> None:
        """Remove every kiln container on this engine (tests, `kiln undeploy`)."""
        self.on_engine.remove_all()


def _shares_port(container: Any) -> bool:
    """True for a container that binds the stable port with SO_REUSEPORT (host network)."""
    return container.attrs.get("HostConfig", {}).get("NetworkMode") == "host"


def _oldest_takes_all(container: Any) -> bool:
    """True when `container` shares the stable port and its server keeps every new
    connection there until it stops (serving/reuseport.py): a newer one beside it takes
    no client before its checks. The engine lists a container with its image's labels."""
    labels = container.labels or {}
    steering = labels.get(reuseport.IMAGE_LABEL) == reuseport.IMAGE_LABEL_VALUE
    return _shares_port(container) and steering
