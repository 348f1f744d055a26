"""The server's settings, read from the environment once, at start-up.

The environment comes in as a mapping (``from_env(os.environ)``), so tests hand in a
plain dict. Every name is documented in the configuration reference (docs/reference/settings.md),
generated from the fields' metadata.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """An environment variable holds a value the server cannot use."""


DEFAULT_MAX_BODY_BYTES = 1024 * 1024

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_int(environ: Mapping[str, str], key: str, default: int, minimum: int = 0) -> int:
    raw = environ.get(key)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"{key}={value} is below the minimum {minimum}")
    return value


def env_float(environ: Mapping[str, str], key: str, default: float, minimum: float) -> float:
    raw = environ.get(key)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r} is not a number") from None
    if not value >= minimum:
        raise ConfigError(f"{key}={value} is below the minimum {minimum}")
    return value


def env_bool(environ: Mapping[str, str], key: str, default: bool) -> bool:
    raw = environ.get(key)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{key}={raw!r} is not a boolean (use 1/0, true/false)")


def env_choice(environ: Mapping[str, str], key: str, default: str, choices: set[str]) -> str:
    value = (environ.get(key) or default).strip().lower()
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of {sorted(choices)}")
    return value


def setting(env: str, doc: str, default: Any = None, shown: str | None = None) -> Any:
    """A settings field that names its environment variable and says what it does.

    The configuration reference (docs/reference/settings.md) is generated from this
    metadata; ``shown`` replaces the default there when the default is computed.
    """
    metadata = {"env": env, "doc": doc, "shown": shown}
    return field(default=default, metadata=metadata)


def required(env: str, doc: str, shown: str = "(required)") -> Any:
    """A settings field with no default, documented like ``setting``."""
    return field(metadata={"env": env, "doc": doc, "shown": shown})


@dataclass(frozen=True)
class ServingConfig:
    """What one worker needs to load its model and answer requests."""

    model_path: Path = required("MODEL_FILEPATH", "The model, `model.onnx`.")
    labels_path: Path = required(
        "LABEL_FILEPATH", "The labels, `labels.json`.", shown="beside the model"
    )
    metadata_path: Path = required(
        "METADATA_FILEPATH", "The metadata, `metadata.json`.", shown="beside the model"
    )
    expected_sha256: str | None = setting(
        "MODEL_SHA256", "The model's sha256 recorded at build time; the file must match it."
    )
    expected_version: str | None = setting(
        "MODEL_VERSION", "When set, `metadata.json`'s `version` must equal it."
    )
    model_name: str | None = setting(
        "MODEL_NAME",
        "The model's name: in the V2 protocol, on /metadata and as every metric's `model` "
        "label. kiln's images set it to the name they were built for.",
        shown="`metadata.json`'s `name`, else `model`",
    )
    max_rows: int = setting("MAX_ROWS", "Rows per request (422 `too_many_rows` above).", 1024)
    max_body_bytes: int = setting(
        "MAX_BODY_BYTES", "Bytes in a request body (413 above).", DEFAULT_MAX_BODY_BYTES
    )
    intra_op_threads: int = setting(
        "ORT_INTRA_OP_THREADS",
        "ONNX Runtime's threads within an operator, per worker, so workers do not fight "
        "over cores.",
        1,
    )
    inter_op_threads: int = setting(
        "ORT_INTER_OP_THREADS", "ONNX Runtime's threads across operators, per worker.", 1
    )
    metrics_flush_seconds: float = setting(
        "METRICS_FLUSH_SECONDS",
        "How often a worker moves its counts into the shared metric files.",
        1.0,
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ServingConfig:
        model_raw = environ.get("MODEL_FILEPATH", "").strip()
        if not model_raw:
            raise ConfigError("MODEL_FILEPATH is not set (the path of model.onnx)")
        model_path = Path(model_raw)
        labels_raw = environ.get("LABEL_FILEPATH", "").strip()
        labels_path = Path(labels_raw) if labels_raw else model_path.parent / "labels.json"
        metadata_raw = environ.get("METADATA_FILEPATH", "").strip()
        metadata_path = Path(metadata_raw) if metadata_raw else model_path.parent / "metadata.json"
        sha = environ.get("MODEL_SHA256", "").strip().lower() or None
        return cls(
            model_path=model_path,
            labels_path=labels_path,
            metadata_path=metadata_path,
            expected_sha256=sha,
            expected_version=environ.get("MODEL_VERSION", "").strip() or None,
            model_name=environ.get("MODEL_NAME", "").strip() or None,
            max_rows=env_int(environ, "MAX_ROWS", 1024, minimum=1),
            max_body_bytes=env_int(environ, "MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, minimum=64),
            intra_op_threads=env_int(environ, "ORT_INTRA_OP_THREADS", 1, minimum=1),
            inter_op_threads=env_int(environ, "ORT_INTER_OP_THREADS", 1, minimum=1),
            metrics_flush_seconds=env_float(environ, "METRICS_FLUSH_SECONDS", 1.0, minimum=0.05),
        )

    @classmethod
    def for_model_dir(cls, model_dir: Path, **overrides: object) -> ServingConfig:
        """The config for a directory laid out as the artifact store writes it."""
        model_dir = Path(model_dir)
        values: dict = {
            "model_path": model_dir / "model.onnx",
            "labels_path": model_dir / "labels.json",
            "metadata_path": model_dir / "metadata.json",
        }
        values.update(overrides)
        return cls(**values)
