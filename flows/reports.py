"""What a run shows in the Prefect UI: a model card and the version history."""

from __future__ import annotations

from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.store import ArtifactStore


def model_card(metadata: dict[str, Any], labels: dict[str, str], extra: dict[str, Any]) -> str:
    metrics = metadata.get("metrics", {})
    names = [labels[k] for k in sorted(labels, key=int)]
    lines = [
        f"# Model {metadata['version']}",
        "",
        "| field | value |",
        "| --- | --- |",
        f"| version | `{metadata['version']}` |",
        f"| created | {metadata.get('created', '')} |",
        f"| data | {metadata.get('data_source', '')} ({metadata.get('data_rows', '?')} rows) |",
        f"| data hash | `{metadata.get('data_hash', '')[:16]}` |",
        f"| parameters | `{metadata.get('params', {})}` |",
        f"| model sha256 | `{metadata.get('model_sha256', '')}` |",
        f"| code revision | `{metadata.get('code_revision')}` |",
        f"| accuracy | {metrics.get('accuracy', float('nan')):.4f} |",
        f"| macro F1 | {metrics.get('f1_macro', float('nan')):.4f} |",
    ]
    for key, value in extra.items():
        lines.append(f"| {key.replace('_', ' ')} | {value} |")
    matrix = metrics.get("confusion_matrix")
    if matrix:
        lines += ["", "## Confusion matrix (rows: true, columns: predicted)", ""]
        lines.append("| | " + " | ".join(names) + " |")
        lines.append("| --- " * (len(names) + 1) + "|")
        for name, row in zip(names, matrix, strict=False):
            lines.append(f"| **{name}** | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def publish_model_card(store: ArtifactStore, version: str, **extra: Any) -> None:
    stored = store.get(version)
    create_markdown_artifact(
        key="kiln-model-card",
        markdown=model_card(stored.metadata, stored.labels, extra),
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
            "accuracy": round(float(v.metrics.get("accuracy", float("nan"))), 4),
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
