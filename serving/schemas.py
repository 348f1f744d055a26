"""Request and response shapes, for the OpenAPI document at /docs.

The prediction routes do not validate through these models (numpy does that, faster);
they describe the wire format so /docs and generated clients see every route.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

ROW_EXAMPLE = [5.1, 3.5, 1.4, 0.2]


class PredictRequest(BaseModel):
    data: list[list[float]] = Field(
        ...,
        description="Rows of features, in the model's feature order (see GET /metadata). "
        "At least one row, at most MAX_ROWS. Finite numbers only.",
        examples=[[ROW_EXAMPLE]],
    )


class PredictResponse(BaseModel):
    prediction: list[list[float]] = Field(
        ..., description="One row of class probabilities per input row, in order."
    )


class LabelResponse(BaseModel):
    prediction: list[str] = Field(..., description="One label per input row, in order.")


class ErrorResponse(BaseModel):
    error: str = Field(..., description="What was wrong, in words.")
    code: str = Field(..., description="A stable machine-readable code, e.g. wrong_feature_count.")


class HealthResponse(BaseModel):
    health: str = "ok"


class ReadyResponse(BaseModel):
    ready: bool


class LiveResponse(BaseModel):
    live: bool


class TensorInfo(BaseModel):
    name: str
    type: str
    shape: list[int | None]


class MetadataResponse(BaseModel):
    name: str
    version: str
    sha256: str
    created: str | None
    metrics: dict[str, Any]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    feature_names: list[str]
    labels: dict[str, str]
    sample_input: list[list[float]]
    sample_output: dict[str, Any]
    limits: dict[str, int]
    metadata: dict[str, Any] = Field(..., description="metadata.json as stored, all keys.")


class V2Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class V2InferRequest(BaseModel):
    id: str | None = None
    inputs: list[V2Tensor] = Field(..., min_length=1, max_length=1)
    outputs: list[dict[str, Any]] | None = Field(
        None, description='Optional subset, e.g. [{"name": "label"}]. Default: all outputs.'
    )


class V2InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[V2Tensor]


class V2TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]


class V2Error(BaseModel):
    error: str
    code: str | None = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Empty body or invalid JSON."},
    413: {"model": ErrorResponse, "description": "The body exceeds MAX_BODY_BYTES."},
    415: {"model": ErrorResponse, "description": "A Content-Type other than JSON."},
    422: {
        "model": ErrorResponse,
        "description": "Missing or malformed data: wrong nesting, feature count, non-numeric "
        "or non-finite values, empty data, more than MAX_ROWS rows.",
    },
    503: {"model": ErrorResponse, "description": "The model is not loaded (not ready)."},
}


def request_body(model: type[BaseModel], example: dict[str, Any]) -> dict[str, Any]:
    """An ``openapi_extra`` request body for a route that reads its body itself."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)  # nested models are in components via the response models
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema, "example": example}},
        }
    }
