"""The store against tampering, corrupt metadata, re-stores and shared use.

The contract cases run on a local folder and on a real S3 server (SeaweedFS) through the
`backend_store` fixture; they tamper with the files through `StorePath`, a small stand-in for
pathlib over the store's own filesystem. Links and permissions are a local folder's alone."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from pathlib import Path

import pytest

from kiln.config.errors import IntegrityError, StoreError
from kiln.store.artifact_store import ArtifactStore
from kiln.store.schema import CorruptVersion
from tests.support.stores import store_url

LABELS = {0: "setosa", 1: "versicolor"}


def put(store: ArtifactStore, model: bytes, **meta) -> str:
    return store.put(model, LABELS, {"metrics": {"accuracy": 0.97}, **meta})


class StorePath:
    """A file or folder in a store, with the few pathlib calls these tests use."""

    def __init__(self, store: ArtifactStore, relative: str) -> None:
        self.store, self.relative = store, relative
        self.full = f"{store.root}/{relative}"
        self.name = relative.rsplit("/", 1)[-1]

    def __truediv__(self, name: str) -> StorePath:
        return StorePath(self.store, f"{self.relative}/{name}")

    def read_text(self) -> str:
        return self.store.fs.cat_file(self.full).decode()

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode())

    def write_bytes(self, data: bytes) -> None:
        self.store.fs.makedirs(self.full.rsplit("/", 1)[0], exist_ok=True)
        self.store.fs.pipe_file(self.full, data)

    def exists(self) -> bool:
        return bool(self.store.fs.exists(self.full))

    def unlink(self) -> None:
        self.store.fs.rm_file(self.full)

    def symlink_to(self, target: str) -> None:
        if not self.store._local:
            pytest.skip("an object store has no links")
        Path(self.full).symlink_to(target)


def metadata_path(store: ArtifactStore, version: str) -> StorePath:
    return StorePath(store, f"versions/{version}/metadata.json")


# -- 6: the id is recomputed from content ---------------------------------------------------


def test_a_swapped_model_with_a_matching_sha256_is_refused_under_the_old_id(
    backend_store, tmp_path, kiln_cli
):
    store = backend_store
    version = put(store, b"the real model")
    folder = StorePath(store, f"versions/{version}")
    (folder / "model.onnx").write_bytes(b"an impostor")
    meta = json.loads((folder / "metadata.json").read_text())
    meta["model_sha256"] = hashlib.sha256(b"an impostor").hexdigest()
    (folder / "metadata.json").write_text(json.dumps(meta))

    with pytest.raises(IntegrityError, match=rf"version {version}: its model and labels hash"):
        store.get(version)
    with pytest.raises(IntegrityError):
        store.export_version(version, tmp_path / "out")
    assert not (tmp_path / "out" / "model.onnx").exists()
    shown = kiln_cli("models", "show", version, store=store.url)
    assert shown.returncode == 1 and "hash to version" in shown.stderr
    assert "Traceback" not in shown.stderr


def test_metadata_naming_another_version_is_corrupt(backend_store):
    store = backend_store
    one, two = put(store, b"one"), put(store, b"two")
    meta = json.loads(metadata_path(store, two).read_text())
    meta["version"] = one
    metadata_path(store, two).write_text(json.dumps(meta))
    with pytest.raises(CorruptVersion, match=f"names version '{one}'"):
        store.metadata(two)


# -- 7: corrupt metadata is reported, and skipped by everything else --------------------------


def _break(path: StorePath, how: str) -> str:
    meta = json.loads(path.read_text())
    if how == "not json":
        path.write_text("{ oops")
        return "is not JSON"
    if how == "a list":
        path.write_text("[1, 2]")
        return "holds a list, not an object"
    if how == "unreadable":
        path.unlink()
        path.symlink_to(path.name)  # a link to itself: reading fails (root ignores a 000 mode)
        return "cannot read metadata.json: [Errno 40] Too many levels of symbolic links"
    if how == "no model_sha256":
        del meta["model_sha256"]
        message = "model_sha256: Field required"
    elif how == "metrics a list":
        meta["metrics"] = [0.9]
        message = "metrics: Input should be a valid dictionary"
    elif how == "integer created":
        meta["created"] = 1764355200
        message = "created: Input should be a valid string"
    elif how == "accuracy a string":
        meta["metrics"]["accuracy"] = "high"
        message = "metrics.accuracy: Input should be a valid number"
    else:
        raise AssertionError(how)
    path.write_text(json.dumps(meta))
    return message


CORRUPTIONS = [
    "not json",
    "a list",
    "unreadable",
    "no model_sha256",
    "metrics a list",
    "integer created",
    "accuracy a string",
]


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_one_corrupt_version_is_reported_and_skipped(backend_store, how):
    store = backend_store
    old = put(store, b"old")
    bad = put(store, b"bad")
    good = put(store, b"good")
    message = _break(metadata_path(store, bad), how)

    versions, broken = store.scan()
    assert sorted(v.version for v in versions) == sorted([good, old])
    assert [b.version for b in broken] == [bad]
    assert message in broken[0].reason
    assert store.resolve("latest") in {good, old}  # stored within one second: either
    with pytest.raises(CorruptVersion, match=f"version {bad}"):
        store.get(bad)

    pruned = store.prune(keep=1)
    assert len(pruned.removed) == 1 and pruned.removed[0].version in {good, old}
    assert StorePath(store, f"versions/{bad}").exists()  # never deleted as a side effect


def test_kiln_models_lists_corrupt_versions_with_the_reason(backend_store, kiln_cli):
    store = backend_store
    good = put(store, b"good")
    bad = put(store, b"bad")
    _break(metadata_path(store, bad), "no model_sha256")

    table = kiln_cli("models", store=store.url)
    assert table.returncode == 0, table.stderr
    assert f"corrupt {bad}:" in table.stdout and "model_sha256: Field required" in table.stdout
    assert good in table.stdout
    rows = json.loads(kiln_cli("models", "--json", store=store.url).stdout)
    assert [r["version"] for r in rows] == [good, bad]
    assert "model_sha256" in rows[1]["corrupt"] and "corrupt" not in rows[0]
    pruned = kiln_cli("prune", "--keep", "1", "--dry-run", store=store.url)
    assert pruned.returncode == 0 and "would remove 0 version(s)" in pruned.stdout


def test_metadata_is_validated_before_it_is_written(backend_store):
    store = backend_store
    with pytest.raises(StoreError, match="data_rows: Input should be a valid integer"):
        store.put(b"m", LABELS, {"data_rows": "many"})
    assert store.scan() == ([], [])
    assert not StorePath(store, "versions").exists()  # nothing half-written


def test_a_corrupt_deployment_record_is_one_clear_error(backend_store):
    store = backend_store
    StorePath(store, "deployments/local.json").write_text('{"target": "local"}')
    with pytest.raises(
        StoreError, match="deployment record 'local' of model 'model' is unreadable"
    ):
        store.deployments()


def test_secrets_in_a_recorded_source_are_masked_on_write_and_read(backend_store, tmp_path):
    store = backend_store
    version = put(store, b"m", data_source="https://u:pw@host/d.csv?token=t")
    on_disk = metadata_path(store, version).read_text()
    assert "pw" not in on_disk and "token=t" not in on_disk
    # A version stored before masking existed is masked when it is read.
    meta = json.loads(on_disk)
    meta["data_source"] = "https://u:pw@host/d.csv?token=t"
    metadata_path(store, version).write_text(json.dumps(meta))
    assert store.get(version).metadata["data_source"] == "https://***@host/d.csv?token=***"
    exported = store.export_version(version, tmp_path / "image-dir")
    assert "pw" not in (exported / "metadata.json").read_text()


# -- 9: a re-store records its lineage and renews the version's age ----------------------------


@pytest.fixture(params=["local", "memory", "s3"])
def any_store(request, tmp_path):
    if request.param != "memory":
        yield ArtifactStore(store_url(request.param, request, tmp_path))
        return
    import fsspec

    url = f"memory://kiln-hardening-{os.getpid()}-{id(tmp_path)}"
    yield ArtifactStore(url)
    fsspec.filesystem("memory").rm(url.removeprefix("memory://"), recursive=True)


def test_restoring_records_new_lineage_and_renews_age(any_store):
    store = any_store
    first = dict(data_source="a.csv", data_hash="1" * 64, feature_names=["x", "y"])
    again = dict(data_source="b.csv", data_hash="2" * 64, feature_names=["u", "v"])
    model = put(store, b"same model", **first)
    time.sleep(1.1)  # `created` has one-second resolution
    other = put(store, b"another model")
    assert [v.version for v in store.list_versions()] == [other, model]

    assert put(store, b"same model", **again) == model
    lineage = store.lineage(model)
    assert [r["data_source"] for r in lineage] == ["a.csv", "b.csv"]
    assert lineage[1]["data_hash"] == "2" * 64 and lineage[1]["feature_names"] == ["u", "v"]
    assert lineage[0]["stored"] < lineage[1]["stored"]
    assert store.metadata(model)["data_source"] == "a.csv"  # metadata.json is never rewritten

    assert [v.version for v in store.list_versions()] == [model, other]
    assert store.resolve("latest") == model
    pruned = store.prune(keep=1)
    assert [v.version for v in pruned.removed] == [other]
    assert store.exists(model)


def test_kiln_models_show_includes_lineage(backend_store, kiln_cli):
    store = backend_store
    version = put(store, b"m", data_source="one.csv")
    put(store, b"m", data_source="two.csv")
    shown = json.loads(kiln_cli("models", "show", version, store=store.url).stdout)
    assert [r["data_source"] for r in shown["lineage"]] == ["one.csv", "two.csv"]


# -- 10: permissions follow the umask; a setgid root shares its group ------------------------


def _modes(root: Path) -> dict[str, int]:
    found = {}
    for path in [root, *root.rglob("*")]:
        found[str(path.relative_to(root))] = stat.S_IMODE(path.stat().st_mode)
    return found


def _use_the_store(store: ArtifactStore) -> None:
    version = put(store, b"model")
    put(store, b"model", data_source="again.csv")
    store.record_image(version, "127.0.0.1:5000/kiln/iris@sha256:" + "a" * 64)
    store.pin(version)
    store.record_deployment("local", version, "127.0.0.1:5000/kiln/iris@sha256:" + "a" * 64)


@pytest.mark.parametrize(
    ("umask", "root_mode", "dir_mode", "file_mode"),
    [(0o022, 0o755, 0o755, 0o644), (0o007, 0o2770, 0o2770, 0o660)],
    ids=["umask-022", "umask-007-setgid-root"],
)
def test_everything_the_store_creates_follows_the_umask(
    tmp_path, umask, root_mode, dir_mode, file_mode
):
    root = tmp_path / "shared"
    root.mkdir()
    os.chmod(root, root_mode)
    previous = os.umask(umask)
    try:
        _use_the_store(ArtifactStore(root))
    finally:
        os.umask(previous)
    modes = _modes(root)
    wrong = {}
    for name, mode in modes.items():
        want = dir_mode if (root / name).is_dir() else file_mode
        if mode != want:
            wrong[name] = oct(mode)
    assert not wrong, f"expected dirs {oct(dir_mode)}, files {oct(file_mode)}: {wrong}"
    assert any(name.startswith("deployments/") for name in modes)
    assert any("/lineage/" in name for name in modes)


def test_a_setgid_root_passes_its_group_down(tmp_path):
    if os.getuid() != 0:
        pytest.skip("changing a folder's group to one the user is not in needs root")
    root = tmp_path / "shared"
    root.mkdir()
    group = 4242  # any group id: root may give a folder any group
    os.chown(root, -1, group)
    os.chmod(root, 0o2770)
    previous = os.umask(0o007)
    try:
        _use_the_store(ArtifactStore(root))
    finally:
        os.umask(previous)
    groups = {str(p.relative_to(root)): p.stat().st_gid for p in root.rglob("*")}
    assert set(groups.values()) == {group}, groups


def test_metadata_keeps_keys_the_schema_does_not_name(backend_store):
    """Metadata grows without a migration (bring-your-own-model adds task, schema,
    estimator): unknown keys are stored and read back as they are."""
    store = backend_store
    extra = {
        "task": "classification",
        "schema": {"inputs": [{"name": "region", "type": "string"}]},
        "estimator": {"class": "sklearn.linear_model.LogisticRegression", "params": {"C": 1}},
    }
    version = put(store, b"m", **extra)
    assert {k: store.get(version).metadata[k] for k in extra} == extra
    assert store.scan(verify=True)[1] == []
