"""Model-in-image builds: one immutable serving image per stored model version.

Two builders behind one entry point, `build_image`:

- engine: Dockerfile.serve built by a container engine (the Docker Engine API through the
  docker SDK: dockerd or podman's compatible socket), then pushed. Also publishes the
  serving base (the `serve-base` stage: everything but the model) under a content-hash tag.
- layer: no daemon. Reads the serving base's manifest and config from the registry,
  appends one deterministic layer with the model files, adds the model's env and labels to
  the config, mounts the base layers into the target repository and pushes only the new
  layer, the config and the manifest.

`auto` takes the layer path when the current base is in the registry, else the engine path.
The layer, config and manifest come from pure functions in flows/oci.py; the serving base's
key, wheels and build context from flows/serving_base.py.
"""

from __future__ import annotations

import io
import json
import logging
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from flows.errors import BuildError
from flows.oci import (
    LABEL_BASE_KEY,
    LABEL_MODEL_SHA,
    ModelImageSpec,
    append_config,
    append_manifest,
    canonical_json,
    epoch_of,
    image_spec,
    model_layer,
)
from flows.registry import (
    Registry,
    RegistryError,
    manifest_blobs,
)
from flows.serving_base import (
    base_key,
    build_context,
    default_cache_dir,
    download_wheels,
    serve_requirements,
)

log = logging.getLogger(__name__)

Builder = Literal["auto", "engine", "layer"]

DEFAULT_BASE_REPOSITORY = "kiln/serve-base"


@dataclass(frozen=True)
class BuildResult:
    image: str  # registry/repository@sha256:...
    digest: str
    seconds: float
    bytes_pushed: int
    builder: str  # engine, layer, or registry (already there: nothing built)
    version: str
    tag: str  # registry/repository:version


# ---------------------------------------------------------------------------- builders


@dataclass(frozen=True)
class Target:
    registry: str  # host:port
    repository: str
    tag: str

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.tag}"

    def at(self, digest: str) -> str:
        return f"{self.name}@{digest}"


def existing_image(registry: Registry, target: Target, spec: ModelImageSpec) -> str | None:
    """The digest of target's tag when it already holds this model on this base."""
    digest = registry.manifest_digest(target.repository, target.tag)
    if digest is None:
        return None
    manifest, digest, _ = registry.manifest(target.repository, digest)
    config = json.loads(registry.blob(target.repository, manifest["config"]["digest"]))
    labels = (config.get("config") or {}).get("Labels") or {}
    if (
        labels.get(LABEL_MODEL_SHA) == spec.model_sha256
        and labels.get(LABEL_BASE_KEY) == spec.base_key
    ):
        return digest
    return None


def append_model_layer(
    registry: Registry,
    model_dir: Path,
    spec: ModelImageSpec,
    target: Target,
    base_repository: str,
) -> str:
    """The layer builder: base from the registry + one model layer. Returns the digest."""
    base_manifest, _, _ = registry.manifest(base_repository, spec.base_key)
    base_config = json.loads(registry.blob(base_repository, base_manifest["config"]["digest"]))
    layer = model_layer(model_dir, epoch_of(spec.created))
    config_bytes = canonical_json(append_config(base_config, layer, spec))
    manifest_bytes, media_type = append_manifest(base_manifest, config_bytes, layer)
    for blob in base_manifest["layers"]:
        registry.mount_blob(target.repository, blob["digest"], base_repository)
    registry.push_blob(target.repository, layer.blob, layer.digest)
    registry.push_blob(target.repository, config_bytes)
    return registry.put_manifest(target.repository, target.tag, manifest_bytes, media_type)


def _check_stream(what: str, stream: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consume an engine build/push stream; any error in it fails with its message."""
    chunks = []
    for chunk in stream:
        chunks.append(chunk)
        if "errorDetail" in chunk or "error" in chunk:
            detail = chunk.get("errorDetail") or {}
            message = detail.get("message") or chunk.get("error") or str(chunk)
            raise BuildError(f"{what}: {str(message).strip()}")
        if "stream" in chunk and chunk["stream"].strip():
            log.debug("%s", chunk["stream"].rstrip())
    return chunks


def engine_build(
    client: Any,
    context: io.BytesIO,
    tag: str,
    *,
    target_stage: str,
    build_args: Mapping[str, str],
    no_cache: bool = False,
) -> None:
    context.seek(0)
    stream = client.api.build(
        fileobj=context,
        custom_context=True,
        dockerfile="Dockerfile.serve",
        tag=tag,
        target=target_stage,
        buildargs=dict(build_args),
        nocache=no_cache,
        rm=True,
        forcerm=True,
        pull=False,
        decode=True,
    )
    _check_stream(f"building {tag}", stream)


def engine_push(
    client: Any, name: str, tag: str, registry: Registry, *, attempts: int | None = None
) -> None:
    """Push through the engine; transient failures retried per the registry's policy."""
    policy = registry.retry
    delays = list(policy.delays())
    tries = attempts or policy.attempts
    for attempt in range(1, tries + 1):
        try:
            stream = client.api.push(name, tag=tag, stream=True, decode=True)
            _check_stream(f"pushing {name}:{tag}", stream)
            return
        except BuildError as err:
            transient = re.search(
                r"connection refused|connection reset|timeout|EOF|503|502", str(err), re.I
            )
            if not transient or attempt == tries:
                suffix = f" (after {attempt} attempts)" if attempt > 1 else ""
                raise BuildError(f"{err}{suffix}") from err
            delay = delays[min(attempt - 1, len(delays) - 1)] if delays else 1.0
            log.warning("%s; retrying in %.1fs", err, delay)
            time.sleep(delay)


def repository_blobs(registry: Registry, repository: str) -> set[str]:
    """Every blob the repository's tagged manifests reference (to count what a push adds)."""
    found: set[str] = set()
    for tag in registry.tags(repository):
        try:
            manifest, _, _ = registry.manifest(repository, tag)
        except RegistryError:
            continue
        found.update(b["digest"] for b in manifest_blobs(manifest))
    return found


def new_bytes(registry: Registry, repository: str, digest: str, before: set[str]) -> int:
    manifest, _, raw = registry.manifest(repository, digest)
    return len(raw) + sum(b["size"] for b in manifest_blobs(manifest) if b["digest"] not in before)


@dataclass(frozen=True)
class BuildOptions:
    registry: str = "127.0.0.1:5000"
    repository: str = "kiln/iris"
    base_repository: str = DEFAULT_BASE_REPOSITORY
    base_image: str = "python:3.11-slim"
    builder: Builder = "auto"
    source: str = "kiln"
    no_cache: bool = False  # engine: build every layer again (a fresh builder's cost)
    force: bool = False  # build even when the registry already holds this image


def build_image(
    store: Any,
    version: str,
    registry: Registry,
    options: BuildOptions,
    *,
    engine: Callable[[], Any] | None = None,
    cache_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> BuildResult:
    """Build and push the image of one stored version; record its digest in the store.

    The model is exported (and its sha256 verified) before anything is built, so a tampered
    model never reaches an image. `engine` returns a docker SDK client (only called when the
    engine path runs).
    """
    started = time.perf_counter()
    pushed_before = registry.bytes_pushed
    with tempfile.TemporaryDirectory(prefix="kiln-build-") as tmp:
        model_dir = store.export_version(version, Path(tmp) / "model")
        metadata = json.loads((model_dir / "metadata.json").read_text())
        version = str(metadata["version"])
        key = base_key(base_image=options.base_image)
        spec = image_spec(metadata, key, source=options.source, environ=environ)
        target = Target(options.registry, options.repository, version)

        registry.ping()
        digest = None if options.force else existing_image(registry, target, spec)
        if digest is not None:
            used = "registry"
            pushed = 0
            log.info("%s already holds %s; nothing to build", target.ref, digest)
        else:
            used = options.builder
            if used == "auto":
                has_base = registry.manifest_digest(options.base_repository, key) is not None
                used = "layer" if has_base else "engine"
            if used == "layer":
                if registry.manifest_digest(options.base_repository, key) is None:
                    raise BuildError(
                        f"the serving base {options.base_repository}:{key} is not in "
                        f"{registry.host}; build once with --builder engine (or auto)"
                    )
                digest = append_model_layer(
                    registry, model_dir, spec, target, options.base_repository
                )
                pushed = registry.bytes_pushed - pushed_before
            elif used == "engine":
                if engine is None:
                    from flows.engine import docker_client

                    engine = docker_client
                digest, pushed = _engine_path(
                    engine(), registry, model_dir, spec, target, options, cache_dir
                )
            else:
                raise BuildError(f"unknown builder {options.builder!r}")
    image = target.at(digest)
    store.record_image(version, image)
    seconds = time.perf_counter() - started
    log.info("built %s with %s in %.2fs, %d bytes pushed", image, used, seconds, pushed)
    return BuildResult(image, digest, seconds, pushed, used, version, target.ref)


def _engine_path(
    client: Any,
    registry: Registry,
    model_dir: Path,
    spec: ModelImageSpec,
    target: Target,
    options: BuildOptions,
    cache_dir: Path | None,
) -> tuple[str, int]:
    clock = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        log.info("engine: %s took %.2fs", name, now - clock)
        clock = now

    wheels = download_wheels(serve_requirements(), cache_dir or default_cache_dir())
    context = build_context(model_dir, wheels)
    phase("wheels and context")
    args = spec.build_args(options.base_image)
    base = Target(options.registry, options.base_repository, spec.base_key)
    if registry.manifest_digest(base.repository, base.tag) is None:
        # Publish the serving base for the layer builder (once per change of server or deps).
        engine_build(
            client,
            context,
            base.ref,
            target_stage="serve-base",
            build_args=args,
            no_cache=options.no_cache,
        )
        engine_push(client, base.name, base.tag, registry)
        phase(f"publishing the serving base {base.ref}")
    before = repository_blobs(registry, target.repository)
    phase("listing the repository's blobs")
    engine_build(
        client,
        context,
        target.ref,
        target_stage="serve",
        build_args=args,
        no_cache=options.no_cache,
    )
    phase("build")
    engine_push(client, target.name, target.tag, registry)
    phase("push")
    digest = registry.manifest_digest(target.repository, target.tag)
    if digest is None:
        raise BuildError(f"pushing {target.ref}: the registry does not show the tag afterwards")
    return digest, new_bytes(registry, target.repository, digest, before)
