"""The Kubernetes target: apply kiln's kustomize base, watch the Deployment roll, check it.

`ship` renders k8s/ with the version's image pinned by digest, applies every object, waits
as `kubectl rollout status` does, and smoke-tests through the API server's Service proxy.
`restore` writes the previous pod template back, as `kubectl rollout undo` does.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from flows.errors import RolloutError
from flows.rollout.kube_api import FIELD_MANAGER, MERGE_PATCH, KubeApi, object_path, status_message
from flows.rollout.manifests import (
    CONTAINER_NAME,
    MANIFEST_DIR,
    VERSION_ANNOTATION,
    render_manifests,
)
from flows.rollout.smoke import Caller, Reply, SmokeTest
from flows.rollout.target import KUBERNETES, Deployed

log = logging.getLogger(__name__)

APP_NAME = "kiln"
SERVICE_PORT = "http"


class RolloutStuck(RolloutError):
    """The Deployment did not finish rolling out."""


@dataclass
class KubernetesTarget:
    """kiln's objects in one namespace of one cluster, through `api_client`."""

    api_client: client.ApiClient
    namespace: str
    deployment: str = APP_NAME
    timeout: float = 600.0  # seconds for a rollout (and for a restore) to finish
    poll_interval: float = 2.0
    request_timeout: float = 30.0
    manifest_dir: Path = MANIFEST_DIR
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    name = KUBERNETES
    where = "to kubernetes"

    def __post_init__(self) -> None:
        self.api = KubeApi(self.api_client, self.request_timeout)

    @property
    def endpoint(self) -> str:
        return f"{self.api.host}{self.proxy_path('')}"

    def _path(self) -> str:
        return object_path("Deployment", self.deployment, self.namespace)

    # -- what runs -------------------------------------------------------------------------

    def current(self) -> Deployed | None:
        found = self.api.call("GET", self._path())
        if found is None:
            return None
        template = found["spec"]["template"]
        annotations = template.get("metadata", {}).get("annotations") or {}
        image = next(
            (c["image"] for c in template["spec"]["containers"] if c["name"] == CONTAINER_NAME),
            None,
        )
        return Deployed(annotations.get(VERSION_ANNOTATION), image, handle=template)

    def live(self) -> list[str]:
        found = self.api.call("GET", self._path())
        if found is None:
            return []
        current = self.current()
        assert current is not None
        return [
            f"{current.version} {current.image} "
            f"Deployment {self.namespace}/{self.deployment} "
            f"replicas {found['spec'].get('replicas')}"
        ]

    # -- the rollout -----------------------------------------------------------------------

    def ship(self, version: str, image: str, smoke: SmokeTest) -> str:
        objects = render_manifests(image, version, self.namespace, self.manifest_dir)
        self.apply(objects)
        self.wait_rolled_out()
        smoke(self.service_caller())
        return self.endpoint

    def apply(self, objects: Iterable[dict[str, Any]]) -> None:
        """Create each object, or merge-patch it to the manifest when it exists (idempotent).

        JSON merge patch (RFC 7386) replaces lists wholesale and leaves fields the manifest
        does not name alone (a Service's clusterIP, the Deployment's status). A live
        Deployment keeps its replica count: the HPA owns it once it runs.
        """
        for obj in objects:
            kind, name = obj["kind"], obj["metadata"]["name"]
            namespace = obj["metadata"].get("namespace", self.namespace)
            live = self.api.call("GET", object_path(kind, name, namespace))
            if live is None:
                log.info("creating %s/%s", kind, name)
                self.api.call(
                    "POST",
                    object_path(kind, None, namespace),
                    obj,
                    query=[("fieldManager", FIELD_MANAGER)],
                )
                continue
            patch = copy.deepcopy(obj)
            if kind == "Deployment" and live.get("spec", {}).get("replicas") is not None:
                patch["spec"]["replicas"] = live["spec"]["replicas"]
            log.info("updating %s/%s", kind, name)
            self.api.call(
                "PATCH",
                object_path(kind, name, namespace),
                patch,
                content_type=MERGE_PATCH,
                query=[("fieldManager", FIELD_MANAGER)],
            )

    def restore(self, before: Deployed) -> str:
        """Put the previous pod template back exactly (PUT, not merge), then wait for it."""
        if before.image is None:
            raise RolloutError("the previous Deployment has no server container to restore")
        self._put_template(before)
        self.wait_rolled_out()
        return f"rolled back to {before.version} ({before.image})"

    def _put_template(self, before: Deployed) -> None:
        where = f"restoring {self.namespace}/{self.deployment}"
        for _attempt in range(5):
            live = self.api.call("GET", self._path())
            if live is None:
                raise RolloutError(f"{where}: the Deployment is gone")
            live["spec"]["template"] = copy.deepcopy(before.handle)
            annotations = live["metadata"].setdefault("annotations", {})
            if before.version is not None:
                annotations[VERSION_ANNOTATION] = before.version
            live.pop("status", None)
            try:
                response = self.api.request("PUT", self._path(), live)
            except ApiException as err:
                if err.status == 409:  # changed under us (resourceVersion): read and retry
                    continue
                raise RolloutError(f"{where}: {err.status} {status_message(err.body)}") from err
            if response.status == 409:
                continue
            if response.status >= 400:
                raise RolloutError(f"{where}: {response.status} {status_message(response.body)}")
            return
        raise RolloutError(f"{where}: conflicts kept happening")

    def wait_rolled_out(self) -> None:
        """Poll the Deployment until its newest generation is fully available.

        The same test `kubectl rollout status` makes. Raises RolloutStuck on the progress
        deadline (the controller's verdict) or when `timeout` seconds pass (ours).
        """
        deadline = self.clock() + self.timeout
        last = ""
        while True:
            found = self.api.call("GET", self._path())
            if found is None:
                raise RolloutStuck(f"Deployment {self.namespace}/{self.deployment} does not exist")
            done, message = rollout_status(found)
            if message != last:
                log.info("%s", message)
                last = message
            if done:
                return
            if self.clock() >= deadline:
                raise RolloutStuck(f"timed out after {self.timeout:g}s: {message}")
            self.sleep(self.poll_interval)

    # -- the Service -------------------------------------------------------------------------

    def proxy_path(self, path: str) -> str:
        return (
            f"/api/v1/namespaces/{self.namespace}/services/"
            f"{self.deployment}:{SERVICE_PORT}/proxy/{path.lstrip('/')}"
        )

    def service_caller(self) -> Caller:
        """Requests to the Service through the API server's proxy."""

        def call(method: str, path: str, body: Any) -> Reply:
            return self.api.raw(method, self.proxy_path(path), body)

        return call


def rollout_status(deployment: dict[str, Any]) -> tuple[bool, str]:
    """(done, message) for a Deployment; raises RolloutStuck past the progress deadline."""
    meta, spec = deployment["metadata"], deployment["spec"]
    status = deployment.get("status") or {}
    name = meta["name"]
    if status.get("observedGeneration", 0) < meta.get("generation", 0):
        return False, f"{name}: waiting for the controller to see generation {meta['generation']}"
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and (
            condition.get("reason") == "ProgressDeadlineExceeded"
        ):
            raise RolloutStuck(
                f"progress deadline exceeded: {condition.get('message', 'no progress')}"
            )
    want = spec.get("replicas", 1)
    updated = status.get("updatedReplicas", 0)
    total = status.get("replicas", 0)
    available = status.get("availableReplicas", 0)
    if updated < want:
        return False, f"{name}: {updated} of {want} new replicas updated"
    if total > updated:
        return False, f"{name}: {total - updated} old replicas pending termination"
    if available < updated:
        return False, f"{name}: {available} of {updated} updated replicas available"
    return True, f"{name}: rolled out, {available} replicas available"
