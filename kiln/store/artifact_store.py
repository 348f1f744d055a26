"""The versioned artifact store: the pipeline's checkpoint.

Layout under the root (a local folder or any fsspec URL):

    versions/<id>/model.onnx        the ONNX model
    versions/<id>/labels.json       {"0": "setosa", ...}
    versions/<id>/metadata.json     written last: a version exists once this file does
    versions/<id>/images/<digest>   one empty marker per pushed image (name = registry ref, quoted)
    versions/<id>/decisions/*.json  champion/challenger decisions about it, oldest first
    versions/<id>/lineage/<t>-<r>.json  one record per store of the version (time, data)
    pins/<id>                       a pinned version (kept by retention)
    deployments/<target>.json       what runs on a target, the version before it, and the
                                    versions rolled back there after a failed smoke test

Version ids are the first 12 hex digits of the sha256 of the model and its labels, so the
same model stored twice is one version. Writes never expose half a version: on a local
folder a version is staged beside its final place and renamed in (atomic); on S3 the files
are written with metadata.json last, created only if absent (the commit: of two writers
of one model, the first commit stands), and readers ignore a folder without it.
Deployment records change by read-modify-write under a file lock (local) or a conditional
write on the ETag that was read (S3), so concurrent rollouts never lose a record.
An S3 store that cannot be reached fails after a few bounded retries with one StoreError.

Storing a model that is already stored adds a lineage record (which data, when) and renews
the version's age for retention. Nothing read is trusted: metadata.json is validated
against a schema (kiln/store/schema.py) on every read, and `get` recomputes the version id
from the model and labels it reads. A version whose metadata cannot be read is reported by
`scan` and skipped by listing, `latest` and retention, so one bad folder never blocks the
rest of the store.

Permissions follow the process umask for everything the store creates (directories
0777 & ~umask, files 0666 & ~umask), and a setgid store root passes its group down: for a
store shared by a group, `chgrp GROUP ROOT && chmod 2770 ROOT` and run kiln with umask 007.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from urllib.parse import quote, unquote

import fsspec
from fsspec.implementations.local import LocalFileSystem

from kiln.config.errors import IntegrityError, KilnError, StoreError, VersionNotFound
from kiln.store import s3 as store_s3
from kiln.store.schema import (
    CorruptVersion,
    LineageRecord,
    check_metadata,
    parse_lineage,
    parse_metadata,
)

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
LABELS_FILE = "labels.json"
METADATA_FILE = "metadata.json"
LINEAGE_DIR = "lineage"
VERSION_ID_LENGTH = 12
# Tries of a deployment record's read-modify-write before giving up on a busy record.
RECORD_UPDATE_ATTEMPTS = 20
# Rolled-back versions a deployment record keeps per target, and the length of each reason.
ROLLED_BACK_KEPT = 50
REASON_CHARS = 500

P = ParamSpec("P")
R = TypeVar("R")


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

    @property
    def age_key(self) -> tuple[datetime, str]:
        """Newest first sorts on this: the later of created and last stored, then the id."""
        times = [_parse_time(t) for t in (self.created, self.stored) if t]
        return (max(times, default=datetime.min.replace(tzinfo=UTC)), self.version)


@dataclass(frozen=True)
class BrokenVersion:
    """A version folder that cannot be read as a version, and why."""

    version: str
    reason: str


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

    def rolled_back_reason(self, version: str) -> str | None:
        """Why `version` was rolled back on this target, or None if it never was."""
        return next((e["reason"] for e in self.rolled_back if e["version"] == version), None)


@dataclass(frozen=True)
class PruneResult:
    removed: list[VersionInfo]
    kept: list[VersionInfo]
    dry_run: bool


def _now(clock: Callable[[], datetime] | None = None, timespec: str = "seconds") -> str:
    moment = clock() if clock is not None else datetime.now(UTC)
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _store_op(action: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Report a failure to reach the store as one StoreError that says what was being done."""

    def decorate(method: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(method)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            store = args[0]
            assert isinstance(store, ArtifactStore)
            if getattr(store._op, "active", False):  # inside another operation: it reports
                return method(*args, **kwargs)
            failures: tuple[type[BaseException], ...] = (OSError, *store._transport_errors)
            store._op.active = True
            try:
                return method(*args, **kwargs)
            except KilnError:
                raise
            except failures as err:
                raise StoreError(f"{action} in store {store.url}: {_describe(err)}") from err
            finally:
                store._op.active = False

        return wrapper

    return decorate


def _describe(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return text if len(text) <= 300 else text[:300] + "..."


class ArtifactStore:
    def __init__(
        self,
        root: str | os.PathLike[str],
        storage_options: Mapping[str, Any] | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        attempts: int = store_s3.DEFAULT_ATTEMPTS,
    ) -> None:
        self.url = str(root)
        self.clock = clock  # what "now" is for `created` and deployment times (tests)
        protocol = fsspec.core.split_protocol(self.url)[0] or "file"
        self._s3 = protocol in store_s3.S3_PROTOCOLS
        options = {**store_s3.storage_options(protocol, attempts), **(storage_options or {})}
        try:
            fs, path = fsspec.core.url_to_fs(self.url, **options)
        except (ImportError, ValueError) as err:
            raise StoreError(f"cannot open store {self.url}: {err}") from err
        if self._s3:
            # botocore retries each call `attempts` times; s3fs's own loop (5 tries of
            # those, for a server that hangs up) would multiply them into minutes.
            fs.retries = 1
        self.fs: fsspec.AbstractFileSystem = fs
        self.root = path.rstrip("/")
        self._local = isinstance(fs, LocalFileSystem)
        self._op = threading.local()  # the outermost operation names a failure
        self._transport_errors: tuple[type[BaseException], ...] = (
            store_s3.transport_errors() if self._s3 else ()
        )

    # -- paths -----------------------------------------------------------------------------

    def _path(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    def _version_dir(self, version: str) -> str:
        if not version or "/" in version or version.startswith("."):
            raise VersionNotFound(f"invalid version id {version!r}")
        return self._path("versions", version)

    def __repr__(self) -> str:
        return f"ArtifactStore({self.url!r})"

    # -- writing a version -----------------------------------------------------------------

    @_store_op("storing a version")
    def put(
        self, model_bytes: bytes, labels: Mapping[Any, str], metadata: Mapping[str, Any]
    ) -> str:
        """Store a model; returns its version id. Storing the same model again is a no-op."""
        labels_bytes = encode_labels(labels)
        version = version_id(model_bytes, labels_bytes)
        full_metadata = check_metadata(
            {
                **metadata,
                "version": version,
                "created": _now(self.clock),
                "model_sha256": sha256_hex(model_bytes),
                "labels_sha256": sha256_hex(labels_bytes),
            },
            version,
        )
        # Microseconds: two stores within a second still order by their lineage.
        record = LineageRecord.of(full_metadata, _now(self.clock, "microseconds"))
        lineage_name, lineage_bytes = _lineage_file(record)
        if self.exists(version):
            # The same model again (perhaps from other data): record where it came from this
            # time and renew its age, so retention counts it as just stored.
            self._write_atomic(self._lineage_path(version, lineage_name), lineage_bytes)
            log.info("version %s is already stored; recorded this store in its lineage", version)
            return version
        files = {
            MODEL_FILE: model_bytes,
            LABELS_FILE: labels_bytes,
            f"{LINEAGE_DIR}/{lineage_name}": lineage_bytes,
            METADATA_FILE: json.dumps(full_metadata, indent=2, sort_keys=True).encode() + b"\n",
        }
        if self._local:
            self._publish_local(version, files)
        else:
            self._publish_remote(version, files)
        log.info("stored version %s", version)
        return version

    def _publish_local(self, version: str, files: dict[str, bytes]) -> None:
        versions = Path(self._path("versions"))
        versions.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".staging-{version}-", dir=versions))
        try:
            _chmod_like_created(staging, directory=True)  # mkdtemp makes it 0700
            for name, data in files.items():
                (staging / name).parent.mkdir(exist_ok=True)
                with open(staging / name, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            try:
                os.rename(staging, versions / version)
            except OSError:
                # Another writer published the same version first: same content, nothing lost.
                if not self.exists(version):
                    raise
            _fsync_dir(versions)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _publish_remote(self, version: str, files: dict[str, bytes]) -> None:
        directory = self._version_dir(version)
        self.fs.makedirs(directory, exist_ok=True)
        # The same id means the same bytes, so a concurrent writer of this model rewrites
        # identical objects. A writer that dies before the commit leaves files no reader
        # lists (clean_staging removes them later); they are not deleted on failure here,
        # since another writer of the same model may be about to commit them.
        for name in files:
            if name != METADATA_FILE:
                self.fs.pipe_file(f"{directory}/{name}", files[name])
        metadata_path = f"{directory}/{METADATA_FILE}"
        if self._s3:
            if not store_s3.write_if(self.fs, metadata_path, files[METADATA_FILE], None):
                log.info("version %s was committed by another writer first", version)
        else:
            self.fs.pipe_file(metadata_path, files[METADATA_FILE])

    # -- reading ---------------------------------------------------------------------------

    @_store_op("reading a version")
    def exists(self, version: str) -> bool:
        return self.fs.exists(f"{self._version_dir(version)}/{METADATA_FILE}")

    @_store_op("reading a version")
    def metadata(self, version: str) -> dict[str, Any]:
        """A version's metadata.json, without reading or verifying the model."""
        try:
            raw = self.fs.cat_file(f"{self._version_dir(version)}/{METADATA_FILE}")
        except FileNotFoundError:
            raise VersionNotFound(f"no version {version!r} in store {self.url}") from None
        except OSError as err:
            # On a local store any other failure to read one file is that version's problem
            # (permissions, a bad link); on an object store it may be the connection.
            if not (self._local or isinstance(err, IsADirectoryError | PermissionError)):
                raise
            raise CorruptVersion(f"version {version}: cannot read metadata.json: {err}") from None
        return parse_metadata(raw, version)

    @_store_op("reading a version")
    def get(self, version: str) -> StoredModel:
        """Read a version and verify every file against the sha256 recorded for it."""
        version = self.resolve(version)
        metadata = self.metadata(version)
        directory = self._version_dir(version)
        model = self._read_verified(directory, MODEL_FILE, metadata["model_sha256"], version)
        labels = self._read_verified(directory, LABELS_FILE, metadata["labels_sha256"], version)
        # The id is a hash of the content: a swapped model with an edited sha256 in metadata
        # passes the checks above but not this one.
        actual = version_id(model, labels)
        if actual != version:
            raise IntegrityError(
                f"version {version}: its model and labels hash to version {actual}, not "
                f"{version} (the files were replaced after it was stored)"
            )
        return StoredModel(version, model, json.loads(labels), metadata)

    def _read_verified(self, directory: str, name: str, expected: str, version: str) -> bytes:
        try:
            data = self.fs.cat_file(f"{directory}/{name}")
        except FileNotFoundError:
            raise IntegrityError(f"version {version}: {name} is missing") from None
        actual = sha256_hex(data)
        if actual != expected:
            raise IntegrityError(
                f"version {version}: {name} has sha256 {actual[:16]}..., "
                f"expected {expected[:16]}... (the file was changed after it was stored)"
            )
        return data

    @_store_op("exporting a version")
    def export_version(self, version: str, dest: str | os.PathLike[str]) -> Path:
        """Write a verified copy of a version's three files into a local folder."""
        stored = self.get(version)
        out = Path(dest)
        out.mkdir(parents=True, exist_ok=True)
        (out / MODEL_FILE).write_bytes(stored.model_bytes)
        (out / LABELS_FILE).write_bytes(encode_labels(stored.labels))
        metadata = json.dumps(stored.metadata, indent=2, sort_keys=True) + "\n"
        (out / METADATA_FILE).write_text(metadata)
        return out

    @_store_op("finding a version")
    def resolve(self, version: str) -> str:
        """Accept a full id, a unique prefix of one, or 'latest'."""
        if version == "latest":
            versions = self.list_versions()
            if not versions:
                raise VersionNotFound(f"store {self.url} holds no versions yet")
            return versions[0].version
        if self.exists(version):
            return version
        matches = [v for v in self._version_ids() if v.startswith(version)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise VersionNotFound(f"version prefix {version!r} is ambiguous: {', '.join(matches)}")
        raise VersionNotFound(f"no version {version!r} in store {self.url}")

    def _version_ids(self) -> list[str]:
        return sorted(self._scan())

    def _scan(self) -> dict[str, list[str]]:
        """Every committed version and its image refs, from one listing (one request on S3)."""
        return self._scan_listing()[0]

    def _scan_listing(self) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        """Committed versions with their image refs, and with their lineage file names."""
        base = self._path("versions")
        try:
            paths = self.fs.find(base)
        except FileNotFoundError:
            return {}, {}
        committed: set[str] = set()
        images: dict[str, list[str]] = {}
        lineage: dict[str, list[str]] = {}
        for path in paths:
            parts = path.removeprefix(f"{base}/").split("/")
            if path == parts[0] or parts[0].startswith("."):
                continue  # not below the base, or staging/trash of a local writer
            if parts[1:] == [METADATA_FILE]:
                committed.add(parts[0])
            elif len(parts) == 3 and parts[1] == "images":
                images.setdefault(parts[0], []).append(unquote(parts[2]))
            elif len(parts) == 3 and parts[1] == LINEAGE_DIR and _is_lineage(parts[2]):
                lineage.setdefault(parts[0], []).append(parts[2])
        return (
            {version: sorted(images.get(version, [])) for version in committed},
            {version: sorted(lineage.get(version, [])) for version in committed},
        )

    @_store_op("listing versions")
    def list_versions(self) -> list[VersionInfo]:
        """Every complete, readable version, newest (most recently stored) first."""
        return self.scan()[0]

    @_store_op("listing versions")
    def scan(self) -> tuple[list[VersionInfo], list[BrokenVersion]]:
        """Readable versions (newest first) and the ones that cannot be read, with why."""
        pinned = set(self.pinned())
        scanned, lineage = self._scan_listing()
        paths = {self._path("versions", v, METADATA_FILE): v for v in scanned}
        # One batch (concurrent on S3); a version pruned since the listing is left out.
        raw = self.fs.cat(list(paths), on_error="omit") if paths else {}
        infos: list[VersionInfo] = []
        broken: list[BrokenVersion] = []
        for path, version in paths.items():
            try:
                # Left out of the batch: pruned meanwhile, or unreadable (then say why).
                meta = parse_metadata(raw[path], version) if path in raw else self.metadata(version)
            except VersionNotFound:
                continue
            except CorruptVersion as err:
                log.warning("skipping %s", err)
                broken.append(BrokenVersion(version, str(err)))
                continue
            names = lineage[version]
            infos.append(
                VersionInfo(
                    version=version,
                    created=meta["created"],
                    metrics=meta.get("metrics", {}),
                    pinned=version in pinned,
                    images=scanned[version],
                    # Renewed by a store after the first (which `created` already dates).
                    stored=_stored_of(names[-1]) if len(names) > 1 else "",
                )
            )
        infos.sort(key=lambda i: i.age_key, reverse=True)
        return infos, sorted(broken, key=lambda b: b.version)

    # -- lineage ---------------------------------------------------------------------------

    def _lineage_path(self, version: str, name: str) -> str:
        return f"{self._version_dir(version)}/{LINEAGE_DIR}/{name}"

    @_store_op("reading a version's lineage")
    def lineage(self, version: str) -> list[dict[str, Any]]:
        """Every store of a version, oldest first: when, and from which data."""
        version = self.resolve(version)
        directory = f"{self._version_dir(version)}/{LINEAGE_DIR}"
        try:
            names = sorted(_basename(p) for p in self.fs.ls(directory, detail=False))
        except FileNotFoundError:
            return []
        records = []
        for name in filter(_is_lineage, names):
            raw = self.fs.cat_file(f"{directory}/{name}")
            record = parse_lineage(raw, f"version {version}: lineage {name}")
            records.append(record.model_dump(mode="json", exclude_unset=True))
        return records

    # -- images ----------------------------------------------------------------------------

    @_store_op("recording an image")
    def record_image(self, version: str, image_ref: str) -> None:
        """Remember an image pushed for this version (`registry/repo@sha256:...`)."""
        directory = self._version_dir(self.resolve(version))
        self.fs.makedirs(f"{directory}/images", exist_ok=True)
        # The marker holds when it was recorded, so the latest build can be told apart.
        stamp = str(time.time_ns()).encode()
        self.fs.pipe_file(f"{directory}/images/{quote(image_ref, safe='')}", stamp)

    @_store_op("reading a version's images")
    def latest_image_ref(self, version: str) -> str | None:
        """The digest-pinned image recorded last for a version (None when there is none)."""
        directory = f"{self._version_dir(self.resolve(version))}/images"
        if not self.fs.exists(directory):
            return None
        newest: tuple[int, str] | None = None
        for path in self.fs.ls(directory, detail=False):
            ref = unquote(_basename(path))
            if "@sha256:" not in ref:
                continue
            raw = self.fs.cat_file(path).strip()
            stamp = int(raw) if raw.isdigit() else 0  # recorded before stamps: oldest
            if newest is None or (stamp, ref) > newest:
                newest = (stamp, ref)
        return newest[1] if newest else None

    @_store_op("listing a version's images")
    def image_refs(self, version: str) -> list[str]:
        directory = f"{self._version_dir(version)}/images"
        if not self.fs.exists(directory):
            return []
        return sorted(unquote(_basename(p)) for p in self.fs.ls(directory, detail=False))

    # -- champion gate decisions -------------------------------------------------------------

    def record_decision(self, version: str, decision: Mapping[str, Any]) -> None:
        """Keep one champion/challenger decision about a version, beside it (an audit trail).

        metadata.json stays as stored (it is baked into the image); a version can be judged
        again later (refused, then forced), so each decision is its own file, oldest first.
        """
        directory = self._version_dir(self.resolve(version))
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        record = {**decision, "decided": _now()}
        data = json.dumps(record, indent=2, sort_keys=True).encode() + b"\n"
        self._write_atomic(f"{directory}/decisions/{stamp}-{uuid.uuid4().hex[:6]}.json", data)

    def decisions(self, version: str) -> list[dict[str, Any]]:
        """Every decision recorded about a version, oldest first."""
        directory = f"{self._version_dir(version)}/decisions"
        if not self.fs.exists(directory):
            return []
        paths = sorted(p for p in self.fs.ls(directory, detail=False) if p.endswith(".json"))
        return [json.loads(self.fs.cat_file(p)) for p in paths]

    # -- pins ------------------------------------------------------------------------------

    @_store_op("pinning a version")
    def pin(self, version: str) -> str:
        version = self.resolve(version)
        self.fs.makedirs(self._path("pins"), exist_ok=True)
        self.fs.pipe_file(self._path("pins", version), b"")
        return version

    @_store_op("unpinning a version")
    def unpin(self, version: str) -> str:
        version = self.resolve(version)
        path = self._path("pins", version)
        if self.fs.exists(path):
            self.fs.rm_file(path)
        return version

    @_store_op("listing pins")
    def pinned(self) -> list[str]:
        base = self._path("pins")
        if not self.fs.exists(base):
            return []
        return sorted(_basename(p) for p in self.fs.ls(base, detail=False))

    # -- deployments -----------------------------------------------------------------------

    @_store_op("reading a deployment record")
    def deployment(self, target: str) -> Deployment | None:
        path = self._deployment_path(target)
        try:
            return _parse_deployment(self.fs.cat_file(path), target)
        except FileNotFoundError:
            return None

    @_store_op("listing deployment records")
    def deployments(self) -> list[Deployment]:
        base = self._path("deployments")
        if not self.fs.exists(base):
            return []
        names = [_basename(p) for p in self.fs.ls(base, detail=False)]
        targets = [n.removesuffix(".json") for n in names if n.endswith(".json")]
        found = [self.deployment(t) for t in sorted(targets) if not t.startswith(".")]
        return [d for d in found if d is not None]

    @_store_op("recording a deployment")
    def record_deployment(self, target: str, version: str, image: str) -> Deployment:
        """Record that `version` now runs on `target`; what ran before becomes the previous."""
        version = self.resolve(version)

        def change(before: Deployment | None) -> Deployment:
            if before is not None and before.current == version:
                previous, previous_image = before.previous, before.previous_image
            elif before is not None:
                previous, previous_image = before.current, before.image
            else:
                previous, previous_image = None, None
            # Shipped and passed (forced, or fixed): no longer a rolled-back version here.
            kept = [e for e in before.rolled_back if e["version"] != version] if before else []
            return Deployment(
                target, version, image, previous, previous_image, _now(self.clock), kept
            )

        after = self._update_deployment(target, change)
        assert after is not None
        return after

    @_store_op("recording a rollback")
    def record_rollback(self, target: str, version: str, reason: str) -> Deployment | None:
        """Note on `target`'s record that `version` failed there and was rolled back.

        Nothing is noted where nothing was ever recorded (there was nothing to roll back to).
        The newest ROLLED_BACK_KEPT are kept, each reason cut to one bounded line."""
        entry = {"version": version, "reason": reason[:REASON_CHARS], "at": _now(self.clock)}

        def change(before: Deployment | None) -> Deployment | None:
            if before is None:
                return None
            others = [e for e in before.rolled_back if e["version"] != version]
            return replace(before, rolled_back=[*others, entry][-ROLLED_BACK_KEPT:])

        return self._update_deployment(target, change)

    @_store_op("restoring a deployment record")
    def restore_deployment(self, target: str, deployment: Deployment | None) -> None:
        """Write a deployment record back as it was (None removes it)."""
        self._update_deployment(target, lambda _before: deployment)

    def _update_deployment(
        self, target: str, change: Callable[[Deployment | None], Deployment | None]
    ) -> Deployment | None:
        """Read-modify-write of one record that never loses a concurrent writer's change."""
        path = self._deployment_path(target)
        if self._local:
            with self._record_lock(path):
                after = change(self.deployment(target))
                self._write_record(path, after)
            return after
        if not self._s3:  # other filesystems have no conditional write: last writer wins
            after = change(self.deployment(target))
            self._write_record(path, after)
            return after
        for attempt in range(RECORD_UPDATE_ATTEMPTS):
            found = store_s3.read_with_etag(self.fs, path)
            before = _parse_deployment(found[0], target) if found else None
            after = change(before)
            if after is None:
                if found:
                    self.fs.rm_file(path)
                return None
            etag = found[1] if found else None
            if store_s3.write_if(self.fs, path, _encode_deployment(after), etag):
                return after
            # Another rollout changed the record since it was read: read it again.
            time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
        raise StoreError(
            f"deployment record {target!r} kept changing under {RECORD_UPDATE_ATTEMPTS} tries"
        )

    @contextlib.contextmanager
    def _record_lock(self, path: str) -> Iterator[None]:
        parent, name = path.rsplit("/", 1)
        os.makedirs(parent, exist_ok=True)
        fd = os.open(f"{parent}/.{name}.lock", os.O_RDWR | os.O_CREAT, 0o666)  # umask applies
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write_record(self, path: str, deployment: Deployment | None) -> None:
        if deployment is None:
            if self.fs.exists(path):
                self.fs.rm_file(path)
            return
        self._write_atomic(path, _encode_deployment(deployment))

    def _deployment_path(self, target: str) -> str:
        if not target or not all(c.isalnum() or c in "-_." for c in target) or target[0] == ".":
            raise StoreError(f"invalid target name {target!r}")
        return self._path("deployments", f"{target}.json")

    def _write_atomic(self, path: str, data: bytes) -> None:
        parent = path.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        if not self._local:
            self.fs.pipe_file(path, data)  # object stores replace a whole object at once
            return
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=parent)
        try:
            _chmod_like_created(Path(tmp), directory=False)  # mkstemp makes it 0600
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # -- retention -------------------------------------------------------------------------

    def protected(self) -> set[str]:
        """Versions retention never removes: pinned, deployed, and rollback targets."""
        keep = set(self.pinned())
        for d in self.deployments():
            keep.add(d.current)
            if d.previous:
                keep.add(d.previous)
        return keep

    @_store_op("pruning versions")
    def prune(self, keep: int, dry_run: bool = False) -> PruneResult:
        """Remove all but the newest `keep` versions, sparing protected ones."""
        if keep < 1:
            raise StoreError(f"keep must be at least 1, got {keep}")
        versions = self.list_versions()
        protected = self.protected()
        kept: list[VersionInfo] = []
        removed: list[VersionInfo] = []
        for index, info in enumerate(versions):
            (kept if index < keep or info.version in protected else removed).append(info)
        if not dry_run:
            for info in removed:
                self.remove_version(info.version)
        return PruneResult(removed=removed, kept=kept, dry_run=dry_run)

    @_store_op("removing a version")
    def remove_version(self, version: str) -> None:
        """Delete one version whole; a pinned, deployed or rollback version is refused."""
        if version in self.protected():
            raise StoreError(f"version {version} is pinned, deployed or a rollback target")
        directory = self._version_dir(version)
        if self._local:
            # Rename out of sight first so the version disappears whole, then delete.
            trash = Path(self._path("versions", f".trash-{version}-{uuid.uuid4().hex[:8]}"))
            os.rename(directory, trash)
            shutil.rmtree(trash)
        else:
            self.fs.rm_file(f"{directory}/{METADATA_FILE}")  # uncommit first
            self.fs.rm(directory, recursive=True)
        log.info("pruned version %s", version)

    @_store_op("cleaning up after interrupted writers")
    def clean_staging(self, older_than_seconds: float = 3600) -> list[str]:
        """Remove what writers that died mid-write left behind (never visible as versions).

        Only leftovers older than `older_than_seconds` go, so a writer still at work is spared.
        """
        cutoff = time.time() - older_than_seconds
        if not self._local:
            return self._clean_uncommitted(cutoff)
        base = Path(self._path("versions"))
        if not base.exists():
            return []
        stale = [
            p
            for p in base.iterdir()
            if p.name.startswith((".staging-", ".trash-")) and p.stat().st_mtime < cutoff
        ]
        for path in stale:
            shutil.rmtree(path, ignore_errors=True)
        return [str(p) for p in stale]

    def _clean_uncommitted(self, cutoff: float) -> list[str]:
        """Object stores: version folders without metadata.json whose files are all old.

        One listing with each object's time (one request per thousand objects on S3), not a
        request per version and per file.
        """
        base = self._path("versions")
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return []
        folders: dict[str, dict[str, Any]] = {}
        for path, info in found.items():
            # Only objects count: an emptied prefix can linger in an S3 listing for a while.
            parts = path.removeprefix(f"{base}/").split("/")
            if path == parts[0] or len(parts) < 2 or parts[0].startswith("."):
                continue
            if info.get("type") == "file":
                folders.setdefault(parts[0], {})[path] = info
        removed = []
        for version, files in sorted(folders.items()):
            directory = f"{base}/{version}"
            if f"{directory}/{METADATA_FILE}" in files:
                continue  # committed
            if all(self._modified(path, info) < cutoff for path, info in files.items()):
                self.fs.rm(sorted(files))
                removed.append(directory)
        return removed

    def _modified(self, path: str, info: Mapping[str, Any]) -> float:
        """When an object was written, from its listing entry where the listing says."""
        stamp = info.get("LastModified")
        if isinstance(stamp, datetime):
            return stamp.timestamp()
        return self.fs.modified(path).timestamp()


def _parse_deployment(data: bytes, target: str) -> Deployment:
    try:
        return Deployment(**json.loads(data))
    except (ValueError, TypeError) as err:
        raise IntegrityError(f"deployment record {target!r} is unreadable: {err}") from err


def _encode_deployment(deployment: Deployment) -> bytes:
    return json.dumps(deployment.__dict__, indent=2, sort_keys=True).encode() + b"\n"


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _lineage_file(record: LineageRecord) -> tuple[str, bytes]:
    """A lineage record's file: named by its time (sortable) and a random part (unique)."""
    stamp = record.stored.replace("-", "").replace(":", "")
    name = f"{stamp}-{uuid.uuid4().hex[:8]}.json"
    body = record.model_dump(mode="json", exclude_unset=True)
    return name, json.dumps(body, indent=2, sort_keys=True).encode() + b"\n"


def _is_lineage(name: str) -> bool:
    return name.endswith(".json") and not name.startswith(".")


def _stored_of(name: str) -> str:
    """The time in a lineage file name (20261128T194500.123456Z-...), as an ISO time."""
    stamp = name.split("-", 1)[0]
    return f"{stamp[0:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[9:11]}:{stamp[11:13]}:{stamp[13:]}"


def _umask() -> int:
    """The process umask, read without changing it where Linux allows."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _chmod_like_created(path: Path, *, directory: bool) -> None:
    """Give a temp file or folder the mode an ordinary create would: umask, setgid kept."""
    mode = (0o777 if directory else 0o666) & ~_umask()
    if directory:
        mode |= path.stat().st_mode & 0o2000  # inherited from a setgid parent
    os.chmod(path, mode)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
