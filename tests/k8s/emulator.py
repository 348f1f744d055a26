"""An EMULATED Kubernetes API server, for tests only.

No cluster can run on the machines kiln's tests run on, so this module stands in for
one. It is not Kubernetes: it is a small HTTP server on 127.0.0.1 that speaks the REST
wire protocol the official `kubernetes` Python client uses, for the handful of objects
kiln ships, and plays the two cluster components a rollout depends on:

- the API server: GET / POST / PUT / PATCH (JSON merge patch, RFC 7386) on v1
  namespaces and services, apps/v1 deployments (and their status subresource),
  autoscaling/v2 horizontalpodautoscalers and policy/v1 poddisruptionbudgets; the
  object metadata it maintains (uid, resourceVersion with optimistic concurrency,
  generation bumped on spec changes); Kubernetes `Status` error bodies.
- the deployment controller: after a Deployment's spec changes, each following read
  (each poll) moves the rollout one step: observedGeneration catches up, then
  updatedReplicas and availableReplicas climb one replica at a time. A pod template
  whose image was marked `stuck` never becomes available: the controller leaves one
  unavailable new replica and, after a few polls, sets the Progressing condition to
  ProgressDeadlineExceeded, as the real controller does when progressDeadlineSeconds pass.
- the Service proxy (/api/v1/namespaces/NS/services/NAME:PORT/proxy/PATH): answers as
  kiln's server would, for the image the available pods run. /metadata reports the
  version annotated on the pod template, unless a fault says otherwise for that image.

Tests that use it say so; the same scenarios run against a real cluster in
tests/k8s/test_cluster.py when KUBECONFIG is set.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

VERSION_ANNOTATION = "kiln.dev/model-version"

_COLLECTIONS = {
    ("", "v1", "namespaces"): ("Namespace", False),
    ("", "v1", "services"): ("Service", True),
    ("apps", "v1", "deployments"): ("Deployment", True),
    ("autoscaling", "v2", "horizontalpodautoscalers"): ("HorizontalPodAutoscaler", True),
    ("policy", "v1", "poddisruptionbudgets"): ("PodDisruptionBudget", True),
}

_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[a-z.]+)/(?P<version>v[0-9a-z]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[a-z]+)(?:/(?P<name>[^/]+))?"
    r"(?:/(?P<sub>status))?/?$"
)
_PROXY = re.compile(
    r"^/api/v1/namespaces/(?P<ns>[^/]+)/services/(?P<svc>[^/:]+)(?::(?P<port>[^/]+))?"
    r"/proxy(?P<path>/.*)?$"
)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@dataclass
class Fault:
    """How the server in one image misbehaves behind the Service proxy."""

    metadata_version: str | None = None  # report this version instead of the annotated one
    predict_status: int = 200  # answer POST /predict with this status
    stuck: bool = False  # pods never become ready: the rollout hits its progress deadline


@dataclass
class _Rollout:
    """The controller's private view of one Deployment."""

    serving_template: dict[str, Any] | None = None  # the template available pods run
    target_hash: str | None = None
    updated: int = 0
    stuck_polls: int = 0


@dataclass
class EmulatedCluster:
    """Shared state; the HTTP handler reads and writes it under `lock`."""

    polls_to_deadline: int = 3
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict)
    rollouts: dict[tuple[str, str], _Rollout] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    proxied: list[tuple[str, str]] = field(default_factory=list)
    authorizations: set[str] = field(default_factory=set)  # Authorization headers seen
    lock: threading.RLock = field(default_factory=threading.RLock)
    _rv: int = 0

    # -- test helpers ------------------------------------------------------------------------

    def fault(self, image: str, **kw: Any) -> None:
        self.faults[image] = Fault(**kw)

    def deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            return copy.deepcopy(self.objects.get(("Deployment", namespace, name)))

    def template_image(self, namespace: str, name: str) -> str | None:
        deployment = self.deployment(namespace, name)
        if deployment is None:
            return None
        return deployment["spec"]["template"]["spec"]["containers"][0]["image"]

    def serving_image(self, namespace: str, name: str) -> str | None:
        with self.lock:
            rollout = self.rollouts.get((namespace, name))
            if rollout is None or rollout.serving_template is None:
                return None
            return rollout.serving_template["spec"]["containers"][0]["image"]

    # -- object store ------------------------------------------------------------------------

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def create(self, kind: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        key = (kind, namespace, meta["name"])
        if key in self.objects:
            raise _Error(409, "AlreadyExists", f'{kind.lower()}s "{meta["name"]}" already exists')
        if kind != "Namespace" and ("Namespace", "", namespace) not in self.objects:
            raise _Error(404, "NotFound", f'namespaces "{namespace}" not found')
        if kind != "Namespace":
            meta["namespace"] = namespace
        meta.update(
            uid=str(uuid.uuid4()),
            resourceVersion=self._next_rv(),
            generation=1,
            creationTimestamp="2026-01-01T00:00:00Z",
        )
        if kind == "Deployment":
            obj.setdefault("spec", {}).setdefault("replicas", 1)
            obj["status"] = {}
        if kind == "Service":
            obj["spec"].setdefault("clusterIP", "10.96.0.10")
        self.objects[key] = obj
        return obj

    def update(
        self,
        kind: str,
        namespace: str,
        name: str,
        new: dict[str, Any],
        subresource: str | None,
        check_rv: bool,
    ) -> dict[str, Any]:
        key = (kind, namespace, name)
        old = self.objects.get(key)
        if old is None:
            raise _Error(404, "NotFound", f'{kind.lower()}s "{name}" not found')
        sent_rv = new.get("metadata", {}).get("resourceVersion")
        if check_rv and sent_rv and sent_rv != old["metadata"]["resourceVersion"]:
            raise _Error(
                409,
                "Conflict",
                f"Operation cannot be fulfilled on {kind.lower()}s "
                f'"{name}": the object has been modified',
            )
        if subresource == "status":
            result = copy.deepcopy(old)
            result["status"] = new.get("status", {})
        else:
            result = copy.deepcopy(new)
            result["status"] = copy.deepcopy(old.get("status", {}))
            if kind == "Service":  # clusterIP is immutable and kept
                result["spec"]["clusterIP"] = old["spec"]["clusterIP"]
        meta = result.setdefault("metadata", {})
        for kept in ("uid", "creationTimestamp", "name", "generation"):
            meta[kept] = old["metadata"][kept]
        if kind != "Namespace":
            meta["namespace"] = namespace
        if subresource is None and result.get("spec") != old.get("spec"):
            meta["generation"] = old["metadata"]["generation"] + 1
        meta["resourceVersion"] = self._next_rv()
        self.objects[key] = result
        return result

    # -- the deployment controller -------------------------------------------------------

    def reconcile(self, namespace: str, name: str) -> None:
        """One controller step for a Deployment (runs on every read of it)."""
        deployment = self.objects.get(("Deployment", namespace, name))
        if deployment is None:
            return
        meta, spec = deployment["metadata"], deployment["spec"]
        status = deployment.setdefault("status", {})
        rollout = self.rollouts.setdefault((namespace, name), _Rollout())
        want = spec.get("replicas", 1)
        template = spec["template"]
        digest = _hash(template)
        if status.get("observedGeneration", 0) < meta["generation"]:
            status["observedGeneration"] = meta["generation"]
            if digest != rollout.target_hash:
                rollout.target_hash = digest
                rollout.updated = 0
                rollout.stuck_polls = 0
                if _hash(rollout.serving_template) == digest:  # rolled back to what serves
                    rollout.updated = want
            _set_status(status, rollout, want, stuck=False)
            _progressing(
                status, "True", "ReplicaSetUpdated", f'ReplicaSet "{name}" is progressing.'
            )
            return
        image = template["spec"]["containers"][0]["image"]
        if self.faults.get(image, Fault()).stuck and rollout.updated < want:
            rollout.updated = min(want, 1)
            rollout.stuck_polls += 1
            _set_status(status, rollout, want, stuck=True)
            if rollout.stuck_polls >= self.polls_to_deadline:
                _progressing(
                    status,
                    "False",
                    "ProgressDeadlineExceeded",
                    f'ReplicaSet "{name}" has timed out progressing.',
                )
            return
        if rollout.updated < want:
            rollout.updated += 1
        if rollout.updated >= want:
            rollout.updated = want
            rollout.serving_template = copy.deepcopy(template)
            _progressing(
                status,
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{name}" has successfully progressed.',
            )
        _set_status(status, rollout, want, stuck=False)

    # -- the Service proxy ---------------------------------------------------------------

    def proxy(
        self, namespace: str, service: str, method: str, path: str, body: bytes
    ) -> tuple[int, dict[str, Any]]:
        svc = self.objects.get(("Service", namespace, service))
        if svc is None:
            return 404, _status(404, "NotFound", f'services "{service}" not found')
        selector = svc["spec"].get("selector", {})
        template = None
        for (kind, ns, name), obj in self.objects.items():
            if kind != "Deployment" or ns != namespace:
                continue
            labels = obj["spec"]["template"]["metadata"].get("labels", {})
            if all(labels.get(k) == v for k, v in selector.items()):
                rollout = self.rollouts.get((ns, name))
                template = rollout.serving_template if rollout else None
        if template is None:
            return 503, _status(
                503, "ServiceUnavailable", f'no endpoints available for service "{service}"'
            )
        image = template["spec"]["containers"][0]["image"]
        fault = self.faults.get(image, Fault())
        annotations = template["metadata"].get("annotations") or {}
        version = fault.metadata_version or annotations.get(VERSION_ANNOTATION, "unknown")
        self.proxied.append((method, path))
        if method == "GET" and path in ("/health", "/ready"):
            return 200, {"status": "ok"}
        if method == "GET" and path == "/metadata":
            return 200, {"version": version, "image": image}
        if method == "POST" and path == "/predict":
            if fault.predict_status != 200:
                return fault.predict_status, {"detail": "emulated server error"}
            rows = json.loads(body or b"{}").get("data", [])
            return 200, {"prediction": [[1.0, 0.0] for _ in rows]}
        return 404, {"detail": "Not Found"}


class _Error(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _hash(obj: Any) -> str | None:
    if obj is None:
        return None
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _set_status(status: dict[str, Any], rollout: _Rollout, want: int, stuck: bool) -> None:
    old_pods = 0 if rollout.serving_template is None or rollout.updated >= want else want
    if stuck:
        status.update(
            replicas=old_pods + rollout.updated,
            updatedReplicas=rollout.updated,
            availableReplicas=old_pods,
            unavailableReplicas=rollout.updated,
            readyReplicas=old_pods,
        )
        return
    if rollout.updated < want and old_pods:
        # maxUnavailable 0: old pods stay up until the new ones are available
        old_pods = want - rollout.updated
        available = want
    else:
        available = rollout.updated
    status.update(
        replicas=old_pods + rollout.updated,
        updatedReplicas=rollout.updated,
        availableReplicas=available,
        readyReplicas=available,
        unavailableReplicas=max(0, want - available),
    )


def _progressing(status: dict[str, Any], value: str, reason: str, message: str) -> None:
    conditions = [c for c in status.get("conditions", []) if c["type"] != "Progressing"]
    conditions.append(
        {
            "type": "Progressing",
            "status": value,
            "reason": reason,
            "message": message,
            "lastUpdateTime": "2026-01-01T00:00:00Z",
        }
    )
    status["conditions"] = conditions


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms stalls

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet tests
        pass

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self, method: str) -> None:
        cluster = self.server.cluster
        path = self.path.split("?", 1)[0]
        body = self._body()
        with cluster.lock:
            cluster.requests.append((method, self.path))
            cluster.authorizations.add(self.headers.get("Authorization") or "")
            proxy = _PROXY.match(path)
            if proxy:
                code, answer = cluster.proxy(
                    proxy["ns"], proxy["svc"], method, proxy["path"] or "/", body
                )
                self._send(code, answer)
                return
            try:
                code, answer = self._api(cluster, method, path, body)
            except _Error as err:
                code, answer = err.code, _status(err.code, err.reason, err.message)
            self._send(code, answer)

    def _api(
        self, cluster: EmulatedCluster, method: str, path: str, body: bytes
    ) -> tuple[int, dict[str, Any]]:
        match = _PATH.match(path)
        if not match:
            raise _Error(404, "NotFound", f"the server could not find the resource {path}")
        group = match["group"] or ""
        version = match["core"] or match["version"]
        plural, ns, name, sub = match["plural"], match["ns"], match["name"], match["sub"]
        if ns is not None and plural == "namespaces":
            raise _Error(404, "NotFound", path)
        collection = _COLLECTIONS.get((group, version, plural))
        if collection is None:
            raise _Error(404, "NotFound", f"no resource {group}/{version}/{plural}")
        kind, namespaced = collection
        if namespaced and ns is None:
            raise _Error(404, "NotFound", f"{plural} is namespaced")
        namespace = ns or ""
        if method == "POST" and name is None:
            obj = json.loads(body)
            if obj.get("kind") != kind:
                raise _Error(400, "BadRequest", f"expected kind {kind}, got {obj.get('kind')}")
            return 201, cluster.create(kind, namespace, obj)
        if name is None:
            raise _Error(405, "MethodNotAllowed", f"{method} on a collection")
        key = (kind, namespace, name)
        if method == "GET":
            if kind == "Deployment":
                cluster.reconcile(namespace, name)
            if key not in cluster.objects:
                raise _Error(404, "NotFound", f'{plural}.{group or "core"} "{name}" not found')
            return 200, cluster.objects[key]
        if method == "PUT":
            return 200, cluster.update(kind, namespace, name, json.loads(body), sub, True)
        if method == "PATCH":
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            if content_type != "application/merge-patch+json":
                raise _Error(
                    415,
                    "UnsupportedMediaType",
                    f"the emulator only implements merge patches, got {content_type!r}",
                )
            if key not in cluster.objects:
                raise _Error(404, "NotFound", f'{plural}.{group or "core"} "{name}" not found')
            patched = merge_patch(cluster.objects[key], json.loads(body))
            return 200, cluster.update(kind, namespace, name, patched, sub, False)
        raise _Error(405, "MethodNotAllowed", method)

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle("PATCH")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    cluster: EmulatedCluster


class EmulatedApiServer:
    """Runs an EmulatedCluster behind HTTP on 127.0.0.1 (a free port) in a thread."""

    def __init__(self, cluster: EmulatedCluster | None = None) -> None:
        self.cluster = cluster or EmulatedCluster()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.cluster = self.cluster
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> EmulatedApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
