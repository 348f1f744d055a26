"""Decode every request form into the model's input tensors, by the model's schema.

Forms of POST /predict (exactly one per body):

- ``{"data": [[...], ...]}``: positional rows in the schema's feature order (the seed's
  form). An all-numeric model with no missing values keeps the original numpy fast path
  (serving/validation.py ``parse_rows``).
- ``{"instances": [{"col": value, ...}, ...]}`` (alias ``dataframe_records``, MLflow's
  name): records; key order never matters.
- ``{"dataframe_split": {"columns": [...], "data": [[...], ...]}}``: pandas' split
  orient; columns are matched by name, in any order (``index`` is ignored).

and the V2 inference request with one tensor per column (``decode_v2_columns``).

Columns are matched by name: a missing one is a 422 naming it (as MLflow does); an
unknown one is a 422 too (MLflow ignores it): a misspelt or unexpected column means the
client and the model disagree about the table, and answering anyway hides it.

The result is the feeds ONNX Runtime takes: one float32 [N, F] tensor for layout
"tensor", or one [N, 1] tensor per column (float32 or string) for layout "columns".
Values are converted as docs/model-directory.md says; any value that does not fit its
column is a 422 naming the column and the row.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from serving.contract import (
    COLUMNS,
    NUMBER,
    TEXT,
    Feature,
    ModelSchema,
    v2_datatypes,
)
from serving.validation import RequestError, kind_of, parse_rows, shown
from serving.values import FLOAT32_MAX, convert_column

ROW_FORMS = ("data", "instances", "dataframe_records", "dataframe_split")
_NUMBER_TYPES = {float, int}


class Decoder:
    """Turns requests into feeds for one model (built once, at load)."""

    def __init__(self, schema: ModelSchema, tensor_input: str | None) -> None:
        self.schema = schema
        self.features = schema.features
        self.names = tuple(f.name for f in schema.features)
        self.width = len(self.names)
        self.by_name = {f.name: f for f in schema.features}
        self.columns_layout = schema.layout == COLUMNS
        self.tensor_input = tensor_input or ""
        self.input_names = [f.input or "" for f in schema.features]
        # Every feature a complete number: positional rows take numpy's fast path.
        self.plain = not self.columns_layout and all(
            f.type == NUMBER and not f.nullable for f in schema.features
        )
        self.v2_datatypes = {f.name: v2_datatypes(f) for f in schema.features}
        # For one record, the commonest request: (column, input, feature, 1 number / 2 text /
        # 0 anything else), so most values need one type check and no list.
        self._plan = [
            (f.name, f.input or "", f, 1 if f.type == NUMBER else 2 if f.type == TEXT else 0)
            for f in schema.features
        ]

    # -- the forms ---------------------------------------------------------------------

    def decode(self, value: dict[str, Any], max_rows: int, body: bytes = b"") -> tuple[dict, int]:
        """A parsed /predict body -> (feeds, rows)."""
        if self.plain and len(value) == 1 and "data" in value:  # iris's hot path: no more
            return self._plain_rows(value["data"], max_rows, body)
        forms = [form for form in ROW_FORMS if form in value]
        if len(forms) != 1:
            if forms:
                raise RequestError(
                    422, "ambiguous_body", f"the body has {' and '.join(forms)}; send one of them"
                )
            raise RequestError(
                422,
                "missing_data",
                "the body has no 'data', 'instances' or 'dataframe_split'; "
                'send {"data": [[...]]} or {"instances": [{"column": value}]}',
            )
        form = forms[0]
        if form == "data":
            if self.plain:
                return self._plain_rows(value["data"], max_rows, body)
            return self.from_rows(value["data"], max_rows)
        if form == "dataframe_split":
            return self.from_split(value[form], max_rows)
        return self.from_records(value[form], max_rows, form)

    def _plain_rows(self, data: Any, max_rows: int, body: bytes) -> tuple[dict, int]:
        """The seed's numpy path: rows of numbers straight to float32 [N, F]."""
        scan = b"true" in body or b"false" in body  # booleans pass numpy's cast
        rows = parse_rows(data, self.width, max_rows, scan=scan)
        return {self.tensor_input: rows}, rows.shape[0]

    def from_rows(self, data: Any, max_rows: int) -> tuple[dict, int]:
        """Positional rows, values in the schema's feature order."""
        data = _check_rows(data, "'data'", max_rows)
        for i, row in enumerate(data):
            if type(row) is not list:
                raise RequestError(
                    422,
                    "wrong_nesting",
                    f"row {i} is {kind_of(row)}; 'data' must be a list of rows, each a list of "
                    f"{self.width} values in the order {self._shown_names()}",
                )
            if len(row) != self.width:
                raise RequestError(
                    422,
                    "wrong_feature_count",
                    f"row {i} has {len(row)} values; the model takes {self.width}: "
                    f"{self._shown_names()}",
                )
        columns = [
            convert_column(f, [row[j] for row in data], "row") for j, f in enumerate(self.features)
        ]
        return self.assemble(columns), len(data)

    def from_records(self, records: Any, max_rows: int, key: str = "instances") -> tuple[dict, int]:
        """Records: one object per row, keyed by column name."""
        records = _check_rows(records, f"'{key}'", max_rows)
        width = self.width
        for i, record in enumerate(records):
            if type(record) is not dict:
                raise RequestError(
                    422,
                    "wrong_nesting",
                    f"{key}[{i}] is {kind_of(record)}; each record must be an object "
                    '{"column": value, ...} (positional rows go in "data")',
                )
            if len(record) != width:
                self._columns_problem(record.keys(), f"record {i}")
        if len(records) == 1 and self.columns_layout:
            return self._one_record(records[0]), 1
        columns = []
        for f in self.features:
            name = f.name
            try:
                values = [record[name] for record in records]
            except KeyError:
                for i, record in enumerate(records):
                    if name not in record:
                        self._columns_problem(record.keys(), f"record {i}")
                raise  # unreachable: some record lacks the column
            columns.append(convert_column(f, values, "record"))
        return self.assemble(columns), len(records)

    def _one_record(self, record: dict) -> dict[str, np.ndarray]:
        """One record of a table of columns, straight to [1, 1] tensors."""
        feeds = {}
        for name, onnx_input, feature, fast in self._plan:
            try:
                value = record[name]
            except KeyError:
                self._columns_problem(record.keys(), "record 0")
                raise
            t = type(value)
            if fast == 1 and (t is float or t is int) and -FLOAT32_MAX <= value <= FLOAT32_MAX:
                feeds[onnx_input] = np.array([[value]], dtype=np.float32)
            elif fast == 2 and t is str:
                feeds[onnx_input] = np.array([[value]], dtype=object)
            else:  # the exact check: converts, or raises naming the column
                feeds[onnx_input] = convert_column(feature, [value], "record").reshape(1, 1)
        return feeds

    def from_split(self, split: Any, max_rows: int) -> tuple[dict, int]:
        """pandas' split orient: ``{"columns": [...], "data": [[...], ...]}``."""
        if type(split) is not dict:
            raise RequestError(
                422,
                "wrong_nesting",
                f"'dataframe_split' is {kind_of(split)}; send "
                '{"columns": ["a", ...], "data": [[...], ...]}',
            )
        names = split.get("columns")
        if type(names) is not list or not all(type(n) is str for n in names):
            raise RequestError(
                422, "wrong_nesting", "'dataframe_split.columns' must be a list of column names"
            )
        position: dict[str, int] = {}
        for j, name in enumerate(names):
            if name in position:
                raise RequestError(
                    422, "duplicate_column", f"'dataframe_split.columns' names {shown(name)} twice"
                )
            position[name] = j
        if len(position) != self.width or any(n not in position for n in self.names):
            self._columns_problem(position.keys(), "'dataframe_split'")
        data = _check_rows(split.get("data"), "'dataframe_split.data'", max_rows)
        width = len(names)
        for i, row in enumerate(data):
            if type(row) is not list or len(row) != width:
                what = kind_of(row) if type(row) is not list else f"{len(row)} values"
                raise RequestError(
                    422,
                    "wrong_feature_count" if type(row) is list else "wrong_nesting",
                    f"dataframe_split row {i} is {what}; it must be a list of {width} values, "
                    "one per name in 'columns'",
                )
        columns = []
        for f in self.features:
            j = position[f.name]
            columns.append(convert_column(f, [row[j] for row in data], "row"))
        return self.assemble(columns), len(data)

    def from_v2(self, inputs: list, max_rows: int) -> tuple[dict, int]:
        """V2 with one tensor per column: name = column name, shape [N] or [N, 1]."""
        given: dict[str, Any] = {}
        for k, tensor in enumerate(inputs):
            if type(tensor) is not dict:
                raise RequestError(
                    422, "wrong_inputs", f"inputs[{k}] is {kind_of(tensor)}, not a tensor object"
                )
            name = tensor.get("name")
            if type(name) is not str or name not in self.by_name:  # a list is not hashable
                raise RequestError(
                    422,
                    "unknown_input",
                    f"inputs[{k}].name is {shown(name)}; the model's inputs are its columns: "
                    f"{self._shown_names()}",
                )
            if name in given:
                raise RequestError(422, "duplicate_input", f"inputs name {name!r} twice")
            given[name] = tensor
        missing = [n for n in self.names if n not in given]
        if missing:
            raise RequestError(
                422,
                "missing_column",
                f"the request has no input for column {missing[0]!r}"
                + (f" (nor {len(missing) - 1} more)" if len(missing) > 1 else "")
                + "; send one tensor per column",
            )
        rows: int | None = None
        columns = []
        for f in self.features:
            tensor = given[f.name]
            values = self._v2_values(f, tensor, max_rows)
            if rows is None:
                rows = len(values)
            elif len(values) != rows:
                raise RequestError(
                    422,
                    "wrong_shape",
                    f"input {f.name!r} has {len(values)} rows; the other inputs have {rows}",
                )
            columns.append(convert_column(f, values, "element"))
        assert rows is not None  # the schema has at least one feature
        return self.assemble(columns), rows

    def assemble(self, columns: list[np.ndarray]) -> dict[str, np.ndarray]:
        if self.columns_layout:
            return {n: c.reshape(-1, 1) for n, c in zip(self.input_names, columns, strict=True)}
        return {self.tensor_input: np.stack(columns, axis=1)}

    # -- V2 -----------------------------------------------------------------------------

    def _v2_values(self, feature: Feature, tensor: dict, max_rows: int) -> list:
        name = feature.name
        allowed = self.v2_datatypes[name]
        datatype = tensor.get("datatype")
        if datatype not in allowed:
            raise RequestError(
                422,
                "wrong_datatype",
                f"input {name!r} has datatype {shown(datatype)}; column {name!r} takes "
                f"{' or '.join(allowed)}",
            )
        shape: Any = tensor.get("shape")
        ok = (
            type(shape) is list
            and len(shape) in (1, 2)
            and all(type(d) is int for d in shape)
            and shape[0] >= 1
            and shape[1:] in ([], [1])
        )
        if not ok:
            raise RequestError(
                422,
                "wrong_shape",
                f"input {name!r} has shape {shown(shape)}; a column is [N] or [N, 1]",
            )
        if shape[0] > max_rows:
            raise RequestError(
                422,
                "too_many_rows",
                f"input {name!r} has {shape[0]} rows; the limit is {max_rows}",
            )
        data = tensor.get("data")
        if type(data) is not list:
            raise RequestError(422, "missing_data", f"input {name!r}: 'data' must be a list")
        if data and type(data[0]) is list:  # nested [[v], [v], ...]
            if not all(type(row) is list and len(row) == 1 for row in data):
                raise RequestError(
                    422, "wrong_shape", f"input {name!r}: nested data must be [[v], [v], ...]"
                )
            data = [row[0] for row in data]
        if len(data) != shape[0]:
            raise RequestError(
                422,
                "wrong_shape",
                f"input {name!r} holds {len(data)} values; its shape {shape} needs {shape[0]}",
            )
        if datatype in ("INT32", "INT64") and any(type(v) is float for v in data):
            raise RequestError(
                422, "wrong_type", f"input {name!r} is {datatype} but holds a non-integer value"
            )
        return data

    # -- messages -----------------------------------------------------------------------

    def _shown_names(self, limit: int = 20) -> str:
        listed = ", ".join(repr(n) for n in self.names[:limit])
        more = f", ... ({self.width} in all)" if self.width > limit else ""
        return f"[{listed}{more}]"

    def _columns_problem(self, keys: Any, where: str) -> None:
        """Raise the 422 for a record or header whose columns are not the schema's."""
        present = set(keys)
        missing = [n for n in self.names if n not in present]
        unknown = [k for k in keys if k not in self.by_name]
        if missing:
            extra = f" (it has an unknown column {shown(unknown[0])})" if unknown else ""
            raise RequestError(
                422, "missing_column", f"{where} has no column {missing[0]!r}{extra}"
            )
        if unknown:
            raise RequestError(
                422,
                "unknown_column",
                f"{where} has a column the model does not take: {shown(unknown[0])}; its columns "
                f"are {self._shown_names()}",
            )


def _check_rows(data: Any, what: str, max_rows: int) -> list:
    if type(data) is not list:
        raise RequestError(422, "wrong_nesting", f"{what} must be a list, not {kind_of(data)}")
    if not data:
        raise RequestError(422, "empty_data", f"{what} is empty; send at least one row")
    if len(data) > max_rows:
        raise RequestError(
            422, "too_many_rows", f"{what} has {len(data)} rows; the limit is {max_rows} a request"
        )
    return data
