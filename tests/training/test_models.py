"""Bringing your own model: presets and user factories on real tables (scikit-learn's
bundled data sets with a text column and missing cells added, a regression, an imbalanced
binary set), exported to ONNX and checked against scikit-learn; and every way a user can
get it wrong, refused in one line before any data is read."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest

from kiln.config.errors import DataError, ParameterError
from kiln.store.artifact_store import ArtifactStore
from kiln.training.data import load_data
from kiln.training.export import check_parity, export_onnx
from kiln.training.models import resolve, typed_args
from kiln.training.params import TrainParams
from kiln.training.provenance import model_fingerprint
from kiln.training.schema import COLUMNS, TENSOR
from kiln.training.train import train_model
from tests.support import tables

USER = "tests/support/user_models.py"
LABELS = {"wine_mixed": "cultivar", "diabetes": "progression", "imbalanced": "diagnosis"}


@pytest.fixture(scope="module")
def table_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tables")
    return {name: tables.write(getattr(tables, name)(), folder / f"{name}.csv") for name in LABELS}


def trained(path: Path, label: str, model: str, **args):
    data = load_data(str(path), label)
    result = train_model(data, TrainParams(data=str(path), label_column=label, model=model, **args))
    onnx_bytes, schema = export_onnx(result.model, data.schema)
    report = check_parity(onnx_bytes, result.model, result.X_holdout, schema)
    return data, result, onnx_bytes, schema, report


@pytest.mark.parametrize(
    ("table", "model"),
    [
        ("wine_mixed", "svm"),
        ("wine_mixed", "logistic"),
        ("wine_mixed", "random_forest"),
        ("wine_mixed", "hist_gradient_boosting"),
        ("diabetes", "svm"),
        ("diabetes", "random_forest"),
        ("diabetes", "hist_gradient_boosting"),
        ("imbalanced", "logistic"),
        ("imbalanced", "hist_gradient_boosting"),
    ],
)
def test_every_preset_trains_exports_and_passes_parity(table_files, table, model):
    data, result, onnx_bytes, schema, report = trained(table_files[table], LABELS[table], model)
    assert result.description["spec"] == model and result.description["task"] == data.task
    # A text column makes one input per column; a table of numbers keeps the one tensor.
    assert schema.layout == (COLUMNS if table == "wine_mixed" else TENSOR)
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    if data.task == "classification":
        assert outputs == ["label", "probabilities"] and report.labels_equal
    else:
        assert outputs == ["variable"]
    assert report.max_abs_diff <= report.tolerance


def test_the_mixed_table_probes_a_missing_value_and_an_unseen_category(table_files):
    *_, schema, report = trained(table_files["wine_mixed"], "cultivar", "logistic")
    assert {f.name for f in schema.features if f.nullable} == {"alcohol", "region"}
    # alcohol missing, region missing, region unseen: each answered alike by both
    assert report.probes == 3 and report.max_abs_diff < 1e-5
    assert [f.input for f in schema.features][:2] == ["alcohol", "malic_acid"]
    sanitized = {f.name: f.input for f in schema.features}["od280/od315_of_diluted_wines"]
    assert sanitized != "od280/od315_of_diluted_wines"  # ONNX names differ: kiln maps them


@pytest.mark.parametrize("factory", ["column_pipeline", "lightgbm_pipeline", "xgboost_pipeline"])
def test_a_users_pipeline_ships(table_files, factory):
    data, result, _, schema, report = trained(
        table_files["wine_mixed"], "cultivar", f"{USER}:{factory}"
    )
    assert schema.layout == COLUMNS
    assert result.description["source_sha256"] == model_fingerprint(
        TrainParams(model=f"{USER}:{factory}")
    )
    assert report.labels_equal or report.ties
    assert result.metrics["accuracy"] > 0.8


def test_hist_gradient_boosting_exports_whatever_the_protobuf():
    """skl2onnx's tree converter passes Python bools where ints belong: protobuf 6 warns
    (an error in this suite) and 7.34 refuses them; kiln's repair hands it ints."""
    data = load_data("iris")
    result = train_model(data, TrainParams(model="hist_gradient_boosting"))
    assert export_onnx(result.model, data.schema)[0]


def test_param_values_are_typed_from_the_factory_signature():
    factory = resolve(
        TrainParams(model="random_forest", model_args={"n_estimators": "12", "max_depth": "3"})
    )
    assert factory.args == {"n_estimators": 12, "max_depth": 3}
    user = resolve(TrainParams(model=f"{USER}:column_pipeline", model_args={"C": "0.5"}))
    assert user.args == {"C": 0.5}
    with pytest.raises(ParameterError, match="wants int for 'n_estimators'"):
        resolve(TrainParams(model="random_forest", model_args={"n_estimators": "many"}))
    with pytest.raises(ParameterError, match=r"takes no argument 'depth'; it takes .*max_depth"):
        resolve(TrainParams(model="random_forest", model_args={"depth": "3"}))
    with pytest.raises(ParameterError, match="kiln passes 'random_state' itself"):
        resolve(TrainParams(model="random_forest", model_args={"random_state": "3"}))


def test_undeclared_values_parse_as_json_else_text():
    def factory(**kwargs):
        return kwargs

    typed = typed_args(factory, {"layers": "[8, 4]", "name": "deep", "alpha": "0.1"}, "f")
    assert typed == {"layers": [8, 4], "name": "deep", "alpha": 0.1}


def test_a_changed_factory_changes_the_fingerprint_an_unchanged_one_keeps_it(tmp_path):
    module = tmp_path / "mine.py"
    module.write_text(
        "from sklearn.linear_model import LogisticRegression\n"
        "def make(C: float = 1.0):\n    return LogisticRegression(C=C)\n"
    )
    params = TrainParams(model=f"{module}:make")
    first = model_fingerprint(params)
    assert model_fingerprint(params) == first
    module.write_text(module.read_text().replace("C=C", "C=C, max_iter=50"))
    assert model_fingerprint(params) != first
    assert model_fingerprint(TrainParams()) == ""  # presets are kiln's code: code_fingerprint


def test_a_task_the_model_does_not_fit_is_refused_before_training(table_files):
    with pytest.raises(ParameterError, match="logistic is a classifier"):
        trained(table_files["diabetes"], "progression", "logistic")
    with pytest.raises(ParameterError, match="which is not a classifier"):
        trained(table_files["wine_mixed"], "cultivar", f"{USER}:a_regressor")


def test_a_step_without_an_onnx_converter_is_named():
    data = load_data("iris")
    with pytest.raises(ParameterError, match="FunctionTransformer is not supported"):
        train_model(data, TrainParams(model=f"{USER}:python_step"))


def test_the_stored_version_records_task_estimator_schema_and_parity(table_files, tmp_path):
    from kiln.training.promotion import GatePolicy
    from kiln.training.sequence import run_training

    store = ArtifactStore(tmp_path / "store")
    path = table_files["diabetes"]
    params = TrainParams(data=str(path), label_column="progression", model="random_forest")
    outcome = run_training(store, params, GatePolicy())
    metadata = store.metadata(outcome.version)
    assert metadata["task"] == "regression" and store.get(outcome.version).labels == {}
    assert metadata["model"]["final_estimator"].endswith("RandomForestRegressor")
    assert metadata["model"]["params"]["model__n_estimators"] == 100
    assert metadata["schema"]["layout"] == TENSOR
    assert [f["name"] for f in metadata["schema"]["features"]][:2] == ["age", "sex"]
    assert metadata["schema"]["target"] == {"name": "progression", "type": "integer"}
    assert {"r2", "rmse", "mae"} <= set(metadata["metrics"])
    assert metadata["parity"]["tolerance"] == 0.05  # the tree family's default for values
    assert len(metadata["sample_input"][0]) == 10


def test_a_regression_is_judged_by_r2_and_an_error_metric_by_its_limit(table_files, tmp_path):
    from kiln.config.errors import QualityGateError
    from kiln.training.promotion import GatePolicy
    from kiln.training.sequence import run_training

    store = ArtifactStore(tmp_path / "store")
    params = TrainParams(data=str(table_files["diabetes"]), label_column="progression")
    with pytest.raises(QualityGateError, match=r"r2 = 0\.\d+ is below the threshold 0\.3000"):
        run_training(store, params, GatePolicy())  # the SVR preset: r2 0.18 on this split
    with pytest.raises(ParameterError, match="accuracy' does not apply to a regression"):
        run_training(store, params, GatePolicy(metric="accuracy"))
    with pytest.raises(ParameterError, match="rmse is an error in the target's units"):
        run_training(store, params, GatePolicy(metric="rmse"))
    forest = params.model_copy(update={"model": "random_forest"})
    outcome = run_training(store, forest, GatePolicy(metric="rmse", threshold=80.0))
    assert outcome.metrics["rmse"] < 80


def test_a_missing_label_column_is_named(table_files):
    with pytest.raises(DataError, match="no label column 'species'"):
        load_data(str(table_files["wine_mixed"]), "species")
