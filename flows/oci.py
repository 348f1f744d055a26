"""Images as values: deterministic layers, configs and manifests for the layer builder.

Pure functions that return new objects and leave their inputs alone, so the same model on
the same base always gives the same bytes and the same digest.
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import os
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flows.errors import BuildError
from flows.registry import (
    DOCKER_MANIFEST,
    OCI_MANIFEST,
    sha256_digest,
)

MODEL_FILES = ("model.onnx", "labels.json", "metadata.json")
MODEL_DIR_IN_IMAGE = "models"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
LABEL_MODEL_SHA = "io.kiln.model.sha256"
LABEL_BASE_KEY = "io.kiln.base"


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
