"""The smoke test both targets run on a new version before it counts as deployed.

A leaf module: it knows how to ask a server for its metadata and one prediction through
a `Caller`, and nothing about containers or clusters.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kiln.config.errors import KilnError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reply:
    """One HTTP answer from the server under test."""

    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


# (method, path, json body or None) -> Reply
Caller = Callable[[str, str, Any], Reply]
# What a target runs against the new version, through a Caller that reaches it.
SmokeTest = Callable[[Caller], None]


class SmokeTestFailed(Exception):
    """The new version answered wrongly (internal; rollouts turn it into RolloutError)."""


def http_caller(base_url: str, timeout: float = 5.0) -> Caller:
    """(method, path, json body) -> Reply over plain HTTP; connection errors raise OSError."""

    def call(method: str, path: str, body: Any) -> Reply:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            base_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data else {},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return Reply(response.status, response.read())
        except urllib.error.HTTPError as err:
            return Reply(err.code, err.read())

    return call


def predict_request(sample_input: Any) -> dict[str, Any]:
    """The POST /predict body for a model's sample input (rows of features)."""
    if isinstance(sample_input, dict):
        return sample_input
    return {"data": sample_input}


def smoke_test(call: Caller, version: str, sample_input: Any) -> None:
    """Ask the server for its metadata and one prediction; raise SmokeTestFailed if wrong."""
    reply = _call(call, "GET", "/metadata", None)
    if reply.status != 200:
        raise SmokeTestFailed(f"GET /metadata answered {reply.status}: {snippet(reply.body)}")
    reported = _reported_version(reply)
    if reported != version:
        raise SmokeTestFailed(f"GET /metadata reports version {reported!r}, expected {version!r}")
    request = predict_request(sample_input)
    reply = _call(call, "POST", "/predict", request)
    if reply.status != 200:
        raise SmokeTestFailed(f"POST /predict answered {reply.status}: {snippet(reply.body)}")
    try:
        answer = reply.json()
    except ValueError as err:
        raise SmokeTestFailed(f"POST /predict answered non-JSON: {snippet(reply.body)}") from err
    rows = request.get("data") if isinstance(request, dict) else None
    predictions = None
    if isinstance(answer, dict):  # kiln's server says "prediction": one entry per row
        predictions = answer.get("prediction", answer.get("predictions"))
    counted = isinstance(predictions, list) and len(predictions) == len(rows or [])
    if isinstance(rows, list) and not counted:
        raise SmokeTestFailed(
            f"POST /predict returned {snippet(reply.body)} for {len(rows)} sample rows"
        )
    log.info("smoke test passed: version %s answers /metadata and /predict", version)


def _call(call: Caller, method: str, path: str, body: Any) -> Reply:
    try:
        return call(method, path, body)
    except (OSError, KilnError) as err:
        raise SmokeTestFailed(f"{method} {path}: {err}") from err


def _reported_version(reply: Reply) -> str | None:
    try:
        data = reply.json()
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    value = data.get("version") or data.get("model_version")
    if value is None and isinstance(data.get("model"), dict):
        value = data["model"].get("version")
    return value


def snippet(body: bytes, limit: int = 200) -> str:
    text = body.decode(errors="replace").strip()
    return text if len(text) <= limit else text[:limit] + "..."
