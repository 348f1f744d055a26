"""Images as values: deterministic layers and an `Image` that operations copy, never change.

Pure functions over bytes and dicts (no kiln imports, no I/O): `append(image, layer)` and
`configure(image, ...)` each return a new `Image` and leave their input alone, so the same
files on the same base always give the same bytes and the same digest. Reading and writing
images is the registry client's job (`Registry.read_image`, `Registry.write_image`).
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


class NotAnImage(ValueError):
    """A manifest that is not one single-platform image (an index, an unknown type)."""


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


# ---------------------------------------------------------------------------- layers


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


@dataclass(frozen=True)
class Layer:
    tar: bytes  # uncompressed
    blob: bytes  # gzip
    diff_id: str
    digest: str


def layer_of(files: Mapping[str, bytes], *, mtime: int) -> Layer:
    """One gzip layer holding `files` (path in the image -> bytes), byte for byte reproducible."""
    raw = deterministic_tar(files, mtime=mtime)
    blob = gzip_deterministic(raw)
    return Layer(raw, blob, sha256_digest(raw), sha256_digest(blob))


# ---------------------------------------------------------------------------- images


@dataclass(frozen=True)
class Image:
    """One single-platform image: its manifest, its config, and the layer blobs it adds.

    `manifest` lists every layer; `blobs` holds the bytes of the layers this value added
    (digest -> gzip), the others are wherever `origin` (a repository) has them.
    """

    manifest: Mapping[str, Any]
    config: Mapping[str, Any]
    blobs: Mapping[str, bytes] = field(default_factory=dict)
    origin: str | None = None

    def __post_init__(self) -> None:
        media_type = self.manifest.get("mediaType") or OCI_MANIFEST
        if media_type not in MANIFEST_TYPES:
            raise NotAnImage(f"manifest has media type {media_type}; need a single image")

    @property
    def media_type(self) -> str:
        return str(self.manifest.get("mediaType") or OCI_MANIFEST)

    @property
    def layers(self) -> list[dict[str, Any]]:
        return [dict(layer) for layer in self.manifest.get("layers", [])]

    def config_bytes(self) -> bytes:
        return canonical_json(self.config)

    def manifest_bytes(self) -> bytes:
        """The manifest as pushed: the config's descriptor filled in, annotations dropped."""
        config = self.config_bytes()
        manifest = copy.deepcopy(dict(self.manifest))
        manifest["mediaType"] = self.media_type
        manifest["config"] = {
            "mediaType": self.manifest["config"]["mediaType"],
            "digest": sha256_digest(config),
            "size": len(config),
        }
        manifest.pop("annotations", None)
        return json.dumps(manifest, indent=3).encode()

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest_bytes())


def append(image: Image, layer: Layer, *, created: str = "", created_by: str = "") -> Image:
    """A new image: `image` plus `layer` on top (manifest, rootfs and history)."""
    layer_type = OCI_LAYER if image.media_type == OCI_MANIFEST else DOCKER_LAYER
    manifest = copy.deepcopy(dict(image.manifest))
    manifest["layers"] = [
        *image.manifest.get("layers", []),
        {"mediaType": layer_type, "digest": layer.digest, "size": len(layer.blob)},
    ]
    config = copy.deepcopy(dict(image.config))
    rootfs = config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    rootfs["diff_ids"] = [*rootfs.get("diff_ids", []), layer.diff_id]
    step = {"created_by": created_by, **({"created": created} if created else {})}
    config["history"] = [*config.get("history", []), step]
    blobs = {**image.blobs, layer.digest: layer.blob}
    return Image(manifest, config, blobs, image.origin)


def configure(
    image: Image,
    *,
    env: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    created: str | None = None,
) -> Image:
    """A new image whose config sets `env` (replacing same-named), adds `labels`, `created`."""
    config = copy.deepcopy(dict(image.config))
    container = config.get("config") or {}
    config["config"] = container
    variables = list(container.get("Env") or [])
    for key, value in (env or {}).items():
        variables = [e for e in variables if e.split("=", 1)[0] != key]
        variables.append(f"{key}={value}")
    container["Env"] = variables
    container["Labels"] = {**(container.get("Labels") or {}), **(labels or {})}
    if created is not None:
        config["created"] = created
    return Image(copy.deepcopy(dict(image.manifest)), config, dict(image.blobs), image.origin)
