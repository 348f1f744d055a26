"""`kiln train`, `kiln models` (list, show, diff), `kiln pin`/`unpin`, `kiln prune`."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from kiln import wiring
from kiln.cli.options import (
    COption,
    DataOption,
    DelimiterOption,
    DropOption,
    FeaturesOption,
    GammaOption,
    KernelOption,
    LabelColumnOption,
    MinScoreOption,
    ModelOption,
    NameOption,
    OutputOption,
    ParamOption,
    ReplaceSchemaOption,
    SeedOption,
    StoreOption,
    TaskOption,
    training_from_flags,
)
from kiln.cli.output import make_console, print_json, print_line
from kiln.config.settings import Target, get_settings
from kiln.store.artifact_store import ArtifactStore
from kiln.training.promotion import decision_summary, latest_decision
from kiln.training.summary import headline, metric_values, value_range

console = make_console()


def open_store(store: str | None, name: str | None = None) -> ArtifactStore:
    return wiring.open_store(get_settings().with_overrides(model=name, store=store))


def train(
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
    target: Annotated[
        Target | None,
        typer.Option(help="Also judge the model against what this target runs (ships nothing)."),
    ] = None,
    replace_schema: ReplaceSchemaOption = False,
    name: NameOption = None,
    store: StoreOption = None,
) -> None:
    """Train, gate, export to ONNX (parity-checked) and store; prints the version."""
    from kiln.training.promotion import SAME
    from kiln.training.sequence import TrainingSteps, run_training

    settings = get_settings().with_overrides(model=name, store=store, gate_threshold=min_score)
    params = training_from_flags(locals())
    policy = wiring.gate_policy(settings, target, replace_schema=replace_schema)
    with console.status("training...") as status:
        steps = TrainingSteps().announced(status.update)
        limits = wiring.data_limits(settings)
        outcome = run_training(
            wiring.open_store(settings),
            params,
            policy,
            steps,
            limits,
            tolerance=settings.parity_tolerance,
        )
    verb = "version" if outcome.decision.outcome == SAME else "stored version"
    console.print(f"{verb} [bold]{outcome.version}[/] ({outcome.data_source})", crop=False)
    console.print(f"{outcome.task} with {outcome.model}", highlight=False)
    _print_metrics(outcome.metrics)
    if target is not None:
        decision = outcome.decision
        console.print(f"decision {decision.outcome}: {decision.reason}", highlight=False)


def _print_metrics(metrics: dict[str, Any]) -> None:
    shown = [f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)]
    console.print("  ".join(shown), highlight=False)
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


models_app = typer.Typer(help="List, inspect and compare stored model versions.")


@models_app.callback(invoke_without_command=True)
def models(
    ctx: typer.Context,
    output: OutputOption = "text",
    as_json: Annotated[bool, typer.Option("--json", help="Same as -o json.")] = False,
    name: NameOption = None,
    store: StoreOption = None,
) -> None:
    """List stored versions by model name, newest first (--name: one name's)."""
    if ctx.invoked_subcommand is not None:
        return
    the_store = open_store(store)
    # Verified: a model whose bytes no longer match its recorded sha256 is listed as broken
    # (one read of each model and labels, hashed; nothing is loaded).
    verified, broken = the_store.scan(verify=True, every_name=True)
    rows = _rows_by_name(the_store, [name] if name else the_store.names(), verified)
    decisions = {
        (model, v.version): latest_decision(the_store.named(model), v.version)
        for model, v, _ in rows
    }
    if as_json or output == "json":
        listed: list[dict[str, Any]] = [
            {
                **v.__dict__,
                "name": model,
                "deployed_on": on,
                "decision": decisions[model, v.version],
            }
            for model, v, on in rows
        ]
        listed += [{"version": b.version, b.kind: b.reason} for b in broken]
        print_json(listed)
        return
    for b in broken:  # reported, never listed as usable (every other command skips them)
        console.print(f"[red]{b.kind}[/] {b.version}: {b.reason}", highlight=False, soft_wrap=True)
    if not rows:
        of_name = f" of model {name}" if name else ""
        console.print(f"no versions{of_name} in {the_store.url}", highlight=False, crop=False)
        return
    table = Table(box=box.SIMPLE_HEAD)
    columns = ("name", "version", "created", "score", "decision", "pinned", "deployed")
    for column in (*columns, "images"):
        table.add_column(column, no_wrap=True)
    for model, v, on in rows:
        table.add_row(
            model,
            v.version,
            v.created,
            headline(v.metrics),
            decision_summary(decisions[model, v.version]),
            "yes" if v.pinned else "",
            ", ".join(on),
            str(len(v.images)),
        )
    print_table(table)


def _rows_by_name(
    store: ArtifactStore, names: list[str], verified: list[Any]
) -> list[tuple[str, Any, list[str]]]:
    """(name, version, targets it runs on) for each name's intact versions, newest first."""
    intact = {v.version for v in verified}
    rows = []
    for model in names:
        named = store.named(model)
        deployed: dict[str, list[str]] = {}
        for d in named.deployments():
            deployed.setdefault(d.current, []).append(d.target)
        for v in named.list_versions():
            if v.version in intact:
                rows.append((model, v, deployed.get(v.version, [])))
    return rows


def print_table(table: Table) -> None:
    """A table at its natural width: a narrow terminal wraps its lines but never cuts an id."""
    natural = console.measure(table, options=console.options.update_width(10_000)).maximum
    console.print(table, width=max(console.width, natural), crop=False)


@models_app.command("show")
def show(
    version: Annotated[str, typer.Argument(help="A version id, a unique prefix, or latest.")],
    output: OutputOption = "json",
    name: NameOption = None,
    store: StoreOption = None,
) -> None:
    """Print one version's metadata (verified), with its images and pin."""
    the_store = open_store(store, name)
    stored = the_store.get(version)
    shown = {
        **stored.metadata,
        "labels": stored.labels,
        "images": the_store.image_refs(stored.version),
        "pinned": stored.version in the_store.pinned(),
        "decisions": the_store.decisions(stored.version),
        "lineage": the_store.lineage(stored.version),
    }
    if output == "json":
        print_json(shown)
        return
    _print_summary(shown)
    for key in sorted(shown):
        print_line(f"{key}: {json.dumps(shown[key], sort_keys=True, default=str)}")


def _print_summary(metadata: dict[str, Any]) -> None:
    """The task, the model, its scores and parity, and the input schema as a table."""
    model = metadata.get("model") or {}
    task = metadata.get("task", "classification")
    estimator = model.get("final_estimator", "SVC")
    print_line(
        f"version {metadata['version']}: {task} with {model.get('spec', 'svm')} ({estimator})"
    )
    print_line(
        "  ".join(f"{name} {value:.4f}" for name, value in metric_values(metadata["metrics"]))
    )
    parity = metadata.get("parity") or {}
    if parity:
        print_line(
            f"parity: max |diff| {parity.get('max_abs_diff', 0):.2g} over "
            f"{parity.get('rows')} holdout and {parity.get('probes', 0)} probe rows "
            f"(tolerance {parity.get('tolerance')})"
        )
    schema = metadata.get("schema")
    if isinstance(schema, dict):
        table = Table("column", "type", "null", "values", box=box.SIMPLE_HEAD)
        for feature in schema.get("features", []):
            null = "yes" if feature.get("nullable") else "no"
            table.add_row(feature["name"], feature["type"], null, value_range(feature))
        print_table(table)


# What `models diff` compares, as (section, metadata keys).
DIFF_SECTIONS = (
    ("model", ("task", "model")),
    ("params", ("params",)),
    ("metrics", ("metrics",)),
    ("parity", ("parity",)),
    ("schema", ("schema",)),
    ("data", ("data_source", "data_hash", "data_rows", "feature_names")),
    ("libraries", ("libraries", "onnx", "code_revision")),
)


def diff_metadata(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, str, Any, Any]]:
    """(section, key, value in A, value in B) for every differing leaf, per-class metrics too."""
    rows = []
    for section, keys in DIFF_SECTIONS:
        for key in keys:
            for path, left, right in _leaf_diffs(key, a.get(key), b.get(key)):
                rows.append((section, path, left, right))
    return rows


def _leaf_diffs(path: str, left: Any, right: Any) -> list[tuple[str, Any, Any]]:
    if isinstance(left, dict) and isinstance(right, dict):
        found = []
        for key in sorted(set(left) | set(right), key=str):
            found.extend(_leaf_diffs(f"{path}.{key}", left.get(key), right.get(key)))
        return found
    return [] if left == right else [(path, left, right)]


@models_app.command("diff")
def diff(
    a: Annotated[str, typer.Argument(help="A version (id, unique prefix, latest).")],
    b: Annotated[str, typer.Argument(help="The version to compare it with.")],
    output: OutputOption = "text",
    name: NameOption = None,
    store: StoreOption = None,
) -> None:
    """Compare two versions: parameters, metrics, data and libraries."""
    the_store = open_store(store, name)
    left, right = the_store.resolve(a), the_store.resolve(b)
    rows = diff_metadata(the_store.metadata(left), the_store.metadata(right))
    if output == "json":
        print_json(
            {
                "a": left,
                "b": right,
                "differences": [{"section": s, "key": k, "a": x, "b": y} for s, k, x, y in rows],
            }
        )
        return
    print_line(f"a  {left}")
    print_line(f"b  {right}")
    if not rows:
        print_line("no differences in parameters, metrics, data or libraries")
        return
    table = Table("section", "key", "a", "b", box=box.SIMPLE_HEAD)
    for section, key, x, y in rows:
        table.add_row(section, key, _short(x), _short(y))
    print_table(table)


def _short(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return value if isinstance(value, str) else json.dumps(value, default=str)


def pin(version: str, name: NameOption = None, store: StoreOption = None) -> None:
    """Keep a version through every prune."""
    print_line(f"pinned {open_store(store, name).pin(version)}")


def unpin(version: str, name: NameOption = None, store: StoreOption = None) -> None:
    """Let retention remove a version again."""
    print_line(f"unpinned {open_store(store, name).unpin(version)}")


def keep_reasons(store: ArtifactStore, keep: int) -> dict[str, list[str]]:
    """Why retention keeps each version it keeps: newest N of a name, pinned, deployed,
    rollback target (each reason naming its model name)."""
    reasons: dict[str, list[str]] = {}
    for model in store.names():  # another name's keep protects a shared version too
        named = store.named(model)
        for info in named.list_versions()[:keep]:
            reasons.setdefault(info.version, []).append(f"one of the newest {keep} of {model}")
        for version in named.pinned():
            reasons.setdefault(version, []).append(f"pinned ({model})")
        for d in named.deployments():
            reasons.setdefault(d.current, []).append(f"deployed on {d.target} ({model})")
            if d.previous:
                reasons.setdefault(d.previous, []).append(
                    f"rollback target on {d.target} ({model})"
                )
    return reasons


def prune(
    keep: Annotated[
        int | None, typer.Option(min=1, help="Newest versions to keep [KILN_KEEP].")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would go.")] = False,
    name: NameOption = None,
    store: StoreOption = None,
) -> None:
    """Remove old versions: each model name keeps its newest --keep (every name's, or
    --name's); pinned, deployed and rollback versions of any name always stay."""
    from kiln.images.retention import prune_versions

    settings = get_settings().with_overrides(model=name, store=store, keep=keep)
    the_store = wiring.open_store(settings)
    reasons = keep_reasons(the_store, settings.keep)
    with wiring.open_registry(settings) as registry:
        pruned = prune_versions(
            the_store,
            settings.keep,
            registry=registry,
            dry_run=dry_run,
            base_repositories=(settings.base_repository,),
            every_name=name is None,
        )
    verb = "would remove" if dry_run else "removed"
    for info in pruned.versions.kept:
        why = ", ".join(reasons.get(info.version, ["kept by the store"]))
        print_line(f"keep {info.version} ({info.created}): {why}")
    for info in pruned.versions.removed:
        print_line(f"{verb} {info.version} ({info.created})")
    for image in pruned.images.deleted if pruned.images else []:
        print_line(f"{verb} image {image}")
    for leftover in pruned.cleaned:
        print_line(f"removed leftover {leftover}")
    print_line(
        f"{verb} {len(pruned.versions.removed)} version(s), kept {len(pruned.versions.kept)}; "
        "registry space returns with `scripts/infra.sh gc`"
    )
