"""A store and a prune of the same version, racing (issue 22, item 6).

Storing a model that is already stored adds a lineage record beside it; a prune landing
between the check and the record used to leave `versions/<id>/` holding only that record,
which blocked every later store of the model ("Directory not empty") and which neither
`kiln models` nor `kiln prune` saw.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import time
from pathlib import Path

import pytest

from kiln.config.errors import KilnError, VersionNotFound
from kiln.store.artifact_store import ArtifactStore, encode_labels, version_id
from kiln.store.layout import TOMBSTONE
from tests.support.stores import files_under, store_url

LABELS = {0: "setosa", 1: "versicolor"}
MODEL = b"raced model" * 1000
RACE_SECONDS = 4.0  # both loops run this long, from one start time


def _begin(start: float) -> float:
    """Wait for the common start; a process that arrives late (a loaded machine) still
    runs its whole loop, so the two overlap for most of it."""
    time.sleep(max(0.0, start - time.time()))
    return max(start, time.time())


def _store_repeatedly(url: str, start: float) -> list[str]:
    store = ArtifactStore(url)
    errors = []
    end = _begin(start) + RACE_SECONDS
    while time.time() < end:
        try:
            store.put(MODEL, LABELS, {"data_source": "again.csv"})
        except KilnError as err:
            errors.append(str(err))
    return errors


def _remove_repeatedly(url: str, version: str, start: float) -> int:
    store = ArtifactStore(url)
    removed = 0
    end = _begin(start) + RACE_SECONDS
    while time.time() < end:
        try:
            store.remove_version(version)
            removed += 1
        except (KilnError, FileNotFoundError):
            pass  # not stored at this moment
    return removed


def _visible_versions_are_whole(store: ArtifactStore) -> None:
    versions, broken = store.scan()
    assert broken == [], broken
    for info in versions:
        with contextlib.suppress(VersionNotFound):  # removed since the listing: gone whole
            assert store.get(info.version).model_bytes == MODEL


def test_a_store_racing_a_prune_never_leaves_a_partial_version(shared_url):
    store = ArtifactStore(shared_url)
    version = store.put(MODEL, LABELS, {})
    start = time.time() + 3  # both processes have imported and opened the store by then
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        stored = pool.apply_async(_store_repeatedly, (shared_url, start))
        pruned = pool.apply_async(_remove_repeatedly, (shared_url, version, start))
        while not (stored.ready() and pruned.ready()):
            _visible_versions_are_whole(store)
            time.sleep(0.01)
        errors, removed = stored.get(), pruned.get()
    assert errors == []
    assert removed > 0, "the prune never removed the version: no race was run"
    _visible_versions_are_whole(store)
    if store._local:  # every version folder is a whole version (staging lives elsewhere)
        folders = [p for p in Path(store.root, "versions").iterdir() if p.name[0] != "."]
        assert all((p / "metadata.json").exists() for p in folders), folders
    # and the model stores and reads back whole afterwards
    assert store.put(MODEL, LABELS, {}) == version
    assert store.get(version).model_bytes == MODEL


def _leave_lineage_only(store: ArtifactStore, model: bytes) -> str:
    """What the race used to leave: the version's folder with one lineage record in it."""
    version = version_id(model, encode_labels(LABELS))
    record = json.dumps({"stored": "2026-12-01T00:00:00.000000Z"}).encode()
    path = f"{store.root}/versions/{version}/lineage/20261201T000000.000000Z-abcd1234.json"
    store.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    store.fs.pipe_file(path, record)
    return version


def test_a_leftover_version_folder_never_blocks_storing_the_model(backend_store):
    store = backend_store
    version = _leave_lineage_only(store, MODEL)
    assert store.list_versions() == []
    assert store.put(MODEL, LABELS, {}) == version  # was: Directory not empty, for good
    assert store.get(version).model_bytes == MODEL
    assert [v.version for v in store.list_versions()] == [version]


def test_a_leftover_is_reported_and_cleared(backend_store):
    store = backend_store
    good = store.put(b"good model", LABELS, {})
    leftover = _leave_lineage_only(store, MODEL)
    # An object store fills a version in place, so a young uncommitted folder may be a writer
    # at work: it counts as a leftover once it is old (here: older than 0 s).
    if store._local:
        versions, broken = store.scan()
        assert [v.version for v in versions] == [good]
        assert [(b.version, b.kind) for b in broken] == [(leftover, "incomplete")]
    assert store.clean_staging(older_than_seconds=0)
    assert files_under(store, f"versions/{leftover}") == []
    assert store.scan() == (store.list_versions(), [])
    assert store.get(good).model_bytes == b"good model"


def test_kiln_models_reports_a_leftover_and_kiln_prune_clears_it(tmp_path, kiln_cli):
    root = tmp_path / "store"
    store = ArtifactStore(root)
    good = store.put(b"good model", LABELS, {"metrics": {"accuracy": 0.9, "f1_macro": 0.9}})
    leftover = _leave_lineage_only(store, MODEL)

    listed = kiln_cli("models", store=root)
    assert listed.returncode == 0, listed.stderr
    assert f"incomplete {leftover}:" in listed.stdout and "kiln prune" in listed.stdout
    rows = json.loads(kiln_cli("models", "--json", store=root).stdout)
    assert [r["version"] for r in rows] == [good, leftover]
    assert "incomplete" in rows[1]

    pruned = kiln_cli("prune", "--keep", "1", store=root, env={"KILN_REGISTRY": "127.0.0.1:9"})
    assert pruned.returncode == 0, pruned.stderr
    assert f"removed leftover {root}/versions/{leftover}" in pruned.stdout
    assert not (root / "versions" / leftover).exists()
    assert f"incomplete {leftover}" not in kiln_cli("models", store=root).stdout


def test_an_interrupted_removal_on_s3_is_never_listed_and_is_finished_by_the_clean_up(
    seaweedfs, request, tmp_path
):
    store = ArtifactStore(store_url("s3", request, tmp_path))
    kept = store.put(b"kept model", LABELS, {})
    version = store.put(MODEL, LABELS, {})
    # What a remover killed after its tombstone and the model's deletion leaves.
    directory = f"{store.root}/versions/{version}"
    store.fs.pipe_file(f"{directory}/metadata.json", TOMBSTONE)
    store.fs.rm_file(f"{directory}/model.onnx")
    assert [v.version for v in store.list_versions()] == [kept]
    assert store.scan(verify=True)[1] == []
    with pytest.raises(VersionNotFound, match="being removed"):
        store.get(version)
    assert store.clean_staging(older_than_seconds=0) == [directory]
    assert files_under(store, f"versions/{version}") == []
    assert store.put(MODEL, LABELS, {}) == version  # and the model stores whole again
    assert store.get(version).model_bytes == MODEL
