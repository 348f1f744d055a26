"""What the store notes about its versions: lineage, pushed images, gate decisions, pins.

Records about a version live beside it and never create its folder: a record written while
a prune removes the version fails (FileNotFoundError, reported as the version being gone)
instead of leaving a folder that holds only records.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

from kiln.config.errors import VersionNotFound
from kiln.config.names import DEFAULT_NAME, is_name
from kiln.store.backend import Backend
from kiln.store.layout import (
    LINEAGE_DIR,
    NAMES_DIR,
    encode_json,
    is_lineage,
    now,
    pins_dir,
    version_dir,
)
from kiln.store.schema import parse_lineage
from kiln.store.versions import Versions


class Records:
    def __init__(self, backend: Backend, versions: Versions) -> None:
        self.backend = backend
        self.versions = versions

    def _write_beside(self, version: str, name: str, data: bytes) -> None:
        directory = version_dir(version)
        try:
            self.backend.write(f"{directory}/{name}", data, inside=directory)
        except FileNotFoundError:
            raise VersionNotFound(
                f"version {version} was removed from {self.backend.url}"
            ) from None

    # -- lineage -----------------------------------------------------------------------------

    def lineage(self, version: str) -> list[dict[str, Any]]:
        """Every store of a version, oldest first: when, and from which data."""
        version = self.versions.resolve(version)
        directory = f"{version_dir(version)}/{LINEAGE_DIR}"
        records = []
        for name in filter(is_lineage, self.backend.listdir(directory)):
            raw = self.backend.read(f"{directory}/{name}")
            record = parse_lineage(raw, f"version {version}: lineage {name}")
            records.append(record.model_dump(mode="json", exclude_unset=True))
        return records

    # -- images ------------------------------------------------------------------------------

    def record_image(self, version: str, image_ref: str) -> None:
        """Remember an image pushed for this version (`registry/repo@sha256:...`)."""
        version = self.versions.resolve(version)
        # The marker holds when it was recorded, so the latest build can be told apart.
        stamp = str(time.time_ns()).encode()
        self._write_beside(version, f"images/{quote(image_ref, safe='')}", stamp)

    def latest_image_ref(
        self, version: str, keep: Callable[[str], bool] | None = None
    ) -> str | None:
        """The digest-pinned image recorded last for a version (None when there is none);
        with `keep`, the last of those it keeps (one model name's repository)."""
        directory = f"{version_dir(self.versions.resolve(version))}/images"
        newest: tuple[int, str] | None = None
        names = [n for n in self.backend.listdir(directory) if not n.startswith(".")]
        raw = self.backend.read_many([f"{directory}/{name}" for name in names])
        for name in names:
            ref = unquote(name)
            if "@sha256:" not in ref or f"{directory}/{name}" not in raw:
                continue
            if keep is not None and not keep(ref):
                continue
            text = raw[f"{directory}/{name}"].strip()
            stamp = int(text) if text.isdigit() else 0  # recorded before stamps: oldest
            if newest is None or (stamp, ref) > newest:
                newest = (stamp, ref)
        return newest[1] if newest else None

    def image_refs(self, version: str) -> list[str]:
        names = self.backend.listdir(f"{version_dir(version)}/images")
        return sorted(unquote(n) for n in names if not n.startswith("."))

    # -- champion gate decisions -------------------------------------------------------------

    def record_decision(self, version: str, decision: Mapping[str, Any]) -> None:
        """Keep one champion/challenger decision about a version, beside it (an audit trail).

        metadata.json stays as stored (it is baked into the image); a version can be judged
        again later (refused, then forced), so each decision is its own file, oldest first.
        """
        version = self.versions.resolve(version)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        record = encode_json({**decision, "decided": now()})
        self._write_beside(version, f"decisions/{stamp}-{uuid.uuid4().hex[:6]}.json", record)

    def decisions(self, version: str) -> list[dict[str, Any]]:
        """Every decision recorded about a version, oldest first."""
        directory = f"{version_dir(version)}/decisions"
        names = [n for n in self.backend.listdir(directory) if n.endswith(".json")]
        return [json.loads(self.backend.read(f"{directory}/{n}")) for n in names]

    # -- pins --------------------------------------------------------------------------------

    def pin(self, version: str, name: str = DEFAULT_NAME) -> str:
        version = self.versions.resolve(version, name)
        self.backend.write(f"{pins_dir(name)}/{version}", b"")
        return version

    def unpin(self, version: str, name: str = DEFAULT_NAME) -> str:
        version = self.versions.resolve(version)
        self.backend.remove([f"{pins_dir(name)}/{version}"])
        return version

    def pinned(self, name: str = DEFAULT_NAME) -> list[str]:
        return [n for n in self.backend.listdir(pins_dir(name)) if not n.startswith(".")]

    def names(self) -> list[str]:
        """Model names with records of their own (pins, deployments) beside the default."""
        return [n for n in self.backend.listdir(NAMES_DIR) if is_name(n)]
