"""Roll a stored version out to a target, prove it answers, and roll back by itself if not.

Two targets share one shape (ship the new version, wait until it is ready, smoke-test it
with the model's own sample input, then record it; on any failure put the previous one
back and raise RolloutError with the reason):

- ``kubernetes``: flows/kube.py applies kiln's manifests with the image pinned by
  digest and watches the Deployment; the smoke test goes through the API server's
  Service proxy.
- ``local``: flows/local_target.py runs the image on the container engine behind a
  published 127.0.0.1 port.

Plain functions with their collaborators as parameters; no Prefect here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from flows.errors import KilnError, RolloutError

if TYPE_CHECKING:
    from flows.kube import KubeCluster
    from flows.local_target import LocalEngine
    from flows.settings import KilnSettings
    from flows.store import ArtifactStore

log = logging.getLogger(__name__)

KUBERNETES = "kubernetes"
LOCAL = "local"
TARGETS = (LOCAL, KUBERNETES)


@dataclass(frozen=True)
class RolloutResult:
    target: str
    version: str
    image: str
    endpoint: str
    previous_version: str | None
    previous_image: str | None
    rolled_back: bool = False  # True when this rollout shipped the previous version again


@dataclass(frozen=True)
class Reply:
    """One HTTP answer from the server under test."""

    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


# (method, path, json body or None) -> Reply
Caller = Callable[[str, str, Any], Reply]


class SmokeTestFailed(Exception):
    """The new version answered wrongly (internal; rollouts turn it into RolloutError)."""


# -- picking what to ship ------------------------------------------------------------------------


def pick_image(refs: list[str], version: str) -> str:
    """The digest-pinned image recorded for a version (the newest registry's first)."""
    pinned = [ref for ref in refs if "@sha256:" in ref]
    if not pinned:
        raise RolloutError(
            f"rolling out {version}: no image pinned by digest is recorded for it "
            f"(recorded: {refs or 'none'}); build it first with `kiln build {version}`"
        )
    return pinned[0]


def predict_request(sample_input: Any) -> dict[str, Any]:
    """The POST /predict body for a model's sample input (rows of features)."""
    if isinstance(sample_input, dict):
        return sample_input
    return {"data": sample_input}


# -- the smoke test ---------------------------------------------------------------------------


def smoke_test(call: Caller, version: str, sample_input: Any) -> None:
    """Ask the server for its metadata and one prediction; raise SmokeTestFailed if wrong."""
    reply = _call(call, "GET", "/metadata", None)
    if reply.status != 200:
        raise SmokeTestFailed(f"GET /metadata answered {reply.status}: {_snippet(reply.body)}")
    reported = _reported_version(reply)
    if reported != version:
        raise SmokeTestFailed(f"GET /metadata reports version {reported!r}, expected {version!r}")
    request = predict_request(sample_input)
    reply = _call(call, "POST", "/predict", request)
    if reply.status != 200:
        raise SmokeTestFailed(f"POST /predict answered {reply.status}: {_snippet(reply.body)}")
    try:
        answer = reply.json()
    except ValueError as err:
        raise SmokeTestFailed(f"POST /predict answered non-JSON: {_snippet(reply.body)}") from err
    rows = request.get("data") if isinstance(request, dict) else None
    predictions = None
    if isinstance(answer, dict):  # kiln's server says "prediction": one entry per row
        predictions = answer.get("prediction", answer.get("predictions"))
    counted = isinstance(predictions, list) and len(predictions) == len(rows or [])
    if isinstance(rows, list) and not counted:
        raise SmokeTestFailed(
            f"POST /predict returned {_snippet(reply.body)} for {len(rows)} sample rows"
        )
    log.info("smoke test passed: version %s answers /metadata and /predict", version)


def _call(call: Caller, method: str, path: str, body: Any) -> Reply:
    try:
        return call(method, path, body)
    except (OSError, KilnError) as err:
        raise SmokeTestFailed(f"{method} {path}: {err}") from err


def _reported_version(reply: Reply) -> str | None:
    try:
        data = reply.json()
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    value = data.get("version") or data.get("model_version")
    if value is None and isinstance(data.get("model"), dict):
        value = data["model"].get("version")
    return value


def _snippet(body: bytes, limit: int = 200) -> str:
    text = body.decode(errors="replace").strip()
    return text if len(text) <= limit else text[:limit] + "..."


# -- the store ---------------------------------------------------------------------------------


class DeploymentRecord(Protocol):
    current: str
    image: str
    previous: str | None
    previous_image: str | None


def _resolve(store: ArtifactStore, version: str, image: str | None) -> tuple[str, str, Any]:
    try:
        stored = store.get(version)
    except KilnError as err:
        raise RolloutError(f"rolling out {version}: {err}") from err
    version = stored.version
    chosen = image or pick_image(store.image_refs(version), version)
    return version, chosen, stored.metadata.get("sample_input")


def _record(store: ArtifactStore, target: str, version: str, image: str) -> None:
    before = store.deployment(target)
    if before is not None and before.current == version and before.image == image:
        return  # shipped again: keep the previous version as it is, for rollback
    store.record_deployment(target, version, image)


# -- Kubernetes --------------------------------------------------------------------------------


def roll_out_kubernetes(
    store: ArtifactStore,
    version: str,
    cluster: KubeCluster,
    *,
    image: str | None = None,
    timeout: float = 600.0,
    rolled_back: bool = False,
    manifest_dir: Any = None,
) -> RolloutResult:
    """Ship `version` to the cluster; on failure restore what ran before and raise."""
    from flows.kube import MANIFEST_DIR, RolloutStuck, render_manifests

    version, image, sample_input = _resolve(store, version, image)
    previous = cluster.live_deployment()
    where = f"{cluster.namespace}/{cluster.name}"
    log.info(
        "rolling out %s (%s) to Deployment %s; running now: %s",
        version,
        image,
        where,
        previous.version if previous else "nothing",
    )
    objects = render_manifests(image, version, cluster.namespace, manifest_dir or MANIFEST_DIR)
    try:
        cluster.apply(objects)
        cluster.wait_rolled_out(timeout)
        smoke_test(_kube_caller(cluster), version, sample_input)
    except Exception as err:  # any failure, ours or the client's: put the old one back
        reason = (
            str(err)
            if isinstance(err, RolloutStuck | SmokeTestFailed | KilnError)
            else (f"{type(err).__name__}: {err}")
        )
        log.error("rollout of %s to %s failed: %s", version, where, reason)
        message = _roll_back_kubernetes(cluster, version, previous, reason, timeout)
        raise RolloutError(message) from err
    _record(store, KUBERNETES, version, image)
    return RolloutResult(
        KUBERNETES,
        version,
        image,
        cluster.endpoint,
        previous.version if previous else None,
        previous.image if previous else None,
        rolled_back,
    )


def _roll_back_kubernetes(
    cluster: KubeCluster, version: str, previous: Any, reason: str, timeout: float
) -> str:
    message = f"rolling out {version} to kubernetes: {reason}"
    if previous is None:
        return f"{message}; nothing to restore (no Deployment ran before)"
    if previous.image is None:
        return f"{message}; the previous Deployment has no server container to restore"
    log.warning("restoring %s (%s)", previous.version, previous.image)
    try:
        cluster.restore(previous)
        cluster.wait_rolled_out(timeout)
    except Exception as err:
        return f"{message}; restoring {previous.version} ({previous.image}) failed too: {err}"
    return f"{message}; rolled back to {previous.version} ({previous.image})"


def _kube_caller(cluster: KubeCluster) -> Caller:
    def call(method: str, path: str, body: Any) -> Reply:
        response = cluster.call_service(method, path, body)
        return Reply(response.status, response.body)

    return call


# -- local -------------------------------------------------------------------------------------


def roll_out_local(
    store: ArtifactStore,
    version: str,
    engine: LocalEngine,
    *,
    image: str | None = None,
    timeout: float = 120.0,
    rolled_back: bool = False,
) -> RolloutResult:
    """Ship `version` to the local container engine; on failure the old one keeps serving."""
    version, image, sample_input = _resolve(store, version, image)
    before = engine.current()
    endpoint = engine.roll_out(
        version, image, lambda call: smoke_test(call, version, sample_input), timeout=timeout
    )
    _record(store, LOCAL, version, image)
    return RolloutResult(
        LOCAL,
        version,
        image,
        endpoint,
        before.version if before else None,
        before.image if before else None,
        rolled_back,
    )


# -- rollback ----------------------------------------------------------------------------------


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


# -- wiring: one factory per target, from settings (flows/wiring.py builds them) ---------------


def kube_cluster(settings: KilnSettings) -> KubeCluster:
    from flows.wiring import kube_cluster as make_cluster

    return make_cluster(settings)


def local_engine(settings: KilnSettings) -> LocalEngine:
    from flows.wiring import local_engine as make_engine

    return make_engine(settings)


def roll_out(
    store: ArtifactStore,
    version: str,
    target: str,
    settings: KilnSettings,
    *,
    image: str | None = None,
    rolled_back: bool = False,
) -> RolloutResult:
    """Ship a stored version to `target` (local or kubernetes), built from `settings`."""
    if target == KUBERNETES:
        return roll_out_kubernetes(
            store,
            version,
            kube_cluster(settings),
            image=image,
            timeout=settings.k8s_timeout,
            rolled_back=rolled_back,
        )
    if target == LOCAL:
        return roll_out_local(
            store,
            version,
            local_engine(settings),
            image=image,
            timeout=settings.local_timeout,
            rolled_back=rolled_back,
        )
    raise RolloutError(f"unknown target {target!r}: use one of {', '.join(TARGETS)}")


def roll_back(store: ArtifactStore, target: str, settings: KilnSettings) -> RolloutResult:
    """Ship the version that ran on `target` before the current one, with its image."""
    version, image = previous_of(store, target)
    log.info("rolling %s back to %s (%s)", target, version, image)
    return roll_out(store, version, target, settings, image=image, rolled_back=True)


@dataclass(frozen=True)
class TargetStatus:
    """What the store recorded for a target and what the target itself says runs there."""

    target: str
    recorded: Any  # flows.store.Deployment | None
    live: list[str]  # one line per thing running: version, image, where
    error: str | None = None


def target_status(store: ArtifactStore, target: str, settings: KilnSettings) -> TargetStatus:
    recorded = store.deployment(target)
    try:
        if target == LOCAL:
            engine = local_engine(settings)
            live = [
                f"{c.version} {c.image} {c.role} {c.status} {c.endpoint} ({c.name})"
                for c in engine.containers()
            ]
        else:
            cluster = kube_cluster(settings)
            deployment = cluster.live_deployment()
            live = []
            if deployment is not None:
                live.append(
                    f"{deployment.version} {deployment.image} "
                    f"Deployment {cluster.namespace}/{cluster.name} "
                    f"replicas {deployment.replicas}"
                )
    except Exception as err:  # an unreachable engine or cluster is a status, not a crash
        return TargetStatus(target, recorded, [], f"{type(err).__name__}: {err}")
    return TargetStatus(target, recorded, live)
