"""Read and verify the model directory contract, without ONNX Runtime.

The artifact store writes ``model.onnx``, ``labels.json`` and ``metadata.json``; the
image puts them under ``/models``. This module checks that the three files are there,
well formed and consistent: the model's sha256 matches ``MODEL_SHA256`` (when set) and
``metadata.json``'s ``model_sha256``. The gunicorn master runs these checks before it
forks any worker, so it stays free of ONNX Runtime, and keeps what it verified
(``keep_verified``): every worker it forks, a restarted one too, serves those bytes
(``verified_artifacts``), whatever happens to the files after start-up.

Version 2 of the contract (docs/model-directory.md) adds ``task`` and ``schema`` to
metadata.json; serving/contract.py parses them, here, so a malformed schema also stops
the master before any worker starts.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from serving.config import ServingConfig
from serving.contract import (
    CLASSIFICATION,
    REGRESSION,
    ContractError,
    ModelSchema,
    parse_schema,
    parse_task,
)


class ModelLoadError(Exception):
    """The model cannot be served; the message is the one log line start-up prints."""


@dataclass(frozen=True)
class ModelArtifacts:
    """The verified contents of a model directory."""

    model_path: Path
    model_bytes: bytes = field(repr=False)
    sha256: str
    labels: tuple[str, ...]
    metadata: dict[str, Any]
    task: str = CLASSIFICATION
    schema: ModelSchema | None = None  # None: a version-1 directory

    @property
    def version(self) -> str:
        return str(self.metadata["version"])

    @property
    def sample_input(self) -> list[list[Any]]:
        return self.metadata["sample_input"]


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ModelLoadError(f"{what} {path} does not exist") from None
    except OSError as err:
        raise ModelLoadError(f"reading {what} {path}: {err.strerror or err}") from None


def _read_json_object(path: Path, what: str) -> dict[str, Any]:
    raw = _read_bytes(path, what)
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise ModelLoadError(f"{what} {path} is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise ModelLoadError(f"{what} {path} must hold a JSON object, not {type(value).__name__}")
    return value


def parse_labels(raw: dict[str, Any], path: Path, task: str = CLASSIFICATION) -> tuple[str, ...]:
    """``{"0": "setosa", "1": "versicolor"}`` -> ``("setosa", "versicolor")``; a regressor's
    labels.json is ``{}``."""
    if task == REGRESSION:
        if raw:
            raise ModelLoadError(f"labels {path} names classes, but the model is a regressor")
        return ()
    by_index: dict[int, str] = {}
    for key, name in raw.items():
        try:
            index = int(key)
        except ValueError:
            raise ModelLoadError(
                f'labels {path}: key {key!r} is not a class index ("0", "1", ...)'
            ) from None
        if not isinstance(name, str) or not name:
            raise ModelLoadError(
                f"labels {path}: the label of class {key} must be a non-empty string"
            )
        by_index[index] = name
    if not by_index:
        raise ModelLoadError(f"labels {path} is empty")
    if sorted(by_index) != list(range(len(by_index))):
        raise ModelLoadError(
            f"labels {path}: class indices must be 0..{len(by_index) - 1}, got {sorted(by_index)}"
        )
    return tuple(by_index[i] for i in range(len(by_index)))


def _check_metadata(metadata: dict[str, Any], path: Path) -> tuple[str, ModelSchema | None]:
    """Check the keys the server reads; return the task and the schema (None: version 1)."""
    for key in ("version", "model_sha256", "sample_input"):
        if key not in metadata:
            raise ModelLoadError(f"metadata {path} has no {key!r}")
    if not isinstance(metadata["version"], str) or not metadata["version"]:
        raise ModelLoadError(f"metadata {path}: 'version' must be a non-empty string")
    if not isinstance(metadata["model_sha256"], str):
        raise ModelLoadError(f"metadata {path}: 'model_sha256' must be a hex string")
    try:
        task = parse_task(metadata)
        schema = parse_schema(metadata)
    except ContractError as err:
        raise ModelLoadError(f"metadata {path}: {err}") from None
    sample = metadata["sample_input"]
    rows_ok = isinstance(sample, list) and sample and all(isinstance(r, list) for r in sample)
    if schema is None:
        values_ok = rows_ok and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for row in sample
            for v in row
        )
    else:  # typed per column; the model's warm-up decodes it like a request
        values_ok = rows_ok and all(
            v is None or isinstance(v, str | int | float) for row in sample for v in row
        )
    if not values_ok:
        raise ModelLoadError(f"metadata {path}: 'sample_input' must be a non-empty list of rows")
    names = metadata.get("feature_names")
    if schema is not None and isinstance(names, list) and names != schema.names:
        raise ModelLoadError(
            f"metadata {path}: 'feature_names' {_short(names)} differ from the schema's "
            f"features {_short(schema.names)}"
        )
    return task, schema


def _short(values: list[Any], limit: int = 8) -> str:
    shown = ", ".join(repr(v) for v in values[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}]"


def _check_classes(schema: ModelSchema | None, labels: tuple[str, ...], path: Path) -> None:
    """The schema's target classes, when recorded, are labels.json's names, in index order."""
    target = schema.target if schema is not None else None
    if target is None or target.classes is None:
        return
    if target.classes != labels:
        raise ModelLoadError(
            f"labels {path} names {_short(list(labels))}, but the schema's target classes "
            f"are {_short(list(target.classes))}"
        )


def read_artifacts(config: ServingConfig) -> ModelArtifacts:
    """Read the model directory and check it; raise ModelLoadError naming the problem."""
    model_bytes = _read_bytes(config.model_path, "model")
    sha256 = hashlib.sha256(model_bytes).hexdigest()
    if config.expected_sha256 is not None and sha256 != config.expected_sha256:
        raise ModelLoadError(
            f"model {config.model_path} has sha256 {sha256}, "
            f"but MODEL_SHA256 (recorded at build time) is {config.expected_sha256}"
        )
    metadata = _read_json_object(config.metadata_path, "metadata")
    task, schema = _check_metadata(metadata, config.metadata_path)
    recorded = metadata["model_sha256"].strip().lower()
    if sha256 != recorded:
        raise ModelLoadError(
            f"model {config.model_path} has sha256 {sha256}, "
            f"but {config.metadata_path.name} records {recorded}"
        )
    if config.expected_version is not None and metadata["version"] != config.expected_version:
        raise ModelLoadError(
            f"metadata {config.metadata_path} is version {metadata['version']}, "
            f"but MODEL_VERSION is {config.expected_version}"
        )
    raw_labels = _read_json_object(config.labels_path, "labels")
    labels = parse_labels(raw_labels, config.labels_path, task)
    if task == CLASSIFICATION:
        _check_classes(schema, labels, config.labels_path)
    return ModelArtifacts(
        model_path=config.model_path,
        model_bytes=model_bytes,
        sha256=sha256,
        labels=labels,
        metadata=metadata,
        task=task,
        schema=schema,
    )


_verified: tuple[ServingConfig, ModelArtifacts] | None = None


def keep_verified(config: ServingConfig, artifacts: ModelArtifacts) -> None:
    """Remember the artifacts verified for ``config`` (the master, before it forks)."""
    global _verified
    _verified = (config, artifacts)


def verified_artifacts(config: ServingConfig) -> ModelArtifacts:
    """The artifacts kept for this very config (inherited from the master), else read and
    verify the files now."""
    if _verified is not None and _verified[0] == config:
        return _verified[1]
    return read_artifacts(config)
