"""Where things live in the store, what version ids are, and the values the store returns.

Layout under the root (a local folder or any fsspec URL); every path the store's parts pass
to a back end is relative to the root:

    versions/<id>/model.onnx        the ONNX model
    versions/<id>/labels.json       {"0": "setosa", ...}
    versions/<id>/metadata.json     written last: a version exists once this file does
    versions/<id>/images/<digest>   one marker per pushed image (name = registry ref, quoted)
    versions/<id>/decisions/*.json  champion/challenger decisions about it, oldest first
    versions/<id>/lineage/<t>-<r>@<name>.json  one record per store of the version under a
                                    model name (time, data)
    pins/<id>                       a version the default name pinned (kept by retention)
    deployments/<target>.json       what the default name runs on a target, the version
                                    before it, and the versions rolled back there after a
                                    failed smoke test
    names/<name>/pins/<id>          the same two for any other name
    names/<name>/deployments/<target>.json

Version ids are the first 12 hex digits of the sha256 of the model and its labels, so the
same model stored twice is one version, under one name or several. A version belongs to
every name its lineage records name; a lineage record without a name (`<t>-<r>.json`,
written before names existed) and a version without lineage belong to the default name, as
do the pins and deployment records at the top level: a store an earlier kiln wrote is the
default name's, with nothing to migrate.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kiln.config.errors import StoreError, VersionNotFound
from kiln.config.names import DEFAULT_NAME, check_name
from kiln.store.schema import LineageRecord

VERSIONS = "versions"
MODEL_FILE = "model.onnx"
LABELS_FILE = "labels.json"
METADATA_FILE = "metadata.json"
LINEAGE_DIR = "lineage"
NAMES_DIR = "names"
VERSION_ID_LENGTH = 12
# What an object store's metadata.json holds while its version is being removed: its files go
# first, this last, and no writer can commit the same version again in between (its commit
# is create-only), so no reader ever sees a committed version with files missing.
TOMBSTONE = b'{"removing": true}\n'
# Writers that died (local staging/trash folders, uncommitted S3 prefixes) are cleaned once
# they are this old, so a writer still at work is never cleaned away under its feet.
STALE_SECONDS = 3600.0


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encode_labels(labels: Mapping[Any, str]) -> bytes:
    """labels.json bytes in one canonical form, so equal labels hash equally."""
    items = sorted(((int(k), str(v)) for k, v in labels.items()), key=lambda kv: kv[0])
    return json.dumps({str(k): v for k, v in items}, indent=2).encode() + b"\n"


def version_id(model_bytes: bytes, labels_bytes: bytes) -> str:
    digest = hashlib.sha256()
    for part in (model_bytes, labels_bytes):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()[:VERSION_ID_LENGTH]


def version_dir(version: str) -> str:
    if not version or "/" in version or version.startswith("."):
        raise VersionNotFound(f"invalid version id {version!r}")
    return f"{VERSIONS}/{version}"


def name_dir(name: str) -> str:
    """Where a name's own records live: the top level for the default name (as before names
    existed), names/<name>/ for any other."""
    return "" if check_name(name) == DEFAULT_NAME else f"{NAMES_DIR}/{name}/"


def deployment_path(target: str, name: str = DEFAULT_NAME) -> str:
    if not target or not all(c.isalnum() or c in "-_." for c in target) or target[0] == ".":
        raise StoreError(f"invalid target name {target!r}")
    return f"{deployments_dir(name)}/{target}.json"


def deployments_dir(name: str = DEFAULT_NAME) -> str:
    return f"{name_dir(name)}deployments"


def pins_dir(name: str = DEFAULT_NAME) -> str:
    return f"{name_dir(name)}pins"


def basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def now(clock: Callable[[], datetime] | None = None, timespec: str = "seconds") -> str:
    moment = clock() if clock is not None else datetime.now(UTC)
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def encode_json(data: Any) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True).encode() + b"\n"


def lineage_file(record: LineageRecord, model: str = DEFAULT_NAME) -> tuple[str, bytes]:
    """A lineage record's file: named by its time (sortable), a random part (unique) and the
    model name it was stored under, so one listing tells every version's names."""
    stamp = record.stored.replace("-", "").replace(":", "")
    name = f"{stamp}-{uuid.uuid4().hex[:8]}@{check_name(model)}.json"
    return name, encode_json(record.model_dump(mode="json", exclude_unset=True))


def is_lineage(name: str) -> bool:
    return name.endswith(".json") and not name.startswith(".")


def model_of(lineage_name: str) -> str:
    """The model name in a lineage file's name; the default for one written before names."""
    stem = lineage_name.removesuffix(".json")
    return stem.rsplit("@", 1)[1] if "@" in stem else DEFAULT_NAME


def stored_of(name: str) -> str:
    """The time in a lineage file name (20261128T194500.123456Z-...), as an ISO time."""
    stamp = name.split("-", 1)[0]
    return f"{stamp[0:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[9:11]}:{stamp[11:13]}:{stamp[13:]}"


# -- values the store returns ---------------------------------------------------------------


@dataclass(frozen=True)
class StoredModel:
    """A version read back from the store, its files verified against their sha256."""

    version: str
    model_bytes: bytes
    labels: dict[str, str]
    metadata: dict[str, Any]


@dataclass(frozen=True)
class VersionInfo:
    version: str
    created: str
    metrics: dict[str, Any]
    pinned: bool
    images: list[str] = field(default_factory=list)
    stored: str = ""  # when it was last stored again (a re-store): renews its age
    names: tuple[str, ...] = (DEFAULT_NAME,)  # every model name it was stored under

    @property
    def age_key(self) -> tuple[datetime, str]:
        """Newest first sorts on this: the later of created and last stored, then the id."""
        times = [parse_time(t) for t in (self.created, self.stored) if t]
        return (max(times, default=datetime.min.replace(tzinfo=UTC)), self.version)


@dataclass(frozen=True)
class BrokenVersion:
    """A version folder that cannot be used as a version, and why.

    `kind` is "corrupt" (its metadata or files do not check out) or "incomplete" (no
    metadata.json: an interrupted store, which `kiln prune` clears).
    """

    version: str
    reason: str
    kind: str = "corrupt"


@dataclass(frozen=True)
class Deployment:
    """What runs on one target, and what ran before it (the rollback target)."""

    target: str
    current: str
    image: str
    previous: str | None
    previous_image: str | None
    updated: str
    # Versions that failed their smoke test here and were rolled back, newest last:
    # [{"version", "reason", "at"}]; a rollout refuses them unless forced.
    rolled_back: list[dict[str, str]] = field(default_factory=list)
    name: str = DEFAULT_NAME  # the model name (a record from before names: the default)
    endpoint: str | None = None  # where it answers, as the target reported it

    def rolled_back_reason(self, version: str) -> str | None:
        """Why `version` was rolled back on this target, or None if it never was."""
        return next((e["reason"] for e in self.rolled_back if e["version"] == version), None)


@dataclass(frozen=True)
class PruneResult:
    removed: list[VersionInfo]
    kept: list[VersionInfo]
    dry_run: bool
