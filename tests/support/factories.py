"""Shared test helpers: small datasets, trained and exported models, and the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

from kiln.training.data import Dataset, load_iris_dataset
from kiln.training.export import export_onnx
from kiln.training.params import TrainParams
from kiln.training.train import TrainResult, train_model


@lru_cache(maxsize=4)
def iris_trained(seed: int = 42) -> tuple[Dataset, TrainResult, bytes]:
    """Iris, a model trained on it and its ONNX bytes (cached: tests must not mutate them)."""
    data = load_iris_dataset()
    result = train_model(data, TrainParams(seed=seed))
    return data, result, export_onnx(result.model, data.schema)[0]


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    lines = [",".join(header)] + [",".join(str(c) for c in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_kiln(
    *args: str,
    store: object | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """`kiln ARGS` through its real entry point in a new process (exit status, stdout, stderr).

    `store` (a path, URL or ArtifactStore) becomes KILN_STORE; `env` is added to this
    process's environment.
    """
    extra = dict(env or {})
    if store is not None:
        extra["KILN_STORE"] = str(getattr(store, "url", store))
    return subprocess.run(
        [sys.executable, "-m", "kiln.cli.app", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **extra},
        timeout=timeout,
    )
