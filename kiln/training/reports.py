"""What a run shows in the Prefect UI: a model card and the version history."""

from __future__ import annotations

from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from kiln.store.artifact_store import ArtifactStore
from kiln.training.promotion import Decision, decision_summary, latest_decision
from kiln.training.summary import headline, metric_values, schema_table


def model_card(
    metadata: dict[str, Any],
    labels: dict[str, str],
    extra: dict[str, Any],
    decision: Decision | None = None,
) -> str:
    metrics = metadata.get("metrics", {})
    model = metadata.get("model") or {}
    names = [labels[k] for k in sorted(labels, key=int)]
    lines = [
        f"# Model {metadata['version']}",
        "",
        "| field | value |",
        "| --- | --- |",
        f"| version | `{metadata['version']}` |",
        f"| created | {metadata.get('created', '')} |",
        f"| task | {metadata.get('task', 'classification')} |",
        f"| model | `{model.get('spec', 'svm')}`: {model.get('final_estimator', '')} |",
        f"| arguments | `{model.get('args', metadata.get('params', {}))}` |",
        f"| data | {metadata.get('data_source', '')} ({metadata.get('data_rows', '?')} rows) |",
        f"| data hash | `{metadata.get('data_hash', '')[:16]}` |",
        f"| model sha256 | `{metadata.get('model_sha256', '')}` |",
        f"| code revision | `{metadata.get('code_revision')}` |",
    ]
    if model.get("source_sha256"):
        lines.append(f"| model source sha256 | `{model['source_sha256'][:16]}` |")
    lines += [f"| {name} | {value:.4f} |" for name, value in metric_values(metrics)]
    lines += [f"| {key.replace('_', ' ')} | {value} |" for key, value in extra.items()]
    lines += ["", *schema_table(metadata)]
    matrix = metrics.get("confusion_matrix")
    if matrix:
        lines += ["", "## Confusion matrix (rows: true, columns: predicted)", ""]
        lines.append("| | " + " | ".join(names) + " |")
        lines.append("| --- " * (len(names) + 1) + "|")
        for name, row in zip(names, matrix, strict=False):
            lines.append(f"| **{name}** | " + " | ".join(str(v) for v in row) + " |")
    if decision is not None and decision.target is not None:
        lines += ["", *promotion_table(decision)]
    return "\n".join(lines) + "\n"


def promotion_table(decision: Decision) -> list[str]:
    """Challenger and champion side by side, with how and what was decided."""
    d = decision

    def cell(value: Any, fmt: str = "{}") -> str:
        return "-" if value is None else fmt.format(value)

    return [
        f"## Champion gate on {d.target}: {d.outcome}",
        "",
        "| | challenger | champion |",
        "| --- | --- | --- |",
        f"| version | `{d.challenger}` | {cell(d.champion, '`{}`')} |",
        f"| {d.metric} | {d.challenger_score:.4f} | {cell(d.champion_score, '{:.4f}')} |",
        f"| rows scored | {d.challenger_rows} | {cell(d.champion_rows)} |",
        "",
        f"compared on {d.basis}; tolerance {d.tolerance:g}",
        "",
        f"**{d.outcome}**: {d.reason}",
    ]


def publish_model_card(
    store: ArtifactStore, version: str, decision: Decision | None = None, **extra: Any
) -> None:
    stored = store.get(version)
    create_markdown_artifact(
        key="kiln-model-card",
        markdown=model_card(stored.metadata, stored.labels, extra, decision),
        description=f"model {version}",
    )


def version_rows(store: ArtifactStore) -> list[dict[str, Any]]:
    deployed: dict[str, list[str]] = {}
    for d in store.deployments():
        deployed.setdefault(d.current, []).append(d.target)
        if d.previous:
            deployed.setdefault(d.previous, []).append(f"{d.target} (rollback)")
    return [
        {
            "version": v.version,
            "created": v.created,
            "score": headline(v.metrics),
            "decision": decision_summary(latest_decision(store, v.version)),
            "pinned": v.pinned,
            "deployed": ", ".join(deployed.get(v.version, [])),
            "images": ", ".join(v.images),
        }
        for v in store.list_versions()
    ]


def publish_version_table(store: ArtifactStore) -> None:
    create_table_artifact(
        key="kiln-versions", table=version_rows(store), description="stored model versions"
    )
