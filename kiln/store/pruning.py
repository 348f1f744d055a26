"""Pruning: old versions leave the store whole, and what interrupted writers left is cleared.

Retention never removes a pinned or deployed version, nor a target's rollback version. A
removed version disappears at once (renamed out of sight, or uncommitted first), then goes.
"""

from __future__ import annotations

import logging
import time

from kiln.config.errors import StoreError
from kiln.config.names import DEFAULT_NAME
from kiln.store.backend import Backend
from kiln.store.deployments import DeploymentRecords
from kiln.store.layout import (
    LABELS_FILE,
    METADATA_FILE,
    MODEL_FILE,
    STALE_SECONDS,
    TOMBSTONE,
    VERSIONS,
    PruneResult,
    version_dir,
)
from kiln.store.records import Records
from kiln.store.versions import Versions, names_of

log = logging.getLogger(__name__)


class Pruning:
    def __init__(
        self,
        backend: Backend,
        versions: Versions,
        records: Records,
        deployments: DeploymentRecords,
    ) -> None:
        self.backend = backend
        self.versions = versions
        self.records = records
        self.deployments = deployments

    def names(self) -> list[str]:
        """Every model name the store knows: the default, names with records of their own,
        and names versions were stored under (read from one listing: no metadata read)."""
        listing = self.versions.listing()
        found = {DEFAULT_NAME, *self.records.names()}
        for version in listing.committed:
            found.update(names_of(listing.lineage.get(version, [])))
        return sorted(found)

    def protected(self) -> set[str]:
        """Versions retention never removes: what any name pinned, deploys, or may roll
        back to."""
        keep: set[str] = set()
        for name in {DEFAULT_NAME, *self.records.names()}:
            keep.update(self.records.pinned(name))
            for d in self.deployments.deployments(name):
                keep.add(d.current)
                if d.previous:
                    keep.add(d.previous)
        return keep

    def prune(
        self, keep: int, dry_run: bool = False, names: list[str] | None = None
    ) -> PruneResult:
        """Keep the newest `keep` versions of every name, and protected ones; remove the rest
        among the versions of `names` (every name when None). A version stored under two
        names stays while either keeps it."""
        if keep < 1:
            raise StoreError(f"keep must be at least 1, got {keep}")
        every_name = self.names()
        kept_by_a_name: set[str] = set()
        for name in every_name:
            newest, _ = self.versions.scan(set(), name=name)
            kept_by_a_name.update(info.version for info in newest[:keep])
        protected = self.protected() | kept_by_a_name
        pinned = {v for name in every_name for v in self.records.pinned(name)}
        versions, _ = self.versions.scan(pinned)
        if names is not None:
            versions = [info for info in versions if set(info.names) & set(names)]
        kept = [info for info in versions if info.version in protected]
        removed = [info for info in versions if info.version not in protected]
        if not dry_run:
            for info in removed:
                self.remove_version(info.version)
        return PruneResult(removed=removed, kept=kept, dry_run=dry_run)

    def remove_version(self, version: str) -> None:
        """Delete one version whole; a pinned, deployed or rollback version is refused."""
        if version in self.protected():
            raise StoreError(f"version {version} is pinned, deployed or a rollback target")
        self.backend.discard(version_dir(version))
        log.info("pruned version %s", version)

    def clean_staging(self, older_than_seconds: float = STALE_SECONDS) -> list[str]:
        """Remove what writers that died mid-write left behind (never visible as versions).

        Staging folders and uncommitted objects go once older than `older_than_seconds`, so
        a writer still at work is spared. A local version folder without metadata.json is
        never a writer at work (local writers stage elsewhere): it goes now. One listing
        with each object's time (one request per thousand objects on S3).
        """
        cutoff = time.time() - older_than_seconds
        files: dict[str, list[str]] = {}
        newest: dict[str, float] = {}
        keep: set[str] = set()  # committed versions, and links (never the store's to remove)
        for entry in self.backend.walk(VERSIONS):
            parts = entry.path.split("/")
            files.setdefault(parts[1], []).append(entry.path)
            newest[parts[1]] = max(newest.get(parts[1], 0.0), entry.modified)
            committed = parts[2:] == [METADATA_FILE] and not parts[1].startswith(".")
            if committed or (len(parts) == 2 and entry.kind == "link"):
                keep.add(parts[1])
        keep -= self._interrupted_removals(keep, files)
        removed = []
        for name, modified in sorted(newest.items()):
            hidden = name.startswith(".")
            if name in keep or (hidden and not name.startswith((".staging-", ".trash-"))):
                continue
            if modified < cutoff or not (hidden or self.backend.writes_in_place):
                self.backend.remove_tree(f"{VERSIONS}/{name}", files[name])
                removed.append(f"{self.backend.root}/{VERSIONS}/{name}")
        return removed

    def _interrupted_removals(self, committed: set[str], files: dict[str, list[str]]) -> set[str]:
        """Object-store versions whose removal stopped part-way (their tombstone is left)."""
        if not self.backend.writes_in_place:
            return set()
        partial = {
            name: f"{VERSIONS}/{name}/{METADATA_FILE}"
            for name in committed
            if not {f"{VERSIONS}/{name}/{MODEL_FILE}", f"{VERSIONS}/{name}/{LABELS_FILE}"}
            <= set(files.get(name, []))
        }
        raw = self.backend.read_many(list(partial.values()))
        return {name for name, path in partial.items() if raw.get(path) == TOMBSTONE}
