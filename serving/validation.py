"""Turn raw request bytes into a float32 matrix, or a 4xx error that names the problem.

The hot path is numpy: ``np.asarray`` on the parsed rows, a dtype, shape and
``isfinite`` check, then a cast to float32. Only when that fails does a slow,
per-value scan run, to say exactly which row and column is wrong.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import numpy as np
import orjson

JSON_TYPES = (b"application/json",)
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class RequestError(Exception):
    """A client error: an HTTP status, a stable code and a message naming the problem."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> bytes:
        return orjson.dumps({"error": self.message, "code": self.code})


class ClientDisconnected(Exception):
    """The client went away before sending the whole body."""


def check_content_type(value: bytes | None) -> None:
    """No Content-Type is read as JSON; any type but JSON (``*/json``, ``*+json``) is a 415."""
    if value is None:
        return
    media = value.split(b";", 1)[0].strip().lower()
    if media in JSON_TYPES or media.endswith(b"+json") or media == b"text/json":
        return
    shown = media.decode("latin-1") or "an empty value"
    raise RequestError(
        415,
        "unsupported_media_type",
        f"Content-Type {shown} is not supported; send application/json",
    )


async def read_body(
    receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
    content_length: bytes | str | None,
    limit: int,
) -> bytes:
    """Read the whole request body, refusing (413) anything over ``limit`` bytes."""
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            declared = -1
        if declared > limit:
            raise _too_large(limit)
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnected
    body = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise _too_large(limit)
        return body
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _too_large(limit: int) -> RequestError:
    return RequestError(
        413, "body_too_large", f"the request body exceeds the limit of {limit} bytes"
    )


def parse_json_object(body: bytes, example: str) -> dict[str, Any]:
    if not body:
        raise RequestError(400, "empty_body", f"the request body is empty; send {example}")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise RequestError(400, "invalid_json", f"the body is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise RequestError(
            422,
            "not_an_object",
            f"the body must be a JSON object like {example}, not {kind_of(value)}",
        )
    return value


PREDICT_EXAMPLE = '{"data": [[...], ...]}'


def parse_rows(data: Any, n_features: int, max_rows: int, *, scan: bool = True) -> np.ndarray:
    """A list of rows of numbers -> float32 [N, n_features]; RequestError otherwise."""
    if not isinstance(data, list):
        raise RequestError(
            422, "wrong_nesting", f"'data' must be a list of rows, not {kind_of(data)}"
        )
    rows = len(data)
    if rows == 0:
        raise RequestError(422, "empty_data", "'data' is empty; send at least one row")
    if rows > max_rows:
        raise RequestError(
            422, "too_many_rows", f"'data' has {rows} rows; the limit is {max_rows} per request"
        )
    if scan:
        _scan_rows(data, n_features)
    try:
        array = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        _scan_rows(data, n_features)
        array = np.asarray(data, dtype=np.float64)
    if array.dtype.kind not in "fiu" or array.ndim != 2 or array.shape[1] != n_features:
        _scan_rows(data, n_features)
        array = np.asarray(data, dtype=np.float64)  # numbers only, mixed ints beyond int64
    return _finite_float32(array, "row {0}, column {1}")


def _finite_float32(array: np.ndarray, where: str) -> np.ndarray:
    """Cast to float32, refusing values a float32 cannot hold (and NaN, infinity)."""
    if array.dtype.kind == "f":
        magnitude = np.abs(array)
        if not np.maximum.reduce(magnitude, axis=None) <= _FLOAT32_MAX:  # NaN fails too
            position = tuple(int(i) for i in np.argwhere(~(magnitude <= _FLOAT32_MAX))[0])
            raise RequestError(
                422,
                "non_finite",
                f"{where.format(*position)} is not a finite float32 "
                "(NaN, infinity, or beyond +-3.4e38)",
            )
    return array.astype(np.float32)  # integers: even 2**64 is far inside float32's range


def _scan_rows(data: list, n_features: int) -> None:
    """The slow, exact check: raise for the first row or value that is wrong."""
    for i, row in enumerate(data):
        if not isinstance(row, list):
            raise RequestError(
                422,
                "wrong_nesting",
                f"row {i} is {kind_of(row)}; 'data' must be a list of rows, each a list of "
                f"{n_features} numbers",
            )
        for j, value in enumerate(row):
            if isinstance(value, list | dict):
                raise RequestError(
                    422,
                    "wrong_nesting",
                    f"row {i}, column {j} is {kind_of(value)}; rows must be flat lists of numbers",
                )
        if len(row) != n_features:
            raise RequestError(
                422,
                "wrong_feature_count",
                f"row {i} has {len(row)} features; the model takes {n_features}",
            )
        for j, value in enumerate(row):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise RequestError(
                    422,
                    "non_numeric",
                    f"row {i}, column {j} is {kind_of(value)}; every value must be a number",
                )


def shown(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters: client input echoed in a message stays
    short."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def kind_of(value: Any) -> str:
    """A JSON value in words, for error messages (strings cut to 20 characters)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, str):
        shown = value if len(value) <= 20 else value[:17] + "..."
        return f"a string ({shown!r})"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# -- Open Inference Protocol (V2) -------------------------------------------------------

V2_EXAMPLE = '{"inputs": [{"name": ..., "shape": [N, F], "datatype": "FP32", "data": [...]}]}'


def parse_v2_request(
    body: bytes, max_rows: int, outputs: tuple[str, ...]
) -> tuple[list, list[str], Any]:
    """A V2 inference request -> (its input tensors, requested output names, request id)."""
    value = parse_json_object(body, V2_EXAMPLE)
    inputs = value.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError(
            422, "wrong_inputs", f"'inputs' must be a non-empty list of tensors: {V2_EXAMPLE}"
        )
    request_id = value.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError(422, "wrong_id", "'id' must be a string")
    requested = _requested_outputs(value.get("outputs"), outputs)
    return inputs, requested, request_id


def parse_v2_tensor(
    inputs: list, input_name: str, n_features: int, max_rows: int, numbers_only: bool = True
) -> np.ndarray | list[list[Any]]:
    """The one input of a tensor-layout model -> float32 [N, F]; with ``numbers_only``
    false, the rows of values instead (booleans and nulls kept), for the schema to decode."""
    if len(inputs) != 1:
        raise RequestError(
            422, "wrong_inputs", f"'inputs' must be a list holding exactly one tensor: {V2_EXAMPLE}"
        )
    tensor = inputs[0]
    if not isinstance(tensor, dict):
        raise RequestError(
            422, "wrong_inputs", f"inputs[0] is {kind_of(tensor)}, not a tensor object"
        )
    if tensor.get("name") != input_name:
        raise RequestError(
            422,
            "unknown_input",
            f"inputs[0].name is {shown(tensor.get('name'))}; the model's input is {input_name!r}",
        )
    if tensor.get("datatype") != "FP32":
        raise RequestError(
            422,
            "wrong_datatype",
            f"inputs[0].datatype is {shown(tensor.get('datatype'))}; send 'FP32'",
        )
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        or shape[1] != n_features
        or shape[0] < 1
    ):
        raise RequestError(
            422,
            "wrong_shape",
            f"inputs[0].shape is {shown(shape)}; the model takes [N, {n_features}] with N >= 1",
        )
    if shape[0] > max_rows:
        raise RequestError(
            422, "too_many_rows", f"inputs[0] has {shape[0]} rows; the limit is {max_rows}"
        )
    data = tensor.get("data")
    if not isinstance(data, list):
        raise RequestError(422, "missing_data", "inputs[0].data must be a list of numbers")
    flat = _flatten_numbers(data, numbers_only)
    if len(flat) != shape[0] * shape[1]:
        raise RequestError(
            422,
            "wrong_shape",
            f"inputs[0].data holds {len(flat)} values; shape {shape} needs {shape[0] * shape[1]}",
        )
    if not numbers_only:
        width = shape[1]
        return [flat[i : i + width] for i in range(0, len(flat), width)]
    matrix = _finite_float32(np.asarray(flat, dtype=np.float64), "inputs[0].data[{0}]")
    return matrix.reshape(shape[0], shape[1])


def _flatten_numbers(data: list, numbers_only: bool = True) -> list[Any]:
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            if not numbers_only and (item is None or isinstance(item, bool)):
                flat.append(item)  # the schema says where null and booleans are allowed
                continue
            if isinstance(item, bool) or not isinstance(item, int | float):
                raise RequestError(
                    422, "non_numeric", f"inputs[0].data holds {kind_of(item)}; send numbers only"
                )
            flat.append(item)
        else:
            stack.pop()
    return flat


def _requested_outputs(value: Any, available: tuple[str, ...]) -> list[str]:
    if value is None:
        return list(available)
    if not isinstance(value, list) or not value:
        raise RequestError(422, "wrong_outputs", "'outputs' must be a non-empty list of objects")
    names = []
    for item in value:
        name = item.get("name") if isinstance(item, dict) else None
        if name not in available:
            raise RequestError(
                422,
                "unknown_output",
                f"output {shown(name)} does not exist; choose from {list(available)}",
            )
        names.append(name)
    return names
