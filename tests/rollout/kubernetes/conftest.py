"""Fixtures for the Kubernetes tests: an emulated cluster and versions shipped into it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client

from kiln.rollout.kubernetes.target import KubernetesTarget
from kiln.store.artifact_store import ArtifactStore
from tests.support.k8s_emulator import ENFORCE_LABEL, EmulatedApiServer, EmulatedCluster

SAMPLE_INPUT = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
NS = "kiln-test"

AddVersion = Callable[[str], tuple[str, str]]


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


@pytest.fixture
def emulator() -> Iterator[EmulatedApiServer]:
    """An emulated cluster with the namespace a cluster admin made (restricted pods)."""
    with EmulatedApiServer(EmulatedCluster(polls_to_deadline=3)) as server:
        server.cluster.add_namespace(NS, {ENFORCE_LABEL: "restricted"})
        yield server


@pytest.fixture
def cluster(emulator: EmulatedApiServer) -> Iterator[KubernetesTarget]:
    configuration = client.Configuration(host=emulator.url)
    with client.ApiClient(configuration) as api_client:
        yield KubernetesTarget(
            api_client, namespace=NS, timeout=30, poll_interval=0.0, request_timeout=5
        )


@pytest.fixture
def add_version(store: ArtifactStore, emulator: EmulatedApiServer) -> AddVersion:
    """Store a model (its bytes are only a label here), record its image, push that image."""

    def add(name: str) -> tuple[str, str]:
        version = store.put(
            f"model {name}".encode(),
            {0: "setosa", 1: "virginica"},
            {"sample_input": SAMPLE_INPUT},
        )
        image = f"127.0.0.1:5000/kiln/iris@sha256:{version[:16].ljust(64, '0')}"
        store.record_image(version, image)
        emulator.cluster.push(image, version)
        return version, image

    return add
