"""No 5xx on any input: hypothesis throws arbitrary bodies, headers and paths at the app."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

# Hypothesis warns when the global `random` state moves while it draws an example. Nothing
# here draws from it, but threads that earlier tests leave in this process (Prefect's
# services back off with random jitter) can, between two draws: a false alarm.
pytestmark = pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")

FUZZ = settings(
    database=None,  # no .hypothesis/ in the work tree; failures print their reproducer
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=40,
)
# Bodies shaped like the real ones, so the fuzz reaches the deeper checks too.
rows = st.lists(st.lists(scalars | st.floats(-10, 10), min_size=0, max_size=6), max_size=5)
predict_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({"data": json_values}),
    st.fixed_dictionaries({"data": rows}),
    st.fixed_dictionaries(
        {"data": st.lists(st.lists(st.floats(width=32), min_size=4, max_size=4))}
    ),
)
tensors = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["X", "x", ""]) | st.text(max_size=3),
        "shape": st.lists(st.integers(-2, 6), max_size=3) | json_values,
        "datatype": st.sampled_from(["FP32", "FP64", "INT64", "BYTES"]) | json_values,
        "data": st.lists(scalars | st.floats(-10, 10), max_size=30) | rows | json_values,
    }
)
v2_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"inputs": st.lists(tensors, max_size=2) | json_values},
        optional={"id": json_values, "outputs": json_values},
    ),
)
content_types = st.sampled_from(
    [None, "application/json", "text/plain", "", "application/problem+json", ";", "a/b; c=d"]
) | st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20)


def _encode(value) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def _assert_client_error_or_ok(response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400 and response.status_code != 405:
        assert response.json()["error"]


def _post(client, path, body: bytes, content_type):
    headers = {} if content_type is None else {"content-type": content_type}
    return client.post(path, content=body, headers=headers)


@FUZZ
@given(body=predict_bodies, content_type=content_types, labels=st.booleans())
def test_predict_never_5xx_on_json(client, body, content_type, labels):
    path = "/predict/label" if labels else "/predict"
    _assert_client_error_or_ok(_post(client, path, _encode(body), content_type))


@FUZZ
@given(body=st.binary(max_size=200), labels=st.booleans())
def test_predict_never_5xx_on_bytes(client, body, labels):
    path = "/predict/label" if labels else "/predict"
    _assert_client_error_or_ok(_post(client, path, body, "application/json"))


@FUZZ
@given(body=v2_bodies, name=st.sampled_from(["model", "other"]))
def test_v2_infer_never_5xx(client, body, name):
    response = _post(client, f"/v2/models/{name}/infer", _encode(body), "application/json")
    _assert_client_error_or_ok(response)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
    path=st.sampled_from(
        [
            "/predict",
            "/predict/label",
            "/predict/test",
            "/predict/test/label",
            "/health",
            "/ready",
            "/metadata",
            "/label",
            "/metrics",
            "/v2/health/live",
            "/v2/health/ready",
            "/v2/models/model",
            "/v2/models/model/infer",
            "/v2/models/model/ready",
            "/v2",
        ]
    )
    | st.text(alphabet="abcdefgv2/{}%._-", max_size=20).map(lambda p: "/" + p),
    body=st.binary(max_size=64),
)
@example(method="GET", path="////", body=b"")  # once broke the test's own client
def test_any_route_any_method_never_5xx(client, method, path, body):
    # An absolute URL: httpx reads a relative "//x" as a host, so "////" never left the client.
    response = client.request(method, f"http://kiln.test{path}", content=body)
    assert response.status_code < 500, (method, path, response.text)
