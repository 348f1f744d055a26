"""`kiln train`, `kiln models`, `kiln pin`/`unpin`, `kiln prune`."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from flows import wiring
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
from flows.settings import get_settings
from flows.store import ArtifactStore

console = make_console()


def open_store(store: str | None) -> ArtifactStore:
    return wiring.open_store(get_settings().with_overrides(store=store))


def train(
    data: DataOption = "iris",
    label_column: LabelColumnOption = "label",
    c: COption = 1.0,
    kernel: KernelOption = "rbf",
    gamma: GammaOption = "scale",
    seed: SeedOption = 42,
    min_score: MinScoreOption = None,
    store: StoreOption = None,
) -> None:
    """Train, gate, export to ONNX (parity-checked) and store; prints the version."""
    from flows.training import TrainRequest, train_and_store

    settings = get_settings().with_overrides(store=store, gate_threshold=min_score)
    request = TrainRequest.from_cli(
        data,
        label_column,
        c,
        kernel,
        gamma,
        seed,
        gate_metric=settings.gate_metric,
        gate_threshold=settings.gate_threshold,
    )
    with console.status("training...") as status:
        outcome = train_and_store(wiring.open_store(settings), request, progress=status.update)
    console.print(f"stored version [bold]{outcome.version}[/] ({outcome.data_source})")
    _print_metrics(outcome.metrics)


def _print_metrics(metrics: dict[str, Any]) -> None:
    console.print(f"accuracy {metrics['accuracy']:.4f}  f1_macro {metrics['f1_macro']:.4f}")
    table = Table("class", "precision", "recall", "f1", "support", box=None)
    for name, row in metrics.get("per_class", {}).items():
        table.add_row(
            name,
            f"{row['precision']:.3f}",
            f"{row['recall']:.3f}",
            f"{row['f1-score']:.3f}",
            str(int(row["support"])),
        )
    console.print(table)


models_app = typer.Typer(help="List and inspect stored model versions.", no_args_is_help=False)


@models_app.callback(invoke_without_command=True)
def models(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    store: StoreOption = None,
) -> None:
    """List stored versions, newest first."""
    if ctx.invoked_subcommand is not None:
        return
    the_store = open_store(store)
    versions = the_store.list_versions()
    deployed: dict[str, list[str]] = {}
    for d in the_store.deployments():
        deployed.setdefault(d.current, []).append(d.target)
    if as_json:
        rows = [{**v.__dict__, "deployed_on": deployed.get(v.version, [])} for v in versions]
        typer.echo(json.dumps(rows, indent=2))
        return
    if not versions:
        console.print(f"no versions in {the_store.url}")
        return
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("version", "created", "accuracy", "f1_macro", "pinned", "deployed", "images"):
        table.add_column(column, no_wrap=True)
    for v in versions:
        table.add_row(
            v.version,
            v.created,
            f"{v.metrics.get('accuracy', float('nan')):.4f}",
            f"{v.metrics.get('f1_macro', float('nan')):.4f}",
            "yes" if v.pinned else "",
            ", ".join(deployed.get(v.version, [])),
            str(len(v.images)),
        )
    console.print(table)


@models_app.command("show")
def show(version: str, store: StoreOption = None) -> None:
    """Print one version's metadata (verified), with its images and pin."""
    the_store = open_store(store)
    stored = the_store.get(version)
    shown = {
        **stored.metadata,
        "labels": stored.labels,
        "images": the_store.image_refs(stored.version),
        "pinned": stored.version in the_store.pinned(),
    }
    typer.echo(json.dumps(shown, indent=2, sort_keys=True))


def pin(version: str, store: StoreOption = None) -> None:
    """Keep a version through every prune."""
    console.print(f"pinned {open_store(store).pin(version)}")


def unpin(version: str, store: StoreOption = None) -> None:
    """Let retention remove a version again."""
    console.print(f"unpinned {open_store(store).unpin(version)}")


def prune(
    keep: Annotated[
        int | None, typer.Option(min=1, help="Newest versions to keep [KILN_KEEP].")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would go.")] = False,
    store: StoreOption = None,
) -> None:
    """Remove old versions; pinned, deployed and rollback versions always stay."""
    from flows.retention import prune_versions

    settings = get_settings().with_overrides(store=store, keep=keep)
    with wiring.open_registry(settings) as registry:
        pruned = prune_versions(
            wiring.open_store(settings),
            settings.keep,
            registry=registry,
            dry_run=dry_run,
            base_repositories=(settings.base_repository,),
        )
    verb = "would remove" if dry_run else "removed"
    for info in pruned.versions.removed:
        console.print(f"{verb} {info.version} ({info.created})")
    for image in pruned.images.deleted if pruned.images else []:
        console.print(f"{verb} image {image}", highlight=False)
    console.print(
        f"{verb} {len(pruned.versions.removed)} version(s), kept {len(pruned.versions.kept)}; "
        "registry space returns with `scripts/infra.sh gc`"
    )
