"""ONNX export with skl2onnx, and the parity check that judges it."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from kiln.config.errors import ParityError

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

# Pinned so the same model always exports to the same bytes (and the same version id).
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
PARITY_TOLERANCE = 1e-5


@dataclass(frozen=True)
class ParityReport:
    rows: int
    max_abs_diff: float
    worst_row: int
    labels_equal: bool

    def as_dict(self) -> dict[str, float | int | bool]:
        return {
            "rows": self.rows,
            "max_abs_diff": self.max_abs_diff,
            "worst_row": self.worst_row,
            "labels_equal": self.labels_equal,
            "tolerance": PARITY_TOLERANCE,
        }


def export_onnx(model: Pipeline, n_features: int) -> bytes:
    """Probabilities come out as a plain float tensor (no ZipMap), labels as int64."""
    # Imported here: a run whose export is cached (a resumed one) never pays for skl2onnx.
    from skl2onnx import to_onnx

    sample = np.zeros((1, n_features), dtype=np.float32)
    # A numpy sample names the single float input "X"; the server reads the name anyway.
    with warnings.catch_warnings():
        # skl2onnx reads SVC.probA_/probB_, which scikit-learn 1.9 flags as deprecated.
        warnings.filterwarnings("ignore", message="Attribute `prob[AB]_`", category=FutureWarning)
        onnx_model = to_onnx(model, sample, options={"zipmap": False}, target_opset=TARGET_OPSET)
    return onnx_model.SerializeToString()


def check_parity(onnx_bytes: bytes, model: Pipeline, X: np.ndarray) -> ParityReport:
    """Same labels, and probabilities within PARITY_TOLERANCE, on every holdout row."""
    import onnxruntime as ort  # here, like skl2onnx: a cached export never loads it

    try:
        session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own untyped errors for a bad file
        raise ParityError(f"parity check: ONNX Runtime cannot load the model: {err}") from err
    feed = {session.get_inputs()[0].name: X.astype(np.float32)}
    onnx_labels, onnx_probs = session.run(None, feed)
    sk_labels = model.predict(X)
    sk_probs = model.predict_proba(X)
    if onnx_probs.shape != sk_probs.shape:
        raise ParityError(
            f"parity check: ONNX gives probabilities of shape {onnx_probs.shape}, "
            f"scikit-learn {sk_probs.shape}"
        )
    diff = np.abs(onnx_probs.astype(np.float64) - sk_probs).max(axis=1)
    worst = int(diff.argmax())
    report = ParityReport(len(X), float(diff[worst]), worst, bool((onnx_labels == sk_labels).all()))
    if not report.labels_equal:
        row = int(np.flatnonzero(onnx_labels != sk_labels)[0])
        raise ParityError(
            f"parity check: labels differ on holdout row {row}: ONNX {int(onnx_labels[row])}, "
            f"scikit-learn {int(sk_labels[row])}"
        )
    if report.max_abs_diff > PARITY_TOLERANCE:
        raise ParityError(
            f"parity check: probabilities differ by {report.max_abs_diff:.3g} on holdout row "
            f"{worst} (tolerance {PARITY_TOLERANCE:g})"
        )
    return report
