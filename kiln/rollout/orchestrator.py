"""Roll a stored version out to a target, prove it answers, and roll back by itself if not.

One sequence for every target: resolve the version and its image in the store, note what
serves now, ship (the target starts it, waits until it is ready and runs the smoke test
with the model's own sample input), then record it; on any failure ask the target to
restore what served before and raise RolloutError with the reason. Targets implement
kiln/rollout/target.py's `Target`.

Plain functions with their collaborators as parameters; no Prefect here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from kiln.config.errors import KilnError, RolloutError
from kiln.infra.locks import Locks, store_key, store_locks
from kiln.rollout.smoke import Caller, SmokeTestFailed, smoke_test
from kiln.rollout.target import Deployed, RolloutResult, Target, TargetStatus, is_transient

if TYPE_CHECKING:
    from kiln.store.artifact_store import ArtifactStore

log = logging.getLogger(__name__)


def pick_image(refs: list[str], version: str, repository: str | None = None) -> str:
    """The digest-pinned image recorded for a version (the newest registry's first).

    With `repository` (a model name's own, `kiln/wine`), only an image in that repository
    on any registry: a version shared by two names has one image per name, and each
    carries its own name."""
    pinned = [ref for ref in refs if "@sha256:" in ref]
    if repository is not None:
        pinned = [ref for ref in pinned if image_repository(ref) == repository]
    if not pinned:
        where = f" in {repository}" if repository is not None else ""
        raise RolloutError(
            f"rolling out {version}: no image pinned by digest is recorded for it{where} "
            f"(recorded: {refs or 'none'}); build it first with `kiln build {version}`"
        )
    return pinned[0]


def image_repository(ref: str) -> str:
    """The repository of `host[:port]/repo/path@sha256:...` (or `...:tag`)."""
    parts = ref.split("@", 1)[0].split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]  # the registry host
    parts[-1] = parts[-1].split(":", 1)[0]  # a tag
    return "/".join(parts)


def roll_out(
    store: ArtifactStore,
    version: str,
    target: Target,
    *,
    image: str | None = None,
    rolled_back: bool = False,
    ship_rolled_back: bool = False,
    locks: Locks | None = None,
    repository: str | None = None,
) -> RolloutResult:
    """Ship a stored version to `target`; on failure restore what served before and raise.

    Without `image` it ships the version's recorded image, from `repository` (the model
    name's own) when given (`pick_image`).

    A version that failed its smoke test on `target` and was rolled back is refused (the
    store's record says so, so a retry of any kind cannot ship it again) unless
    `ship_rolled_back`. Holds the store's lock (kiln/infra/locks.py), as builds and prunes do:
    two deploys take turns and no prune removes the version while it rolls out."""
    locks = locks or store_locks(store)
    with locks.hold(store_key(store.url, store.name), f"deploying {version} {target.where}"):
        return _roll_out_locked(
            store, version, target, image, rolled_back, ship_rolled_back, repository
        )


def _roll_out_locked(
    store: ArtifactStore,
    version: str,
    target: Target,
    image: str | None,
    rolled_back: bool,
    ship_rolled_back: bool = False,
    repository: str | None = None,
) -> RolloutResult:
    version, image, sample_input = _resolve(store, version, image, repository)
    if not ship_rolled_back:
        _refuse_rolled_back(store, target, version)
    before = target.current()
    log.info(
        "rolling out %s (%s) %s; serving now: %s",
        version,
        image,
        target.where,
        before.version if before else "nothing",
    )

    def smoke(call: Caller) -> None:
        smoke_test(call, version, sample_input)

    try:
        endpoint = target.ship(version, image, smoke)
    except Exception as err:  # any failure, ours or a client's: put the good one back
        reason = str(err) if isinstance(err, SmokeTestFailed | KilnError) else _named(err)
        log.error("rollout of %s %s failed: %s", version, target.where, reason)
        message = f"rolling out {version} {target.where}: {reason}"
        good = rollback_target(store, target.name, version)
        restored, back = _restore(target, good)
        if good is not None and _failed_smoke_test(err):
            _record_rollback(store, target.name, version, reason)
        if back is not None:  # the record's previous, when it named the failed one
            _record(store, target, str(back.version), str(back.image))
        raise RolloutError(f"{message}; {restored}") from err
    _record(store, target, version, image)
    return RolloutResult(
        target.name,
        version,
        image,
        endpoint,
        before.version if before else None,
        before.image if before else None,
        rolled_back,
    )


def roll_back(store: ArtifactStore, target: Target, *, locks: Locks | None = None) -> RolloutResult:
    """Ship the version that ran on `target` before the current one, with its image."""
    locks = locks or store_locks(store)
    with locks.hold(
        store_key(store.url, store.name), f"rolling {target.name} back"
    ):  # roll_out re-enters
        version, image = previous_of(store, target.name)
        log.info("rolling %s back to %s (%s)", target.name, version, image)
        return roll_out(store, version, target, image=image, rolled_back=True, locks=locks)


def status(store: ArtifactStore, name: str, target: Callable[[], Target]) -> TargetStatus:
    """The store's record for `name` and what the target (built by `target()`) reports."""
    recorded = store.deployment(name)
    try:
        live = target().live()
    except Exception as err:  # an unreachable engine or cluster is a status, not a crash
        return TargetStatus(name, recorded, [], _named(err))
    return TargetStatus(name, recorded, live)


def serving_problem(store: ArtifactStore, version: str, target: Target) -> str | None:
    """None when `target` runs `version` and it passes its smoke test now; else what is wrong.

    For a run whose model the store records as already serving: before it ends with
    "nothing to do", proof that the target still answers with it."""
    now = target.current()
    if now is None or now.version != version:
        running = now.version if now is not None else "nothing"
        return f"{target.name} runs {running}, not {version}"
    sample_input = store.get(version).metadata.get("sample_input")
    try:
        target.check(lambda call: smoke_test(call, version, sample_input))
    except Exception as err:  # whatever the reason, it does not serve: ship it again
        return f"{target.endpoint} does not answer as {version} ({err})"
    return None


def previous_of(store: ArtifactStore, target: str) -> tuple[str, str]:
    """The version and image that ran on `target` before the current one."""
    record = store.deployment(target)
    if record is None:
        raise RolloutError(f"rolling back {target}: nothing was ever deployed there")
    if not record.previous or not record.previous_image:
        raise RolloutError(
            f"rolling back {target}: only {record.current} was ever deployed, no previous version"
        )
    return record.previous, record.previous_image


def rollback_target(store: ArtifactStore, target: str, shipping: str) -> Deployed | None:
    """The last good version the store recorded for `target`, never the one being shipped.

    The record, not what the target runs now: a run that died after changing the target
    leaves the target running a version that never passed, and its retry must not call
    that one "previous".
    """
    record = store.deployment(target)
    if record is None:
        return None
    if record.current != shipping:
        return Deployed(record.current, record.image)
    if record.previous and record.previous != shipping:
        return Deployed(record.previous, record.previous_image)
    return None


def _restore(target: Target, before: Deployed | None) -> tuple[str, Deployed | None]:
    """What the restore did (one phrase), and `before` when it serves again."""
    if before is None:
        return f"nothing to restore (no other good version is recorded for {target.name})", None
    log.warning("restoring %s (%s)", before.version, before.image)
    try:
        return target.restore(before), before
    except Exception as err:
        return f"restoring {before.version} ({before.image}) failed too: {err}", None


def _refuse_rolled_back(store: ArtifactStore, target: Target, version: str) -> None:
    record = store.deployment(target.name)
    reason = record.rolled_back_reason(version) if record is not None else None
    if reason is not None:
        raise RolloutError(
            f"not rolling out {version} {target.where}: it failed its smoke test there and "
            f"was rolled back ({reason}); ship a new version, or ship this one anyway with "
            "--ship-rolled-back (flow parameter ship_rolled_back)"
        )


def _failed_smoke_test(err: BaseException) -> bool:
    """True when `err`, or an error it was raised from, is a failed smoke test that a
    retry would not cure (a pod proxy that did not answer is transient, not the model's)."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, SmokeTestFailed):
            return not is_transient(err)
        seen = seen.__cause__
    return False


def _record_rollback(store: ArtifactStore, target: str, version: str, reason: str) -> None:
    try:
        store.record_rollback(target, version, reason)
    except KilnError as err:  # the rollout's own error is the one to report
        log.error("recording that %s was rolled back on %s failed: %s", version, target, err)


def _resolve(
    store: ArtifactStore, version: str, image: str | None, repository: str | None = None
) -> tuple[str, str, Any]:
    try:
        stored = store.get(version)
    except KilnError as err:
        raise RolloutError(f"rolling out {version}: {err}") from err
    version = stored.version
    chosen = image or pick_image(store.image_refs(version), version, repository)
    return version, chosen, stored.metadata.get("sample_input")


def _record(store: ArtifactStore, target: Target, version: str, image: str) -> None:
    before = store.deployment(target.name)
    same = before is not None and (before.current, before.image) == (version, image)
    if same and before is not None and before.endpoint == target.endpoint:
        return  # shipped again: keep the previous version as it is, for rollback
    if same and before is not None:  # the same, answering elsewhere now: note where
        store.restore_deployment(target.name, replace(before, endpoint=target.endpoint))
        return
    store.record_deployment(target.name, version, image, endpoint=target.endpoint)


def _named(err: Exception) -> str:
    return f"{type(err).__name__}: {err}"
