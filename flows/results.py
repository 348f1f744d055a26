"""What a pipeline run returns: one typed result, which the CLI prints and `-o json` dumps."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


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
