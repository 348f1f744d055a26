"""The Kubernetes target: render kiln's kustomize base, apply it, watch the Deployment roll.

Everything here talks to the API server through the official `kubernetes` client and
works on plain dicts (the JSON the API server sends), so the same code runs against a
real cluster and against the emulated API server the tests use.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from flows.errors import RolloutError

log = logging.getLogger(__name__)

MANIFEST_DIR = Path(__file__).resolve().parent.parent / "k8s"
VERSION_ANNOTATION = "kiln.dev/model-version"
APP_NAME = "kiln"
CONTAINER_NAME = "server"
SERVICE_PORT = "http"
FIELD_MANAGER = "kiln"
MERGE_PATCH = "application/merge-patch+json"

# kind -> (api group path, plural, namespaced)
_KINDS: dict[str, tuple[str, str, bool]] = {
    "Namespace": ("/api/v1", "namespaces", False),
    "Service": ("/api/v1", "services", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers", True),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets", True),
}


# -- rendering the base ------------------------------------------------------------------------


def _load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    with path.open() as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc]


def _image_with(entry: dict[str, Any], old: str) -> str:
    name = entry.get("newName", old)
    if "digest" in entry:
        return f"{name}@{entry['digest']}"
    if "newTag" in entry:
        return f"{name}:{entry['newTag']}"
    return name


def load_base(directory: Path = MANIFEST_DIR) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize DIRECTORY` would print for kiln's simple base.

    Honours the three kustomization fields the base uses: `resources`, `namespace` and
    `images`; anything else in kustomization.yaml is refused rather than ignored.
    """
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - {"apiVersion", "kind", "resources", "namespace", "images"}
    if unknown:
        raise RolloutError(
            f"rendering {directory}: kustomization fields {sorted(unknown)} are not supported "
            "by kiln's renderer; use `kubectl apply -k` or extend flows/kube.py"
        )
    objects: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        objects.extend(_load_yaml_documents(directory / resource))
    namespace = kustomization.get("namespace")
    images = {entry["name"]: entry for entry in kustomization.get("images", [])}
    for obj in objects:
        if namespace:
            _set_namespace(obj, namespace)
        for container in _containers(obj):
            entry = images.get(container["image"])
            if entry:
                container["image"] = _image_with(entry, container["image"])
    return objects


def _set_namespace(obj: dict[str, Any], namespace: str) -> None:
    if obj["kind"] == "Namespace":
        obj["metadata"]["name"] = namespace
    elif _KINDS.get(obj["kind"], ("", "", True))[2]:
        obj["metadata"]["namespace"] = namespace


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj.get("kind") != "Deployment":
        return []
    return obj["spec"]["template"]["spec"]["containers"]


def render_manifests(
    image: str, version: str, namespace: str, directory: Path = MANIFEST_DIR
) -> list[dict[str, Any]]:
    """The base with the server image pinned to `image` and `version` annotated everywhere."""
    if "@sha256:" not in image:
        raise RolloutError(f"rendering manifests: image {image!r} is not pinned by digest")
    objects = load_base(directory)
    for obj in objects:
        _set_namespace(obj, namespace)
        if obj["kind"] == "Deployment":
            obj["metadata"].setdefault("annotations", {})[VERSION_ANNOTATION] = version
            template = obj["spec"]["template"]
            template["metadata"].setdefault("annotations", {})[VERSION_ANNOTATION] = version
            for container in _containers(obj):
                if container["name"] == CONTAINER_NAME:
                    container["image"] = image
    return objects


# -- connecting ----------------------------------------------------------------------------------


def make_api_client(context: str | None = None, kubeconfig: str | None = None) -> client.ApiClient:
    """In a pod: the pod's service account. Elsewhere: the kubeconfig, at `context` if given."""
    if os.environ.get("KUBERNETES_SERVICE_HOST") and kubeconfig is None and context is None:
        config.load_incluster_config()
        return client.ApiClient()
    try:
        return config.new_client_from_config(config_file=kubeconfig, context=context)
    except config.ConfigException as err:
        where = kubeconfig or os.environ.get("KUBECONFIG", "~/.kube/config")
        raise RolloutError(
            f"connecting to Kubernetes (kubeconfig {where}, context {context or 'current'}): {err}"
        ) from err


# -- the cluster ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveDeployment:
    """What the Deployment runs now: enough to put it back."""

    version: str | None
    image: str | None
    template: dict[str, Any]
    replicas: int | None


@dataclass(frozen=True)
class ProxyResponse:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class RolloutStuck(Exception):
    """The Deployment did not finish rolling out (internal; becomes a RolloutError)."""


@dataclass
class KubeCluster:
    """kiln's objects in one namespace of one cluster, through `api_client`."""

    api_client: client.ApiClient
    namespace: str
    name: str = APP_NAME
    poll_interval: float = 2.0
    request_timeout: float = 30.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    # -- raw REST ------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        query: list[tuple[str, str]] | None = None,
    ) -> ProxyResponse:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        method_, url, headers, body_, _post = self.api_client.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api_client.call_api(
            method_, url, header_params=headers, body=body_, _request_timeout=self.request_timeout
        )
        response.read()
        return ProxyResponse(response.status, response.data or b"")

    def _object_path(self, kind: str, name: str | None, namespace: str | None) -> str:
        prefix, plural, namespaced = _KINDS[kind]
        path = prefix
        if namespaced:
            path += f"/namespaces/{namespace}"
        path += f"/{plural}"
        if name:
            path += f"/{name}"
        return path

    def _api(self, method: str, path: str, body: Any = None, **kw: Any) -> dict[str, Any] | None:
        """A JSON API call; None on 404, RolloutError on any other failure."""
        try:
            response = self._request(method, path, body, **kw)
        except ApiException as err:  # raised by the client for non-2xx statuses
            if err.status == 404:
                return None
            message = _status_message(err.body)
            raise RolloutError(f"{method} {path}: {err.status} {message}") from err
        except (OSError, urllib3.exceptions.HTTPError) as err:
            raise RolloutError(f"{method} {path}: {err}") from err
        if response.status == 404:
            return None
        if response.status >= 400:
            message = _status_message(response.body)
            raise RolloutError(f"{method} {path}: {response.status} {message}")
        return json.loads(response.body) if response.body else {}

    # -- objects -------------------------------------------------------------------------

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return self._api("GET", self._object_path(kind, name, self.namespace))

    def apply(self, objects: Iterable[dict[str, Any]]) -> None:
        """Create each object, or merge-patch it to the manifest when it exists (idempotent).

        JSON merge patch (RFC 7386) replaces lists wholesale and leaves fields the manifest
        does not name alone (a Service's clusterIP, the Deployment's status). A live
        Deployment keeps its replica count: the HPA owns it once it runs.
        """
        for obj in objects:
            kind, name = obj["kind"], obj["metadata"]["name"]
            namespace = obj["metadata"].get("namespace", self.namespace)
            live = self._api("GET", self._object_path(kind, name, namespace))
            if live is None:
                log.info("creating %s/%s", kind, name)
                self._api(
                    "POST",
                    self._object_path(kind, None, namespace),
                    obj,
                    query=[("fieldManager", FIELD_MANAGER)],
                )
                continue
            patch = copy.deepcopy(obj)
            if kind == "Deployment" and live.get("spec", {}).get("replicas") is not None:
                patch["spec"]["replicas"] = live["spec"]["replicas"]
            log.info("updating %s/%s", kind, name)
            self._api(
                "PATCH",
                self._object_path(kind, name, namespace),
                patch,
                content_type=MERGE_PATCH,
                query=[("fieldManager", FIELD_MANAGER)],
            )

    def live_deployment(self) -> LiveDeployment | None:
        deployment = self.get("Deployment", self.name)
        if deployment is None:
            return None
        template = deployment["spec"]["template"]
        annotations = template.get("metadata", {}).get("annotations") or {}
        image = next(
            (c["image"] for c in template["spec"]["containers"] if c["name"] == CONTAINER_NAME),
            None,
        )
        return LiveDeployment(
            version=annotations.get(VERSION_ANNOTATION),
            image=image,
            template=template,
            replicas=deployment["spec"].get("replicas"),
        )

    def restore(self, previous: LiveDeployment) -> None:
        """Put the previous pod template back exactly (PUT, not merge), as `rollout undo` does."""
        path = self._object_path("Deployment", self.name, self.namespace)
        for _attempt in range(5):
            live = self._api("GET", path)
            if live is None:
                raise RolloutError(
                    f"restoring {self.namespace}/{self.name}: the Deployment is gone"
                )
            live["spec"]["template"] = copy.deepcopy(previous.template)
            annotations = live["metadata"].setdefault("annotations", {})
            if previous.version is not None:
                annotations[VERSION_ANNOTATION] = previous.version
            live.pop("status", None)
            try:
                response = self._request("PUT", path, live)
            except ApiException as err:
                if err.status == 409:  # changed under us (resourceVersion): read and retry
                    continue
                raise RolloutError(
                    f"restoring {self.namespace}/{self.name}: {err.status} "
                    f"{_status_message(err.body)}"
                ) from err
            if response.status == 409:
                continue
            if response.status >= 400:
                raise RolloutError(
                    f"restoring {self.namespace}/{self.name}: {response.status} "
                    f"{_status_message(response.body)}"
                )
            return
        raise RolloutError(f"restoring {self.namespace}/{self.name}: conflicts kept happening")

    def wait_rolled_out(self, timeout: float) -> None:
        """Poll the Deployment until its newest generation is fully available.

        The same test `kubectl rollout status` makes. Raises RolloutStuck on the progress
        deadline (the controller's verdict) or when `timeout` seconds pass (ours).
        """
        deadline = self.clock() + timeout
        last = ""
        while True:
            deployment = self.get("Deployment", self.name)
            if deployment is None:
                raise RolloutStuck(f"Deployment {self.namespace}/{self.name} does not exist")
            done, message = rollout_status(deployment)
            if message != last:
                log.info("%s", message)
                last = message
            if done:
                return
            if self.clock() >= deadline:
                raise RolloutStuck(f"timed out after {timeout:g}s: {message}")
            self.sleep(self.poll_interval)

    # -- the Service ---------------------------------------------------------------------

    def proxy_path(self, path: str) -> str:
        return (
            f"/api/v1/namespaces/{self.namespace}/services/"
            f"{self.name}:{SERVICE_PORT}/proxy/{path.lstrip('/')}"
        )

    def call_service(self, method: str, path: str, body: Any = None) -> ProxyResponse:
        """One request to the Service through the API server's proxy."""
        try:
            return self._request(method, self.proxy_path(path), body)
        except ApiException as err:
            body = err.body.encode() if isinstance(err.body, str) else (err.body or b"")
            return ProxyResponse(err.status or 0, body)
        except (OSError, urllib3.exceptions.HTTPError) as err:
            raise RolloutError(f"{method} {self.proxy_path(path)}: {err}") from err

    @property
    def endpoint(self) -> str:
        return f"{self.api_client.configuration.host}{self.proxy_path('')}"


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


def _status_message(body: Any) -> str:
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    try:
        return json.loads(body).get("message", body)
    except (TypeError, ValueError, AttributeError):
        return str(body)[:300]
