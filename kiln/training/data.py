"""Training data: iris (bundled with scikit-learn), a synthetic set, or a table (CSV or
Parquet, a local path or an fsspec URL) of numbers, booleans and text, with missing cells.

Every table is put into one training form (`prepare`) whatever it came from: numbers and
booleans as float64 holding exactly the float32 values the server will see (booleans as
1.0/0.0, missing as NaN), text as str with "" for missing. A model is fitted on what it will
be served. Every dataset carries a content hash over its prepared values and names, so the
same data hashes the same whatever file it came from, and any changed value changes it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from kiln.config.errors import DataError
from kiln.infra.redact import redact
from kiln.training.params import parse_synthetic
from kiln.training.schema import (
    FeatureType,
    TableSchema,
    TargetSpec,
    Task,
    feature_spec,
)
from kiln.training.table import DataLimits, read_table

if TYPE_CHECKING:
    import pandas as pd

# The exported model takes float32 input: a larger magnitude would reach it as infinity.
LARGEST_VALUE = float(np.finfo(np.float32).max)
# A target of whole numbers with at most this many distinct values is a classification.
MAX_INFERRED_CLASSES = 20
BOOLEAN_WORDS = {"true": 1.0, "false": 0.0}


@dataclass(frozen=True)
class Dataset:
    frame: pd.DataFrame  # the feature columns in training form, in the schema's order
    y: np.ndarray  # classification: int64 indices into class_names; regression: float64
    schema: TableSchema
    source: str
    content_hash: str

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.schema.names

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.schema.target.classes

    @property
    def task(self) -> Task:
        return self.schema.task

    @property
    def n_rows(self) -> int:
        return len(self.frame)

    @property
    def n_features(self) -> int:
        return len(self.schema.features)

    @property
    def X(self) -> np.ndarray:  # noqa: N802 (scikit-learn's name)
        """The features as one float64 matrix (tables of numbers only)."""
        if not self.schema.all_numeric:
            raise DataError(f"{self.source}: has text columns; it is no single matrix")
        return self.frame.to_numpy(dtype=np.float64)


@dataclass(frozen=True)
class Columns:
    """Which columns of a table to use: the label, and the features (all others by default)."""

    label: str = "label"
    features: tuple[str, ...] | None = None
    drop: tuple[str, ...] = ()
    task: Task | None = None


def prepare(frame: pd.DataFrame, columns: Columns, source: str) -> Dataset:
    """Check and type a raw table; raise DataError naming the first problem."""
    source = redact(source)
    names = _feature_names(list(frame.columns), columns, source)
    if len(frame) == 0:
        raise DataError(f"{source}: no data rows")
    target = frame[columns.label]
    _check_target_present(target, columns.label, source)
    task = _task_of(target, columns, source)
    y, target_spec = _encode_target(target, columns.label, task, source)
    import pandas as pd

    prepared, specs = {}, []
    for name in names:
        values, kind = _prepare_column(frame[name], name, source)
        prepared[name] = values
        specs.append(feature_spec(name, values, kind))
    features = pd.DataFrame(prepared, index=pd.RangeIndex(len(frame)))
    schema = TableSchema(tuple(specs), target_spec, task)
    if task == "classification":
        _check_classes(y, target_spec.classes, source)
    return Dataset(features, y, schema, source, hash_data(features, y, schema))


def _feature_names(header: list[str], columns: Columns, source: str) -> list[str]:
    if columns.label not in header:
        raise DataError(f"{source}: no label column {columns.label!r}; columns are {header}")
    for wanted in (*(columns.features or ()), *columns.drop):
        if wanted not in header:
            raise DataError(f"{source}: no column {wanted!r}; columns are {header}")
    if columns.label in (columns.features or ()):
        raise DataError(f"{source}: {columns.label!r} is the label; it cannot be a feature too")
    chosen = columns.features or tuple(h for h in header if h != columns.label)
    names = [h for h in chosen if h not in columns.drop and h != columns.label]
    if not names:
        raise DataError(f"{source}: no feature columns")
    return names


def _check_target_present(target: pd.Series, label: str, source: str) -> None:
    missing = target.isna() | (target.astype(str).str.strip() == "")
    if missing.any():
        row = int(np.flatnonzero(missing.to_numpy())[0])
        raise DataError(
            f"{source}: {int(missing.sum())} rows have no value in the label column {label!r} "
            f"(the first is data row {row + 1})"
        )


def _task_of(target: pd.Series, columns: Columns, source: str) -> Task:
    """The task asked for, checked against the target; else inferred from it."""
    import pandas as pd

    numeric = pd.api.types.is_numeric_dtype(target) and not pd.api.types.is_bool_dtype(target)
    whole = numeric and bool((target.astype(float) % 1 == 0).all())
    distinct = int(target.nunique())
    if columns.task == "regression" and not numeric:
        raise DataError(
            f"{source}: --task regression needs numbers in the label column {columns.label!r}, "
            f"which holds text or booleans"
        )
    if columns.task == "classification" and numeric and not whole:
        raise DataError(
            f"{source}: the label column {columns.label!r} holds continuous numbers "
            f"({distinct} distinct values); use --task regression"
        )
    if columns.task is not None:
        return columns.task
    if numeric and not (whole and distinct <= MAX_INFERRED_CLASSES):
        return "regression"
    return "classification"


def _encode_target(
    target: pd.Series, label: str, task: Task, source: str
) -> tuple[np.ndarray, TargetSpec]:
    import pandas as pd

    if task == "regression":
        values = target.to_numpy(dtype=np.float64)
        if not np.isfinite(values).all():
            raise DataError(
                f"{source}: the label column {label!r} holds a value that is not finite"
            )
        whole: FeatureType = "integer" if bool((values % 1 == 0).all()) else "number"
        return values, TargetSpec(label, whole)
    if pd.api.types.is_numeric_dtype(target) and not pd.api.types.is_bool_dtype(target):
        codes, uniques = pd.factorize(target.astype(float), sort=True)
        order = [_class_name(float(v)) for v in uniques]
        kind: FeatureType = "integer"
    else:
        codes, uniques = pd.factorize(target.astype(str).str.strip(), sort=True)
        order = [str(v) for v in uniques]
        kind = "boolean" if pd.api.types.is_bool_dtype(target) else "text"
    y = np.asarray(codes, dtype=np.int64)
    return y, TargetSpec(label, kind, tuple(order))


def _class_name(value: float) -> str:
    return str(int(value)) if value % 1 == 0 else repr(value)


def _prepare_column(column: pd.Series, name: str, source: str) -> tuple[pd.Series, FeatureType]:
    import pandas as pd

    if pd.api.types.is_bool_dtype(column):
        return column.astype(np.float64), "boolean"
    if pd.api.types.is_numeric_dtype(column):
        kind: FeatureType = "integer" if pd.api.types.is_integer_dtype(column) else "number"
        values = column.astype(np.float64)
        _check_numbers(values, name, source)
        return values.astype(np.float32).astype(np.float64), kind
    if pd.api.types.is_datetime64_any_dtype(column):
        raise DataError(
            f"{source}: column {name!r} holds dates; kiln takes numbers, booleans and text "
            "(convert it, or leave it out with --drop)"
        )
    present = column.dropna()
    words = present.astype(str).str.strip().str.lower()
    if len(present) and bool(words.isin(list(BOOLEAN_WORDS)).all()):
        return words.map(BOOLEAN_WORDS).reindex(column.index).astype(np.float64), "boolean"
    # object dtype, as scikit-learn and skl2onnx take text (pandas 3 would make it `str`)
    return column.where(column.notna(), "").astype(str).astype(object), "text"


def _check_numbers(values: pd.Series, name: str, source: str) -> None:
    array = values.to_numpy()
    infinite = np.isinf(array)
    if infinite.any():
        row = int(np.flatnonzero(infinite)[0])
        raise DataError(
            f"{source}: data row {row + 1}, column {name!r}: {float(array[row])!r} is not a "
            "finite number"
        )
    too_large = np.abs(np.nan_to_num(array)) > LARGEST_VALUE
    if too_large.any():
        row = int(np.flatnonzero(too_large)[0])
        raise DataError(
            f"{source}: data row {row + 1}, column {name!r}: {float(array[row])!r} is beyond "
            f"±{LARGEST_VALUE:.3g}, the largest value the model's float32 input holds"
        )


def _check_classes(y: np.ndarray, class_names: tuple[str, ...], source: str) -> None:
    counts = np.bincount(y, minlength=len(class_names))
    if len(class_names) < 2:
        raise DataError(f"{source}: needs at least two classes, found {list(class_names)}")
    if counts.min() < 2:
        rare = [class_names[i] for i in np.flatnonzero(counts == 1)]
        raise DataError(f"{source}: class {rare[0]!r} has a single row; each needs at least two")


def hash_data(frame: pd.DataFrame, y: np.ndarray, schema: TableSchema) -> str:
    digest = hashlib.sha256()
    digest.update(repr((len(frame), schema.signature(), schema.target.as_dict())).encode())
    for spec in schema.features:
        column = frame[spec.name]
        if spec.type == "text":
            digest.update("\0".join(column.tolist()).encode())
        else:
            digest.update(np.ascontiguousarray(column.to_numpy(dtype=np.float64)).data)
    digest.update(np.ascontiguousarray(y).tobytes())
    return digest.hexdigest()


def make_dataset(
    X: np.ndarray,
    y: np.ndarray,
    feature_names: tuple[str, ...],
    class_names: tuple[str, ...],
    source: str,
) -> Dataset:
    """A classification dataset from a matrix of numbers and class indices."""
    import pandas as pd

    frame = pd.DataFrame(np.asarray(X, dtype=np.float64), columns=list(feature_names))
    frame["label"] = np.asarray(class_names, dtype=object)[np.asarray(y, dtype=np.int64)]
    return prepare(frame, Columns(label="label", task="classification"), source)


def load_iris_dataset() -> Dataset:
    from sklearn.datasets import load_iris

    iris = load_iris()
    names = tuple(n.replace(" (cm)", "").replace(" ", "_") for n in iris.feature_names)
    return make_dataset(iris.data, iris.target, names, tuple(iris.target_names), "iris")


def make_synthetic(
    n_samples: int, n_features: int = 20, n_classes: int = 3, seed: int = 0
) -> Dataset:
    from sklearn.datasets import make_classification

    if n_samples < 10 * n_classes:
        raise DataError(f"synthetic: {n_samples} rows is too few for {n_classes} classes")
    X, y = make_classification(
        n_samples=n_samples,
        n_features=n_features,
        n_informative=max(2, n_features // 2),
        n_classes=n_classes,
        class_sep=1.5,
        random_state=seed,
    )
    features = tuple(f"f{i}" for i in range(n_features))
    classes = tuple(f"class_{i}" for i in range(n_classes))
    return make_dataset(X, y, features, classes, f"synthetic:{n_samples}x{n_features}")


def load_table(
    url: str,
    columns: Columns,
    limits: DataLimits | None = None,
    delimiter: str | None = None,
) -> Dataset:
    """A CSV or Parquet table (a local path or an fsspec URL), checked and typed."""
    wanted = None
    if columns.features is not None:
        wanted = [*columns.features, columns.label]
    frame = read_table(url, limits or DataLimits(), wanted, delimiter, columns.label)
    return prepare(frame, columns, url)


def load_csv(url: str, label_column: str, limits: DataLimits | None = None) -> Dataset:
    """A CSV table with every column but `label_column` a feature."""
    return load_table(url, Columns(label=label_column), limits)


def load_data(
    spec: str,
    label_column: str = "label",
    limits: DataLimits | None = None,
    **choices: Any,
) -> Dataset:
    """`iris`, `synthetic:ROWS[xFEATURES]`, or a CSV or Parquet path or fsspec URL.

    `choices`: `features`, `drop` and `task` (Columns), `delimiter` (CSV)."""
    if spec == "iris":
        return load_iris_dataset()
    if spec.startswith("synthetic:"):
        try:
            rows, features = parse_synthetic(spec)
        except ValueError as err:
            raise DataError(str(err)) from None
        return make_synthetic(rows, features)
    delimiter = choices.pop("delimiter", None)
    return load_table(spec, Columns(label=label_column, **choices), limits, delimiter)
