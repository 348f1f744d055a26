import onnx
import onnxruntime as ort
import pytest

from kiln.config.errors import ParityError
from kiln.training.export import check_parity, export_onnx
from tests.support.factories import iris_trained


def test_export_gives_plain_probability_tensor_and_passes_parity():
    data, result, onnx_bytes = iris_trained()
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    outputs = {o.name: o for o in session.get_outputs()}
    assert outputs["probabilities"].type == "tensor(float)"  # no ZipMap
    assert session.get_inputs()[0].name == "X"
    report = check_parity(onnx_bytes, result.model, result.X_holdout, data.schema)
    assert report.labels_equal
    assert report.max_abs_diff < 1e-5


def test_export_is_deterministic():
    data, result, onnx_bytes = iris_trained()
    assert export_onnx(result.model, data.schema)[0] == onnx_bytes


def _tampered(onnx_bytes: bytes) -> bytes:
    """Shift the scaler's offsets: the file still loads, but its answers change."""
    model = onnx.load_from_string(onnx_bytes)
    scaler = next(node for node in model.graph.node if node.op_type == "Scaler")
    offset = next(attr for attr in scaler.attribute if attr.name == "offset")
    offset.floats[:] = [value + 0.5 for value in offset.floats]
    return model.SerializeToString()


def test_tampered_model_fails_parity_naming_the_worst_row():
    data, result, onnx_bytes = iris_trained()
    with pytest.raises(ParityError, match=r"(differ by .* on holdout row \d+)|(labels differ)"):
        check_parity(_tampered(onnx_bytes), result.model, result.X_holdout, data.schema)


def test_unloadable_model_fails_parity():
    data, result, _ = iris_trained()
    with pytest.raises(ParityError, match="cannot load the model"):
        check_parity(b"not an onnx file", result.model, result.X_holdout, data.schema)
