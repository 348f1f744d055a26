"""Retention: prune old versions from the store (and, with the image build, the registry)."""

from __future__ import annotations

from flows.store import ArtifactStore, PruneResult


def prune_versions(store: ArtifactStore, keep: int, dry_run: bool = False) -> PruneResult:
    result = store.prune(keep, dry_run=dry_run)
    if not dry_run:
        store.clean_staging()
    return result
