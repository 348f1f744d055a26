"""The Kubernetes rollout against an EMULATED API server (tests/support/k8s_emulator.py).

No cluster can run where these tests run, so an emulator stands in for one: real HTTP on
127.0.0.1, the REST paths and bodies the official client sends, and stand-ins for the
deployment and endpoints controllers, the proxies, RBAC and Pod Security admission. The
same scenarios run against a real cluster in test_cluster.py when KUBECONFIG is set.
"""

from __future__ import annotations

import itertools
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from kiln.config.errors import RolloutError
from kiln.rollout import KUBERNETES, previous_of, roll_out, serving_problem
from kiln.rollout.kubernetes.api import JSON_PATCH
from kiln.rollout.kubernetes.manifests import (
    MANIFEST_DIR,
    VERSION_ANNOTATION,
    candidate_of,
    render_manifests,
)
from kiln.rollout.kubernetes.target import KubernetesTarget, RolloutStuck
from kiln.rollout.smoke import http_caller
from kiln.rollout.target import Deployed
from kiln.store.artifact_store import ArtifactStore
from tests.rollout.kubernetes.conftest import NS, SAMPLE_INPUT, AddVersion
from tests.support.k8s_emulator import EmulatedApiServer

CANDIDATE = "kiln-candidate"


@pytest.fixture(autouse=True)
def the_endpoint_serves_the_recorded_version(
    store: ArtifactStore, cluster: KubernetesTarget, emulator: EmulatedApiServer
) -> Iterator[None]:
    """After every test here that leaves a version recorded: the endpoint kiln reports
    answers, through the Service, with that version, from whichever pod the proxy picks.
    A user's request, not the deployer's: the deployer's Role has no services/proxy."""
    yield
    record = store.deployment(KUBERNETES)
    if record is None:
        return
    emulator.cluster.rbac = None
    call = http_caller(cluster.endpoint)
    for _ in range(3):
        reply = call("GET", "/metadata", None)
        assert (reply.status, reply.json().get("version")) == (200, record.current)


def deployment_writes(emulator: EmulatedApiServer, name: str = "kiln") -> list[str]:
    path = f"/apis/apps/v1/namespaces/{NS}/deployments/{name}"
    return [m for m, p in emulator.cluster.requests if p.split("?")[0] == path and m != "GET"]


def test_first_rollout_creates_everything_waits_smoke_tests_and_records(
    store: ArtifactStore,
    add_version: AddVersion,
    cluster: KubernetesTarget,
    emulator: EmulatedApiServer,
) -> None:
    version, image = add_version("a")
    result = roll_out(store, version, cluster)

    state = emulator.cluster
    assert {kind for kind, _, _ in state.objects} == {
        "Namespace",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    deployment = state.deployment(NS, "kiln")
    assert deployment is not None
    assert deployment["metadata"]["annotations"][VERSION_ANNOTATION] == version
    assert deployment["status"]["availableReplicas"] == deployment["spec"]["replicas"]
    assert state.serving_image(NS, "kiln") == image
    # the rollout polled the Deployment while the emulated controller moved it along
    polls = [p for m, p in state.requests if m == "GET" and p.endswith("/deployments/kiln")]
    assert len(polls) >= 4
    # the smoke test reached a candidate pod, then a pod of the main Deployment
    pods = [pod for pod, _, _ in state.proxied]
    assert pods[0].startswith(f"{CANDIDATE}-") and pods[-1].startswith("kiln-")
    assert {(m, p) for _, m, p in state.proxied} == {("GET", "/metadata"), ("POST", "/predict")}
    assert state.deployment(NS, CANDIDATE) is None  # removed once it passed
    assert (result.target, result.version, result.image) == (KUBERNETES, version, image)
    assert result.previous_version is None and not result.rolled_back
    assert result.endpoint == f"{emulator.url}/api/v1/namespaces/{NS}/services/kiln:http/proxy"
    reply = http_caller(result.endpoint)("POST", "/predict", {"data": SAMPLE_INPUT})
    assert (reply.status, len(reply.json()["prediction"])) == (200, len(SAMPLE_INPUT))
    record = store.deployment(KUBERNETES)
    assert record is not None and (record.current, record.image) == (version, image)


def test_every_object_is_server_side_applied_by_kiln_without_replicas(
    store: ArtifactStore,
    add_version: AddVersion,
    cluster: KubernetesTarget,
    emulator: EmulatedApiServer,
) -> None:
    version, _ = add_version("a")
    roll_out(store, version, cluster)

    state = emulator.cluster
    writes = [(m, p) for m, p in state.requests if m not in ("GET", "DELETE")]
    main = [p for m, p in writes if "/proxy/" not in p and CANDIDATE not in p]
    assert main and all(m == "PATCH" and "fieldManager=kiln" in p for m, p in writes[:1])
    assert all("fieldManager=kiln" in p for p in main)
    owned = state.managers[("Deployment", NS, "kiln")]["kiln"]
    assert ("spec", "replicas") not in owned
    # the namespace is the cluster admin's: never written
    assert [m for m, p in state.requests if p.split("?")[0] == f"/api/v1/namespaces/{NS}"] == []


def test_second_rollout_replaces_the_image_and_keeps_the_previous_for_rollback(
    store: ArtifactStore,
    add_version: AddVersion,
    cluster: KubernetesTarget,
    emulator: EmulatedApiServer,
) -> None:
    old, old_image = add_version("a")
    new, new_image = add_version("b")
    roll_out(store, old, cluster)
    generation = emulator.cluster.deployment(NS, "kiln")["metadata"]["generation"]

    result = roll_out(store, new, cluster)

    deployment = emulator.cluster.deployment(NS, "kiln")
    assert deployment["metadata"]["generation"] == generation + 1
    assert emulator.cluster.serving_image(NS, "kiln") == new_image
    assert (result.previous_version, result.previous_image) == (old, old_image)
    record = store.deployment(KUBERNETES)
    assert (record.current, record.previous, record.previous_image) == (new, old, old_image)
    assert previous_of(store, KUBERNETES) == (old, old_image)


def test_shipping_the_same_version_again_changes_nothing(
    store: ArtifactStore,
    add_version: AddVersion,
    cluster: KubernetesTarget,
    emulator: EmulatedApiServer,
) -> None:
    old, _ = add_version("a")
    new, _ = add_version("b")
    roll_out(store, old, cluster)
    roll_out(store, new, cluster)
    generation = emulator.cluster.deployment(NS, "kiln")["metadata"]["generation"]

    roll_out(store, new, cluster)

    assert emulator.cluster.deployment(NS, "kiln")["metadata"]["generation"] == generation
    record = store.deployment(KUBERNETES)
    assert (record.current, record.previous) == (new, old)


def test_what_the_record_says_serves_is_checked_through_a_pod(
    store: ArtifactStore,
    add_version: AddVersion,
    cluster: KubernetesTarget,
    emulator: EmulatedApiServer,
) -> None:
    old, old_image = add_version("a")
    new, _ = add_version("b")
    assert serving_problem(store, old, cluster) == f"kubernetes runs nothing, not {old}"
    roll_out(store, old, cluster)

    assert serving_problem(store, old, cluster) is None
    assert serving_problem(store, new, cluster) == f"kubernetes runs {old}, not {new}"
    emulator.cluster.fault(old_image, predict_status=500)  # its pods answer wrongly now
    problem = serving_problem(store, old, cluster)
    assert problem is not None and "POST /predict answered 500" in problem


def test_a_live_replica_count_set_by_the_hpa_is_kept(
    store: ArtifactStore,
    add_version: AddVersion,
    cluster: KubernetesTarget,
    emulator: EmulatedApiServer,
) -> None:
    old, _ = add_version("a")
    new, _ = add_version("b")
    roll_out(store, old, cluster)
    emulator.cluster.scale(NS, "kiln", 7)  # the HPA scaled the Deployment out

    roll_out(store, new, cluster)

    deployment = emulator.cluster.deployment(NS, "kiln")
    assert deployment["spec"]["replicas"] == 7
    assert deployment["status"]["availableReplicas"] == 7


def assert_untouched(emulator: EmulatedApiServer, version: str, image: str) -> None:
    """The main Deployment still runs `version`; the candidate is gone."""
    state = emulator.cluster
    deployment = state.deployment(NS, "kiln")
    template = deployment["spec"]["template"]
    assert template["spec"]["containers"][0]["image"] == image
    assert template["metadata"]["annotations"][VERSION_ANNOTATION] == version
    assert deployment["metadata"]["annotations"][VERSION_ANNOTATION] == version
    assert state.serving_image(NS, "kiln") == image
    assert all(pod.image == image for pod in state.pods(NS, "kiln"))
    assert state.deployment(NS, CANDIDATE) is None


def test_a_candidate_that_never_becomes_ready_never_reaches_the_main_deployment(
    store: ArtifactStore,
    add_version: AddVersion,
    cluster: KubernetesTarget,
    emulator: EmulatedApiServer,
) -> None:
    old, old_image = add_version("a")
    new, new_image = add_version("b")
    roll_out(store, old, cluster)
    generation = emulator.cluster.deployment(NS, "kiln")["metadata"]["generation"]
    emulator.cluster.fault(new_image, stuck=True)

    with pytest.raises(RolloutError, match="progress deadline exceeded") as caught:
        roll_out(store, new, cluster)

    assert f"candidate Deployment {NS}/{CANDIDATE}" in str(caught.value)
    assert f"{old} keeps serving (nothing to restore)" in str(caught.value)
    assert_untouched(emulator, old, old_image)
    assert emulator.cluster.deployment(NS, "kiln")["metadata"]["generation"] == generation
    record = store.deployment(KUBERNETES)
    assert (record.current, record.image) == (old, old_image)


def test_a_rollout_that_never_finishes_times_out(
    store: ArtifactStore,
    add_version: AddVersion,
    cluster: KubernetesTarget,
    emulator: EmulatedApiServer,
) -> None:
    old, old_image = add_version("a")
    new, new_image = add_version("b")
    roll_out(store, old, cluster)
    emulator.cluster.polls_to_deadline = 10**9  # the controller never gives its verdict
    emulator.cluster.fault(new_image, stuck=True)
    ticks = iter(range(10**6))
    cluster.clock = lambda: float(next(ticks))  # one "second" per poll, no real waiting
    cluster.timeout = 5

    with pytest.raises(RolloutError, match="timed out after 5s") as caught:
        roll_out(store, new, cluster)

    assert f"{old} keeps serving" in str(caught.value)
    assert_untouched(emulator, old, old_image)


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ({"metadata_version": "something-else"}, "reports version 'something-else'"),
        ({"predict_status": 500}, "POST /predict answered 500"),
    ],
)
def test_a_candidate_failing_its_smoke_test_takes_no_traffic(
    store: ArtifactStore,
    add_version: AddVersion,
    cluster: KubernetesTarget,
    emulator: EmulatedApiServer,
    fault: dict,
    message: str,
) -> None:
    old, old_image = add_version("a")
    new, new_image = add_version("b")
    roll_out(store, old, cluster)
    emulator.cluster.fault(new_image, **fault)
    before = len(emulator.cluster.proxied)

    with pytest.raises(RolloutError, match=message):
        roll_out(store, new, cluster)

    assert_untouched(emulator, old, old_image)
    tried = emulator.cluster.proxied[before:]
    assert tried and all(pod.startswith(CANDIDATE) for pod, _, _ in tried)
    assert store.deployment(KUBERNETES).current == old


def test_a_main_rollout_that_fails_is_restored_to_the_recorded_version(
    store: ArtifactStore,
    add_version: AddVersion,
    cluster: KubernetesTarget,
    emulator: EmulatedApiServer,
    tmp_path: Path,
) -> None:
    old, old_image = add_version("a")
    new, new_image = add_version("b")
    manifests = copy_manifests(tmp_path)  # the restore renders these, not the defaults
    edit_deployment(
        manifests,
        lambda d: d["spec"]["template"]["spec"]["containers"][0]["env"].append(
            {"name": "EXTRA", "value": "1"}
        ),
    )
    cluster.manifest_dir = manifests
    roll_out(store, old, cluster)
    emulator.cluster.scale(NS, "kiln", 3)
    roll_out(store, old, cluster)
    # the candidate's one pod fits, the main Deployment's three do not
    emulator.cluster.push(new_image, new, capacity=1)

    with pytest.raises(RolloutError, match="progress deadline exceeded") as caught:
        roll_out(store, new, cluster)

    assert f"rolled back to {old} ({old_image})" in str(caught.value)
    assert_untouched(emulator, old, old_image)
    assert "PATCH" in deployment_writes(emulator)
    assert store.deployment(KUBERNETES).current == old
    env = emulator.cluster.deployment(NS, "kiln")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "EXTRA", "value": "1"} in env["env"]
    # the restore wrote as kiln: the next apply owns the template without a conflict
    fixed, fixed_image = add_version("c")
    roll_out(store, fixed, cluster)
    assert emulator.cluster.serving_image(NS, "kiln") == fixed_image


def test_the_rollback_target_is_the_record_not_what_runs(
    store: ArtifactStore,
    add_version: AddVersion,
    cluster: KubernetesTarget,
    emulator: EmulatedApiServer,
) -> None:
    """A run died after applying B; its retry ships B again, and B fails: A comes back."""
    a, a_image = add_version("a")
    b, b_image = add_version("b")
    roll_out(store, a, cluster)
    emulator.cluster.scale(NS, "kiln", 3)

    cluster.apply(render_manifests(b_image, b, NS))  # the run that died
    cluster.wait_rolled_out()
    emulator.cluster.push(b_image, b, capacity=1)  # B cannot run three pods
    emulator.cluster.scale(NS, "kiln", 3)

    with pytest.raises(RolloutError) as caught:
        roll_out(store, b, cluster)

    assert f"rolled back to {a} ({a_image})" in str(caught.value)
    assert_untouched(emulator, a, a_image)
    assert store.deployment(KUBERNETES).current == a


def test_a_failed_first_rollout_says_there_was_nothing_to_restore(
    store: ArtifactStore,
    add_version: AddVersion,
    cluster: KubernetesTarget,
    emulator: EmulatedApiServer,
) -> None:
    version, image = add_version("a")
    emulator.cluster.fault(image, predict_status=503)

    with pytest.raises(RolloutError, match="nothing to restore"):
        roll_out(store, version, cluster)

    assert store.deployment(KUBERNETES) is None
    assert emulator.cluster.deployment(NS, "kiln") is None  # the candidate failed first


def test_a_version_without_a_pinned_image_is_refused_before_touching_the_cluster(
    store: ArtifactStore,
    cluster: KubernetesTarget,
    emulator: EmulatedApiServer,
) -> None:
    version = store.put(b"model", {0: "a", 1: "b"}, {"sample_input": [[1.0]]})
    store.record_image(version, "127.0.0.1:5000/kiln/iris:latest")

    with pytest.raises(RolloutError, match="no image pinned by digest"):
        roll_out(store, version, cluster)

    assert emulator.cluster.requests == []


def test_an_unreachable_api_server_is_a_transient_rollout_error(
    store: ArtifactStore,
    add_version: AddVersion,
) -> None:
    from kiln.rollout.target import is_transient

    version, _ = add_version("a")
    with EmulatedApiServer() as gone:
        url = gone.url  # a port that was just free and is closed again
    configuration = client.Configuration(host=url)
    configuration.retries = 0
    with client.ApiClient(configuration) as api_client:
        cluster = KubernetesTarget(
            api_client, namespace=NS, timeout=5, poll_interval=0.0, request_timeout=2
        )
        with pytest.raises(RolloutError, match="GET /apis/apps/v1") as caught:
            roll_out(store, version, cluster)
    assert is_transient(caught.value)


def test_rolling_back_without_a_previous_version_is_refused(
    store: ArtifactStore,
    add_version: AddVersion,
    cluster: KubernetesTarget,
) -> None:
    with pytest.raises(RolloutError, match="nothing was ever deployed"):
        previous_of(store, KUBERNETES)
    version, _ = add_version("a")
    roll_out(store, version, cluster)
    with pytest.raises(RolloutError, match="no previous version"):
        previous_of(store, KUBERNETES)


def test_a_paused_deployment_is_refused_in_one_line_before_anything_changes(
    store: ArtifactStore,
    add_version: AddVersion,
    cluster: KubernetesTarget,
    emulator: EmulatedApiServer,
) -> None:
    old, old_image = add_version("a")
    new, _ = add_version("b")
    roll_out(store, old, cluster)
    with emulator.cluster.lock:
        emulator.cluster.objects[("Deployment", NS, "kiln")]["spec"]["paused"] = True
    before = len(emulator.cluster.requests)

    with pytest.raises(RolloutError, match="is paused: resume it") as caught:
        roll_out(store, new, cluster)

    assert "\n" not in str(caught.value)
    assert all(m == "GET" for m, _ in emulator.cluster.requests[before:])
    assert emulator.cluster.template_image(NS, "kiln") == old_image


def test_a_missing_namespace_is_an_error_and_never_created_unasked(
    store: ArtifactStore,
    add_version: AddVersion,
    cluster: KubernetesTarget,
    emulator: EmulatedApiServer,
) -> None:
    version, _ = add_version("a")
    cluster.namespace = "nowhere"

    with pytest.raises(RolloutError, match='namespaces \\\\?"nowhere\\\\?" not found|404'):
        roll_out(store, version, cluster)

    assert ("Namespace", "", "nowhere") not in emulator.cluster.objects


def test_creating_the_namespace_is_opt_in_and_an_existing_one_is_left_alone(
    store: ArtifactStore,
    add_version: AddVersion,
    cluster: KubernetesTarget,
    emulator: EmulatedApiServer,
) -> None:
    version, _ = add_version("a")
    labels_before = emulator.cluster.objects[("Namespace", "", NS)]["metadata"]["labels"]
    cluster.create_namespace = True
    roll_out(store, version, cluster)  # exists: not patched
    assert emulator.cluster.objects[("Namespace", "", NS)]["metadata"]["labels"] == labels_before
    paths = [p.split("?")[0] for _, p in emulator.cluster.requests]
    assert f"/api/v1/namespaces/{NS}" not in paths

    cluster.namespace = "fresh"
    roll_out(store, version, cluster)
    labels = emulator.cluster.objects[("Namespace", "", "fresh")]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert emulator.cluster.serving_image("fresh", "kiln") is not None


def copy_manifests(tmp_path: Path) -> Path:
    out = tmp_path / "k8s"
    shutil.copytree(MANIFEST_DIR, out)
    return out


def edit_deployment(directory: Path, change) -> None:
    path = directory / "deployment.yaml"
    deployment = yaml.safe_load(path.read_text())
    change(deployment)
    path.write_text(yaml.safe_dump(deployment))


def test_fields_removed_from_the_manifests_are_removed_from_the_cluster(
    store: ArtifactStore,
    add_version: AddVersion,
    cluster: KubernetesTarget,
    emulator: EmulatedApiServer,
    tmp_path: Path,
) -> None:
    version, _ = add_version("a")
    new, _ = add_version("b")
    manifests = copy_manifests(tmp_path)
    edit_deployment(
        manifests,
        lambda d: d["spec"]["template"]["spec"]["containers"][0]["env"].append(
            {"name": "EXTRA", "value": "1"}
        ),
    )
    cluster.manifest_dir = manifests
    roll_out(store, version, cluster)
    env = emulator.cluster.deployment(NS, "kiln")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "EXTRA", "value": "1"} in env["env"]

    edit_deployment(
        manifests,
        lambda d: d["spec"]["template"]["spec"]["containers"][0]["env"].pop(),
    )
    roll_out(store, new, cluster)

    env = emulator.cluster.deployment(NS, "kiln")["spec"]["template"]["spec"]["containers"][0]
    assert "EXTRA" not in [e["name"] for e in env["env"]]


def test_a_field_another_manager_changed_is_a_conflict_named_not_overwritten(
    store: ArtifactStore,
    add_version: AddVersion,
    cluster: KubernetesTarget,
    emulator: EmulatedApiServer,
) -> None:
    old, _ = add_version("a")
    new, _ = add_version("b")
    roll_out(store, old, cluster)
    hand_edit = {"spec": {"progressDeadlineSeconds": 999}}
    api = cluster.api
    api.call(
        "PATCH",
        f"/apis/apps/v1/namespaces/{NS}/deployments/kiln",
        hand_edit,
        content_type="application/merge-patch+json",
        query=[("fieldManager", "kubectl-edit")],
    )

    with pytest.raises(RolloutError, match='conflict with "kubectl-edit"') as caught:
        roll_out(store, new, cluster)

    assert "progressDeadlineSeconds" in str(caught.value)
    assert emulator.cluster.deployment(NS, "kiln")["spec"]["progressDeadlineSeconds"] == 999


def test_pods_the_restricted_standard_refuses_are_a_replica_failure(
    store: ArtifactStore,
    add_version: AddVersion,
    cluster: KubernetesTarget,
    emulator: EmulatedApiServer,
    tmp_path: Path,
) -> None:
    version, _ = add_version("a")
    manifests = copy_manifests(tmp_path)
    edit_deployment(
        manifests,
        lambda d: d["spec"]["template"]["spec"]["containers"][0]["securityContext"].pop(
            "allowPrivilegeEscalation"
        ),
    )
    cluster.manifest_dir = manifests

    with pytest.raises(RolloutError, match="replica failure \\(FailedCreate\\)") as caught:
        roll_out(store, version, cluster)

    assert "allowPrivilegeEscalation != false" in str(caught.value)


def test_the_restore_survives_status_writes_and_rereads_after_a_spec_change(
    store: ArtifactStore,
    add_version: AddVersion,
    cluster: KubernetesTarget,
    emulator: EmulatedApiServer,
) -> None:
    old, old_image = add_version("a")
    new, new_image = add_version("b")
    roll_out(store, old, cluster)
    emulator.cluster.scale(NS, "kiln", 3)
    roll_out(store, old, cluster)
    emulator.cluster.push(new_image, new, capacity=1)
    state = emulator.cluster
    original = state.json_patch_hook

    def someone_scales_once(key: tuple) -> None:
        state.json_patch_hook = original
        state.scale(NS, "kiln", 4)  # a spec change between kiln's read and its patch

    state.json_patch_hook = someone_scales_once

    with pytest.raises(RolloutError, match=f"rolled back to {old}"):
        roll_out(store, new, cluster)

    patches = [p for m, p in state.requests if m == "PATCH" and p.split("?")[0].endswith("/kiln")]
    assert len(patches) >= 3  # the apply, the refused restore, the restore
    assert_untouched(emulator, old, old_image)


def deployer_role() -> dict:
    documents = yaml.safe_load_all((MANIFEST_DIR / "admin" / "rbac.yaml").read_text())
    return next(d for d in documents if d and d["kind"] == "Role")


def test_the_deployer_role_grants_exactly_what_rollouts_and_restores_use(
    store: ArtifactStore,
    add_version: AddVersion,
    cluster: KubernetesTarget,
    emulator: EmulatedApiServer,
) -> None:
    role = deployer_role()
    emulator.cluster.allow(role)
    a, _ = add_version("a")
    b, _ = add_version("b")
    c, c_image = add_version("c")
    roll_out(store, a, cluster)  # creates every object
    emulator.cluster.scale(NS, "kiln", 3)
    roll_out(store, b, cluster)  # updates them
    emulator.cluster.push(c_image, c, capacity=1)
    with pytest.raises(RolloutError, match=f"rolled back to {b}"):
        roll_out(store, c, cluster)  # a failed main rollout, restored

    assert emulator.cluster.forbidden == []
    granted = {
        (index, verb, resource)
        for index, rule in enumerate(role["rules"])
        for verb in rule["verbs"]
        for resource in rule["resources"]
    }
    assert emulator.cluster.granted == granted  # every permission was needed


def test_a_call_the_role_does_not_grant_is_refused_with_403_and_not_retried(
    store: ArtifactStore,
    add_version: AddVersion,
    cluster: KubernetesTarget,
    emulator: EmulatedApiServer,
) -> None:
    from kiln.rollout.target import is_transient

    role = deployer_role()
    role["rules"] = [r for r in role["rules"] if r["resources"] != ["pods/proxy"]]
    emulator.cluster.allow(role)
    version, _ = add_version("a")

    with pytest.raises(RolloutError, match='cannot get resource \\\\?"pods/proxy') as caught:
        roll_out(store, version, cluster)

    assert not is_transient(caught.value)
    assert emulator.cluster.deployment(NS, CANDIDATE) is None


def test_a_restore_needs_a_recorded_version_and_a_deployment(cluster: KubernetesTarget) -> None:
    from kiln.rollout.target import Deployed

    image = "127.0.0.1:5000/kiln/iris@sha256:" + "c" * 64
    with pytest.raises(RolloutError, match="^the record names no version and image to restore$"):
        cluster.restore(Deployed(None, image))
    with pytest.raises(RolloutError, match=f"Deployment {NS}/kiln is gone"):
        cluster.restore(Deployed("v1", image))


def test_a_restore_retries_a_transient_error_and_gives_up_on_endless_changes(
    store: ArtifactStore,
    add_version: AddVersion,
    cluster: KubernetesTarget,
    emulator: EmulatedApiServer,
) -> None:
    from tests.support.k8s_emulator import ApiError

    old, old_image = add_version("a")
    new, new_image = add_version("b")
    roll_out(store, old, cluster)
    emulator.cluster.scale(NS, "kiln", 3)
    roll_out(store, old, cluster)
    emulator.cluster.push(new_image, new, capacity=1)
    state = emulator.cluster
    busy = iter([True])

    def conflict_once(key: tuple) -> None:
        if next(busy, False):
            raise ApiError(409, "Conflict", "the object has been modified")

    state.json_patch_hook = conflict_once
    with pytest.raises(RolloutError, match=f"rolled back to {old}"):
        roll_out(store, new, cluster)
    assert_untouched(emulator, old, old_image)

    state.push(new_image, new, capacity=1)
    flips = iter(range(10**6))  # someone changes the spec before every patch
    state.json_patch_hook = lambda key: state.scale(NS, "kiln", 4 + next(flips) % 2)
    with pytest.raises(RolloutError, match="kept changing under us"):
        roll_out(store, new, cluster)


def test_a_rolled_back_version_is_refused_by_any_later_rollout_unless_forced(
    store: ArtifactStore,
    add_version: AddVersion,
    cluster: KubernetesTarget,
    emulator: EmulatedApiServer,
) -> None:
    """The store remembers the rollback: a new flow run (a `prefect flow-run retry`, a
    second `kiln deploy`) does not ship the version again; a new version ships."""
    old, old_image = add_version("a")
    bad, bad_image = add_version("b")
    roll_out(store, old, cluster)
    emulator.cluster.fault(bad_image, predict_status=500)
    with pytest.raises(RolloutError, match="POST /predict answered 500"):
        roll_out(store, bad, cluster)
    [entry] = store.deployment(KUBERNETES).rolled_back
    assert entry["version"] == bad and "POST /predict answered 500" in entry["reason"]

    emulator.cluster.fault(bad_image, predict_status=200)  # would pass now: still refused
    requests = len(emulator.cluster.requests)
    with pytest.raises(RolloutError) as caught:
        roll_out(store, bad, cluster)
    message = str(caught.value)
    assert "\n" not in message and "failed its smoke test there and was rolled back" in message
    assert "POST /predict answered 500" in message and "--ship-rolled-back" in message
    assert emulator.cluster.requests[requests:] == []  # refused before calling the cluster
    assert_untouched(emulator, old, old_image)

    other, other_image = add_version("c")  # a new version ships normally
    roll_out(store, other, cluster)
    assert emulator.cluster.serving_image(NS, "kiln") == other_image

    roll_out(store, bad, cluster, ship_rolled_back=True)  # forced: ships, and is cleared
    assert emulator.cluster.serving_image(NS, "kiln") == bad_image
    record = store.deployment(KUBERNETES)
    assert (record.current, record.previous, record.rolled_back) == (bad, other, [])


def test_a_failed_reship_of_the_running_version_restores_the_one_before_it(
    store: ArtifactStore,
    add_version: AddVersion,
    cluster: KubernetesTarget,
    emulator: EmulatedApiServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`kiln deploy B` while B runs, and B fails now: the record's previous, A, comes back."""
    a, a_image = add_version("a")
    b, b_image = add_version("b")
    roll_out(store, a, cluster)
    roll_out(store, b, cluster)
    emulator.cluster.fault(b_image, predict_status=500)

    with (
        caplog.at_level(logging.WARNING, "kiln.rollout.orchestrator"),
        pytest.raises(RolloutError) as caught,
    ):
        roll_out(store, b, cluster)

    assert str(caught.value).endswith(f"; rolled back to {a} ({a_image})")
    assert f"restoring {a} ({a_image})" in [r.getMessage() for r in caplog.records]
    assert_untouched(emulator, a, a_image)
    # the record says what runs: A, with B rolled back (it said B, which no pod ran)
    record = store.deployment(KUBERNETES)
    assert (record.current, record.image) == (a, a_image)
    assert [entry["version"] for entry in record.rolled_back] == [b]


def test_a_failed_reship_of_the_only_version_has_nothing_to_restore(
    store: ArtifactStore,
    add_version: AddVersion,
    cluster: KubernetesTarget,
    emulator: EmulatedApiServer,
) -> None:
    only, image = add_version("only")
    roll_out(store, only, cluster)
    emulator.cluster.fault(image, predict_status=500)

    with pytest.raises(RolloutError) as caught:
        roll_out(store, only, cluster)

    assert str(caught.value).endswith(
        f"; nothing to restore (no other good version is recorded for {KUBERNETES})"
    )
    assert_untouched(emulator, only, image)


def test_a_container_renamed_by_hand_reports_no_image_and_is_restored(
    store: ArtifactStore, add_version: AddVersion, cluster: KubernetesTarget
) -> None:
    a, a_image = add_version("a")
    roll_out(store, a, cluster)
    rename = {"op": "replace", "path": "/spec/template/spec/containers/0/name", "value": "x"}
    cluster.api.call("PATCH", cluster._path(), [rename], content_type=JSON_PATCH)
    cluster.wait_rolled_out()
    assert cluster.current() == Deployed(a, None)

    assert cluster.restore(Deployed(a, a_image)) == f"rolled back to {a} ({a_image})"
    assert cluster.current() == Deployed(a, a_image)


def test_the_wait_logs_each_new_status_once(
    add_version: AddVersion,
    cluster: KubernetesTarget,
    emulator: EmulatedApiServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A pod that never becomes ready: the same status for several polls, logged once."""
    version, image = add_version("a")
    emulator.cluster.fault(image, stuck=True)
    cluster.apply(render_manifests(image, version, NS))

    with (
        caplog.at_level(logging.INFO, "kiln.rollout.kubernetes.target"),
        pytest.raises(RolloutStuck, match="progress deadline exceeded"),
    ):
        cluster.wait_rolled_out()

    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("kiln: ")]
    polls = [p for m, p in emulator.cluster.requests if m == "GET" and p == cluster._path()]
    assert logged[0] == "kiln: waiting for the controller to see generation 1"
    assert "kiln: 0 of 1 updated replicas available" in logged
    assert len(logged) == len(set(logged)) < len(polls)  # repeats were polled, not logged


@pytest.mark.parametrize("name", ["kiln", "kiln-candidate"])
def test_a_deployment_deleted_during_the_wait_stops_it(
    add_version: AddVersion, cluster: KubernetesTarget, name: str
) -> None:
    version, image = add_version("a")
    (deployment,) = [o for o in render_manifests(image, version, NS) if o["kind"] == "Deployment"]
    cluster.apply([deployment if name == "kiln" else candidate_of(deployment)])
    # the first poll sees a generation the controller has not observed yet: the wait sleeps
    cluster.sleep = lambda _seconds: cluster.api.call("DELETE", cluster._path(name))

    with pytest.raises(RolloutStuck) as caught:
        cluster.wait_rolled_out(None if name == "kiln" else name)

    assert str(caught.value) == f"Deployment {NS}/{name} does not exist"


def test_the_wait_gives_up_when_its_timeout_has_passed_not_a_poll_later(
    add_version: AddVersion, cluster: KubernetesTarget, emulator: EmulatedApiServer
) -> None:
    version, image = add_version("a")
    emulator.cluster.fault(image, stuck=True)
    cluster.apply(render_manifests(image, version, NS))
    emulator.cluster.polls_to_deadline = 10**9  # our timeout, not the controller's verdict
    while cluster.api.call("GET", cluster._path())["status"].get("updatedReplicas") != 1:
        pass  # the controller creates the pod over a few polls; it never gets ready
    ticks = itertools.count()  # one second passes per look at the clock
    cluster.clock, cluster.timeout = lambda: float(next(ticks)), 2
    before = len(emulator.cluster.requests)

    with pytest.raises(RolloutStuck) as caught:
        cluster.wait_rolled_out()

    polls = [m for m, _ in emulator.cluster.requests[before:]]
    assert polls == ["GET", "GET"]  # at 1 s and at 2 s: the deadline
    assert str(caught.value) == "timed out after 2s: kiln: 0 of 1 updated replicas available"


def test_a_deployment_paused_in_the_middle_of_a_rollout_stops_the_wait_and_is_restored(
    store: ArtifactStore,
    add_version: AddVersion,
    cluster: KubernetesTarget,
    emulator: EmulatedApiServer,
) -> None:
    """`kubectl rollout pause` while kiln waits, with old and new pods both running: kiln
    stops waiting at once and says why; its restore writes the old template back, and a
    resume finishes that restore: the recorded version serves again, and only it."""
    old, old_image = add_version("a")
    new, new_image = add_version("b")
    roll_out(store, old, cluster)
    emulator.cluster.scale(NS, "kiln", 3)
    roll_out(store, old, cluster)
    state = emulator.cluster

    paused: list[bool] = []

    def pause_halfway(_seconds: float) -> None:
        images = {pod.image for pod in state.pods(NS, "kiln") if pod.ready}
        if images == {old_image, new_image} and not paused:
            paused.append(True)
            cluster.api.call(
                "PATCH",
                cluster._path(),
                {"spec": {"paused": True}},
                content_type="application/merge-patch+json",
                query=[("fieldManager", "kubectl-rollout")],
            )

    cluster.sleep = pause_halfway
    with pytest.raises(RolloutError, match="kiln is paused: resume it") as caught:
        roll_out(store, new, cluster)

    assert "\n" not in str(caught.value)
    assert {pod.image for pod in state.pods(NS, "kiln")} == {old_image, new_image}  # halfway
    assert state.template_image(NS, "kiln") == old_image  # the restore wrote it back
    assert store.deployment(KUBERNETES).current == old  # the new one is never recorded
    cluster.api.call(
        "PATCH",
        cluster._path(),
        {"spec": {"paused": False}},  # what `kubectl rollout resume` sends
        content_type="application/merge-patch+json",
        query=[("fieldManager", "kubectl-rollout")],
    )
    cluster.wait_rolled_out()
    assert_untouched(emulator, old, old_image)


def test_a_service_with_one_unnamed_port_is_reported_by_its_number(
    store: ArtifactStore,
    add_version: AddVersion,
    cluster: KubernetesTarget,
    emulator: EmulatedApiServer,
    tmp_path: Path,
) -> None:
    version, _ = add_version("a")
    manifests = copy_manifests(tmp_path)
    path = manifests / "service.yaml"
    service = yaml.safe_load(path.read_text())
    service["spec"]["ports"] = [{"port": 8000, "targetPort": "http", "protocol": "TCP"}]
    path.write_text(yaml.safe_dump(service))
    cluster.manifest_dir = manifests

    result = roll_out(store, version, cluster)

    assert result.endpoint.endswith(f"/namespaces/{NS}/services/kiln:8000/proxy")
    # the autouse check requests it after this test: the API server takes the number


def test_a_failed_reship_whose_restore_fails_too_records_no_restored_version(
    store: ArtifactStore,
    add_version: AddVersion,
    cluster: KubernetesTarget,
    emulator: EmulatedApiServer,
) -> None:
    """B runs and fails now; A's pods never get ready, so its restore fails: the record
    must not say A serves. B's pods keep serving (no pod leaves before a new one is ready)."""
    a, a_image = add_version("a")
    b, _ = add_version("b")
    roll_out(store, a, cluster)
    roll_out(store, b, cluster)
    emulator.cluster.fault(emulator.cluster.template_image(NS, "kiln"), predict_status=500)
    emulator.cluster.fault(a_image, stuck=True)

    with pytest.raises(RolloutError, match=f"restoring {a} \\({a_image}\\) failed too"):
        roll_out(store, b, cluster)

    record = store.deployment(KUBERNETES)
    assert (record.current, record.previous) == (b, a)
