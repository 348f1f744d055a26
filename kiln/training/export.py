"""ONNX export with skl2onnx, and the parity check that judges it.

The inputs follow the table's schema (schema.py: one float tensor, or one input per column);
classifiers give `label` (class indices) and `probabilities` (no ZipMap), regressors
`variable`. LightGBM and XGBoost estimators inside a Pipeline convert through onnxmltools,
registered when a model holds one (they are training-side libraries: the server never
needs them).

Parity: scikit-learn and ONNX Runtime answer the holdout rows and probe rows kiln makes (a
missing value in each column that may be null, an unseen category in each text column;
columns without missing values in training refuse null at serving): the same labels
(a different one only where scikit-learn's own two probabilities are within the tolerance,
a tie), probabilities within the tolerance, regression values within it relative to their
size. The tolerance: KILN_PARITY_TOLERANCE, else a default per model family, since tree
ensembles compare float32 thresholds and drift more.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from kiln.config.errors import ParameterError, ParityError
from kiln.training.converters import repair_integer_attributes
from kiln.training.models import estimator_parts, family, uses_columns_by_name
from kiln.training.schema import COLUMNS, TENSOR, TENSOR_INPUT, TableSchema, onnx_feed

if TYPE_CHECKING:
    import pandas as pd

# Pinned so the same model always exports to the same bytes (and the same version id).
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
# Defaults per model family and task; bench/bench_parity.py measures what each needs (the
# figures and their dates: docs/benchmarks.md). Tree ensembles compare float32 thresholds,
# so a value next to one goes the other way in ONNX Runtime.
PARITY_TOLERANCE = {
    ("linear", "classification"): 1e-5,
    ("linear", "regression"): 1e-5,
    ("tree", "classification"): 0.1,
    ("tree", "regression"): 0.05,
}
SAMPLE_ROWS = 200  # rows the convertibility check fits on
UNSEEN = "__kiln_unseen_category__"
_NO_CONVERTER = re.compile(r"Unable to find a shape calculator for type '<class '([\w.]+)'>'")


@dataclass(frozen=True)
class ParityReport:
    rows: int
    max_abs_diff: float
    worst_row: int
    labels_equal: bool
    tolerance: float = 1e-5
    probes: int = 0
    ties: int = 0  # rows whose labels differ where scikit-learn's probabilities tie

    def as_dict(self) -> dict[str, float | int | bool]:
        return {
            "rows": self.rows,
            "max_abs_diff": self.max_abs_diff,
            "worst_row": self.worst_row,
            "labels_equal": self.labels_equal,
            "tolerance": self.tolerance,
            "probes": self.probes,
            "ties": self.ties,
        }


def choose_layout(model: Any, schema: TableSchema) -> str:
    """One float tensor when every column is a number and the model takes columns by
    position; one input per column otherwise."""
    return TENSOR if schema.all_numeric and not uses_columns_by_name(model) else COLUMNS


def export_onnx(model: Any, schema: TableSchema) -> tuple[bytes, TableSchema]:
    """The model as ONNX bytes, and the schema with its layout and ONNX input names."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    repair_integer_attributes()
    _register_optional_converters(model)
    layout = choose_layout(model, schema)
    if layout == TENSOR:
        types: list[tuple[str, Any]] = [
            (TENSOR_INPUT, FloatTensorType([None, len(schema.features)]))
        ]
    else:
        types = [
            (
                f.name,
                StringTensorType([None, 1]) if f.type == "text" else FloatTensorType([None, 1]),
            )
            for f in schema.features
        ]
    options = {"zipmap": False} if schema.task == "classification" else None
    with warnings.catch_warnings():
        # skl2onnx reads SVC.probA_/probB_, which scikit-learn 1.9 flags as deprecated.
        warnings.filterwarnings("ignore", message="Attribute `prob[AB]_`", category=FutureWarning)
        try:
            onnx_model = to_onnx(
                model, initial_types=types, options=options, target_opset=TARGET_OPSET
            )
        except RuntimeError as err:
            raise ParameterError(f"exporting to ONNX: {_unsupported(err)}") from None
    inputs = [node.name for node in onnx_model.graph.input]
    return onnx_model.SerializeToString(), schema.with_layout(layout, inputs)


def check_convertible(model: Any, schema: TableSchema, X: pd.DataFrame, y: np.ndarray) -> None:
    """Fit a copy of the model on a small sample and export it: a step with no ONNX
    converter is one ParameterError naming it, before the expensive fit."""
    from sklearn.base import clone

    sample = _sample(X, y, schema)
    trial = clone(model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a tiny sample warns (convergence, bins)
            trial.fit(X.iloc[sample], y[sample])
    except Exception:  # noqa: BLE001 - a sample this model cannot fit: the real fit says why
        return
    export_onnx(trial, schema)


def _sample(X: pd.DataFrame, y: np.ndarray, schema: TableSchema) -> np.ndarray:
    """Up to SAMPLE_ROWS row positions, and two rows of every class (classification)."""
    positions = [np.arange(min(len(X), SAMPLE_ROWS))]
    if schema.task == "classification":
        positions += [np.flatnonzero(y == label)[:2] for label in np.unique(y)]
    return np.unique(np.concatenate(positions))


def _unsupported(err: Exception) -> str:
    match = _NO_CONVERTER.search(str(err))
    if match:
        name = match.group(1).rsplit(".", 1)[-1]
        return (
            f"the model's step {name} has no ONNX converter (skl2onnx); use steps skl2onnx "
            "supports (a FunctionTransformer wrapping Python code has none)"
        )
    return str(err).strip().splitlines()[0].split(" You may raise an issue")[0]


def _register_optional_converters(model: Any) -> None:
    """LightGBM and XGBoost estimators convert through onnxmltools, once registered."""
    modules = {type(part).__module__.split(".")[0] for part in estimator_parts(model)}
    if "lightgbm" in modules:
        from kiln.training.converters import register_lightgbm

        register_lightgbm()
    if "xgboost" in modules:
        from kiln.training.converters import register_xgboost

        register_xgboost()


def default_tolerance(model: Any, task: str) -> float:
    return PARITY_TOLERANCE[(family(model), task)]


def check_parity(
    onnx_bytes: bytes,
    model: Any,
    holdout: pd.DataFrame,
    schema: TableSchema,
    tolerance: float | None = None,
) -> ParityReport:
    """ONNX Runtime against scikit-learn on the holdout and the probe rows."""
    import onnxruntime as ort  # here, like skl2onnx: a cached export never loads it

    tolerance = default_tolerance(model, schema.task) if tolerance is None else tolerance
    try:
        session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own untyped errors for a bad file
        raise ParityError(f"parity check: ONNX Runtime cannot load the model: {err}") from err
    rows, names = _with_probes(model, holdout, schema)
    feed = onnx_feed(schema, rows)
    outputs = session.run(None, feed)
    if schema.task == "regression":
        return _regression_parity(outputs[0], model.predict(rows), names, tolerance, len(holdout))
    return _classification_parity(outputs, model, rows, names, tolerance, len(holdout))


def _with_probes(
    model: Any, holdout: pd.DataFrame, schema: TableSchema
) -> tuple[pd.DataFrame, list[str]]:
    """The holdout rows, then a copy of its first row per probe that scikit-learn answers:
    each column missing, each text column an unseen category."""
    import pandas as pd

    names = [f"holdout row {i}" for i in range(len(holdout))]
    probes, probe_names = [], []
    for spec in schema.features:
        # Missing only where the server takes null (columns with missing values in training).
        changes = [("missing", "" if spec.type == "text" else np.nan)] if spec.nullable else []
        if spec.type == "text":
            changes.append(("an unseen category", UNSEEN))
        for what, value in changes:
            probe = holdout.iloc[:1].copy()
            probe[spec.name] = value
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # unknown categories warn
                    model.predict(probe)
            except ValueError:
                continue  # scikit-learn refuses it too: the server's schema refuses it
            probes.append(probe)
            probe_names.append(f"probe row ({spec.name} {what})")
    rows = pd.concat([holdout, *probes], ignore_index=True) if probes else holdout
    return rows, names + probe_names


def _classification_parity(
    outputs: list[np.ndarray],
    model: Any,
    rows: pd.DataFrame,
    names: list[str],
    tolerance: float,
    holdout: int,
) -> ParityReport:
    onnx_labels, onnx_probs = outputs[0].astype(np.int64), outputs[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk_probs = model.predict_proba(rows)
        sk_labels = model.predict(rows)
    if onnx_probs.shape != sk_probs.shape:
        raise ParityError(
            f"parity check: ONNX gives probabilities of shape {onnx_probs.shape}, "
            f"scikit-learn {sk_probs.shape}"
        )
    diff = np.abs(onnx_probs.astype(np.float64) - sk_probs).max(axis=1)
    worst = int(diff.argmax())
    differ = np.flatnonzero(onnx_labels != sk_labels)
    at = np.arange(len(rows))
    gap = np.abs(
        sk_probs[at, sk_labels] - sk_probs[at, np.clip(onnx_labels, 0, sk_probs.shape[1] - 1)]
    )
    ties = differ[gap[differ] <= tolerance]
    real = np.setdiff1d(differ, ties)
    if len(real):
        row = int(real[0])
        raise ParityError(
            f"parity check: labels differ on {names[row]}: ONNX {int(onnx_labels[row])}, "
            f"scikit-learn {int(sk_labels[row])}"
        )
    report = ParityReport(
        holdout,
        float(diff[worst]),
        worst,
        not len(differ),
        tolerance,
        len(rows) - holdout,
        len(ties),
    )
    if report.max_abs_diff > tolerance:
        raise ParityError(
            f"parity check: probabilities differ by {report.max_abs_diff:.3g} on {names[worst]} "
            f"(tolerance {tolerance:g}, KILN_PARITY_TOLERANCE)"
        )
    return report


def _regression_parity(
    onnx_values: np.ndarray, sk_values: np.ndarray, names: list[str], tolerance: float, holdout: int
) -> ParityReport:
    onnx_values = onnx_values.reshape(-1).astype(np.float64)
    sk_values = np.asarray(sk_values, dtype=np.float64).reshape(-1)
    relative = np.abs(onnx_values - sk_values) / np.maximum(1.0, np.abs(sk_values))
    worst = int(relative.argmax())
    report = ParityReport(
        holdout, float(relative[worst]), worst, True, tolerance, len(names) - holdout
    )
    if report.max_abs_diff > tolerance:
        raise ParityError(
            f"parity check: values differ by {report.max_abs_diff:.3g} (relative) on "
            f"{names[worst]}: ONNX {onnx_values[worst]:.6g}, scikit-learn {sk_values[worst]:.6g} "
            f"(tolerance {tolerance:g}, KILN_PARITY_TOLERANCE)"
        )
    return report
