"""Model-in-image builds: one immutable serving image per stored model version.

`build_image` exports the version from the store (verified), returns at once when the
registry already holds this model on this serving base, else picks a builder and records
the pushed image's digest in the store:

- layer (kiln/images/builders/layer.py): no daemon; the serving base read from the registry plus
  one model layer, a few KB pushed.
- engine (kiln/images/builders/engine.py): Dockerfile.serve through a container engine; also
  publishes the serving base the layer builder needs.

`auto` takes the layer path when the current base is in the registry, else the engine path.

Each model name has its own repository (`model_repository`): a version stored under two
names gets one image per name, each carrying its name (env MODEL_NAME, label io.kiln.model).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from kiln.config.errors import BuildError, VersionNotFound
from kiln.config.names import DEFAULT_NAME
from kiln.images.builders.engine import EngineJob, build_with_engine
from kiln.images.builders.layer import append_model_layer
from kiln.images.contents import ModelImageSpec, image_spec
from kiln.images.registry import Registry
from kiln.images.serving_base import base_key
from kiln.infra.locks import Locks, store_key, store_locks

log = logging.getLogger(__name__)

Builder = Literal["auto", "engine", "layer"]
BUILDERS = ("auto", "engine", "layer")

DEFAULT_BASE_REPOSITORY = "kiln/serve-base"
DEFAULT_REPOSITORY_PREFIX = "kiln"


def model_repository(prefix: str, name: str) -> str:
    """The image repository of one model name: `<prefix>/<name>` (KILN_REPOSITORY/name)."""
    return f"{prefix}/{name}"


@dataclass(frozen=True)
class BuildResult:
    image: str  # registry/repository@sha256:...
    digest: str
    seconds: float
    bytes_pushed: int
    builder: str  # engine, layer, or registry (already there: nothing built)
    version: str
    tag: str  # registry/repository:version


@dataclass(frozen=True)
class BuildOptions:
    registry: str = "127.0.0.1:5000"
    repository: str = model_repository(DEFAULT_REPOSITORY_PREFIX, DEFAULT_NAME)  # the full one
    name: str = DEFAULT_NAME  # the model name the image carries
    base_repository: str = DEFAULT_BASE_REPOSITORY
    base_image: str = "python:3.11-slim"
    builder: Builder = "auto"
    source: str = "kiln"
    no_cache: bool = False  # engine: build every layer again (a fresh builder's cost)
    force: bool = False  # build even when the registry already holds this image


@dataclass(frozen=True)
class BuildJob:
    """Everything one builder needs for one version."""

    registry: Registry
    model_dir: Path
    spec: ModelImageSpec
    options: BuildOptions
    engine: Callable[[], Any] | None
    cache_dir: Path | None

    @property
    def name(self) -> str:
        return f"{self.options.registry}/{self.options.repository}"


class ImageBuilder(Protocol):
    def __call__(self, job: BuildJob) -> tuple[str, int]:
        """Build and push job's image; return (digest, bytes pushed)."""
        ...


def build_by_layer(job: BuildJob) -> tuple[str, int]:
    before = job.registry.bytes_pushed
    digest = append_model_layer(
        job.registry,
        job.model_dir,
        job.spec,
        job.options.repository,
        job.spec.version,
        job.options.base_repository,
    )
    return digest, job.registry.bytes_pushed - before


def build_by_engine(job: BuildJob) -> tuple[str, int]:
    if job.engine is None or job.cache_dir is None:
        # The caller's wiring (kiln/wiring.py) says which engine and wheel cache to use.
        given = {"engine": job.engine, "cache_dir": job.cache_dir}
        missing = [name for name, value in given.items() if value is None]
        raise BuildError(
            f"building {job.name}:{job.spec.version} with the engine builder: "
            f"build_image was given no {' and no '.join(missing)}"
        )
    client = job.engine()
    engine_job = EngineJob(
        registry_host=job.options.registry,
        repository=job.options.repository,
        tag=job.spec.version,
        base_repository=job.options.base_repository,
        base_image=job.options.base_image,
        no_cache=job.options.no_cache,
    )
    return build_with_engine(
        client, job.registry, job.model_dir, job.spec, engine_job, job.cache_dir
    )


DEFAULT_BUILDERS: Mapping[str, ImageBuilder] = {"layer": build_by_layer, "engine": build_by_engine}


def choose_builder(requested: str, has_base: Callable[[], bool]) -> str:
    """The builder to run: `auto` means layer when the serving base is there, else engine."""
    if requested not in BUILDERS:
        raise BuildError(f"unknown builder {requested!r}")
    if requested == "auto":
        return "layer" if has_base() else "engine"
    return requested


def existing_image(registry: Registry, repository: str, spec: ModelImageSpec) -> str | None:
    """The digest of the version's tag when it already holds this model on this base."""
    digest = registry.manifest_digest(repository, spec.version)
    if digest is None:
        return None
    if spec.holds_this_model(registry.read_image(repository, digest).config):
        return digest
    return None


def build_image(
    store: Any,
    version: str,
    registry: Registry,
    options: BuildOptions,
    *,
    engine: Callable[[], Any] | None = None,
    cache_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    builders: Mapping[str, ImageBuilder] = DEFAULT_BUILDERS,
    locks: Locks | None = None,
) -> BuildResult:
    """Build and push the image of one stored version; record its digest in the store.

    The model is exported (and its sha256 verified) before anything is built, so a tampered
    model never reaches an image. The engine path needs `engine`, which returns a docker SDK
    client (called only when that path runs), and `cache_dir`, where the serving wheels are
    kept (kiln/wiring.py: `engine_client`, `settings.wheel_cache_dir`). The store's lock is
    held throughout, so no prune removes the version between its export and the record of
    its image.
    """
    locks = locks or store_locks(store)
    with locks.hold(store_key(store.url, store.name), f"building {version}"):
        return _build_locked(
            store, version, registry, options, engine, cache_dir, environ, builders
        )


def _build_locked(
    store: Any,
    version: str,
    registry: Registry,
    options: BuildOptions,
    engine: Callable[[], Any] | None,
    cache_dir: Path | None,
    environ: Mapping[str, str] | None,
    builders: Mapping[str, ImageBuilder],
) -> BuildResult:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kiln-build-") as tmp:
        model_dir = store.export_version(version, Path(tmp) / "model")
        metadata = json.loads((model_dir / "metadata.json").read_text())
        key = base_key(base_image=options.base_image)
        spec = image_spec(metadata, key, name=options.name, source=options.source, environ=environ)
        job = BuildJob(registry, model_dir, spec, options, engine, cache_dir)
        registry.ping()
        digest = None if options.force else existing_image(registry, options.repository, spec)
        if digest is not None:
            used, pushed = "registry", 0
            log.info("%s:%s already holds %s; nothing to build", job.name, spec.version, digest)
        else:
            used = choose_builder(
                options.builder,
                lambda: registry.manifest_digest(options.base_repository, key) is not None,
            )
            digest, pushed = builders[used](job)
    image = f"{job.name}@{digest}"
    record_image(store, registry, spec.version, image, pushed_now=used != "registry")
    seconds = time.perf_counter() - started
    log.info("built %s with %s in %.2fs, %d bytes pushed", image, used, seconds, pushed)
    return BuildResult(
        image, digest, seconds, pushed, used, spec.version, f"{job.name}:{spec.version}"
    )


def record_image(
    store: Any, registry: Registry, version: str, image: str, pushed_now: bool
) -> None:
    """Record the image in the store; if the version vanished meanwhile (a prune that took no
    lock), delete what this build pushed, so no image is left that no version names."""
    try:
        store.record_image(version, image)
    except VersionNotFound as err:
        repository, digest = image.split("/", 1)[1].split("@", 1)
        if pushed_now:
            registry.delete_manifest(repository, digest)
        raise BuildError(
            f"building {version}: the version left the store during the build ({err}); "
            f"{'the image pushed for it was deleted again' if pushed_now else 'nothing pushed'}"
        ) from err
