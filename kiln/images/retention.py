"""Retention: old versions leave the store, and their images leave the registry.

Images go first: a failure part-way leaves versions in the store whose images may be gone
already, and the next prune finishes the job; the other order would leave images that no
stored version names any more, which nothing would ever delete.

A prune holds the store's lock (kiln/infra/locks.py), the one builds and deploys hold too: it
never removes a version that another run is building or rolling out, and two prunes take
turns instead of removing the same version twice.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kiln.config.errors import StoreError
from kiln.images.build import DEFAULT_BASE_REPOSITORY
from kiln.images.registry import Registry
from kiln.infra.locks import Locks, store_key, store_locks
from kiln.store.artifact_store import ArtifactStore, PruneResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetentionResult:
    deleted: list[str]  # registry/repo@sha256:... removed from the registry
    kept: list[str]  # refs of pruned versions left in place (deployed, rollback, base...)


def protected_digests(store: Any, kept: Iterable[Any]) -> set[str]:
    """Digests that must stay: what any target runs, each target's rollback image, and the
    images of the versions the store keeps."""
    keep = set()
    for deployment in store.every_deployment():  # every name's
        for ref in (deployment.image, deployment.previous_image):
            if ref and "@" in ref:
                keep.add(ref.split("@", 1)[1])
    for info in kept:
        keep.update(ref.split("@", 1)[1] for ref in info.images if "@" in ref)
    return keep


def base_digests(registry: Registry, repositories: Iterable[str]) -> set[str]:
    """Digests of every serving base tag (`base-*`) in the given repositories."""
    found = set()
    for repository in repositories:
        for tag in registry.tags(repository):
            if tag.startswith("base-"):
                digest = registry.manifest_digest(repository, tag)
                if digest:
                    found.add(digest)
    return found


def delete_pruned_images(
    registry: Registry,
    removed: Iterable[Any],
    *,
    protected: set[str],
    base_repositories: Iterable[str] = (DEFAULT_BASE_REPOSITORY,),
    dry_run: bool = False,
) -> RetentionResult:
    """Delete, by digest, the images of versions the store pruned.

    Never one whose digest is protected (deployed, rollback target, kept version) nor a
    serving base in use. Space comes back with the registry's garbage collection
    (`scripts/infra.sh gc`).
    """
    removed = list(removed)
    repos = {ref.split("@")[0].split("/", 1)[1] for info in removed for ref in info.images}
    bases = base_digests(registry, {*base_repositories, *repos})
    deleted, kept = [], []
    for info in removed:
        for ref in info.images:
            host, _, rest = ref.partition("/")
            if host != registry.host or "@" not in rest:
                kept.append(ref)
                continue
            repository, digest = rest.split("@", 1)
            if digest in protected or digest in bases:
                kept.append(ref)
                continue
            if not dry_run:
                registry.delete_manifest(repository, digest)
            deleted.append(ref)
    return RetentionResult(deleted, kept)


@dataclass(frozen=True)
class Pruned:
    versions: PruneResult
    images: RetentionResult | None  # None when no registry was given
    # What interrupted writers left in the store, removed (never on a dry run).
    cleaned: list[str] = field(default_factory=list)


def prune_versions(
    store: ArtifactStore,
    keep: int,
    *,
    registry: Registry | None = None,
    dry_run: bool = False,
    base_repositories: Iterable[str] = (DEFAULT_BASE_REPOSITORY,),
    locks: Locks | None = None,
    every_name: bool = False,
) -> Pruned:
    """Keep the newest `keep` versions of each name plus pinned, deployed and rollback ones;
    remove the rest of the store's name (of every name with `every_name`)."""
    if dry_run:  # changes nothing: no need to wait for a build or a deploy
        return _prune_locked(store, keep, registry, dry_run, base_repositories, every_name)
    locks = locks or store_locks(store)
    with contextlib.ExitStack() as held:  # every name's: no build or deploy of any name runs
        for name in store.names():
            held.enter_context(locks.hold(store_key(store.url, name), f"pruning {store.url}"))
        return _prune_locked(store, keep, registry, dry_run, base_repositories, every_name)


def _prune_locked(
    store: ArtifactStore,
    keep: int,
    registry: Registry | None,
    dry_run: bool,
    base_repositories: Iterable[str],
    every_name: bool,
) -> Pruned:
    plan = store.prune(keep, dry_run=True, every_name=every_name)
    images = None
    if registry is not None and any(info.images for info in plan.removed):
        images = delete_pruned_images(
            registry,
            plan.removed,
            protected=protected_digests(store, plan.kept),
            base_repositories=base_repositories,
            dry_run=dry_run,
        )
    cleaned = []
    if not dry_run:
        for info in plan.removed:
            remove_version(store, info.version)
        cleaned = store.clean_staging()
    return Pruned(PruneResult(plan.removed, plan.kept, dry_run), images, cleaned)


def remove_version(store: ArtifactStore, version: str) -> None:
    """Remove one version; one that is already gone (a prune without the lock) is no error."""
    try:
        store.remove_version(version)
    except (StoreError, FileNotFoundError):
        if store.exists(version):
            raise
        log.info("version %s was already removed", version)
