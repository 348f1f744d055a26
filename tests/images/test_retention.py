"""Retention's rules, fast: a real store, a registry fake at the wiring edge.

The e2e suite runs the same rules against the real registry (test_image_e2e.py); here the
registry is a dict of repository -> tag -> digest that records what retention deletes.
"""

from __future__ import annotations

from datetime import UTC, datetime

from kiln.images.retention import prune_versions
from kiln.store.artifact_store import ArtifactStore

HOST = "127.0.0.1:5000"
LABELS = {0: "a", 1: "b"}


class DictRegistry:
    host = HOST

    def __init__(self, tags: dict[str, dict[str, str]]) -> None:
        self.repos = tags
        self.deleted: list[str] = []

    def tags(self, repository: str) -> list[str]:
        return sorted(self.repos.get(repository, {}))

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        return self.repos.get(repository, {}).get(reference)

    def delete_manifest(self, repository: str, digest: str) -> bool:
        self.deleted.append(f"{repository}@{digest}")
        tags = self.repos.get(repository, {})
        for tag in [t for t, d in tags.items() if d == digest]:
            del tags[tag]
        return True


def digest(n: int) -> str:
    return "sha256:" + f"{n:x}" * 64


def store_with_images(tmp_path, count: int) -> tuple[ArtifactStore, list[str], DictRegistry]:
    ticks = iter(range(1, 60))
    store = ArtifactStore(
        tmp_path / "store", clock=lambda: datetime(2026, 1, 1, 0, 0, next(ticks), tzinfo=UTC)
    )
    registry = DictRegistry({"kiln/iris": {}, "kiln/serve-base": {"base-1": digest(15)}})
    versions = []
    for i in range(1, count + 1):
        version = store.put(f"model {i}".encode(), LABELS, {"metrics": {}})
        store.record_image(version, f"{HOST}/kiln/iris@{digest(i)}")
        registry.repos["kiln/iris"][version] = digest(i)
        versions.append(version)
    return store, versions, registry


def test_pruned_images_go_by_digest_but_never_deployed_kept_or_base(tmp_path):
    store, (v1, v2, v3, v4), registry = store_with_images(tmp_path, 4)
    store.record_image(v2, f"{HOST}/kiln/serve-base@{digest(15)}")  # shares the base digest
    store.record_image(v2, f"other.example:5000/kiln/iris@{digest(9)}")  # another registry
    store.record_deployment("local", v1, f"{HOST}/kiln/iris@{digest(1)}")
    pruned = prune_versions(store, keep=1, registry=registry)  # type: ignore[arg-type]
    assert sorted(i.version for i in pruned.versions.removed) == sorted([v2, v3])
    assert sorted(registry.deleted) == [f"kiln/iris@{digest(2)}", f"kiln/iris@{digest(3)}"]
    assert pruned.images is not None
    assert f"{HOST}/kiln/serve-base@{digest(15)}" in pruned.images.kept
    assert f"other.example:5000/kiln/iris@{digest(9)}" in pruned.images.kept
    assert registry.repos["kiln/iris"] == {v1: digest(1), v4: digest(4)}  # deployed, newest
    assert registry.repos["kiln/serve-base"] == {"base-1": digest(15)}
    assert [v.version for v in store.list_versions()] == [v4, v1]


def test_a_dry_run_deletes_nothing(tmp_path):
    store, versions, registry = store_with_images(tmp_path, 3)
    pruned = prune_versions(store, keep=1, registry=registry, dry_run=True)  # type: ignore[arg-type]
    assert pruned.images is not None and len(pruned.images.deleted) == 2
    assert registry.deleted == [] and len(store.list_versions()) == 3


def test_a_names_prune_leaves_a_version_another_name_keeps_with_both_images(tmp_path):
    """One version stored under two names has an image in each name's repository. Pruning
    `wine` leaves a version `iris` keeps, and both its images; a version no name keeps
    goes whole, with every name's image (none is left that no stored version names)."""
    ticks = iter(range(1, 60))
    iris = ArtifactStore(
        tmp_path / "store", clock=lambda: datetime(2026, 1, 1, 0, 0, next(ticks), tzinfo=UTC)
    )
    wine = iris.named("wine")
    old = wine.put(b"old", LABELS, {"metrics": {}})
    iris.put(b"old", LABELS, {"metrics": {}})  # the same bytes: one version, two names
    shared = wine.put(b"shared", LABELS, {"metrics": {}})
    iris.put(b"shared", LABELS, {"metrics": {}})  # iris's newest: iris keeps it
    newest = wine.put(b"newest", LABELS, {"metrics": {}})  # wine's newest
    old, shared, newest = (iris.resolve(v) for v in (old, shared, newest))
    registry = DictRegistry({"kiln/iris": {}, "kiln/wine": {}})
    for i, version in enumerate((old, shared, newest), start=1):
        for name, n in (("iris", i), ("wine", i + 5)):
            if name == "wine" or version != newest:  # each name's image of each of its versions
                iris.record_image(version, f"{HOST}/kiln/{name}@{digest(n)}")
                registry.repos[f"kiln/{name}"][version] = digest(n)
    pruned = prune_versions(wine, keep=1, registry=registry)  # type: ignore[arg-type]
    assert [i.version for i in pruned.versions.removed] == [old]
    assert sorted(registry.deleted) == [f"kiln/iris@{digest(1)}", f"kiln/wine@{digest(6)}"]
    assert registry.repos["kiln/iris"] == {shared: digest(2)}
    assert registry.repos["kiln/wine"] == {shared: digest(7), newest: digest(8)}
