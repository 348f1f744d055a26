"""One column's JSON values as the array its ONNX input takes (float32 or string), each
value checked against the column's type and nullability: a 422 names the column and row of
the first that does not fit (docs/reference/model-directory.md says how values convert)."""

from __future__ import annotations

from typing import Any

import numpy as np

from serving.contract import BOOLEAN, FLOAT32, INTEGER, NUMBER, TEXT, Feature
from serving.validation import RequestError, kind_of

FLOAT32_MAX = float(np.finfo(np.float32).max)
_NUMBER_TYPES = {float, int}
_BOOL_TEXT = {"true": "True", "false": "False", "True": "True", "False": "False"}


def _expected(feature: Feature) -> str:
    text = {
        NUMBER: "a number",
        INTEGER: "an integer",
        BOOLEAN: "true or false",
        TEXT: "a string",
    }[feature.type]
    return text + (" or null" if feature.nullable else "")


def convert_column(feature: Feature, values: list, row_word: str) -> np.ndarray:
    """One column's JSON values -> a 1-D float32 or string (object) array."""
    if feature.dtype == FLOAT32:
        if feature.type != BOOLEAN:
            array = _plain_floats(values, feature.type == INTEGER)
            if array is not None:
                return array
        return np.array(_floats(feature, values, row_word), dtype=np.float32)
    if set(map(type, values)) == {str} and feature.type == TEXT:
        return np.array(values, dtype=object)
    return np.array(_strings(feature, values, row_word), dtype=object)


def _floats(feature: Feature, values: list, row_word: str) -> list[float]:
    """Check every value; raise a 422 naming the column and row of the first bad one."""
    out: list[float] = []
    kind = feature.type
    for i, v in enumerate(values):
        t = type(v)
        if t is float or t is int:
            if not -FLOAT32_MAX <= v <= FLOAT32_MAX:
                raise RequestError(
                    422,
                    "non_finite",
                    f"column {feature.name!r}, {row_word} {i}: {v!r} is not a finite "
                    "float32 (beyond +-3.4e38)",
                )
            if kind == BOOLEAN and v not in (0, 1):
                raise _wrong_type(feature, v, row_word, i)
            if kind == INTEGER and t is float and not v.is_integer():
                raise _wrong_type(feature, v, row_word, i)
            out.append(v)
        elif v is None:
            if not feature.nullable:
                raise _null(feature, row_word, i)
            out.append(np.nan)
        elif t is bool and kind == BOOLEAN:
            out.append(1.0 if v else 0.0)
        else:
            raise _wrong_type(feature, v, row_word, i)
    return out


def _strings(feature: Feature, values: list, row_word: str) -> list[str]:
    out: list[str] = []
    boolean = feature.type == BOOLEAN
    for i, v in enumerate(values):
        t = type(v)
        if t is str:
            if boolean:
                if v not in _BOOL_TEXT:
                    raise _wrong_type(feature, v, row_word, i)
                v = _BOOL_TEXT[v]
            out.append(v)
        elif v is None:
            if not feature.nullable:
                raise _null(feature, row_word, i)
            out.append("")  # the graph's imputer reads "" as missing
        elif t is bool and boolean:
            out.append("True" if v else "False")  # what pandas' astype(str) writes
        else:
            raise _wrong_type(feature, v, row_word, i)
    return out


def _wrong_type(feature: Feature, value: Any, row_word: str, i: int) -> RequestError:
    return RequestError(
        422,
        "wrong_type",
        f"column {feature.name!r}, {row_word} {i}: {kind_of(value)}; "
        f"the column takes {_expected(feature)}",
    )


def _null(feature: Feature, row_word: str, i: int) -> RequestError:
    return RequestError(
        422,
        "null_value",
        f"column {feature.name!r}, {row_word} {i}: null; the column takes no missing "
        f"values (none were seen in training); send {_expected(feature)}",
    )


def _plain_floats(values: list, integer: bool) -> np.ndarray | None:
    """The common case, checked at C speed (builtins over the list): every value a JSON
    number within float32's range. None lets the exact per-value scan decide and word the
    error."""
    kinds = set(map(type, values))
    if not kinds <= _NUMBER_TYPES:  # bool is its own type: not let through
        return None
    if not (min(values) >= -FLOAT32_MAX and max(values) <= FLOAT32_MAX):
        return None
    if integer and float in kinds and not all(v.is_integer() for v in values if type(v) is float):
        return None
    return np.array(values, dtype=np.float32)
