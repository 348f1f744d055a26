"""Training data: iris (bundled with scikit-learn), a CSV file, or a synthetic set.

Every dataset carries a content hash over its parsed values and names, so the same data
hashes the same whatever file or path it came from, and any changed value changes it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from dataclasses import dataclass

import fsspec
import numpy as np

from flows.errors import DataError
from flows.params import parse_synthetic


@dataclass(frozen=True)
class Dataset:
    X: np.ndarray  # float64, shape (rows, features)
    y: np.ndarray  # int64 class indices into class_names
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]
    source: str
    content_hash: str

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])


def make_dataset(
    X: np.ndarray,
    y: np.ndarray,
    feature_names: tuple[str, ...],
    class_names: tuple[str, ...],
    source: str,
) -> Dataset:
    X = np.ascontiguousarray(X, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.int64)
    _check_usable(X, y, class_names, source)
    return Dataset(
        X, y, feature_names, class_names, source, hash_data(X, y, feature_names, class_names)
    )


def hash_data(
    X: np.ndarray, y: np.ndarray, feature_names: tuple[str, ...], class_names: tuple[str, ...]
) -> str:
    digest = hashlib.sha256()
    digest.update(repr((X.shape, feature_names, class_names)).encode())
    digest.update(X.tobytes())
    digest.update(y.tobytes())
    return digest.hexdigest()


def _check_usable(X: np.ndarray, y: np.ndarray, class_names: tuple[str, ...], source: str) -> None:
    if X.shape[0] == 0:
        raise DataError(f"{source}: no data rows")
    if X.ndim != 2 or X.shape[1] == 0:
        raise DataError(f"{source}: no feature columns")
    if not np.isfinite(X).all():
        row, col = np.argwhere(~np.isfinite(X))[0]
        raise DataError(f"{source}: row {row + 1}, feature {col + 1} is not a finite number")
    counts = np.bincount(y, minlength=len(class_names))
    present = [class_names[i] for i in np.flatnonzero(counts)]
    if len(present) < 2:
        raise DataError(f"{source}: needs at least two classes, found {present or 'none'}")
    if counts[counts > 0].min() < 2:
        rare = [class_names[i] for i in np.flatnonzero(counts == 1)]
        raise DataError(f"{source}: class {rare[0]!r} has a single row; each needs at least two")


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


def load_csv(url: str, label_column: str) -> Dataset:
    """A CSV with a header row; every column but `label_column` must be numeric."""
    try:
        with fsspec.open(url, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise DataError(f"{url}: no such file") from None
    text = raw.decode("utf-8-sig", errors="replace")
    rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    if not rows:
        raise DataError(f"{url}: the file is empty")
    header = [h.strip() for h in rows[0]]
    if label_column not in header:
        raise DataError(f"{url}: no label column {label_column!r}; columns are {header}")
    label_at = header.index(label_column)
    features = tuple(h for i, h in enumerate(header) if i != label_at)
    values, labels = [], []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(
                f"{url}: line {line} has {len(row)} fields, the header has {len(header)}"
            )
        labels.append(row[label_at].strip())
        values.append(
            [_number(url, line, header[i], c) for i, c in enumerate(row) if i != label_at]
        )
    if not values:
        raise DataError(f"{url}: the file has a header but no data rows")
    class_names = tuple(sorted(set(labels)))
    index = {name: i for i, name in enumerate(class_names)}
    y = np.array([index[label] for label in labels])
    return make_dataset(np.array(values, dtype=np.float64), y, features, class_names, url)


def _number(url: str, line: int, column: str, cell: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise DataError(
            f"{url}: line {line}, column {column!r}: {cell!r} is not a number"
        ) from None
    if not math.isfinite(value):
        raise DataError(f"{url}: line {line}, column {column!r}: {cell!r} is not a finite number")
    return value


def load_data(spec: str, label_column: str = "label") -> Dataset:
    """`iris`, `synthetic:ROWS[xFEATURES]`, or a CSV path or fsspec URL."""
    if spec == "iris":
        return load_iris_dataset()
    if spec.startswith("synthetic:"):
        try:
            rows, features = parse_synthetic(spec)
        except ValueError as err:
            raise DataError(str(err)) from None
        return make_synthetic(rows, features)
    return load_csv(spec, label_column)
