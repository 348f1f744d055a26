"""The training half of the pipeline as one plain call: load, train, gate, export, store.

The Prefect flow runs the same steps as separate cached tasks; this is for callers that
want the checkpoint without an orchestrator (tests, benchmarks, `kiln train`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flows.checkpoint import build_metadata, store_model
from flows.data import load_data
from flows.errors import DataError
from flows.export import check_parity, export_onnx
from flows.store import ArtifactStore
from flows.train import TrainParams, check_quality, train_model


@dataclass(frozen=True)
class TrainRequest:
    data: str = "iris"
    label_column: str = "label"
    params: TrainParams = TrainParams()
    gate_metric: str = "accuracy"
    gate_threshold: float = 0.9

    @classmethod
    def from_cli(
        cls,
        data: str,
        label_column: str,
        c: float,
        kernel: str,
        gamma: str,
        seed: int,
        gate_metric: str,
        gate_threshold: float,
    ) -> TrainRequest:
        params = TrainParams(C=c, kernel=kernel, gamma=parse_gamma(gamma), seed=seed)
        return cls(data, label_column, params, gate_metric, gate_threshold)


@dataclass(frozen=True)
class TrainOutcome:
    version: str
    data_source: str
    data_hash: str
    metrics: dict[str, Any]
    parity: dict[str, Any]


def parse_gamma(value: str) -> str | float:
    if value in ("scale", "auto"):
        return value
    try:
        return float(value)
    except ValueError:
        raise DataError(f"gamma must be 'scale', 'auto' or a number, got {value!r}") from None


def train_and_store(
    store: ArtifactStore, request: TrainRequest, progress: Callable[[str], Any] = lambda _: None
) -> TrainOutcome:
    progress(f"loading {request.data}...")
    data = load_data(request.data, request.label_column)
    progress(f"training on {data.n_rows} rows x {data.n_features} features...")
    result = train_model(data, request.params)
    check_quality(result.metrics, request.gate_metric, request.gate_threshold)
    progress("exporting to ONNX and checking parity...")
    onnx_bytes = export_onnx(result.model, data.n_features)
    parity = check_parity(onnx_bytes, result.model, result.X_holdout)
    progress("storing...")
    sample = result.X_holdout[:1].tolist()
    metadata = build_metadata(data, request.params, result.metrics, parity, sample)
    version = store_model(store, onnx_bytes, data, metadata)
    return TrainOutcome(version, data.source, data.content_hash, result.metrics, parity.as_dict())
