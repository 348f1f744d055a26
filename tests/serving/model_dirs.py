"""Factories for model directories laid out as the artifact store writes them.

Used by tests/serving/conftest.py and by bench/bench_serve.py. Training needs
scikit-learn and skl2onnx (the dev extra); the server under test does not.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

IRIS_LABELS = {"0": "setosa", "1": "versicolor", "2": "virginica"}
IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
SAMPLE_INPUT = [[5.1, 3.5, 1.4, 0.2]]


@lru_cache(maxsize=1)
def iris_onnx_bytes() -> bytes:
    """A small iris classifier exported to ONNX (zipmap disabled), trained once per process."""
    from skl2onnx import to_onnx
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.datasets import load_iris
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    x, y = load_iris(return_X_y=True)
    x = x.astype("float32")
    pipeline = Pipeline(
        [
            ("scale", StandardScaler()),
            ("clf", CalibratedClassifierCV(SVC(), ensemble=False)),
        ]
    )
    pipeline.fit(x, y)
    with warnings.catch_warnings():
        # skl2onnx reads SVC.probA_/probB_, deprecated in scikit-learn 1.9.
        warnings.filterwarnings("ignore", category=FutureWarning)
        onx = to_onnx(
            pipeline,
            x[:1],
            options={"zipmap": False},
            target_opset={"": 17, "ai.onnx.ml": 3},
        )
    return onx.SerializeToString()


def write_model_dir(
    path: Path,
    *,
    model_bytes: bytes | None = None,
    labels: dict[str, str] | None = None,
    metadata_overrides: dict | None = None,
    version: str = "3f2a9c1b7d4e",
) -> Path:
    """Write model.onnx, labels.json and metadata.json into ``path``; return ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model_bytes = iris_onnx_bytes() if model_bytes is None else model_bytes
    (path / "model.onnx").write_bytes(model_bytes)
    (path / "labels.json").write_text(json.dumps(IRIS_LABELS if labels is None else labels))
    metadata = {
        "version": version,
        "created": datetime(2026, 11, 26, 9, 0, tzinfo=UTC).isoformat().replace("+00:00", "Z"),
        "model_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "metrics": {"accuracy": 0.97, "f1_macro": 0.97},
        "sample_input": SAMPLE_INPUT,
        "feature_names": IRIS_FEATURES,
        # Keys the server does not use, which it must tolerate.
        "data_sha256": "ab" * 32,
        "params": {"C": 1.0},
        "sklearn_version": "1.9.1",
    }
    metadata.update(metadata_overrides or {})
    (path / "metadata.json").write_text(json.dumps(metadata, indent=2))
    return path
