"""POST /predict and /predict/label (declared for /docs; served by the fast path), and the
sample routes GET /predict/test and /predict/test/label."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from serving import schemas
from serving.dependencies import LoadedModel, Service
from serving.errors import raw_json
from serving.model import Model
from serving.validation import ClientDisconnected

router = APIRouter(tags=["predict"])

_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_PREDICT_DOC = schemas.predict_request_doc()


async def _predict(request: Request, service: Service, labels: bool) -> Response:
    try:
        status, body, rows = await service.answer_predict(request.scope, request.receive, labels)
    except ClientDisconnected:
        return Response(status_code=400)
    request.scope["kiln.rows"] = rows
    return raw_json(body, status)


@router.post(
    "/predict",
    summary="Class probabilities (a classifier) or values (a regressor) for every row",
    response_model=schemas.PredictResponse,
    responses=schemas.ERROR_RESPONSES,
    openapi_extra=schemas.predict_request_doc(with_labels_parameter=True),
)
async def predict(request: Request, service: Service) -> Response:
    """One row of class probabilities per input row, in the order of GET /label (with
    ``?labels=true``, the label names too, in ``labels``); a regressor's value per row.

    Rows come as ``data`` (positional, in the order of GET /metadata's features),
    ``instances`` (records keyed by column name) or ``dataframe_split``.

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


def _sample(request: Request, model: Model, labels: bool) -> Response:
    answer = model.answer(model.run(model.sample_feeds), labels)
    request.scope["kiln.rows"] = model.sample_rows
    return raw_json(orjson.dumps(answer, option=_NUMPY))


@router.get("/predict/test", response_model=schemas.PredictResponse)
async def predict_test(request: Request, model: LoadedModel) -> Response:
    """The answer of POST /predict for the sample input stored in metadata.json."""
    return _sample(request, model, labels=False)


@router.get("/predict/test/label", response_model=schemas.LabelResponse)
async def predict_test_label(request: Request, model: LoadedModel) -> Response:
    """The answer of POST /predict/label for the sample input stored in metadata.json."""
    return _sample(request, model, labels=True)
