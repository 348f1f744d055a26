"""The Kubernetes target: candidate first, then the main Deployment, both watched and checked.

`ship`:

1. refuses a paused Deployment (it would never roll) in one line;
2. runs the new version as a candidate: one replica of a `<name>-candidate` Deployment
   whose pods the Service does not select, waits for it, smoke-tests one of its pods
   through the API server's pod proxy, and deletes the candidate whether it passed or not.
   A bad model never takes production traffic;
3. applies every object with server-side apply (field manager `kiln`; the HPA owns the
   replica count, so kiln never sends one), waits as `kubectl rollout status` does, and
   checks `/metadata` and `/predict` on one new pod of the main Deployment.

Every object is one model name's (`model`): the default name's keep the names an earlier
kiln gave them (`kiln`, `kiln-candidate`), another name's are `kiln-<name>` and
`kiln-<name>-candidate`, selecting only their own pods (manifests.for_model). Nothing here
reads or writes another name's objects.

`restore` puts a recorded good version back with a JSON patch of `/spec/template`, guarded
by a `test` of the generation it read (status writes do not change it; a concurrent spec
change does), and refuses, in one line, a restore the Deployment already runs.
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

from kiln.config.errors import RolloutError
from kiln.config.names import DEFAULT_NAME
from kiln.rollout.kubernetes.api import (
    APPLY_PATCH,
    FIELD_MANAGER,
    JSON_PATCH,
    ApiStatusError,
    ApiTransientError,
    KubeApi,
    is_field_conflict,
    object_path,
    status_message,
)
from kiln.rollout.kubernetes.manifests import (
    CLUSTER_SCOPED,
    CONTAINER_NAME,
    MANIFEST_DIR,
    VERSION_ANNOTATION,
    candidate_of,
    check_model,
    for_model,
    load_base,
    namespace_manifest,
    object_name,
    render_manifests,
    server_port,
    service_port,
)
from kiln.rollout.smoke import Caller, Reply, SmokeTest
from kiln.rollout.target import KUBERNETES, Deployed

log = logging.getLogger(__name__)

APP_NAME = "kiln"
RESTORE_ATTEMPTS = 5
# The Deployment's version annotation as a JSON pointer (RFC 6901: "/" in a key is "~1").
VERSION_ANNOTATION_POINTER = "/metadata/annotations/" + VERSION_ANNOTATION.replace("/", "~1")


class RolloutStuck(RolloutError):
    """The Deployment did not finish rolling out."""


@dataclass
class KubernetesTarget:
    """One model name's objects in one namespace of one cluster, through `api_client`."""

    api_client: client.ApiClient
    namespace: str
    deployment: str = ""  # the main Deployment's name; empty: the model's (object_name)
    timeout: float = 600.0  # seconds for a rollout (and for a restore) to finish
    poll_interval: float = 2.0
    request_timeout: float = 30.0
    manifest_dir: Path = MANIFEST_DIR
    # Create the namespace (restricted Pod Security) when it is missing; never patch one.
    create_namespace: bool = False
    model: str = DEFAULT_NAME
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    name = KUBERNETES
    where = "to kubernetes"

    def __post_init__(self) -> None:
        check_model(self.model)
        self.deployment = self.deployment or object_name(APP_NAME, self.model)
        self.api = KubeApi(self.api_client, self.request_timeout)

    def _objects(self) -> list[dict[str, Any]]:
        """This model's objects as the base names them, image not pinned."""
        return for_model(load_base(self.manifest_dir), self.model)

    @property
    def endpoint(self) -> str:
        """The Service through the API server's service proxy, with no trailing slash:
        `{endpoint}/predict` is the server's /predict (with the API server's credentials)."""
        service, port = service_port(self._objects())
        return f"{self.api.host}/api/v1/namespaces/{self.namespace}/services/{service}:{port}/proxy"

    def _path(self, name: str | None = None) -> str:
        return object_path("Deployment", name or self.deployment, self.namespace)

    def _where(self, name: str | None = None) -> str:
        return f"Deployment {self.namespace}/{name or self.deployment}"

    # -- what runs -------------------------------------------------------------------------

    def _live(self) -> dict[str, Any] | None:
        return self.api.call("GET", self._path(), missing_ok=True)

    def current(self) -> Deployed | None:
        found = self._live()
        return None if found is None else _deployed(found)

    def live(self) -> list[str]:
        found = self._live()
        if found is None:
            return []
        now = _deployed(found)
        replicas = found["spec"].get("replicas")
        return [f"{now.version} {now.image} {self._where()} replicas {replicas}"]

    # -- the rollout -----------------------------------------------------------------------

    def ship(self, version: str, image: str, smoke: SmokeTest) -> str:
        objects = render_manifests(image, version, self.namespace, self.manifest_dir, self.model)
        main = next(obj for obj in objects if obj["kind"] == "Deployment")
        live = self._live()
        if live is not None and live["spec"].get("paused"):
            raise RolloutError(
                f"{self._where()} is paused: resume it (kubectl rollout resume "
                f"deployment/{self.deployment} -n {self.namespace}) and ship again"
            )
        if self.create_namespace:
            self._create_namespace()
        self._try_candidate(candidate_of(main), image, smoke)
        self.apply(objects)
        self.wait_rolled_out()
        smoke(self.pod_caller(main, image))
        return self.endpoint

    def check(self, smoke: SmokeTest) -> None:
        live = self._live()
        if live is None:
            raise RolloutError(f"{self._where()} does not exist")
        smoke(self.pod_caller(live, _deployed(live).image or ""))

    def _try_candidate(self, candidate: dict[str, Any], image: str, smoke: SmokeTest) -> None:
        name = candidate["metadata"]["name"]
        log.info("starting candidate %s (%s)", self._where(name), image)
        try:
            self.apply([candidate], keep_replicas=True)
            self.wait_rolled_out(name)
            smoke(self.pod_caller(candidate, image))
        except Exception as err:
            raise RolloutError(f"candidate {self._where(name)}: {err}") from err
        finally:
            self._delete(name)
        log.info("candidate %s passed; rolling out", name)

    def _delete(self, name: str) -> None:
        query = [("propagationPolicy", "Background")]
        try:
            self.api.call("DELETE", self._path(name), missing_ok=True, query=query)
        except RolloutError as err:  # the candidate takes no traffic: a leftover is harmless
            log.warning("deleting the candidate %s: %s", name, err)

    def undeploy(self) -> list[str]:
        """Delete this model's objects, and a candidate a killed run left behind; never
        another model's, never the namespace. `Kind/name` of each object that was there."""
        objects = [o for o in reversed(self._objects()) if o["kind"] not in CLUSTER_SCOPED]
        main = next(o for o in objects if o["kind"] == "Deployment")
        removed = []
        for obj in [*objects, candidate_of(main)]:
            kind, name = obj["kind"], obj["metadata"]["name"]
            path = object_path(kind, name, self.namespace)
            query = [("propagationPolicy", "Background")]
            if self.api.call("DELETE", path, missing_ok=True, query=query) is not None:
                removed.append(f"{kind}/{name}")
        return removed

    def _create_namespace(self) -> None:
        obj = namespace_manifest(self.namespace, self.manifest_dir / "admin")
        try:
            self.api.call("POST", object_path("Namespace", None, None), obj)
            log.info("created namespace %s", self.namespace)
        except ApiStatusError as err:
            if err.status != 409:  # AlreadyExists: the admin's, left exactly as it is
                raise

    def apply(self, objects: Iterable[dict[str, Any]], keep_replicas: bool = False) -> None:
        """Server-side apply of each object, as field manager `kiln`.

        Fields kiln stops sending are removed; a field another manager changed is a
        conflict, reported with the manager's name, never overwritten silently. The HPA
        owns a Deployment's replica count, so it is left out (the candidate keeps its 1).
        """
        for obj in objects:
            body = copy.deepcopy(obj)
            if body["kind"] == "Deployment" and not keep_replicas:
                body["spec"].pop("replicas", None)
            kind, name = body["kind"], body["metadata"]["name"]
            path = object_path(kind, name, self.namespace)
            log.info("applying %s/%s", kind, name)
            try:
                self.api.call(
                    "PATCH",
                    path,
                    body,
                    content_type=APPLY_PATCH,
                    query=[("fieldManager", FIELD_MANAGER)],
                )
            except ApiStatusError as err:
                if is_field_conflict(err):
                    raise RolloutError(
                        f"applying {kind}/{name}: another field manager changed fields kiln "
                        f"owns ({err}); undo that change or hand the fields back to kiln"
                    ) from err
                raise

    def restore(self, before: Deployed) -> str:
        """Write `before` (a recorded good version) back into the main Deployment's template."""
        if before.version is None or before.image is None:
            raise RolloutError("the record names no version and image to restore")
        # Only the pod template is written back, and a pod template has no namespace.
        objects = render_manifests(
            before.image, before.version, directory=self.manifest_dir, model=self.model
        )
        template = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]
        for _attempt in range(RESTORE_ATTEMPTS):
            live = self._live()
            if live is None:
                raise RolloutError(f"{self._where()} is gone")
            now = _deployed(live)
            if (now.version, now.image) == (before.version, before.image):
                return f"{before.version} keeps serving (nothing to restore)"
            try:
                self._patch_template(live, before.version, template)
            except ApiTransientError:
                continue  # 409: changed under us; read again
            except ApiStatusError as err:
                if err.status != 422:  # a failed `test`: the spec changed; read again
                    raise
                continue
            self.wait_rolled_out()
            return f"rolled back to {before.version} ({before.image})"
        raise RolloutError(f"restoring {self._where()}: it kept changing under us")

    def _patch_template(self, live: dict[str, Any], version: str, template: dict) -> None:
        annotations = live["metadata"].get("annotations") or {}
        operations = [
            {"op": "test", "path": "/metadata/generation", "value": live["metadata"]["generation"]},
            {"op": "replace", "path": "/spec/template", "value": template},
        ]
        if annotations:
            operations.append({"op": "add", "path": VERSION_ANNOTATION_POINTER, "value": version})
        query = [("fieldManager", FIELD_MANAGER)]
        self.api.call("PATCH", self._path(), operations, content_type=JSON_PATCH, query=query)

    def wait_rolled_out(self, name: str | None = None) -> None:
        """Poll a Deployment until its newest generation is fully available.

        The same test `kubectl rollout status` makes. Raises RolloutStuck on the progress
        deadline or a replica failure (the controller's verdicts), or when `timeout`
        seconds pass (ours).
        """
        deadline = self.clock() + self.timeout
        last = ""
        while True:
            found = self.api.call("GET", self._path(name), missing_ok=True)
            if found is None:
                raise RolloutStuck(f"{self._where(name)} does not exist")
            done, message = rollout_status(found)
            if message != last:
                log.info(message)
                last = message
            if done:
                return
            if self.clock() >= deadline:
                raise RolloutStuck(f"timed out after {self.timeout:g}s: {message}")
            self.sleep(self.poll_interval)

    # -- reaching the pods -------------------------------------------------------------------

    def pod_caller(self, deployment: dict[str, Any], image: str) -> Caller:
        """Requests to one ready pod of `deployment` running `image`, via the pod proxy."""
        labels = deployment["spec"]["selector"]["matchLabels"]
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        found = self.api.call(
            "GET", object_path("Pod", None, self.namespace), query=[("labelSelector", selector)]
        )
        ready = [pod for pod in (found or {}).get("items", []) if _ready_with(pod, image)]
        if not ready:
            raise RolloutError(
                f"no ready pod of {self._where(deployment['metadata']['name'])} runs {image}"
            )
        pod = sorted(ready, key=lambda p: p["metadata"]["name"])[0]["metadata"]["name"]
        base = f"/api/v1/namespaces/{self.namespace}/pods/{pod}:{server_port(deployment)}/proxy"

        def call(method: str, path: str, body: Any) -> Reply:
            url = f"{base}/{path.lstrip('/')}"
            reply = self.api.raw(method, url, body)
            if reply.status in (401, 403):  # the API server refused: not the model's answer
                message = f"{method} {url}: {reply.status} {status_message(reply.body)}"
                raise ApiStatusError(message, reply.status, reply.body)
            return reply

        return call


def _deployed(deployment: dict[str, Any]) -> Deployed:
    template = deployment["spec"]["template"]
    annotations = template["metadata"].get("annotations") or {}  # labels: always there
    image = next(
        (c["image"] for c in template["spec"]["containers"] if c["name"] == CONTAINER_NAME),
        None,
    )
    return Deployed(annotations.get(VERSION_ANNOTATION), image)


def _ready_with(pod: dict[str, Any], image: str) -> bool:
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    if meta.get("deletionTimestamp"):
        return False
    runs = any(c["name"] == CONTAINER_NAME and c["image"] == image for c in spec["containers"])
    conditions = status.get("conditions") or []
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    return runs and ready


def rollout_status(deployment: dict[str, Any]) -> tuple[bool, str]:
    """(done, message) for a Deployment; raises RolloutStuck when it cannot finish."""
    meta, spec = deployment["metadata"], deployment["spec"]
    status = deployment.get("status") or {}
    name = meta["name"]
    if spec.get("paused"):
        raise RolloutStuck(f"{name} is paused: resume it to let the rollout finish")
    generation = meta["generation"]  # the API server sets it on every write of the spec
    if status.get("observedGeneration", 0) < generation:
        return False, f"{name}: waiting for the controller to see generation {generation}"
    for condition in status.get("conditions") or []:
        kind, reason = condition.get("type"), condition.get("reason")
        if kind == "Progressing" and reason == "ProgressDeadlineExceeded":
            raise RolloutStuck(
                f"progress deadline exceeded: {condition.get('message', 'no progress')}"
            )
        if kind == "ReplicaFailure" and condition.get("status") == "True":
            raise RolloutStuck(f"replica failure ({reason}): {condition.get('message', '')}")
    want = spec["replicas"]  # the API server defaults it to 1; the HPA sets it after
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
