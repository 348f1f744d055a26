"""Retention: old versions leave the store, and their images leave the registry.

Images go first: a failure part-way leaves versions in the store whose images may be gone
already, and the next prune finishes the job; the other order would leave images that no
stored version names any more, which nothing would ever delete.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from flows.image import (
    DEFAULT_BASE_REPOSITORY,
    RetentionResult,
    delete_pruned_images,
    protected_digests,
)
from flows.registry import Registry
from flows.store import ArtifactStore, PruneResult


@dataclass(frozen=True)
class Pruned:
    versions: PruneResult
    images: RetentionResult | None  # None when no registry was given


def prune_versions(
    store: ArtifactStore,
    keep: int,
    *,
    registry: Registry | None = None,
    dry_run: bool = False,
    base_repositories: Iterable[str] = (DEFAULT_BASE_REPOSITORY,),
) -> Pruned:
    """Keep the newest `keep` versions plus pinned, deployed and rollback ones."""
    plan = store.prune(keep, dry_run=True)
    images = None
    if registry is not None and any(info.images for info in plan.removed):
        images = delete_pruned_images(
            registry,
            plan.removed,
            protected=protected_digests(store, plan.kept),
            base_repositories=base_repositories,
            dry_run=dry_run,
        )
    if not dry_run:
        for info in plan.removed:
            store.remove_version(info.version)
        store.clean_staging()
    return Pruned(PruneResult(plan.removed, plan.kept, dry_run), images)
