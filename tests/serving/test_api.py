"""The API contract of every route, on the real app with a real iris model."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from asgi_client import AppClient
from model_dirs import IRIS_FEATURES, IRIS_LABELS, SAMPLE_INPUT

SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]
VERSICOLOR = [5.9, 3.0, 4.2, 1.5]


def test_predict_answers_every_row_in_order(client):
    response = client.post("/predict", json={"data": [SETOSA, VIRGINICA, VERSICOLOR]})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    probabilities = np.array(response.json()["prediction"])
    assert probabilities.shape == (3, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert probabilities.argmax(axis=1).tolist() == [0, 2, 1]


def test_predict_label_names_every_row(client):
    response = client.post("/predict/label", json={"data": [SETOSA, VIRGINICA, VERSICOLOR]})
    assert response.status_code == 200
    assert response.json() == {"prediction": ["setosa", "virginica", "versicolor"]}


def test_predict_matches_onnx_runtime_directly(client, model_dir):
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_dir / "model.onnx"))
    rows = np.array([SETOSA, VIRGINICA], dtype=np.float32)
    _, expected = session.run(None, {"X": rows})
    got = client.post("/predict", json={"data": rows.tolist()}).json()["prediction"]
    np.testing.assert_allclose(np.array(got, dtype=np.float32), expected, rtol=1e-6)


def test_integers_are_numbers(client):
    response = client.post("/predict/label", json={"data": [[5, 3, 1, 0]]})
    assert response.status_code == 200
    assert response.json() == {"prediction": ["setosa"]}


def test_fast_path_and_fastapi_route_agree(app, client):
    """The declared FastAPI route (used by /docs) gives the same answers as the fast path."""
    direct = AppClient(app.api)
    try:
        for path in ("/predict", "/predict/label"):
            for body in ({"data": [SETOSA, VIRGINICA]}, {"data": [[1, 2]]}, {"data": []}):
                fast = client.post(path, json=body)
                declared = direct.post(path, json=body)
                assert (declared.status_code, declared.json()) == (fast.status_code, fast.json())
    finally:
        direct.close()


def test_health(client):
    assert client.get("/health").json() == {"health": "ok"}


def test_ready_when_loaded(client):
    response = client.get("/ready")
    assert (response.status_code, response.json()) == (200, {"ready": True})


def test_not_ready_before_start(model_dir):
    from serving.app import create_app
    from serving.config import ServingConfig

    http = AppClient(create_app(ServingConfig.for_model_dir(model_dir)))
    try:
        assert http.get("/health").status_code == 200
        assert http.get("/ready").status_code == 503
        assert http.get("/v2/health/ready").status_code == 503
        response = http.post("/predict", json={"data": [SETOSA]})
        assert response.status_code == 503
        assert response.json()["code"] == "not_ready"
        assert http.get("/metadata").status_code == 503
    finally:
        http.close()


def test_label_map(client):
    assert client.get("/label").json() == IRIS_LABELS


def test_metadata(client, model_dir):
    meta = client.get("/metadata").json()
    assert meta["version"] == "3f2a9c1b7d4e"
    assert meta["sha256"] == hashlib.sha256((model_dir / "model.onnx").read_bytes()).hexdigest()
    assert meta["created"] == "2026-11-26T09:00:00Z"
    assert meta["metrics"] == {"accuracy": 0.97, "f1_macro": 0.97}
    assert meta["inputs"] == [{"name": "X", "type": "tensor(float)", "shape": [None, 4]}]
    outputs = {o["name"]: o for o in meta["outputs"]}
    assert outputs["label"]["type"] == "tensor(int64)"
    assert outputs["probabilities"]["shape"] == [None, 3]
    assert meta["feature_names"] == IRIS_FEATURES
    assert meta["labels"] == IRIS_LABELS
    assert meta["sample_input"] == SAMPLE_INPUT
    assert meta["sample_output"]["label"] == ["setosa"]
    assert len(meta["sample_output"]["prediction"][0]) == 3
    assert meta["limits"] == {"max_rows": 1024, "max_body_bytes": 1024 * 1024}
    assert meta["metadata"]["sklearn_version"] == "1.9.1"  # unknown keys pass through


def test_predict_test_routes_use_the_sample(client):
    sample = client.post("/predict", json={"data": SAMPLE_INPUT}).json()
    assert client.get("/predict/test").json() == sample
    assert client.get("/predict/test/label").json() == {"prediction": ["setosa"]}


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/predict", 405, "method_not_allowed"),
        ("GET", "/nowhere", 404, "not_found"),
        ("DELETE", "/health", 405, "method_not_allowed"),
    ],
)
def test_routing_errors_are_json(client, method, path, status, code):
    response = client.request(method, path)
    assert response.status_code == status
    assert response.json()["code"] == code
    assert path in response.json()["error"]


def test_openapi_documents_every_route(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    expected = {
        ("post", "/predict"),
        ("post", "/predict/label"),
        ("get", "/predict/test"),
        ("get", "/predict/test/label"),
        ("get", "/health"),
        ("get", "/ready"),
        ("get", "/metadata"),
        ("get", "/label"),
        ("get", "/metrics"),
        ("get", "/v2/health/live"),
        ("get", "/v2/health/ready"),
        ("get", "/v2/models/{name}"),
        ("post", "/v2/models/{name}/infer"),
    }
    documented = {(method, path) for path, item in paths.items() for method in item}
    assert expected <= documented
    body = paths["/predict"]["post"]["requestBody"]["content"]["application/json"]
    forms = {form["required"][0]: form for form in body["schema"]["oneOf"]}
    assert set(forms) == {"data", "instances", "dataframe_records", "dataframe_split"}
    rows = forms["data"]["properties"]["data"]
    assert (rows["minItems"], rows["maxItems"]) == (1, 1024)  # {"data": []} is not valid
    assert rows["items"]["minItems"] == rows["items"]["maxItems"] == 4
    assert body["example"] == {"data": SAMPLE_INPUT}
    assert "422" in paths["/predict"]["post"]["responses"]
    assert spec["info"]["version"] == "3f2a9c1b7d4e"
    assert client.get("/docs").status_code == 200
