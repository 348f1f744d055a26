"""No 5xx on the mixed wine model: hypothesis throws records, splits, rows and V2 columns
of arbitrary values (real column names among random ones) at the app; every 4xx says why.
A body the OpenAPI document allows is answered 200."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from asgi_client import AppClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from table_models import wine_model, write_table_model_dir

from serving.app import create_app
from serving.config import ServingConfig

pytestmark = pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")

FUZZ = settings(
    database=None,
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
NAMES = [f["name"] for f in wine_model().schema["features"]]
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
    | st.sampled_from(["east", "True", ""])
)
values = scalars | st.lists(scalars, max_size=2) | st.dictionaries(st.text(max_size=3), scalars)
column_names = st.sampled_from(NAMES) | st.text(max_size=5)
records = st.dictionaries(column_names, values, max_size=17) | st.fixed_dictionaries(
    {name: scalars | st.floats(-5, 5) for name in NAMES}
)
bodies = st.one_of(
    st.fixed_dictionaries({"instances": st.lists(records, max_size=20) | values}),
    st.fixed_dictionaries({"data": st.lists(st.lists(scalars, max_size=16), max_size=3)}),
    st.fixed_dictionaries(
        {
            "dataframe_split": st.fixed_dictionaries(
                {
                    "columns": st.lists(column_names, max_size=16) | st.just(NAMES) | values,
                    "data": st.lists(st.lists(scalars, max_size=16), max_size=3) | values,
                }
            )
            | values
        }
    ),
)
tensors = st.fixed_dictionaries(
    {
        "name": column_names | values,
        "shape": st.lists(st.integers(-1, 3), max_size=3) | values,
        "datatype": st.sampled_from(["FP32", "FP64", "INT64", "INT32", "BOOL", "BYTES"]) | values,
        "data": st.lists(scalars | st.lists(scalars, max_size=2), max_size=4) | values,
    }
)
v2_bodies = st.fixed_dictionaries({"inputs": st.lists(tensors, max_size=16) | values})


@pytest.fixture(scope="module")
def wine(tmp_path_factory: pytest.TempPathFactory):
    directory: Path = write_table_model_dir(tmp_path_factory.mktemp("wine"), wine_model())
    app = create_app(ServingConfig.for_model_dir(directory))
    app.start()
    http = AppClient(app)
    yield http
    http.close()


def _check(response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.json()["error"]


@FUZZ
@given(body=bodies, both=st.booleans())
def test_predict_forms_never_5xx(wine, body, both):
    _check(wine.post("/predict?labels=true" if both else "/predict", json=body))


@FUZZ
@given(body=v2_bodies)
def test_v2_columns_never_5xx(wine, body):
    _check(wine.post("/v2/models/model/infer", content=json.dumps(body)))


@pytest.fixture(scope="module")
def documented(wine):
    spec = wine.get("/openapi.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    return jsonschema.Draft202012Validator(body["schema"])


def _valid(feature: dict) -> st.SearchStrategy:
    if feature["type"] == "text":
        valid = st.text(max_size=8)
    elif feature["type"] == "boolean":
        valid = st.booleans() | st.sampled_from([0, 1])
    else:
        valid = st.integers(-(10**6), 10**6) | st.floats(-3e38, 3e38)
    return valid | st.none() if feature["nullable"] else valid


valid_records = st.fixed_dictionaries(
    {f["name"]: _valid(f) for f in wine_model().schema["features"]}
)
corruptions = st.none() | st.tuples(
    st.sampled_from(NAMES), scalars | st.floats(allow_nan=False, allow_infinity=False)
)


@FUZZ
@given(record=valid_records, corruption=corruptions, rows=st.integers(1, 20))
def test_what_the_document_allows_is_answered(wine, documented, record, corruption, rows):
    """Valid records, one value sometimes replaced: the document and the server agree."""
    if corruption is not None:
        record = {**record, corruption[0]: corruption[1]}
    body = {"instances": [record] * rows}
    response = wine.post("/predict", json=body)
    if documented.is_valid(body):
        assert response.status_code == 200, response.text
    else:
        assert response.status_code == 422, response.text
