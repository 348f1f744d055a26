"""An EMULATED Kubernetes API server, for tests only.

No cluster can run where kiln's tests run, so this module stands in for one. It is not
Kubernetes: it is a small HTTP server on 127.0.0.1 that speaks the REST wire protocol
the official `kubernetes` Python client uses, for the objects kiln ships, and plays the
cluster components a rollout depends on, with the timing a real cluster shows:

- the API server: GET / POST / PUT / DELETE, and PATCH as JSON merge patch, JSON patch
  (RFC 6902, `test` ops answered 422 when they fail) and server-side apply (field
  managers, conflicts answered 409 unless forced, fields a manager stops applying are
  removed); resourceVersion bumped on every write, status writes included, and a stale
  one answered 409; generation bumped on spec changes; a Deployment's selector is
  immutable and must select its own pod template (422); `Status` error bodies; an
  optional RBAC allow-list (403); the restricted Pod Security Standard enforced on pods
  when the namespace says so.
- the deployment controller, one step per request that names a Deployment: a write is
  first noticed, then observed a step later (observedGeneration set, no new pod yet);
  from the next step pods change one at a time, within maxSurge / maxUnavailable: one
  created per step, ready READY_AFTER_STEPS steps after creation, one old pod told to
  stop per step, lingering a step as terminating; the status counts report the pods as
  the step found them (a ReplicaSet's counts lag its pods). A paused Deployment does not
  roll, wherever its rollout stands; pods the admission refuses make a ReplicaFailure
  condition; no progress for `polls_to_deadline` steps makes ProgressDeadlineExceeded.
- the endpoints controller: a Service's endpoints follow pod readiness one step late.
- the proxies, resolving `[SCHEME:]NAME[:PORT]` as the API server does:
  `services/.../proxy` takes a Service port by number or by name (none: the unnamed
  port; 503 on a miss), picks a random ready endpoint and dials the pod port its
  targetPort names; `pods/.../proxy` dials the port as written (none: the first declared).
  The request goes on with its method, path, query and body, and the answer comes back
  as the pod's server gave it. Only port 8000 answers: the server answers as kiln's would,
  for the image the pod runs: /metadata reports the version baked into that image (the
  `images` registry), never an annotation.
- the kubelet's logs: `pods/NAME/log` (verb get on pods/log) answers text/plain, chunked,
  with the container's lines (its start, then one access line per proxied request);
  `container`, `tailLines`, `limitBytes` and `timestamps` as the API server reads them;
  `follow=true` keeps the stream open, sends lines as they are written and ends when the
  pod terminates; 400 for a container that never started (its image cannot be pulled)
  or a container the pod does not have.

Tests that use it say so; the same scenarios run against a real cluster in
tests/rollout/kubernetes/test_cluster.py when KUBECONFIG is set.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import random
import re
import threading
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import yaml

ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
SERVER_PORT = 8000
# A new pod's server answers its readiness probe this many controller steps after creation.
READY_AFTER_STEPS = 2

_COLLECTIONS = {
    ("", "v1", "namespaces"): ("Namespace", False),
    ("", "v1", "services"): ("Service", True),
    ("", "v1", "pods"): ("Pod", True),
    ("apps", "v1", "deployments"): ("Deployment", True),
    ("autoscaling", "v2", "horizontalpodautoscalers"): ("HorizontalPodAutoscaler", True),
    ("policy", "v1", "poddisruptionbudgets"): ("PodDisruptionBudget", True),
}
_GROUPS = {kind: group for (group, _, _), (kind, _) in _COLLECTIONS.items()}
_PLURALS = {kind: plural for (_, _, plural), (kind, _) in _COLLECTIONS.items()}

_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[a-z.]+)/(?P<version>v[0-9a-z]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[a-z]+)(?:/(?P<name>[^/]+))?"
    r"(?:/(?P<sub>status|scale))?/?$"
)
_LOG = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<name>[^/]+)/log$")
_PROXY = re.compile(
    r"^/api/v1/namespaces/(?P<ns>[^/]+)/(?P<plural>services|pods)/(?P<id>[^/]+)"
    r"/proxy(?P<path>/.*)?$"
)


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details


@dataclass(frozen=True)
class Relayed:
    """A pod server's own answer, which the proxy relays as it came: status, type, bytes."""

    status: int
    content_type: str
    body: bytes


def status_body(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
    body.update(message=message, reason=reason, code=code)
    if details:
        body["details"] = details
    return body


# -- field paths (server-side apply's bookkeeping) -------------------------------------------


def _named_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(item, dict) and "name" in item for item in value)
    )


def leaf_paths(obj: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Every leaf of `obj` by path; lists of named items are keyed by name, as apply does."""
    if isinstance(obj, dict) and obj:
        out: dict[tuple[str, ...], Any] = {}
        for key, value in obj.items():
            out.update(leaf_paths(value, (*prefix, key)))
        return out
    if _named_list(obj):
        out = {}
        for item in obj:
            out.update(leaf_paths(item, (*prefix, f"[name={item['name']}]")))
        return out
    return {prefix: obj}


def _child(container: Any, key: str, create: bool) -> Any:
    if key.startswith("[name="):
        name = key[6:-1]
        for item in container:
            if item.get("name") == name:
                return item
        if not create:
            return None
        container.append({"name": name})
        return container[-1]
    if create and not isinstance(container.get(key), dict | list):
        container[key] = {}
    return container.get(key)


def set_path(obj: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node: Any = obj
    for index, key in enumerate(path[:-1]):
        upcoming = path[index + 1]
        if not key.startswith("[name=") and upcoming.startswith("[name="):
            if not isinstance(node.get(key), list):
                node[key] = []
            node = node[key]
        else:
            node = _child(node, key, create=True)
    last = path[-1]
    if last.startswith("[name="):
        _child(node, last, create=True)
    else:
        node[last] = copy.deepcopy(value)


def get_path(obj: Any, path: tuple[str, ...]) -> Any:
    node = obj
    for key in path:
        if node is None:
            return None
        node = _child(node, key, create=False) if key.startswith("[name=") else node.get(key)
    return node


def del_path(obj: dict[str, Any], path: tuple[str, ...]) -> None:
    if path[-1] == "name" and len(path) > 1 and path[-2].startswith("[name="):
        path = path[:-1]  # an item's key goes: the whole item goes
    parent = get_path(obj, path[:-1])
    last = path[-1]
    if isinstance(parent, list) and last.startswith("[name="):
        parent[:] = [item for item in parent if item.get("name") != last[6:-1]]
    elif isinstance(parent, dict):
        parent.pop(last, None)


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


def json_patch(target: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 for the ops kiln may send (test, add, replace, remove); 422 when one fails."""
    result = copy.deepcopy(target)
    for op in operations:
        if op.get("op") not in ("test", "add", "replace", "remove"):
            raise ApiError(422, "Invalid", f"Unexpected kind: {op.get('op')}")
        keys = [part.replace("~1", "/").replace("~0", "~") for part in op["path"].split("/")[1:]]
        parent = result
        for key in keys[:-1]:
            parent = parent[int(key)] if isinstance(parent, list) else parent.get(key)
            if parent is None:
                raise ApiError(422, "Invalid", f"{op['op']} {op['path']}: missing path")
        last = keys[-1]
        current = parent.get(last) if isinstance(parent, dict) else None
        if op["op"] == "test" and current != op["value"]:
            raise ApiError(422, "Invalid", f"testing value {op['path']} failed: test failed")
        if op["op"] in ("add", "replace"):
            if op["op"] == "replace" and last not in parent:
                raise ApiError(422, "Invalid", f"replace {op['path']}: missing path")
            parent[last] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            parent.pop(last, None)
    return result


# -- the restricted Pod Security Standard ---------------------------------------------------


def restricted_violations(spec: dict[str, Any]) -> list[str]:
    """Why a pod spec fails the `restricted` Pod Security Standard (empty when it passes)."""
    found = []
    pod = spec.get("securityContext") or {}
    if any(spec.get(key) for key in ("hostNetwork", "hostPID", "hostIPC")):
        found.append("host namespaces")
    if any("hostPath" in volume for volume in spec.get("volumes") or []):
        found.append("hostPath volumes")
    for container in spec.get("containers") or []:
        ctx = container.get("securityContext") or {}
        name = container.get("name")
        if ctx.get("privileged"):
            found.append(f'privileged (container "{name}")')
        if ctx.get("allowPrivilegeEscalation") is not False:
            found.append(f'allowPrivilegeEscalation != false (container "{name}")')
        dropped = (ctx.get("capabilities") or {}).get("drop") or []
        if "ALL" not in dropped:
            found.append(f'unrestricted capabilities (container "{name}" must drop ALL)')
        if not ctx.get("runAsNonRoot", pod.get("runAsNonRoot")):
            found.append(f'runAsNonRoot != true (container "{name}")')
        if ctx.get("runAsUser", pod.get("runAsUser")) == 0:
            found.append(f'runAsUser=0 (container "{name}")')
        seccomp = (ctx.get("seccompProfile") or pod.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f'seccompProfile (container "{name}")')
    return found


# -- what runs ------------------------------------------------------------------------------


@dataclass
class Image:
    """What the registry holds under one reference: the version baked in and its server."""

    version: str
    predict_status: int = 200
    starts: bool = True  # False: the server never becomes ready
    capacity: int | None = None  # at most this many of its pods get ready (a full node)


@dataclass
class Pod:
    name: str
    deployment: str
    template_hash: str
    template: dict[str, Any]
    ip: str
    ready: bool = False
    terminating: bool = False
    age: int = 0  # controller steps since it was created
    log: list[tuple[str, str]] = field(default_factory=list)  # (RFC 3339 time, line)

    def write_log(self, line: str) -> None:
        when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        self.log.append((when, line))

    @property
    def image(self) -> str:
        return self.template["spec"]["containers"][0]["image"]


@dataclass
class _Controller:
    """The deployment controller's private view of one Deployment."""

    seen_write: str | None = None  # the resourceVersion of the last write it noticed
    stuck_steps: int = 0
    pods: list[Pod] = field(default_factory=list)


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


def _count(value: Any, want: int, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        share = want * int(value[:-1]) / 100
        return int(-(-share // 1)) if round_up else int(share)
    return int(value)


@dataclass
class EmulatedCluster:
    """Shared state; the HTTP handler reads and writes it under `lock`."""

    polls_to_deadline: int = 3
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    managers: dict[tuple[str, str, str], dict[str, set]] = field(default_factory=dict)
    images: dict[str, Image] = field(default_factory=dict)
    controllers: dict[tuple[str, str], _Controller] = field(default_factory=dict)
    endpoints: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    rbac: list[dict[str, Any]] | None = None  # Role rules; None allows everything
    requests: list[tuple[str, str]] = field(default_factory=list)
    proxied: list[tuple[str, str, str]] = field(default_factory=list)  # (pod, method, path)
    authorizations: set[str] = field(default_factory=set)  # Authorization headers seen
    forbidden: list[str] = field(default_factory=list)
    granted: set[tuple[int, str, str]] = field(default_factory=set)  # (rule, verb, resource)
    lock: threading.RLock = field(default_factory=threading.RLock)
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    # Called with the object's key just before a JSON patch is applied (tests race it).
    json_patch_hook: Any = None
    _rv: int = 0
    _pods: int = 0

    # -- test helpers ----------------------------------------------------------------------

    def push(self, image: str, version: str, **behaviour: Any) -> None:
        """Put an image into the emulated registry, with the version baked into it."""
        self.images[image] = Image(version, **behaviour)

    def fault(
        self,
        image: str,
        metadata_version: str | None = None,
        predict_status: int = 200,
        stuck: bool = False,
    ) -> None:
        """Make the server in `image` misbehave (its baked version, /predict, readiness)."""
        known = self.images.get(image) or Image("unknown")
        self.images[image] = Image(
            metadata_version or known.version, predict_status, starts=not stuck
        )

    def add_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        with self.lock:
            obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            obj["metadata"]["labels"] = dict(labels or {})
            self.create("Namespace", "", obj, "cluster-admin")

    def allow(self, role: dict[str, Any]) -> None:
        """Enforce a Role's rules from now on (403 for anything they do not grant)."""
        self.rbac = list(role["rules"])

    def deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            return copy.deepcopy(self.objects.get(("Deployment", namespace, name)))

    def template_image(self, namespace: str, name: str) -> str | None:
        deployment = self.deployment(namespace, name)
        if deployment is None:
            return None
        return deployment["spec"]["template"]["spec"]["containers"][0]["image"]

    def pods(self, namespace: str, name: str) -> list[Pod]:
        with self.lock:
            return list(self.controllers.get((namespace, name), _Controller()).pods)

    def serving_image(self, namespace: str, name: str) -> str | None:
        """The image every pod of the Deployment runs, once they all run one and are ready."""
        pods = self.pods(namespace, name)
        images = {pod.image for pod in pods}
        if len(images) != 1 or not all(p.ready and not p.terminating for p in pods):
            return None
        return images.pop()

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        """What the HPA does: write spec.replicas through the scale subresource."""
        with self.lock:
            key = ("Deployment", namespace, name)
            new = copy.deepcopy(self.objects[key])
            new["spec"]["replicas"] = replicas
            self.store(key, new, "kube-controller-manager")

    # -- the object store -------------------------------------------------------------------

    def next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def create(self, kind: str, namespace: str, obj: dict[str, Any], manager: str) -> dict:
        meta = obj.setdefault("metadata", {})
        owned = set(leaf_paths(_owned(obj)))  # what the writer sent, before any default
        key = (kind, namespace, meta.get("name", ""))
        if key in self.objects:
            raise ApiError(409, "AlreadyExists", f'{_PLURALS[kind]} "{key[2]}" already exists')
        if kind != "Namespace" and ("Namespace", "", namespace) not in self.objects:
            raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found')
        if kind != "Namespace":
            meta["namespace"] = namespace
        meta.update(uid=str(uuid.uuid4()), resourceVersion=self.next_rv(), generation=1)
        meta["creationTimestamp"] = "2026-01-01T00:00:00Z"
        if kind == "Deployment":
            _check_template_selected(key[2], obj)
            obj["spec"].setdefault("replicas", 1)  # the default when nobody sends it
            obj["status"] = {}
        if kind == "Service":
            obj["spec"].setdefault("clusterIP", "10.96.0.10")
        self.objects[key] = obj
        self.managers[key] = {manager: owned}
        return obj

    def store(
        self, key: tuple[str, str, str], new: dict[str, Any], manager: str | None
    ) -> dict[str, Any]:
        """Write a changed object: validation, generation, resourceVersion, ownership."""
        old = self.objects[key]
        kind = key[0]
        if kind == "Deployment" and new["spec"].get("selector") != old["spec"].get("selector"):
            raise ApiError(
                422,
                "Invalid",
                f'Deployment.apps "{key[2]}" is invalid: spec.selector: Invalid value: '
                f"{json.dumps(new['spec'].get('selector'))}: field is immutable",
            )
        if kind == "Deployment":
            _check_template_selected(key[2], new)
        meta = new.setdefault("metadata", {})
        for kept in ("uid", "creationTimestamp", "name", "generation"):
            meta[kept] = old["metadata"][kept]
        if kind != "Namespace":
            meta["namespace"] = key[1]
        if new.get("spec") != old.get("spec"):
            meta["generation"] = old["metadata"]["generation"] + 1
        if "status" in old:
            new["status"] = copy.deepcopy(old["status"])
        if manager is not None:
            self._take_ownership(key, old, new, manager)
        meta["resourceVersion"] = self.next_rv()
        self.objects[key] = new
        return new

    def _take_ownership(self, key: tuple, old: dict, new: dict, manager: str) -> None:
        before, after = leaf_paths(_owned(old)), leaf_paths(_owned(new))
        changed = {p for p, v in after.items() if before.get(p, object()) != v}
        managers = self.managers.setdefault(key, {})
        for name, paths in managers.items():
            if name != manager:
                paths -= changed
        managers.setdefault(manager, set()).update(changed)

    def check_rv(self, key: tuple[str, str, str], sent: dict[str, Any]) -> None:
        rv = (sent.get("metadata") or {}).get("resourceVersion")
        if rv and rv != self.objects[key]["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {_PLURALS[key[0]]} "{key[2]}": the object '
                "has been modified; please apply your changes to the latest version and try again",
            )

    def apply(
        self, kind: str, namespace: str, name: str, config: dict, manager: str, force: bool
    ) -> tuple[int, dict[str, Any]]:
        """Server-side apply: the config's fields become `manager`'s; its dropped ones go."""
        key = (kind, namespace, name)
        if key not in self.objects:
            return 201, self.create(kind, namespace, copy.deepcopy(config), manager)
        live = self.objects[key]
        self.check_rv(key, config)
        wanted = leaf_paths(_owned(config))
        current = leaf_paths(_owned(live))
        owners = self.managers.setdefault(key, {})
        conflicts = [
            (other, path)
            for other, paths in owners.items()
            if other != manager
            for path in paths & set(wanted)
            if current.get(path) != wanted[path]
        ]
        if conflicts and not force:
            described = ", ".join(f'conflict with "{m}": .{".".join(p)}' for m, p in conflicts)
            raise ApiError(
                409,
                "Conflict",
                f"Apply failed with {len(conflicts)} conflict(s): {described}",
                causes=[{"reason": "FieldManagerConflict"}],
            )
        new = copy.deepcopy(live)
        shared = set().union(*(p for m, p in owners.items() if m != manager)) if owners else set()
        for path in sorted(owners.get(manager, set()) - set(wanted) - shared, reverse=True):
            del_path(new, path)  # applied before, not any more, owned by nobody else
        for path, value in wanted.items():
            set_path(new, path, value)
        if kind == "Deployment":
            new["spec"].setdefault("replicas", 1)
        stored = self.store(key, new, None)
        for other, paths in owners.items():
            if other != manager:
                paths -= {p for p in set(wanted) if current.get(p) != wanted[p]}
        owners[manager] = set(wanted)
        return 200, stored

    def delete(self, key: tuple[str, str, str]) -> None:
        if key not in self.objects:
            raise ApiError(404, "NotFound", f'{_PLURALS[key[0]]} "{key[2]}" not found')
        del self.objects[key]
        self.managers.pop(key, None)
        if key[0] == "Deployment":
            self.controllers.pop((key[1], key[2]), None)  # garbage collection of its pods

    # -- the deployment controller ----------------------------------------------------------

    def step(self, namespace: str, name: str) -> None:
        """One sync of the deployment controller, and the endpoints controller before it."""
        self._sync_endpoints(namespace)
        deployment = self.objects.get(("Deployment", namespace, name))
        if deployment is None:
            return
        meta, spec = deployment["metadata"], deployment["spec"]
        status = copy.deepcopy(deployment.get("status") or {})
        controller = self.controllers.setdefault((namespace, name), _Controller())
        observing = status.get("observedGeneration", 0) < meta["generation"]
        if observing:
            if controller.seen_write != meta["resourceVersion"]:
                controller.seen_write = meta["resourceVersion"]  # noticed; synced next step
                return
            status["observedGeneration"] = meta["generation"]
            controller.stuck_steps = 0  # a new template: its progress deadline starts now
        if spec.get("paused"):
            _condition(status, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused")
        else:
            # The sync that observes a generation only makes its (empty) ReplicaSet: the
            # pods come on later syncs.
            self._roll(namespace, name, spec, status, controller, create=not observing)
        if status != deployment.get("status"):
            deployment["status"] = status
            meta["resourceVersion"] = self.next_rv()  # a status write, like any other

    def _roll(
        self, namespace: str, name: str, spec: dict, status: dict, ctl: _Controller, create: bool
    ) -> None:
        """Pods move one change at a time: one created, one made ready, one told to stop, and
        each a step apart; the status reports the pods as the step found them (a
        ReplicaSet's counts lag its pods)."""
        before = [(p.name, p.ready, p.terminating) for p in ctl.pods]
        seen = [(p.template_hash, p.ready, p.terminating) for p in ctl.pods]
        want = spec.get("replicas", 1)
        template = spec["template"]
        digest = _hash(template)
        refused = self._admission(namespace, template)
        _condition(status, "ReplicaFailure", "True", "FailedCreate", refused, keep=bool(refused))
        if create:
            self._move_pods(namespace, name, spec, ctl, digest, refused)
        self._status(name, status, ctl, seen, digest, want, before)

    def _move_pods(
        self, namespace: str, name: str, spec: dict, ctl: _Controller, digest: str, refused: str
    ) -> None:
        ctl.pods = [p for p in ctl.pods if not p.terminating]  # gone one step after
        for pod in ctl.pods:
            pod.age += 1
        starting = [p for p in ctl.pods if not p.ready and p.age >= READY_AFTER_STEPS]
        for pod in starting[:1]:
            pod.ready = self._can_start(namespace, pod)
        want = spec.get("replicas", 1)
        rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
        surge = _count(rolling.get("maxSurge", "25%"), want, round_up=True)
        unavailable = _count(rolling.get("maxUnavailable", "25%"), want, round_up=False)
        new = [p for p in ctl.pods if p.template_hash == digest]
        old = [p for p in ctl.pods if p.template_hash != digest]
        if not refused and len(new) < want and len(new) + len(old) < want + surge:
            new.append(self._new_pod(namespace, name, digest, spec["template"]))
        ctl.pods = old + new
        ready = sum(p.ready for p in ctl.pods)
        for pod in sorted(old, key=lambda p: p.ready)[:1]:  # unready old pods go first
            if ready - pod.ready >= want - unavailable or not pod.ready:
                pod.terminating = True
        for pod in new[want:][:1]:  # scaled in (the HPA lowered replicas)
            pod.terminating = True

    def _status(
        self,
        name: str,
        status: dict,
        ctl: _Controller,
        seen: list[tuple[str, bool, bool]],
        digest: str,
        want: int,
        before: list,
    ) -> None:
        updated = [ready for hash_, ready, gone in seen if hash_ == digest and not gone]
        available = sum(ready and not gone for _, ready, gone in seen)
        status.update(
            replicas=len(seen),  # terminating pods still counted: the RS status lags
            updatedReplicas=len(updated),
            readyReplicas=available,
            availableReplicas=available,
            unavailableReplicas=max(0, want - available),
        )
        done = len(updated) == want == len(seen) and all(updated)
        progressed = [(p.name, p.ready, p.terminating) for p in ctl.pods] != before
        ctl.stuck_steps = 0 if progressed or done else ctl.stuck_steps + 1
        if done:
            reason, value = "NewReplicaSetAvailable", "True"
            message = f'ReplicaSet "{name}-{digest}" has successfully progressed.'
        elif ctl.stuck_steps >= self.polls_to_deadline:
            reason, value = "ProgressDeadlineExceeded", "False"
            message = f'ReplicaSet "{name}-{digest}" has timed out progressing.'
        else:
            reason, value = "ReplicaSetUpdated", "True"
            message = f'ReplicaSet "{name}-{digest}" is progressing.'
        _condition(status, "Progressing", value, reason, message)
        available_now = "True" if available >= want else "False"
        _condition(status, "Available", available_now, "MinimumReplicasAvailable", "")

    def _can_start(self, namespace: str, pod: Pod) -> bool:
        image = self.images.get(pod.image)  # not in the registry: the pull never succeeds
        if image is None or not image.starts:
            return False
        if image.capacity is None:
            return True
        running = sum(p.ready and p.image == pod.image for p in self.all_pods(namespace))
        return running < image.capacity

    def _admission(self, namespace: str, template: dict[str, Any]) -> str:
        labels = self.objects[("Namespace", "", namespace)]["metadata"].get("labels") or {}
        if labels.get(ENFORCE_LABEL) != "restricted":
            return ""
        found = restricted_violations(template["spec"])
        if not found:
            return ""
        return f'pods is forbidden: violates PodSecurity "restricted:latest": {"; ".join(found)}'

    def _new_pod(self, namespace: str, name: str, digest: str, template: dict) -> Pod:
        self._pods += 1
        ip = f"10.244.{self._pods // 250}.{self._pods % 250 + 1}"
        suffix = hashlib.sha256(str(self._pods).encode()).hexdigest()[:5]
        pod = Pod(f"{name}-{digest}-{suffix}", name, digest, copy.deepcopy(template), ip)
        pod.write_log(f"[INFO] Starting gunicorn (pod {pod.name})")
        pod.write_log(f"[INFO] Listening at: http://0.0.0.0:{SERVER_PORT}")
        return pod

    def _sync_endpoints(self, namespace: str) -> None:
        for (kind, ns, name), svc in self.objects.items():
            if kind == "Service" and ns == namespace:
                selector = svc["spec"].get("selector") or {}
                self.endpoints[(ns, name)] = [
                    pod.name
                    for ctl_key, ctl in self.controllers.items()
                    if ctl_key[0] == ns
                    for pod in ctl.pods
                    if pod.ready and not pod.terminating and _selects(selector, pod)
                ]

    def all_pods(self, namespace: str) -> list[Pod]:
        return [p for (ns, _), c in self.controllers.items() if ns == namespace for p in c.pods]

    # -- the proxies ------------------------------------------------------------------------

    def proxy(self, match: re.Match, method: str, query: str, body: bytes) -> Relayed:
        """The proxy subresources: find a pod and a port as the API server does, then
        forward the request (method, path, query, body) to the server listening there and
        relay its answer as it came."""
        namespace, path = match["ns"], match["path"] or "/"
        if match["plural"] == "services":
            pod, port = self._service_target(namespace, match["id"])
        else:
            pod, port = self._pod_target(namespace, match["id"])
        if pod.terminating or not pod.ready or port != str(SERVER_PORT):
            raise _unreachable(pod, port)  # nothing listens there (yet, or any more)
        self.proxied.append((pod.name, method, path))
        return self._serve(pod, method, path + (f"?{query}" if query else ""), body)

    def _pod_target(self, namespace: str, pod_id: str) -> tuple[Pod, str]:
        """`pods/[SCHEME:]NAME[:PORT]`: the port is dialled as written (a name is not looked
        up, so it fails to dial); none means the first port the pod's containers declare."""
        scheme, name, port = _split_id(pod_id)
        pod = self.find_pod(namespace, name)
        if pod is None:
            raise ApiError(404, "NotFound", f'pods "{name}" not found')
        if not port:
            declared = [p for c in pod.template["spec"]["containers"] for p in c.get("ports", [])]
            port = str(declared[0]["containerPort"]) if declared else "80"
        if scheme == "https":  # the server speaks plain HTTP: the TLS handshake fails
            raise _unreachable(pod, port)
        return pod, port

    def _service_target(self, namespace: str, service_id: str) -> tuple[Pod, str]:
        """`services/[SCHEME:]NAME[:PORT]`: a number names the Service port with that `port`,
        anything else a port by its name (none: the unnamed port); then one ready endpoint,
        at the pod port the Service port's targetPort resolves to."""
        scheme, service, port = _split_id(service_id)
        svc = self.objects.get(("Service", namespace, service))
        if svc is None:
            raise ApiError(404, "NotFound", f'services "{service}" not found')
        ports = svc["spec"].get("ports") or []
        if port.isdigit():
            numbered = next((p for p in ports if str(p.get("port")) == port), None)
            if numbered is None:
                message = f'no service port {port} found for service "{service}"'
                raise ApiError(503, "ServiceUnavailable", message)
            port = numbered.get("name", "")
        named = next((p for p in ports if p.get("name", "") == port), None)
        endpoints = self.endpoints.get((namespace, service)) or []
        if named is None or not endpoints:
            message = f'no endpoints available for service "{service_id}"'
            raise ApiError(503, "ServiceUnavailable", message)
        chosen = self.rng.choice(endpoints)
        pod = self.find_pod(namespace, chosen)
        if pod is None:  # the endpoint outlived its pod: the lag a real cluster shows
            raise ApiError(503, "ServiceUnavailable", f"error trying to reach {chosen}")
        target = _target_port(named, pod)
        if scheme == "https" or target is None:
            raise _unreachable(pod, str(target or named.get("targetPort")))
        return pod, target

    def _serve(self, pod: Pod, method: str, path: str, body: bytes) -> Relayed:
        status, answer = self._answer(pod, method, path.split("?")[0], body)
        pod.write_log(f'{pod.ip} "{method} {path} HTTP/1.1" {status}')
        return Relayed(status, "application/json", json.dumps(answer).encode())

    def _answer(self, pod: Pod, method: str, path: str, body: bytes) -> tuple[int, dict]:
        """What kiln's server in the pod's image answers."""
        image = self.images[pod.image]
        if method == "GET" and path in ("/health", "/ready"):
            return 200, {"status": "ok"}
        if method == "GET" and path == "/metadata":
            return 200, {"version": image.version, "image": pod.image}
        if method == "POST" and path == "/predict":
            if image.predict_status != 200:
                return image.predict_status, {"detail": "emulated server error"}
            rows = json.loads(body or b"{}").get("data", [])
            return 200, {"prediction": [[1.0, 0.0] for _ in rows]}
        return 404, {"detail": "Not Found"}

    # -- the kubelet's logs -------------------------------------------------------------------

    def find_pod(self, namespace: str, name: str) -> Pod | None:
        return next((p for p in self.all_pods(namespace) if p.name == name), None)

    def log_pod(self, namespace: str, name: str, query: dict[str, str]) -> Pod:
        """The pod whose log a request asks for, or the ApiError the API server answers."""
        pod = self.find_pod(namespace, name)
        if pod is None:
            raise ApiError(404, "NotFound", f'pods "{name}" not found')
        names = [c["name"] for c in pod.template["spec"]["containers"]]
        container = query.get("container")
        if container is None and len(names) > 1:
            raise ApiError(
                400,
                "BadRequest",
                f"a container name must be specified for pod {name}, "
                f"choose one of: [{' '.join(names)}]",
            )
        if container is not None and container not in names:
            raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {name}")
        if pod.image not in self.images:  # the pull never succeeds: nothing ever ran
            raise ApiError(
                400,
                "BadRequest",
                f'container "{container or names[0]}" in pod "{name}" is waiting to start: '
                "trying and failing to pull image",
            )
        return pod

    # -- RBAC ---------------------------------------------------------------------------

    def authorize(self, verb: str, group: str, resource: str, name: str | None) -> None:
        if self.rbac is None:
            return
        for index, rule in enumerate(self.rbac):
            if (
                group in rule.get("apiGroups", [])
                and resource in rule.get("resources", [])
                and verb in rule.get("verbs", [])
                and (not rule.get("resourceNames") or name in rule["resourceNames"])
            ):
                self.granted.add((index, verb, resource))
                return
        self.forbidden.append(f"{verb} {group or 'core'}/{resource} {name or ''}".strip())
        raise ApiError(
            403,
            "Forbidden",
            f'{resource.split("/")[0]} "{name or ""}" is forbidden: User '
            f'"system:serviceaccount:kiln:deployer" cannot {verb} resource "{resource}" '
            f'in API group "{group}"',
        )


def _check_template_selected(name: str, deployment: dict[str, Any]) -> None:
    """The API server's validation: a Deployment's pods carry the labels it selects by."""
    spec = deployment["spec"]
    wanted = (spec.get("selector") or {}).get("matchLabels") or {}
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if not wanted or any(labels.get(k) != v for k, v in wanted.items()):
        raise ApiError(
            422,
            "Invalid",
            f'Deployment.apps "{name}" is invalid: spec.template.metadata.labels: Invalid '
            f"value: {json.dumps(labels)}: `selector` does not match template `labels`",
        )


def _owned(obj: dict[str, Any]) -> dict[str, Any]:
    """The part of an object field managers own: no status, no server-set metadata."""
    out = {k: v for k, v in obj.items() if k not in ("status", "metadata")}
    meta = obj.get("metadata") or {}
    out["metadata"] = {k: meta[k] for k in ("labels", "annotations") if k in meta}
    return out


def _selects(selector: dict[str, str], pod: Pod) -> bool:
    labels = pod.template["metadata"].get("labels") or {}
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _unreachable(pod: Pod, port: str) -> ApiError:
    message = f"error trying to reach service: dial tcp {pod.ip}:{port}: connect: refused"
    return ApiError(503, "ServiceUnavailable", message)


def _split_id(proxy_id: str) -> tuple[str, str, str]:
    """(scheme, name, port) of a proxy path's `[SCHEME:]NAME[:PORT]`, as the API server
    splits it (k8s.io/apimachinery's SplitSchemeNamePort); 400 when it is not one."""
    parts = proxy_id.split(":")
    if len(parts) == 3:
        scheme, name, port = parts
    elif len(parts) in (1, 2):
        scheme, name, port = "", parts[0], parts[1] if len(parts) == 2 else ""
    else:
        scheme, name, port = "invalid", "", ""
    if not name or scheme not in ("", "http", "https"):
        raise ApiError(400, "BadRequest", f"invalid request {proxy_id!r}")
    return scheme, name, port


def _target_port(service_port: dict[str, Any], pod: Pod) -> str | None:
    """The pod port a Service port's targetPort means (a number, or a container port's name;
    none: the Service port's own number), or None when the pod has no port by that name."""
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int) or str(target).isdigit():
        return str(target)
    for container in pod.template["spec"]["containers"]:
        for declared in container.get("ports") or []:
            if declared.get("name") == target:
                return str(declared["containerPort"])
    return None


def _condition(
    status: dict, kind: str, value: str, reason: str, message: str, keep: bool = True
) -> None:
    conditions = [c for c in status.get("conditions", []) if c["type"] != kind]
    if keep:
        conditions.append({"type": kind, "status": value, "reason": reason, "message": message})
    status["conditions"] = sorted(conditions, key=lambda c: c["type"])


def pod_json(pod: Pod, namespace: str) -> dict[str, Any]:
    meta = copy.deepcopy(pod.template["metadata"])
    meta.update(name=pod.name, namespace=namespace)
    meta.setdefault("labels", {})["pod-template-hash"] = pod.template_hash
    if pod.terminating:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    ready = "True" if pod.ready and not pod.terminating else "False"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": copy.deepcopy(pod.template["spec"]),
        "status": {
            "phase": "Running" if pod.ready else "Pending",
            "podIP": pod.ip,
            "conditions": [{"type": "Ready", "status": ready}],
        },
    }


# -- HTTP --------------------------------------------------------------------------------------

_VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms stalls

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet tests
        pass

    def _send(self, code: int, body: dict[str, Any] | Relayed) -> None:
        relayed = body if isinstance(body, Relayed) else None
        data = relayed.body if relayed else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", relayed.content_type if relayed else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._chunked_body()  # what kubectl sends for `create --raw -f -`
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _chunked_body(self) -> bytes:
        data = b""
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            data += self.rfile.read(size)
            self.rfile.readline()  # the CRLF after each chunk
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailers, up to the blank line that ends them
        return data

    def _handle(self, method: str) -> None:
        cluster = self.server.cluster
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        log = _LOG.match(url.path)
        if log and method == "GET":
            self._log(cluster, log["ns"], log["name"], query)
            return
        body = self._body()
        with cluster.lock:
            cluster.requests.append((method, self.path))
            cluster.authorizations.add(self.headers.get("Authorization") or "")
            try:
                code, answer = self._route(cluster, method, url.path, query, body)
            except ApiError as err:
                code = err.code
                answer = status_body(err.code, err.reason, err.message, **err.details)
            self._send(code, answer)

    def _route(
        self, cluster: EmulatedCluster, method: str, path: str, query: dict, body: bytes
    ) -> tuple[int, dict[str, Any] | Relayed]:
        proxy = _PROXY.match(path)
        if proxy:
            # RBAC sees the path's whole NAME:PORT as the resource name, as the API server does
            cluster.authorize(_VERBS[method], "", f"{proxy['plural']}/proxy", proxy["id"])
            target = _split_id(proxy["id"])[1]
            for (ns, name), ctl in list(cluster.controllers.items()):
                if ns == proxy["ns"] and any(p.name == target for p in ctl.pods):
                    cluster.step(ns, name)
            relayed = cluster.proxy(proxy, method, urllib.parse.urlsplit(self.path).query, body)
            return relayed.status, relayed
        match = _PATH.match(path)
        if not match:
            raise ApiError(404, "NotFound", f"the server could not find the resource {path}")
        group = match["group"] or ""
        collection = _COLLECTIONS.get((group, match["core"] or match["version"], match["plural"]))
        if collection is None or (match["ns"] is not None and match["plural"] == "namespaces"):
            raise ApiError(404, "NotFound", f"the server could not find the resource {path}")
        kind, namespaced = collection
        if namespaced and match["ns"] is None:
            raise ApiError(404, "NotFound", f"{match['plural']} is namespaced")
        namespace, name = match["ns"] or "", match["name"]
        verb = _VERBS[method] if name or method != "GET" else "list"
        resource = match["plural"] + (f"/{match['sub']}" if match["sub"] else "")
        cluster.authorize(verb, group, resource, name)
        if kind == "Deployment" and name:
            cluster.step(namespace, name)  # the controllers run between any two requests
        if kind == "Pod":
            return self._pods(cluster, method, namespace, name, query)
        if name is None:
            if method != "POST":
                raise ApiError(405, "MethodNotAllowed", f"{method} on {path}")
            obj = json.loads(body)
            if obj.get("kind") != kind:
                raise ApiError(400, "BadRequest", f"expected kind {kind}, got {obj.get('kind')}")
            manager = query.get("fieldManager", "unknown")
            return 201, cluster.create(kind, namespace, obj, manager)
        return self._object(cluster, method, (kind, namespace, name), query, body)

    def _object(
        self, cluster: EmulatedCluster, method: str, key: tuple, query: dict, body: bytes
    ) -> tuple[int, dict[str, Any]]:
        kind, namespace, name = key
        missing = ApiError(
            404, "NotFound", f'{_PLURALS[kind]}.{_GROUPS[kind] or "core"} "{name}" not found'
        )
        manager = query.get("fieldManager")
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if method == "PATCH" and content_type == APPLY:
            if not manager:
                raise ApiError(400, "BadRequest", "fieldManager is required for apply requests")
            if key not in cluster.objects:
                cluster.authorize("create", _GROUPS[kind], _PLURALS[kind], None)
                if kind != "Namespace" and ("Namespace", "", namespace) not in cluster.objects:
                    raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found')
            config = yaml.safe_load(body)
            force = query.get("force") == "true"
            return cluster.apply(kind, namespace, name, config, manager, force)
        if key not in cluster.objects:
            raise missing
        if method == "GET":
            return 200, cluster.objects[key]
        if method == "DELETE":
            cluster.delete(key)
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        if method == "PUT":
            sent = json.loads(body)
            cluster.check_rv(key, sent)
            return 200, cluster.store(key, sent, manager or "unknown")
        if method == "PATCH":
            live = cluster.objects[key]
            if content_type == MERGE:
                patched = merge_patch(live, json.loads(body))
            elif content_type == JSON_PATCH:
                if cluster.json_patch_hook is not None:
                    cluster.json_patch_hook(key)
                patched = json_patch(cluster.objects[key], json.loads(body))
            else:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"the emulator does not implement {content_type!r} patches",
                )
            cluster.check_rv(key, patched)
            return 200, cluster.store(key, patched, manager or "unknown")
        raise ApiError(405, "MethodNotAllowed", method)

    def _pods(
        self, cluster: EmulatedCluster, method: str, namespace: str, name: str | None, query: dict
    ) -> tuple[int, dict[str, Any]]:
        if method != "GET" or name is not None:
            raise ApiError(405, "MethodNotAllowed", "the emulator only lists pods")
        wanted = dict(
            part.split("=", 1) for part in query.get("labelSelector", "").split(",") if part
        )
        items = [
            pod_json(pod, namespace)
            for pod in cluster.all_pods(namespace)
            if all(
                (pod.template["metadata"].get("labels") or {}).get(k) == v
                for k, v in wanted.items()
            )
        ]
        meta = {"resourceVersion": str(cluster._rv)}
        return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": meta, "items": items}

    def _log(self, cluster: EmulatedCluster, namespace: str, name: str, query: dict) -> None:
        """A pod's log as the API server relays it from the kubelet: text/plain, chunked,
        written outside the lock so a follow stream holds nothing while it waits."""
        with cluster.lock:
            cluster.requests.append(("GET", self.path))
            cluster.authorizations.add(self.headers.get("Authorization") or "")
            try:
                cluster.authorize("get", "", "pods/log", name)
                pod = cluster.log_pod(namespace, name, query)
            except ApiError as err:
                self._send(err.code, status_body(err.code, err.reason, err.message))
                return
            tail = int(query["tailLines"]) if "tailLines" in query else None
            start = 0 if tail is None else max(0, len(pod.log) - tail)
            lines, sent = list(pod.log[start:]), len(pod.log)
        stamps = query.get("timestamps") == "true"
        budget = int(query["limitBytes"]) if "limitBytes" in query else None
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            budget = self._log_lines(lines, stamps, budget)
            while query.get("follow") == "true" and budget != 0:
                if self.server.stopping.wait(0.02):
                    break
                with cluster.lock:
                    alive = cluster.find_pod(namespace, name) is pod and not pod.terminating
                    lines, sent = list(pod.log[sent:]), len(pod.log)
                budget = self._log_lines(lines, stamps, budget)
                if not alive:  # the container stopped: the kubelet ends the stream
                    break
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away, as `kubectl logs -f` does on Ctrl-C

    def _log_lines(
        self, lines: list[tuple[str, str]], stamps: bool, budget: int | None
    ) -> int | None:
        data = b"".join(
            ((f"{when} " if stamps else "") + line + "\n").encode() for when, line in lines
        )
        if budget is not None:
            data, budget = data[:budget], max(0, budget - len(data))
        if data:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        return budget

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    cluster: EmulatedCluster
    stopping: threading.Event


class EmulatedApiServer:
    """Runs an EmulatedCluster behind HTTP on 127.0.0.1 (a free port) in a thread."""

    def __init__(self, cluster: EmulatedCluster | None = None) -> None:
        self.cluster = cluster or EmulatedCluster()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.cluster = self.cluster
        self._server.stopping = threading.Event()
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
        self._server.stopping.set()  # ends follow streams
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def use_emulated_cluster(
    monkeypatch: Any, emulator: EmulatedApiServer, folder: Any, namespace: str
) -> None:
    """The environment a kiln command runs in against `emulator`: a kubeconfig in `folder`
    naming it, the kubernetes target in `namespace`, a store in `folder`, no other KILN_*."""
    import os
    from pathlib import Path

    kubeconfig = Path(folder) / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "emulated",
                "clusters": [{"name": "e", "cluster": {"server": emulator.url}}],
                "users": [{"name": "u", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "emulated", "context": {"cluster": "e", "user": "u"}}],
            }
        )
    )
    for key in list(os.environ):
        if key.startswith("KILN_"):
            monkeypatch.delenv(key)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("KILN_STORE", str(Path(folder) / "store"))
    monkeypatch.setenv("KILN_TARGET", "kubernetes")
    monkeypatch.setenv("KILN_K8S_NAMESPACE", namespace)
