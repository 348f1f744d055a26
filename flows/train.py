"""Training, evaluation and the quality gate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from flows.data import Dataset
from flows.errors import DataError, QualityGateError
from flows.params import TrainParams


@dataclass(frozen=True)
class TrainResult:
    model: Pipeline
    metrics: dict[str, Any]
    X_holdout: np.ndarray
    y_holdout: np.ndarray


def build_pipeline(params: TrainParams) -> Pipeline:
    # SVC(probability=True) is deprecated in scikit-learn 1.9; calibrating the SVC's decision
    # function is the replacement it names, and skl2onnx converts it.
    svc = SVC(C=params.C, kernel=params.kernel, gamma=params.gamma, random_state=params.seed)
    return Pipeline(
        [("scale", StandardScaler()), ("svm", CalibratedClassifierCV(svc, ensemble=False))]
    )


def train_model(data: Dataset, params: TrainParams) -> TrainResult:
    """Fit on a stratified split with a fixed seed; evaluate on the holdout."""
    try:
        X_train, X_test, y_train, y_test = train_test_split(
            data.X, data.y, test_size=params.test_size, random_state=params.seed, stratify=data.y
        )
    except ValueError as err:
        raise DataError(f"{data.source}: cannot split for training: {err}") from err
    model = build_pipeline(params)
    try:
        model.fit(X_train, y_train)
    except ValueError as err:
        raise DataError(f"{data.source}: training failed: {err}") from err
    metrics = evaluate(model, X_test, y_test, data.class_names)
    return TrainResult(model, metrics, X_test, y_test)


def evaluate(
    model: Pipeline, X: np.ndarray, y: np.ndarray, class_names: tuple[str, ...]
) -> dict[str, Any]:
    predicted = model.predict(X)
    labels = list(range(len(class_names)))
    report = classification_report(
        y,
        predicted,
        labels=labels,
        target_names=list(class_names),
        output_dict=True,
        zero_division=0,
    )
    return {
        "accuracy": float(accuracy_score(y, predicted)),
        "f1_macro": float(f1_score(y, predicted, average="macro", zero_division=0)),
        "per_class": {name: report[name] for name in class_names},
        "confusion_matrix": confusion_matrix(y, predicted, labels=labels).tolist(),
        "holdout_rows": int(len(y)),
    }


def check_quality(metrics: dict[str, Any], metric: str, threshold: float) -> None:
    """The quality gate: raises when the model scored below the threshold."""
    if metric not in metrics:
        raise QualityGateError(f"quality gate: unknown metric {metric!r}")
    value = float(metrics[metric])
    if value < threshold:
        raise QualityGateError(
            f"quality gate: {metric} = {value:.4f} is below the threshold {threshold:.4f}; "
            "the model was not exported or stored"
        )
