"""Load a verified model into ONNX Runtime, check its signature, warm it up, predict.

Inputs, by the schema's layout (docs/model-directory.md): "tensor" (and every version-1
model) is one float32 input [None, n_features]; "columns" is one [None, 1] input per
feature, float32 or string, named in the schema. Outputs, by task (skl2onnx, zipmap
disabled): a classifier gives ``label`` (int64 [None]) and ``probabilities`` (float32
[None, n_classes]); a regressor gives ``variable`` (float32 [None, 1]). Names, types and
shapes are read from the session and checked against the schema at load.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from serving.artifacts import ModelArtifacts, ModelLoadError, verified_artifacts
from serving.config import ServingConfig
from serving.contract import COLUMNS, FLOAT32, REGRESSION, ModelSchema, numeric_schema
from serving.tables import Decoder
from serving.validation import RequestError

logger = logging.getLogger(__name__)

LABEL_OUTPUT = "label"
PROBABILITIES_OUTPUT = "probabilities"
VALUE_OUTPUT = "variable"  # skl2onnx's name for a regressor's output
_ONNX_TYPES = {FLOAT32: "tensor(float)", "string": "tensor(string)"}


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
    """An ONNX Runtime session with the labels, schema and metadata it was shipped with."""

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

        self.task = artifacts.task
        self.regression = self.task == REGRESSION
        self.inputs = [_spec(node) for node in self.session.get_inputs()]
        self.input: TensorSpec | None = None  # the one input of layout "tensor"
        declared = artifacts.schema
        if declared is not None and declared.layout == COLUMNS:
            self._check_column_inputs(declared)
            self.schema = declared
        else:
            self.input = self._check_tensor_input()
            width = self.input.shape[1]
            assert isinstance(width, int)
            if declared is not None and len(declared.features) != width:
                raise ModelLoadError(
                    f"model {path}: input {self.input.name!r} takes {width} features, but the "
                    f"schema names {len(declared.features)}"
                )
            names = self._feature_names(artifacts.metadata, width)
            self.schema = declared if declared is not None else numeric_schema(names)
        self.n_features: int = len(self.schema.features)
        self.feature_names = self.schema.names
        self.decoder = Decoder(self.schema, self.input.name if self.input else None)

        self.outputs = [_spec(node) for node in self.session.get_outputs()]
        self._output_names = self._check_outputs()
        self.labels = artifacts.labels
        self._label_array = np.array(self.labels, dtype=object)
        self.sample_feeds, self.sample_rows = self._sample_feeds(artifacts)
        self.sample_outputs = self._warm_up()

    def _check_tensor_input(self) -> TensorSpec:
        path = self.artifacts.model_path
        if len(self.inputs) != 1:
            raise ModelLoadError(
                f"model {path} has {len(self.inputs)} inputs; without a schema of layout "
                "'columns' in metadata.json kiln serves exactly one"
            )
        spec = self.inputs[0]
        if spec.type != "tensor(float)" or len(spec.shape) != 2:
            raise ModelLoadError(
                f"model {path}: input {spec.name!r} is {spec.type} "
                f"{spec.shape}; expected a float32 tensor [N, n_features]"
            )
        n_features = spec.shape[1]
        if not isinstance(n_features, int) or n_features < 1:
            raise ModelLoadError(f"model {path}: input {spec.name!r} has no fixed width")
        return spec

    def _check_column_inputs(self, schema: ModelSchema) -> None:
        """Every feature has its ONNX input, of its dtype, [N, 1]; no input is left over."""
        path = self.artifacts.model_path
        by_name = {spec.name: spec for spec in self.inputs}
        for feature in schema.features:
            spec = by_name.pop(feature.input or "", None)
            if spec is None:
                raise ModelLoadError(
                    f"model {path} has no input {feature.input!r} for column {feature.name!r} "
                    f"(its inputs: {[s.name for s in self.inputs][:20]})"
                )
            expected = _ONNX_TYPES[feature.dtype]
            if spec.type != expected:
                raise ModelLoadError(
                    f"model {path}: input {spec.name!r} is {spec.type}, but the schema says "
                    f"column {feature.name!r} is {feature.type} fed as {feature.dtype} ({expected})"
                )
            if len(spec.shape) != 2 or spec.shape[1] not in (1, None):
                raise ModelLoadError(
                    f"model {path}: input {spec.name!r} has shape {spec.shape}; "
                    "layout 'columns' takes [N, 1] per column"
                )
        if by_name:
            raise ModelLoadError(
                f"model {path} has input {next(iter(by_name))!r}, which no column of the "
                "schema feeds"
            )

    def _check_outputs(self) -> list[str]:
        path = self.artifacts.model_path
        names = [spec.name for spec in self.outputs]
        if self.regression:
            if VALUE_OUTPUT not in names:
                raise ModelLoadError(
                    f"model {path} has outputs {names}; a regressor gives {VALUE_OUTPUT!r} "
                    "(float32 [N, 1])"
                )
            return [VALUE_OUTPUT]
        missing = [n for n in (LABEL_OUTPUT, PROBABILITIES_OUTPUT) if n not in names]
        if missing:
            raise ModelLoadError(
                f"model {path} has outputs {names}; expected {LABEL_OUTPUT!r} and "
                f"{PROBABILITIES_OUTPUT!r} (export with zipmap disabled)"
            )
        return [LABEL_OUTPUT, PROBABILITIES_OUTPUT]

    def _feature_names(self, metadata: dict[str, Any], width: int) -> list[str]:
        names = metadata.get("feature_names")
        if isinstance(names, list) and len(names) == width:
            return [str(n) for n in names]
        return [f"f{i}" for i in range(width)]

    def _sample_feeds(self, artifacts: ModelArtifacts) -> tuple[dict[str, np.ndarray], int]:
        if artifacts.schema is None:  # version 1: numbers only, as it always was
            sample = np.asarray(artifacts.sample_input, dtype=np.float32)
            if sample.ndim != 2 or sample.shape[1] != self.n_features:
                raise ModelLoadError(
                    f"metadata: 'sample_input' has shape {list(sample.shape)}, but model "
                    f"{artifacts.model_path} takes rows of {self.n_features} features"
                )
            assert self.input is not None
            return {self.input.name: sample}, sample.shape[0]
        try:
            return self.decoder.from_rows(artifacts.sample_input, max_rows=1 << 30)
        except RequestError as err:
            raise ModelLoadError(
                f"metadata {artifacts.model_path.parent / 'metadata.json'}: 'sample_input' "
                f"does not fit the schema: {err.message}"
            ) from None

    def _warm_up(self) -> list[np.ndarray]:
        path = self.artifacts.model_path
        try:
            outputs = self.run(self.sample_feeds)
        except Exception as err:
            raise ModelLoadError(f"model {path} failed its warm-up inference: {err}") from None
        rows = self.sample_rows
        if self.regression:
            values = outputs[0]
            if values.shape not in ((rows, 1), (rows,)):
                raise ModelLoadError(
                    f"model {path} returns {VALUE_OUTPUT!r} of shape {list(values.shape)} for "
                    f"{rows} rows; a regressor gives one value per row"
                )
            return outputs
        labels, probabilities = outputs
        if probabilities.shape != (rows, len(self.labels)):
            raise ModelLoadError(
                f"model {path} returns {probabilities.shape[-1]} class probabilities, but "
                f"labels.json names {len(self.labels)} classes"
            )
        if labels.shape != (rows,) or labels.min() < 0 or labels.max() >= len(self.labels):
            raise ModelLoadError(f"model {path} returns labels outside labels.json")
        return outputs

    @property
    def version(self) -> str:
        return self.artifacts.version

    @property
    def sha256(self) -> str:
        return self.artifacts.sha256

    @property
    def metadata(self) -> dict[str, Any]:
        return self.artifacts.metadata

    @property
    def sample_labels(self) -> np.ndarray:
        """A classifier's class indices for the sample rows."""
        return self.sample_outputs[0]

    @property
    def sample_probabilities(self) -> np.ndarray:
        return self.sample_outputs[1]

    @property
    def sample_input(self) -> np.ndarray:
        """A tensor-layout model's sample rows, float32 [N, n_features]."""
        assert self.input is not None
        return self.sample_feeds[self.input.name]

    def sample_request(self) -> dict[str, Any]:
        """The POST /predict body for the stored sample: rows for a tensor-layout model,
        records for a table of columns."""
        rows = self.artifacts.sample_input
        if self.input is not None:
            return {"data": rows}
        return {"instances": [dict(zip(self.feature_names, row, strict=True)) for row in rows]}

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Feeds -> [labels int64 [N], probabilities float32 [N, C]] for a classifier,
        [values float32 [N, 1]] for a regressor."""
        return self.session.run(self._output_names, feeds)

    def predict(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A tensor-layout classifier: float32 [N, n_features] -> (class indices int64 [N],
        probabilities float32 [N, C])."""
        assert self.input is not None
        labels, probabilities = self.session.run(self._output_names, {self.input.name: rows})
        return labels, probabilities

    def label_names(self, indices: np.ndarray) -> list[str]:
        return self._label_array[indices].tolist()

    def answer(self, outputs: list[np.ndarray], labels: bool, both: bool = False) -> dict:
        """The /predict answer: probabilities (``labels``: names; ``both``: both) for a
        classifier, one value per row for a regressor."""
        if self.regression:
            return {"prediction": outputs[0].reshape(-1)}
        indices, probabilities = outputs
        if labels:
            return {"prediction": self.label_names(indices)}
        if both:
            return {"prediction": probabilities, "labels": self.label_names(indices)}
        return {"prediction": probabilities}


def load_model(config: ServingConfig) -> Model:
    """Load and warm up the model the config names: the bytes the master verified, or the
    files read and verified now."""
    artifacts = verified_artifacts(config)
    model = Model(artifacts, config.intra_op_threads, config.inter_op_threads)
    logger.info(
        "model %s loaded: version %s, sha256 %s, %s, %d features (layout %s), %d classes",
        config.model_path,
        model.version,
        model.sha256[:12],
        model.task,
        model.n_features,
        model.schema.layout,
        len(model.labels),
    )
    return model
