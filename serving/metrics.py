"""Prometheus metrics: requests by route and status, latency, rows predicted, model info,
and what the HTTP protocol refused before the app saw it.

Every series carries a `model` label, the name this server serves (MODEL_NAME), so one
Prometheus can tell several models' servers apart. The name is fixed per process, so the
labelled children are made once and kept, not looked up per flush.

Under gunicorn every worker is its own process. When ``PROMETHEUS_MULTIPROC_DIR`` is
set (serving/gunicorn_conf.py sets it before any worker starts), prometheus_client
keeps each worker's values in files there and ``/metrics`` adds them up across
workers, so one scrape sees the whole pod. Without it (tests, a bare uvicorn) the
figures are the one process's own.
"""

from __future__ import annotations

import asyncio
import os
from bisect import bisect_left
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from serving.refusals import REFUSAL_REASONS, count_refused, refused

__all__ = ["REFUSAL_REASONS", "Metrics", "count_refused"]

DEFAULT_MODEL = "model"  # the name a server without MODEL_NAME or metadata name serves

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
    """The server's metrics, in a registry of their own (so tests can build many apps).

    ``observe`` is on the hot path, so it only adds to plain dicts; ``flush`` moves the
    sums into prometheus_client (each increment there takes a lock and, multiprocess, an
    mmap write). The app flushes every ``flush_seconds`` from a background task, before
    every scrape of this worker, and at shutdown; a scrape may therefore miss up to
    ``flush_seconds`` of another worker's most recent requests.
    """

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, flush_seconds: float = 1.0, model: str | None = None) -> None:
        self.flush_seconds = flush_seconds
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "kiln_requests",
            "HTTP requests answered, by route template, method and status code.",
            ["model", "route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "kiln_request_duration_seconds",
            "Time from the request's arrival to its last response byte, by route template.",
            ["model", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rows = Counter(
            "kiln_rows_predicted",
            "Input rows the model has scored, by route template.",
            ["model", "route"],
            registry=self.registry,
        )
        self.refused = Counter(
            "kiln_refused",
            "Requests and connections the HTTP protocol refused or closed before the app "
            "saw them, by reason: the error code it answered (headers_too_large, "
            "too_many_headers, uri_too_long, body_too_large, request_timeout, server_busy, "
            "bad_request), idle_timeout (sent nothing within HEADER_TIMEOUT) or evicted "
            "(closed for a newcomer at MAX_CONNECTIONS).",
            ["model", "reason"],
            registry=self.registry,
        )
        self.model_info = Gauge(
            "kiln_model_info",
            "The model this server runs (always 1; the labels carry the facts).",
            ["model", "version", "sha256", "name"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        self._requests: dict[tuple[str, str, int], int] = {}
        self._latencies: dict[str, list[float]] = {}
        self._rows: dict[str, int] = {}
        self.model: str | None = None
        self._children: dict[tuple[str, ...], Any] = {}
        if model is not None:
            self.bind(model)

    def bind(self, model: str) -> None:
        """Fix the `model` label of every series. Before the first flush: a series made
        under another name would stay in the multiprocess files (at 0)."""
        if model == self.model:
            return
        self.model = model
        self._children = {}
        for reason in REFUSAL_REASONS:  # present from the start, so rates work at once
            self._child(self.refused, "refused", reason)

    def _child(self, metric: Any, kind: str, *labels: str) -> Any:
        """The metric's child for this model and `labels`, made once."""
        key = (kind, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(self.model, *labels)
        return child

    def set_model(self, version: str, sha256: str, name: str) -> None:
        self.bind(name)
        self.model_info.labels(name, version, sha256, name).set(1)

    def observe(self, route: str, method: str, status: int, seconds: float, rows: int = 0) -> None:
        """Record one answered request (in memory, until the next flush)."""
        key = (route, method, status)
        self._requests[key] = self._requests.get(key, 0) + 1
        latencies = self._latencies.get(route)
        if latencies is None:
            latencies = self._latencies[route] = []
        latencies.append(seconds)
        if rows:
            self._rows[route] = self._rows.get(route, 0) + rows

    def flush(self) -> None:
        """Move what ``observe`` gathered into the Prometheus metrics."""
        requests, self._requests = self._requests, {}
        latencies, self._latencies = self._latencies, {}
        rows, self._rows = self._rows, {}
        if self.model is None:
            self.bind(DEFAULT_MODEL)  # no name given nor loaded: the server's default
        for (route, method, status), count in requests.items():
            self._child(self.requests, "requests", route, method, str(status)).inc(count)
        for route, values in latencies.items():
            if values:
                _observe_many(self._child(self.latency, "latency", route), values)
        for route, count in rows.items():
            self._child(self.rows, "rows", route).inc(count)
        while refused:
            reason, count = refused.popitem()
            self._child(self.refused, "refused", reason).inc(count)

    async def flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            self.flush()

    def exposition(self) -> bytes:
        """The text a Prometheus scrape gets, summed over every worker when multiprocess."""
        self.flush()
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)
        return generate_latest(registry)


def _observe_many(child: Histogram, values: list[float]) -> None:
    """Add many observations with one increment per bucket where prometheus_client allows."""
    buckets = getattr(child, "_buckets", None)
    bounds = getattr(child, "_upper_bounds", None)
    total = getattr(child, "_sum", None)
    if not isinstance(buckets, list) or bounds is None or total is None:
        for value in values:  # a prometheus_client without those internals
            child.observe(value)
        return
    counts = [0] * len(bounds)
    for value in values:
        counts[bisect_left(bounds, value)] += 1
    for bucket, count in zip(buckets, counts, strict=True):
        if count:
            bucket.inc(count)
    total.inc(sum(values))
