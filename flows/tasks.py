"""The pipeline's steps as Prefect tasks: each a thin task around a plain function.

The training steps come from kiln/training/sequence.py, which puts them in order for the flow and
for `kiln train` alike. Training and export are cached on the data's content hash, the
parameters and the code (never on a file path), and their results are persisted, so a
re-run or a retry after a failed build, push or rollout finds them `Cached` and goes
straight to the stored model. No transaction spans training and the later steps: a failed
build never discards them.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext

from kiln import wiring
from kiln.config.settings import KilnSettings
from kiln.images.build import BuildResult, build_image
from kiln.images.retention import prune_versions
from kiln.infra.retry import RetryPolicy
from kiln.infra.team.limits import rollout_slot
from kiln.rollout import RolloutResult, roll_out, serving_problem
from kiln.store.artifact_store import ArtifactStore
from kiln.training.data import Dataset
from kiln.training.params import TrainParams
from kiln.training.provenance import code_fingerprint, model_fingerprint
from kiln.training.sequence import (
    Exported,
    TrainingSteps,
    champion_gate_step,
    export_step,
    load_step,
    quality_gate_step,
    store_step,
    train_step,
)
from kiln.training.train import TrainResult


def training_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    data: Dataset = parameters["data"]
    params: TrainParams = parameters["params"]
    payload = json.dumps(
        [
            context.task.name,
            data.content_hash,
            params.model_params(),
            code_fingerprint(),
            model_fingerprint(params),  # the user's model module: a changed factory retrains
        ],
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


# -- the training steps as tasks ----------------------------------------------------------------


def step_task(step: Callable[..., Any], describe: Callable[[Any], str] | None, **options: Any):
    """`step` as a Prefect task that logs what it produced; its signature stays the step's."""

    @functools.wraps(step)
    def run(*args: Any, **kwargs: Any) -> Any:
        value = step(*args, **kwargs)
        if describe is not None:
            get_run_logger().info(describe(value))
        return value

    return task(**options)(run)


def _loaded(data: Dataset) -> str:
    return (
        f"loaded {data.source}: {data.n_rows} rows x {data.n_features} features, "
        f"content hash {data.content_hash[:12]}"
    )


def _trained(result: TrainResult) -> str:
    shown = ", ".join(
        f"{name} {value:.4f}" for name, value in result.metrics.items() if isinstance(value, float)
    )
    return f"trained {result.description.get('final_estimator', 'a model')}: {shown}"


def _exported(exported: Exported) -> str:
    parity = exported.parity
    return (
        f"exported {len(exported.onnx_bytes)} bytes; "
        f"parity max |diff| {parity.max_abs_diff:.2g} over {parity.rows} rows"
    )


# What a retry resumes from is persisted (on S3 in a team setup): training and export under
# the data/parameters/code key; the loaded data, the image and the rollout as Prefect does by
# default (its key covers the inputs and the run's id, so a retry of the same run reuses
# them). A result that is never cached is never read again: it is not written either (one
# S3 round trip less per step, in every run).
CACHED: dict[str, Any] = {"cache_key_fn": training_cache_key, "persist_result": True}
UNCACHED: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}
load_data_task = step_task(load_step, _loaded, name="load-data")
train_task = step_task(train_step, _trained, name="train", **CACHED)
quality_gate_task = step_task(quality_gate_step, None, name="quality-gate", **UNCACHED)
export_task = step_task(export_step, _exported, name="export-onnx", **CACHED)
# Never cached: the champion may have changed since the last run.
champion_gate_task = step_task(
    champion_gate_step, lambda d: d.reason, name="champion-gate", **UNCACHED
)
store_task = step_task(store_step, lambda v: f"stored version {v}", name="store-model", **UNCACHED)
TASKS = TrainingSteps(
    load=load_data_task,
    train=train_task,
    quality_gate=quality_gate_task,
    export=export_task,
    champion_gate=champion_gate_task,
    store=store_task,
)


def _store(settings: KilnSettings, store_url: str) -> ArtifactStore:
    """The store a task was handed, built as every store is (kiln.wiring: its retries)."""
    return wiring.open_store(settings.with_overrides(store=store_url))


@task(name="build-image")
def build_task(store_url: str, version: str, settings: KilnSettings) -> BuildResult:
    """Build and push the version's image; a no-op when the registry already holds it."""
    # Prefect retries this task as a whole (`retried`): the client inside tries each call once.
    with wiring.open_registry(settings, retried_outside=True) as registry:
        result = build_image(
            _store(settings, store_url),
            version,
            registry,
            wiring.build_options(settings),
            engine=lambda: wiring.engine_client(settings),
            cache_dir=settings.wheel_cache_dir,
        )
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
    store_url: str,
    version: str,
    target: str,
    image: str,
    settings: KilnSettings,
    ship_rolled_back: bool = False,
) -> RolloutResult:
    # one rollout of a name to a target at a time, across workers
    with rollout_slot(target, settings.model):
        result = roll_out(
            _store(settings, store_url),
            version,
            wiring.make_target(settings, target),
            image=image,
            ship_rolled_back=ship_rolled_back,
        )
    get_run_logger().info("%s now serves %s at %s", target, version, result.endpoint)
    return result


@task(name="check-serving", **UNCACHED)
def check_serving_task(
    store_url: str, version: str, target: str, settings: KilnSettings
) -> tuple[str, str | None]:
    """The target's endpoint, and why it does not serve `version` (None when it does)."""
    the_target = wiring.make_target(settings, target)
    problem = serving_problem(_store(settings, store_url), version, the_target)
    if problem is not None:
        get_run_logger().warning("%s is recorded on %s, but %s", version, target, problem)
    return the_target.endpoint, problem


@task(name="retain", **UNCACHED)
def retain_task(
    store_url: str,
    keep: int,
    settings: KilnSettings,
    dry_run: bool = False,
    every_name: bool = False,
) -> dict:
    with wiring.open_registry(settings, retried_outside=True) as registry:  # see build_task
        pruned = prune_versions(
            _store(settings, store_url),
            keep,
            registry=registry,
            dry_run=dry_run,
            every_name=every_name,
        )
    summary = {
        "removed_versions": [info.version for info in pruned.versions.removed],
        "deleted_images": pruned.images.deleted if pruned.images else [],
        "dry_run": dry_run,
    }
    get_run_logger().info("retention: %s", summary)
    return summary


def retried(step, settings: KilnSettings):
    """The step with the configured retries (kiln/infra/retry.py): exponential backoff, jitter."""
    return step.with_options(**RetryPolicy.from_settings(settings).task_options())
