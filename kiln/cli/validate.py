"""Checks of user input that run before any work, in kiln's words (raise ValueError)."""

from __future__ import annotations

import os
import re
from pathlib import Path

# Enough of a file to tell a CSV from a binary file (a NUL byte or invalid UTF-8).
SNIFF_BYTES = 8192
PARQUET_MAGIC = b"PAR1"
PARQUET_SUFFIXES = (".parquet", ".pq")
SYNTHETIC = re.compile(r"^synthetic:(\d+)(?:x(\d+))?$")


def check_data_spec(spec: str) -> None:
    """`iris`, `synthetic:ROWS[xFEATURES]`, a readable CSV or Parquet file, or a URL fsspec
    knows."""
    if spec == "iris":
        return
    if spec.startswith("synthetic:"):
        match = SYNTHETIC.match(spec)
        if not match or int(match.group(1)) < 1 or (match.group(2) and int(match.group(2)) < 1):
            raise ValueError(f"{spec!r}: use synthetic:ROWS or synthetic:ROWSxFEATURES")
        return
    scheme, sep, rest = spec.partition("://")
    if sep and scheme != "file":
        _check_scheme(spec, scheme)
        return
    _check_local_file(rest if sep else spec)


def _check_scheme(spec: str, scheme: str) -> None:
    import fsspec

    try:
        fsspec.get_filesystem_class(scheme)
    except ValueError:
        raise ValueError(
            f"{spec!r}: unknown URL scheme {scheme + '://'!r}; use a local path or an fsspec "
            "URL such as s3://, gs://, https://"
        ) from None
    except ImportError as err:
        raise ValueError(f"{spec!r}: reading {scheme}:// needs a package: {err}") from None


def _check_local_file(path: str) -> None:
    file = Path(path)
    if not file.exists():
        raise ValueError(f"{path!r}: no such file")
    if file.is_dir():
        raise ValueError(f"{path!r} is a directory; give a CSV file or a Parquet table")
    if not file.is_file():  # opening a FIFO would wait for a writer that may never come
        raise ValueError(f"{path!r} is not a regular file (a pipe, socket or device)")
    if not os.access(file, os.R_OK):
        raise ValueError(f"{path!r} is not readable")
    with file.open("rb") as fh:
        head = fh.read(SNIFF_BYTES)
    if head.startswith(PARQUET_MAGIC):
        if not path.lower().endswith(PARQUET_SUFFIXES):
            raise ValueError(f"{path!r} is a Parquet file: name it .parquet (or .pq)")
        return
    binary = b"\0" in head
    if not binary:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as err:
            # A multi-byte character cut at the end of the sniffed bytes is still text.
            binary = err.start < len(head) - 3
    if binary:
        raise ValueError(f"{path!r} is not a text CSV file, nor Parquet (it holds binary data)")
