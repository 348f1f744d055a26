"""kiln's kustomize base (k8s/) rendered as plain dicts, with a version's image pinned."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from kiln.config.errors import RolloutError
from kiln.config.names import DEFAULT_NAME, check_name
from kiln.infra.resources import resource_path

MANIFEST_DIR = resource_path("k8s")  # the k8s/ base, shipped in the package
# What a cluster admin applies once (namespace, the deployer's RBAC); kiln only reads it.
ADMIN_DIR = MANIFEST_DIR / "admin"
VERSION_ANNOTATION = "kiln.dev/model-version"
CONTAINER_NAME = "server"
NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
# Which model name an object serves, on every object and pod template of every name. Never
# in a selector: the default name's Deployment selector is the one an earlier kiln set, and
# a Deployment's selector cannot change.
MODEL_LABEL = "kiln.dev/model"
CANDIDATE_SUFFIX = "-candidate"
# Kinds kiln ships that live in a namespace (everything but the Namespace itself).
CLUSTER_SCOPED = {"Namespace"}


# libyaml's loader when PyYAML was built with it: the pure-Python one is much slower.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    with path.open() as fh:
        return [doc for doc in yaml.load_all(fh, Loader=_Loader) if doc]


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
    kustomization = yaml.load((directory / "kustomization.yaml").read_text(), Loader=_Loader)
    unknown = set(kustomization) - {"apiVersion", "kind", "resources", "namespace", "images"}
    if unknown:
        raise RolloutError(
            f"rendering {directory}: kustomization fields {sorted(unknown)} are not supported "
            "by kiln's renderer; use `kubectl apply -k` or extend kiln.rollout.kubernetes.manifests"
        )
    objects: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        objects.extend(_load_yaml_documents(directory / resource))
    namespace = kustomization.get("namespace")
    images = {entry["name"]: entry for entry in kustomization.get("images", [])}
    for obj in objects:
        if namespace:
            set_namespace(obj, namespace)
        for container in containers(obj):
            entry = images.get(container["image"])
            if entry:
                container["image"] = _image_with(entry, container["image"])
    return objects


def set_namespace(obj: dict[str, Any], namespace: str) -> None:
    if obj["kind"] == "Namespace":
        obj["metadata"]["name"] = namespace
    elif obj["kind"] not in CLUSTER_SCOPED:
        obj["metadata"]["namespace"] = namespace


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj.get("kind") != "Deployment":
        return []
    return obj["spec"]["template"]["spec"]["containers"]


def check_model(model: str) -> str:
    """`model` when the Kubernetes target can name objects after it.

    A name ending in the candidate suffix is refused: `kiln-x-candidate` would be both the
    main Deployment of `x-candidate` and the candidate of `x` (`candidate`: of the default).
    """
    check_name(model)
    if f"-{model}".endswith(CANDIDATE_SUFFIX):
        raise RolloutError(
            f"model name {model!r} cannot run on kubernetes: its objects would share names "
            f"with another model's candidate ('{CANDIDATE_SUFFIX[1:]}' or a name ending in "
            f"'{CANDIDATE_SUFFIX}'); pick another name"
        )
    return model


def object_name(base: str, model: str) -> str:
    """The name of `model`'s copy of a base object called `base`: the base's own name for
    the default model (what a cluster deployed before names existed holds), else
    `<base>-<model>`."""
    return base if model == DEFAULT_NAME else f"{base}-{model}"


def for_model(objects: list[dict[str, Any]], model: str) -> list[dict[str, Any]]:
    """Copies of the base's namespaced objects, named and labelled as `model`'s.

    Each object becomes `object_name(...)`; the name and instance labels, selectors and the
    HPA's target follow, so one model's Service, budget and autoscaler never take another
    model's pods; every object and pod template is labelled MODEL_LABEL: `model`.
    """
    check_model(model)
    renamed = {
        obj["metadata"]["name"]: object_name(obj["metadata"]["name"], model)
        for obj in objects
        if obj["kind"] not in CLUSTER_SCOPED
    }
    named = copy.deepcopy(objects)
    for obj in named:
        if obj["kind"] in CLUSTER_SCOPED:
            continue
        obj["metadata"]["name"] = renamed[obj["metadata"]["name"]]
        for labels in _label_maps(obj):
            for key in (NAME_LABEL, INSTANCE_LABEL):
                if labels.get(key) in renamed:
                    labels[key] = renamed[labels[key]]
        obj["metadata"].setdefault("labels", {})[MODEL_LABEL] = model
        if obj["kind"] == "Deployment":
            obj["spec"]["template"]["metadata"].setdefault("labels", {})[MODEL_LABEL] = model
        target = obj["spec"].get("scaleTargetRef") if obj["kind"].endswith("Autoscaler") else None
        if target and target.get("name") in renamed:
            target["name"] = renamed[target["name"]]
    return named


def _label_maps(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The object's own labels and the label maps in its spec that select or label pods."""
    spec = obj.get("spec") or {}
    template = (spec.get("template") or {}).get("metadata") or {}
    selector = spec.get("selector")  # a Service's is the map itself
    if obj["kind"] != "Service" and isinstance(selector, dict):
        selector = selector.get("matchLabels")
    maps = [obj["metadata"].get("labels"), template.get("labels"), selector]
    return [labels for labels in maps if isinstance(labels, dict)]


def render_manifests(
    image: str,
    version: str,
    namespace: str | None = None,
    directory: Path = MANIFEST_DIR,
    model: str = DEFAULT_NAME,
) -> list[dict[str, Any]]:
    """`model`'s objects with the server image pinned to `image` and `version` annotated
    everywhere, in `namespace` (None leaves the objects without one: enough for a pod
    template)."""
    if "@sha256:" not in image:
        raise RolloutError(f"rendering manifests: image {image!r} is not pinned by digest")
    objects = for_model(load_base(directory), model)
    for obj in objects:
        if namespace is not None:
            set_namespace(obj, namespace)
        if obj["kind"] == "Deployment":
            obj["metadata"].setdefault("annotations", {})[VERSION_ANNOTATION] = version
            template = obj["spec"]["template"]
            template["metadata"].setdefault("annotations", {})[VERSION_ANNOTATION] = version
            for container in containers(obj):
                if container["name"] == CONTAINER_NAME:
                    container["image"] = image
    return objects


def namespace_manifest(namespace: str, directory: Path = ADMIN_DIR) -> dict[str, Any]:
    """The Namespace kiln creates when asked to (restricted Pod Security), named `namespace`."""
    (obj,) = [d for d in _load_yaml_documents(directory / "namespace.yaml") if d]
    set_namespace(obj, namespace)
    return obj


def candidate_of(deployment: dict[str, Any]) -> dict[str, Any]:
    """One replica of `deployment` under another name and instance label.

    The Service and the PodDisruptionBudget select the main instance label, so the
    candidate's pod takes no traffic and is no part of the budget; no HPA targets it.
    """
    candidate = copy.deepcopy(deployment)
    name = deployment["metadata"]["name"] + CANDIDATE_SUFFIX
    candidate["metadata"]["name"] = name
    candidate["metadata"].setdefault("labels", {})[INSTANCE_LABEL] = name
    candidate["spec"]["replicas"] = 1
    candidate["spec"]["selector"]["matchLabels"][INSTANCE_LABEL] = name
    candidate["spec"]["template"]["metadata"]["labels"][INSTANCE_LABEL] = name
    return candidate


def server_port(deployment: dict[str, Any], name: str = "http") -> int:
    """The server container's port number called `name` (the pod proxy wants a number)."""
    for container in containers(deployment):
        if container["name"] == CONTAINER_NAME:
            for port in container.get("ports") or []:
                if port.get("name") == name:
                    return int(port["containerPort"])
    raise RolloutError(f"the Deployment's {CONTAINER_NAME} container has no port named {name}")


def service_port(objects: list[dict[str, Any]], name: str = "http") -> tuple[str, str]:
    """(Service name, port) of the Service in front of the server, as the API server's
    service proxy takes them: the port called `name`, else the first port by its name, or
    by its number when it has no name."""
    for obj in objects:
        if obj["kind"] == "Service":
            ports = obj["spec"].get("ports") or []
            named = [p for p in ports if p.get("name") == name] or ports[:1]
            if named:
                return obj["metadata"]["name"], str(named[0].get("name") or named[0]["port"])
    raise RolloutError(f"the manifests have no Service with a port (looked for {name!r})")
