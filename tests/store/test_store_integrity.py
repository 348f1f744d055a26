"""A corrupt model is never `latest` (issue 22, item 7), and nothing outside the store is
ever read, whatever links are put inside it (item 8)."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kiln.config.errors import IntegrityError, KilnError, StoreError, VersionNotFound
from kiln.store.artifact_store import ArtifactStore

LABELS = {0: "setosa", 1: "versicolor"}


def put_at(store: ArtifactStore, model: bytes, second: int) -> str:
    store.clock = lambda: datetime(2026, 12, 1, 0, 0, second, tzinfo=UTC)
    return store.put(model, LABELS, {"metrics": {"accuracy": 0.9, "f1_macro": 0.9}})


def flip_a_byte(store: ArtifactStore, version: str) -> None:
    path = f"{store.root}/versions/{version}/model.onnx"
    data = bytearray(store.fs.cat_file(path))
    data[len(data) // 2] ^= 0x01
    store.fs.pipe_file(path, bytes(data))


# -- 7: a corrupt model is never latest -------------------------------------------------------


def test_a_corrupt_model_is_never_latest(backend_store):
    store = backend_store
    older = put_at(store, b"older model" * 100, 1)
    newer = put_at(store, b"newer model" * 100, 2)
    assert store.resolve("latest") == newer
    flip_a_byte(store, newer)

    assert store.resolve("latest") == older
    assert store.get("latest").version == older
    versions, broken = store.scan(verify=True)
    assert [v.version for v in versions] == [older]
    assert [b.version for b in broken] == [newer]
    assert f"version {newer}: model.onnx has sha256" in broken[0].reason
    flip_a_byte(store, older)
    with pytest.raises(VersionNotFound, match="holds no intact versions"):
        store.resolve("latest")


def test_kiln_models_lists_a_corrupt_model_as_broken(tmp_path, kiln_cli):
    root = tmp_path / "store"
    store = ArtifactStore(root)
    older = put_at(store, b"older model" * 100, 1)
    newer = put_at(store, b"newer model" * 100, 2)
    flip_a_byte(store, newer)

    table = kiln_cli("models", store=root)
    assert table.returncode == 0, table.stderr
    assert f"corrupt {newer}: version {newer}: model.onnx has sha256" in table.stdout
    rows = json.loads(kiln_cli("models", "--json", store=root).stdout)
    assert [r["version"] for r in rows] == [older, newer]
    assert "model.onnx has sha256" in rows[1]["corrupt"] and "corrupt" not in rows[0]
    shown = json.loads(kiln_cli("models", "show", "latest", store=root).stdout)
    assert shown["version"] == older


# -- 8: no path outside the store is ever read ---------------------------------------------


@pytest.fixture
def linked_out(tmp_path):
    """A store whose one version folder was replaced by a link to a whole, valid copy of it
    outside the store: anything that follows the link would read a version from there."""
    root = tmp_path / "store"
    store = ArtifactStore(root)
    version = put_at(store, b"a model" * 100, 1)
    outside = tmp_path / "outside"
    shutil.copytree(root / "versions" / version, outside)
    shutil.rmtree(root / "versions" / version)
    os.symlink(outside, root / "versions" / version)
    return store, version, outside


def test_a_version_folder_linked_outside_is_never_read(linked_out):
    store, version, outside = linked_out
    for read in (store.get, store.metadata, store.resolve, store.lineage, store.image_refs):
        with pytest.raises(KilnError):
            read(version)
    assert store.exists(version) is False
    assert store.list_versions() == []
    _, broken = store.scan(verify=True)
    assert [(b.version, "symbolic link" in b.reason) for b in broken] == [(version, True)]
    with pytest.raises(KilnError):
        store.record_image(version, "127.0.0.1:5000/kiln/x@sha256:" + "a" * 64)
    assert sorted(p.name for p in outside.iterdir()) == [
        "labels.json",
        "lineage",
        "metadata.json",
        "model.onnx",
    ]
    with pytest.raises(VersionNotFound):
        store.get("latest")


def test_kiln_models_show_never_reads_a_linked_version(linked_out, kiln_cli):
    store, version, _ = linked_out
    shown = kiln_cli("models", "show", version, store=store.root)
    assert shown.returncode == 1
    assert shown.stdout == "" and "symbolic link" in shown.stderr
    listed = kiln_cli("models", store=store.root)
    assert f"corrupt {version}: its folder is a symbolic link" in listed.stdout


def test_links_to_files_outside_are_never_read(tmp_path):
    root = tmp_path / "store"
    store = ArtifactStore(root)
    version = put_at(store, b"a model" * 100, 1)
    store.record_deployment("local", version, "img")
    secret = tmp_path / "secret.txt"
    secret.write_text('{"target": "local"}')
    model = root / "versions" / version / "model.onnx"
    model.unlink()
    model.symlink_to(secret)
    with pytest.raises(IntegrityError, match="model.onnx"):
        store.get(version)
    record = root / "deployments" / "local.json"
    record.unlink()
    record.symlink_to(secret)
    with pytest.raises(StoreError, match="symbolic links"):
        store.deployment("local")
    # a link over the whole deployments folder is not followed either
    shutil.rmtree(root / "deployments")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "local.json").write_text(Path(secret).read_text())
    (root / "deployments").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StoreError, match="symbolic link"):
        store.deployments()
