"""The versioned artifact store: the pipeline's checkpoint (a local folder or any fsspec URL).

`ArtifactStore` is a small facade over the store's jobs, each its own part:

    kiln/store/versions.py     storing a version whole, reading it verified, listing, latest
    kiln/store/records.py      lineage, image refs, gate decisions, pins
    kiln/store/deployments.py  deployment records (read-modify-write that loses nothing)
    kiln/store/pruning.py      retention and the clean-up of what interrupted writers left
    kiln/store/layout.py       paths, version ids and the values the store returns

and every part reaches its bytes through one back end (kiln/store/backend.py): a local
folder (kiln/store/local.py) or an object store through fsspec (kiln/store/remote.py, S3
with conditional writes). An S3 store that cannot be reached fails after a few bounded
retries with one StoreError that says what was being done.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import fsspec

from kiln.config.errors import KilnError, StoreError
from kiln.config.names import DEFAULT_NAME, check_name
from kiln.store import s3 as store_s3
from kiln.store.backend import Backend
from kiln.store.deployments import REASON_CHARS, ROLLED_BACK_KEPT, DeploymentRecords
from kiln.store.layout import (
    LABELS_FILE,
    LINEAGE_DIR,
    METADATA_FILE,
    MODEL_FILE,
    VERSION_ID_LENGTH,
    BrokenVersion,
    Deployment,
    PruneResult,
    StoredModel,
    VersionInfo,
    encode_labels,
    sha256_hex,
    version_id,
)
from kiln.store.local import LocalBackend
from kiln.store.pruning import Pruning
from kiln.store.records import Records
from kiln.store.remote import RECORD_UPDATE_ATTEMPTS, ObjectBackend, S3Backend
from kiln.store.versions import Versions

__all__ = [
    "LABELS_FILE",
    "LINEAGE_DIR",
    "METADATA_FILE",
    "MODEL_FILE",
    "REASON_CHARS",
    "RECORD_UPDATE_ATTEMPTS",
    "ROLLED_BACK_KEPT",
    "VERSION_ID_LENGTH",
    "ArtifactStore",
    "BrokenVersion",
    "Deployment",
    "PruneResult",
    "StoredModel",
    "VersionInfo",
    "encode_labels",
    "open_backend",
    "sha256_hex",
    "version_id",
]

P = ParamSpec("P")
R = TypeVar("R")


def open_backend(url: str, storage_options: Mapping[str, Any] | None, attempts: int) -> Backend:
    """The back end for a store URL: a local folder, S3, or another fsspec filesystem."""
    from fsspec.implementations.local import LocalFileSystem

    protocol = fsspec.core.split_protocol(url)[0] or "file"
    options = {**store_s3.storage_options(protocol, attempts), **(storage_options or {})}
    try:
        fs, path = fsspec.core.url_to_fs(url, **options)
    except (ImportError, ValueError) as err:
        raise StoreError(f"cannot open store {url}: {err}") from err
    root = path.rstrip("/")
    if isinstance(fs, LocalFileSystem):
        return LocalBackend(url, root, fs)
    if protocol in store_s3.S3_PROTOCOLS:
        return S3Backend(url, root, fs)
    return ObjectBackend(url, root, fs)


def _store_op(action: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Report a failure to reach the store as one StoreError that says what was being done."""

    def decorate(method: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(method)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            store = args[0]
            assert isinstance(store, ArtifactStore)
            if getattr(store._op, "active", False):  # inside another operation: it reports
                return method(*args, **kwargs)
            failures: tuple[type[BaseException], ...] = (OSError, *store.backend.transport_errors)
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
    """The store's facade: each method is one part's, named for what callers do."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        storage_options: Mapping[str, Any] | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        attempts: int = store_s3.DEFAULT_ATTEMPTS,
        name: str = DEFAULT_NAME,
        backend: Backend | None = None,
    ) -> None:
        self.url = str(root)
        self.clock = clock  # what "now" is for `created` and deployment times (tests)
        self.name = check_name(name)  # the model name per-name methods work on
        self.backend = backend or open_backend(self.url, storage_options, attempts)
        self._op = threading.local()  # the outermost operation names a failure
        self.versions = Versions(self.backend, lambda: self.clock)
        self.records = Records(self.backend, self.versions)
        self.deploys = DeploymentRecords(self.backend, self.versions, lambda: self.clock)
        self.pruning = Pruning(self.backend, self.versions, self.records, self.deploys)

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The raw filesystem (tools and tests that look at the files themselves)."""
        return self.backend.fs

    @property
    def root(self) -> str:
        return self.backend.root

    @property
    def _local(self) -> bool:
        return self.backend.local

    def __repr__(self) -> str:
        return f"ArtifactStore({self.url!r}, name={self.name!r})"

    def named(self, name: str) -> ArtifactStore:
        """The same store, working on model `name` (one back end, one connection pool)."""
        if name == self.name:
            return self
        return ArtifactStore(self.url, clock=self.clock, name=name, backend=self.backend)

    @_store_op("listing model names")
    def names(self) -> list[str]:
        """Every model name in the store (the default one always)."""
        return self.pruning.names()

    # -- versions ----------------------------------------------------------------------------

    @_store_op("storing a version")
    def put(
        self, model_bytes: bytes, labels: Mapping[Any, str], metadata: Mapping[str, Any]
    ) -> str:
        """Store a model as this store's name; returns its version id. Storing the same model
        again (under any name) stores no bytes again: it adds a lineage record."""
        return self.versions.put(model_bytes, labels, metadata, self.name)

    @_store_op("reading a version")
    def exists(self, version: str) -> bool:
        return self.versions.exists(version)

    @_store_op("reading a version")
    def metadata(self, version: str) -> dict[str, Any]:
        return self.versions.metadata(version)

    @_store_op("reading a version")
    def get(self, version: str) -> StoredModel:
        """A version by id or prefix (of any name), or 'latest' (this name's newest)."""
        return self.versions.get(version, self.name if version == "latest" else None)

    @_store_op("exporting a version")
    def export_version(self, version: str, dest: str | os.PathLike[str]) -> Path:
        return self.versions.export_version(version, dest)

    @_store_op("finding a version")
    def resolve(self, version: str) -> str:
        """A full id, a unique prefix of one (any name's), or 'latest' (this name's)."""
        return self.versions.resolve(version, self.name if version == "latest" else None)

    @_store_op("finding a version")
    def resolve_own(self, version: str) -> str:
        """As `resolve`, and the version must have been stored under this store's name."""
        return self.versions.resolve(version, self.name)

    @_store_op("listing versions")
    def list_versions(self) -> list[VersionInfo]:
        """This name's complete, readable versions, newest (most recently stored) first."""
        return self.scan()[0]

    @_store_op("listing versions")
    def scan(
        self, verify: bool = False, every_name: bool = False
    ) -> tuple[list[VersionInfo], list[BrokenVersion]]:
        """Readable versions of this name (of every name with `every_name`), newest first,
        and the ones that cannot be used, with why; `verify` also checks each version's
        files against their recorded sha256."""
        name = None if every_name else self.name
        return self.versions.scan(set(self.records.pinned(self.name)), name=name, verify=verify)

    # -- records -----------------------------------------------------------------------------

    @_store_op("reading a version's lineage")
    def lineage(self, version: str) -> list[dict[str, Any]]:
        return self.records.lineage(version)

    @_store_op("recording an image")
    def record_image(self, version: str, image_ref: str) -> None:
        self.records.record_image(version, image_ref)

    @_store_op("reading a version's images")
    def latest_image_ref(
        self, version: str, keep: Callable[[str], bool] | None = None
    ) -> str | None:
        return self.records.latest_image_ref(version, keep)

    @_store_op("listing a version's images")
    def image_refs(self, version: str) -> list[str]:
        return self.records.image_refs(version)

    @_store_op("recording a decision")
    def record_decision(self, version: str, decision: Mapping[str, Any]) -> None:
        """Keep a champion gate decision about a version, as this name's."""
        self.records.record_decision(version, {**decision, "name": self.name})

    @_store_op("reading a version's decisions")
    def decisions(self, version: str) -> list[dict[str, Any]]:
        """This name's decisions about a version, oldest first (one recorded before names
        were: the default name's). Another name judging the same model is its own affair."""
        own = self.records.decisions(version)
        return [d for d in own if d.get("name", DEFAULT_NAME) == self.name]

    @_store_op("pinning a version")
    def pin(self, version: str) -> str:
        """Pin a version of this name: retention keeps it."""
        return self.records.pin(version, self.name)

    @_store_op("unpinning a version")
    def unpin(self, version: str) -> str:
        return self.records.unpin(version, self.name)

    @_store_op("listing pins")
    def pinned(self) -> list[str]:
        return self.records.pinned(self.name)

    # -- deployments (this name's) -----------------------------------------------------------

    @_store_op("reading a deployment record")
    def deployment(self, target: str) -> Deployment | None:
        return self.deploys.deployment(target, self.name)

    @_store_op("listing deployment records")
    def deployments(self) -> list[Deployment]:
        return self.deploys.deployments(self.name)

    @_store_op("listing deployment records")
    def every_deployment(self) -> list[Deployment]:
        """Every name's deployment records, by name then target."""
        return [d for name in self.names() for d in self.deploys.deployments(name)]

    @_store_op("recording a deployment")
    def record_deployment(
        self, target: str, version: str, image: str, endpoint: str | None = None
    ) -> Deployment:
        return self.deploys.record_deployment(target, version, image, self.name, endpoint)

    @_store_op("recording a rollback")
    def record_rollback(self, target: str, version: str, reason: str) -> Deployment | None:
        return self.deploys.record_rollback(target, version, reason, self.name)

    @_store_op("restoring a deployment record")
    def restore_deployment(self, target: str, deployment: Deployment | None) -> None:
        self.deploys.restore_deployment(target, deployment, self.name)

    # -- retention ---------------------------------------------------------------------------

    @_store_op("reading what retention keeps")
    def protected(self) -> set[str]:
        """What retention never removes, for every name."""
        return self.pruning.protected()

    @_store_op("pruning versions")
    def prune(self, keep: int, dry_run: bool = False, every_name: bool = False) -> PruneResult:
        """Remove this name's versions (every name's with `every_name`) that no name keeps:
        each name keeps its newest `keep`, its pins, and what it deploys or may roll back to."""
        return self.pruning.prune(keep, dry_run, None if every_name else [self.name])

    @_store_op("removing a version")
    def remove_version(self, version: str) -> None:
        self.pruning.remove_version(version)

    @_store_op("cleaning up after interrupted writers")
    def clean_staging(self, older_than_seconds: float = 3600) -> list[str]:
        return self.pruning.clean_staging(older_than_seconds)
