"""The Open Inference Protocol (V2) subset: server metadata and health, model metadata and
readiness, inference."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from serving import schemas
from serving.dependencies import NamedModel, Service
from serving.errors import raw_json
from serving.model import LABEL_OUTPUT, PROBABILITIES_OUTPUT, Model
from serving.routes.health import readiness
from serving.validation import (
    ClientDisconnected,
    RequestError,
    check_content_type,
    parse_v2_request,
    read_body,
)

router = APIRouter(tags=["v2"])

V2_OUTPUTS = (PROBABILITIES_OUTPUT, LABEL_OUTPUT)
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": schemas.V2Error}}
_INFER_DOC = schemas.request_body(
    schemas.V2InferRequest,
    {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": schemas.ROW_EXAMPLE}]},
)


@router.get("/v2")
async def v2_server(request: Request) -> dict:
    """V2 server metadata."""
    return {"name": "kiln", "version": request.app.version, "extensions": []}


@router.get("/v2/health/live", response_model=schemas.LiveResponse)
async def v2_live() -> dict:
    """V2 liveness."""
    return {"live": True}


@router.get(
    "/v2/health/ready",
    response_model=schemas.ReadyResponse,
    responses={503: {"model": schemas.ReadyResponse}},
)
async def v2_ready(service: Service) -> JSONResponse:
    """V2 readiness (same as GET /ready)."""
    return readiness(service)


@router.get("/v2/models/{name}", response_model=schemas.V2ModelMetadata, responses=_NOT_FOUND)
async def v2_model(model: NamedModel, service: Service) -> dict:
    """V2 model metadata: the input tensor and the two outputs."""
    classes = len(model.labels)
    return {
        "name": service.model_name,
        "versions": [model.version],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": model.input.name, "datatype": "FP32", "shape": [-1, model.n_features]}],
        "outputs": [
            {"name": PROBABILITIES_OUTPUT, "datatype": "FP32", "shape": [-1, classes]},
            {"name": LABEL_OUTPUT, "datatype": "BYTES", "shape": [-1]},
        ],
    }


@router.get("/v2/models/{name}/ready", response_model=schemas.ReadyResponse)
async def v2_model_ready(model: NamedModel) -> dict:
    """V2 model readiness."""
    return {"ready": True}


@router.post(
    "/v2/models/{name}/infer",
    response_model=schemas.V2InferResponse,
    responses={**schemas.ERROR_RESPONSES, **_NOT_FOUND},
    openapi_extra=_INFER_DOC,
)
async def v2_infer(request: Request, model: NamedModel, service: Service) -> Response:
    """V2 inference: an FP32 tensor [N, n_features] in; probabilities (FP32 [N, C]) and
    labels (BYTES [N]) out."""
    check_content_type(request.headers.get("content-type", "").encode("latin-1") or None)
    limits = service.config
    try:
        body = await read_body(
            request.receive, request.headers.get("content-length"), limits.max_body_bytes
        )
    except ClientDisconnected:
        return Response(status_code=400)
    rows, wanted, request_id = parse_v2_request(
        body, model.input.name, model.n_features, limits.max_rows, V2_OUTPUTS
    )
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError(422, "wrong_id", "'id' must be a string")
    indices, probabilities = model.predict(rows)
    request.scope["kiln.rows"] = rows.shape[0]
    answer: dict[str, Any] = {"model_name": service.model_name, "model_version": model.version}
    if request_id is not None:
        answer["id"] = request_id
    answer["outputs"] = [_output(name, model, indices, probabilities) for name in wanted]
    return raw_json(orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY))


def _output(
    name: str, model: Model, indices: np.ndarray, probabilities: np.ndarray
) -> dict[str, Any]:
    """One V2 output tensor: the probabilities (flat, row-major) or the labels."""
    if name == PROBABILITIES_OUTPUT:
        return {
            "name": PROBABILITIES_OUTPUT,
            "datatype": "FP32",
            "shape": list(probabilities.shape),
            "data": np.ravel(probabilities),
        }
    return {
        "name": LABEL_OUTPUT,
        "datatype": "BYTES",
        "shape": [len(indices)],
        "data": model.label_names(indices),
    }
