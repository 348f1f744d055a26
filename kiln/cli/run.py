"""`kiln run`: the whole pipeline as one Prefect flow run, on embedded defaults.

Every flag and setting is checked before Prefect starts. The run uses the Prefect server
`kiln up` started when one answers (its runs stay visible in the UI); otherwise Prefect
starts a temporary one, and the command says so. A failed run ends in one summary line
(step, reason, flow run id, what to do next); Prefect's own logs appear with --debug.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kiln.cli.deploy import try_it_command
from kiln.cli.options import (
    COption,
    DataOption,
    DelimiterOption,
    DropOption,
    FeaturesOption,
    ForceOption,
    GammaOption,
    KernelOption,
    LabelColumnOption,
    MinScoreOption,
    ModelOption,
    NameOption,
    OutputOption,
    ParamOption,
    PortOption,
    ReplaceSchemaOption,
    SeedOption,
    StoreOption,
    TargetOption,
    TaskOption,
    training_from_flags,
)
from kiln.cli.output import debug_enabled, make_console, print_json, print_line
from kiln.cli.progress import progress
from kiln.cli.warm import runner as warm
from kiln.config.errors import KilnError
from kiln.config.settings import BuilderName, KilnSettings, get_settings

if TYPE_CHECKING:  # the flows import Prefect: only when a run starts
    from flows.pipeline import RunResult

err_console = make_console(stderr=True)


class RunFailed(KilnError):
    """A `kiln run` flow run ended Failed or Crashed."""


def choose_prefect_server(settings: KilnSettings, say: Any) -> str | None:
    """Point Prefect at a server before it is imported; None means a temporary one.

    PREFECT_API_URL wins when set; else the server `kiln up` starts, when it answers.
    """
    from kiln.infra.prefect_server import api_url, healthy

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if not debug_enabled():  # Prefect's console logs only with --debug; the UI keeps them
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    configured = os.environ.get("PREFECT_API_URL")
    if configured:
        return configured
    url = api_url("127.0.0.1", settings.prefect_port)
    if healthy(url):
        os.environ["PREFECT_API_URL"] = url
        return url
    # A temporary server can take longer to start than Prefect's default limit (20 s) on a
    # busy machine (docs/benchmarks.md).
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    say(
        f"no Prefect server answers at {url.removesuffix('/api')}: starting a temporary one "
        "for this run (about 10 s; `kiln up` starts one that stays, with a UI)"
    )
    return None


def preflight(settings: KilnSettings) -> None:
    """Reach what the run pushes and ships to before training: a registry, engine or
    kubeconfig that is missing is the user's to fix, and no retry inside the run would."""
    from kiln import wiring

    if settings.target == "kubernetes":
        wiring.kube_api_client(settings).close()
    else:
        wiring.engine_client(settings).close()
    wiring.check_registry(settings)


def flow_run_link(api: str | None, flow_run_id: str | None) -> str | None:
    if api is None or flow_run_id is None:
        return None
    return f"{api.removesuffix('/api')}/runs/flow-run/{flow_run_id}"


def run(
    data: DataOption = "iris",
    label_column: LabelColumnOption = "label",
    model: ModelOption = "svm",
    param: ParamOption = None,
    task: TaskOption = None,
    features: FeaturesOption = None,
    drop: DropOption = None,
    delimiter: DelimiterOption = None,
    c: COption = 1.0,
    kernel: KernelOption = "rbf",
    gamma: GammaOption = "scale",
    seed: SeedOption = 42,
    min_score: MinScoreOption = None,
    target: TargetOption = None,
    builder: Annotated[
        BuilderName | None, typer.Option(help="auto, engine or layer [KILN_BUILDER].")
    ] = None,
    keep: Annotated[
        int | None, typer.Option(min=1, help="Versions retention keeps [KILN_KEEP].")
    ] = None,
    output: OutputOption = "text",
    name: NameOption = None,
    port: PortOption = None,
    store: StoreOption = None,
    force: ForceOption = False,
    replace_schema: ReplaceSchemaOption = False,
) -> None:
    """Train, gate, export, store, build, push, roll out and prune, as one Prefect flow run."""
    # Validate every setting and flag together before Prefect or any step starts.
    shared: dict[str, Any] = dict(port=port, store=store, target=target, builder=builder)
    shared.update(keep=keep, gate_threshold=min_score)  # flow parameters named as settings
    settings = get_settings().with_overrides(model=name, **shared)
    training = training_from_flags(locals())

    def say(text: str) -> None:
        err_console.print(text, highlight=False, markup=False, soft_wrap=True)

    preflight(settings)
    api = choose_prefect_server(settings, say)
    warm.refresh_prefect()  # in the warm runner, Prefect was imported before this point
    if api is not None:
        say(f"Prefect: {api.removesuffix('/api')}")
    flags = dict(name=name, force=force, replace_schema=replace_schema)
    state, watcher = _run_flow(settings, training, {**shared, **flags})
    flow_run_id = str(state.state_details.flow_run_id or watcher.flow_run_id or "")
    link = flow_run_link(api, flow_run_id)
    if not state.is_completed():
        raise _failure(state, watcher.failed_step, flow_run_id, link)
    print_summary(state.result(), output, flow_run_id, link)


def _run_flow(settings: KilnSettings, training: Any, parameters: dict[str, Any]) -> Any:
    """The pipeline flow's final state, and the watcher that saw its steps."""
    from prefect import tags

    from flows.pipeline import pipeline_flow

    with (
        progress(err_console, "starting", level=logging.DEBUG) as watcher,
        tags(f"model:{settings.model}"),  # the flow run's, as a deployment's run has them
    ):
        state = pipeline_flow(training=training, return_state=True, **parameters)
    return state, watcher


def print_summary(summary: RunResult, output: str, flow_run_id: str, link: str | None) -> None:
    """What the run decided and, when it shipped (or the same model answers already), where
    the model serves and how to try it."""
    endpoint = summary.endpoint
    try_it = try_it_command(endpoint, summary.sample_input) if endpoint else None
    if output == "json":
        extra = {"flow_run_id": flow_run_id, "flow_run_url": link, "try_it": try_it}
        print_json({**summary.model_dump(), **extra})
        return
    decision = summary.decision
    print_line(f"version   {summary.version}")
    print_line(f"model     {summary.model} ({summary.task})")
    metric = decision.get("metric") or "accuracy"
    if summary.metrics.get(metric) is not None:
        print_line(f"{metric:<9} {summary.metrics[metric]:.4f}")
    print_line(f"decision  {decision['outcome']}: {decision['reason']}")
    if summary.shipped_again:  # recorded as serving, but it did not answer
        print_line(f"shipped   again: {summary.shipped_again}")
    if summary.shipped:
        print_line(f"image     {summary.image} ({summary.builder} builder)")
    if endpoint:
        print_line(f"serving   {summary.target} at {endpoint}")
    if summary.pruned:
        print_line(f"pruned    {', '.join(summary.pruned)}")
    print_line(f"flow run  {link or flow_run_id}")
    if try_it:
        print_line("try it:")
        for line in try_it.splitlines():
            print_line(f"  {line}")


def _failure(state: Any, step: str | None, flow_run_id: str, link: str | None) -> RunFailed:
    error = state.result(raise_on_failure=False)
    if isinstance(error, BaseException):
        reason = str(error) if isinstance(error, KilnError) else f"{type(error).__name__}: {error}"
    else:
        reason = state.message or state.name
    again = shlex.join(["kiln", *sys.argv[1:]]) if sys.argv[1:] else "kiln run"
    where = f"see {link}" if link else "`kiln up` first keeps runs for inspection in its UI"
    return RunFailed(
        f"kiln run failed at {step or 'the flow'}: {reason} | flow run {flow_run_id} | "
        f"retry: {again} (stored steps are reused) | {where}"
    )
