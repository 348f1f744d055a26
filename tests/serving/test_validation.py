"""The validation table: every bad input gets a 4xx JSON error that names the problem."""

from __future__ import annotations

import pytest

ROW = [5.1, 3.5, 1.4, 0.2]
JSON = {"content-type": "application/json"}


@pytest.mark.parametrize("path", ["/predict", "/predict/label"])
@pytest.mark.parametrize(
    ("body", "status", "code", "names"),
    [
        ('{"data": [[5.1, 3.5, 1.4]]}', 422, "wrong_feature_count", "has 3 features"),
        ('{"data": [[5.1, 3.5, 1.4, 0.2, 9.9]]}', 422, "wrong_feature_count", "takes 4"),
        ('{"data": [[5.1, 3.5, 1.4, 0.2], [1, 2]]}', 422, "wrong_feature_count", "row 1"),
        ('{"data": [[]]}', 422, "wrong_feature_count", "has 0 features"),
        ('{"data": [[5.1, "3.5", 1.4, 0.2]]}', 422, "non_numeric", "column 1 is a string"),
        ('{"data": [[5.1, 3.5, null, 0.2]]}', 422, "non_numeric", "column 2 is null"),
        ('{"data": [[5.1, 3.5, 1.4, true]]}', 422, "non_numeric", "boolean"),
        ('{"data": [[false, false, false, false]]}', 422, "non_numeric", "boolean"),
        ('{"data": [[5.1, 3.5, 1.4, {}]]}', 422, "wrong_nesting", "column 3 is an object"),
        ('{"data": [[1e39, 3.5, 1.4, 0.2]]}', 422, "non_finite", "row 0, column 0"),
        ('{"data": [[5.1, 3.5, 1.4, -1e300]]}', 422, "non_finite", "column 3"),
        ('{"data": [[5.1, 3.5, 1.4, NaN]]}', 400, "invalid_json", "not valid JSON"),
        ('{"data": [[5.1, 3.5, 1.4, Infinity]]}', 400, "invalid_json", "not valid JSON"),
        ('{"data": [[1e400, 3.5, 1.4, 0.2]]}', 400, "invalid_json", "infinity"),
        ('{"data": []}', 422, "empty_data", "empty"),
        ("{}", 422, "missing_data", "no 'data'"),
        ('{"rows": [[5.1, 3.5, 1.4, 0.2]]}', 422, "missing_data", "no 'data'"),
        ('{"data": [5.1, 3.5, 1.4, 0.2]}', 422, "wrong_nesting", "row 0 is a number"),
        ('{"data": [[[5.1, 3.5, 1.4, 0.2]]]}', 422, "wrong_nesting", "row 0, column 0 is a list"),
        ('{"data": [[[5.1], [3.5], [1.4], [0.2]]]}', 422, "wrong_nesting", "is a list"),
        ('{"data": 5.1}', 422, "wrong_nesting", "list of rows"),
        ('{"data": "5.1,3.5,1.4,0.2"}', 422, "wrong_nesting", "list of rows"),
        ('{"data": null}', 422, "wrong_nesting", "not null"),
        ("[[5.1, 3.5, 1.4, 0.2]]", 422, "not_an_object", "JSON object"),
        ('"data"', 422, "not_an_object", "JSON object"),
        ('{"data": [[5.1, 3.5, 1.4, 0.2]]', 400, "invalid_json", "not valid JSON"),
        ("not json", 400, "invalid_json", "not valid JSON"),
        ("", 400, "empty_body", "empty"),
        (b"\xff\xfe{}", 400, "invalid_json", "not valid JSON"),
    ],
)
def test_bad_input_is_a_named_4xx(client, path, body, status, code, names):
    response = client.post(path, content=body, headers=JSON)
    assert response.status_code == status, response.text
    error = response.json()
    assert error["code"] == code
    assert names in error["error"]


def test_too_many_rows(make_client):
    http = make_client(max_rows=3)
    assert http.post("/predict", json={"data": [ROW] * 3}).status_code == 200
    response = http.post("/predict", json={"data": [ROW] * 4})
    assert response.status_code == 422
    assert response.json() == {
        "error": "'data' has 4 rows; the limit is 3 per request",
        "code": "too_many_rows",
    }


def test_default_row_limit_is_1024(client):
    assert client.post("/predict", json={"data": [ROW] * 1024}).status_code == 200
    assert client.post("/predict", json={"data": [ROW] * 1025}).json()["code"] == "too_many_rows"


def test_body_over_the_limit_is_413(make_client):
    http = make_client(max_body_bytes=1000)
    small = {"data": [ROW] * 10}  # about 200 bytes
    assert http.post("/predict", json=small).status_code == 200
    response = http.post("/predict", json={"data": [ROW] * 100})
    assert response.status_code == 413
    assert response.json()["code"] == "body_too_large"
    assert "1000 bytes" in response.json()["error"]


def test_body_over_the_limit_without_content_length_is_413(make_client):
    """A chunked body (no Content-Length) is cut off once it passes the limit."""
    http = make_client(max_body_bytes=1000)

    async def chunks():
        yield b'{"data": ['
        for _ in range(100):
            yield b"[5.1, 3.5, 1.4, 0.2],"
        yield b"[5.1, 3.5, 1.4, 0.2]]}"

    response = http.post("/predict", content=chunks(), headers=JSON)
    assert response.status_code == 413


def test_default_body_limit_is_one_mebibyte(client):
    padding = " " * (1024 * 1024)
    response = client.post("/predict", content='{"data": [[1, 2, 3, 4]]}' + padding, headers=JSON)
    assert response.status_code == 413


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON", None],
)
def test_json_or_no_content_type_is_accepted(client, content_type):
    headers = {} if content_type is None else {"content-type": content_type}
    response = client.post("/predict", content=b'{"data": [[5.1, 3.5, 1.4, 0.2]]}', headers=headers)
    assert response.status_code == 200


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""],
)
def test_other_content_types_are_415(client, content_type):
    body = b'{"data": [[5.1, 3.5, 1.4, 0.2]]}'
    response = client.post("/predict", content=body, headers={"content-type": content_type})
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"
    assert "application/json" in response.json()["error"]


def test_unknown_keys_are_ignored(client):
    response = client.post("/predict/label", json={"data": [ROW], "id": "x", "extra": [True]})
    assert response.json() == {"prediction": ["setosa"]}


def test_error_messages_name_the_row_and_column(client):
    rows = [ROW, ROW, [5.1, 3.5, "x", 0.2]]
    error = client.post("/predict", json={"data": rows}).json()["error"]
    assert error == "row 2, column 2 is a string ('x'); every value must be a number"


def test_float32_range_is_the_limit(client):
    largest = 3.4028234e38  # rounds to float32's largest finite value
    ok = client.post("/predict", json={"data": [[largest, -largest, 1, 1]]})
    assert ok.status_code == 200
    too_big = client.post("/predict", json={"data": [[1, 1, 3.5e38, 1]]})
    assert (too_big.status_code, too_big.json()["code"]) == (422, "non_finite")
    assert "row 0, column 2" in too_big.json()["error"]
