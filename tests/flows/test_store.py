import hashlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from flows.errors import IntegrityError, StoreError, VersionNotFound
from flows.store import ArtifactStore

LABELS = {0: "setosa", 1: "versicolor", 2: "virginica"}


def put(store: ArtifactStore, model: bytes, **meta) -> str:
    return store.put(model, LABELS, {"metrics": {"accuracy": 1.0}, **meta})


@pytest.fixture(params=["local", "memory"])
def store(request, tmp_path):
    if request.param == "local":
        yield ArtifactStore(tmp_path / "store")
        return
    url = f"memory://kiln-{os.getpid()}-{id(tmp_path)}"
    yield ArtifactStore(url)
    import fsspec

    fsspec.filesystem("memory").rm(url.removeprefix("memory://"), recursive=True)


def test_put_then_get_round_trips_and_records_hashes(store):
    version = put(store, b"model-bytes")
    stored = store.get(version)
    assert stored.model_bytes == b"model-bytes"
    assert stored.labels == {"0": "setosa", "1": "versicolor", "2": "virginica"}
    assert stored.metadata["version"] == version
    assert stored.metadata["model_sha256"] == hashlib.sha256(b"model-bytes").hexdigest()
    assert stored.metadata["created"].endswith("Z")


def test_same_model_twice_is_one_version(store):
    first = put(store, b"same")
    second = put(store, b"same", note="stored again")
    assert first == second
    assert [v.version for v in store.list_versions()] == [first]
    assert "note" not in store.get(first).metadata  # the first write stands
    assert put(store, b"other") != first


def test_versions_resolve_by_prefix_and_latest(store):
    version = put(store, b"one")
    assert store.resolve(version[:5]) == version
    assert store.resolve("latest") == version
    with pytest.raises(VersionNotFound, match="no version 'zzz'"):
        store.get("zzz")


def test_tampered_files_are_refused(tmp_path):
    store = ArtifactStore(tmp_path)
    version = put(store, b"model")
    model_path = tmp_path / "versions" / version / "model.onnx"
    model_path.write_bytes(b"mod3l")
    with pytest.raises(IntegrityError, match=rf"version {version}: model.onnx has sha256"):
        store.get(version)
    with pytest.raises(IntegrityError):
        store.export_version(version, tmp_path / "out")
    assert not (tmp_path / "out" / "model.onnx").exists()
    model_path.write_bytes(b"model")
    (tmp_path / "versions" / version / "labels.json").write_text('{"0": "x"}')
    with pytest.raises(IntegrityError, match="labels.json"):
        store.get(version)


def test_export_version_writes_the_three_files(tmp_path):
    store = ArtifactStore(tmp_path / "s")
    version = put(store, b"model")
    out = store.export_version(version, tmp_path / "out")
    assert (out / "model.onnx").read_bytes() == b"model"
    assert json.loads((out / "labels.json").read_text())["2"] == "virginica"
    assert json.loads((out / "metadata.json").read_text())["version"] == version


def test_images_pins_and_deployments(store):
    one, two, three = (put(store, m) for m in (b"1", b"2", b"3"))
    store.record_image(one, "127.0.0.1:5000/kiln/iris@sha256:aa")
    assert store.image_refs(one) == ["127.0.0.1:5000/kiln/iris@sha256:aa"]
    store.pin(two)
    assert store.pinned() == [two]
    first = store.record_deployment("local", one, "img-1")
    assert (first.current, first.previous) == (one, None)
    second = store.record_deployment("local", three, "img-3")
    assert (second.current, second.previous, second.previous_image) == (three, one, "img-1")
    # redeploying the current version keeps the rollback target
    again = store.record_deployment("local", three, "img-3")
    assert again.previous == one
    store.restore_deployment("local", first)
    assert store.deployment("local").current == one
    with pytest.raises(StoreError, match="invalid target"):
        store.deployment("../etc")


def test_prune_keeps_newest_pinned_deployed_and_rollback(tmp_path):
    store = ArtifactStore(tmp_path)
    versions = [put(store, f"m{i}".encode()) for i in range(7)]
    # created times have one-second resolution: order them explicitly, oldest first
    for age, version in enumerate(reversed(versions)):
        path = tmp_path / "versions" / version / "metadata.json"
        meta = json.loads(path.read_text())
        meta["created"] = f"2026-01-01T00:00:{59 - age:02d}Z"
        path.write_text(json.dumps(meta))
    oldest, second_oldest, third_oldest = versions[0], versions[1], versions[2]
    store.pin(oldest)
    store.record_deployment("prod", second_oldest, "i2")
    store.record_deployment("prod", third_oldest, "i3")  # second_oldest becomes rollback target

    planned = store.prune(keep=2, dry_run=True)
    assert len(store.list_versions()) == 7  # dry run removes nothing
    result = store.prune(keep=2)
    assert {i.version for i in result.removed} == {i.version for i in planned.removed}
    remaining = {v.version for v in store.list_versions()}
    assert remaining == {versions[6], versions[5], oldest, second_oldest, third_oldest}
    for info in result.removed:
        assert not (tmp_path / "versions" / info.version).exists()
    assert not [p for p in (tmp_path / "versions").iterdir() if p.name.startswith(".")]
    with pytest.raises(StoreError, match="keep must be at least 1"):
        store.prune(keep=0)
    with pytest.raises(StoreError, match=f"version {oldest} is pinned, deployed or a rollback"):
        store.remove_version(oldest)


KILLED_WRITER = textwrap.dedent(
    """
    import os, sys, time
    import flows.store as store_module

    stage, root, ready = sys.argv[1], sys.argv[2], sys.argv[3]
    real_fsync, real_rename = os.fsync, os.rename
    calls = {"fsync": 0}

    def hang():
        open(ready, "w").close()
        time.sleep(600)

    def fsync(fd):
        calls["fsync"] += 1
        real_fsync(fd)
        if stage == "after-first-file" and calls["fsync"] == 1:
            hang()

    def rename(src, dst):
        if stage == "before-rename":
            hang()
        real_rename(src, dst)

    store_module.os.fsync = fsync
    store_module.os.rename = rename
    store_module.ArtifactStore(root).put(b"x" * 1_000_000, {0: "a", 1: "b"}, {})
    """
)


@pytest.mark.parametrize("stage", ["after-first-file", "before-rename"])
def test_writer_killed_midway_leaves_no_partial_version(tmp_path, stage):
    root, ready = tmp_path / "store", tmp_path / "ready"
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, stage, str(root), str(ready)])
    try:
        for _ in range(600):
            if ready.exists() or writer.poll() is not None:
                break
            time.sleep(0.05)
        assert ready.exists(), "the writer never reached the point where it is killed"
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
    finally:
        writer.kill()
    store = ArtifactStore(root)
    assert store.list_versions() == []
    leftovers = [p.name for p in (root / "versions").iterdir()]
    assert leftovers and all(name.startswith(".staging-") for name in leftovers)
    # a later writer stores the same model whole, and stale staging can be cleaned
    version = store.put(b"x" * 1_000_000, {0: "a", 1: "b"}, {})
    assert store.get(version).model_bytes == b"x" * 1_000_000
    assert len(store.clean_staging(older_than_seconds=0)) == 1
    assert [p.name for p in (root / "versions").iterdir()] == [version]


def _store_many(root: str, seed: int) -> list[str]:
    store = ArtifactStore(root)
    # every writer stores one shared model and a few of its own
    models = [b"shared-model"] + [f"model-{seed}-{i}".encode() * 1000 for i in range(5)]
    return [store.put(m, {0: "a", 1: "b"}, {"writer": seed}) for m in models]


def test_concurrent_writers_lose_nothing(tmp_path):
    root = str(tmp_path / "store")
    with multiprocessing.get_context("spawn").Pool(6) as pool:
        results = pool.starmap(_store_many, [(root, seed) for seed in range(6)])
    expected = {v for versions in results for v in versions}
    assert len(expected) == 1 + 6 * 5
    store = ArtifactStore(root)
    assert {v.version for v in store.list_versions()} == expected
    for version in expected:
        store.get(version)  # every version reads back whole and verified
    assert not [p for p in Path(root, "versions").iterdir() if p.name.startswith(".")]
