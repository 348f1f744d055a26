"""Stores for the store contract suite: a local folder, fsspec's memory filesystem, or a
prefix of its own on the session's real SeaweedFS S3 server."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from kiln.store.artifact_store import ArtifactStore


def store_url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store of this kind."""
    if kind == "local":
        return str(tmp_path / "store")
    if kind == "memory":
        return f"memory://kiln-{os.getpid()}-{uuid.uuid4().hex}"
    server = request.getfixturevalue("seaweedfs")
    return f"s3://{server.bucket}/test-{uuid.uuid4().hex[:12]}"


def files_under(store: ArtifactStore, path: str) -> list[str]:
    """Objects below a path (an emptied S3 prefix can linger in listings as a folder)."""
    found = store.fs.find(f"{store.root}/{path}", detail=True).items()
    return [name for name, info in found if info.get("type") == "file"]
