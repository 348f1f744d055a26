"""kiln's kustomize base: schema-valid, and saying what the rollout relies on."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from kiln.config.errors import RolloutError, SettingsError
from kiln.config.names import DEFAULT_NAME, MAX_LENGTH
from kiln.rollout.kubernetes.manifests import (
    ADMIN_DIR,
    MANIFEST_DIR,
    MODEL_LABEL,
    VERSION_ANNOTATION,
    candidate_of,
    load_base,
    namespace_manifest,
    render_manifests,
)

# The schemas kubernetes-validate ships with the package (no network): the newest it knows.
K8S_VERSION = kubernetes_validate.latest_version()
IMAGE = "127.0.0.1:5000/kiln/iris@sha256:" + "ab" * 32
MANIFEST_FILES = sorted(
    p.name for p in MANIFEST_DIR.glob("*.yaml") if p.name != "kustomization.yaml"
)
ADMIN_FILES = sorted(p.name for p in ADMIN_DIR.glob("*.yaml"))


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {obj["kind"]: obj for obj in objects}


@pytest.mark.parametrize("name", MANIFEST_FILES)
def test_every_manifest_file_is_valid_against_the_kubernetes_schema(name: str) -> None:
    documents = [d for d in yaml.safe_load_all((MANIFEST_DIR / name).read_text()) if d]
    assert documents
    for document in documents:
        # strict: unknown fields (a typo, a field from another API version) fail too
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)


@pytest.mark.parametrize("name", ADMIN_FILES)
def test_every_admin_manifest_is_valid_against_the_kubernetes_schema(name: str) -> None:
    documents = [d for d in yaml.safe_load_all((ADMIN_DIR / name).read_text()) if d]
    assert documents
    for document in documents:
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def test_the_namespace_is_no_part_of_what_kiln_applies_and_is_restricted() -> None:
    assert "Namespace" not in by_kind(load_base())
    namespace = namespace_manifest("elsewhere")
    assert namespace["metadata"]["name"] == "elsewhere"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_deployment_leaves_replicas_to_the_hpa_and_drains_before_stopping() -> None:
    deployment = by_kind(load_base())["Deployment"]
    assert "replicas" not in deployment["spec"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    sleep = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert 0 < sleep < grace


def test_the_candidate_takes_no_traffic_and_is_no_part_of_the_budget() -> None:
    objects = by_kind(render_manifests(IMAGE, "v1", "kiln"))
    candidate = candidate_of(objects["Deployment"])
    kubernetes_validate.validate(candidate, K8S_VERSION, strict=True)
    labels = candidate["spec"]["template"]["metadata"]["labels"]
    assert candidate["metadata"]["name"] == "kiln-candidate"
    assert candidate["spec"]["replicas"] == 1
    assert candidate["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for selector in (
        objects["Service"]["spec"]["selector"],
        objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        objects["Deployment"]["spec"]["selector"]["matchLabels"],
    ):
        assert not selector.items() <= labels.items()


def test_the_rendered_objects_are_valid_against_the_kubernetes_schema() -> None:
    for obj in render_manifests(IMAGE, "v123", "kiln-test"):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_the_validator_rejects_a_broken_manifest() -> None:
    deployment = by_kind(load_base())["Deployment"]
    deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] = [0]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_the_kustomization_lists_every_manifest_file() -> None:
    kustomization = yaml.safe_load((MANIFEST_DIR / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == MANIFEST_FILES


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kiln_renders_the_base_as_kubectl_kustomize_does() -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(MANIFEST_DIR)], capture_output=True, text=True, check=True
    ).stdout
    theirs = sorted(yaml.safe_load_all(out), key=lambda o: o["kind"])
    ours = sorted(load_base(), key=lambda o: o["kind"])
    assert ours == theirs


def test_the_base_pins_a_placeholder_image_by_digest() -> None:
    container = by_kind(load_base())["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert "@sha256:" in container["image"]
    assert container["imagePullPolicy"] == "IfNotPresent"


def test_render_pins_the_image_and_annotates_the_version_in_the_namespace() -> None:
    objects = render_manifests(IMAGE, "v123", "elsewhere")
    for obj in objects:
        if obj["kind"] == "Namespace":
            assert obj["metadata"]["name"] == "elsewhere"
        else:
            assert obj["metadata"]["namespace"] == "elsewhere"
    deployment = by_kind(objects)["Deployment"]
    assert deployment["metadata"]["annotations"][VERSION_ANNOTATION] == "v123"
    template = deployment["spec"]["template"]
    assert template["metadata"]["annotations"][VERSION_ANNOTATION] == "v123"
    assert template["spec"]["containers"][0]["image"] == IMAGE
    # the base on disk is untouched
    assert by_kind(load_base())["Deployment"]["metadata"]["annotations"][VERSION_ANNOTATION] == (
        "unset"
    )


def test_render_refuses_an_image_not_pinned_by_digest() -> None:
    with pytest.raises(RolloutError, match="not pinned by digest"):
        render_manifests("127.0.0.1:5000/kiln/iris:latest", "v1", "kiln")


def test_the_deployment_rolls_without_losing_capacity_and_probes_the_server_routes() -> None:
    deployment = by_kind(load_base())["Deployment"]
    spec = deployment["spec"]
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    container = spec["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["startupProbe"]["httpGet"]["path"] == "/ready"
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["WORKERS"] == env["WEB_CONCURRENCY"] == "1"
    resources = container["resources"]
    assert set(resources) == {"requests", "limits"}
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}


def test_the_pod_runs_unprivileged_with_a_read_only_root_and_a_writable_tmp() -> None:
    pod = by_kind(load_base())["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]
    ctx = container["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    volume = next(v for v in pod["volumes"] if v["name"] == tmp["name"])
    assert "emptyDir" in volume


def test_the_service_hpa_and_pdb_select_the_deployment_pods() -> None:
    objects = by_kind(load_base())
    pod_labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    selectors = [
        objects["Deployment"]["spec"]["selector"]["matchLabels"],
        objects["Service"]["spec"]["selector"],
        objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector and all(pod_labels.get(k) == v for k, v in selector.items())
    for obj in objects.values():
        assert obj["metadata"]["labels"]["app.kubernetes.io/name"] == "kiln"
    hpa = objects["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == objects["Deployment"]["metadata"]["name"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)
    target = hpa["spec"]["metrics"][0]["resource"]
    assert target["name"] == "cpu"
    assert target["target"] == {"type": "Utilization", "averageUtilization": 50}
    service_port = objects["Service"]["spec"]["ports"][0]
    assert service_port["targetPort"] == "http"


def test_load_base_refuses_kustomization_fields_it_does_not_implement(tmp_path: Path) -> None:
    for name in MANIFEST_FILES:
        shutil.copy(MANIFEST_DIR / name, tmp_path / name)
    kustomization = yaml.safe_load((MANIFEST_DIR / "kustomization.yaml").read_text())
    kustomization["patches"] = [{"path": "extra.yaml"}]
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    with pytest.raises(RolloutError, match="patches"):
        load_base(tmp_path)


def test_the_service_port_is_the_named_one_or_the_first_by_name_or_number() -> None:
    from kiln.rollout.kubernetes.manifests import load_base, service_port

    objects = load_base()
    assert service_port(objects) == ("kiln", "http")
    [service] = [o for o in objects if o["kind"] == "Service"]
    service["spec"]["ports"] = [{"name": "web", "port": 80}, {"port": 81}]
    assert service_port(objects) == ("kiln", "web")
    service["spec"]["ports"] = [{"port": 8000, "targetPort": 8000}]
    assert service_port(objects) == ("kiln", "8000")
    service["spec"]["ports"] = []
    with pytest.raises(RolloutError, match="no Service with a port"):
        service_port(objects)


# -- one set of objects per model name --------------------------------------------------------

LEGACY = {  # what kiln named and selected before model names existed
    "Deployment": "kiln",
    "Service": "kiln",
    "HorizontalPodAutoscaler": "kiln",
    "PodDisruptionBudget": "kiln",
}


def selectors(objects: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    return [
        objects["Deployment"]["spec"]["selector"]["matchLabels"],
        objects["Service"]["spec"]["selector"],
        objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    ]


def test_the_default_name_keeps_the_names_and_selectors_of_before_and_gains_its_label() -> None:
    base = by_kind(load_base())
    objects = by_kind(render_manifests(IMAGE, "v1", "kiln", model=DEFAULT_NAME))

    assert {kind: obj["metadata"]["name"] for kind, obj in objects.items()} == LEGACY
    assert selectors(objects) == selectors(base)  # a Deployment's selector is immutable
    assert objects["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == "kiln"
    assert candidate_of(objects["Deployment"])["metadata"]["name"] == "kiln-candidate"
    for kind, obj in objects.items():
        labels = {k: v for k, v in obj["metadata"]["labels"].items() if k != MODEL_LABEL}
        assert labels == base[kind]["metadata"]["labels"]
        assert obj["metadata"]["labels"][MODEL_LABEL] == DEFAULT_NAME
    pod_labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert pod_labels[MODEL_LABEL] == DEFAULT_NAME
    assert render_manifests(IMAGE, "v1", "kiln") == list(objects.values())  # the default


def test_another_name_gets_its_own_objects_selecting_only_its_own_pods() -> None:
    default = by_kind(render_manifests(IMAGE, "v1", "kiln"))
    wine = by_kind(render_manifests(IMAGE, "v1", "kiln", model="wine"))

    assert {kind: obj["metadata"]["name"] for kind, obj in wine.items()} == {
        kind: "kiln-wine" for kind in LEGACY
    }
    assert wine["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == "kiln-wine"
    for obj in wine.values():
        assert obj["metadata"]["labels"]["app.kubernetes.io/name"] == "kiln-wine"
        assert obj["metadata"]["labels"][MODEL_LABEL] == "wine"
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    wine_pods = wine["Deployment"]["spec"]["template"]["metadata"]["labels"]
    default_pods = default["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert wine_pods[MODEL_LABEL] == "wine"
    for selector in selectors(wine):
        assert selector.items() <= wine_pods.items()
        assert not selector.items() <= default_pods.items()
    for selector in selectors(default):
        assert not selector.items() <= wine_pods.items()
    candidate = candidate_of(wine["Deployment"])
    assert candidate["metadata"]["name"] == "kiln-wine-candidate"
    kubernetes_validate.validate(candidate, K8S_VERSION, strict=True)
    candidate_pods = candidate["spec"]["template"]["metadata"]["labels"]
    for selector in selectors(wine)[1:] + selectors(default):
        assert not selector.items() <= candidate_pods.items()


def test_the_longest_name_still_makes_valid_object_and_label_values() -> None:
    name = "m" + "0" * (MAX_LENGTH - 1)
    objects = by_kind(render_manifests(IMAGE, "v1", "kiln", model=name))
    candidate = candidate_of(objects["Deployment"])
    assert len(candidate["metadata"]["name"]) <= 63
    for obj in [*objects.values(), candidate]:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.parametrize("name", ["candidate", "wine-candidate"])
def test_a_name_whose_objects_would_be_another_names_candidate_is_refused(name: str) -> None:
    with pytest.raises(RolloutError, match=f"model name '{name}' cannot run on kubernetes"):
        render_manifests(IMAGE, "v1", "kiln", model=name)


def test_a_name_that_is_no_dns_label_is_refused() -> None:
    with pytest.raises(SettingsError, match="is not usable"):
        render_manifests(IMAGE, "v1", "kiln", model="Wine_1")
