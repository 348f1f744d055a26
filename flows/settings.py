"""Settings from KILN_* environment variables; CLI flags override them per call."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class KilnSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KILN_", extra="ignore")

    # Artifact store: a local folder or any fsspec URL (s3://bucket/kiln, memory://x...).
    store: str = "artifacts"
    # Keep this many newest versions when pruning (pinned and deployed ones are always kept).
    keep: int = Field(default=5, ge=1)

    # Quality gate: the model must reach at least `gate_threshold` on `gate_metric`.
    gate_metric: Literal["accuracy", "f1_macro"] = "accuracy"
    gate_threshold: float = Field(default=0.9, ge=0.0, le=1.0)

    # Image build and registry.
    registry: str = "127.0.0.1:5000"
    repository: str = "kiln/iris"
    builder: Literal["auto", "engine", "layer"] = "auto"
    base_image: str = "python:3.11-slim"

    # Retries of the steps that talk to a registry, an engine or a cluster.
    retries: int = Field(default=3, ge=0)
    retry_delay: float = Field(default=2.0, ge=0.0)  # seconds; doubles on each retry

    # Rollout.
    target: Literal["local", "kubernetes"] = "local"
    local_port: int = Field(default=8000, ge=1, le=65535)
    # Containers of the local target are named <local_name>-<version> and labelled with it.
    local_name: str = Field(default="kiln", pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    k8s_namespace: str = "kiln"
    k8s_context: str | None = None


@lru_cache(maxsize=1)
def get_settings() -> KilnSettings:
    return KilnSettings()
