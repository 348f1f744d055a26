"""The one small interface the store's parts use to reach their bytes, and how one is opened.

Two back ends implement it: a local folder (kiln/store/local.py: staged renames, file locks,
no symbolic link ever followed) and an object store through fsspec (kiln/store/remote.py:
metadata.json written last and create-only, ETag-conditional records on S3). Paths are
relative to the store's root (`versions/<id>/model.onnx`); a back end never reaches outside
it. The parts above (versions, records, deployments, pruning) hold no `if local` branches:
what differs between back ends is exactly what this interface names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

import fsspec


@dataclass(frozen=True)
class Entry:
    """One thing found below a folder: a file, a folder, or a symbolic link (never followed)."""

    path: str  # relative to the store's root
    kind: Literal["file", "dir", "link"]
    modified: float  # seconds since the epoch


class Backend(Protocol):
    url: str
    root: str  # the root as the back end's filesystem names it (a folder, bucket/prefix)
    fs: fsspec.AbstractFileSystem  # for tools and tests that look at the raw files
    local: bool
    # Whether a version folder is filled in place (object stores): then a folder without
    # metadata.json may be a writer at work, not a leftover, until it is STALE_SECONDS old.
    writes_in_place: bool
    transport_errors: tuple[type[BaseException], ...]

    def read(self, path: str) -> bytes:
        """A file's bytes; FileNotFoundError when it is absent."""
        ...

    def read_many(self, paths: list[str]) -> dict[str, bytes]:
        """The bytes of each file that can be read (in one batch where the store allows)."""
        ...

    def exists(self, path: str) -> bool: ...

    def listdir(self, path: str) -> list[str]:
        """The names in a folder, sorted; [] when there is no such folder."""
        ...

    def walk(self, path: str) -> list[Entry]:
        """Everything below a folder (one listing on an object store); [] when absent."""
        ...

    def write(self, path: str, data: bytes, *, inside: str | None = None) -> None:
        """Write a whole file, replacing it at once. With `inside`, that folder must exist
        already (FileNotFoundError if not): only folders below it are created."""
        ...

    def remove(self, paths: list[str]) -> None:
        """Remove files; absent ones are no error."""
        ...

    def publish(self, directory: str, files: Mapping[str, bytes]) -> None:
        """Make a folder of files appear whole, `metadata.json` its commit: a reader sees all
        of it or none; of two writers of the same folder the first commit stands."""
        ...

    def discard(self, directory: str) -> None:
        """Remove a published folder whole: readers stop seeing it at once."""
        ...

    def remove_tree(self, directory: str, files: list[str]) -> None:
        """Remove a leftover folder (an unpublished one; `files` as `walk` found them)."""
        ...

    def update(self, path: str, change: Callable[[bytes | None], bytes | None]) -> bytes | None:
        """Read-modify-write of one small file that never loses a concurrent writer's change
        (None read: absent; None returned: remove it). Returns what was written."""
        ...
