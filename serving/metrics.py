"""Prometheus metrics: requests by route and status, latency, rows predicted, model info.

Under gunicorn every worker is its own process. When ``PROMETHEUS_MULTIPROC_DIR`` is
set (serving/gunicorn_conf.py sets it before any worker starts), prometheus_client
keeps each worker's values in files there and ``/metrics`` adds them up across
workers, so one scrape sees the whole pod. Without it (tests, a bare uvicorn) the
figures are the one process's own.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class Metrics:
    """The server's metrics, in a registry of their own (so tests can build many apps)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "kiln_requests",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "kiln_request_duration_seconds",
            "Time from the request's arrival to its last response byte, by route template.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rows = Counter(
            "kiln_rows_predicted",
            "Input rows the model has scored, by route template.",
            ["route"],
            registry=self.registry,
        )
        self.model_info = Gauge(
            "kiln_model_info",
            "The model this server runs (always 1; the labels carry the facts).",
            ["version", "sha256", "name"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        self._request_children: dict[tuple[str, str, int], object] = {}
        self._latency_children: dict[str, object] = {}
        self._rows_children: dict[str, object] = {}

    def set_model(self, version: str, sha256: str, name: str) -> None:
        self.model_info.labels(version=version, sha256=sha256, name=name).set(1)

    def observe(self, route: str, method: str, status: int, seconds: float, rows: int = 0) -> None:
        """Record one answered request; label children are looked up once and kept."""
        key = (route, method, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(route, method, str(status))
        child.inc()
        latency = self._latency_children.get(route)
        if latency is None:
            latency = self._latency_children[route] = self.latency.labels(route)
        latency.observe(seconds)
        if rows:
            counter = self._rows_children.get(route)
            if counter is None:
                counter = self._rows_children[route] = self.rows.labels(route)
            counter.inc(rows)

    def exposition(self) -> bytes:
        """The text a Prometheus scrape gets, summed over every worker when multiprocess."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)
        return generate_latest(registry)
