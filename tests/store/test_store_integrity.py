"""A corrupt model is never `latest` (issue 22, item 7)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from kiln.config.errors import VersionNotFound
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
