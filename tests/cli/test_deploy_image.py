"""Which image `kiln deploy` ships of a version two model names share: the name's own."""

from __future__ import annotations

from kiln.cli.deploy import own_image, own_repository
from kiln.config.settings import KilnSettings
from kiln.store.artifact_store import ArtifactStore

REGISTRY = "127.0.0.1:5000"


def test_a_shared_version_ships_the_names_own_image_whichever_was_built_last(tmp_path) -> None:
    store = ArtifactStore(tmp_path / "store")
    version = store.named("wine").put(b"shared", {0: "a"}, {})
    store.named("iris").put(b"shared", {0: "a"}, {})
    wine = f"{REGISTRY}/kiln/wine@sha256:{'1' * 64}"
    iris = f"{REGISTRY}/kiln/iris@sha256:{'2' * 64}"
    store.record_image(version, wine)
    store.record_image(version, iris)  # the newest build is iris's
    settings = KilnSettings(repository="kiln", model="wine")
    assert own_image(store.named("wine"), version, settings) == wine
    assert own_repository(settings) == "kiln/wine"
    iris_settings = KilnSettings(repository="kiln", model="iris")
    assert own_image(store.named("iris"), version, iris_settings) == iris


def test_the_default_name_ships_its_images_from_before_names(tmp_path) -> None:
    store = ArtifactStore(tmp_path / "store")
    version = store.put(b"old", {0: "a"}, {})
    legacy = f"{REGISTRY}/kiln/iris@sha256:{'3' * 64}"  # KILN_REPOSITORY was the whole name
    store.record_image(version, legacy)
    settings = KilnSettings(repository="kiln")
    assert own_image(store, version, settings) == legacy
    assert own_repository(settings) is None  # any recorded image will do
    wine = KilnSettings(repository="kiln", model="wine")
    assert own_image(store.named("wine"), version, wine) is None  # not wine's: built anew
