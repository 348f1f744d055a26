"""Model names in one store: versions shared by content, everything else per name; and a
store an earlier kiln wrote, read as the default name's with nothing lost."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kiln.config.errors import SettingsError, StoreError, VersionNotFound
from kiln.config.names import DEFAULT_NAME
from kiln.store.artifact_store import ArtifactStore

FIXTURE = Path(__file__).parent / "fixtures" / "before-names"
LABELS = {0: "no", 1: "yes"}


class Clock:
    """A store clock that moves one minute a call: stores order by it, never by chance."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 8, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "store", clock=Clock())


def put(store: ArtifactStore, name: str, model: bytes) -> str:
    return store.named(name).put(model, LABELS, {"metrics": {"accuracy": 0.9}})


def test_each_name_lists_its_own_versions_and_its_own_latest(store: ArtifactStore) -> None:
    iris = [put(store, "iris", b"iris 1"), put(store, "iris", b"iris 2")]
    wine = put(store, "wine", b"wine 1")  # stored last: the newest of the store
    assert [v.version for v in store.named("iris").list_versions()] == iris[::-1]
    assert [v.version for v in store.named("wine").list_versions()] == [wine]
    assert store.named("iris").resolve("latest") == iris[1]
    assert store.named("wine").get("latest").version == wine
    assert store.named(DEFAULT_NAME).list_versions() == []
    with pytest.raises(VersionNotFound, match="no versions of model 'model'"):
        store.resolve("latest")
    assert store.names() == sorted([DEFAULT_NAME, "iris", "wine"])


def test_the_same_model_under_two_names_is_stored_once_and_listed_under_both(
    store: ArtifactStore, tmp_path: Path
) -> None:
    first = put(store, "iris", b"shared")
    later = put(store, "iris", b"iris only")
    again = put(store, "wine", b"shared")
    assert again == first
    assert len(list((tmp_path / "store" / "versions").iterdir())) == 2
    (info,) = [v for v in store.scan(every_name=True)[0] if v.version == first]
    assert info.names == ("iris", "wine")
    # wine's store renews the version for wine only: iris's newest stays its own
    assert store.named("iris").resolve("latest") == later
    assert store.named("wine").resolve("latest") == first


def test_a_version_of_another_name_is_refused_where_the_name_matters(
    store: ArtifactStore,
) -> None:
    iris = put(store, "iris", b"iris 1")
    with pytest.raises(VersionNotFound, match="not a version of model 'wine'.*stored as iris"):
        store.named("wine").resolve_own(iris)
    with pytest.raises(VersionNotFound, match="not a version of model 'wine'"):
        store.named("wine").pin(iris)
    assert store.named("wine").resolve(iris) == iris  # ids stay global for reading


def test_pins_and_deployment_records_are_per_name(store: ArtifactStore) -> None:
    iris, wine = put(store, "iris", b"iris 1"), put(store, "wine", b"wine 1")
    store.named("iris").pin(iris)
    store.named("iris").record_deployment("local", iris, "r/kiln/iris@sha256:1", "http://x:1")
    store.named("wine").record_deployment("local", wine, "r/kiln/wine@sha256:2", "http://x:2")
    assert store.named("iris").pinned() == [iris] and store.named("wine").pinned() == []
    iris_record = store.named("iris").deployment("local")
    wine_record = store.named("wine").deployment("local")
    assert iris_record is not None and wine_record is not None
    assert (iris_record.current, iris_record.name, iris_record.endpoint) == (
        iris,
        "iris",
        "http://x:1",
    )
    assert (wine_record.current, wine_record.name) == (wine, "wine")
    assert store.deployment("local") is None  # the default name deployed nothing
    everything = store.every_deployment()
    assert [(d.name, d.current) for d in everything] == [("iris", iris), ("wine", wine)]
    assert store.protected() == {iris, wine}


def test_prune_keeps_n_of_each_name_and_what_any_name_needs(store: ArtifactStore) -> None:
    iris = [put(store, "iris", f"iris {i}".encode()) for i in range(3)]
    wine = [put(store, "wine", f"wine {i}".encode()) for i in range(3)]
    store.named("wine").record_deployment("local", wine[0], "r/kiln/wine@sha256:0")
    shared = put(store, "iris", b"wine 1")  # wine's second, stored again as iris's newest
    assert shared == wine[1]

    result = store.prune(1, every_name=True)
    left = {v.version for v in store.scan(every_name=True)[0]}
    # iris keeps its newest (the shared one); wine keeps its newest and what it deploys
    assert left == {shared, wine[2], wine[0]}
    assert {v.version for v in result.removed} == set(iris)


def test_prune_of_one_name_leaves_the_others_alone(store: ArtifactStore) -> None:
    iris = [put(store, "iris", f"iris {i}".encode()) for i in range(3)]
    wine = [put(store, "wine", f"wine {i}".encode()) for i in range(3)]
    removed = store.named("iris").prune(1)
    assert sorted(v.version for v in removed.removed) == sorted(iris[:2])
    assert [v.version for v in store.named("wine").list_versions()] == wine[::-1]


def test_a_name_that_is_no_dns_label_is_refused_before_anything_is_written(
    store: ArtifactStore, tmp_path: Path
) -> None:
    with pytest.raises(SettingsError, match="'Wine_1' is not usable"):
        store.named("Wine_1")
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").iterdir())


def test_a_store_written_before_names_is_the_default_names_with_nothing_lost(
    tmp_path: Path,
) -> None:
    shutil.copytree(FIXTURE, tmp_path / "old")
    store = ArtifactStore(tmp_path / "old")
    a, b, c = "c906e8ab6147", "dee0be60f43a", "1eabd8e147b5"
    assert [v.version for v in store.list_versions()] == [c, b, a]
    assert store.resolve("latest") == c
    assert store.pinned() == [c]
    record = store.deployment("local")
    assert record is not None
    assert (record.current, record.previous, record.name) == (b, a, DEFAULT_NAME)
    assert record.rolled_back_reason(c) == "smoke test failed: /predict answered 500"
    assert store.latest_image_ref(b) == "127.0.0.1:5000/kiln/iris@sha256:" + "b" * 64
    assert store.get(a).model_bytes == b"old model a"

    # a second name beside it changes nothing of the default name's
    wine = put(store, "wine", b"wine 1")
    assert store.resolve("latest") == c and store.named("wine").resolve("latest") == wine
    assert store.names() == sorted([DEFAULT_NAME, "wine"])
    store.prune(1, every_name=True)  # the default keeps c (newest, pinned) and b, a (deployed)
    assert {v.version for v in store.scan(every_name=True)[0]} == {a, b, c, wine}
    with pytest.raises(StoreError):
        store.remove_version(b)


def test_gate_decisions_about_a_shared_version_are_each_names_own(store: ArtifactStore) -> None:
    shared = put(store, "iris", b"shared")
    put(store, "wine", b"shared")
    store.named("wine").record_decision(shared, {"outcome": "refuse", "target": "local"})
    store.named("iris").record_decision(shared, {"outcome": "promote", "target": "local"})
    assert [d["outcome"] for d in store.named("wine").decisions(shared)] == ["refuse"]
    assert [d["outcome"] for d in store.named("iris").decisions(shared)] == ["promote"]
    assert store.decisions(shared) == []  # the default name judged nothing
