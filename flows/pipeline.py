"""The Prefect flows: each pipeline step is a thin task around a plain function.

Training and export are cached on the data's content hash, the parameters and the code
(never on a file path), and their results are persisted, so a re-run or a retry after a
failed build, push or rollout finds them `Cached` and goes straight to the stored model.
No transaction spans training and the later steps: a failed build never discards them.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.context import TaskRunContext
from prefect.tasks import exponential_backoff

from flows import data as data_module
from flows import export as export_module
from flows import train as train_module
from flows import wiring
from flows.checkpoint import build_metadata, library_versions, store_model
from flows.data import Dataset, load_data
from flows.export import ParityReport, check_parity, export_onnx
from flows.image import BuildOptions, BuildResult, build_image
from flows.registry import Registry
from flows.reports import publish_model_card, publish_version_table
from flows.retention import prune_versions
from flows.rollout import RolloutResult, retry_if_transient, roll_out
from flows.settings import KilnSettings, get_settings
from flows.store import ArtifactStore
from flows.train import TrainParams, TrainResult, check_quality, train_model
from flows.training import parse_gamma


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """What the cached steps' output depends on besides data and parameters."""
    digest = hashlib.sha256()
    for module in (data_module, train_module, export_module):
        digest.update(inspect.getsource(module).encode())
    digest.update(json.dumps(library_versions(), sort_keys=True).encode())
    return digest.hexdigest()


def training_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    data: Dataset = parameters["data"]
    params: TrainParams = parameters["params"]
    payload = json.dumps(
        [context.task.name, data.content_hash, asdict(params), code_fingerprint()], sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class ExportResult:
    onnx_bytes: bytes
    parity: ParityReport


# -- tasks --------------------------------------------------------------------------------


@task(name="load-data")
def load_data_task(spec: str, label_column: str) -> Dataset:
    data = load_data(spec, label_column)
    get_run_logger().info(
        "loaded %s: %d rows x %d features, content hash %s",
        data.source,
        data.n_rows,
        data.n_features,
        data.content_hash[:12],
    )
    return data


@task(name="train", cache_key_fn=training_cache_key, persist_result=True)
def train_task(data: Dataset, params: TrainParams) -> TrainResult:
    result = train_model(data, params)
    get_run_logger().info(
        "trained: accuracy %.4f, f1_macro %.4f",
        result.metrics["accuracy"],
        result.metrics["f1_macro"],
    )
    return result


@task(name="quality-gate")
def quality_gate_task(metrics: dict[str, Any], metric: str, threshold: float) -> None:
    check_quality(metrics, metric, threshold)


@task(name="export-onnx", cache_key_fn=training_cache_key, persist_result=True)
def export_task(data: Dataset, params: TrainParams, result: TrainResult) -> ExportResult:
    onnx_bytes = export_onnx(result.model, data.n_features)
    parity = check_parity(onnx_bytes, result.model, result.X_holdout)
    get_run_logger().info(
        "exported %d bytes; parity max |diff| %.2g over %d rows",
        len(onnx_bytes),
        parity.max_abs_diff,
        parity.rows,
    )
    return ExportResult(onnx_bytes, parity)


@task(
    name="store-model",
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=1),
    retry_jitter_factor=0.5,
)
def store_task(
    store_url: str, data: Dataset, params: TrainParams, result: TrainResult, exported: ExportResult
) -> str:
    sample = result.X_holdout[:1].tolist()
    metadata = build_metadata(data, params, result.metrics, exported.parity, sample)
    version = store_model(ArtifactStore(store_url), exported.onnx_bytes, data, metadata)
    get_run_logger().info("stored version %s in %s", version, store_url)
    return version


# -- flows --------------------------------------------------------------------------------


def train_and_store_steps(
    store_url: str,
    data: str,
    label_column: str,
    params: TrainParams,
    gate_metric: str,
    gate_threshold: float,
) -> tuple[str, TrainResult, ExportResult, Dataset]:
    dataset = load_data_task(data, label_column)
    result = train_task(dataset, params)
    quality_gate_task(result.metrics, gate_metric, gate_threshold)
    exported = export_task(dataset, params, result)
    version = store_task(store_url, dataset, params, result, exported)
    return version, result, exported, dataset


@flow(name="kiln-train", log_prints=True)
def train_flow(
    data: str = "iris",
    label_column: str = "label",
    C: float = 1.0,  # noqa: N803 (scikit-learn's name for it)
    kernel: str = "rbf",
    gamma: str = "scale",
    seed: int = 42,
    gate_metric: str | None = None,
    gate_threshold: float | None = None,
    store: str | None = None,
) -> dict[str, Any]:
    """Train, gate, export and store a model; returns its version and metrics."""
    settings = get_settings()
    store_url = store or settings.store
    params = TrainParams(C=C, kernel=kernel, gamma=parse_gamma(gamma), seed=seed)
    version, result, exported, dataset = train_and_store_steps(
        store_url,
        data,
        label_column,
        params,
        gate_metric or settings.gate_metric,
        settings.gate_threshold if gate_threshold is None else gate_threshold,
    )
    the_store = ArtifactStore(store_url)
    publish_model_card(the_store, version, parity=exported.parity.as_dict())
    publish_version_table(the_store)
    return {"version": version, "data_hash": dataset.content_hash, "metrics": result.metrics}


@task(name="build-image")
def build_task(store_url: str, version: str, settings: KilnSettings) -> BuildResult:
    """Build and push the version's image; a no-op when the registry already holds it."""
    options = BuildOptions(
        registry=settings.registry,
        repository=settings.repository,
        base_image=settings.base_image,
        builder=settings.builder,
    )
    with Registry(settings.registry) as registry:
        result = build_image(ArtifactStore(store_url), version, registry, options)
    get_run_logger().info(
        "image %s (%s builder, %.2fs, %d bytes pushed)",
        result.image,
        result.builder,
        result.seconds,
        result.bytes_pushed,
    )
    return result


@task(name="roll-out")
def rollout_task(
    store_url: str, version: str, target: str, image: str, settings: KilnSettings
) -> RolloutResult:
    result = roll_out(
        ArtifactStore(store_url), version, wiring.make_target(settings, target), image=image
    )
    get_run_logger().info("%s now serves %s at %s", target, version, result.endpoint)
    return result


@task(name="retain")
def retain_task(store_url: str, keep: int, settings: KilnSettings, dry_run: bool = False) -> dict:
    with Registry(settings.registry) as registry:
        pruned = prune_versions(ArtifactStore(store_url), keep, registry=registry, dry_run=dry_run)
    summary = {
        "removed_versions": [info.version for info in pruned.versions.removed],
        "deleted_images": pruned.images.deleted if pruned.images else [],
        "dry_run": dry_run,
    }
    get_run_logger().info("retention: %s", summary)
    return summary


def with_retries(step, settings: KilnSettings):
    """The step with the configured retries: exponential backoff with jitter."""
    delays = exponential_backoff(backoff_factor=settings.retry_delay) if settings.retries else 0
    return step.with_options(
        retries=settings.retries, retry_delay_seconds=delays, retry_jitter_factor=0.5
    )


def ship_steps(store_url: str, version: str, target: str, settings: KilnSettings):
    build = with_retries(build_task, settings)(store_url, version, settings)
    # Only a transient failure is retried: a version that failed its smoke test and was
    # rolled back is never shipped again by a retry.
    rollout = with_retries(rollout_task, settings).with_options(
        retry_condition_fn=retry_if_transient
    )(store_url, version, target, build.image, settings)
    return build, rollout


def resolved_settings(**overrides: Any) -> KilnSettings:
    """Environment settings with the flow's non-empty parameters on top, validated."""
    return get_settings().with_overrides(**overrides)


@flow(name="kiln-pipeline")
def pipeline_flow(
    data: str = "iris",
    label_column: str = "label",
    C: float = 1.0,  # noqa: N803 (scikit-learn's name for it)
    kernel: str = "rbf",
    gamma: str = "scale",
    seed: int = 42,
    gate_metric: str | None = None,
    gate_threshold: float | None = None,
    target: str | None = None,
    builder: str | None = None,
    keep: int | None = None,
    store: str | None = None,
) -> dict[str, Any]:
    """Train, gate, export, store, build, push, roll out and prune: the whole pipeline."""
    settings = resolved_settings(
        store=store,
        target=target,
        builder=builder,
        keep=keep,
        gate_metric=gate_metric,
        gate_threshold=gate_threshold,
    )
    params = TrainParams(C=C, kernel=kernel, gamma=parse_gamma(gamma), seed=seed)
    version, result, exported, dataset = train_and_store_steps(
        settings.store, data, label_column, params, settings.gate_metric, settings.gate_threshold
    )
    build, rollout = ship_steps(settings.store, version, settings.target, settings)
    retention = retain_task(settings.store, settings.keep, settings)
    the_store = ArtifactStore(settings.store)
    publish_model_card(
        the_store,
        version,
        parity=f"max abs diff {exported.parity.max_abs_diff:.2g} on {exported.parity.rows} rows",
        image=f"`{build.image}`",
        rollout=f"{rollout.target}: serving at {rollout.endpoint}",
    )
    publish_version_table(the_store)
    return {
        "version": version,
        "data_hash": dataset.content_hash,
        "metrics": {k: result.metrics[k] for k in ("accuracy", "f1_macro")},
        "image": build.image,
        "builder": build.builder,
        "target": rollout.target,
        "endpoint": rollout.endpoint,
        "sample_input": result.X_holdout[:1].tolist(),
        "pruned": retention["removed_versions"],
    }


@flow(name="kiln-ship")
def ship_flow(
    version: str = "latest", target: str | None = None, store: str | None = None
) -> dict[str, Any]:
    """Build (or find) the image of a stored version and roll it out: redeploy, rollback."""
    settings = resolved_settings(store=store, target=target)
    version = ArtifactStore(settings.store).resolve(version)
    build, rollout = ship_steps(settings.store, version, settings.target, settings)
    return {"version": version, "image": build.image, "endpoint": rollout.endpoint}


@flow(name="kiln-prune")
def prune_flow(
    keep: int | None = None, dry_run: bool = False, store: str | None = None
) -> dict[str, Any]:
    """Retention for the store and the registry; never what is deployed or pinned."""
    settings = resolved_settings(store=store, keep=keep)
    return retain_task(settings.store, settings.keep, settings, dry_run=dry_run)
