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
Images are values: the functions that make the layer, config and manifest are pure and
return new objects, so the same model on the same base gives the same digest.
"""

from __future__ import annotations

import base64
import copy
import gzip
import hashlib
import io
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from flows.errors import BuildError
from flows.registry import (
    DOCKER_MANIFEST,
    OCI_MANIFEST,
    Registry,
    RegistryError,
    manifest_blobs,
    sha256_digest,
)

log = logging.getLogger(__name__)

Builder = Literal["auto", "engine", "layer"]

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO_ROOT / "Dockerfile.serve"
SERVING_DIR = REPO_ROOT / "serving"
PYPROJECT = REPO_ROOT / "pyproject.toml"
DEFAULT_BASE_REPOSITORY = "kiln/serve-base"
MODEL_FILES = ("model.onnx", "labels.json", "metadata.json")
MODEL_DIR_IN_IMAGE = "models"

# Declared by onnxruntime (and friends) but never imported by the server at run time:
# measured with `import onnxruntime; InferenceSession(...).run(...)` and sys.modules.
UNUSED_DISTRIBUTIONS = frozenset(
    {"sympy", "mpmath", "protobuf", "flatbuffers", "coloredlogs", "humanfriendly"}
)

# Bump when the host-side wheel preparation changes what lands in the image (cache + base key).
WHEEL_PREP = "no-unused-deps,strip-debug"

LABEL_MODEL_SHA = "io.kiln.model.sha256"
LABEL_BASE_KEY = "io.kiln.base"

OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


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
class ModelImageSpec:
    """What goes into one model's image besides the serving base."""

    version: str
    model_sha256: str
    created: str  # RFC 3339, UTC
    revision: str
    source: str
    base_key: str

    def env(self) -> dict[str, str]:
        return {
            "MODEL_FILEPATH": f"/{MODEL_DIR_IN_IMAGE}/model.onnx",
            "LABEL_FILEPATH": f"/{MODEL_DIR_IN_IMAGE}/labels.json",
            "MODEL_VERSION": self.version,
            "MODEL_SHA256": self.model_sha256,
        }

    def labels(self) -> dict[str, str]:
        return {
            "org.opencontainers.image.title": "kiln model server",
            "org.opencontainers.image.version": self.version,
            "org.opencontainers.image.revision": self.revision,
            "org.opencontainers.image.created": self.created,
            "org.opencontainers.image.source": self.source,
            LABEL_MODEL_SHA: self.model_sha256,
            LABEL_BASE_KEY: self.base_key,
        }

    def build_args(self, base_image: str) -> dict[str, str]:
        return {
            "BASE_IMAGE": base_image,
            "MODEL_VERSION": self.version,
            "MODEL_SHA256": self.model_sha256,
            "CREATED": self.created,
            "REVISION": self.revision,
            "SOURCE": self.source,
            "BASE_KEY": self.base_key,
        }


# ---------------------------------------------------------------------------- time


def source_epoch(created: str, environ: Mapping[str, str] | None = None) -> int:
    """SOURCE_DATE_EPOCH when set, else the model's own creation time: stable per model."""
    env = os.environ if environ is None else environ
    raw = env.get("SOURCE_DATE_EPOCH", "").strip()
    if raw:
        try:
            return int(raw)
        except ValueError:
            raise BuildError(f"SOURCE_DATE_EPOCH={raw!r} is not an integer") from None
    return epoch_of(created)


def epoch_of(created: str) -> int:
    if not created:
        return 0
    return int(datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())


def rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def image_spec(
    metadata: Mapping[str, Any],
    base_key: str,
    *,
    source: str = "",
    environ: Mapping[str, str] | None = None,
) -> ModelImageSpec:
    epoch = source_epoch(str(metadata.get("created", "")), environ)
    return ModelImageSpec(
        version=str(metadata["version"]),
        model_sha256=str(metadata["model_sha256"]),
        created=rfc3339(epoch),
        revision=str(metadata.get("code_revision") or ""),
        source=source,
        base_key=base_key,
    )


# ---------------------------------------------------------------------------- tar


def deterministic_tar(
    files: Mapping[str, bytes], *, mtime: int, mode: int = 0o644, dir_mode: int = 0o755
) -> bytes:
    """A tar of `files` (path -> bytes): sorted entries, parent dirs, fixed mtime/mode/owner."""
    dirs: set[str] = set()
    for name in files:
        parts = name.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    entries = sorted([(d, None) for d in dirs] + [(n.strip("/"), d) for n, d in files.items()])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = mtime
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = dir_mode
                tar.addfile(info)
            else:
                info.mode = mode
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gzip_deterministic(data: bytes) -> bytes:
    """gzip with no name and mtime 0, so equal input gives equal bytes."""
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as gz:
        gz.write(data)
    return out.getvalue()


def read_model_files(model_dir: Path) -> dict[str, bytes]:
    missing = [n for n in MODEL_FILES if not (model_dir / n).is_file()]
    if missing:
        raise BuildError(f"model dir {model_dir} lacks {', '.join(missing)}")
    return {f"{MODEL_DIR_IN_IMAGE}/{n}": (model_dir / n).read_bytes() for n in MODEL_FILES}


@dataclass(frozen=True)
class Layer:
    tar: bytes  # uncompressed
    blob: bytes  # gzip
    diff_id: str
    digest: str


def model_layer(model_dir: Path, mtime: int) -> Layer:
    raw = deterministic_tar(read_model_files(model_dir), mtime=mtime)
    blob = gzip_deterministic(raw)
    return Layer(raw, blob, sha256_digest(raw), sha256_digest(blob))


# ---------------------------------------------------------------------------- config


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def append_config(
    base_config: Mapping[str, Any], layer: Layer, spec: ModelImageSpec
) -> dict[str, Any]:
    """A new image config: the base's plus the model layer, env and labels. Pure."""
    cfg = copy.deepcopy(dict(base_config))
    container = cfg.setdefault("config", {}) or {}
    cfg["config"] = container
    env = list(container.get("Env") or [])
    for key, value in spec.env().items():
        env = [e for e in env if e.split("=", 1)[0] != key]
        env.append(f"{key}={value}")
    container["Env"] = env
    labels = dict(container.get("Labels") or {})
    labels.update(spec.labels())
    container["Labels"] = labels
    rootfs = cfg.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    rootfs["diff_ids"] = [*rootfs.get("diff_ids", []), layer.diff_id]
    cfg["history"] = [
        *cfg.get("history", []),
        {"created": spec.created, "created_by": f"kiln: model {spec.version} in /models"},
    ]
    cfg["created"] = spec.created
    return cfg


def append_manifest(
    base_manifest: Mapping[str, Any], config_bytes: bytes, layer: Layer
) -> tuple[bytes, str]:
    """The new manifest bytes and media type: the base's layers plus the model layer."""
    media_type = base_manifest.get("mediaType") or OCI_MANIFEST
    if media_type not in (OCI_MANIFEST, DOCKER_MANIFEST):
        raise BuildError(f"base manifest has media type {media_type}; need a single image")
    oci = media_type == OCI_MANIFEST
    manifest = copy.deepcopy(dict(base_manifest))
    manifest["mediaType"] = media_type
    manifest["config"] = {
        "mediaType": base_manifest["config"]["mediaType"],
        "digest": sha256_digest(config_bytes),
        "size": len(config_bytes),
    }
    manifest["layers"] = [
        *base_manifest["layers"],
        {
            "mediaType": OCI_LAYER if oci else DOCKER_LAYER,
            "digest": layer.digest,
            "size": len(layer.blob),
        },
    ]
    manifest.pop("annotations", None)
    return json.dumps(manifest, indent=3).encode(), media_type


# ---------------------------------------------------------------------------- base key, wheels


def serve_requirements(pyproject: Path = PYPROJECT) -> list[str]:
    data = tomllib.loads(pyproject.read_text())
    return list(data["project"]["optional-dependencies"]["serve"])


def _serving_files(serving_dir: Path) -> dict[str, bytes]:
    files = {}
    for path in sorted(serving_dir.rglob("*")):
        rel = path.relative_to(serving_dir)
        if path.is_file() and "__pycache__" not in rel.parts and path.suffix != ".pyc":
            files[rel.as_posix()] = path.read_bytes()
    return files


def base_key(
    *,
    base_image: str,
    dockerfile: Path = DOCKERFILE,
    serving_dir: Path = SERVING_DIR,
    requirements: Iterable[str] | None = None,
) -> str:
    """Content hash of what goes into the serving base: tag `base-<key>` in the registry."""
    h = hashlib.sha256()

    def part(name: str, data: bytes) -> None:
        h.update(f"{name}\0{len(data)}\0".encode())
        h.update(data)

    part("base-image", base_image.encode())
    part("platform", _arch().encode())
    part("dockerfile", dockerfile.read_bytes())
    reqs = serve_requirements() if requirements is None else list(requirements)
    part("requirements", "\n".join(sorted(reqs)).encode())
    part("excluded", "\n".join(sorted(UNUSED_DISTRIBUTIONS)).encode())
    part("wheel-prep", WHEEL_PREP.encode())
    for name, data in _serving_files(serving_dir).items():
        part(f"serving/{name}", data)
    return "base-" + h.hexdigest()[:16]


def _arch() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def _distribution(wheel: Path) -> str:
    return re.sub(r"[-_.]+", "-", wheel.name.split("-", 1)[0]).lower()


def download_wheels(
    requirements: list[str], cache_dir: Path, *, python_version: str = "3.11"
) -> list[Path]:
    """Wheels for the server (host-side pip: builds cannot reach PyPI), cached by spec."""
    arch = _arch()
    key = hashlib.sha256(
        "\n".join([python_version, arch, WHEEL_PREP, *sorted(requirements)]).encode()
    ).hexdigest()[:16]
    target = cache_dir / key
    if (target / ".complete").exists():
        return sorted(target.glob("*.whl"))
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir))
    abi = "cp" + python_version.replace(".", "")
    platforms = [f"manylinux_2_{minor}_{arch}" for minor in range(36, 16, -1)]
    platforms += [f"manylinux2014_{arch}", f"linux_{arch}"]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        "--dest",
        str(tmp),
        "--python-version",
        python_version,
        "--implementation",
        "cp",
        "--abi",
        abi,
        *[arg for p in platforms for arg in ("--platform", p)],
        *requirements,
    ]
    log.info("downloading server wheels into %s", target)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BuildError(f"downloading server wheels: {proc.stderr.strip()[-800:]}")
    for wheel in tmp.glob("*.whl"):
        if _distribution(wheel) in UNUSED_DISTRIBUTIONS:
            wheel.unlink()
        else:
            strip_wheel(wheel)
    (tmp / ".complete").write_text("\n".join(sorted(requirements)) + "\n")
    if target.exists():
        shutil.rmtree(target)
    os.rename(tmp, target)
    return sorted(target.glob("*.whl"))


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def strip_wheel(wheel: Path, strip: str | None = None) -> int:
    """Drop debug sections from a wheel's shared libraries (uvloop ships 13 MB of them).

    `strip --strip-debug` keeps every symbol a loader needs. RECORD is rewritten with the
    new hashes, so the wheel stays valid. Returns the bytes saved (0 without binutils).
    """
    strip = strip or shutil.which("strip")
    if not strip:
        return 0
    with zipfile.ZipFile(wheel) as zf:
        infos = zf.infolist()
        members = {info.filename: zf.read(info) for info in infos}
    # Not the libraries auditwheel vendored under <name>.libs/: patchelf rewrote those, and
    # strip breaks them ("ELF load command address/offset not page-aligned").
    libs = [n for n in members if re.search(r"\.so(\.[0-9.]+)?$", n) and ".libs/" not in n]
    if not libs:
        return 0
    saved = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in libs:
            path = Path(tmp) / "lib.so"
            path.write_bytes(members[name])
            if subprocess.run([strip, "--strip-debug", str(path)], capture_output=True).returncode:
                continue
            stripped = path.read_bytes()
            saved += len(members[name]) - len(stripped)
            members[name] = stripped
    if not saved:
        return 0
    record = next(n for n in members if n.endswith(".dist-info/RECORD"))
    lines = []
    for line in members[record].decode().splitlines():
        name = line.split(",", 1)[0]
        if name in libs:
            line = f"{name},{_record_hash(members[name])},{len(members[name])}"
        lines.append(line)
    members[record] = ("\n".join(lines) + "\n").encode()
    tmp_wheel = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(tmp_wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for info in infos:
            zf.writestr(info, members[info.filename])
    os.replace(tmp_wheel, wheel)
    return saved


def default_cache_dir() -> Path:
    from flows.engine import state_dir

    return Path(os.environ.get("KILN_CACHE_DIR") or state_dir() / "cache" / "wheels")


# ---------------------------------------------------------------------------- build context


def build_context(
    model_dir: Path,
    wheels: list[Path],
    *,
    dockerfile: Path = DOCKERFILE,
    serving_dir: Path = SERVING_DIR,
) -> io.BytesIO:
    """The engine's build context as an uncompressed, deterministic tar."""
    files: dict[str, bytes] = {"Dockerfile.serve": dockerfile.read_bytes()}
    for name, data in _serving_files(serving_dir).items():
        files[f"serving/{name}"] = data
    for wheel in wheels:
        files[f"wheels/{wheel.name}"] = wheel.read_bytes()
    for name, data in read_model_files(model_dir).items():
        files[f"model/{name.split('/', 1)[1]}"] = data
    return io.BytesIO(deterministic_tar(files, mtime=0))


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


# ---------------------------------------------------------------------------- retention


@dataclass(frozen=True)
class RetentionResult:
    deleted: list[str]  # registry/repo@sha256:... removed from the registry
    kept: list[str]  # refs of pruned versions left in place (deployed, rollback, base...)


def protected_digests(store: Any, kept: Iterable[Any]) -> set[str]:
    """Digests that must stay: what any target runs, each target's rollback image, and the
    images of the versions the store keeps."""
    keep = set()
    for deployment in store.deployments():
        for ref in (deployment.image, deployment.previous_image):
            if ref and "@" in ref:
                keep.add(ref.split("@", 1)[1])
    for info in kept:
        keep.update(ref.split("@", 1)[1] for ref in info.images if "@" in ref)
    return keep


def base_digests(registry: Registry, repositories: Iterable[str]) -> set[str]:
    """Digests of every serving base tag (`base-*`) in the given repositories."""
    found = set()
    for repository in repositories:
        for tag in registry.tags(repository):
            if tag.startswith("base-"):
                digest = registry.manifest_digest(repository, tag)
                if digest:
                    found.add(digest)
    return found


def delete_pruned_images(
    registry: Registry,
    removed: Iterable[Any],
    *,
    protected: set[str],
    base_repositories: Iterable[str] = (DEFAULT_BASE_REPOSITORY,),
    dry_run: bool = False,
) -> RetentionResult:
    """Delete, by digest, the images of versions the store pruned.

    Never one whose digest is protected (deployed, rollback target, kept version) nor a
    serving base in use. Space comes back with the registry's garbage collection
    (`scripts/infra.sh gc`).
    """
    removed = list(removed)
    repos = {ref.split("@")[0].split("/", 1)[1] for info in removed for ref in info.images}
    bases = base_digests(registry, {*base_repositories, *repos})
    deleted, kept = [], []
    for info in removed:
        for ref in info.images:
            host, _, rest = ref.partition("/")
            if host != registry.host or "@" not in rest:
                kept.append(ref)
                continue
            repository, digest = rest.split("@", 1)
            if digest in protected or digest in bases:
                kept.append(ref)
                continue
            if not dry_run:
                registry.delete_manifest(repository, digest)
            deleted.append(ref)
    return RetentionResult(deleted, kept)
