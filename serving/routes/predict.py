"""POST /predict and /predict/label (declared for /docs; served by the fast path), and the
sample routes GET /predict/test and /predict/test/label."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from serving import schemas
from serving.dependencies import LoadedModel, Service
from serving.errors import raw_json
from serving.validation import ClientDisconnected

router = APIRouter(tags=["predict"])

_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_PREDICT_DOC = schemas.request_body(schemas.PredictRequest, {"data": [schemas.ROW_EXAMPLE]})


async def _predict(request: Request, service: Service, labels: bool) -> Response:
    try:
        status, body, rows = await service.answer_predict(request.scope, request.receive, labels)
    except ClientDisconnected:
        return Response(status_code=400)
    request.scope["kiln.rows"] = rows
    return raw_json(body, status)


@router.post(
    "/predict",
    summary="Class probabilities for every row",
    response_model=schemas.PredictResponse,
    responses=schemas.ERROR_RESPONSES,
    openapi_extra=_PREDICT_DOC,
)
async def predict(request: Request, service: Service) -> Response:
    """One row of class probabilities per input row, in the order of GET /label.

    Served on a lean path (orjson, numpy, ONNX Runtime) outside FastAPI's
    request handling; this declaration documents it and behaves the same."""
    return await _predict(request, service, labels=False)


@router.post(
    "/predict/label",
    summary="The predicted label of every row",
    response_model=schemas.LabelResponse,
    responses=schemas.ERROR_RESPONSES,
    openapi_extra=_PREDICT_DOC,
)
async def predict_label(request: Request, service: Service) -> Response:
    """One label per input row. Served on the same lean path as POST /predict."""
    return await _predict(request, service, labels=True)


@router.get("/predict/test", response_model=schemas.PredictResponse)
async def predict_test(request: Request, model: LoadedModel) -> Response:
    """Probabilities for the sample input stored in metadata.json."""
    _, probabilities = model.predict(model.sample_input)
    request.scope["kiln.rows"] = len(probabilities)
    return raw_json(orjson.dumps({"prediction": probabilities}, option=_NUMPY))


@router.get("/predict/test/label", response_model=schemas.LabelResponse)
async def predict_test_label(request: Request, model: LoadedModel) -> Response:
    """Labels for the sample input stored in metadata.json."""
    indices, _ = model.predict(model.sample_input)
    request.scope["kiln.rows"] = len(indices)
    return raw_json(orjson.dumps({"prediction": model.label_names(indices)}))
