"""Training, evaluation and the quality gate.

scikit-learn is imported inside the functions that fit or evaluate: a resumed run, whose
training is cached, reads its TrainResult back without loading scikit-learn at all.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from kiln.config.errors import DataError, QualityGateError
from kiln.training import metrics as scores
from kiln.training.data import Dataset
from kiln.training.models import Factory, build, describe, resolve
from kiln.training.params import TrainParams

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class TrainResult:
    """A fitted model, its holdout metrics, the holdout rows and what the model is.

    Pickled (as Prefect persists a cached result), the model travels as its own pickle,
    unpickled only when `model` is read: the gates and the store use the metrics and the
    holdout rows alone, so a resumed run never imports scikit-learn for them.
    """

    fitted: Any = field(repr=False)  # the fitted estimator, or its pickle after a round trip
    metrics: dict[str, Any]
    X_holdout: pd.DataFrame  # the holdout's feature columns, in training form
    y_holdout: np.ndarray
    description: dict[str, Any] = field(default_factory=dict)  # models.describe

    @property
    def model(self) -> Any:
        if isinstance(self.fitted, bytes):
            return pickle.loads(self.fitted)  # kiln's own result, read as Prefect reads it
        return self.fitted

    def __reduce__(self) -> tuple[Any, ...]:
        packed = self.fitted
        if not isinstance(packed, bytes):
            packed = pickle.dumps(packed, protocol=pickle.HIGHEST_PROTOCOL)
        return (
            TrainResult,
            (packed, self.metrics, self.X_holdout, self.y_holdout, self.description),
        )


def train_model(data: Dataset, params: TrainParams, factory: Factory | None = None) -> TrainResult:
    """Fit on a split with a fixed seed (stratified for a classification); evaluate on the
    holdout. The model is first fitted on a small sample and exported, so a step ONNX
    cannot take fails in seconds, not after the whole fit."""
    from sklearn.model_selection import train_test_split

    from kiln.training.export import check_convertible

    factory = factory or resolve(params)
    model = build(factory, data.schema, params.seed)
    stratify = data.y if data.task == "classification" else None
    try:
        X_train, X_test, y_train, y_test = train_test_split(
            data.frame,
            data.y,
            test_size=params.test_size,
            random_state=params.seed,
            stratify=stratify,
        )
    except ValueError as err:
        raise DataError(f"{data.source}: cannot split for training: {err}") from err
    check_convertible(model, data.schema, X_train, y_train)
    try:
        model.fit(X_train, y_train)
    except (ValueError, TypeError) as err:  # the user's steps on this data: one line
        raise DataError(f"{data.source}: training failed: {type(err).__name__}: {err}") from err
    metrics = evaluate(model, X_test, y_test, data)
    return TrainResult(
        model,
        metrics,
        X_test.reset_index(drop=True),
        np.asarray(y_test),
        describe(model, factory, data.task),
    )


def evaluate(model: Any, X: pd.DataFrame, y: np.ndarray, data: Dataset) -> dict[str, Any]:
    predicted = model.predict(X)
    if data.task == "regression":
        return scores.regression_metrics(y, predicted)
    return scores.classification_metrics(y, predicted, model.predict_proba(X), data.class_names)


@dataclass(frozen=True)
class QualityBar:
    """The absolute gate: `metric` at least `threshold` (at most, for an error metric), and
    every class's recall at least `min_class_recall` when set."""

    metric: str
    threshold: float
    min_class_recall: float | None = None


def check_quality(metrics: dict[str, Any], bar: QualityBar) -> None:
    """The quality gate: raises when the model falls short of the bar."""
    metric = bar.metric
    if metric not in metrics:
        raise QualityGateError(f"quality gate: unknown metric {metric!r}")
    if metrics[metric] is None:
        raise QualityGateError(f"quality gate: {metric} is undefined on this holdout")
    value = float(metrics[metric])
    if not scores.better_or_equal(metric, value, bar.threshold):
        side = "above the limit" if metric in scores.LOWER_IS_BETTER else "below the threshold"
        raise QualityGateError(
            f"quality gate: {metric} = {value:.4f} is {side} {bar.threshold:.4f}; "
            "the model was not exported or stored"
        )
    lowest = scores.lowest_recall(metrics)
    if bar.min_class_recall is not None and lowest is not None and lowest[1] < bar.min_class_recall:
        raise QualityGateError(
            f"quality gate: class {lowest[0]!r} has recall {lowest[1]:.4f}, below the floor "
            f"{bar.min_class_recall:.4f} (KILN_GATE_MIN_CLASS_RECALL); the model was not "
            "exported or stored"
        )
