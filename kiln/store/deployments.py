"""Deployment records: what runs on each target, the rollback target, and rolled-back versions.

A record changes by read-modify-write through the back end (under a file lock on a local
folder, by a conditional write on the ETag that was read on S3), so concurrent rollouts
never lose each other's record.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from kiln.config.errors import IntegrityError
from kiln.config.names import DEFAULT_NAME
from kiln.store.backend import Backend
from kiln.store.layout import Deployment, deployment_path, deployments_dir, encode_json, now
from kiln.store.versions import Versions

# Rolled-back versions a deployment record keeps per target, and the length of each reason.
ROLLED_BACK_KEPT = 50
REASON_CHARS = 500


class DeploymentRecords:
    def __init__(
        self,
        backend: Backend,
        versions: Versions,
        clock: Callable[[], Callable[[], datetime] | None],
    ) -> None:
        self.backend = backend
        self.versions = versions
        self._clock = clock

    def deployment(self, target: str, name: str = DEFAULT_NAME) -> Deployment | None:
        try:
            return _parse(self.backend.read(deployment_path(target, name)), target, name)
        except FileNotFoundError:
            return None

    def deployments(self, name: str = DEFAULT_NAME) -> list[Deployment]:
        files = self.backend.listdir(deployments_dir(name))
        targets = [n.removesuffix(".json") for n in files if n.endswith(".json")]
        found = [self.deployment(t, name) for t in sorted(targets) if not t.startswith(".")]
        return [d for d in found if d is not None]

    def record_deployment(
        self,
        target: str,
        version: str,
        image: str,
        name: str = DEFAULT_NAME,
        endpoint: str | None = None,
    ) -> Deployment:
        """Record that `version` now runs on `target`; what ran before becomes the previous."""
        version = self.versions.resolve(version)
        stamp = now(self._clock())

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
                target, version, image, previous, previous_image, stamp, kept, name, endpoint
            )

        after = self._update(target, name, change)
        assert after is not None
        return after

    def record_rollback(
        self, target: str, version: str, reason: str, name: str = DEFAULT_NAME
    ) -> Deployment | None:
        """Note on `target`'s record that `version` failed there and was rolled back.

        Nothing is noted where nothing was ever recorded (there was nothing to roll back to).
        The newest ROLLED_BACK_KEPT are kept, each reason cut to one bounded line."""
        entry = {"version": version, "reason": reason[:REASON_CHARS], "at": now(self._clock())}

        def change(before: Deployment | None) -> Deployment | None:
            if before is None:
                return None
            others = [e for e in before.rolled_back if e["version"] != version]
            return replace(before, rolled_back=[*others, entry][-ROLLED_BACK_KEPT:])

        return self._update(target, name, change)

    def restore_deployment(
        self, target: str, deployment: Deployment | None, name: str = DEFAULT_NAME
    ) -> None:
        """Write a deployment record back as it was (None removes it)."""
        self._update(target, name, lambda _before: deployment)

    def _update(
        self,
        target: str,
        name: str,
        change: Callable[[Deployment | None], Deployment | None],
    ) -> Deployment | None:
        result: list[Deployment | None] = [None]

        def change_bytes(raw: bytes | None) -> bytes | None:
            after = change(None if raw is None else _parse(raw, target, name))
            result[0] = after
            return None if after is None else encode_json(after.__dict__)

        self.backend.update(deployment_path(target, name), change_bytes)
        return result[0]


def _parse(data: bytes, target: str, name: str) -> Deployment:
    try:
        # A record from before names carries none: it is the default name's, where it lies.
        return Deployment(**{**json.loads(data), "name": name})
    except (ValueError, TypeError) as err:
        raise IntegrityError(
            f"deployment record {target!r} of model {name!r} is unreadable: {err}"
        ) from err
