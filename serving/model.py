"""Load a verified model into ONNX Runtime, check its signature, warm it up, predict.

The contract (skl2onnx, zipmap disabled): one float32 input of shape [None, n_features]
and two outputs, ``label`` (int64, [None]) and ``probabilities`` (float32,
[None, n_classes]). Names and shapes are read from the session; nothing is hard-coded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from serving.artifacts import ModelArtifacts, ModelLoadError, verified_artifacts
from serving.config import ServingConfig

logger = logging.getLogger(__name__)

LABEL_OUTPUT = "label"
PROBABILITIES_OUTPUT = "probabilities"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    type: str
    shape: list[int | str | None]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "shape": self.shape}


def _spec(node: Any) -> TensorSpec:
    shape: list[int | str | None] = [dim if isinstance(dim, int) else None for dim in node.shape]
    return TensorSpec(name=node.name, type=node.type, shape=shape)


def _session_options(intra_op_threads: int, inter_op_threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: ORT's warnings are not ours to print
    # Idle pool threads must not spin: the other workers need those cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


class Model:
    """An ONNX Runtime session with the labels and metadata it was shipped with."""

    def __init__(
        self, artifacts: ModelArtifacts, intra_op_threads: int = 1, inter_op_threads: int = 1
    ) -> None:
        self.artifacts = artifacts
        path = artifacts.model_path
        try:
            self.session = ort.InferenceSession(
                artifacts.model_bytes,
                sess_options=_session_options(intra_op_threads, inter_op_threads),
                providers=["CPUExecutionProvider"],
            )
        except Exception as err:  # ORT raises its own untyped errors for bad bytes
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ModelLoadError(f"model {path} is not a loadable ONNX model: {reason}") from None

        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelLoadError(f"model {path} has {len(inputs)} inputs; kiln serves exactly one")
        self.input = _spec(inputs[0])
        if self.input.type != "tensor(float)" or len(self.input.shape) != 2:
            raise ModelLoadError(
                f"model {path}: input {self.input.name!r} is {self.input.type} "
                f"{self.input.shape}; expected a float32 tensor [N, n_features]"
            )
        n_features = self.input.shape[1]
        if not isinstance(n_features, int) or n_features < 1:
            raise ModelLoadError(f"model {path}: input {self.input.name!r} has no fixed width")
        self.n_features: int = n_features

        self.outputs = [_spec(node) for node in self.session.get_outputs()]
        names = [spec.name for spec in self.outputs]
        missing = [n for n in (LABEL_OUTPUT, PROBABILITIES_OUTPUT) if n not in names]
        if missing:
            raise ModelLoadError(
                f"model {path} has outputs {names}; expected {LABEL_OUTPUT!r} and "
                f"{PROBABILITIES_OUTPUT!r} (export with zipmap disabled)"
            )
        self._output_names = [LABEL_OUTPUT, PROBABILITIES_OUTPUT]
        self.labels = artifacts.labels
        self._label_array = np.array(self.labels, dtype=object)
        self.feature_names = self._feature_names(artifacts.metadata)
        self.sample_input = self._sample_array(artifacts)
        self.sample_labels, self.sample_probabilities = self._warm_up()

    def _feature_names(self, metadata: dict[str, Any]) -> list[str]:
        names = metadata.get("feature_names")
        if isinstance(names, list) and len(names) == self.n_features:
            return [str(n) for n in names]
        return [f"f{i}" for i in range(self.n_features)]

    def _sample_array(self, artifacts: ModelArtifacts) -> np.ndarray:
        sample = np.asarray(artifacts.sample_input, dtype=np.float32)
        if sample.ndim != 2 or sample.shape[1] != self.n_features:
            raise ModelLoadError(
                f"metadata: 'sample_input' has shape {list(sample.shape)}, but model "
                f"{artifacts.model_path} takes rows of {self.n_features} features"
            )
        return sample

    def _warm_up(self) -> tuple[np.ndarray, np.ndarray]:
        path = self.artifacts.model_path
        try:
            labels, probabilities = self.predict(self.sample_input)
        except Exception as err:
            raise ModelLoadError(f"model {path} failed its warm-up inference: {err}") from None
        rows = self.sample_input.shape[0]
        if probabilities.shape != (rows, len(self.labels)):
            raise ModelLoadError(
                f"model {path} returns {probabilities.shape[-1]} class probabilities, but "
                f"labels.json names {len(self.labels)} classes"
            )
        if labels.shape != (rows,) or labels.min() < 0 or labels.max() >= len(self.labels):
            raise ModelLoadError(f"model {path} returns labels outside labels.json")
        return labels, probabilities

    @property
    def version(self) -> str:
        return self.artifacts.version

    @property
    def sha256(self) -> str:
        return self.artifacts.sha256

    @property
    def metadata(self) -> dict[str, Any]:
        return self.artifacts.metadata

    def predict(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 [N, n_features] -> (class indices int64 [N], probabilities float32 [N, C])."""
        labels, probabilities = self.session.run(self._output_names, {self.input.name: rows})
        return labels, probabilities

    def label_names(self, indices: np.ndarray) -> list[str]:
        return self._label_array[indices].tolist()


def load_model(config: ServingConfig) -> Model:
    """Load and warm up the model the config names: the bytes the master verified, or the
    files read and verified now."""
    artifacts = verified_artifacts(config)
    model = Model(artifacts, config.intra_op_threads, config.inter_op_threads)
    logger.info(
        "model %s loaded: version %s, sha256 %s, %d features, %d classes",
        config.model_path,
        model.version,
        model.sha256[:12],
        model.n_features,
        len(model.labels),
    )
    return model
