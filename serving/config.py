"""The server's settings, read from the environment once, at start-up.

The environment comes in as a mapping (``from_env(os.environ)``), so tests hand in a
plain dict. Every name is documented in README.md, section "Serving".
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


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


@dataclass(frozen=True)
class ServingConfig:
    """What one worker needs to load its model and answer requests."""

    model_path: Path
    labels_path: Path
    metadata_path: Path
    expected_sha256: str | None = None
    expected_version: str | None = None
    model_name: str | None = None
    max_rows: int = 1024
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    metrics_flush_seconds: float = 1.0

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
