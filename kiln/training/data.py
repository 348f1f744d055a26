"""Training data: iris (bundled with scikit-learn), a CSV file, or a synthetic set.

Every dataset carries a content hash over its parsed values and names, so the same data
hashes the same whatever file or path it came from, and any changed value changes it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from array import array
from dataclasses import dataclass
from typing import IO, Any

import fsspec
import numpy as np

from kiln.config.errors import DataError
from kiln.infra.redact import redact
from kiln.training.params import parse_synthetic

# The exported model takes float32 input: a larger magnitude would reach it as infinity.
LARGEST_VALUE = float(np.finfo(np.float32).max)


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
    source = redact(source)
    _check_usable(X, y, class_names, source)
    return Dataset(
        X, y, feature_names, class_names, source, hash_data(X, y, feature_names, class_names)
    )


def hash_data(
    X: np.ndarray, y: np.ndarray, feature_names: tuple[str, ...], class_names: tuple[str, ...]
) -> str:
    digest = hashlib.sha256()
    digest.update(repr((X.shape, feature_names, class_names)).encode())
    digest.update(np.ascontiguousarray(X).data)  # a view: no copy of a large X
    digest.update(y.tobytes())
    return digest.hexdigest()


def _check_usable(X: np.ndarray, y: np.ndarray, class_names: tuple[str, ...], source: str) -> None:
    if X.shape[0] == 0:
        raise DataError(f"{source}: no data rows")
    if X.ndim != 2 or X.shape[1] == 0:
        raise DataError(f"{source}: no feature columns")
    bad = _first_bad_value(X)
    if bad is not None:
        row, col, why = bad
        raise DataError(f"{source}: row {row + 1}, feature {col + 1}: {float(X[row, col])!r} {why}")
    counts = np.bincount(y, minlength=len(class_names))
    present = [class_names[i] for i in np.flatnonzero(counts)]
    if len(present) < 2:
        raise DataError(f"{source}: needs at least two classes, found {present or 'none'}")
    if counts[counts > 0].min() < 2:
        rare = [class_names[i] for i in np.flatnonzero(counts == 1)]
        raise DataError(f"{source}: class {rare[0]!r} has a single row; each needs at least two")


def _first_bad_value(X: np.ndarray) -> tuple[int, int, str] | None:
    """Where the first value training or serving cannot take is, and why."""
    finite = np.isfinite(X)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        return int(row), int(col), "is not a finite number"
    too_large = np.abs(X) > LARGEST_VALUE
    if too_large.any():
        row, col = np.argwhere(too_large)[0]
        return (
            int(row),
            int(col),
            f"is beyond ±{LARGEST_VALUE:.3g}, the largest value the model's float32 input holds",
        )
    return None


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


@dataclass(frozen=True)
class DataLimits:
    """How much data one load may read (KILN_MAX_DATA_ROWS and KILN_MAX_DATA_BYTES, which
    kiln.wiring.data_limits reads; these defaults are the settings' own)."""

    max_rows: int = 1_000_000
    max_bytes: int = 256 * 1024 * 1024


def load_csv(url: str, label_column: str, limits: DataLimits | None = None) -> Dataset:
    """A CSV with a header row; every column but `label_column` must be numeric.

    The file is parsed as a stream into compact arrays (about 8 bytes a value), never held
    whole in memory, and refused past `limits`. Errors and the dataset's `source` name the
    file with any credentials in its URL masked.
    """
    limits = limits or DataLimits()
    source = redact(url)
    try:
        with fsspec.open(url, "rb") as raw:
            size = getattr(raw, "size", None)
            if isinstance(size, int) and size > limits.max_bytes:
                raise DataError(_too_big(source, limits))
            bounded = io.BufferedReader(_BoundedReader(raw, limits.max_bytes, source))
            with io.TextIOWrapper(
                bounded, encoding="utf-8-sig", errors="replace", newline=""
            ) as fh:
                return _parse_csv(fh, source, label_column, limits)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{source}: no such file") from None
    except csv.Error as err:
        raise DataError(f"{source}: not a readable CSV: {err}") from None
    except Exception as err:  # whatever the fsspec backend raises (HTTP, S3, auth...)
        reason = redact(str(err)) or type(err).__name__
        raise DataError(f"{source}: cannot read: {reason}") from None


def _parse_csv(text: IO[str], source: str, label_column: str, limits: DataLimits) -> Dataset:
    reader = csv.reader(text)
    header = None
    for row in reader:
        if any(cell.strip() for cell in row):
            header = [h.strip() for h in row]
            break
    if header is None:
        raise DataError(f"{source}: the file is empty")
    label_at = _label_position(header, label_column, source)
    features = tuple(h for i, h in enumerate(header) if i != label_at)
    values = array("d")
    lines = array("q")
    label_index: dict[str, int] = {}
    labels = array("q")
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        line = reader.line_num
        if len(row) != len(header):
            raise DataError(
                f"{source}: line {line} has {len(row)} fields, the header has {len(header)}"
            )
        if len(lines) == limits.max_rows:
            raise DataError(
                f"{source}: more than {limits.max_rows:,} data rows, the limit (KILN_MAX_DATA_ROWS)"
            )
        label = row.pop(label_at).strip()
        labels.append(label_index.setdefault(label, len(label_index)))
        try:
            values.extend(map(float, row))
        except ValueError:
            for name, cell in zip(features, row, strict=True):
                _number(source, line, name, cell)
        lines.append(line)
    if not lines:
        raise DataError(f"{source}: the file has a header but no data rows")
    X = np.frombuffer(values, dtype=np.float64).reshape(len(lines), len(features))
    bad = _first_bad_value(X)
    if bad is not None:
        row_at, col_at, why = bad
        raise DataError(
            f"{source}: line {lines[row_at]}, column {features[col_at]!r}: "
            f"{float(X[row_at, col_at])!r} {why}"
        )
    # Class indices follow the sorted class names, whatever order they first appeared in.
    class_names = tuple(sorted(label_index))
    remap = np.empty(len(label_index), dtype=np.int64)
    for name, first_seen in label_index.items():
        remap[first_seen] = class_names.index(name)
    y = remap[np.frombuffer(labels, dtype=np.int64)]
    return make_dataset(X, y, features, class_names, source)


def _label_position(header: list[str], label_column: str, source: str) -> int:
    seen: dict[str, int] = {}
    for position, name in enumerate(header):
        if name in seen:
            what = "the label column" if name == label_column else "column"
            raise DataError(
                f"{source}: {what} {name!r} appears twice in the header (columns "
                f"{seen[name] + 1} and {position + 1}); every column needs its own name"
            )
        seen[name] = position
    if label_column not in seen:
        raise DataError(f"{source}: no label column {label_column!r}; columns are {header}")
    return seen[label_column]


def _too_big(source: str, limits: DataLimits) -> str:
    return f"{source}: larger than {limits.max_bytes:,} bytes, the limit (KILN_MAX_DATA_BYTES)"


class _BoundedReader(io.RawIOBase):
    """A binary stream that refuses to read past `limit` bytes (sizes are not always known)."""

    def __init__(self, inner: IO[bytes], limit: int, source: str) -> None:
        self._inner = inner
        self._left = limit
        self._limits = DataLimits(max_bytes=limit)
        self._source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        chunk = self._inner.read(min(len(view), self._left + 1))
        if len(chunk) > self._left:
            raise DataError(_too_big(self._source, self._limits))
        self._left -= len(chunk)
        view[: len(chunk)] = chunk
        return len(chunk)


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


def load_data(spec: str, label_column: str = "label", limits: DataLimits | None = None) -> Dataset:
    """`iris`, `synthetic:ROWS[xFEATURES]`, or a CSV path or fsspec URL."""
    if spec == "iris":
        return load_iris_dataset()
    if spec.startswith("synthetic:"):
        try:
            rows, features = parse_synthetic(spec)
        except ValueError as err:
            raise DataError(str(err)) from None
        return make_synthetic(rows, features)
    return load_csv(spec, label_column, limits)
