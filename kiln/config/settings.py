"""Settings from KILN_* environment variables; CLI flags override them per call.

Every knob kiln reads from the environment lives here, validated in one place. A bad
environment value becomes a SettingsError naming the variable; a bad flag (or flow
parameter) given to `with_overrides` becomes one naming the setting. Library code never
reads settings: kiln/wiring.py turns them into the collaborators it takes.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from kiln.config.defaults import DEFAULT_STATE_DIR
from kiln.config.errors import SettingsError

ENV_PREFIX = "KILN_"
REPOSITORY_NAME = r"^[a-z0-9]+([._/-][a-z0-9]+)*$"  # the OCI distribution spec's repository names
# A work pool or bucket name of the team setup: fits S3's bucket and DNS label rules.
TEAM_NAME = r"^[a-z0-9][a-z0-9-]{0,62}$"

Target = Literal["local", "kubernetes"]
BuilderName = Literal["auto", "engine", "layer"]
GateMetric = Literal["accuracy", "f1_macro"]


class KilnSettings(BaseSettings):
    # An empty variable counts as unset: prefect.yaml fills job variables from the deploying
    # shell, and one that was not set there arrives as "".
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", env_ignore_empty=True)

    # Artifact store: a local folder or any fsspec URL (s3://bucket/kiln, memory://x...).
    store: str = Field(default="artifacts", min_length=1)
    # Keep this many newest versions when pruning (pinned and deployed ones are always kept).
    keep: int = Field(default=5, ge=1)

    # Data loading limits: a larger CSV is refused with one clear error before training.
    max_data_rows: int = Field(default=1_000_000, ge=1)
    max_data_bytes: int = Field(default=256 * 1024 * 1024, ge=1)  # 256 MiB

    # Quality gate: the model must reach at least `gate_threshold` on `gate_metric`.
    gate_metric: GateMetric = "accuracy"
    gate_threshold: float = Field(default=0.9, ge=0.0, le=1.0)
    # Champion gate: a new model replaces the one a target runs only when its score is at
    # least the champion's minus this (on the same rows).
    gate_tolerance: float = Field(default=0.0, ge=0.0, le=1.0)

    # Image build and registry.
    registry: str = Field(default="127.0.0.1:5000", min_length=1)
    repository: str = Field(default="kiln/iris", pattern=REPOSITORY_NAME)
    base_repository: str = Field(default="kiln/serve-base", pattern=REPOSITORY_NAME)
    # The runner image (`kiln build --runner`): kiln and the pipeline, for Kubernetes Jobs.
    runner_repository: str = Field(default="kiln/runner", pattern=REPOSITORY_NAME)
    builder: BuilderName = "auto"
    base_image: str = "python:3.11-slim"
    registry_timeout: float = Field(default=30.0, gt=0)  # seconds per registry request

    # Local infrastructure: where `kiln up` keeps its state, sockets and logs, and the
    # download cache of the serving image's wheels (default: <state_dir>/cache/wheels).
    state_dir: Path = DEFAULT_STATE_DIR
    cache_dir: Path | None = None
    engine_timeout: int = Field(default=300, ge=1)  # seconds per container engine request
    prefect_port: int = Field(default=4200, ge=1, le=65535)  # the server `kiln up` starts

    # Retries of the steps that talk to a registry, an engine, a cluster or an S3 store.
    retries: int = Field(default=3, ge=0)
    retry_delay: float = Field(default=2.0, ge=0.0)  # seconds; doubles on each retry

    # Rollout.
    target: Target = "local"
    local_port: int = Field(default=8000, ge=1, le=65535)
    # Containers of the local target are named <local_name>-<version> and labelled with it.
    local_name: str = Field(default="kiln", pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    local_timeout: float = Field(default=120.0, gt=0)  # seconds until a container is ready
    local_poll_interval: float = Field(default=0.05, gt=0)
    local_stop_timeout: int = Field(default=10, ge=0)  # seconds before SIGKILL
    k8s_namespace: str = Field(default="kiln", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    k8s_context: str | None = None
    k8s_timeout: float = Field(default=600.0, gt=0)  # seconds until a Deployment is ready
    k8s_poll_interval: float = Field(default=2.0, gt=0)
    k8s_request_timeout: float = Field(default=30.0, gt=0)
    # Create the namespace (restricted Pod Security) if missing; an existing one is never touched.
    k8s_create_namespace: bool = False

    # `kiln serve` (its own default port, so it never collides with the local target).
    serve_port: int = Field(default=8700, ge=1, le=65535)

    # The team setup (`kiln up --team`, flows/team/): its state (default <state_dir>/team),
    # ports, bucket, work pool, workers, and seconds without a heartbeat before a run is
    # marked Crashed. The Prefect server's port is prefect_port.
    team_dir: Path | None = None
    team_postgres_port: int = Field(default=54320, ge=1, le=65535)
    team_s3_port: int = Field(default=8333, ge=1, le=65535)
    team_bucket: str = Field(default="kiln", pattern=TEAM_NAME)
    team_pool: str = Field(default="kiln", pattern=TEAM_NAME)
    team_workers: int = Field(default=2, ge=0, le=16)
    team_crash_after: int = Field(default=90, ge=45, le=86400)

    # Full tracebacks for every error (also `kiln --debug`).
    debug: bool = False

    @property
    def wheel_cache_dir(self) -> Path:
        return self.cache_dir or self.state_dir / "cache" / "wheels"

    def with_overrides(self, **overrides: Any) -> KilnSettings:
        """These settings with the non-None overrides on top, validated like the environment.

        Raises SettingsError naming the setting and the bad value; unknown names are a
        programming error (TypeError).
        """
        chosen = {key: value for key, value in overrides.items() if value is not None}
        unknown = sorted(set(chosen) - set(type(self).model_fields))
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(unknown)}")
        if not chosen:
            return self
        try:
            return type(self).model_validate({**self.model_dump(), **chosen})
        except ValidationError as err:
            raise settings_error(err, source="override") from None


def settings_error(
    err: ValidationError, source: Literal["environment", "override"]
) -> SettingsError:
    """One line for the first problem: the variable (or setting), its value, what is wrong."""
    first = err.errors()[0]
    name = str(first["loc"][0]) if first["loc"] else "?"
    value = first.get("input")
    reason = str(first["msg"])
    reason = reason[0].lower() + reason[1:] if reason else "invalid"
    if source == "environment":
        variable = f"{ENV_PREFIX}{name.upper()}"
        return SettingsError(
            f"{variable}={value!r} is not valid: {reason}; fix or unset {variable}",
            setting=name,
        )
    return SettingsError(f"{name} {value!r} is not valid: {reason}", setting=name)


@lru_cache(maxsize=1)
def get_settings() -> KilnSettings:
    try:
        return KilnSettings()
    except ValidationError as err:
        raise settings_error(err, source="environment") from None
