"""`kiln predict`: rows from a CSV, Parquet or JSON file, answered by a stored version
(offline, through ONNX Runtime, as the image would) or by a live endpoint.

Rows are read by the version's schema: a table's columns by name (others, such as the
label, are ignored), JSON rows as lists in feature order or as records (`{"data": ...}`,
`{"instances": [...]}`, `{"dataframe_split": {...}}`, or a bare list).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from kiln.cli.models import open_store
from kiln.cli.options import NameOption, OutputOption, StoreOption
from kiln.cli.output import print_json, print_line
from kiln.config.errors import DataError, KilnError
from kiln.training.schema import TableSchema, frame_of_rows, onnx_feed, schema_of_metadata
from kiln.training.table import DataLimits, read_table

MAX_INPUT_BYTES = 64 * 1024 * 1024
TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")


class PredictInputError(KilnError):
    """The rows to predict cannot be read."""


def read_rows(path: Path, schema: TableSchema) -> Any:
    """The rows of a CSV, Parquet or JSON file as a DataFrame in the schema's training form."""
    if path.is_dir():
        raise PredictInputError(f"{path} is a directory; give a CSV, Parquet or JSON file")
    if path.stat().st_size > MAX_INPUT_BYTES:
        raise PredictInputError(f"{path} is larger than {MAX_INPUT_BYTES // 2**20} MiB")
    head = path.read_bytes()[:64].lstrip()
    try:
        if path.suffix.lower() == ".json" or head[:1] in (b"{", b"["):
            return frame_of_rows(schema, _json_rows(path))
        return _table_rows(path, schema)
    except ValueError as err:
        raise PredictInputError(f"{path}: {err}") from None


def _json_rows(path: Path) -> list[Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (ValueError, UnicodeDecodeError) as err:
        raise PredictInputError(f"{path}: not valid JSON ({err})") from None
    if isinstance(data, dict) and isinstance(data.get("dataframe_split"), dict):
        split = data["dataframe_split"]
        columns, rows = split.get("columns"), split.get("data")
        if not isinstance(columns, list) or not isinstance(rows, list):
            raise PredictInputError(f"{path}: dataframe_split needs columns and data lists")
        return [dict(zip(columns, row, strict=False)) for row in rows]
    if isinstance(data, dict):
        data = data.get("instances", data.get("data"))
    if not isinstance(data, list) or not data:
        raise PredictInputError(
            f'{path}: expected {{"data": [[...]]}}, {{"instances": [{{...}}]}}, '
            '{"dataframe_split": ...} or a list of rows'
        )
    return data


def _table_rows(path: Path, schema: TableSchema) -> Any:
    """A table's columns by name; a CSV without a header holds the features in order."""
    first = path.read_text(encoding="utf-8-sig", errors="replace").lstrip().split("\n", 1)[0]
    if path.suffix.lower() not in (".parquet", ".pq") and _all_numbers(first.split(",")):
        rows = [line.split(",") for line in path.read_text().splitlines() if line.strip()]
        return frame_of_rows(schema, rows)
    try:
        table = read_table(str(path), DataLimits(max_bytes=MAX_INPUT_BYTES))
    except DataError as err:
        raise PredictInputError(str(err)) from None
    missing = [name for name in schema.names if name not in table.columns]
    if missing:
        raise PredictInputError(
            f"{path}: no column {missing[0]!r}; the model takes {list(schema.names)}"
        )
    table = table[list(schema.names)].astype(object).where(table.notna(), None)
    return frame_of_rows(schema, table.to_dict(orient="records"))


def _all_numbers(cells: list[str]) -> bool:
    try:
        [float(cell) for cell in cells]
    except ValueError:
        return False
    return True


def predict_offline(store: Any, version: str, rows_file: Path) -> dict[str, Any]:
    """The stored model's answer through ONNX Runtime: a label and probabilities per row, or
    a value per row (regression)."""
    import onnxruntime as ort

    stored = store.get(version)
    schema = schema_of_metadata(stored.metadata)
    frame = read_rows(rows_file, schema)
    session = ort.InferenceSession(stored.model_bytes, providers=["CPUExecutionProvider"])
    outputs = session.run(None, onnx_feed(schema, frame))
    if schema.task == "regression":
        return {
            "version": stored.version,
            "values": np.asarray(outputs[0], float).reshape(-1).tolist(),
        }
    labels = [stored.labels.get(str(int(i)), str(int(i))) for i in outputs[0]]
    return {
        "version": stored.version,
        "labels": labels,
        "probabilities": np.asarray(outputs[1], dtype=float).round(6).tolist(),
    }


def predict_live(endpoint: str, rows_file: Path, timeout: float = 30.0) -> dict[str, Any]:
    """POST the file's rows to a running server's /predict, as records when they are."""
    import httpx

    base = endpoint.rstrip("/")
    rows = _json_rows(rows_file) if rows_file.suffix.lower() == ".json" else _csv_records(rows_file)
    body = {"instances": rows} if isinstance(rows[0], dict) else {"data": rows}
    try:
        metadata = httpx.get(f"{base}/metadata", timeout=timeout)
        values = httpx.post(f"{base}/predict", json=body, timeout=timeout)
        labels = httpx.post(f"{base}/predict/label", json=body, timeout=timeout)
    except httpx.HTTPError as err:
        raise KilnError(f"asking {base}: {err}; is it running? (`kiln status`)") from None
    if values.status_code != 200:
        raise KilnError(f"{values.request.url} answered {values.status_code}: {values.text[:200]}")
    about = metadata.json() if metadata.status_code == 200 else {}
    if about.get("task") == "regression":
        return {"version": about.get("version"), "values": values.json().get("prediction")}
    return {
        "version": about.get("version"),
        "labels": labels.json().get("prediction") if labels.status_code == 200 else None,
        "probabilities": values.json().get("prediction"),
    }


def _csv_records(path: Path) -> list[Any]:
    try:
        table = read_table(str(path), DataLimits(max_bytes=MAX_INPUT_BYTES))
    except DataError as err:
        raise PredictInputError(str(err)) from None
    return table.astype(object).where(table.notna(), None).to_dict(orient="records")


def predict(
    rows_file: Annotated[
        Path,
        typer.Argument(
            metavar="ROWS",
            exists=True,
            dir_okay=False,
            readable=True,
            help="A CSV or Parquet table (columns by name) or a JSON file of rows or records.",
        ),
    ],
    version: Annotated[
        str, typer.Option(help="The stored version that answers offline (id, prefix, latest).")
    ] = "latest",
    endpoint: Annotated[
        str | None,
        typer.Option(help="Ask this running server instead (e.g. http://127.0.0.1:8000)."),
    ] = None,
    output: OutputOption = "text",
    name: NameOption = None,
    store: StoreOption = None,
) -> None:
    """Predict for rows, offline with a stored version or from a live endpoint."""
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        raise typer.BadParameter(f"{endpoint!r} is not an http(s) URL", param_hint="--endpoint")
    if endpoint is None:
        the_store = open_store(store, name)
        answer = predict_offline(the_store, the_store.resolve(version), rows_file)
    else:
        answer = predict_live(endpoint, rows_file)
    if output == "json":
        print_json(answer)
        return
    if "values" in answer:
        for value in answer["values"] or []:
            print_line(f"{value:.6g}")
        return
    for label, probs in zip(answer["labels"] or [], answer["probabilities"] or [], strict=False):
        print_line(f"{label}\t{max(probs):.4f}")
