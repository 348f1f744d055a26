"""The engine builder: Dockerfile.serve built by a container engine, then pushed.

Talks to the Docker Engine API through the docker SDK (dockerd, or podman's compatible
socket). Also publishes the serving base (the `serve-base` stage: everything but the
model) under its content-hash tag, so later builds can take the layer path.
"""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.config.errors import BuildError
from kiln.images.contents import ModelImageSpec
from kiln.images.push_progress import PushMeter
from kiln.images.registry import Registry, RegistryError, manifest_blobs
from kiln.images.serving_base import (
    build_context,
    download_wheels,
    serve_requirements,
)

log = logging.getLogger(__name__)

# Engine push failures that are worth another try (the stream carries only text).
TRANSIENT_PUSH = re.compile(r"connection refused|connection reset|timeout|EOF|503|502", re.I)


@dataclass(frozen=True)
class EngineJob:
    """One engine build: where the image goes and how its base is made."""

    registry_host: str
    repository: str
    tag: str
    base_repository: str
    base_image: str
    no_cache: bool = False

    def name(self, repository: str) -> str:
        return f"{self.registry_host}/{repository}"


def check_stream(
    what: str,
    stream: Iterable[dict[str, Any]],
    on_chunk: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Consume an engine build/push stream; any error in it fails with its message."""
    chunks = []
    for chunk in stream:
        chunks.append(chunk)
        if on_chunk is not None:
            on_chunk(chunk)
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
    check_stream(f"building {tag}", stream)


def engine_push(client: Any, name: str, tag: str, registry: Registry) -> None:
    """Push through the engine; transient failures retried per the registry's policy."""

    def push() -> None:
        meter = PushMeter(f"{name}:{tag}")  # bytes sent, on the CLI's status line
        stream = client.api.push(name, tag=tag, stream=True, decode=True)
        check_stream(f"pushing {name}:{tag}", stream, on_chunk=meter.update)
        meter.finish()

    def fail(err: Exception, attempts: int) -> Exception:
        suffix = f" (after {attempts} attempts)" if attempts > 1 else ""
        return BuildError(f"{err}{suffix}")

    def transient(err: Exception) -> bool:
        return isinstance(err, BuildError) and bool(TRANSIENT_PUSH.search(str(err)))

    registry.retry.call(f"pushing {name}:{tag}", push, transient=transient, fail=fail)


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


class Phases:
    """Logs how long each phase of a build took."""

    def __init__(self) -> None:
        self.clock = time.perf_counter()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        log.info("engine: %s took %.2fs", name, now - self.clock)
        self.clock = now


def build_with_engine(
    client: Any,
    registry: Registry,
    model_dir: Path,
    spec: ModelImageSpec,
    job: EngineJob,
    cache_dir: Path,
) -> tuple[str, int]:
    """Build and push the model image (and the serving base when the registry lacks it).

    Returns the pushed image's digest and the bytes the push added to its repository.
    """
    phases = Phases()
    wheels = download_wheels(serve_requirements(), cache_dir)
    context = build_context(model_dir, wheels)
    phases.done("wheels and context")
    args = spec.build_args(job.base_image)
    if registry.manifest_digest(job.base_repository, spec.base_key) is None:
        # Publish the serving base for the layer builder (once per change of server or deps).
        base = job.name(job.base_repository)
        ref = f"{base}:{spec.base_key}"
        engine_build(
            client, context, ref, target_stage="serve-base", build_args=args, no_cache=job.no_cache
        )
        engine_push(client, base, spec.base_key, registry)
        phases.done(f"publishing the serving base {ref}")
    before = repository_blobs(registry, job.repository)
    phases.done("listing the repository's blobs")
    name = job.name(job.repository)
    engine_build(
        client,
        context,
        f"{name}:{job.tag}",
        target_stage="serve",
        build_args=args,
        no_cache=job.no_cache,
    )
    phases.done("build")
    engine_push(client, name, job.tag, registry)
    phases.done("push")
    digest = registry.manifest_digest(job.repository, job.tag)
    if digest is None:
        raise BuildError(f"pushing {name}:{job.tag}: the registry does not show the tag afterwards")
    return digest, new_bytes(registry, job.repository, digest, before)
