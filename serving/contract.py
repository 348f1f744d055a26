"""The model directory contract, version 2: ``task`` and ``schema`` in metadata.json.

Pure Python (no numpy, no ONNX Runtime): the gunicorn master parses and checks this before
it forks any worker. docs/model-directory.md describes the contract; this module is its
reader. A version-1 directory (no ``task``, no ``schema``: today's iris) parses to
``task="classification"`` and ``schema=None``; the model then describes its one float
input itself (serving/model.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

CLASSIFICATION = "classification"
REGRESSION = "regression"
TASKS = (CLASSIFICATION, REGRESSION)

TENSOR = "tensor"
COLUMNS = "columns"
LAYOUTS = (TENSOR, COLUMNS)

NUMBER, INTEGER, BOOLEAN, TEXT = "number", "integer", "boolean", "text"
FEATURE_TYPES = (NUMBER, INTEGER, BOOLEAN, TEXT)
FLOAT32, STRING = "float32", "string"
# Which ONNX input types each feature type may be fed as.
DTYPES_BY_TYPE = {
    NUMBER: (FLOAT32,),
    INTEGER: (FLOAT32,),
    BOOLEAN: (FLOAT32, STRING),
    TEXT: (STRING,),
}
MAX_FEATURES = 10_000  # a bound on what a metadata file can make the server allocate


class ContractError(ValueError):
    """metadata.json breaks the contract; the message names the key."""


@dataclass(frozen=True)
class Feature:
    """One column of the model's input table."""

    name: str
    type: str
    dtype: str
    nullable: bool = False
    input: str | None = None  # the ONNX input name, layout "columns" only
    categories: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.input is not None:
            out["input"] = self.input
        out.update(type=self.type, dtype=self.dtype, nullable=self.nullable)
        if self.categories is not None:
            out["categories"] = list(self.categories)
        if self.min is not None:
            out["min"] = self.min
        if self.max is not None:
            out["max"] = self.max
        return out


@dataclass(frozen=True)
class Target:
    name: str | None
    type: str | None
    classes: tuple[str, ...] | None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.classes is not None:
            out["classes"] = list(self.classes)
        return out


@dataclass(frozen=True)
class ModelSchema:
    """The input table a model takes, as training recorded it."""

    layout: str
    features: tuple[Feature, ...]
    target: Target | None = None

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "layout": self.layout,
            "features": [f.as_dict() for f in self.features],
        }
        if self.target is not None:
            out["target"] = self.target.as_dict()
        return out


V2_NUMBERS = ("FP32", "FP64", "INT32", "INT64")


def v2_datatypes(feature: Feature) -> tuple[str, ...]:
    """The V2 datatypes a column's tensor may have (the first is the natural one)."""
    if feature.type == TEXT:
        return ("BYTES",)
    if feature.type == BOOLEAN:
        return ("BOOL", "BYTES") if feature.dtype != FLOAT32 else ("BOOL", *V2_NUMBERS)
    return V2_NUMBERS


def numeric_schema(names: list[str]) -> ModelSchema:
    """The schema of a version-1 model: every feature a complete float32 number."""
    return ModelSchema(TENSOR, tuple(Feature(n, NUMBER, FLOAT32) for n in names))


def parse_task(metadata: dict[str, Any]) -> str:
    task = metadata.get("task", CLASSIFICATION)
    if task not in TASKS:
        raise ContractError(f"'task' is {task!r}; expected one of {list(TASKS)}")
    return task


def parse_schema(metadata: dict[str, Any]) -> ModelSchema | None:
    """metadata's ``schema`` -> ModelSchema (None when absent); ContractError if malformed."""
    raw = metadata.get("schema")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ContractError(f"'schema' must be an object, not {type(raw).__name__}")
    layout = raw.get("layout")
    if layout not in LAYOUTS:
        raise ContractError(f"schema.layout is {layout!r}; expected one of {list(LAYOUTS)}")
    items = raw.get("features")
    if not isinstance(items, list) or not items:
        raise ContractError("schema.features must be a non-empty list")
    if len(items) > MAX_FEATURES:
        raise ContractError(f"schema.features has {len(items)} entries; at most {MAX_FEATURES}")
    features = tuple(_feature(item, i, layout) for i, item in enumerate(items))
    _unique([f.name for f in features], "name")
    if layout == COLUMNS:
        _unique([f.input or "" for f in features], "input")
    return ModelSchema(layout, features, _target(raw.get("target")))


def _feature(item: Any, index: int, layout: str) -> Feature:
    where = f"schema.features[{index}]"
    if not isinstance(item, dict):
        raise ContractError(f"{where} must be an object")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise ContractError(f"{where}.name must be a non-empty string")
    where = f"schema feature {name!r}"
    kind = item.get("type")
    if kind not in FEATURE_TYPES:
        raise ContractError(f"{where}: type {kind!r} is not one of {list(FEATURE_TYPES)}")
    dtype = item.get("dtype", FLOAT32 if kind != TEXT else STRING)
    if dtype not in DTYPES_BY_TYPE[kind]:
        raise ContractError(
            f"{where}: a {kind} feature takes dtype {' or '.join(DTYPES_BY_TYPE[kind])}, "
            f"not {dtype!r}"
        )
    if layout == TENSOR and dtype != FLOAT32:
        raise ContractError(f"{where}: layout 'tensor' takes float32 features only")
    nullable = item.get("nullable", False)
    if not isinstance(nullable, bool):
        raise ContractError(f"{where}: nullable must be true or false")
    onnx_input = item.get("input")
    if layout == COLUMNS:
        if not isinstance(onnx_input, str) or not onnx_input:
            raise ContractError(f"{where}: layout 'columns' needs the ONNX 'input' name")
    else:
        onnx_input = None
    categories = item.get("categories")
    if categories is not None and not isinstance(categories, list):
        raise ContractError(f"{where}: categories must be a list")
    bounds = [item.get("min"), item.get("max")]
    for bound in bounds:
        ok = isinstance(bound, int | float) and not isinstance(bound, bool) and math.isfinite(bound)
        if bound is not None and not ok:
            raise ContractError(f"{where}: min and max must be finite numbers")
    return Feature(
        name=name,
        type=kind,
        dtype=dtype,
        nullable=nullable,
        input=onnx_input,
        categories=tuple(categories) if categories is not None else None,
        min=bounds[0],
        max=bounds[1],
    )


def _target(raw: Any) -> Target | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ContractError("schema.target must be an object")
    classes = raw.get("classes")
    if classes is not None and (not isinstance(classes, list) or not classes):
        raise ContractError("schema.target.classes must be a non-empty list")
    name, kind = raw.get("name"), raw.get("type")
    return Target(
        name=name if isinstance(name, str) else None,
        type=kind if isinstance(kind, str) else None,
        classes=tuple(str(c) for c in classes) if classes is not None else None,
    )


def _unique(values: list[str], key: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ContractError(f"schema.features: two features have the {key} {value!r}")
        seen.add(value)
