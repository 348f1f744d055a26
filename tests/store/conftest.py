"""The store contract runs against every back end: `store` is a local folder, fsspec's memory
filesystem and a real S3 server (SeaweedFS); `shared_url` a folder or an S3 prefix that
several processes can open; `backend_store` the two real back ends alone."""

from __future__ import annotations

import pytest

from kiln.store.artifact_store import ArtifactStore
from tests.support.stores import store_url


@pytest.fixture(params=["local", "memory", "s3"])
def store(request, tmp_path):
    the_store = ArtifactStore(store_url(request.param, request, tmp_path))
    yield the_store
    if request.param == "memory":
        the_store.fs.rm(the_store.root, recursive=True)


@pytest.fixture(params=["local", "s3"])
def shared_url(request, tmp_path):
    """A store URL several processes can open: a folder or an S3 prefix."""
    return store_url(request.param, request, tmp_path)


@pytest.fixture(params=["local", "s3"])
def backend_store(request, tmp_path):
    """A fresh store on each real back end: a local folder and SeaweedFS's S3."""
    return ArtifactStore(store_url(request.param, request, tmp_path))
