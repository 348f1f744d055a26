"""Reading a table: CSV (delimiter sniffed or given, a header row, empty cells as missing) or
Parquet, from a local path or any fsspec URL, within the data limits.

What it returns is the raw table as pandas typed it; `data.prepare` checks and types it for
training. Errors name the file with any credentials in its URL masked, and nothing is read
past the limits: a file's size is checked before it is read, a stream is cut at the byte
limit, and rows are counted as they are parsed.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import fsspec

from kiln.config.errors import DataError
from kiln.infra.redact import redact

if TYPE_CHECKING:
    import pandas as pd

PARQUET_SUFFIXES = (".parquet", ".pq")
SNIFF_BYTES = 64 * 1024  # enough of a CSV to find its header and delimiter
DELIMITERS = ",;\t|"
# Cells read as missing: empty ones and the spellings spreadsheets and pandas write.
MISSING = ["", "NA", "N/A", "NaN", "nan", "null", "NULL"]
_FIELDS = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


@dataclass(frozen=True)
class DataLimits:
    """How much data one load may read (KILN_MAX_DATA_ROWS and KILN_MAX_DATA_BYTES, which
    kiln.wiring.data_limits reads; these defaults are the settings' own)."""

    max_rows: int = 1_000_000
    max_bytes: int = 256 * 1024 * 1024


def read_table(
    url: str,
    limits: DataLimits,
    columns: list[str] | None = None,
    delimiter: str | None = None,
    label: str | None = None,
) -> pd.DataFrame:
    """The table at `url` (only `columns`, when given), within `limits`; `label` names the
    label column in errors."""
    source = redact(url)
    try:
        with fsspec.open(url, "rb") as raw:
            size = getattr(raw, "size", None)
            if isinstance(size, int) and size > limits.max_bytes:
                raise DataError(_too_big(source, limits))
            if url.lower().endswith(PARQUET_SUFFIXES):
                return _read_parquet(raw, source, limits, columns)
            bounded = _BoundedReader(raw, limits.max_bytes, source)
            return _read_csv(bounded, source, limits, columns, delimiter, label)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{source}: no such file") from None
    except Exception as err:  # whatever the fsspec backend or the parser raises
        reason = redact(str(err).strip().splitlines()[-1] if str(err).strip() else "")
        raise DataError(f"{source}: cannot read: {reason or type(err).__name__}") from None


def _read_csv(
    stream: _BoundedReader,
    source: str,
    limits: DataLimits,
    columns: list[str] | None,
    delimiter: str | None,
    label: str | None,
) -> pd.DataFrame:
    import pandas as pd

    head = stream.read(SNIFF_BYTES)
    text = head.decode("utf-8-sig", errors="replace")
    if not text.strip():
        raise DataError(f"{source}: the file is empty")
    delimiter = delimiter or _sniff_delimiter(text)
    header = _header(text, delimiter, source, label)
    if columns is not None:
        missing = [c for c in columns if c not in header]
        if missing:
            raise DataError(f"{source}: no column {missing[0]!r}; columns are {header}")
    body = io.BufferedReader(_Prefixed(head, stream))
    try:
        frame = pd.read_csv(
            body,
            sep=delimiter,
            encoding="utf-8-sig",
            encoding_errors="replace",
            keep_default_na=False,
            na_values=MISSING,
            skipinitialspace=True,
            usecols=columns,
            index_col=False,  # a row with an extra field is an error, not an index
            nrows=limits.max_rows + 1,
            low_memory=False,
        )
    except pd.errors.EmptyDataError:
        raise DataError(f"{source}: the file is empty") from None
    except pd.errors.ParserError as err:
        raise DataError(f"{source}: not a readable CSV: {_parser_reason(err)}") from None
    if len(frame) > limits.max_rows:
        raise DataError(_too_many(source, limits))
    if len(frame) == 0:
        raise DataError(f"{source}: the file has a header but no data rows")
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _sniff_delimiter(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()][:20]
    try:
        return csv.Sniffer().sniff("\n".join(lines), delimiters=DELIMITERS).delimiter
    except csv.Error:
        return ","


def _header(text: str, delimiter: str, source: str, label: str | None) -> list[str]:
    """The header row (the first non-empty one), every name present once, and as many
    fields in the first data row (pandas would take one more as the row's index)."""
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    rows = (row for row in reader if any(cell.strip() for cell in row))
    header = [cell.strip() for cell in next(rows, [])]
    if not header:
        raise DataError(f"{source}: the file is empty")
    first = next(rows, None)
    if first is not None and len(first) != len(header):
        raise DataError(
            f"{source}: line {reader.line_num} has {len(first)} fields, the header has "
            f"{len(header)}"
        )
    seen: dict[str, int] = {}
    for position, name in enumerate(header):
        if name in seen:
            what = "the label column" if name == label else "column"
            raise DataError(
                f"{source}: {what} {name!r} appears twice in the header (columns "
                f"{seen[name] + 1} and {position + 1}); every column needs its own name"
            )
        seen[name] = position
    return header


def _parser_reason(err: Exception) -> str:
    match = _FIELDS.search(str(err))
    if match:
        expected, line, saw = match.groups()
        return f"line {line} has {saw} fields, the header has {expected}"
    return str(err).strip().splitlines()[-1]


def _read_parquet(
    raw: IO[bytes], source: str, limits: DataLimits, columns: list[str] | None
) -> pd.DataFrame:
    import pyarrow.parquet as pq

    table_file = pq.ParquetFile(raw)
    rows = table_file.metadata.num_rows
    if rows > limits.max_rows:
        raise DataError(_too_many(source, limits))
    names = table_file.schema_arrow.names
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise DataError(
            f"{source}: column {twice!r} appears twice; every column needs its own name"
        )
    if columns is not None:
        missing = [c for c in columns if c not in names]
        if missing:
            raise DataError(f"{source}: no column {missing[0]!r}; columns are {names}")
    frame = table_file.read(columns=columns).to_pandas()
    if len(frame) == 0:
        raise DataError(f"{source}: the table has no rows")
    return frame


def _too_big(source: str, limits: DataLimits) -> str:
    return f"{source}: larger than {limits.max_bytes:,} bytes, the limit (KILN_MAX_DATA_BYTES)"


def _too_many(source: str, limits: DataLimits) -> str:
    return f"{source}: more than {limits.max_rows:,} data rows, the limit (KILN_MAX_DATA_ROWS)"


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


class _Prefixed(io.RawIOBase):
    """The bytes already read to sniff the header, then the rest of the stream."""

    def __init__(self, head: bytes, rest: io.RawIOBase) -> None:
        self._head = memoryview(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            size = min(len(view), len(self._head))
            view[:size] = self._head[:size]
            self._head = self._head[size:]
            return size
        return self._rest.readinto(view)
