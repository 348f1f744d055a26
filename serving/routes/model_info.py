"""What the server runs: GET /metadata and GET /label."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter
from fastapi.responses import Response

from serving import schemas
from serving.dependencies import LoadedModel, Service
from serving.errors import raw_json
from serving.model import Model
from serving.service import ModelService

router = APIRouter(tags=["model"])


def describe(model: Model, service: ModelService) -> dict[str, Any]:
    """The /metadata document: signature, task, schema, version, sha256, metrics, the
    sample (as stored, and as a POST /predict body) and its answer, limits."""
    meta = model.metadata
    if model.regression:
        sample_output: dict[str, Any] = model.answer(model.sample_outputs, labels=False)
    else:
        sample_output = {
            "prediction": model.sample_probabilities,
            "label": model.label_names(model.sample_labels),
        }
    return {
        "name": service.model_name,
        "version": model.version,
        "sha256": model.sha256,
        "created": meta.get("created"),
        "metrics": meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {},
        "inputs": [spec.as_dict() for spec in model.inputs],
        "outputs": [spec.as_dict() for spec in model.outputs],
        "feature_names": model.feature_names,
        "labels": label_map(model),
        "task": model.task,
        "schema": model.schema.as_dict(),
        "sample_input": model.artifacts.sample_input,
        "sample_request": model.sample_request(),
        "sample_output": sample_output,
        "limits": {
            "max_rows": service.config.max_rows,
            "max_body_bytes": service.config.max_body_bytes,
        },
        "metadata": meta,
    }


def label_map(model: Model) -> dict[str, str]:
    return {str(i): name for i, name in enumerate(model.labels)}


@router.get("/metadata", response_model=schemas.MetadataResponse)
async def metadata(model: LoadedModel, service: Service) -> Response:
    """The model's signature, version, sha256, metrics, a sample input and its output."""
    body = describe(model, service)
    return raw_json(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY, default=str))


@router.get("/label", response_model=dict[str, str])
async def label(model: LoadedModel) -> dict:
    """The labels map: class index (as a string) to label (``{}`` for a regressor)."""
    return label_map(model)
