"""The Prefect flows: each pipeline step is a thin task around a plain function.

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
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, tags, task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.states import Completed

from flows.results import RunResult
from kiln import wiring
from kiln.config.settings import KilnSettings, get_settings
from kiln.images.build import BuildResult, build_image
from kiln.images.retention import prune_versions
from kiln.infra.retry import RetryPolicy
from kiln.infra.team.limits import rollout_slot
from kiln.rollout import RolloutResult, retry_if_transient, roll_out, serving_problem
from kiln.store.artifact_store import ArtifactStore
from kiln.training.data import Dataset
from kiln.training.params import TrainParams
from kiln.training.promotion import SAME
from kiln.training.provenance import code_fingerprint, model_fingerprint
from kiln.training.reports import publish_model_card, publish_version_table
from kiln.training.sequence import (
    Exported,
    TrainingSteps,
    TrainOutcome,
    champion_gate_step,
    export_step,
    load_step,
    quality_gate_step,
    run_training,
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


def ship_steps(
    store_url: str, version: str, target: str, settings: KilnSettings, ship_rolled_back: bool
):
    build = retried(build_task, settings)(store_url, version, settings)
    # Only a transient failure is retried. A version that failed its smoke test and was
    # rolled back is recorded as such in the store, so no retry (not this task's, not a
    # new run of the flow) ships it again unless `ship_rolled_back`.
    rollout = retried(rollout_task, settings).with_options(retry_condition_fn=retry_if_transient)(
        store_url, version, target, build.image, settings, ship_rolled_back
    )
    return build, rollout


def retain(settings: KilnSettings, dry_run: bool = False, every_name: bool = False) -> dict:
    step = retried(retain_task, settings)
    return step(settings.store, settings.keep, settings, dry_run=dry_run, every_name=every_name)


def resolved_settings(**overrides: Any) -> KilnSettings:
    """Environment settings with the flow's non-empty parameters on top, validated."""
    return get_settings().with_overrides(**overrides)


def run_name(verb: str) -> Callable[[], str]:
    """A flow-run name that says which model the run is about: `retrain-wine-<time>`, so
    the UI's run list reads by model (the `name` parameter, else KILN_MODEL)."""

    def name() -> str:
        from prefect.runtime import flow_run

        model = flow_run.parameters.get("name") or get_settings().model
        return f"{verb}-{model}-{datetime.now(UTC):%Y%m%d-%H%M%S}"

    return name


def model_tags(settings: KilnSettings) -> Any:
    """Tags every task run of the flow carries: the model name (UI filters read them)."""
    return tags(f"model:{settings.model}")


def train_steps(
    settings: KilnSettings,
    training: TrainParams,
    target: str | None,
    force: bool,
    replace_schema: bool = False,
) -> TrainOutcome:
    """The training sequence as tasks, judged against `target`'s champion."""
    steps = replace(TASKS, store=retried(store_task, settings))
    policy = wiring.gate_policy(settings, target, force, replace_schema)
    limits = wiring.data_limits(settings)
    return run_training(
        wiring.open_store(settings),
        training,
        policy,
        steps,
        limits,
        tolerance=settings.parity_tolerance,
    )


def finished(summary: RunResult, message: str) -> Any:
    """A Completed state carrying the summary: the run's message says what was decided."""
    get_run_logger().info(message)
    return Completed(message=message, data=summary)


@flow(name="kiln-pipeline", flow_run_name=run_name("retrain"))
def pipeline_flow(
    training: TrainParams = TrainParams(),  # noqa: B008 (a frozen, validated value)
    name: str | None = None,
    target: str | None = None,
    port: int | None = None,
    builder: str | None = None,
    keep: int | None = None,
    store: str | None = None,
    gate_metric: str | None = None,
    gate_threshold: float | None = None,
    gate_tolerance: float | None = None,
    force: bool = False,
    ship: bool = True,
    ship_rolled_back: bool = False,
    replace_schema: bool = False,
) -> RunResult:
    """Train, gate (absolute, then against the target's champion), export, store, build, push,
    roll out and prune. A refused challenger is stored, not shipped, and the run still ends
    Completed; `force` ships it anyway; `ship=False` stops after the store; a model that takes
    other input than the champion ships only with `replace_schema`. The model the
    target runs already is smoke-tested there, and shipped again if it does not answer. A
    version rolled back on the target after a failed smoke test is refused unless
    `ship_rolled_back`. `name` is the model name (KILN_MODEL when unset): its own versions,
    champion, image repository and endpoint (`port`, locally)."""
    settings = resolved_settings(
        model=name,
        port=port,
        store=store,
        target=target,
        builder=builder,
        keep=keep,
        gate_metric=gate_metric,
        gate_threshold=gate_threshold,
        gate_tolerance=gate_tolerance,
    )
    # No registry check before training here (`kiln run` makes one): a scheduled run whose
    # registry is briefly down still trains and stores, so its retry resumes from the store.
    with model_tags(settings):
        outcome = train_steps(settings, training, settings.target, force, replace_schema)
        decision = outcome.decision
        the_store = wiring.open_store(settings)
        summary = training_summary(outcome)
        same = ship and decision.outcome == SAME
        again = not_serving(settings, outcome, summary) if same else None
        if not ship or not (decision.ships or again):
            return held_back(the_store, settings, outcome, summary, ship)
        return shipped(the_store, settings, outcome, summary, ship_rolled_back, again)


def not_serving(settings: KilnSettings, outcome: TrainOutcome, summary: RunResult) -> str | None:
    """Why the version the store records as serving on the target does not answer there;
    None when it does (the summary then says where it serves)."""
    check = retried(check_serving_task, settings)
    endpoint, problem = check(settings.store, outcome.version, settings.target, settings)
    if problem is None:
        summary.target, summary.endpoint = settings.target, endpoint
    return problem


def shipped(
    store: ArtifactStore,
    settings: KilnSettings,
    outcome: TrainOutcome,
    summary: RunResult,
    ship_rolled_back: bool,
    again: str | None,
) -> Any:
    """Build, roll out and prune; `again` says why a version already recorded as serving
    is shipped once more."""
    decision = outcome.decision
    build, rollout = ship_steps(
        settings.store, outcome.version, settings.target, settings, ship_rolled_back
    )
    retention = retain(settings)
    publish_model_card(
        store,
        outcome.version,
        decision=decision,
        parity=_parity_line(outcome),
        image=f"`{build.image}`",
        rollout=f"{rollout.target}: serving at {rollout.endpoint}",
    )
    publish_version_table(store)
    summary = summary.model_copy(
        update={
            "shipped": True,
            "image": build.image,
            "builder": build.builder,
            "target": rollout.target,
            "endpoint": rollout.endpoint,
            "pruned": retention["removed_versions"],
            "shipped_again": again,
        }
    )
    if again is not None:
        return finished(summary, f"{outcome.version} shipped again to {rollout.target}: {again}")
    verb = "forced onto" if decision.forced else "shipped to"
    return finished(summary, f"{outcome.version} {verb} {rollout.target}: {decision.reason}")


def held_back(
    store: ArtifactStore,
    settings: KilnSettings,
    outcome: TrainOutcome,
    summary: RunResult,
    ship: bool,
) -> Any:
    """The end of a run that ships nothing: not asked to, refused, or already running."""
    decision = outcome.decision
    if ship and decision.outcome != SAME:  # a refused challenger was stored: retention applies
        summary.pruned = retain(settings)["removed_versions"]
    publish_model_card(store, outcome.version, decision=decision, parity=_parity_line(outcome))
    publish_version_table(store)
    if ship:
        return finished(summary, decision.reason)
    return finished(
        summary, f"stored {outcome.version}, not shipped (ship=False): {decision.reason}"
    )


def training_summary(outcome: TrainOutcome) -> RunResult:
    return RunResult(
        version=outcome.version,
        data_hash=outcome.data_hash,
        task=outcome.task,
        model=outcome.model,
        metrics={k: v for k, v in outcome.metrics.items() if isinstance(v, float)},
        decision=outcome.decision.as_dict(),
        sample_input=outcome.sample_input,
    )


def _parity_line(outcome: TrainOutcome) -> str:
    return f"max abs diff {outcome.parity.max_abs_diff:.2g} on {outcome.parity.rows} rows"


@flow(name="kiln-ship", flow_run_name=run_name("ship"))
def ship_flow(
    version: str | int = "latest",
    name: str | None = None,
    target: str | None = None,
    port: int | None = None,
    store: str | None = None,
    ship_rolled_back: bool = False,
) -> dict[str, Any]:
    """Build (or find) the image of a stored version of model `name` and roll it out:
    redeploy, rollback. A version rolled back on the target after a failed smoke test is
    refused unless `ship_rolled_back`."""
    settings = resolved_settings(model=name, port=port, store=store, target=target)
    the_store = wiring.open_store(settings)
    # `prefect deployment run --param version=123456` parses an all-digit prefix as a number
    version = the_store.resolve_own(str(version))
    with model_tags(settings):
        build, rollout = ship_steps(
            settings.store, version, settings.target, settings, ship_rolled_back
        )
    publish_version_table(the_store)
    return {"version": version, "image": build.image, "endpoint": rollout.endpoint}


@flow(name="kiln-prune", flow_run_name=run_name("prune"))
def prune_flow(
    keep: int | None = None,
    dry_run: bool = False,
    store: str | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Retention for the store and the registry, `keep` versions of each model name (of
    `name` only, when given); never what any name deploys, may roll back to, or pinned."""
    settings = resolved_settings(store=store, keep=keep, model=name)
    summary = retain(settings, dry_run=dry_run, every_name=name is None)
    publish_version_table(wiring.open_store(settings))
    return summary
