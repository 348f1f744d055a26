"""Turning a trained, exported and checked model into a stored version (the checkpoint)."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any

import onnxruntime as ort

from flows.data import Dataset
from flows.export import TARGET_OPSET, ParityReport
from flows.store import ArtifactStore
from flows.train import TrainParams

TRACKED_LIBRARIES = ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy", "kiln")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


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


def build_metadata(
    data: Dataset,
    params: TrainParams,
    metrics: dict[str, Any],
    parity: ParityReport,
    sample_input: list[list[float]],
) -> dict[str, Any]:
    return {
        "data_hash": data.content_hash,
        "data_source": data.source,
        "data_rows": data.n_rows,
        "feature_names": list(data.feature_names),
        "params": params.as_dict(),
        "metrics": metrics,
        "parity": parity.as_dict(),
        "sample_input": sample_input,
        "onnx": {"opset": TARGET_OPSET, "onnxruntime": ort.__version__},
        "libraries": library_versions(),
        "code_revision": code_revision(),
    }


def store_model(
    store: ArtifactStore, onnx_bytes: bytes, data: Dataset, metadata: dict[str, Any]
) -> str:
    labels = dict(enumerate(data.class_names))
    return store.put(onnx_bytes, labels, metadata)
