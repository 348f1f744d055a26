"""The Kubernetes rollout against an EMULATED API server (tests/k8s/emulator.py).

No cluster can run where these tests run, so an emulator stands in for one: real HTTP on
127.0.0.1, the REST paths and bodies the official client sends, and a stand-in for the
deployment controller and the Service proxy. The same scenarios run against a real
cluster in test_cluster.py when KUBECONFIG is set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from kubernetes import client

from flows.errors import RolloutError
from flows.rollout import KUBERNETES, previous_of, roll_out
from flows.rollout.kubernetes import KubernetesTarget
from flows.rollout.manifests import VERSION_ANNOTATION
from flows.store import ArtifactStore
from tests.k8s.emulator import EmulatedApiServer, EmulatedCluster

NS = "kiln-test"


@pytest.fixture
def emulator() -> Iterator[EmulatedApiServer]:
    with EmulatedApiServer(EmulatedCluster(polls_to_deadline=3)) as server:
        yield server


@pytest.fixture
def cluster(emulator: EmulatedApiServer) -> Iterator[KubernetesTarget]:
    configuration = client.Configuration(host=emulator.url)
    with client.ApiClient(configuration) as api_client:
        yield KubernetesTarget(
            api_client, namespace=NS, timeout=30, poll_interval=0.0, request_timeout=5
        )


AddVersion = Callable[[str], tuple[str, str]]


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
    # the smoke test went through the Service proxy: metadata, then a prediction
    assert ("GET", "/metadata") in state.proxied and ("POST", "/predict") in state.proxied
    assert (result.target, result.version, result.image) == (KUBERNETES, version, image)
    assert result.previous_version is None and not result.rolled_back
    assert result.endpoint.startswith(emulator.url)
    record = store.deployment(KUBERNETES)
    assert record is not None and (record.current, record.image) == (version, image)


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


def test_a_live_replica_count_set_by_the_hpa_is_kept(
    store: ArtifactStore,
    add_version: AddVersion,
    cluster: KubernetesTarget,
    emulator: EmulatedApiServer,
) -> None:
    old, _ = add_version("a")
    new, _ = add_version("b")
    roll_out(store, old, cluster)
    with emulator.cluster.lock:  # the HPA scaled the Deployment out
        emulator.cluster.objects[("Deployment", NS, "kiln")]["spec"]["replicas"] = 7

    roll_out(store, new, cluster)

    deployment = emulator.cluster.deployment(NS, "kiln")
    assert deployment["spec"]["replicas"] == 7
    assert deployment["status"]["availableReplicas"] == 7


def test_a_stuck_rollout_is_rolled_back_to_the_previous_image(
    store: ArtifactStore,
    add_version: AddVersion,
    cluster: KubernetesTarget,
    emulator: EmulatedApiServer,
) -> None:
    old, old_image = add_version("a")
    new, new_image = add_version("b")
    roll_out(store, old, cluster)
    emulator.cluster.fault(new_image, stuck=True)

    with pytest.raises(RolloutError, match="progress deadline exceeded") as caught:
        roll_out(store, new, cluster)

    assert f"rolled back to {old}" in str(caught.value)
    assert_restored(emulator, old, old_image)
    record = store.deployment(KUBERNETES)
    assert (record.current, record.image) == (old, old_image)


def test_a_rollout_that_never_finishes_times_out_and_is_rolled_back(
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

    assert f"rolled back to {old}" in str(caught.value)
    assert_restored(emulator, old, old_image)


def test_a_new_version_reporting_the_wrong_version_is_rolled_back(
    store: ArtifactStore,
    add_version: AddVersion,
    cluster: KubernetesTarget,
    emulator: EmulatedApiServer,
) -> None:
    old, old_image = add_version("a")
    new, new_image = add_version("b")
    roll_out(store, old, cluster)
    emulator.cluster.fault(new_image, metadata_version="something-else")

    with pytest.raises(RolloutError, match="reports version 'something-else'") as caught:
        roll_out(store, new, cluster)

    assert f"rolled back to {old}" in str(caught.value)
    assert_restored(emulator, old, old_image)
    assert store.deployment(KUBERNETES).current == old


def test_a_new_version_failing_predict_is_rolled_back(
    store: ArtifactStore,
    add_version: AddVersion,
    cluster: KubernetesTarget,
    emulator: EmulatedApiServer,
) -> None:
    old, old_image = add_version("a")
    new, new_image = add_version("b")
    roll_out(store, old, cluster)
    emulator.cluster.fault(new_image, predict_status=500)

    with pytest.raises(RolloutError, match=r"POST /predict answered 500"):
        roll_out(store, new, cluster)

    assert_restored(emulator, old, old_image)


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


def test_an_unreachable_api_server_is_a_rollout_error(
    store: ArtifactStore,
    add_version: AddVersion,
) -> None:
    version, _ = add_version("a")
    with EmulatedApiServer() as gone:
        url = gone.url  # a port that was just free and is closed again
    configuration = client.Configuration(host=url)
    configuration.retries = 0
    with client.ApiClient(configuration) as api_client:
        cluster = KubernetesTarget(
            api_client, namespace=NS, timeout=5, poll_interval=0.0, request_timeout=2
        )
        with pytest.raises(RolloutError, match="GET /apis/apps/v1"):
            roll_out(store, version, cluster)


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


def assert_restored(emulator: EmulatedApiServer, version: str, image: str) -> None:
    state = emulator.cluster
    deployment = state.deployment(NS, "kiln")
    template = deployment["spec"]["template"]
    assert template["spec"]["containers"][0]["image"] == image
    assert template["metadata"]["annotations"][VERSION_ANNOTATION] == version
    assert deployment["metadata"]["annotations"][VERSION_ANNOTATION] == version
    assert state.serving_image(NS, "kiln") == image
    status = deployment["status"]
    assert status["observedGeneration"] == deployment["metadata"]["generation"]
    replicas = deployment["spec"]["replicas"]
    assert status["updatedReplicas"] == status["availableReplicas"] == replicas
