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
from kiln.training.data import Dataset
from kiln.training.params import TrainParams

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline


@dataclass(frozen=True)
class TrainResult:
    """A fitted model, its holdout metrics and the holdout rows.

    Pickled (as Prefect persists a cached result), the model travels as its own pickle,
    unpickled only when `model` is read: the gates and the store use the metrics and the
    holdout rows alone, so a resumed run never imports scikit-learn for them.
    """

    fitted: Any = field(repr=False)  # the fitted Pipeline, or its pickle after a round trip
    metrics: dict[str, Any]
    X_holdout: np.ndarray
    y_holdout: np.ndarray

    @property
    def model(self) -> Pipeline:
        if isinstance(self.fitted, bytes):
            return pickle.loads(self.fitted)  # kiln's own result, read as Prefect reads it
        return self.fitted

    def __reduce__(self) -> tuple[Any, ...]:
        packed = self.fitted
        if not isinstance(packed, bytes):
            packed = pickle.dumps(packed, protocol=pickle.HIGHEST_PROTOCOL)
        return (TrainResult, (packed, self.metrics, self.X_holdout, self.y_holdout))


def build_pipeline(params: TrainParams) -> Pipeline:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    # SVC(probability=True) is deprecated in scikit-learn 1.9; calibrating the SVC's decision
    # function is the replacement it names, and skl2onnx converts it.
    svc = SVC(C=params.C, kernel=params.kernel, gamma=params.gamma, random_state=params.seed)
    return Pipeline(
        [("scale", StandardScaler()), ("svm", CalibratedClassifierCV(svc, ensemble=False))]
    )


def train_model(data: Dataset, params: TrainParams) -> TrainResult:
    """Fit on a stratified split with a fixed seed; evaluate on the holdout."""
    from sklearn.model_selection import train_test_split

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
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

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
