"""The Open Inference Protocol (V2) subset: server metadata and health, model metadata and
readiness, inference."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from serving import schemas
from serving.contract import v2_datatypes
from serving.dependencies import NamedModel, Service
from serving.errors import raw_json
from serving.model import LABEL_OUTPUT, PROBABILITIES_OUTPUT, VALUE_OUTPUT, Model
from serving.routes.health import readiness
from serving.validation import (
    ClientDisconnected,
    check_content_type,
    parse_v2_request,
    parse_v2_tensor,
    read_body,
)

router = APIRouter(tags=["v2"])

V2_OUTPUTS = (PROBABILITIES_OUTPUT, LABEL_OUTPUT)
REGRESSION_OUTPUTS = (VALUE_OUTPUT,)
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": schemas.V2Error, "description": "No model of that name is served here."},
    503: {"model": schemas.ErrorResponse, "description": "The model is not loaded."},
}
_INFER_SCHEMA = schemas.V2InferRequest.model_json_schema(
    ref_template="#/components/schemas/{model}"
)
_INFER_SCHEMA.pop("$defs", None)  # V2Tensor is in components via the response model
_INFER_DOC = schemas.request_body(
    _INFER_SCHEMA,
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
    """V2 model metadata: the input tensor (layout "tensor") or one tensor per column, and
    the outputs (probabilities and labels, or a regressor's values)."""
    if model.input is not None:
        inputs = [{"name": model.input.name, "datatype": "FP32", "shape": [-1, model.n_features]}]
    else:
        inputs = [
            {"name": f.name, "datatype": v2_datatypes(f)[0], "shape": [-1, 1]}
            for f in model.schema.features
        ]
    if model.regression:
        outputs = [{"name": VALUE_OUTPUT, "datatype": "FP32", "shape": [-1, 1]}]
    else:
        outputs = [
            {"name": PROBABILITIES_OUTPUT, "datatype": "FP32", "shape": [-1, len(model.labels)]},
            {"name": LABEL_OUTPUT, "datatype": "BYTES", "shape": [-1]},
        ]
    return {
        "name": service.model_name,
        "versions": [model.version],
        "platform": "onnxruntime_onnx",
        "inputs": inputs,
        "outputs": outputs,
    }


@router.get("/v2/models/{name}/ready", response_model=schemas.ReadyResponse, responses=_NOT_FOUND)
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
    """V2 inference: an FP32 tensor [N, n_features] (layout "tensor") or one tensor per
    column named after it (BYTES for text; FP32, FP64, INT32, INT64 or BOOL for numbers and
    booleans; shape [N] or [N, 1]) in; probabilities (FP32 [N, C]) and labels (BYTES [N])
    out, or a regressor's ``variable`` (FP32 [N, 1])."""
    check_content_type(request.headers.get("content-type", "").encode("latin-1") or None)
    limits = service.config
    try:
        body = await read_body(
            request.receive, request.headers.get("content-length"), limits.max_body_bytes
        )
    except ClientDisconnected:
        return Response(status_code=400)
    available = REGRESSION_OUTPUTS if model.regression else V2_OUTPUTS
    inputs, wanted, request_id = parse_v2_request(body, limits.max_rows, available)
    if model.input is not None and model.decoder.plain:
        matrix = parse_v2_tensor(inputs, model.input.name, model.n_features, limits.max_rows)
        assert isinstance(matrix, np.ndarray)
        feeds, rows = {model.input.name: matrix}, matrix.shape[0]
    elif model.input is not None:  # nullable or boolean features: the schema decodes
        values = parse_v2_tensor(
            inputs, model.input.name, model.n_features, limits.max_rows, numbers_only=False
        )
        feeds, rows = model.decoder.from_rows(values, limits.max_rows)
    else:
        feeds, rows = model.decoder.from_v2(inputs, limits.max_rows)
    outputs = model.run(feeds)
    request.scope["kiln.rows"] = rows
    answer: dict[str, Any] = {"model_name": service.model_name, "model_version": model.version}
    if request_id is not None:
        answer["id"] = request_id
    answer["outputs"] = [_output(name, model, outputs) for name in wanted]
    return raw_json(orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY))


def _output(name: str, model: Model, outputs: list[np.ndarray]) -> dict[str, Any]:
    """One V2 output tensor: the probabilities (flat, row-major), the labels, or a
    regressor's values."""
    if name == VALUE_OUTPUT:
        values = outputs[0].reshape(-1, 1)
        return {
            "name": VALUE_OUTPUT,
            "datatype": "FP32",
            "shape": list(values.shape),
            "data": np.ravel(values),
        }
    indices, probabilities = outputs
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
