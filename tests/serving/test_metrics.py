"""GET /metrics: requests by route and status, latency, rows predicted, model info."""

from __future__ import annotations

import re

import pytest


def _sample(text: str, metric: str, /, **labels: str) -> float:
    """The value of one sample in Prometheus text format (labels in any order)."""
    for line in text.splitlines():
        if not line.startswith(metric + "{") and line.split(" ")[0] != metric:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {metric} {labels} in:\n{text}")


@pytest.fixture
def fresh(make_client):
    return make_client()


def test_metrics_count_requests_rows_and_latency(fresh):
    fresh.post("/predict", json={"data": [[5.1, 3.5, 1.4, 0.2]] * 5})
    fresh.post("/predict", json={"data": [[5.1, 3.5, 1.4, 0.2]] * 2})
    fresh.post("/predict/label", json={"data": [[1, 2]]})
    fresh.get("/health")
    fresh.get("/v2/models/missing")
    response = fresh.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    requests = "kiln_requests_total"
    assert _sample(text, requests, route="/predict", method="POST", status="200") == 2
    assert _sample(text, requests, route="/predict/label", method="POST", status="422") == 1
    assert _sample(text, requests, route="/health", method="GET", status="200") == 1
    assert _sample(text, requests, route="/v2/models/{name}", status="404") == 1
    assert _sample(text, "kiln_rows_predicted_total", route="/predict") == 7
    assert _sample(text, "kiln_request_duration_seconds_count", route="/predict") == 2
    assert _sample(text, "kiln_request_duration_seconds_bucket", route="/predict", le="+Inf") == 2


def test_unknown_paths_share_one_label(fresh):
    fresh.get("/a")
    fresh.get("/b/c")
    text = fresh.get("/metrics").text
    assert _sample(text, "kiln_requests_total", route="unmatched", status="404") == 2
    assert "/b/c" not in text


def test_model_info_carries_the_version(fresh, model_dir):
    text = fresh.get("/metrics").text
    info = _sample(text, "kiln_model_info", model="model", version="3f2a9c1b7d4e", name="model")
    assert info == 1


def test_every_series_carries_the_served_name(make_client):
    client = make_client(model_name="wine")
    client.post("/predict", json={"data": [[5.1, 3.5, 1.4, 0.2]]})
    assert client.get("/v2/models/wine").status_code == 200
    text = client.get("/metrics").text
    samples = [line for line in text.splitlines() if line.startswith("kiln_")]
    names = {line.split("{")[0] for line in samples}
    assert {"kiln_requests_total", "kiln_refused_total", "kiln_model_info"} <= names
    assert {"kiln_rows_predicted_total", "kiln_request_duration_seconds_count"} <= names
    assert all('model="wine"' in line for line in samples), text
    requests = _sample(text, "kiln_requests_total", model="wine", route="/predict", status="200")
    assert requests == 1
    assert _sample(text, "kiln_model_info", model="wine", name="wine") == 1


def test_the_name_is_bound_once_and_its_children_kept():
    from serving.metrics import Metrics

    metrics = Metrics(model="wine")
    metrics.observe("/predict", "POST", 200, 0.001, rows=2)
    metrics.flush()
    child = metrics.requests.labels("wine", "/predict", "POST", "200")
    metrics.observe("/predict", "POST", 200, 0.001, rows=2)
    metrics.flush()
    assert child._value.get() == 2
    assert metrics._children[("requests", "/predict", "POST", "200")] is child
    text = metrics.exposition().decode()
    assert 'model="model"' not in text


def test_v2_and_sample_routes_count_rows(fresh):
    tensor = {"name": "X", "shape": [3, 4], "datatype": "FP32", "data": [1.0] * 12}
    fresh.post("/v2/models/model/infer", json={"inputs": [tensor]})
    fresh.get("/predict/test")
    text = fresh.get("/metrics").text
    assert _sample(text, "kiln_rows_predicted_total", route="/v2/models/{name}/infer") == 3
    assert _sample(text, "kiln_rows_predicted_total", route="/predict/test") == 1


def test_batched_histogram_equals_one_observe_per_request():
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from serving.metrics import LATENCY_BUCKETS, _observe_many

    values = [0.0001, 0.0005, 0.0007, 0.001, 0.003, 0.25, 1.0, 3.0, 100.0]
    one, many = CollectorRegistry(), CollectorRegistry()
    single = Histogram("h", "h", buckets=LATENCY_BUCKETS, registry=one)
    for value in values:
        single.observe(value)
    _observe_many(Histogram("h", "h", buckets=LATENCY_BUCKETS, registry=many), values)

    def samples(registry):
        return [s for s in generate_latest(registry).decode().splitlines() if "created" not in s]

    assert samples(many) == samples(one)


def test_observations_wait_for_a_flush():
    from serving.metrics import Metrics

    metrics = Metrics()  # no name given: the server's default, `model`
    metrics.observe("/predict", "POST", 200, 0.001, rows=4)
    assert metrics.requests.labels("model", "/predict", "POST", "200")._value.get() == 0
    metrics.flush()
    assert metrics.requests.labels("model", "/predict", "POST", "200")._value.get() == 1
    assert metrics.rows.labels("model", "/predict")._value.get() == 4
    metrics.flush()  # nothing pending: nothing added twice
    assert metrics.requests.labels("model", "/predict", "POST", "200")._value.get() == 1


def test_refusals_are_counted_once_by_reason():
    from serving.metrics import Metrics, count_refused

    metrics = Metrics()
    count_refused("headers_too_large")
    count_refused("headers_too_large")
    count_refused("evicted")
    text = metrics.exposition().decode()
    assert _sample(text, "kiln_refused_total", reason="headers_too_large") == 2
    assert _sample(text, "kiln_refused_total", reason="evicted") == 1
    assert _sample(text, "kiln_refused_total", reason="server_busy") == 0
    again = metrics.exposition().decode()  # flushed once: not added twice
    assert _sample(again, "kiln_refused_total", reason="headers_too_large") == 2
