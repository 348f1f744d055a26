"""Real ONNX models of typed tables, and model directories that follow the contract v2.

- wine: scikit-learn's wine data plus a text column ``region`` (with missing values, as
  ``""``), a boolean column ``organic`` and missing ``alcohol`` values, through
  ColumnTransformer(OneHotEncoder(handle_unknown="ignore") + SimpleImputer/StandardScaler)
  and LogisticRegression, exported with one ONNX input per column (layout "columns").
  ``magnesium`` and ``proline`` are integers.
  Its column ``od280/od315_of_diluted_wines`` has the ONNX input
  ``od280_od315_of_diluted_wines``: the schema maps one to the other.
- diabetes: a Ridge regressor on scikit-learn's diabetes data, one float input
  (layout "tensor", task "regression").

Training needs scikit-learn, skl2onnx and pandas (the dev extra); the server does not.
Used by tests/serving/test_tables*.py and bench/bench_records.py.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from model_dirs import write_model_dir

REGIONS = ["east", "west", "north"]


@dataclass(frozen=True)
class TableModel:
    onnx: bytes
    schema: dict[str, Any]
    labels: dict[str, str]
    task: str
    sample: list[list[Any]]  # positional rows, in feature order, JSON values
    pipeline: Any  # the fitted scikit-learn estimator, for parity checks
    frame: Any  # the training table (pandas DataFrame)


def _input_name(column: str) -> str:
    return re.sub(r"[^0-9a-zA-Z_]", "_", column)


def _feature(frame: Any, column: str, kind: str, dtype: str, layout: str) -> dict[str, Any]:
    values = frame[column]
    entry: dict[str, Any] = {"name": column}
    if layout == "columns":
        entry["input"] = _input_name(column)
    entry.update(type=kind, dtype=dtype)
    if kind == "text":
        entry["nullable"] = bool((values == "").any())
        entry["categories"] = sorted(v for v in values.unique() if v != "")
    else:
        entry["nullable"] = bool(values.isna().any())
    if kind in ("number", "integer"):
        entry["min"], entry["max"] = float(values.min()), float(values.max())
    return entry


def json_row(frame: Any, index: int, features: list[dict[str, Any]]) -> list[Any]:
    """One table row as JSON values, in feature order (NaN and "" as null)."""
    row = []
    for feature in features:
        value = frame[feature["name"]].iloc[index]
        if feature["type"] == "text":
            row.append(None if value == "" else str(value))
        elif feature["type"] == "boolean":
            row.append(bool(value))
        elif isinstance(value, float) and math.isnan(value):
            row.append(None)
        else:
            row.append(float(value))
    return row


@lru_cache(maxsize=1)
def wine_model() -> TableModel:
    import numpy as np
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import load_wine
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    data = load_wine(as_frame=True)
    frame = data.frame.drop(columns="target")
    rng = np.random.default_rng(7)
    frame["region"] = rng.choice(REGIONS, len(frame))
    frame.loc[frame.index[::9], "region"] = ""  # missing text is "" (SimpleImputer's rule)
    frame["organic"] = rng.random(len(frame)) < 0.5
    frame.loc[frame.index[::7], "alcohol"] = np.nan
    numeric = [c for c in frame.columns if c not in ("region", "organic")]
    columns = list(frame.columns)
    text = Pipeline(
        [
            ("impute", SimpleImputer(missing_values="", strategy="constant", fill_value="?")),
            ("onehot", OneHotEncoder(handle_unknown="ignore")),
        ]
    )
    numbers = Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())])
    # Columns by position: skl2onnx maps positions to the per-column inputs, whose names
    # are sanitized and so differ from the table's.
    pre = ColumnTransformer(
        [
            ("text", text, [columns.index("region")]),
            ("numbers", numbers, [columns.index(c) for c in numeric]),
            ("flags", "passthrough", [columns.index("organic")]),
        ]
    )
    pipeline = Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=2000))])
    target = data.target
    pipeline.fit(frame.assign(organic=frame["organic"].astype("float32")), target)

    features = []
    for column in columns:
        if column == "region":
            features.append(_feature(frame, column, "text", "string", "columns"))
        elif column == "organic":
            features.append(_feature(frame, column, "boolean", "float32", "columns"))
        elif column in ("magnesium", "proline"):  # whole numbers in the data
            features.append(_feature(frame, column, "integer", "float32", "columns"))
        else:
            features.append(_feature(frame, column, "number", "float32", "columns"))
    tensor_types = {"string": StringTensorType([None, 1]), "float32": FloatTensorType([None, 1])}
    initial_types = [(f["input"], tensor_types[f["dtype"]]) for f in features]
    onx = to_onnx(
        pipeline,
        initial_types=initial_types,
        options={"zipmap": False},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    names = [str(n) for n in data.target_names]
    schema = {
        "layout": "columns",
        "features": features,
        "target": {"name": "class", "type": "text", "classes": names},
    }
    return TableModel(
        onnx=onx.SerializeToString(),
        schema=schema,
        labels={str(i): n for i, n in enumerate(names)},
        task="classification",
        sample=[json_row(frame, 0, features), json_row(frame, 1, features)],
        pipeline=pipeline,
        frame=frame,
    )


@lru_cache(maxsize=1)
def diabetes_model() -> TableModel:
    """Ridge on diabetes with ``bmi`` missing in every 11th row (imputed in the graph):
    one float input, a nullable feature."""
    import numpy as np
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_diabetes
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline

    data = load_diabetes(as_frame=True)
    frame = data.frame.drop(columns="target")
    frame.loc[frame.index[::11], "bmi"] = np.nan
    model = Pipeline([("impute", SimpleImputer()), ("ridge", Ridge(alpha=0.1))])
    model.fit(frame.to_numpy(dtype="float32"), data.target)
    features = [_feature(frame, c, "number", "float32", "tensor") for c in frame.columns]
    onx = to_onnx(
        model,
        initial_types=[("X", FloatTensorType([None, len(features)]))],
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return TableModel(
        onnx=onx.SerializeToString(),
        schema={
            "layout": "tensor",
            "features": features,
            "target": {"name": "target", "type": "number"},
        },
        labels={},
        task="regression",
        sample=[json_row(frame, 0, features)],
        pipeline=model,
        frame=frame,
    )


def write_table_model_dir(path: Path, table: TableModel, **metadata_overrides: Any) -> Path:
    """A model directory for ``table`` as the contract v2 describes it."""
    metadata = {
        "task": table.task,
        "schema": table.schema,
        "sample_input": table.sample,
        "feature_names": [f["name"] for f in table.schema["features"]],
        "metrics": {"r2": 0.5} if table.task == "regression" else {"accuracy": 0.97},
    }
    metadata.update(metadata_overrides)
    return write_model_dir(
        path, model_bytes=table.onnx, labels=table.labels, metadata_overrides=metadata
    )
