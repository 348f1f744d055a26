"""What a stored version's metadata.json and lineage records must hold.

The store validates metadata when it writes it and every time it reads it, so a malformed
or hand-edited file is reported as one clear error naming the version and the fields, never
a traceback far away (`metrics` as a list, an integer `created`, a missing `model_sha256`).
Fields the schema does not name are kept as they are: metadata grows without a migration.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kiln.config.errors import IntegrityError
from kiln.infra.redact import redact

SHA256 = r"^[0-9a-f]{64}$"
VERSION = r"^[0-9a-f]{12}$"


class CorruptVersion(IntegrityError):
    """A version whose metadata is unreadable or does not match its content."""


def _timestamp(value: str) -> str:
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 time") from None
    return value


class Metrics(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    accuracy: float | None = None
    f1_macro: float | None = None


class VersionMetadata(BaseModel):
    """metadata.json. The four fields the store writes itself are required."""

    model_config = ConfigDict(extra="allow", strict=True)

    version: str = Field(pattern=VERSION)
    created: str
    model_sha256: str = Field(pattern=SHA256)
    labels_sha256: str = Field(pattern=SHA256)
    metrics: Metrics = Metrics()
    data_source: str | None = None
    data_hash: str | None = None
    data_rows: int | None = Field(default=None, ge=0)
    feature_names: list[str] | None = None
    params: dict[str, Any] | None = None
    parity: dict[str, Any] | None = None
    sample_input: list[list[Any]] | None = None  # numbers, text, booleans, null (schema.py)
    onnx: dict[str, Any] | None = None
    libraries: dict[str, str] | None = None
    code_revision: str | None = None

    _created = field_validator("created")(_timestamp)

    @field_validator("data_source")
    @classmethod
    def _no_secrets(cls, value: str | None) -> str | None:
        return None if value is None else redact(value)


class LineageRecord(BaseModel):
    """One store of a version: when, and from which data (a version can be stored again
    from other data: the same model and labels give the same id)."""

    model_config = ConfigDict(extra="allow", strict=True)

    stored: str
    data_source: str | None = None
    data_hash: str | None = None
    data_rows: int | None = Field(default=None, ge=0)
    feature_names: list[str] | None = None

    _stored = field_validator("stored")(_timestamp)

    @field_validator("data_source")
    @classmethod
    def _no_secrets(cls, value: str | None) -> str | None:
        return None if value is None else redact(value)

    @classmethod
    def of(cls, metadata: dict[str, Any], stored: str) -> LineageRecord:
        fields = ("data_source", "data_hash", "data_rows", "feature_names")
        return cls(stored=stored, **{k: metadata[k] for k in fields if k in metadata})


def check_metadata(metadata: dict[str, Any], version: str) -> dict[str, Any]:
    """The metadata as a plain dict, validated; CorruptVersion names every bad field."""
    try:
        checked = VersionMetadata.model_validate(metadata)
    except ValidationError as err:
        raise CorruptVersion(f"version {version}: metadata.json {_describe(err)}") from None
    if checked.version != version:
        raise CorruptVersion(f"version {version}: metadata.json names version {checked.version!r}")
    return checked.model_dump(mode="json", exclude_unset=True)


def parse_metadata(raw: bytes, version: str) -> dict[str, Any]:
    try:
        loaded = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptVersion(f"version {version}: metadata.json is not JSON: {err}") from None
    if not isinstance(loaded, dict):
        kind = type(loaded).__name__
        raise CorruptVersion(f"version {version}: metadata.json holds a {kind}, not an object")
    return check_metadata(loaded, version)


def parse_lineage(raw: bytes, where: str) -> LineageRecord:
    try:
        return LineageRecord.model_validate_json(raw)
    except ValidationError as err:
        raise CorruptVersion(f"{where} {_describe(err)}") from None


def _describe(err: ValidationError) -> str:
    problems = []
    for problem in err.errors(include_url=False):
        where = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        message = problem["msg"]
        if problem["type"] == "json_invalid":
            return f"is not JSON: {message}"
        problems.append(f"{where}: {message}")
    return "has bad fields: " + "; ".join(problems)
