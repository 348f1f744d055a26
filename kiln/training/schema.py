"""A table's schema: what each feature column holds and how it reaches the ONNX model.

Stored with every version (metadata.json `schema`), read by the server to decode requests
and by the champion gate to tell whether two models take the same input. The layouts:

- `tensor`: one float32 input [N, n_features], columns in feature order. Tables whose every
  feature is a number (booleans as 1.0/0.0), for models that do not select columns by name:
  the seed's iris layout, and the fastest to serve.
- `columns`: one input per feature, [N, 1], float32 for numbers and booleans, string for
  text (missing text is ""). Tables with text columns, and pipelines that pick columns by
  name (a ColumnTransformer).

The server reads the same JSON (serving/ imports nothing of kiln: the keys are the contract,
documented in docs/model-directory.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

FeatureType = Literal["number", "integer", "boolean", "text"]
Task = Literal["classification", "regression"]
TENSOR = "tensor"
COLUMNS = "columns"
TENSOR_INPUT = "X"  # the single input's name in the tensor layout (skl2onnx's own default)
MAX_CATEGORIES = 100  # categories kept in the schema per column; more are not listed


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    type: FeatureType
    nullable: bool
    input: str | None = None  # the ONNX input's name (layout `columns`)
    categories: tuple[str, ...] | None = None  # text and boolean columns, when few enough
    min: float | None = None  # numbers
    max: float | None = None

    @property
    def dtype(self) -> str:
        return "string" if self.type == "text" else "float32"

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "dtype": self.dtype,
            "nullable": self.nullable,
        }
        if self.input is not None:
            data["input"] = self.input
        if self.categories is not None:
            data["categories"] = list(self.categories)
        if self.min is not None:
            data["min"], data["max"] = self.min, self.max
        return data


@dataclass(frozen=True)
class TargetSpec:
    name: str
    type: FeatureType
    classes: tuple[str, ...] = ()  # classification: the label of each class index

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.classes:
            data["classes"] = list(self.classes)
        return data


@dataclass(frozen=True)
class TableSchema:
    features: tuple[FeatureSpec, ...]
    target: TargetSpec
    task: Task
    layout: str = TENSOR
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def all_numeric(self) -> bool:
        return all(f.type != "text" for f in self.features)

    def with_layout(self, layout: str, inputs: list[str] | None = None) -> TableSchema:
        """The same schema in `layout`; `inputs` names each feature's ONNX input (`columns`)."""
        features = self.features
        if layout == COLUMNS:
            names = inputs or list(self.names)
            features = tuple(
                FeatureSpec(**{**asdict(f), "input": name})
                for f, name in zip(self.features, names, strict=True)
            )
        else:
            features = tuple(FeatureSpec(**{**asdict(f), "input": None}) for f in self.features)
        return TableSchema(features, self.target, self.task, layout)

    def as_dict(self) -> dict[str, Any]:
        return {
            "layout": self.layout,
            "features": [f.as_dict() for f in self.features],
            "target": self.target.as_dict(),
        }

    def signature(self) -> list[tuple[str, str]]:
        """What a client must send: each column's name and type, in order."""
        return [(f.name, f.type) for f in self.features]


def schema_from_dict(data: dict[str, Any], task: Task) -> TableSchema:
    features = tuple(
        FeatureSpec(
            name=str(f["name"]),
            type=f["type"],
            nullable=bool(f.get("nullable", False)),
            input=f.get("input"),
            categories=tuple(f["categories"]) if f.get("categories") is not None else None,
            min=f.get("min"),
            max=f.get("max"),
        )
        for f in data["features"]
    )
    target = data.get("target", {})
    spec = TargetSpec(
        str(target.get("name", "label")),
        target.get("type", "text"),
        tuple(target.get("classes", ())),
    )
    return TableSchema(features, spec, task, data.get("layout", TENSOR))


def schema_of_metadata(metadata: dict[str, Any]) -> TableSchema:
    """A stored version's schema; versions stored before schemas existed took one float
    tensor of the features they name."""
    task: Task = metadata.get("task", "classification")
    if isinstance(metadata.get("schema"), dict):
        return schema_from_dict(metadata["schema"], task)
    features = tuple(
        FeatureSpec(name=str(n), type="number", nullable=False)
        for n in metadata.get("feature_names", [])
    )
    return TableSchema(features, TargetSpec("label", "text"), task, TENSOR)


def describe_difference(old: TableSchema, new: TableSchema) -> str | None:
    """None when a client of `old` can call `new` unchanged; else which columns differ."""
    before, after = dict(old.signature()), dict(new.signature())
    parts = []
    removed = [n for n in before if n not in after]
    added = [n for n in after if n not in before]
    retyped = [
        f"{n} ({before[n]} -> {after[n]})" for n in before if n in after and before[n] != after[n]
    ]
    if removed:
        parts.append(f"removed {', '.join(removed)}")
    if added:
        parts.append(f"added {', '.join(added)}")
    if retyped:
        parts.append(f"changed {', '.join(retyped)}")
    if not parts and old.names != new.names and old.layout == TENSOR == new.layout:
        parts.append("the column order (positional input)")
    return "; ".join(parts) or None


# -- from a table ---------------------------------------------------------------------------


def feature_spec(name: str, column: pd.Series, kind: FeatureType) -> FeatureSpec:
    """The spec of a feature column already in kiln's training form (see data.prepare)."""
    if kind == "text":
        missing = bool((column == "").any())
        present = column[column != ""]
        categories = _categories(present)
        return FeatureSpec(name, kind, missing, categories=categories)
    missing = bool(column.isna().any())
    if kind == "boolean":
        return FeatureSpec(name, kind, missing, categories=("False", "True"))
    values = column.dropna()
    low = float(values.min()) if len(values) else None
    high = float(values.max()) if len(values) else None
    return FeatureSpec(name, kind, missing, min=low, max=high)


def _categories(present: pd.Series) -> tuple[str, ...] | None:
    unique = present.unique()
    if len(unique) > MAX_CATEGORIES:
        return None
    return tuple(sorted(str(v) for v in unique))


# -- to the ONNX model ----------------------------------------------------------------------


def onnx_feed(schema: TableSchema, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The ONNX inputs for rows of `frame` (columns named as the schema's features)."""
    if schema.layout == TENSOR:
        block = frame[list(schema.names)].to_numpy(dtype=np.float64)
        return {TENSOR_INPUT: block.astype(np.float32)}
    feed = {}
    for spec in schema.features:
        column = frame[spec.name]
        if spec.type == "text":
            values = column.astype(object).to_numpy().reshape(-1, 1)
            feed[spec.input or spec.name] = values.astype(str)
        else:
            feed[spec.input or spec.name] = (
                column.to_numpy(dtype=np.float64).astype(np.float32).reshape(-1, 1)
            )
    return feed


def sample_request(schema: TableSchema, rows: list[list[Any]]) -> dict[str, Any]:
    """A POST /predict body for `rows`: records for a table of columns (order-free, named),
    positional rows for the one-tensor layout (the seed's request)."""
    if schema.layout == COLUMNS:
        return {"instances": [dict(zip(schema.names, row, strict=True)) for row in rows]}
    return {"data": rows}


def json_row(schema: TableSchema, frame: pd.DataFrame, index: int = 0) -> list[Any]:
    """One row as the server takes it positionally: numbers, strings and null for missing."""
    row: list[Any] = []
    for spec in schema.features:
        value = frame[spec.name].iloc[index]
        if spec.type == "text":
            row.append(None if value == "" else str(value))
        elif value is None or (isinstance(value, float) and math.isnan(value)):
            row.append(None)
        elif spec.type == "boolean":
            row.append(bool(value))
        elif spec.type == "integer":
            row.append(int(value))
        else:  # the shortest text of its float32 value: 1.73, not 1.7300000190734863
            row.append(float(str(np.float32(value))))
    return row


# -- from a client's rows ---------------------------------------------------------------------


def frame_of_rows(schema: TableSchema, rows: list[Any]) -> pd.DataFrame:
    """Rows as a client sends them (lists in feature order, or objects keyed by column name)
    in training form; ValueError naming the row and column of the first bad value."""
    import pandas as pd

    columns: dict[str, list[Any]] = {spec.name: [] for spec in schema.features}
    for number, row in enumerate(rows, start=1):
        values = _row_values(schema, row, number)
        for spec, value in zip(schema.features, values, strict=True):
            columns[spec.name].append(_training_value(spec, value, number))
    return pd.DataFrame(columns)


def _row_values(schema: TableSchema, row: Any, number: int) -> list[Any]:
    if isinstance(row, dict):
        missing = [n for n in schema.names if n not in row]
        if missing:
            raise ValueError(f"row {number} has no column {missing[0]!r}")
        return [row[name] for name in schema.names]
    if not isinstance(row, list):
        raise ValueError(f"row {number} is neither a list of values nor an object")
    if len(row) != len(schema.features):
        raise ValueError(
            f"row {number} has {len(row)} values; the model takes {len(schema.features)} "
            f"features ({', '.join(schema.names)})"
        )
    return row


def _training_value(spec: FeatureSpec, value: Any, number: int) -> Any:
    where = f"row {number}, column {spec.name!r}"
    if value is None or value == "":
        if not spec.nullable:
            raise ValueError(f"{where}: a value is required (the model saw none missing)")
        return "" if spec.type == "text" else math.nan
    if spec.type == "text":
        if not isinstance(value, str):
            raise ValueError(f"{where}: {value!r} is not text")
        return value
    if spec.type == "boolean" and isinstance(value, str):
        words = {"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0}
        if value.strip().lower() not in words:
            raise ValueError(f"{where}: {value!r} is not true or false")
        return words[value.strip().lower()]
    try:
        number_value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {value!r} is not a number") from None
    if not math.isfinite(number_value):
        raise ValueError(f"{where}: {value!r} is not a finite number")
    return number_value
