"""`kiln predict`: rows from a CSV or JSON file, answered by a stored version (offline,
through ONNX Runtime, as the image would) or by a live endpoint."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from kiln.cli.models import open_store
from kiln.cli.options import OutputOption, StoreOption
from kiln.cli.output import print_json, print_line
from kiln.config.errors import KilnError

MAX_INPUT_BYTES = 64 * 1024 * 1024


class PredictInputError(KilnError):
    """The rows to predict cannot be read."""


def read_rows(path: Path, feature_names: list[str] | None) -> list[list[float]]:
    """Rows of numbers from a CSV (header optional; columns picked by feature name) or JSON
    ({"data": rows}, a list of rows, or a list of objects keyed by feature name)."""
    if path.is_dir():
        raise PredictInputError(f"{path} is a directory; give a CSV or JSON file")
    try:
        raw = path.read_bytes()[: MAX_INPUT_BYTES + 1]
    except OSError as err:
        raise PredictInputError(f"reading {path}: {err.strerror or err}") from None
    if len(raw) > MAX_INPUT_BYTES:
        raise PredictInputError(f"{path} is larger than {MAX_INPUT_BYTES // 2**20} MiB")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PredictInputError(f"{path} is not a text file (CSV or JSON)") from None
    if path.suffix.lower() == ".json" or text.lstrip()[:1] in ("{", "["):
        return _json_rows(path, text, feature_names)
    return _csv_rows(path, text, feature_names)


def _json_rows(path: Path, text: str, names: list[str] | None) -> list[list[float]]:
    try:
        data = json.loads(text)
    except ValueError as err:
        raise PredictInputError(f"{path}: not valid JSON ({err})") from None
    rows = data.get("data") if isinstance(data, dict) else data
    if not isinstance(rows, list) or not rows:
        raise PredictInputError(f'{path}: expected {{"data": [[...], ...]}} or a list of rows')
    out = []
    for number, row in enumerate(rows, start=1):
        if isinstance(row, dict):
            if not names:
                raise PredictInputError(
                    f"{path}: row {number} is an object, but the model records no feature "
                    "names; give lists of numbers"
                )
            missing = [n for n in names if n not in row]
            if missing:
                raise PredictInputError(f"{path}: row {number} has no {missing[0]!r}")
            row = [row[n] for n in names]
        if not isinstance(row, list):
            raise PredictInputError(f"{path}: row {number} is not a list of numbers")
        out.append([_number(path, number, value) for value in row])
    return out


def _csv_rows(path: Path, text: str, names: list[str] | None) -> list[list[float]]:
    table = [r for r in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in r)]
    if not table:
        raise PredictInputError(f"{path}: no rows")
    header = [cell.strip() for cell in table[0]]
    columns: list[int] | None = None
    if not all(_is_number(cell) for cell in header):
        body = table[1:]
        if names and all(n in header for n in names):
            columns = [header.index(n) for n in names]  # e.g. a training CSV with its label
    else:
        body = table
    if not body:
        raise PredictInputError(f"{path}: a header but no rows")
    rows = []
    for number, row in enumerate(body, start=1):
        cells = [row[i] for i in columns] if columns else row
        rows.append([_number(path, number, cell) for cell in cells])
    return rows


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _number(path: Path, row: int, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PredictInputError(f"{path}: row {row}: {value!r} is not a number") from None
    if not np.isfinite(number):
        raise PredictInputError(f"{path}: row {row}: {value!r} is not a finite number")
    return number


def predict_offline(store: Any, version: str, rows: list[list[float]]) -> dict[str, Any]:
    """The stored model's answer through ONNX Runtime: one label and probabilities per row."""
    import onnxruntime as ort

    stored = store.get(version)
    session = ort.InferenceSession(stored.model_bytes, providers=["CPUExecutionProvider"])
    node = session.get_inputs()[0]
    width = node.shape[1] if len(node.shape) == 2 else None
    bad = [i for i, row in enumerate(rows, start=1) if isinstance(width, int) and len(row) != width]
    if bad:
        raise PredictInputError(
            f"row {bad[0]} has {len(rows[bad[0] - 1])} values; version {stored.version} "
            f"takes {width} features ({', '.join(stored.metadata.get('feature_names', []))})"
        )
    outputs = {o.name: i for i, o in enumerate(session.get_outputs())}
    results = session.run(None, {node.name: np.asarray(rows, dtype=np.float32)})
    indices = results[outputs.get("label", 0)]
    probabilities = results[outputs.get("probabilities", 1)]
    labels = [stored.labels.get(str(int(i)), str(int(i))) for i in indices]
    return {
        "version": stored.version,
        "labels": labels,
        "probabilities": np.asarray(probabilities, dtype=float).round(6).tolist(),
    }


def predict_live(endpoint: str, rows: list[list[float]], timeout: float = 30.0) -> dict[str, Any]:
    """POST the rows to a running server's /predict (and /predict/label for labels)."""
    import httpx

    base = endpoint.rstrip("/")
    try:
        probabilities = httpx.post(f"{base}/predict", json={"data": rows}, timeout=timeout)
        labels = httpx.post(f"{base}/predict/label", json={"data": rows}, timeout=timeout)
        metadata = httpx.get(f"{base}/metadata", timeout=timeout)
    except httpx.HTTPError as err:
        raise KilnError(f"asking {base}: {err}; is it running? (`kiln status`)") from None
    for reply in (probabilities, labels):
        if reply.status_code != 200:
            raise KilnError(f"{reply.request.url} answered {reply.status_code}: {reply.text[:200]}")
    version = metadata.json().get("version") if metadata.status_code == 200 else None
    return {
        "version": version,
        "labels": labels.json().get("prediction"),
        "probabilities": probabilities.json().get("prediction"),
    }


def predict(
    rows_file: Annotated[
        Path,
        typer.Argument(
            metavar="ROWS",
            exists=True,
            dir_okay=False,
            readable=True,
            help="A CSV (header optional) or JSON file of rows.",
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
    store: StoreOption = None,
) -> None:
    """Predict labels for rows, offline with a stored version or from a live endpoint."""
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        raise typer.BadParameter(f"{endpoint!r} is not an http(s) URL", param_hint="--endpoint")
    if endpoint is None:
        the_store = open_store(store)
        resolved = the_store.resolve(version)
        names = the_store.metadata(resolved).get("feature_names")
        answer = predict_offline(the_store, resolved, read_rows(rows_file, names))
    else:
        answer = predict_live(endpoint, read_rows(rows_file, None))
    if output == "json":
        print_json(answer)
        return
    for label, probs in zip(answer["labels"] or [], answer["probabilities"] or [], strict=False):
        print_line(f"{label}\t{max(probs):.4f}")
