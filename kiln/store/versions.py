"""Versions: storing a model whole, reading it back verified, finding and listing versions.

Writes never expose half a version: the back end publishes a version's files with
metadata.json as the commit, and readers ignore a folder without it. Storing a model that is
already stored adds a lineage record (which data, when) and renews the version's age; if a
prune removes the version meanwhile, the model is stored whole again, never as a folder of
lineage alone.

Nothing read is trusted: metadata.json is validated against a schema (kiln/store/schema.py)
on every read, `get` checks model and labels against their recorded sha256 and recomputes
the version id from them, and `latest` is always a version whose files check out. A version
that cannot be read is reported by `scan` and skipped by listing, `latest` and retention, so
one bad folder never blocks the rest of the store.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from kiln.config.errors import IntegrityError, VersionNotFound
from kiln.config.names import DEFAULT_NAME
from kiln.store.backend import Backend
from kiln.store.layout import (
    LABELS_FILE,
    LINEAGE_DIR,
    METADATA_FILE,
    MODEL_FILE,
    STALE_SECONDS,
    TOMBSTONE,
    VERSIONS,
    BrokenVersion,
    StoredModel,
    VersionInfo,
    encode_json,
    encode_labels,
    is_lineage,
    lineage_file,
    model_of,
    now,
    sha256_hex,
    stored_of,
    version_dir,
    version_id,
)
from kiln.store.schema import CorruptVersion, LineageRecord, check_metadata, parse_metadata

log = logging.getLogger(__name__)

# Versions whose files `scan(verify=True)` reads in one batch (bounds the memory it takes).
VERIFY_BATCH = 16


@dataclass
class Listing:
    """What one listing of versions/ shows."""

    committed: dict[str, list[str]] = field(default_factory=dict)  # version -> image refs
    lineage: dict[str, list[str]] = field(default_factory=dict)  # version -> lineage names
    incomplete: dict[str, float] = field(default_factory=dict)  # no commit; newest change
    links: set[str] = field(default_factory=set)  # version folders that are links: never read
    hidden: dict[str, float] = field(default_factory=dict)  # .staging-/.trash- folders


class Versions:
    def __init__(self, backend: Backend, clock: Callable[[], Callable[[], datetime] | None]):
        self.backend = backend
        self._clock = clock  # the store's clock now (a test may set it after opening)

    # -- writing -----------------------------------------------------------------------------

    def put(
        self,
        model_bytes: bytes,
        labels: Mapping[Any, str],
        metadata: Mapping[str, Any],
        name: str = DEFAULT_NAME,
    ) -> str:
        labels_bytes = encode_labels(labels)
        version = version_id(model_bytes, labels_bytes)
        clock = self._clock()
        full_metadata = check_metadata(
            {
                **metadata,
                "version": version,
                "created": now(clock),
                "model_sha256": sha256_hex(model_bytes),
                "labels_sha256": sha256_hex(labels_bytes),
            },
            version,
        )
        # Microseconds: two stores within a second still order by their lineage.
        record = LineageRecord.of(full_metadata, now(clock, "microseconds"))
        lineage_name, lineage_bytes = lineage_file(record, name)
        if self.exists(version) and self._add_lineage(version, lineage_name, lineage_bytes):
            log.info("version %s is already stored; recorded this store (as %s)", version, name)
            return version
        files = {
            MODEL_FILE: model_bytes,
            LABELS_FILE: labels_bytes,
            f"{LINEAGE_DIR}/{lineage_name}": lineage_bytes,
            METADATA_FILE: encode_json(full_metadata),
        }
        # Whole, or committed by another writer of the same model first (the same bytes).
        self.backend.publish(version_dir(version), files)
        log.info("stored version %s", version)
        return version

    def _add_lineage(self, version: str, name: str, data: bytes) -> bool:
        """Record a re-store in an existing version; False if a prune removed it meanwhile.

        The record never creates the version's folder (a folder of lineage alone would block
        every later store of the model), and the version must still be committed after it."""
        directory = version_dir(version)
        try:
            self.backend.write(f"{directory}/{LINEAGE_DIR}/{name}", data, inside=directory)
        except FileNotFoundError:
            return False
        return self.exists(version)

    # -- reading -----------------------------------------------------------------------------

    def exists(self, version: str) -> bool:
        return self.backend.exists(f"{version_dir(version)}/{METADATA_FILE}")

    def metadata(self, version: str) -> dict[str, Any]:
        """A version's metadata.json, without reading or verifying the model."""
        try:
            raw = self.backend.read(f"{version_dir(version)}/{METADATA_FILE}")
        except FileNotFoundError:
            raise VersionNotFound(f"no version {version!r} in store {self.backend.url}") from None
        except OSError as err:
            # On a local store any other failure to read one file is that version's problem
            # (permissions, a link); on an object store it may be the connection.
            if not (self.backend.local or isinstance(err, IsADirectoryError | PermissionError)):
                raise
            raise CorruptVersion(f"version {version}: cannot read metadata.json: {err}") from None
        return self._parse(raw, version)

    def _parse(self, raw: bytes, version: str) -> dict[str, Any]:
        if raw == TOMBSTONE:
            raise VersionNotFound(f"version {version} is being removed from {self.backend.url}")
        return parse_metadata(raw, version)

    def get(self, version: str, name: str | None = None) -> StoredModel:
        """Read a version and verify every file against the sha256 recorded for it; 'latest'
        is the newest of model `name` (of any name when None)."""
        if version == "latest":
            return next(self._intact(name))
        version = self.resolve(version, name)
        for _ in range(2):
            metadata = self.metadata(version)
            model, labels = self._read_files(version)
            if model is not None and labels is not None:
                break
            # Missing, yet the version is there: pruned and stored again while it was read
            # (the same id, the same bytes): read it once more before calling it corrupt.
        return self._verified(version, metadata, model, labels)

    def _read_files(self, version: str) -> tuple[bytes | None, bytes | None]:
        """The model and labels as read (None: absent); a version a prune removed meanwhile is
        gone (VersionNotFound), not corrupt."""
        found: list[bytes | None] = []
        for name in (MODEL_FILE, LABELS_FILE):
            try:
                found.append(self.backend.read(f"{version_dir(version)}/{name}"))
            except FileNotFoundError:
                if not self.exists(version):
                    raise VersionNotFound(f"version {version} was removed while read") from None
                found.append(None)
            except OSError as err:
                if not self.backend.local:  # on an object store it may be the connection
                    raise
                raise CorruptVersion(f"version {version}: cannot read {name}: {err}") from None
        return found[0], found[1]

    def _verified(
        self, version: str, metadata: dict[str, Any], model: bytes | None, labels: bytes | None
    ) -> StoredModel:
        """The version, if its files match their recorded sha256 and hash to its id."""
        for name, data, key in (
            (MODEL_FILE, model, "model_sha256"),
            (LABELS_FILE, labels, "labels_sha256"),
        ):
            if data is None:
                raise IntegrityError(f"version {version}: {name} is missing")
            actual = sha256_hex(data)
            if actual != metadata[key]:
                raise IntegrityError(
                    f"version {version}: {name} has sha256 {actual[:16]}..., expected "
                    f"{metadata[key][:16]}... (the file was changed after it was stored)"
                )
        assert model is not None and labels is not None
        # The id is a hash of the content: a swapped model with an edited sha256 in metadata
        # passes the checks above but not this one.
        actual_id = version_id(model, labels)
        if actual_id != version:
            raise IntegrityError(
                f"version {version}: its model and labels hash to version {actual_id}, not "
                f"{version} (the files were replaced after it was stored)"
            )
        return StoredModel(version, model, json.loads(labels), metadata)

    def _intact(self, name: str | None) -> Iterator[StoredModel]:
        """Versions newest first whose files check out: `latest` is never a corrupt one."""
        versions, _ = self.scan(set(), name=name)
        for info in versions:
            try:
                yield self._verified(
                    info.version, self.metadata(info.version), *self._read_files(info.version)
                )
            except (IntegrityError, VersionNotFound) as err:
                log.warning("latest skips %s", err)
        of_name = f" of model {name!r}" if name is not None else ""
        raise VersionNotFound(
            f"store {self.backend.url} holds no {'intact ' if versions else ''}versions"
            f"{of_name} yet"
        )

    def export_version(self, version: str, dest: str | os.PathLike[str]) -> Path:
        """Write a verified copy of a version's three files into a local folder."""
        stored = self.get(version)
        out = Path(dest)
        out.mkdir(parents=True, exist_ok=True)
        (out / MODEL_FILE).write_bytes(stored.model_bytes)
        (out / LABELS_FILE).write_bytes(encode_labels(stored.labels))
        (out / METADATA_FILE).write_bytes(encode_json(stored.metadata))
        return out

    def resolve(self, version: str, name: str | None = None) -> str:
        """Accept a full id, a unique prefix of one, or 'latest' (model `name`'s newest)."""
        if version == "latest":
            return next(self._intact(name)).version
        found = self._find(version)
        if name is not None:
            names = names_of(self.backend.listdir(f"{version_dir(found)}/{LINEAGE_DIR}"))
            if name not in names:
                raise VersionNotFound(
                    f"version {found} is not a version of model {name!r}: it was stored as "
                    f"{', '.join(names)} (choose the name with --name or KILN_MODEL)"
                )
        return found

    def _find(self, version: str) -> str:
        if self.exists(version):
            return version
        listing = self.listing()
        if version in listing.links:
            raise CorruptVersion(
                f"version {version}: its folder is a symbolic link (nothing outside the store "
                "is ever read)"
            )
        matches = [v for v in sorted(listing.committed) if v.startswith(version)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise VersionNotFound(f"version prefix {version!r} is ambiguous: {', '.join(matches)}")
        raise VersionNotFound(f"no version {version!r} in store {self.backend.url}")

    # -- listing -----------------------------------------------------------------------------

    def listing(self) -> Listing:
        """Every version folder with its image refs and lineage names, from one listing (one
        request per thousand objects on S3)."""
        return read_listing(self.backend)

    def scan(
        self, pinned: set[str], *, name: str | None = None, verify: bool = False
    ) -> tuple[list[VersionInfo], list[BrokenVersion]]:
        """Readable versions (newest first) and the ones that cannot be used, with why; with
        `name`, only that model name's versions, aged by that name's stores.

        `verify` also checks every version's model and labels against their recorded sha256
        (one read of each; nothing is parsed): a corrupt model is reported, not listed."""
        listing = self.listing()
        if name is not None:
            listing.committed = {
                v: refs
                for v, refs in listing.committed.items()
                if name in names_of(listing.lineage.get(v, []))
            }
        paths = {f"{version_dir(v)}/{METADATA_FILE}": v for v in listing.committed}
        # One batch (concurrent on S3); a version pruned since the listing is left out.
        raw = self.backend.read_many(list(paths))
        infos: list[VersionInfo] = []
        broken = [BrokenVersion(v, _LINK_REASON) for v in sorted(listing.links)]
        broken += [BrokenVersion(v, _INCOMPLETE_REASON, "incomplete") for v in listing.incomplete]
        metadata: dict[str, dict[str, Any]] = {}
        for path, version in paths.items():
            try:
                # Left out of the batch: pruned meanwhile, or unreadable (then say why).
                meta = self._parse(raw[path], version) if path in raw else self.metadata(version)
            except VersionNotFound:
                continue
            except CorruptVersion as err:
                log.warning("skipping %s", err)
                broken.append(BrokenVersion(version, str(err)))
                continue
            metadata[version] = meta
        if verify:
            broken += self._check_files(metadata)
        for version, meta in metadata.items():
            files = sorted(listing.lineage.get(version, []))
            # A name's age: its own newest store (another name's store renews nothing here).
            own = [f for f in files if name is None or model_of(f) == name]
            infos.append(
                VersionInfo(
                    version=version,
                    created=meta["created"],
                    metrics=meta.get("metrics", {}),
                    pinned=version in pinned,
                    images=listing.committed[version],
                    # Renewed by a store after the first (which `created` already dates).
                    stored=stored_of(own[-1]) if own and own[-1] != files[0] else "",
                    names=names_of(files),
                )
            )
        infos.sort(key=lambda i: i.age_key, reverse=True)
        return infos, sorted(broken, key=lambda b: b.version)

    def _check_files(self, metadata: dict[str, dict[str, Any]]) -> list[BrokenVersion]:
        """Versions whose files fail their sha256 (dropped from `metadata`), in batches."""
        broken = []
        versions = sorted(metadata)
        for start in range(0, len(versions), VERIFY_BATCH):
            batch = versions[start : start + VERIFY_BATCH]
            paths = [
                f"{version_dir(v)}/{name}" for v in batch for name in (MODEL_FILE, LABELS_FILE)
            ]
            raw = self.backend.read_many(paths)
            for version in batch:
                directory = version_dir(version)
                model = raw.get(f"{directory}/{MODEL_FILE}")
                labels = raw.get(f"{directory}/{LABELS_FILE}")
                try:
                    self._verified(version, metadata[version], model, labels)
                except IntegrityError as err:
                    log.warning("%s", err)
                    broken.append(BrokenVersion(version, str(err)))
                    del metadata[version]
        return broken


_LINK_REASON = "its folder is a symbolic link (nothing outside the store is ever read)"
_INCOMPLETE_REASON = (
    "no metadata.json: left by a store that was interrupted or raced a prune; "
    "never listed or used, and `kiln prune` clears it"
)


def read_listing(backend: Backend) -> Listing:
    """Every version folder with its image refs and lineage names, from one listing."""
    found = Listing()
    committed: set[str] = set()
    images: dict[str, list[str]] = {}
    lineage: dict[str, list[str]] = {}
    newest: dict[str, float] = {}
    for entry in backend.walk(VERSIONS):
        parts = entry.path.split("/")[1:]
        name = parts[0]
        if name.startswith("."):  # staging or trash of a local writer
            if len(parts) == 1:
                found.hidden[name] = entry.modified
            continue
        newest[name] = max(newest.get(name, 0.0), entry.modified)
        if len(parts) == 1 and entry.kind == "link":
            found.links.add(name)
        elif parts[1:] == [METADATA_FILE]:
            committed.add(name)
        elif len(parts) == 3 and parts[1] == "images" and _visible(parts[2]):
            images.setdefault(name, []).append(unquote(parts[2]))
        elif len(parts) == 3 and parts[1] == LINEAGE_DIR and is_lineage(parts[2]):
            lineage.setdefault(name, []).append(parts[2])
    found.committed = {v: sorted(images.get(v, [])) for v in committed - found.links}
    found.lineage = {v: sorted(lineage.get(v, [])) for v in found.committed}
    # On an object store a folder without its commit may be a writer at work: it counts
    # as a leftover once it is old. A local writer stages elsewhere: here it is one now.
    cutoff = time.time() - STALE_SECONDS
    for name, modified in newest.items():
        uncommitted = name not in committed and name not in found.links
        if uncommitted and (not backend.writes_in_place or modified < cutoff):
            found.incomplete[name] = modified
    # A folder being pruned can be listed half-deleted: count it only if it is still there.
    for name in list(found.incomplete):
        if backend.exists(f"{version_dir(name)}/{METADATA_FILE}") or not backend.exists(
            version_dir(name)
        ):
            del found.incomplete[name]
    return found


def names_of(lineage_files: list[str]) -> tuple[str, ...]:
    """The model names a version was stored under (the default for one without lineage)."""
    return tuple(sorted({model_of(f) for f in lineage_files})) or (DEFAULT_NAME,)


def _visible(name: str) -> bool:
    return not name.startswith(".")  # a local writer's temporary file
