"""Fixtures for the Kubernetes tests: an artifact store with shipped-looking versions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from flows.store import ArtifactStore

SAMPLE_INPUT = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


@pytest.fixture
def add_version(store: ArtifactStore) -> Callable[[str], tuple[str, str]]:
    """Store a model (its bytes are only a label here) and record an image for it."""

    def add(name: str) -> tuple[str, str]:
        version = store.put(
            f"model {name}".encode(),
            {0: "setosa", 1: "virginica"},
            {"sample_input": SAMPLE_INPUT},
        )
        image = f"127.0.0.1:5000/kiln/iris@sha256:{version[:16].ljust(64, '0')}"
        store.record_image(version, image)
        return version, image

    return add
