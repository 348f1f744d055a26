"""Request and response shapes, for the OpenAPI document at /docs.

The prediction routes do not validate through these models (numpy does that, faster);
they describe the wire format so /docs and generated clients see every route. Once the
model is loaded, ``model_openapi`` rewrites the prediction routes' request bodies from
its schema (each column's type, nullability, the row limit, an example from the stored
sample), so that whatever the document allows the server accepts. The master imports
this module before forking: no numpy here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from serving.contract import (
    BOOLEAN,
    FLOAT32,
    INTEGER,
    TEXT,
    Feature,
    ModelSchema,
    v2_datatypes,
)

if TYPE_CHECKING:
    from fastapi import FastAPI

    from serving.service import ModelService

ROW_EXAMPLE = [5.1, 3.5, 1.4, 0.2]
FLOAT32_MAX = 3.4028234663852886e38
# The server reads JSON numbers as doubles (orjson, RFC 8259's interoperable range): an
# integer column's bound is the largest integer whose double is still float32's largest
# (halfway to the next double; the tie rounds to it, as its mantissa is even).
INTEGER_MAX = 2**128 - 2**104 + 2**74


# What the model computes goes out as is: where that is NaN or infinite (inputs far beyond
# what it was trained on can overflow it), JSON has no number for it and the value is null.
_NOT_FINITE = " A value the model computed as NaN or infinite is null."


class PredictResponse(BaseModel):
    prediction: list[list[float | None]] | list[float | None] = Field(
        ...,
        description="A classifier: one row of class probabilities per input row, in order. "
        "A regressor: one value per input row." + _NOT_FINITE,
    )
    labels: list[str] | None = Field(
        None, description="With ?labels=true (classifiers): the label of every row."
    )


class LabelResponse(BaseModel):
    prediction: list[str] | list[float | None] = Field(
        ...,
        description="A classifier: one label per input row, in order. A regressor (no "
        "labels): its value per row, as POST /predict." + _NOT_FINITE,
    )


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
    task: str = Field(..., description="classification or regression")
    schema_: dict[str, Any] = Field(
        ..., alias="schema", description="layout, features (name, type, nullable, ...), target"
    )
    sample_input: list[list[Any]]
    sample_request: dict[str, Any] = Field(..., description="A POST /predict body for the sample")
    sample_output: dict[str, Any]
    limits: dict[str, int]
    metadata: dict[str, Any] = Field(..., description="metadata.json as stored, all keys.")


class V2Tensor(BaseModel):
    name: str = Field(..., min_length=1)
    shape: list[int]
    datatype: str
    data: list[Any]


class V2InferRequest(BaseModel):
    id: str | None = None
    inputs: list[V2Tensor] = Field(
        ...,
        min_length=1,
        description="One FP32 tensor [N, F] (layout 'tensor'), or one tensor per column, "
        "named after it, [N] or [N, 1] (layout 'columns').",
    )
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
        "description": "Missing or malformed data: wrong nesting, feature count, a missing or "
        "unknown column, a value of the wrong type or null where the column takes none "
        "(the message names the column and row), non-finite values, empty data, more than "
        "MAX_ROWS rows.",
    },
    503: {"model": ErrorResponse, "description": "The model is not loaded (not ready)."},
}


def request_body(schema: dict[str, Any], example: dict[str, Any]) -> dict[str, Any]:
    """An ``openapi_extra`` request body for a route that reads its body itself."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema, "example": example}},
        }
    }


# -- the prediction request, generic (before a model is loaded) or from a model's schema ---

_ANY_VALUE: dict[str, Any] = {"type": ["number", "string", "boolean", "null"]}
_LABELS_PARAMETER = {
    "name": "labels",
    "in": "query",
    "required": False,
    "schema": {"type": "boolean", "default": False},
    "description": "Classifiers: also answer each row's label name, in 'labels'.",
}
_FORMS_DESCRIPTION = (
    "Exactly one of: 'data' (positional rows, in the feature order of GET /metadata), "
    "'instances' or its alias 'dataframe_records' (records keyed by column name, any key "
    "order), 'dataframe_split' (columns and rows; columns may come in any order). Every "
    "column is required; an unknown column is refused."
)


def value_schema(feature: Feature) -> dict[str, Any]:
    """The JSON values one column takes."""
    if feature.type == TEXT:
        out: dict[str, Any] = {"type": "string"}
    elif feature.type == BOOLEAN:
        also = {"enum": [0, 1]} if feature.dtype == FLOAT32 else {"enum": ["True", "False"]}
        out = {"anyOf": [{"type": "boolean"}, also]}
    elif feature.type == INTEGER:
        out = {"type": "integer", "minimum": -INTEGER_MAX, "maximum": INTEGER_MAX}
    else:
        out = {"type": "number", "minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX}
    if feature.nullable:
        out = {"anyOf": [out, {"type": "null"}]}
    return out


def _rows(item: dict[str, Any], max_rows: int | None) -> dict[str, Any]:
    rows: dict[str, Any] = {"type": "array", "minItems": 1, "items": item}
    if max_rows is not None:
        rows["maxItems"] = max_rows
    return rows


def _form(key: str, value: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "title": key,
        "description": description,
        "properties": {key: value},
        "required": [key],
    }


def predict_schema(schema: ModelSchema | None = None, max_rows: int | None = None) -> dict:
    """The POST /predict body: generic, or exactly what ``schema``'s model accepts."""
    if schema is None:
        row: dict[str, Any] = {"type": "array", "minItems": 1, "items": _ANY_VALUE}
        record: dict[str, Any] = {"type": "object", "minProperties": 1}
        split_columns: dict[str, Any] = {
            "type": "array",
            "minItems": 1,
            "items": {"type": "string"},
        }
    else:
        values = [value_schema(f) for f in schema.features]
        width = len(values)
        row = {"type": "array", "prefixItems": values, "minItems": width, "maxItems": width}
        record = {
            "type": "object",
            "properties": {f.name: v for f, v in zip(schema.features, values, strict=True)},
            "required": schema.names,
            "additionalProperties": False,
        }
        # The document shows the columns in feature order (so each row's types can be
        # stated); the server takes them in any order. One const per item rather than an
        # array const: Schemathesis cannot negate the latter inside oneOf.
        split_columns = {
            "type": "array",
            "prefixItems": [{"const": name} for name in schema.names],
            "minItems": width,
            "maxItems": width,
        }
    split = {
        "type": "object",
        "properties": {
            "columns": split_columns,
            "index": {"description": "pandas' row labels; any value, ignored."},
            "data": _rows(row, max_rows),
        },
        "required": ["columns", "data"],
    }
    records = _rows(record, max_rows)
    return {
        "description": _FORMS_DESCRIPTION,
        "oneOf": [
            _form("data", _rows(row, max_rows), "Positional rows, in feature order."),
            _form("instances", records, "Records keyed by column name."),
            _form("dataframe_records", records, "Records (MLflow's name)."),
            _form("dataframe_split", split, "pandas' split orient."),
        ],
    }


def predict_request_doc(with_labels_parameter: bool = False) -> dict[str, Any]:
    """``openapi_extra`` for POST /predict[/label] before a model is loaded."""
    extra = request_body(predict_schema(), {"data": [ROW_EXAMPLE]})
    if with_labels_parameter:
        extra["parameters"] = [_LABELS_PARAMETER]
    return extra


def v2_request_schema(
    schema: ModelSchema,
    tensor_input: str | None,
    max_rows: int | None,
    outputs: tuple[str, ...] = (),
    plain: bool = True,
) -> dict[str, Any]:
    """The V2 inference body ``schema``'s model accepts (``outputs``: the names it answers;
    ``plain``: a tensor input of non-null numbers only)."""
    rows = {"type": "integer", "minimum": 1}
    if max_rows is not None:
        rows["maximum"] = max_rows
    if tensor_input is not None:
        tensors = [_v2_tensor(schema, tensor_input, rows, plain)]
    else:
        tensors = [_v2_column(f, rows) for f in schema.features]
    output: dict[str, Any] = {"type": "object", "required": ["name"]}
    if outputs:
        output["properties"] = {"name": {"enum": list(outputs)}}
    return {
        "type": "object",
        "properties": {
            "id": {"type": ["string", "null"]},
            "inputs": {
                "type": "array",
                "prefixItems": tensors,
                "minItems": len(tensors),
                "maxItems": len(tensors),
            },
            "outputs": {"type": "array", "minItems": 1, "items": output},
        },
        "required": ["inputs"],
    }


def _v2_tensor(schema: ModelSchema, name: str, rows: dict, plain: bool) -> dict[str, Any]:
    """The one FP32 [N, F] input. Its values come flat or one list per row; the columns of
    a model that is not plain (nulls, booleans) decode by position, so rows only."""
    width = len(schema.features)
    row = {
        "type": "array",
        "prefixItems": [value_schema(f) for f in schema.features],
        "minItems": width,
        "maxItems": width,
    }
    if plain:
        number = value_schema(schema.features[0])
        per_row = {"type": "array", "minItems": 1, "items": number}
        items: dict[str, Any] = {"anyOf": [number, per_row]}
    else:
        items = row
    return {
        "type": "object",
        "properties": {
            "name": {"const": name},
            "datatype": {"const": "FP32"},
            "shape": {
                "type": "array",
                "prefixItems": [rows, {"const": width}],
                "minItems": 2,
                "maxItems": 2,
            },
            "data": {"type": "array", "minItems": 1, "items": items},
        },
        "required": ["name", "datatype", "shape", "data"],
        "description": "Row-major values, flat or one list per row; shape [N, F] must "
        "count them exactly (N * F values).",
    }


def _v2_column(feature: Feature, rows: dict) -> dict[str, Any]:
    """One column's tensor, named after it, [N] or [N, 1]."""
    return {
        "type": "object",
        "properties": {
            "name": {"const": feature.name},
            "datatype": {"enum": list(v2_datatypes(feature))},
            "shape": {
                "type": "array",
                "prefixItems": [rows, {"const": 1}],
                "minItems": 1,
                "maxItems": 2,
            },
            "data": {"type": "array", "minItems": 1, "items": value_schema(feature)},
        },
        "required": ["name", "datatype", "shape", "data"],
        "description": "shape [N] or [N, 1]; N values, the same N for every column.",
    }


def v2_example(schema: ModelSchema, tensor_input: str | None, sample: list[list[Any]]) -> dict:
    rows = len(sample)
    if tensor_input is not None:
        flat = [v for row in sample for v in row]
        shape = [rows, len(schema.features)]
        tensor = {"name": tensor_input, "shape": shape, "datatype": "FP32", "data": flat}
        return {"inputs": [tensor]}
    return {
        "inputs": [
            {
                "name": f.name,
                "shape": [rows, 1],
                "datatype": v2_datatypes(f)[0],
                "data": [row[j] for row in sample],
            }
            for j, f in enumerate(schema.features)
        ]
    }


def install_model_openapi(api: FastAPI, service: ModelService) -> None:
    """Make ``api.openapi()`` describe the loaded model (the generic document until then).

    FastAPI caches the document; the app clears the cache once the model is loaded."""
    generic: Callable[[], dict[str, Any]] = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is not None:
            return api.openapi_schema
        document = generic()
        model = service.loaded()
        if model is not None:
            _specialise(document, model, service.config.max_rows)
        api.openapi_schema = document
        return document

    api.openapi = openapi  # type: ignore[method-assign]


def _specialise(document: dict[str, Any], model: Any, max_rows: int) -> None:
    paths = document.get("paths", {})
    schema: ModelSchema = model.schema
    tensor_input = model.input.name if model.input is not None else None
    body = predict_schema(schema, max_rows)
    example = model.sample_request()
    for path in ("/predict", "/predict/label"):
        operation = paths.get(path, {}).get("post")
        if operation is not None:
            operation["requestBody"] = request_body(body, example)["requestBody"]
    infer = paths.get("/v2/models/{name}/infer", {}).get("post")
    if infer is not None:
        # Imported here, once a model is loaded: the master imports this module, no numpy.
        from serving.model import LABEL_OUTPUT, PROBABILITIES_OUTPUT, VALUE_OUTPUT

        outputs = (VALUE_OUTPUT,) if model.regression else (PROBABILITIES_OUTPUT, LABEL_OUTPUT)
        v2_body = v2_request_schema(schema, tensor_input, max_rows, outputs, model.decoder.plain)
        v2_ex = v2_example(schema, tensor_input, model.artifacts.sample_input)
        infer["requestBody"] = request_body(v2_body, v2_ex)["requestBody"]
