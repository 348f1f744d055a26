"""The training sequence: load, train, quality gate, export (+ parity), champion gate, store.

Each step is a plain function, and `run_training` is the one place that puts them in
order. The Prefect flow (flows/pipeline.py) hands it its tasks, thin wrappers of these
same functions; `kiln train`, the benchmarks and the tests hand it the functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

from kiln.store.artifact_store import ArtifactStore, encode_labels, version_id
from kiln.training.data import DataLimits, Dataset, load_data
from kiln.training.export import ParityReport, check_parity, export_onnx
from kiln.training.models import resolve
from kiln.training.params import TrainParams
from kiln.training.promotion import SAME, Challenger, Decision, GatePolicy, decide
from kiln.training.provenance import build_metadata
from kiln.training.schema import TableSchema, json_row, sample_request
from kiln.training.train import TrainResult, check_quality, train_model


@dataclass(frozen=True)
class Exported:
    onnx_bytes: bytes
    parity: ParityReport
    schema: TableSchema  # the data's, with the layout and ONNX input names of this export


@dataclass(frozen=True)
class TrainOutcome:
    version: str
    data_source: str
    data_hash: str
    metrics: dict[str, Any]
    parity: ParityReport
    decision: Decision
    sample_input: dict[str, Any]  # a POST /predict body for one holdout row
    task: str = "classification"
    model: str = "svm"


# -- the steps, in order ---------------------------------------------------------------------


def load_step(params: TrainParams, limits: DataLimits = DataLimits()) -> Dataset:  # noqa: B008
    return load_data(params.data, params.label_column, limits, **params.columns())


def train_step(data: Dataset, params: TrainParams) -> TrainResult:
    return train_model(data, params)


def quality_gate_step(
    metrics: dict[str, Any], policy: GatePolicy, task: str = "classification"
) -> None:
    check_quality(metrics, policy.for_task(task).bar())  # type: ignore[arg-type]


def export_step(
    data: Dataset, params: TrainParams, result: TrainResult, tolerance: float | None = None
) -> Exported:
    """Export to ONNX and check it against scikit-learn (`params` is part of its cache key)."""
    onnx_bytes, schema = export_onnx(result.model, data.schema)
    parity = check_parity(onnx_bytes, result.model, result.X_holdout, schema, tolerance)
    return Exported(onnx_bytes, parity, schema)


def champion_gate_step(
    store: ArtifactStore,
    policy: GatePolicy,
    data: Dataset,
    result: TrainResult,
    exported: Exported,
) -> Decision:
    labels = encode_labels(dict(enumerate(data.class_names)))
    challenger = Challenger(
        version=version_id(exported.onnx_bytes, labels),  # the id the store will give it
        onnx_bytes=exported.onnx_bytes,
        schema=exported.schema,
        X_holdout=result.X_holdout,
        y_holdout=result.y_holdout,
        metrics=result.metrics,
    )
    return decide(store, policy, challenger)


def store_step(
    store: ArtifactStore,
    data: Dataset,
    params: TrainParams,
    result: TrainResult,
    exported: Exported,
    decision: Decision,
) -> str:
    """Store the model with its provenance (a refused one too, for audit), and the decision
    when it met a target's champion."""
    sample = [json_row(exported.schema, result.X_holdout, 0)]
    metadata = build_metadata(data, params, result, (exported.parity, exported.schema), sample)
    version = store.put(exported.onnx_bytes, dict(enumerate(data.class_names)), metadata)
    if decision.target is not None:
        store.record_decision(version, decision.as_dict())
    return version


@dataclass(frozen=True)
class TrainingSteps:
    """The sequence's steps; the flow swaps in its Prefect tasks, which wrap the same functions."""

    load: Callable[..., Dataset] = load_step
    train: Callable[..., TrainResult] = train_step
    quality_gate: Callable[..., None] = quality_gate_step
    export: Callable[..., Exported] = export_step
    champion_gate: Callable[..., Decision] = champion_gate_step
    store: Callable[..., str] = store_step

    def announced(self, progress: Callable[[str], Any]) -> TrainingSteps:
        """The same steps, each telling `progress` what it is about to do."""

        def announce(name: str, step: Callable[..., Any]) -> Callable[..., Any]:
            def run(*args: Any) -> Any:
                progress(PROGRESS[name])
                return step(*args)

            return run

        return replace(
            self, **{f.name: announce(f.name, getattr(self, f.name)) for f in fields(self)}
        )


PROGRESS = {
    "load": "loading data...",
    "train": "training...",
    "quality_gate": "checking the quality gate...",
    "export": "exporting to ONNX and checking parity...",
    "champion_gate": "comparing with the champion...",
    "store": "storing...",
}


def run_training(
    store: ArtifactStore,
    params: TrainParams,
    policy: GatePolicy = GatePolicy(),  # noqa: B008 (frozen)
    steps: TrainingSteps = TrainingSteps(),  # noqa: B008 (frozen)
    limits: DataLimits = DataLimits(),  # noqa: B008 (frozen)
    tolerance: float | None = None,
) -> TrainOutcome:
    """The training sequence, start to stored version; a refused challenger is stored too."""
    resolve(params)  # an unknown model or a bad argument: one line before any data is read
    data = steps.load(params, limits)
    policy.for_task(data.task)  # a metric that does not fit the task: before training
    result = steps.train(data, params)
    steps.quality_gate(result.metrics, policy, data.task)
    exported = steps.export(data, params, result, tolerance)
    decision = steps.champion_gate(store, policy, data, result, exported)
    if decision.outcome == SAME:
        version = decision.challenger  # stored and running already: nothing to write
    else:
        version = steps.store(store, data, params, result, exported, decision)
    return TrainOutcome(
        version=version,
        data_source=data.source,
        data_hash=data.content_hash,
        metrics=result.metrics,
        parity=exported.parity,
        decision=decision,
        sample_input=sample_request(exported.schema, [json_row(exported.schema, result.X_holdout)]),
        task=data.task,
        model=params.model,
    )
