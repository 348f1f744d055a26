"""The Kubernetes rollout scenarios against a REAL cluster (marked `cluster`).

They run only when KUBECONFIG points at a cluster, and need a store holding two
versions whose images the cluster can pull:

    KUBECONFIG=~/.kube/config KILN_TEST_STORE=artifacts \\
    KILN_TEST_VERSIONS=<old>,<new> pytest -m cluster tests/rollout/kubernetes/test_cluster.py

Each test works in a fresh namespace it creates (KILN_K8S_CREATE_NAMESPACE's path, so the
credentials need `create namespaces`) and deletes afterwards. Scenarios, as on the
emulator: ship then upgrade; a version whose image cannot be pulled stops at the candidate
(progress deadline) and the main Deployment keeps the old image; a version reporting the
wrong /metadata fails its candidate smoke test, the same. Where no cluster can run (as
on kiln's CI machines) they are skipped; tests/rollout/kubernetes/test_rollout_emulated.py
runs the same scenarios against the emulated API server.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from kiln.config.errors import RolloutError
from kiln.rollout import KUBERNETES, roll_out
from kiln.rollout.kubernetes.api import make_api_client
from kiln.rollout.kubernetes.manifests import MANIFEST_DIR
from kiln.rollout.kubernetes.target import KubernetesTarget
from kiln.store.artifact_store import ArtifactStore

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        not os.environ.get("KUBECONFIG"),
        reason="KUBECONFIG is not set: no real Kubernetes cluster to run against here "
        "(the same scenarios run against the emulated API server in test_rollout_emulated.py)",
    ),
    pytest.mark.skipif(
        not (os.environ.get("KILN_TEST_STORE") and os.environ.get("KILN_TEST_VERSIONS")),
        reason="KILN_TEST_STORE and KILN_TEST_VERSIONS=<old>,<new> must name two stored "
        "versions with images the cluster can pull",
    ),
]


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    """A copy of the test store, so deployment records do not touch the real one."""
    copy = tmp_path / "store"
    shutil.copytree(os.environ["KILN_TEST_STORE"], copy)
    return ArtifactStore(copy)


@pytest.fixture
def versions(store: ArtifactStore) -> tuple[str, str]:
    old, new = os.environ["KILN_TEST_VERSIONS"].split(",")
    return store.resolve(old), store.resolve(new)


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    """The base with a short progress deadline, so a stuck rollout is judged quickly."""
    out = tmp_path / "k8s"
    shutil.copytree(MANIFEST_DIR, out)
    deployment = yaml.safe_load((out / "deployment.yaml").read_text())
    deployment["spec"]["progressDeadlineSeconds"] = 30
    (out / "deployment.yaml").write_text(yaml.safe_dump(deployment))
    return out


@pytest.fixture
def cluster(manifests: Path) -> Iterator[KubernetesTarget]:
    namespace = f"kiln-test-{uuid.uuid4().hex[:8]}"
    api_client = make_api_client(context=os.environ.get("KILN_K8S_CONTEXT"))
    try:
        yield KubernetesTarget(
            api_client,
            namespace=namespace,
            timeout=300,
            poll_interval=2.0,
            manifest_dir=manifests,
            create_namespace=True,
        )
    finally:
        client.CoreV1Api(api_client).delete_namespace(namespace)
        api_client.close()


def image_of(store: ArtifactStore, version: str) -> str:
    return next(ref for ref in store.image_refs(version) if "@sha256:" in ref)


def live_image(cluster: KubernetesTarget) -> str | None:
    live = cluster.current()
    return live.image if live else None


def test_rollout_then_upgrade(store, versions, cluster, manifests) -> None:
    old, new = versions
    roll_out(store, old, cluster)
    result = roll_out(store, new, cluster)
    assert result.previous_version == old
    assert live_image(cluster) == image_of(store, new)
    assert store.deployment(KUBERNETES).current == new
    # The endpoint kiln reports answers as the new version (the Service, through the API
    # server with the kubeconfig's credentials, as `kubectl proxy` would lend them).
    path = result.endpoint.removeprefix(cluster.api.host)
    reply = cluster.api.raw("GET", f"{path}/metadata", None)
    assert reply.status == 200 and reply.json()["version"] == new


def test_stuck_rollout_is_rolled_back(store, versions, cluster, manifests) -> None:
    old, new = versions
    roll_out(store, old, cluster)
    missing = image_of(store, new).split("@")[0] + "@sha256:" + "0" * 64  # never pullable
    with pytest.raises(RolloutError, match="progress deadline exceeded"):
        roll_out(store, new, cluster, image=missing)
    assert live_image(cluster) == image_of(store, old)


def test_failed_smoke_test_is_rolled_back(store, versions, cluster, manifests) -> None:
    old, new = versions
    roll_out(store, old, cluster)
    # new's version id with old's image: the pods run fine but /metadata reports old
    with pytest.raises(RolloutError, match="reports version"):
        roll_out(store, new, cluster, image=image_of(store, old))
    assert live_image(cluster) == image_of(store, old)
