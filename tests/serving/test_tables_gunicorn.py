"""Typed tables under the real server (`python -m serving`, gunicorn, 2 workers, HTTP):
every request form on the mixed wine classifier and the diabetes regressor."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from table_models import diabetes_model, json_row, wine_model, write_table_model_dir

pytestmark = pytest.mark.slow


def _records(table, indices):
    features = table.schema["features"]
    names = [f["name"] for f in features]
    return [dict(zip(names, json_row(table.frame, i, features), strict=True)) for i in indices]


def test_every_form_over_http_with_two_workers(server_factory, tmp_path):
    table = wine_model()
    server = server_factory(write_table_model_dir(tmp_path / "wine", table), workers=2)
    url = server.wait_ready()
    indices = [0, 60, 130]
    records = _records(table, indices)
    names = list(records[0])
    answers = []
    # New connections each time, so both workers answer.
    for _ in range(3):
        answers.append(httpx.post(f"{url}/predict", json={"instances": records}).json())
        reversed_ = [dict(reversed(list(r.items()))) for r in records]
        answers.append(httpx.post(f"{url}/predict", json={"instances": reversed_}).json())
        rows = [[r[n] for n in names] for r in records]
        answers.append(httpx.post(f"{url}/predict", json={"data": rows}).json())
        split = {"columns": names[::-1], "data": [row[::-1] for row in rows]}
        answers.append(httpx.post(f"{url}/predict", json={"dataframe_split": split}).json())
    assert all(a == answers[0] for a in answers), answers
    frame = table.frame.iloc[indices]
    expected = table.pipeline.predict_proba(frame.assign(organic=frame["organic"].astype("f4")))
    np.testing.assert_allclose(answers[0]["prediction"], expected, atol=1e-5)

    both = httpx.post(f"{url}/predict?labels=true", json={"instances": records}).json()
    labels = httpx.post(f"{url}/predict/label", json={"instances": records}).json()
    assert both["labels"] == labels["prediction"]

    inputs = [
        {
            "name": n,
            "shape": [len(records), 1],
            "datatype": {"region": "BYTES", "organic": "BOOL"}.get(n, "FP32"),
            "data": [r[n] for r in records],
        }
        for n in names
    ]
    v2 = httpx.post(f"{url}/v2/models/model/infer", json={"inputs": inputs})
    assert v2.status_code == 200, v2.text
    probabilities = {o["name"]: o for o in v2.json()["outputs"]}["probabilities"]
    got = np.reshape(probabilities["data"], probabilities["shape"])
    np.testing.assert_allclose(got, answers[0]["prediction"], atol=1e-6)

    bad = dict(records[0], region=12)
    response = httpx.post(f"{url}/predict", json={"instances": [bad]})
    assert response.status_code == 422
    assert response.json()["code"] == "wrong_type"
    assert "column 'region', record 0" in response.json()["error"]
    meta = httpx.get(f"{url}/metadata").json()
    sample = httpx.post(f"{url}/predict", json=meta["sample_request"])
    assert sample.json() == httpx.get(f"{url}/predict/test").json()
    assert server.stop() == 0


def test_regressor_over_http_with_two_workers(server_factory, tmp_path):
    table = diabetes_model()
    server = server_factory(write_table_model_dir(tmp_path / "diabetes", table), workers=2)
    url = server.wait_ready()
    records = _records(table, [0, 1, 2])
    expected = table.pipeline.predict(table.frame.iloc[[0, 1, 2]].to_numpy("float32"))
    for body in (
        {"instances": records},
        {"instances": [dict(reversed(list(r.items()))) for r in records]},
        {"data": [list(r.values()) for r in records]},
    ):
        response = httpx.post(f"{url}/predict", json=body)
        assert response.status_code == 200
        np.testing.assert_allclose(response.json()["prediction"], expected, rtol=1e-5)
    assert httpx.get(f"{url}/label").json() == {}
    assert server.stop() == 0
