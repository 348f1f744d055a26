"""What the HTTP protocol refused or closed before the app saw it, counted in plain Python.

Kept apart from serving/metrics.py on purpose: the gunicorn master imports the worker
class (serving/worker.py -> protocol.py -> protocol_connection.py -> here) before its
``on_starting`` hook sets ``PROMETHEUS_MULTIPROC_DIR``, and prometheus_client picks
in-memory or multiprocess values once, when first imported. Nothing the master imports
before that hook may import prometheus_client (tests/serving/test_gunicorn.py checks it).
"""

from __future__ import annotations

REFUSAL_REASONS = (
    "headers_too_large",
    "too_many_headers",
    "uri_too_long",
    "body_too_large",
    "request_timeout",
    "server_busy",
    "bad_request",
    "idle_timeout",
    "evicted",
)

# Since the last flush into the metrics. Module level: the protocol has no handle on the
# app; both live in the one worker process.
refused: dict[str, int] = {}


def count_refused(reason: str) -> None:
    """Called by the protocol for each request or connection it refuses or closes."""
    refused[reason] = refused.get(reason, 0) + 1
