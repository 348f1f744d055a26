"""Typed tables (the model directory contract v2), in process: a mixed wine classifier with
one ONNX input per column, and a diabetes regressor. Every request form, every 422 that
names a column, the metadata and the OpenAPI document built from the schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from asgi_client import AppClient
from table_models import diabetes_model, json_row, wine_model, write_table_model_dir

from serving.app import create_app
from serving.artifacts import ModelLoadError
from serving.config import ServingConfig
from serving.model import load_model

ODD = "od280/od315_of_diluted_wines"  # its ONNX input is od280_od315_of_diluted_wines


@pytest.fixture(scope="module")
def wine_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_table_model_dir(tmp_path_factory.mktemp("wine"), wine_model())


@pytest.fixture(scope="module")
def diabetes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_table_model_dir(tmp_path_factory.mktemp("diabetes"), diabetes_model())


def _client(model_dir: Path, **overrides) -> AppClient:
    app = create_app(ServingConfig.for_model_dir(model_dir, **overrides))
    app.start()
    return AppClient(app)


@pytest.fixture(scope="module")
def wine(wine_dir):
    http = _client(wine_dir)
    yield http
    http.close()


@pytest.fixture(scope="module")
def diabetes(diabetes_dir):
    http = _client(diabetes_dir)
    yield http
    http.close()


def names() -> list[str]:
    return [f["name"] for f in wine_model().schema["features"]]


def rows(*indices: int) -> list[list]:
    table = wine_model()
    return [json_row(table.frame, i, table.schema["features"]) for i in indices]


def records(*indices: int) -> list[dict]:
    return [dict(zip(names(), row, strict=True)) for row in rows(*indices)]


def sklearn_probabilities(*indices: int) -> np.ndarray:
    table = wine_model()
    frame = table.frame.iloc[list(indices)]
    return table.pipeline.predict_proba(frame.assign(organic=frame["organic"].astype("float32")))


def post(http: AppClient, body: dict, path: str = "/predict"):
    response = http.post(path, json=body)
    return response.status_code, response.json()


# -- every request form gives the same answer -------------------------------------------

INDICES = (0, 3, 60, 130, 177)  # rows with missing alcohol and region among them


def test_records_match_scikit_learn(wine):
    status, answer = post(wine, {"instances": records(*INDICES)})
    assert status == 200
    np.testing.assert_allclose(answer["prediction"], sklearn_probabilities(*INDICES), atol=1e-5)


def test_column_order_never_matters_for_records(wine):
    ordered = records(*INDICES)
    reversed_ = [dict(reversed(list(r.items()))) for r in ordered]
    assert list(reversed_[0])[0] == "organic"
    _, expected = post(wine, {"instances": ordered})
    _, got = post(wine, {"instances": reversed_})
    assert got == expected


def test_every_form_gives_the_same_answer(wine):
    _, expected = post(wine, {"instances": records(*INDICES)})
    assert post(wine, {"dataframe_records": records(*INDICES)}) == (200, expected)
    assert post(wine, {"data": rows(*INDICES)}) == (200, expected)
    shuffled = names()[::-1]
    split = {
        "columns": shuffled,
        "data": [[r[n] for n in shuffled] for r in records(*INDICES)],
        "index": list(INDICES),
    }
    assert post(wine, {"dataframe_split": split}) == (200, expected)


def test_v2_one_tensor_per_column_matches_predict(wine):
    recs = records(*INDICES)
    inputs = []
    for name in names()[::-1]:  # any order
        column = [r[name] for r in recs]
        datatype = {"region": "BYTES", "organic": "BOOL", "magnesium": "INT64"}.get(name, "FP32")
        if name == "magnesium":
            column = [int(v) for v in column]
        inputs.append({"name": name, "shape": [len(recs), 1], "datatype": datatype, "data": column})
    response = wine.post("/v2/models/model/infer", json={"id": "w1", "inputs": inputs})
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    _, expected = post(wine, {"instances": recs})
    got = np.reshape(outputs["probabilities"]["data"], outputs["probabilities"]["shape"])
    np.testing.assert_allclose(got, expected["prediction"], atol=1e-6)
    _, label_answer = post(wine, {"instances": recs}, "/predict/label")
    assert outputs["label"]["data"] == label_answer["prediction"]


def test_v2_metadata_lists_one_input_per_column(wine):
    meta = wine.get("/v2/models/model").json()
    inputs = {i["name"]: i["datatype"] for i in meta["inputs"]}
    assert list(inputs) == names()
    assert (inputs["region"], inputs["alcohol"], inputs["organic"]) == ("BYTES", "FP32", "BOOL")


def test_labels_and_probabilities_in_one_answer(wine):
    status, both = post(wine, {"instances": records(*INDICES)}, "/predict?labels=true")
    assert status == 200
    _, probabilities = post(wine, {"instances": records(*INDICES)})
    _, labels = post(wine, {"instances": records(*INDICES)}, "/predict/label")
    assert both == {"prediction": probabilities["prediction"], "labels": labels["prediction"]}
    assert set(labels["prediction"]) <= {"class_0", "class_1", "class_2"}
    assert post(wine, {"data": rows(0)}, "/predict?labels=0")[1].keys() == {"prediction"}
    status, error = post(wine, {"data": rows(0)}, "/predict?labels=maybe")
    assert (status, error["code"]) == (422, "invalid_parameter")


def test_missing_values_and_unseen_categories_are_answered(wine):
    record = records(3)[0]
    record.update(alcohol=None, region=None)  # both nullable: the graph imputes
    assert post(wine, {"instances": [record]})[0] == 200
    record["region"] = "atlantis"  # never seen in training: one-hot ignores it
    status, answer = post(wine, {"instances": [record]})
    assert status == 200
    np.testing.assert_allclose(np.sum(answer["prediction"]), 1.0, atol=1e-5)


def test_booleans_as_json_booleans_or_zero_one(wine):
    record = records(3)[0]
    record["organic"] = True
    _, with_true = post(wine, {"instances": [record]})
    record["organic"] = 1
    assert post(wine, {"instances": [record]})[1] == with_true
    record["organic"] = False
    assert post(wine, {"instances": [record]})[1] != with_true


# -- 422s name the column ----------------------------------------------------------------


def _error(http, body, path="/predict"):
    status, answer = post(http, body, path)
    assert status == 422, answer
    return answer["code"], answer["error"]


def test_a_missing_column_is_named(wine):
    record = records(3)[0]
    del record[ODD]
    code, message = _error(wine, {"instances": [record]})
    assert code == "missing_column"
    assert ODD in message and "record 0" in message


def test_an_unknown_column_is_named(wine):
    record = records(3)[0]
    record["vintage"] = 1999
    code, message = _error(wine, {"instances": [record]})
    assert (code, "'vintage'" in message) == ("unknown_column", True)
    # A misspelt column: one missing and one unknown, both said.
    record = records(3)[0]
    record["alchohol"] = record.pop("alcohol")
    code, message = _error(wine, {"instances": [record]})
    assert code == "missing_column"
    assert "'alcohol'" in message and "'alchohol'" in message


@pytest.mark.parametrize(
    ("column", "value", "code", "words"),
    [
        ("region", 3, "wrong_type", "a number (3)"),
        ("region", True, "wrong_type", "a boolean"),
        ("hue", "1.04", "wrong_type", "a string ('1.04')"),
        ("hue", False, "wrong_type", "a boolean"),
        ("hue", [1.0], "wrong_type", "a list"),
        ("hue", None, "null_value", "null"),
        ("organic", 2, "wrong_type", "a number (2)"),
        ("magnesium", 100.5, "wrong_type", "takes an integer"),
        ("organic", "yes", "wrong_type", "a string"),
        ("proline", 1e39, "non_finite", "float32"),
        ("proline", 10**40, "non_finite", "float32"),
    ],
)
@pytest.mark.parametrize("count", [1, 2])  # one record takes a path of its own
def test_a_wrong_value_names_its_column_and_row(wine, column, value, code, words, count):
    body_records = records(3, 4)[:count]
    body_records[-1][column] = value
    got_code, message = _error(wine, {"instances": body_records})
    assert got_code == code
    assert f"column {column!r}, record {count - 1}" in message
    assert words in message


def test_wrong_values_are_named_in_large_batches_too(wine):
    """A column is checked in bulk first, then value by value to word the error."""
    body_records = records(*range(40))
    body_records[33]["proline"] = "n/a"
    code, message = _error(wine, {"instances": body_records})
    assert code == "wrong_type" and "column 'proline', record 33" in message
    body_records[33]["proline"] = 1e300
    code, message = _error(wine, {"instances": body_records})
    assert code == "non_finite" and "record 33" in message
    body_records[33]["proline"] = 1050.5  # an integer column
    code, message = _error(wine, {"instances": body_records})
    assert code == "wrong_type" and "record 33" in message
    body_records[33]["proline"] = 1050.0  # a whole float is fine
    assert post(wine, {"instances": body_records})[0] == 200
    del body_records[33]
    status, answer = post(wine, {"instances": body_records})
    assert status == 200
    expected = sklearn_probabilities(*[i for i in range(40) if i != 33])
    np.testing.assert_allclose(answer["prediction"], expected, atol=1e-5)


def test_positional_rows_are_typed_per_column(wine):
    row = rows(3)[0]
    row[names().index("region")] = 7
    code, message = _error(wine, {"data": [row]})
    assert code == "wrong_type" and "column 'region', row 0" in message
    code, message = _error(wine, {"data": [row[:-1]]})
    assert code == "wrong_feature_count" and "organic" in message


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"instances": []}, "empty_data"),
        ({"instances": [[1, 2]]}, "wrong_nesting"),
        ({"instances": {"alcohol": 1}}, "wrong_nesting"),
        ({"instances": [{}], "data": [[1]]}, "ambiguous_body"),
        ({"dataframe_split": {"columns": ["a", "a"], "data": [[1, 2]]}}, "duplicate_column"),
        ({"dataframe_split": {"columns": "alcohol", "data": [[1]]}}, "wrong_nesting"),
        ({"dataframe_split": []}, "wrong_nesting"),
        ({"rows": [[1]]}, "missing_data"),
    ],
)
def test_malformed_bodies(wine, body, code):
    assert _error(wine, body)[0] == code


def test_dataframe_split_names_missing_columns_and_short_rows(wine):
    columns = names()[:-1]
    code, message = _error(wine, {"dataframe_split": {"columns": columns, "data": [[0] * 14]}})
    assert code == "missing_column" and "'organic'" in message
    split = {"columns": names(), "data": [rows(3)[0][:-2]]}
    assert _error(wine, {"dataframe_split": split})[0] == "wrong_feature_count"


def test_too_many_records(wine_dir):
    http = _client(wine_dir, max_rows=3)
    try:
        code, message = _error(http, {"instances": records(0, 1, 2, 3)})
        assert code == "too_many_rows" and "limit is 3" in message
        assert post(http, {"instances": records(0, 1, 2)})[0] == 200
    finally:
        http.close()


@pytest.mark.parametrize(
    ("change", "code", "words"),
    [
        (lambda i: i.pop(), "missing_column", "'organic'"),
        (lambda i: i[0].update(name=""), "unknown_input", "''"),
        (lambda i: i[0].update(name=["alcohol"]), "unknown_input", "['alcohol']"),
        (lambda i: i.append(dict(i[0])), "duplicate_input", "'alcohol'"),
        (lambda i: i[0].update(datatype="BYTES"), "wrong_datatype", "'alcohol'"),
        (lambda i: i[13].update(datatype="FP32"), "wrong_datatype", "'region'"),
        (lambda i: i[13].update(data=[5]), "wrong_type", "column 'region'"),
        (lambda i: i[0].update(shape=[2, 1]), "wrong_shape", "'alcohol'"),
        (lambda i: i[0].update(shape=[1, 2]), "wrong_shape", "'alcohol'"),
        (lambda i: i[4].update(datatype="INT64", data=[1.5]), "wrong_type", "'magnesium'"),
    ],
)
def test_v2_per_column_errors_name_the_column(wine, change, code, words):
    record = records(3)[0]
    datatypes = {"region": "BYTES", "organic": "BOOL"}
    inputs = [
        {"name": n, "shape": [1], "datatype": datatypes.get(n, "FP32"), "data": [record[n]]}
        for n in names()
    ]
    assert wine.post("/v2/models/model/infer", json={"inputs": inputs}).status_code == 200
    change(inputs)
    response = wine.post("/v2/models/model/infer", json={"inputs": inputs})
    assert response.status_code == 422, response.text
    assert response.json()["code"] == code
    assert words in response.json()["error"]


# -- metadata, samples and the OpenAPI document come from the schema ---------------------


def test_metadata_describes_the_table(wine):
    meta = wine.get("/metadata").json()
    assert meta["task"] == "classification"
    assert meta["schema"]["layout"] == "columns"
    region = next(f for f in meta["schema"]["features"] if f["name"] == "region")
    assert (region["type"], region["nullable"], region["categories"]) == (
        "text",
        True,
        sorted(["east", "west", "north"]),
    )
    assert meta["feature_names"] == names()
    assert len(meta["inputs"]) == 15
    assert meta["sample_request"] == {"instances": records(0, 1)}
    assert post(wine, meta["sample_request"])[1] == wine.get("/predict/test").json()
    assert meta["sample_output"]["label"] == wine.get("/predict/test/label").json()["prediction"]


def _document_body(http: AppClient, path: str) -> dict:
    spec = http.get("/openapi.json").json()
    return spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]


def test_openapi_request_comes_from_the_schema(wine):
    body = _document_body(wine, "/predict")
    assert body["example"] == {"instances": records(0, 1)}
    validate = jsonschema.Draft202012Validator(body["schema"]).is_valid
    assert validate(body["example"])
    assert validate({"data": rows(3)})
    assert validate({"dataframe_split": {"columns": names(), "data": rows(3)}})
    record = records(3)[0]
    assert not validate({"data": []})  # {"data": []} is refused, and documented so
    assert not validate({"instances": []})
    assert not validate({"instances": [{**record, "vintage": 1}]})
    assert not validate({"instances": [{**record, "region": 3}]})
    assert not validate({"instances": [{**record, "hue": None}]})  # hue is not nullable
    assert validate({"instances": [{**record, "alcohol": None, "region": None}]})
    missing = dict(record)
    del missing["alcohol"]
    assert not validate({"instances": [missing]})


def test_openapi_v2_request_comes_from_the_schema(wine):
    body = _document_body(wine, "/v2/models/{name}/infer")
    validate = jsonschema.Draft202012Validator(body["schema"]).is_valid
    assert validate(body["example"])
    assert wine.post("/v2/models/model/infer", json=body["example"]).status_code == 200
    empty_name = json.loads(json.dumps(body["example"]))
    empty_name["inputs"][0]["name"] = ""
    assert not validate(empty_name)  # and the server answers 422, as documented
    assert wine.post("/v2/models/model/infer", json=empty_name).status_code == 422


def test_openapi_documents_404_on_v2_model_ready(wine):
    spec = wine.get("/openapi.json").json()
    responses = spec["paths"]["/v2/models/{name}/ready"]["get"]["responses"]
    assert "404" in responses
    response = wine.get("/v2/models/other/ready")
    assert (response.status_code, response.json()["code"]) == (404, "model_not_found")


# -- regression ----------------------------------------------------------------------------


def diabetes_rows(*indices: int) -> list[list[float]]:
    table = diabetes_model()
    return [json_row(table.frame, i, table.schema["features"]) for i in indices]


def test_regressor_answers_values(diabetes):
    table = diabetes_model()
    status, answer = post(diabetes, {"data": diabetes_rows(*INDICES)})
    assert status == 200
    expected = table.pipeline.predict(table.frame.iloc[list(INDICES)].to_numpy("float32"))
    np.testing.assert_allclose(answer["prediction"], expected, rtol=1e-5)
    assert post(diabetes, {"data": diabetes_rows(*INDICES)}, "/predict/label")[1] == answer
    assert post(diabetes, {"data": diabetes_rows(0)}, "/predict?labels=true")[1].keys() == {
        "prediction"
    }


def test_regressor_takes_records_in_any_order(diabetes):
    columns = [f["name"] for f in diabetes_model().schema["features"]]
    ordered = [dict(zip(columns, r, strict=True)) for r in diabetes_rows(*INDICES)]
    _, expected = post(diabetes, {"data": diabetes_rows(*INDICES)})
    reversed_ = [dict(reversed(list(r.items()))) for r in ordered]
    assert post(diabetes, {"instances": reversed_}) == (200, expected)
    split = {"columns": columns[::-1], "data": [row[::-1] for row in diabetes_rows(*INDICES)]}
    assert post(diabetes, {"dataframe_split": split}) == (200, expected)
    ordered[1]["s1"] = None
    code, message = _error(diabetes, {"instances": ordered})
    assert code == "null_value" and "column 's1', record 1" in message
    del ordered[0]["bmi"]
    code, message = _error(diabetes, {"instances": ordered})
    assert code == "missing_column" and "'bmi'" in message


def test_regressor_metadata_and_v2(diabetes):
    meta = diabetes.get("/metadata").json()
    assert (meta["task"], meta["labels"], meta["schema"]["layout"]) == ("regression", {}, "tensor")
    assert meta["sample_request"] == {"data": diabetes_rows(0)}
    assert meta["sample_output"] == diabetes.get("/predict/test").json()
    assert diabetes.get("/label").json() == {}
    v2 = diabetes.get("/v2/models/model").json()
    assert v2["outputs"] == [{"name": "variable", "datatype": "FP32", "shape": [-1, 1]}]
    flat = [v for row in diabetes_rows(0, 1) for v in row]
    tensor = {"name": "X", "shape": [2, 10], "datatype": "FP32", "data": flat}
    response = diabetes.post("/v2/models/model/infer", json={"inputs": [tensor]})
    assert response.status_code == 200
    (output,) = response.json()["outputs"]
    assert (output["name"], output["shape"]) == ("variable", [2, 1])
    _, expected = post(diabetes, {"data": diabetes_rows(0, 1)})
    assert output["data"] == pytest.approx(expected["prediction"])
    assert diabetes_rows(0)[0][2] is None  # bmi is missing in row 0: V2 carries the null
    tensor["data"][13] = None  # row 1's bp, which is not nullable
    response = diabetes.post("/v2/models/model/infer", json={"inputs": [tensor]})
    assert response.status_code == 422
    assert (
        response.json()["code"] == "null_value" and "column 'bp', row 1" in response.json()["error"]
    )
    asked = {"inputs": [tensor], "outputs": [{"name": "label"}]}
    response = diabetes.post("/v2/models/model/infer", json=asked)
    assert (response.status_code, response.json()["code"]) == (422, "unknown_output")


# -- load-time checks against the ONNX graph ---------------------------------------------


def _schema_with(change) -> dict:
    schema = json.loads(json.dumps(wine_model().schema))
    change(schema["features"])
    return schema


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (
            {"schema": _schema_with(lambda f: f[11].update(input="od280"))},
            "no input 'od280' for column 'od280/od315_of_diluted_wines'",
        ),
        (
            {"schema": _schema_with(lambda f: f[13].update(type="number", dtype="float32"))},
            "input 'region' is tensor(string)",
        ),
        (
            {
                "schema": _schema_with(lambda f: f.pop()),
                "feature_names": names()[:-1],
                "sample_input": [row[:-1] for row in rows(0)],
            },
            "has input 'organic', which no column of the schema feeds",
        ),
        ({"schema": _schema_with(lambda f: f[0].update(type="date"))}, "type 'date'"),
        ({"schema": _schema_with(lambda f: f[1].update(name="ash"))}, "two features"),
        ({"task": "ranking"}, "'task' is 'ranking'"),
        ({"feature_names": ["a", "b"]}, "'feature_names'"),
        ({"sample_input": [[1.0] * 15]}, "column 'region', row 0"),
        ({"task": "regression"}, "names classes, but the model is a regressor"),
    ],
)
def test_a_schema_that_does_not_fit_the_model_is_refused(tmp_path, overrides, words):
    directory = write_table_model_dir(tmp_path / "m", wine_model(), **overrides)
    with pytest.raises(ModelLoadError) as raised:
        load_model(ServingConfig.for_model_dir(directory))
    assert words in str(raised.value)


def test_target_classes_must_match_labels(tmp_path):
    schema = json.loads(json.dumps(wine_model().schema))
    schema["target"]["classes"] = ["class_2", "class_1", "class_0"]
    directory = write_table_model_dir(tmp_path / "m", wine_model(), schema=schema)
    with pytest.raises(ModelLoadError, match="target classes"):
        load_model(ServingConfig.for_model_dir(directory))


def test_a_classifier_output_on_a_regression_task_is_refused(tmp_path):
    directory = write_table_model_dir(
        tmp_path / "m",
        diabetes_model(),
        task="classification",
        schema=None,
        sample_input=diabetes_rows(1),
    )
    (directory / "labels.json").write_text('{"0": "low"}')
    with pytest.raises(ModelLoadError, match="expected 'label' and 'probabilities'"):
        load_model(ServingConfig.for_model_dir(directory))


def test_iris_document_forbids_what_the_server_refuses(client):
    """Issue 22: {"data": []} and a V2 input named "" were valid by the document, yet 422."""
    spec = client.get("/openapi.json").json()
    predict = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert not jsonschema.Draft202012Validator(predict["schema"]).is_valid({"data": []})
    assert client.post("/predict", json={"data": []}).status_code == 422
    infer = spec["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"]["content"]
    v2 = jsonschema.Draft202012Validator(infer["application/json"]["schema"])
    body = infer["application/json"]["example"]
    assert v2.is_valid(body)
    assert client.post("/v2/models/model/infer", json=body).status_code == 200
    body["inputs"][0]["name"] = ""
    assert not v2.is_valid(body)
    assert client.post("/v2/models/model/infer", json=body).status_code == 422


def test_client_names_echoed_in_errors_are_cut_short(wine):
    record = records(3)[0]
    record["x" * 5000] = 1
    code, message = _error(wine, {"instances": [record]})
    assert code == "unknown_column" and "xxx..." in message and len(message) < 1000
    tensor = {"name": "y" * 5000, "shape": [1], "datatype": "FP32", "data": [1.0]}
    response = wine.post("/v2/models/model/infer", json={"inputs": [tensor]})
    assert response.status_code == 422 and len(response.json()["error"]) < 1000


def test_a_version_1_model_takes_records_by_its_feature_names(client):
    """Iris has no schema: its feature_names name the columns of records and splits."""
    setosa, virginica = [5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]
    features = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    expected = post(client, {"data": [setosa, virginica]})
    reversed_ = [dict(zip(features[::-1], row[::-1], strict=True)) for row in (setosa, virginica)]
    assert post(client, {"instances": reversed_}) == expected
    split = {"columns": features[::-1], "data": [setosa[::-1], virginica[::-1]]}
    assert post(client, {"dataframe_split": split}) == expected
    code, message = _error(client, {"instances": [{**reversed_[0], "petal_width": "0.2"}]})
    assert code == "wrong_type" and "column 'petal_width'" in message


def test_fast_path_and_declared_route_agree_on_tables(wine_dir):
    """The FastAPI route behind /docs answers every form as the fast path does."""
    app = create_app(ServingConfig.for_model_dir(wine_dir))
    app.start()
    fast, declared = AppClient(app), AppClient(app.api)
    try:
        bad = records(3)
        bad[0]["region"] = 1
        for path in ("/predict", "/predict?labels=true", "/predict/label"):
            for body in (
                {"instances": records(3, 4)},
                {"dataframe_split": {"columns": names(), "data": rows(3)}},
                {"instances": bad},
                {"instances": []},
            ):
                one, other = fast.post(path, json=body), declared.post(path, json=body)
                assert (one.status_code, one.json()) == (other.status_code, other.json())
    finally:
        fast.close()
        declared.close()
