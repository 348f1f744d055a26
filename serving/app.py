"""The ASGI application: a lean path for POST /predict, FastAPI for everything else.

``KilnApp`` is what gunicorn's uvicorn workers run (``serving.app:create_app()``).
It answers ``POST /predict`` and ``POST /predict/label`` itself, straight on ASGI
(orjson in, numpy checks, ONNX Runtime, orjson out), and hands every other request
to a FastAPI app that owns the rest of the API and the OpenAPI document. The FastAPI
app declares the two fast routes too, with the same handler, so /docs describes them
and they behave the same if the FastAPI app is mounted on its own.

The model is loaded in the ASGI lifespan, per worker. If it cannot be loaded the
worker logs one line and reports ``lifespan.startup.failed``; uvicorn then never
serves, so readiness never turns true, and gunicorn stops with exit code 3.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import MutableMapping
from time import perf_counter
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from serving import schemas
from serving.artifacts import ModelLoadError
from serving.config import ServingConfig
from serving.metrics import Metrics
from serving.model import LABEL_OUTPUT, PROBABILITIES_OUTPUT, Model, load_model
from serving.validation import (
    ClientDisconnected,
    RequestError,
    check_content_type,
    parse_predict_body,
    parse_v2_request,
    read_body,
)

logger = logging.getLogger(__name__)

JSON = "application/json"
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_NOT_READY = RequestError(503, "not_ready", "the model is not loaded; see GET /ready")
_INTERNAL = RequestError(500, "internal", "the server failed to answer; see its logs")
V2_OUTPUTS = (PROBABILITIES_OUTPUT, LABEL_OUTPUT)


def create_app(config: ServingConfig | None = None) -> KilnApp:
    """The app gunicorn runs; the config comes from the environment unless given."""
    return KilnApp(config if config is not None else ServingConfig.from_env())


class KilnApp:
    """The ASGI callable: lifespan, the fast prediction routes, metrics, then FastAPI."""

    def __init__(self, config: ServingConfig) -> None:
        self.config = config
        self.metrics = Metrics(config.metrics_flush_seconds)
        self.model: Model | None = None
        self.ready = False
        self.api = build_api(self)
        self._fast_routes = {"/predict": False, "/predict/label": True}

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
            status, body, rows = await self.answer_predict(scope, receive, labels)
        except ClientDisconnected:
            return
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(body)),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        route = "/predict/label" if labels else "/predict"
        self.metrics.observe(route, "POST", status, perf_counter() - start, rows)

    async def _forward(self, scope: dict, receive: Any, send: Any) -> None:
        start = perf_counter()
        status = 500

        async def send_status(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.api(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            rows = scope.get("kiln.rows", 0)
            self.metrics.observe(template, scope["method"], status, perf_counter() - start, rows)

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
        self.ready = False
        flusher.cancel()
        self.metrics.flush()
        await send({"type": "lifespan.shutdown.complete"})

    # -- model -------------------------------------------------------------------------

    def start(self) -> None:
        """Load, verify and warm up the model; only then is the app ready."""
        model = load_model(self.config)
        self.model = model
        self.metrics.set_model(model.version, model.sha256, self.model_name)
        self.api.version = model.version
        self.api.openapi_schema = None
        self.ready = True

    @property
    def model_name(self) -> str:
        if self.config.model_name:
            return self.config.model_name
        name = self.model.metadata.get("name") if self.model is not None else None
        return name if isinstance(name, str) and name else "model"

    async def answer_predict(
        self, scope: MutableMapping[str, Any], receive: Any, labels: bool
    ) -> tuple[int, bytes, int]:
        """The shared core of POST /predict[/label]: (status, JSON body, rows scored)."""
        model = self.model
        if model is None or not self.ready:
            return _NOT_READY.status, _NOT_READY.body(), 0
        content_type = content_length = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                content_length = value
        try:
            check_content_type(content_type)
            body = await read_body(receive, content_length, self.config.max_body_bytes)
            rows = parse_predict_body(body, model.n_features, self.config.max_rows)
        except RequestError as err:
            return err.status, err.body(), 0
        try:
            indices, probabilities = model.predict(rows)
            if labels:
                out = orjson.dumps({"prediction": model.label_names(indices)})
            else:
                out = orjson.dumps({"prediction": probabilities}, option=_NUMPY)
        except Exception:
            logger.exception("prediction failed on %d rows", rows.shape[0])
            return _INTERNAL.status, _INTERNAL.body(), 0
        return 200, out, rows.shape[0]


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "code": code}, status_code=status)


def _raw(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type=JSON)


def build_api(app: KilnApp) -> FastAPI:
    """The FastAPI app: every route but the fast paths' hot loop, and /docs."""
    api = FastAPI(
        title="kiln model server",
        description="Predictions from the model baked into this image. "
        'Errors are JSON objects: {"error": message, "code": code}.',
        version="unloaded",
        redoc_url=None,
    )

    @api.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = str(exc.detail).lower().replace(" ", "_")
        if exc.status_code == 503:
            return _error(503, _NOT_READY.code, _NOT_READY.message)
        return _error(exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}")

    @api.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, "invalid_request", f"{where}: {first.get('msg', 'invalid request')}")

    def loaded() -> Model:
        if app.model is None or not app.ready:
            raise HTTPException(503)
        return app.model

    async def predict_route(request: Request, labels: bool) -> Response:
        try:
            status, body, rows = await app.answer_predict(request.scope, request.receive, labels)
        except ClientDisconnected:
            return Response(status_code=400)
        request.scope["kiln.rows"] = rows
        return _raw(body, status)

    predict_doc = schemas.request_body(schemas.PredictRequest, {"data": [schemas.ROW_EXAMPLE]})

    @api.post(
        "/predict",
        tags=["predict"],
        summary="Class probabilities for every row",
        response_model=schemas.PredictResponse,
        responses=schemas.ERROR_RESPONSES,
        openapi_extra=predict_doc,
    )
    async def predict(request: Request) -> Response:
        """One row of class probabilities per input row, in the order of GET /label.

        Served on a lean path (orjson, numpy, ONNX Runtime) outside FastAPI's
        request handling; this declaration documents it and behaves the same."""
        return await predict_route(request, labels=False)

    @api.post(
        "/predict/label",
        tags=["predict"],
        summary="The predicted label of every row",
        response_model=schemas.LabelResponse,
        responses=schemas.ERROR_RESPONSES,
        openapi_extra=predict_doc,
    )
    async def predict_label(request: Request) -> Response:
        """One label per input row. Served on the same lean path as POST /predict."""
        return await predict_route(request, labels=True)

    @api.get("/predict/test", tags=["predict"], response_model=schemas.PredictResponse)
    async def predict_test(request: Request) -> Response:
        """Probabilities for the sample input stored in metadata.json."""
        model = loaded()
        _, probabilities = model.predict(model.sample_input)
        request.scope["kiln.rows"] = len(probabilities)
        return _raw(orjson.dumps({"prediction": probabilities}, option=_NUMPY))

    @api.get("/predict/test/label", tags=["predict"], response_model=schemas.LabelResponse)
    async def predict_test_label(request: Request) -> Response:
        """Labels for the sample input stored in metadata.json."""
        model = loaded()
        indices, _ = model.predict(model.sample_input)
        request.scope["kiln.rows"] = len(indices)
        return _raw(orjson.dumps({"prediction": model.label_names(indices)}))

    @api.get("/health", tags=["health"], response_model=schemas.HealthResponse)
    async def health() -> dict:
        """Liveness: the process answers. Says nothing about the model."""
        return {"health": "ok"}

    @api.get(
        "/ready",
        tags=["health"],
        response_model=schemas.ReadyResponse,
        responses={503: {"model": schemas.ReadyResponse}},
    )
    async def ready() -> JSONResponse:
        """Readiness: the model is loaded, verified and has answered its warm-up inference."""
        is_ready = app.ready and app.model is not None
        return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)

    @api.get("/metadata", tags=["model"], response_model=schemas.MetadataResponse)
    async def metadata() -> Response:
        """The model's signature, version, sha256, metrics, a sample input and its output."""
        model = loaded()
        meta = model.metadata
        body = {
            "name": app.model_name,
            "version": model.version,
            "sha256": model.sha256,
            "created": meta.get("created"),
            "metrics": meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {},
            "inputs": [model.input.as_dict()],
            "outputs": [spec.as_dict() for spec in model.outputs],
            "feature_names": model.feature_names,
            "labels": {str(i): name for i, name in enumerate(model.labels)},
            "sample_input": model.artifacts.sample_input,
            "sample_output": {
                "prediction": model.sample_probabilities,
                "label": model.label_names(model.sample_labels),
            },
            "limits": {
                "max_rows": app.config.max_rows,
                "max_body_bytes": app.config.max_body_bytes,
            },
            "metadata": meta,
        }
        return _raw(orjson.dumps(body, option=_NUMPY, default=str))

    @api.get("/label", tags=["model"], response_model=dict[str, str])
    async def label() -> dict:
        """The labels map: class index (as a string) to label."""
        model = loaded()
        return {str(i): name for i, name in enumerate(model.labels)}

    @api.get("/metrics", tags=["health"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus text format, summed over all gunicorn workers."""
        return Response(app.metrics.exposition(), media_type=app.metrics.content_type)

    # -- Open Inference Protocol (V2) --------------------------------------------------

    @api.get("/v2", tags=["v2"])
    async def v2_server() -> dict:
        """V2 server metadata."""
        return {"name": "kiln", "version": api.version, "extensions": []}

    @api.get("/v2/health/live", tags=["v2"], response_model=schemas.LiveResponse)
    async def v2_live() -> dict:
        """V2 liveness."""
        return {"live": True}

    @api.get(
        "/v2/health/ready",
        tags=["v2"],
        response_model=schemas.ReadyResponse,
        responses={503: {"model": schemas.ReadyResponse}},
    )
    async def v2_ready() -> JSONResponse:
        """V2 readiness (same as GET /ready)."""
        return await ready()

    def named(name: str) -> Model:
        model = loaded()
        if name != app.model_name:
            raise RequestError(
                404,
                "model_not_found",
                f"model {name!r} is not served here; this server serves {app.model_name!r}",
            )
        return model

    @api.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> Response:
        return _raw(exc.body(), exc.status)

    @api.get(
        "/v2/models/{name}",
        tags=["v2"],
        response_model=schemas.V2ModelMetadata,
        responses={404: {"model": schemas.V2Error}},
    )
    async def v2_model(name: str) -> dict:
        """V2 model metadata: the input tensor and the two outputs."""
        model = named(name)
        return {
            "name": app.model_name,
            "versions": [model.version],
            "platform": "onnxruntime_onnx",
            "inputs": [
                {"name": model.input.name, "datatype": "FP32", "shape": [-1, model.n_features]}
            ],
            "outputs": [
                {
                    "name": PROBABILITIES_OUTPUT,
                    "datatype": "FP32",
                    "shape": [-1, len(model.labels)],
                },
                {"name": LABEL_OUTPUT, "datatype": "BYTES", "shape": [-1]},
            ],
        }

    @api.get("/v2/models/{name}/ready", tags=["v2"], response_model=schemas.ReadyResponse)
    async def v2_model_ready(name: str) -> dict:
        """V2 model readiness."""
        named(name)
        return {"ready": True}

    v2_doc = schemas.request_body(
        schemas.V2InferRequest,
        {
            "inputs": [
                {"name": "X", "shape": [1, 4], "datatype": "FP32", "data": schemas.ROW_EXAMPLE}
            ]
        },
    )

    @api.post(
        "/v2/models/{name}/infer",
        tags=["v2"],
        response_model=schemas.V2InferResponse,
        responses={**schemas.ERROR_RESPONSES, 404: {"model": schemas.V2Error}},
        openapi_extra=v2_doc,
    )
    async def v2_infer(name: str, request: Request) -> Response:
        """V2 inference: an FP32 tensor [N, n_features] in; probabilities (FP32 [N, C]) and
        labels (BYTES [N]) out."""
        model = named(name)
        check_content_type(request.headers.get("content-type", "").encode("latin-1") or None)
        try:
            body = await read_body(
                request.receive, request.headers.get("content-length"), app.config.max_body_bytes
            )
        except ClientDisconnected:
            return Response(status_code=400)
        rows, wanted, request_id = parse_v2_request(
            body, model.input.name, model.n_features, app.config.max_rows, V2_OUTPUTS
        )
        if request_id is not None and not isinstance(request_id, str):
            raise RequestError(422, "wrong_id", "'id' must be a string")
        indices, probabilities = model.predict(rows)
        outputs = []
        for output in wanted:
            if output == PROBABILITIES_OUTPUT:
                outputs.append(
                    {
                        "name": PROBABILITIES_OUTPUT,
                        "datatype": "FP32",
                        "shape": list(probabilities.shape),
                        "data": np.ravel(probabilities),
                    }
                )
            else:
                outputs.append(
                    {
                        "name": LABEL_OUTPUT,
                        "datatype": "BYTES",
                        "shape": [len(indices)],
                        "data": model.label_names(indices),
                    }
                )
        request.scope["kiln.rows"] = rows.shape[0]
        answer: dict[str, Any] = {"model_name": app.model_name, "model_version": model.version}
        if request_id is not None:
            answer["id"] = request_id
        answer["outputs"] = outputs
        return _raw(orjson.dumps(answer, option=_NUMPY))

    return api
