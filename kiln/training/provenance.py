"""Where a model came from: the metadata stored with it, and the code its cache keys cover."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import platform
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.training.data import Dataset
from kiln.training.export import TARGET_OPSET, ParityReport
from kiln.training.params import TrainParams
from kiln.training.schema import TableSchema

if TYPE_CHECKING:
    from kiln.training.train import TrainResult

TRACKED_LIBRARIES = ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy", "kiln")
# The modules whose source a model depends on: read as text, not imported, so that a run
# whose training is cached never loads scikit-learn or ONNX Runtime to compute its cache key.
FINGERPRINTED_MODULES = (
    "kiln.training.params",
    "kiln.training.schema",
    "kiln.training.table",
    "kiln.training.data",
    "kiln.training.models",
    "kiln.training.metrics",
    "kiln.training.train",
    "kiln.training.export",
    "kiln.training.converters",
)
TRACKED_OPTIONAL = ("pandas", "pyarrow", "lightgbm", "xgboost", "onnxmltools")


def library_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    versions.update((name, library_version(name)) for name in TRACKED_LIBRARIES)
    versions.update((name, library_version(name)) for name in TRACKED_OPTIONAL)
    return versions


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """What a trained and exported model depends on besides its data and parameters."""
    digest = hashlib.sha256()
    for name in FINGERPRINTED_MODULES:
        digest.update(module_source(name).encode())
    digest.update(json.dumps(library_versions(), sort_keys=True).encode())
    return digest.hexdigest()


def module_source(name: str) -> str:
    """A module's source text, as inspect.getsource gives it, without importing the module."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"no source for {name}")
    with open(spec.origin, encoding="utf-8") as source:  # text mode: newlines as linecache
        return source.read()


def code_revision(where: Path | None = None) -> str | None:
    """The git commit kiln runs from (with '-dirty' for local changes), or None outside git."""
    cwd = where or Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{head}-dirty" if dirty else head


def model_fingerprint(params: TrainParams) -> str:
    """The user's model module source (sha256), part of the training cache key: a changed
    factory retrains. Presets are kiln's own code, which code_fingerprint covers."""
    from kiln.training.models import resolve

    return resolve(params).fingerprint


def build_metadata(
    data: Dataset,
    params: TrainParams,
    result: TrainResult,
    exported: tuple[ParityReport, TableSchema],
    sample_input: list[list[Any]],
) -> dict[str, Any]:
    """metadata.json's content besides what the store adds; `exported`: the export's parity
    report and the schema with its ONNX inputs."""
    parity, schema = exported
    return {
        "data_hash": data.content_hash,
        "data_source": data.source,
        "data_rows": data.n_rows,
        "task": data.task,
        "feature_names": list(data.feature_names),
        "schema": schema.as_dict(),
        "model": result.description,
        "params": params.model_params(),
        "metrics": result.metrics,
        "parity": parity.as_dict(),
        "sample_input": sample_input,
        "onnx": {"opset": TARGET_OPSET, "onnxruntime": library_version("onnxruntime")},
        "libraries": library_versions(),
        "code_revision": code_revision(),
    }
