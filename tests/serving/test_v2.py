"""The Open Inference Protocol (V2) subset: health, model metadata, inference."""

from __future__ import annotations

import numpy as np
import pytest

SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]


def _infer(rows, **extra):
    flat = [v for row in rows for v in row]
    tensor = {"name": "X", "shape": [len(rows), 4], "datatype": "FP32", "data": flat}
    return {"inputs": [tensor], **extra}


def test_health(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    ready = client.get("/v2/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})


def test_model_metadata(client):
    meta = client.get("/v2/models/model").json()
    assert meta["name"] == "model"
    assert meta["versions"] == ["3f2a9c1b7d4e"]
    assert meta["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}]
    assert {o["name"]: o["datatype"] for o in meta["outputs"]} == {
        "probabilities": "FP32",
        "label": "BYTES",
    }
    assert client.get("/v2/models/model/ready").json() == {"ready": True}


def test_round_trip_matches_predict(client):
    rows = [SETOSA, VIRGINICA]
    response = client.post("/v2/models/model/infer", json=_infer(rows, id="req-1"))
    assert response.status_code == 200
    answer = response.json()
    assert answer["model_name"] == "model"
    assert answer["model_version"] == "3f2a9c1b7d4e"
    assert answer["id"] == "req-1"
    outputs = {o["name"]: o for o in answer["outputs"]}
    probabilities = outputs["probabilities"]
    assert probabilities["datatype"] == "FP32"
    assert probabilities["shape"] == [2, 3]
    direct = client.post("/predict", json={"data": rows}).json()["prediction"]
    np.testing.assert_allclose(np.reshape(probabilities["data"], (2, 3)), direct)
    assert outputs["label"] == {
        "name": "label",
        "datatype": "BYTES",
        "shape": [2],
        "data": ["setosa", "virginica"],
    }


def test_nested_data_is_accepted_in_row_major_order(client):
    body = _infer([SETOSA, VIRGINICA])
    body["inputs"][0]["data"] = [SETOSA, VIRGINICA]
    outputs = client.post("/v2/models/model/infer", json=body).json()["outputs"]
    assert outputs[1]["data"] == ["setosa", "virginica"]


def test_requested_outputs_only(client):
    body = _infer([SETOSA], outputs=[{"name": "label"}])
    outputs = client.post("/v2/models/model/infer", json=body).json()["outputs"]
    assert [o["name"] for o in outputs] == ["label"]


def test_model_name_from_env(make_client):
    http = make_client(model_name="wine")
    assert http.get("/v2/models/wine").json()["name"] == "wine"
    assert http.get("/v2/models/wine/ready").status_code == 200
    assert http.get("/v2/models/model").status_code == 404
    answer = http.post("/v2/models/wine/infer", json=_infer([SETOSA]))
    assert answer.status_code == 200 and answer.json()["model_name"] == "wine"
    assert http.get("/metadata").json()["name"] == "wine"


def _with(**tensor_changes):
    body = _infer([SETOSA])
    body["inputs"][0].update(tensor_changes)
    return body


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (_with(datatype="FP64"), 422, "wrong_datatype"),
        (_with(name="input"), 422, "unknown_input"),
        (_with(shape=[1, 3]), 422, "wrong_shape"),
        (_with(shape=[2, 4]), 422, "wrong_shape"),
        (_with(shape=[0, 4], data=[]), 422, "wrong_shape"),
        (_with(shape=[4]), 422, "wrong_shape"),
        (_with(shape=[2000, 4]), 422, "too_many_rows"),
        (_with(data=[1, 2, 3, "4"]), 422, "non_numeric"),
        (_with(data=[1, 2, 3, None]), 422, "non_numeric"),
        (_with(data=[1, 2, 3, 1e39]), 422, "non_finite"),
        (_with(data="1,2,3,4"), 422, "missing_data"),
        ({"inputs": []}, 422, "wrong_inputs"),
        ({"inputs": [1]}, 422, "wrong_inputs"),
        ({}, 422, "wrong_inputs"),
        (_infer([SETOSA], outputs=[{"name": "nope"}]), 422, "unknown_output"),
        (_infer([SETOSA], id=7), 422, "wrong_id"),
    ],
)
def test_bad_requests(client, body, status, code):
    response = client.post("/v2/models/model/infer", json=body)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert response.json()["error"]


def test_unknown_model_is_404(client):
    response = client.post("/v2/models/other/infer", json=_infer([SETOSA]))
    assert response.status_code == 404
    assert "'other'" in response.json()["error"]


def test_bad_json_and_content_type(client):
    bad = client.post(
        "/v2/models/model/infer", content=b"{", headers={"content-type": "application/json"}
    )
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_json")
    text = client.post(
        "/v2/models/model/infer", content=b"{}", headers={"content-type": "text/csv"}
    )
    assert text.status_code == 415
