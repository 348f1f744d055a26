"""What a model's image holds besides the serving base: its files, env, labels and times."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kiln.config.errors import BuildError
from kiln.config.names import DEFAULT_NAME
from kiln.images.oci import Image, Layer, append, configure, layer_of

MODEL_FILES = ("model.onnx", "labels.json", "metadata.json")
MODEL_DIR_IN_IMAGE = "models"
LABEL_MODEL_NAME = "io.kiln.model"
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
    name: str = DEFAULT_NAME  # the model name: the server's V2 name, metrics' `model` label

    def env(self) -> dict[str, str]:
        return {
            "MODEL_FILEPATH": f"/{MODEL_DIR_IN_IMAGE}/model.onnx",
            "LABEL_FILEPATH": f"/{MODEL_DIR_IN_IMAGE}/labels.json",
            "MODEL_VERSION": self.version,
            "MODEL_SHA256": self.model_sha256,
            "MODEL_NAME": self.name,
        }

    def labels(self) -> dict[str, str]:
        return {
            "org.opencontainers.image.title": "kiln model server",
            "org.opencontainers.image.version": self.version,
            "org.opencontainers.image.revision": self.revision,
            "org.opencontainers.image.created": self.created,
            "org.opencontainers.image.source": self.source,
            LABEL_MODEL_NAME: self.name,
            LABEL_MODEL_SHA: self.model_sha256,
            LABEL_BASE_KEY: self.base_key,
        }

    def build_args(self, base_image: str) -> dict[str, str]:
        return {
            "BASE_IMAGE": base_image,
            "MODEL_VERSION": self.version,
            "MODEL_SHA256": self.model_sha256,
            "MODEL_NAME": self.name,
            "CREATED": self.created,
            "REVISION": self.revision,
            "SOURCE": self.source,
            "BASE_KEY": self.base_key,
        }

    def holds_this_model(self, config: Mapping[str, Any]) -> bool:
        """Whether an image config already carries this model, under this name, on this
        serving base (an image from before names has no name label: it is built again)."""
        labels = (config.get("config") or {}).get("Labels") or {}
        return (
            labels.get(LABEL_MODEL_SHA) == self.model_sha256
            and labels.get(LABEL_BASE_KEY) == self.base_key
            and labels.get(LABEL_MODEL_NAME) == self.name
        )


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
    name: str = DEFAULT_NAME,
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
        name=name,
    )


# ---------------------------------------------------------------------------- files, layer, image


def read_model_files(model_dir: Path) -> dict[str, bytes]:
    missing = [n for n in MODEL_FILES if not (model_dir / n).is_file()]
    if missing:
        raise BuildError(f"model dir {model_dir} lacks {', '.join(missing)}")
    return {f"{MODEL_DIR_IN_IMAGE}/{n}": (model_dir / n).read_bytes() for n in MODEL_FILES}


def model_layer(model_dir: Path, mtime: int) -> Layer:
    return layer_of(read_model_files(model_dir), mtime=mtime)


def model_image(base: Image, layer: Layer, spec: ModelImageSpec) -> Image:
    """The serving base plus the model layer, with the model's env and labels. Pure."""
    with_model = append(
        base,
        layer,
        created=spec.created,
        created_by=f"kiln: model {spec.version} in /{MODEL_DIR_IN_IMAGE}",
    )
    return configure(with_model, env=spec.env(), labels=spec.labels(), created=spec.created)
