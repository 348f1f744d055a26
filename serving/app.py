"""The ASGI application: a lean path for POST /predict, FastAPI for everything else.

``KilnApp`` is what gunicorn's uvicorn workers run (``serving.app:create_app()``).
It answers ``POST /predict`` and ``POST /predict/label`` itself, straight on ASGI
(orjson in, numpy checks, ONNX Runtime, orjson out), and hands every other request
to a FastAPI app (serving/api.py) that owns the rest of the API and the OpenAPI
document. The FastAPI app declares the two fast routes too, with the same handler
(``ModelService.answer_predict``), so /docs describes them and they behave the same if
the FastAPI app is mounted on its own.

The model is loaded in the ASGI lifespan, per worker. If it cannot be loaded the
worker logs one line and reports ``lifespan.startup.failed``; uvicorn then never
serves and readiness never turns true (serving/worker.py decides what the worker
does next).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import MutableMapping
from time import perf_counter
from typing import Any

from serving.api import build_api
from serving.artifacts import ModelLoadError
from serving.config import ServingConfig
from serving.model import Model
from serving.service import ModelService
from serving.validation import ClientDisconnected

logger = logging.getLogger(__name__)

_JSON_HEADERS = (b"content-type", b"application/json")


def create_app(config: ServingConfig | None = None) -> KilnApp:
    """The app gunicorn runs; the config comes from the environment unless given."""
    return KilnApp(config if config is not None else ServingConfig.from_env())


class KilnApp:
    """The ASGI callable: lifespan, the fast prediction routes, metrics, then FastAPI."""

    def __init__(self, config: ServingConfig) -> None:
        self.config = config
        self.service = ModelService(config)
        self.metrics = self.service.metrics
        self.api = build_api(self.service)
        self._answer_predict = self.service.answer_predict
        self._fast_routes = {"/predict": False, "/predict/label": True}

    @property
    def model(self) -> Model | None:
        return self.service.model

    @property
    def ready(self) -> bool:
        return self.service.ready

    # -- ASGI --------------------------------------------------------------------------

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            labels = self._fast_routes.get(scope["path"])
            if labels is not None and scope["method"] == "POST":
                await self._predict_fast(scope, receive, send, labels)
            else:
                await self._forward(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self.api(scope, receive, send)

    async def _predict_fast(self, scope: dict, receive: Any, send: Any, labels: bool) -> None:
        start = perf_counter()
        try:
            status, body, rows = await self._answer_predict(scope, receive, labels)
        except ClientDisconnected:
            return
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [_JSON_HEADERS, (b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})
        route = "/predict/label" if labels else "/predict"
        self.metrics.observe(route, "POST", status, perf_counter() - start, rows)

    async def _forward(self, scope: dict, receive: Any, send: Any) -> None:
        start = perf_counter()
        status = 500
        method = scope["method"]
        if method == "HEAD":
            # FastAPI's routes take GET only: HEAD is a GET whose body the server (uvicorn,
            # which still sees HEAD) leaves out, Content-Length kept.
            scope = {**scope, "method": "GET"}

        async def send_status(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if status == 405:
                    message = {**message, "headers": _allow_head(message.get("headers", ()))}
            await send(message)

        try:
            await self.api(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            rows = scope.get("kiln.rows", 0)
            self.metrics.observe(template, method, status, perf_counter() - start, rows)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        try:
            self.start()
        except Exception as err:
            if isinstance(err, ModelLoadError):
                logger.error("model not loaded, not serving: %s", err)
            else:
                logger.exception("model not loaded, not serving: %s", err)
            await send({"type": "lifespan.startup.failed", "message": ""})
            return
        flusher = asyncio.create_task(self.metrics.flush_periodically())
        # Everything loaded so far lives as long as the worker: keep it out of the
        # garbage collector's way, so collections stay cheap under load.
        gc.collect()
        gc.freeze()
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        self.service.ready = False
        flusher.cancel()
        self.metrics.flush()
        await send({"type": "lifespan.shutdown.complete"})

    # -- model -------------------------------------------------------------------------

    def start(self) -> None:
        """Load, verify and warm up the model; only then is the app ready."""
        model = self.service.start()
        self.api.version = model.version
        self.api.openapi_schema = None

    @property
    def model_name(self) -> str:
        return self.service.model_name


def _allow_head(headers: Any) -> list[tuple[bytes, bytes]]:
    """A 405's headers, its ``Allow`` naming HEAD wherever it names GET (see _forward)."""
    out = []
    for name, value in headers:
        if name.lower() == b"allow":
            methods = [m.strip() for m in value.split(b",")]
            if b"GET" in methods and b"HEAD" not in methods:
                value = b", ".join([*methods, b"HEAD"])
        out.append((name, value))
    return out
