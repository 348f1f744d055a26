"""`kiln run`: the whole pipeline as one Prefect flow run, on embedded defaults."""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer

from flows.commands import make_console
from flows.commands.options import (
    COption,
    DataOption,
    GammaOption,
    KernelOption,
    LabelColumnOption,
    MinScoreOption,
    SeedOption,
    StoreOption,
)
from flows.settings import BuilderName, Target, get_settings

console = make_console()


def _prefect_defaults() -> None:
    """Without a configured Prefect API, Prefect starts a temporary server for the run.

    It takes about 10 s to start here, close to Prefect's 20 s default limit, and its
    telemetry lookups fail offline; an explicit setting from the user always wins.
    """
    if not os.environ.get("PREFECT_API_URL"):
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def run(
    data: DataOption = "iris",
    label_column: LabelColumnOption = "label",
    c: COption = 1.0,
    kernel: KernelOption = "rbf",
    gamma: GammaOption = "scale",
    seed: SeedOption = 42,
    min_score: MinScoreOption = None,
    target: Annotated[
        Target | None, typer.Option(help="local or kubernetes [KILN_TARGET].")
    ] = None,
    builder: Annotated[
        BuilderName | None, typer.Option(help="auto, engine or layer [KILN_BUILDER].")
    ] = None,
    keep: Annotated[
        int | None, typer.Option(min=1, help="Versions retention keeps [KILN_KEEP].")
    ] = None,
    store: StoreOption = None,
) -> None:
    """Train, gate, export, store, build, push, roll out and prune, as one Prefect flow run."""
    # Validate every setting and flag together before Prefect or any step starts.
    get_settings().with_overrides(
        store=store, target=target, builder=builder, keep=keep, gate_threshold=min_score
    )
    _prefect_defaults()
    from flows.pipeline import pipeline_flow

    summary = pipeline_flow(
        data=data,
        label_column=label_column,
        C=c,
        kernel=kernel,
        gamma=gamma,
        seed=seed,
        gate_threshold=min_score,
        target=target,
        builder=builder,
        keep=keep,
        store=store,
    )
    console.print(f"\nversion   [bold]{summary['version']}[/]")
    console.print(f"accuracy  {summary['metrics']['accuracy']:.4f}")
    console.print(f"image     {summary['image']} ({summary['builder']} builder)")
    console.print(f"serving   {summary['target']} at {summary['endpoint']}")
    if summary["pruned"]:
        console.print(f"pruned    {', '.join(summary['pruned'])}")
    if summary["endpoint"].startswith("http"):
        body = json.dumps({"data": [[round(v, 3) for v in summary["sample_input"][0]]]})
        console.print("\ntry it:", style="bold")
        console.print(
            f"  curl -s -X POST {summary['endpoint']}/predict "
            f"-H 'Content-Type: application/json' -d '{body}'",
            soft_wrap=True,
            highlight=False,
        )
