"""How a model scores on its holdout, by task: the figures stored with it, the quality
gate's and the champion gate's metric. Computed from predictions alone, so the champion
gate scores ONNX outputs with the same functions as training scores scikit-learn's."""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.training.schema import Task

CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc")
REGRESSION_METRICS = ("r2", "rmse", "mae")
LOWER_IS_BETTER = frozenset({"rmse", "mae"})
DEFAULT_METRIC = {"classification": "accuracy", "regression": "r2"}


def metrics_for(task: Task) -> tuple[str, ...]:
    return CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS


def better_or_equal(metric: str, value: float, than: float) -> bool:
    return value <= than if metric in LOWER_IS_BETTER else value >= than


def classification_metrics(
    y: np.ndarray, predicted: np.ndarray, probabilities: np.ndarray, class_names: tuple[str, ...]
) -> dict[str, Any]:
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        classification_report,
        confusion_matrix,
        f1_score,
    )

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
        "balanced_accuracy": float(balanced_accuracy_score(y, predicted)),
        "f1_macro": float(f1_score(y, predicted, average="macro", zero_division=0)),
        "roc_auc": roc_auc(y, probabilities, len(class_names)),
        "per_class": {name: report[name] for name in class_names},
        "confusion_matrix": confusion_matrix(y, predicted, labels=labels).tolist(),
        "holdout_rows": int(len(y)),
    }


def roc_auc(y: np.ndarray, probabilities: np.ndarray, n_classes: int) -> float | None:
    """Binary: on the second class's probability; more classes: one-vs-rest, macro. None
    when the holdout lacks a class (the area is undefined)."""
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < n_classes:
        return None
    if n_classes == 2:
        return float(roc_auc_score(y, probabilities[:, 1]))
    return float(roc_auc_score(y, probabilities, multi_class="ovr", average="macro"))


def regression_metrics(y: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    return {
        "r2": float(r2_score(y, predicted)),
        "rmse": float(np.sqrt(mean_squared_error(y, predicted))),
        "mae": float(mean_absolute_error(y, predicted)),
        "holdout_rows": int(len(y)),
    }


def score(
    metric: str, task: Task, y: np.ndarray, predicted: np.ndarray, probabilities: np.ndarray | None
) -> float | None:
    """One metric from predictions (class indices and probabilities, or values)."""
    if task == "regression":
        return regression_metrics(y, predicted)[metric]
    if metric == "roc_auc":
        assert probabilities is not None
        return roc_auc(y, probabilities, probabilities.shape[1])
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    functions = {
        "accuracy": lambda: accuracy_score(y, predicted),
        "balanced_accuracy": lambda: balanced_accuracy_score(y, predicted),
        "f1_macro": lambda: f1_score(y, predicted, average="macro", zero_division=0),
    }
    return float(functions[metric]())


def lowest_recall(metrics: dict[str, Any]) -> tuple[str, float] | None:
    """The class with the lowest holdout recall, and that recall (classification)."""
    per_class = metrics.get("per_class") or {}
    if not per_class:
        return None
    name = min(per_class, key=lambda n: per_class[n]["recall"])
    return name, float(per_class[name]["recall"])
