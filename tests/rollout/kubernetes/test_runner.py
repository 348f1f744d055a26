"""The Kubernetes work pool kiln ships: the Job a worker would submit, and the runner's RBAC,
validated strictly against the Kubernetes schema (kubernetes-validate, offline)."""

from __future__ import annotations

import subprocess

import kubernetes_validate
import pytest
import yaml

from kiln.infra.resources import resource_path
from kiln.infra.team.work_pool import base_job_template, render_flow_run_job

VERSIONS = ["1.30", "1.37"]
IMAGE = "registry.example/kiln/runner@sha256:" + "a" * 64


@pytest.fixture
def worker_environment(monkeypatch, tmp_path):
    """The worker's own settings, as a team's worker on a laptop or VM would have them."""
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "worker-prefect-home"))
    return tmp_path / "worker-prefect-home"


def env_of(job: dict) -> dict[str, str]:
    [container] = job["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in container["env"]}


@pytest.mark.parametrize("version", VERSIONS)
def test_the_job_for_a_pipeline_run_is_valid_kubernetes(worker_environment, version):
    job = render_flow_run_job({"image": IMAGE, "env": {"KILN_STORE": "s3://models/kiln"}})
    kubernetes_validate.validate(job, version, strict=True)
    spec = job["spec"]
    assert (spec["completions"], spec["parallelism"], spec["backoffLimit"]) == (1, 1, 0)
    pod = spec["template"]["spec"]
    assert "completions" not in pod and "parallelism" not in pod
    assert pod["serviceAccountName"] == "kiln-runner"
    assert pod["securityContext"]["runAsNonRoot"] is True
    [container] = pod["containers"]
    assert container["image"] == IMAGE
    assert container["args"] == ["prefect", "flow-run", "execute"]
    assert job["metadata"]["namespace"] == "kiln"
    assert job["metadata"]["labels"]["prefect.io/flow-name"] == "kiln-pipeline"
    env = env_of(job)
    assert env["KILN_STORE"] == "s3://models/kiln"
    assert env["PREFECT__FLOW_RUN_ID"]


def test_no_worker_address_or_folder_leaks_into_the_pod(worker_environment):
    job = render_flow_run_job({"image": IMAGE})
    env = env_of(job)
    assert env["PREFECT_API_URL"] == "http://prefect-server.prefect.svc.cluster.local:4200/api"
    assert env["PREFECT_HOME"] == "/tmp/prefect"
    for name, value in env.items():
        assert "127.0.0.1" not in str(value) and "localhost" not in str(value), name
        assert str(worker_environment) not in str(value), name
    # A team points the pods at its own API.
    own = render_flow_run_job({"image": IMAGE, "prefect_api_url": "http://prefect:4200/api"})
    assert env_of(own)["PREFECT_API_URL"] == "http://prefect:4200/api"


def test_the_stock_template_fails_where_kilns_passes(worker_environment):
    from prefect_kubernetes.worker import KubernetesWorker

    stock = render_flow_run_job(
        {"image": IMAGE}, template=KubernetesWorker.get_default_base_job_template()
    )
    with pytest.raises(kubernetes_validate.ValidationError, match="completions"):
        kubernetes_validate.validate(stock, VERSIONS[0], strict=True)
    # The leak: the worker's own loopback API URL (whichever its settings hold) in the pod.
    assert "127.0.0.1" in env_of(stock)["PREFECT_API_URL"]


def test_an_image_not_pinned_by_digest_is_refused():
    import jsonschema

    schema = base_job_template()["variables"]
    jsonschema.validate({"image": IMAGE}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"image": "registry.example/kiln/runner:latest"}, schema)


def runner_objects() -> list[dict]:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(resource_path("k8s/runner"))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def admin_objects() -> list[dict]:
    objects = []
    for path in sorted(resource_path("k8s/admin").glob("*.yaml")):
        objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return objects


@pytest.mark.parametrize("version", VERSIONS)
def test_the_runner_rbac_is_valid_and_least_privilege(version):
    objects = runner_objects()
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)
    kinds = {obj["kind"]: obj for obj in objects}
    assert set(kinds) == {"ServiceAccount", "RoleBinding"}
    account = kinds["ServiceAccount"]["metadata"]
    binding = kinds["RoleBinding"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
    ]
    # The runner gets the deployer's Role (k8s/admin/), in the same namespace.
    [role] = [
        o
        for o in admin_objects()
        if o["kind"] == "Role" and o["metadata"]["name"] == binding["roleRef"]["name"]
    ]
    assert binding["roleRef"]["kind"] == "Role"
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "kiln"
    for rule in role["rules"]:
        for part in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[part], rule
        assert not set(rule["resources"]) & {"secrets", "pods/exec", "roles", "rolebindings"}
        assert not set(rule["verbs"]) & {"escalate", "bind", "impersonate", "deletecollection"}
        if "delete" in rule["verbs"]:
            assert rule.get("resourceNames"), f"unrestricted delete: {rule}"
    # The pods run where the Role applies, as the bound account.
    template = base_job_template()["variables"]["properties"]
    assert template["service_account_name"]["default"] == account["name"]
    assert template["namespace"]["default"] == account["namespace"]
