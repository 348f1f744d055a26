"""The emulated API server behaves as a real cluster does where a rollout can tell.

Each test pins one behaviour the rollout code relies on (or must survive), so a change
that made the emulator easier to please would fail here first.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from kiln.config.errors import RolloutError
from kiln.rollout.kubernetes.api import APPLY_PATCH, JSON_PATCH, KubeApi
from kiln.rollout.kubernetes.manifests import render_manifests
from tests.support.k8s_emulator import ENFORCE_LABEL, EmulatedApiServer, EmulatedCluster

NS = "emu"
IMAGE_A = "r/kiln@sha256:" + "a" * 64
IMAGE_B = "r/kiln@sha256:" + "b" * 64
DEPLOYMENT = f"/apis/apps/v1/namespaces/{NS}/deployments/kiln"


@pytest.fixture
def server() -> Iterator[EmulatedApiServer]:
    with EmulatedApiServer(EmulatedCluster(polls_to_deadline=3)) as emulated:
        emulated.cluster.add_namespace(NS, {ENFORCE_LABEL: "restricted"})
        emulated.cluster.push(IMAGE_A, "va")
        emulated.cluster.push(IMAGE_B, "vb")
        yield emulated


@pytest.fixture
def api(server: EmulatedApiServer) -> Iterator[KubeApi]:
    with client.ApiClient(client.Configuration(host=server.url)) as api_client:
        yield KubeApi(api_client, request_timeout=5)


def objects(image: str, version: str) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in render_manifests(image, version, NS)}


def apply(api: KubeApi, obj: dict[str, Any], manager: str = "kiln") -> dict[str, Any]:
    kind = {"Deployment": "apis/apps/v1", "Service": "api/v1"}[obj["kind"]]
    plural = obj["kind"].lower() + "s"
    path = f"/{kind}/namespaces/{NS}/{plural}/{obj['metadata']['name']}"
    found = api.call(
        "PATCH", path, obj, content_type=APPLY_PATCH, query=[("fieldManager", manager)]
    )
    assert found is not None
    return found


def get(api: KubeApi) -> dict[str, Any]:
    found = api.call("GET", DEPLOYMENT)
    assert found is not None
    return found


def settle(api: KubeApi, polls: int = 30) -> dict[str, Any]:
    for _ in range(polls):
        found = get(api)
        status = found["status"]
        if (
            status.get("observedGeneration") == found["metadata"]["generation"]
            and status.get("updatedReplicas")
            == status.get("availableReplicas")
            == status.get("replicas")
            == found["spec"]["replicas"]
        ):
            return found
    raise AssertionError(f"never settled: {found['status']}")


def test_the_controller_sees_a_write_one_step_late(api: KubeApi, server) -> None:
    apply(api, objects(IMAGE_A, "va")["Deployment"])
    settle(api)
    apply(api, objects(IMAGE_B, "vb")["Deployment"])

    first = get(api)
    # the stale status still looks complete: only observedGeneration tells it is old
    assert first["status"]["observedGeneration"] < first["metadata"]["generation"]
    assert first["status"]["updatedReplicas"] == first["spec"]["replicas"]
    second = get(api)
    assert second["status"]["observedGeneration"] == second["metadata"]["generation"]


def test_the_rollout_lags_the_write_one_change_per_poll(api: KubeApi, server) -> None:
    """As a real cluster's counts lag: the generation is observed before any new pod
    exists, pods are created and made ready over several polls, old pods leave one by one."""
    deployment = objects(IMAGE_A, "va")["Deployment"]
    deployment["spec"]["replicas"] = 3
    apply(api, deployment)
    settle(api)
    changed = objects(IMAGE_B, "vb")["Deployment"]
    changed["spec"]["replicas"] = 3
    apply(api, changed)

    get(api)  # noticed
    observed = get(api)
    assert observed["status"]["observedGeneration"] == observed["metadata"]["generation"]
    assert observed["status"]["updatedReplicas"] == 0
    assert {pod.image for pod in server.cluster.pods(NS, "kiln")} == {IMAGE_A}
    seen: list[list[tuple[str, str, bool, bool]]] = []
    for _ in range(60):
        status = get(api)["status"]
        pods = server.cluster.pods(NS, "kiln")
        seen.append([(p.name, p.image, p.ready, p.terminating) for p in pods])
        if status["updatedReplicas"] == status["availableReplicas"] == status["replicas"] == 3:
            break
    assert {pod.image for pod in server.cluster.pods(NS, "kiln")} == {IMAGE_B}
    before: set[str] = set()
    for pods in seen:
        created = {name for name, image, _, _ in pods if image == IMAGE_B}
        assert len(created - before) <= 1  # one pod created per poll
        assert not any(ready for name, _, ready, _ in pods if name in created - before)
        assert sum(gone for *_, gone in pods) <= 1  # old pods leave one at a time
        before |= created
    ready = [sum(ready for _, image, ready, _ in pods if image == IMAGE_B) for pods in seen]
    assert all(now - then <= 1 for then, now in zip(ready, ready[1:], strict=False))
    assert len(seen) >= 9  # three pods, each created, made ready and swapped for an old one


def test_a_rolling_update_surges_and_old_pods_linger(api: KubeApi, server) -> None:
    deployment = objects(IMAGE_A, "va")["Deployment"]
    deployment["spec"]["replicas"] = 3
    apply(api, deployment)
    settle(api)
    changed = objects(IMAGE_B, "vb")["Deployment"]
    changed["spec"]["replicas"] = 3
    apply(api, changed)

    seen = []
    for _ in range(30):
        status = get(api)["status"]
        seen.append(
            (status.get("replicas"), status.get("updatedReplicas"), status.get("availableReplicas"))
        )
    assert max(total for total, _, _ in seen) == 4  # maxSurge 1
    assert min(available for _, _, available in seen) >= 3  # maxUnavailable 0
    # all three updated and available while an old pod still terminates
    assert any(total > updated == available == 3 for total, updated, available in seen)
    assert seen[-1] == (3, 3, 3)


def test_endpoints_lag_the_pods_and_the_service_proxy_resolves_its_port(
    api: KubeApi, server
) -> None:
    parts = objects(IMAGE_A, "va")
    apply(api, parts["Service"])
    apply(api, parts["Deployment"])
    proxy = f"/api/v1/namespaces/{NS}/services/kiln:http/proxy/metadata"
    for _ in range(10):
        get(api)
        if any(pod.ready for pod in server.cluster.pods(NS, "kiln")):
            break
    assert api.raw("GET", proxy).status == 503  # the pod is ready; its endpoint not yet
    get(api)
    assert api.raw("GET", proxy).json()["version"] == "va"
    # a port number names the Service port with that number, as the API server reads it
    by_number = api.raw("GET", f"/api/v1/namespaces/{NS}/services/kiln:8000/proxy/metadata")
    assert by_number.json()["version"] == "va"
    with_scheme = api.raw("GET", f"/api/v1/namespaces/{NS}/services/http:kiln:http/proxy/ready")
    assert with_scheme.status == 200
    wrong_number = api.raw("GET", f"/api/v1/namespaces/{NS}/services/kiln:80/proxy/metadata")
    assert wrong_number.status == 503
    assert 'no service port 80 found for service \\"kiln\\"' in wrong_number.body.decode()
    for service in ("kiln:web", "kiln"):  # a name it has not got; none: its port is named
        wrong = api.raw("GET", f"/api/v1/namespaces/{NS}/services/{service}/proxy/metadata")
        assert wrong.status == 503, service
        assert "no endpoints available" in wrong.body.decode()


def test_the_service_proxy_forwards_the_request_and_relays_the_answer(api: KubeApi, server) -> None:
    parts = objects(IMAGE_A, "va")
    apply(api, parts["Service"])
    apply(api, parts["Deployment"])
    settle(api)
    get(api)  # the endpoints controller catches up
    base = f"/api/v1/namespaces/{NS}/services/kiln:http/proxy"
    reply = api.raw("POST", f"{base}/predict?labels=true", {"data": [[1.0], [2.0]]})
    assert (reply.status, reply.json()) == (200, {"prediction": [[1.0, 0.0], [1.0, 0.0]]})
    assert api.raw("GET", f"{base}/nowhere").status == 404  # the server's own 404, relayed
    assert api.raw("GET", f"{base}//metadata").status == 404  # a path the server has not got
    chunked = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=5)
    chunked.request(
        "POST",
        f"{base}/predict",
        body=iter([b'{"data": ', b"[[1.0]]}"]),
        headers={"Transfer-Encoding": "chunked"},
        encode_chunked=True,
    )
    assert json.loads(chunked.getresponse().read()) == {"prediction": [[1.0, 0.0]]}
    chunked.close()
    [pod] = server.cluster.pods(NS, "kiln")
    assert ("10.244.0.2", "POST /predict?labels=true") in [
        (line.split()[0], " ".join(line.split()[1:3]).strip('"')) for _, line in pod.log
    ]


def test_metadata_reports_the_version_baked_into_the_image(api: KubeApi, server) -> None:
    apply(api, objects(IMAGE_A, "annotated-but-not-baked")["Deployment"])
    settle(api)
    pod = server.cluster.pods(NS, "kiln")[0]
    reply = api.raw("GET", f"/api/v1/namespaces/{NS}/pods/{pod.name}:8000/proxy/metadata")
    assert reply.json()["version"] == "va"
    wrong = api.raw("GET", f"/api/v1/namespaces/{NS}/pods/{pod.name}:9000/proxy/metadata")
    assert wrong.status == 503


def test_every_write_bumps_the_resource_version_and_stale_ones_conflict(
    api: KubeApi, server
) -> None:
    apply(api, objects(IMAGE_A, "va")["Deployment"])
    read = get(api)
    get(api)  # the controller writes status: a new resourceVersion
    assert get(api)["metadata"]["resourceVersion"] != read["metadata"]["resourceVersion"]
    with pytest.raises(RolloutError, match="409"):
        api.call("PUT", DEPLOYMENT, read)
    stale = [{"op": "test", "path": "/metadata/generation", "value": 99}]
    with pytest.raises(RolloutError, match="422"):
        api.call("PATCH", DEPLOYMENT, stale, content_type=JSON_PATCH)


def test_the_selector_is_immutable(api: KubeApi, server) -> None:
    deployment = objects(IMAGE_A, "va")["Deployment"]
    apply(api, deployment)
    deployment["spec"]["selector"]["matchLabels"]["extra"] = "x"
    deployment["spec"]["template"]["metadata"]["labels"]["extra"] = "x"
    with pytest.raises(RolloutError, match="422 .*field is immutable"):
        apply(api, deployment)


def test_a_deployment_must_select_its_own_pod_template(api: KubeApi, server) -> None:
    deployment = objects(IMAGE_A, "va")["Deployment"]
    stray = json.loads(json.dumps(deployment))
    stray["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] = "other"
    with pytest.raises(RolloutError, match="422 .*`selector` does not match template `labels`"):
        apply(api, stray)  # on create
    apply(api, deployment)
    patch = [{"op": "replace", "path": "/spec/template", "value": stray["spec"]["template"]}]
    with pytest.raises(RolloutError, match="422 .*`selector` does not match template `labels`"):
        api.call("PATCH", DEPLOYMENT, patch, content_type=JSON_PATCH)  # on update
    assert get(api)["spec"]["template"] == deployment["spec"]["template"]


def test_apply_conflicts_with_another_manager_unless_forced(api: KubeApi, server) -> None:
    deployment = objects(IMAGE_A, "va")["Deployment"]
    apply(api, deployment)
    deployment["spec"]["progressDeadlineSeconds"] = 7
    with pytest.raises(RolloutError, match='409 .*conflict with "kiln"'):
        apply(api, deployment, manager="someone-else")


def test_a_paused_deployment_does_not_roll(api: KubeApi, server) -> None:
    apply(api, objects(IMAGE_A, "va")["Deployment"])
    settle(api)
    paused = objects(IMAGE_B, "vb")["Deployment"]
    paused["spec"]["paused"] = True
    apply(api, paused)
    for _ in range(10):
        get(api)
    assert {pod.image for pod in server.cluster.pods(NS, "kiln")} == {IMAGE_A}


def test_restricted_admission_refuses_a_privileged_pod(api: KubeApi, server) -> None:
    deployment = objects(IMAGE_A, "va")["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = True
    apply(api, deployment)
    get(api)
    conditions = {c["type"]: c for c in get(api)["status"]["conditions"]}
    assert conditions["ReplicaFailure"]["reason"] == "FailedCreate"
    assert "privileged" in conditions["ReplicaFailure"]["message"]
    assert server.cluster.pods(NS, "kiln") == []


def test_rbac_refuses_what_the_rules_do_not_grant(api: KubeApi, server) -> None:
    server.cluster.allow(
        {"rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}]}
    )
    with pytest.raises(RolloutError, match="403 .*cannot patch"):
        apply(api, objects(IMAGE_A, "va")["Deployment"])
    assert api.call("GET", DEPLOYMENT, missing_ok=True) is None
