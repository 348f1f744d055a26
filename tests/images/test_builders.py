"""Which builder runs, and when none does: a real store, fakes at the wiring edge only."""

from __future__ import annotations

import pytest

from kiln.config.errors import BuildError
from kiln.images.build import BuildOptions, build_image, choose_builder
from kiln.images.contents import LABEL_BASE_KEY, LABEL_MODEL_NAME, LABEL_MODEL_SHA
from kiln.images.oci import OCI_MANIFEST, Image
from kiln.infra.locks import FileLocks
from kiln.store.artifact_store import ArtifactStore

DIGEST = "sha256:" + "e" * 64


def test_auto_takes_the_layer_path_only_when_the_base_is_there():
    assert choose_builder("auto", lambda: True) == "layer"
    assert choose_builder("auto", lambda: False) == "engine"
    never = lambda: pytest.fail("an explicit builder must not look for the base")  # noqa: E731
    assert choose_builder("engine", never) == "engine"
    assert choose_builder("layer", never) == "layer"
    with pytest.raises(BuildError, match="unknown builder 'kaniko'"):
        choose_builder("kaniko", never)


class FakeRegistry:
    """Holds the serving base (or not) and, optionally, the version's image already."""

    host = "127.0.0.1:5000"

    def __init__(self, has_base: bool, existing: dict | None = None) -> None:
        self.has_base = has_base
        self.existing = existing  # labels of the image under the version's tag

    def ping(self) -> None:
        pass

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        if reference.startswith("base-"):
            return DIGEST if self.has_base else None
        return DIGEST if self.existing is not None else None

    def read_image(self, repository: str, reference: str) -> Image:
        manifest = {"mediaType": OCI_MANIFEST, "config": {"mediaType": "c"}, "layers": []}
        return Image(manifest, {"config": {"Labels": self.existing}})


@pytest.fixture
def store(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    return store, store.put(b"model", {0: "a", 1: "b"}, {"metrics": {}})


def build(store, registry, builder="auto", jobs=None, **options):
    ran: list[str] = []

    def fake(name):
        def run(job):
            ran.append(name)
            if jobs is not None:
                jobs.append(job)
            return DIGEST, 123

        return run

    the_store, version = store
    result = build_image(
        the_store,
        version,
        registry,
        BuildOptions(builder=builder, **options),
        builders={"layer": fake("layer"), "engine": fake("engine")},
        locks=FileLocks(the_store.root + "/locks", wait=1),
    )
    return result, ran


@pytest.mark.parametrize(("has_base", "expected"), [(True, "layer"), (False, "engine")])
def test_auto_dispatch_and_the_record(store, has_base, expected):
    result, ran = build(store, FakeRegistry(has_base))
    assert ran == [expected] and result.builder == expected and result.bytes_pushed == 123
    assert store[0].image_refs(store[1]) == [f"127.0.0.1:5000/kiln/model@{DIGEST}"]


def test_a_names_build_goes_to_its_own_repository_and_carries_its_name(store):
    from kiln import wiring
    from kiln.config.settings import KilnSettings

    settings = KilnSettings(repository="team/models", model="iris")
    options = wiring.build_options(settings, name="wine")
    assert (options.repository, options.name) == ("team/models/wine", "wine")
    assert wiring.build_options(settings).repository == "team/models/iris"  # KILN_MODEL
    jobs: list = []
    result, _ = build(store, FakeRegistry(True), jobs=jobs, **_named(options))
    assert result.image == f"127.0.0.1:5000/team/models/wine@{DIGEST}"
    assert result.tag == f"127.0.0.1:5000/team/models/wine:{store[1]}"
    spec = jobs[0].spec
    assert spec.name == "wine" and spec.env()["MODEL_NAME"] == "wine"
    assert spec.labels()[LABEL_MODEL_NAME] == "wine"
    assert spec.build_args("python:3.11-slim")["MODEL_NAME"] == "wine"


def _named(options: BuildOptions) -> dict:
    return {"repository": options.repository, "name": options.name}


def test_the_default_name_goes_to_kiln_model_and_no_name_shadows_kilns_own_images(monkeypatch):
    from kiln import wiring
    from kiln.config.errors import SettingsError
    from kiln.config.settings import KilnSettings

    for variable in ("KILN_REPOSITORY", "KILN_MODEL", "KILN_BASE_REPOSITORY"):
        monkeypatch.delenv(variable, raising=False)
    options = wiring.build_options(KilnSettings())
    assert (options.repository, options.name) == ("kiln/model", "model")
    assert BuildOptions().repository == "kiln/model"
    for name in ("serve-base", "runner"):  # kiln/serve-base, kiln/runner
        with pytest.raises(SettingsError, match="holds kiln's own images"):
            wiring.build_options(KilnSettings(), name=name)
    with pytest.raises(SettingsError, match="not usable"):
        wiring.build_options(KilnSettings(), name="Wine")


def test_an_image_already_there_is_reused_unless_forced(store):
    the_store, version = store
    sha = the_store.metadata(version)["model_sha256"]
    registry = FakeRegistry(True, existing=None)
    _, ran = build(store, registry)
    assert ran == ["layer"]
    same = {LABEL_MODEL_SHA: sha, LABEL_BASE_KEY: _base_key(), LABEL_MODEL_NAME: "model"}
    registry.existing = same
    result, ran = build(store, registry)
    assert (ran, result.builder, result.bytes_pushed) == ([], "registry", 0)
    _, ran = build(store, registry, force=True)
    assert ran == ["layer"]
    registry.existing = {**same, LABEL_MODEL_SHA: "0" * 64}  # another model
    _, ran = build(store, registry)
    assert ran == ["layer"]


@pytest.mark.parametrize(
    "name_label", [{LABEL_MODEL_NAME: "wine"}, {}], ids=["another name", "before names"]
)
def test_an_image_of_this_model_under_another_name_is_built_again(store, name_label):
    sha = store[0].metadata(store[1])["model_sha256"]
    labels = {LABEL_MODEL_SHA: sha, LABEL_BASE_KEY: _base_key(), **name_label}
    result, ran = build(store, FakeRegistry(True, existing=labels), name="iris")
    assert ran == ["layer"] and result.builder == "layer"


def _base_key() -> str:
    from kiln.images.serving_base import base_key

    return base_key(base_image=BuildOptions().base_image)


def test_the_engine_path_is_refused_without_an_engine_or_a_wheel_cache(store, tmp_path):
    """The engine builder takes its engine and wheel cache from the caller (kiln/wiring.py),
    never from settings: a caller that gives neither gets one BuildError, nothing recorded."""
    the_store, version = store
    locks = FileLocks(tmp_path / "locks", wait=1)
    options = BuildOptions(builder="auto")
    with pytest.raises(BuildError, match="given no engine and no cache_dir$"):
        build_image(the_store, version, FakeRegistry(False), options, locks=locks)
    with pytest.raises(BuildError, match="with the engine builder: .* given no cache_dir$"):
        build_image(
            the_store,
            version,
            FakeRegistry(False),
            options,
            engine=lambda: pytest.fail("no engine is asked for before the check"),
            locks=locks,
        )
    assert the_store.image_refs(version) == []
