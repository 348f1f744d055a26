"""A stored version described in words: its headline metrics and its input schema, for
the Prefect model card (reports.py) and `kiln models` alike. No Prefect here: the CLI
imports it without loading Prefect."""

from __future__ import annotations

from typing import Any


def metric_values(metrics: dict[str, Any]) -> list[tuple[str, float]]:
    """The task's headline metrics, those the model recorded (undefined ones left out)."""
    return [
        (k, float(v))
        for k, v in metrics.items()
        if isinstance(v, float | int) and k != "holdout_rows"
    ]


def schema_table(metadata: dict[str, Any]) -> list[str]:
    """The input schema as a Markdown table: what a client sends."""
    schema = metadata.get("schema")
    if not isinstance(schema, dict):
        names = metadata.get("feature_names") or []
        return ["## Input", "", f"one row of {len(names)} numbers: {', '.join(names)}"]
    lines = [
        f"## Input ({schema.get('layout')} layout)",
        "",
        "| column | type | may be null | values |",
        "| --- | --- | --- | --- |",
    ]
    for feature in schema.get("features", []):
        lines.append(
            f"| {feature['name']} | {feature['type']} | "
            f"{'yes' if feature.get('nullable') else 'no'} | {value_range(feature)} |"
        )
    return lines


def value_range(feature: dict[str, Any]) -> str:
    if feature.get("categories") is not None:
        shown = feature["categories"][:8]
        more = len(feature["categories"]) - len(shown)
        return ", ".join(shown) + (f" (+{more} more)" if more > 0 else "")
    if feature.get("min") is not None:
        return f"{feature['min']:g} to {feature['max']:g}"
    return ""


def headline(metrics: dict[str, Any]) -> str:
    """The first metric a version recorded (accuracy, or r2 for a regression), as text."""
    values = metric_values(metrics)
    return f"{values[0][0]} {values[0][1]:.4f}" if values else ""
