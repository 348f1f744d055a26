"""The store's object-store back end, through fsspec (S3 through s3fs, and any other).

Objects cannot be renamed into place as a whole folder (s3fs's recursive move is copy then
delete, and fails half-way), so a version's files are written in place with metadata.json
last: that object is the commit, created only if absent on S3 (of two writers of one model,
the first commit stands), and readers ignore a folder without it. A writer that dies before
the commit leaves objects no reader lists; they are removed once they are old enough that no
writer can still be at work on them. On S3, records change by a conditional write on the
ETag that was read, so concurrent rollouts never lose a record; other filesystems have no
conditional write, and there the last writer wins.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import fsspec

from kiln.config.errors import StoreError
from kiln.store import s3 as store_s3
from kiln.store.backend import Entry
from kiln.store.layout import METADATA_FILE, TOMBSTONE

# Tries of a record's read-modify-write before giving up on a busy record.
RECORD_UPDATE_ATTEMPTS = 20


class ObjectBackend:
    local = False
    writes_in_place = True
    transport_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, url: str, root: str, fs: fsspec.AbstractFileSystem) -> None:
        self.url, self.root, self.fs = url, root, fs

    def _abs(self, path: str) -> str:
        return f"{self.root}/{path}" if path else self.root

    def read(self, path: str) -> bytes:
        return bytes(self.fs.cat_file(self._abs(path)))

    def read_many(self, paths: list[str]) -> dict[str, bytes]:
        if not paths:
            return {}
        names = {self._abs(p): p for p in paths}
        # One batch (concurrent on S3); what cannot be read is left out.
        raw = self.fs.cat(list(names), on_error="omit")
        return {names[name]: data for name, data in raw.items() if name in names}

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(self._abs(path)))

    def listdir(self, path: str) -> list[str]:
        try:
            found = self.fs.ls(self._abs(path), detail=False)
        except FileNotFoundError:
            return []
        return sorted(str(p).rstrip("/").rsplit("/", 1)[-1] for p in found)

    def walk(self, path: str) -> list[Entry]:
        """Objects only (one listing): an emptied prefix can linger in an S3 listing."""
        base = self._abs(path)
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return []
        entries = []
        for name, info in found.items():
            if info.get("type") == "file" and name.startswith(f"{base}/"):
                relative = f"{path}/{name.removeprefix(f'{base}/')}"
                entries.append(Entry(relative, "file", self._modified(name, info)))
        return entries

    def _modified(self, name: str, info: Mapping[str, Any]) -> float:
        """When an object was written, from its listing entry where the listing says."""
        for key in ("LastModified", "mtime", "created"):
            stamp = info.get(key)
            if isinstance(stamp, datetime):
                return stamp.timestamp()
            if isinstance(stamp, int | float):
                return float(stamp)
        return float(self.fs.modified(name).timestamp())

    def write(self, path: str, data: bytes, *, inside: str | None = None) -> None:
        # No folders to need: a record written into a version pruned meanwhile is an object
        # no reader lists; the caller checks the version is still committed.
        self.fs.makedirs(self._abs(path).rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(self._abs(path), data)  # an object is replaced whole at once

    def remove(self, paths: list[str]) -> None:
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self._abs(path))

    def publish(self, directory: str, files: Mapping[str, bytes]) -> None:
        self.fs.makedirs(self._abs(directory), exist_ok=True)
        # The same id means the same bytes, so a concurrent writer of this version rewrites
        # identical objects. They are not deleted on failure: another writer of the same
        # model may be about to commit them (the clean-up of stale leftovers removes them).
        for name, data in files.items():
            if name != METADATA_FILE:
                self.fs.pipe_file(self._abs(f"{directory}/{name}"), data)
        self._commit(f"{directory}/{METADATA_FILE}", files[METADATA_FILE])

    def _commit(self, path: str, data: bytes) -> None:
        self.fs.pipe_file(self._abs(path), data)

    def discard(self, directory: str) -> None:
        self.fs.rm_file(self._abs(f"{directory}/{METADATA_FILE}"))  # uncommit first
        self.fs.rm(self._abs(directory), recursive=True)

    def remove_tree(self, directory: str, files: list[str]) -> None:
        # Exactly the objects found old, never one a writer has added since.
        self.fs.rm(sorted(self._abs(f) for f in files))

    def update(self, path: str, change: Callable[[bytes | None], bytes | None]) -> bytes | None:
        try:
            before: bytes | None = self.read(path)
        except FileNotFoundError:
            before = None
        after = change(before)
        if after is not None:
            self.write(path, after)
        elif before is not None:
            self.remove([path])
        return after


class S3Backend(ObjectBackend):
    def __init__(self, url: str, root: str, fs: fsspec.AbstractFileSystem) -> None:
        super().__init__(url, root, fs)
        # botocore retries each call `attempts` times; s3fs's own loop (5 tries of those,
        # for a server that hangs up) would multiply them into minutes.
        fs.retries = 1
        self.transport_errors = store_s3.transport_errors()

    def _commit(self, path: str, data: bytes) -> None:
        # False: committed by another writer first; the same id means the same bytes.
        store_s3.write_if(self.fs, self._abs(path), data, None)

    def discard(self, directory: str) -> None:
        metadata = self._abs(f"{directory}/{METADATA_FILE}")
        found = store_s3.read_with_etag(self.fs, metadata)
        if found is None:
            raise FileNotFoundError(metadata)
        # Tombstone the commit (only the one read: a concurrent remover's tombstone is no
        # matter), remove the files, then the tombstone: a writer of the same model cannot
        # commit while files are being deleted under it.
        store_s3.write_if(self.fs, metadata, TOMBSTONE, found[1])
        objects = [p for p in self.fs.find(self._abs(directory)) if p != metadata]
        if objects:
            self.fs.rm(objects)
        self.fs.rm_file(metadata)

    def update(self, path: str, change: Callable[[bytes | None], bytes | None]) -> bytes | None:
        for attempt in range(RECORD_UPDATE_ATTEMPTS):
            found = store_s3.read_with_etag(self.fs, self._abs(path))
            after = change(found[0] if found else None)
            if after is None:
                if found:
                    self.fs.rm_file(self._abs(path))
                return None
            etag = found[1] if found else None
            if store_s3.write_if(self.fs, self._abs(path), after, etag):
                return after
            # Another writer changed the record since it was read: read it again.
            time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
        raise StoreError(f"{path} kept changing under {RECORD_UPDATE_ATTEMPTS} tries")
