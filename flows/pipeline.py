"""The Prefect flows: the pipeline (train, gate, export, store, build, push, roll out,
prune), ship (a stored version, again) and prune; their steps are flows/tasks.py's tasks.

`RunResult` is what a pipeline run returns: one typed value, which the CLI prints and
`-o json` dumps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, tags
from prefect.states import Completed
from pydantic import BaseModel, ConfigDict

from flows.tasks import (
    TASKS,
    build_task,
    check_serving_task,
    retain_task,
    retried,
    rollout_task,
    store_task,
)
from kiln import wiring
from kiln.config.settings import KilnSettings, get_settings
from kiln.rollout import retry_if_transient
from kiln.store.artifact_store import ArtifactStore
from kiln.training.params import TrainParams
from kiln.training.promotion import SAME
from kiln.training.reports import publish_model_card, publish_version_table
from kiln.training.sequence import TrainOutcome, run_training


class RunResult(BaseModel):
    """What a run of the pipeline flow decided and did."""

    model_config = ConfigDict(extra="forbid")

    version: str
    data_hash: str
    task: str
    model: str  # the preset or MODULE:FUNCTION that made it
    metrics: dict[str, float]  # the headline figures (per-class rows left out)
    decision: dict[str, Any]  # the champion gate's Decision, as stored with the version
    sample_input: dict[str, Any] | None = None  # a POST /predict body for one holdout row
    shipped: bool = False
    pruned: list[str] = []
    image: str | None = None  # repository@digest, when it shipped
    builder: str | None = None
    target: str | None = None  # where it serves, when it shipped or answers already
    endpoint: str | None = None
    shipped_again: str | None = None  # why a version recorded as serving shipped once more


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
