"""Settings from KILN_* environment variables; CLI flags override them per call.

Every knob kiln reads from the environment lives here, validated in one place. A bad
environment value becomes a SettingsError naming the variable; a bad flag (or flow
parameter) given to `with_overrides` becomes one naming the setting. Library code never
reads settings: kiln/wiring.py turns them into the collaborators it takes.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BeforeValidator, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kiln.config.defaults import DEFAULT_STATE_DIR
from kiln.config.errors import SettingsError
from kiln.config.names import DEFAULT_NAME, NAME_PATTERN, NAME_RULE, is_name

ENV_PREFIX = "KILN_"
REPOSITORY_NAME = r"^[a-z0-9]+([._/-][a-z0-9]+)*$"  # the OCI distribution spec's repository names
# A work pool or bucket name of the team setup: fits S3's bucket and DNS label rules.
TEAM_NAME = r"^[a-z0-9][a-z0-9-]{0,62}$"

Target = Literal["local", "kubernetes"]
TARGETS: tuple[str, ...] = get_args(Target)  # where kiln can roll out: declared here, once
BuilderName = Literal["auto", "engine", "layer"]
PortNumber = Annotated[int, Field(ge=1, le=65535)]


def _model_name(value: object) -> object:
    """Say what a name is (before the pattern check, whose message would not)."""
    if isinstance(value, str) and not is_name(value):
        raise ValueError(NAME_RULE)
    return value


ModelName = Annotated[str, BeforeValidator(_model_name)]
GateMetric = Literal["accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "r2", "rmse", "mae"]


class KilnSettings(BaseSettings):
    """Every KILN_* environment variable kiln reads; a command's flags override them per call.

    Each field's description is the text of the configuration reference
    (docs/reference/settings.md is generated from it; a test fails on a field without one).
    """

    # An empty variable counts as unset: prefect.yaml fills job variables from the deploying
    # shell, and one that was not set there arrives as "".
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", env_ignore_empty=True)

    model: ModelName = Field(
        default=DEFAULT_NAME,
        pattern=NAME_PATTERN,
        description="The model name commands and the pipeline work on (`--name` per call): "
        "its own versions, pins, retention, champion, image repository and endpoint in a "
        "store shared with other names. A DNS label starting with a letter, at most 40 "
        "characters.",
    )
    store: str = Field(
        default="artifacts",
        min_length=1,
        description="The artifact store: a local folder or any fsspec URL "
        "(`s3://bucket/kiln`, `memory://x`). Every command that reads or writes models "
        "takes `--store` too.",
    )
    keep: int = Field(
        default=5,
        ge=1,
        description="How many of the newest versions `kiln prune` and the pipeline's retain "
        "step keep; pinned versions, deployed ones and rollback targets are always kept.",
    )

    max_data_rows: int = Field(
        default=1_000_000,
        ge=1,
        description="Data rows a CSV may hold; a larger one is refused with one error before "
        "training.",
    )
    max_data_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1,
        description="Bytes a CSV may hold (the default is 256 MiB); a larger one is refused "
        "with one error before training.",
    )

    gate_metric: GateMetric | None = Field(
        default=None,
        description="The metric both gates judge a model on: accuracy, balanced_accuracy, "
        "f1_macro or roc_auc for a classification; r2, rmse or mae for a regression. Unset: "
        "accuracy for a classification, r2 for a regression.",
    )
    gate_threshold: float | None = Field(
        default=None,
        ge=0.0,
        description="The quality gate: a model scoring below this on the gate metric (above "
        "it, for the error metrics rmse and mae) is neither exported nor stored "
        "(`--min-score` per call). Unset: 0.9 for accuracy, 0.8 for balanced_accuracy, "
        "f1_macro and roc_auc, 0.3 for r2; rmse and mae need one.",
    )
    gate_min_class_recall: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="The quality gate's floor on every class's holdout recall: an imbalanced "
        "set can score a high accuracy while missing its rare class. Unset: no floor.",
    )
    gate_tolerance: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="The champion gate: a new model replaces the one a target runs only when "
        "its score, on the same rows, is not worse than the champion's by more than this. At "
        "0 an equal score ships and a worse one does not.",
    )
    parity_tolerance: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="How far ONNX Runtime's probabilities (or regression values, relative to "
        "their size) may be from scikit-learn's on the holdout and probe rows. Unset: the "
        "model family's default, 1e-5 for linear models and SVMs, larger for tree ensembles "
        "(docs: benchmarks, parity).",
    )

    registry: str = Field(
        default="127.0.0.1:5000",
        min_length=1,
        description="The registry images are pushed to, as `host:port`.",
    )
    repository: str = Field(
        default="kiln",
        pattern=REPOSITORY_NAME,
        description="The prefix of the serving images' repositories in that registry: a "
        "model name's images go to `<prefix>/<name>` (`kiln/model` by default), tagged "
        "with the model version.",
    )
    base_repository: str = Field(
        default="kiln/serve-base",
        pattern=REPOSITORY_NAME,
        description="Where the engine builder publishes the serving base that the layer "
        "builder appends a model to.",
    )
    runner_repository: str = Field(
        default="kiln/runner",
        pattern=REPOSITORY_NAME,
        description="Where `kiln build --runner` pushes the runner image (kiln and the "
        "pipeline, for the Kubernetes work pool's Jobs).",
    )
    builder: BuilderName = Field(
        default="auto",
        description="How images are built: `engine` (a Docker-compatible engine), `layer` "
        "(no daemon: the model appended to the serving base in the registry) or `auto` "
        "(`layer` when the current base is in the registry, else `engine`).",
    )
    base_image: str = Field(
        default="python:3.11-slim",
        description="The image the serving base is built on.",
    )
    registry_timeout: float = Field(default=30.0, gt=0, description="Seconds per registry request.")

    state_dir: Path = Field(
        default=DEFAULT_STATE_DIR,
        description="Where `kiln up` keeps its state: configuration, sockets, pid files, "
        "logs, the registry's storage, the warm runner's socket.",
    )
    cache_dir: Path | None = Field(
        default=None,
        description="The download cache of the serving and runner images' wheels; unset, "
        "`<state dir>/cache/wheels`.",
    )
    engine_timeout: int = Field(
        default=300, ge=1, description="Seconds per container engine request."
    )
    prefect_port: PortNumber = Field(
        default=4200,
        description="The port of the Prefect server `kiln up` starts, and that `kiln run` "
        "looks for.",
    )

    retries: int = Field(
        default=3,
        ge=0,
        description="Retries of the steps that talk to a registry, an engine, a cluster or "
        "an S3 store; each S3 call is tried this many times plus one.",
    )
    retry_delay: float = Field(
        default=2.0,
        ge=0.0,
        description="Seconds before the first retry; the delay doubles on each retry.",
    )

    target: Target = Field(
        default="local",
        description="Where `kiln deploy`, `kiln run` and the pipeline roll out: `local` or "
        "`kubernetes`.",
    )
    local_port: PortNumber = Field(
        default=8000,
        description="The local target's stable port on 127.0.0.1, for the default model "
        "name; other names get ports of their own (KILN_PORT).",
    )
    port: PortNumber | None = Field(
        default=None,
        description="The stable local port of the model name being deployed (`--port`). "
        "Unset: KILN_LOCAL_PORT for the default name; for any other name the port its "
        "deployment record names, or a free one, chosen once and recorded.",
    )
    local_name: str = Field(
        default="kiln",
        pattern=r"^[a-z0-9][a-z0-9_.-]*$",
        description="The local target's containers are named `<local_name>-<version>` "
        "(`<local_name>-<model name>-<version>` for a name other than the default) and "
        "labelled with it, so separate setups and names on one engine never share containers.",
    )
    local_timeout: float = Field(
        default=120.0,
        gt=0,
        description="Seconds a new local container has to become ready.",
    )
    local_poll_interval: float = Field(
        default=0.05,
        gt=0,
        description="Seconds between two `/ready` requests to a starting local container.",
    )
    local_stop_timeout: int = Field(
        default=10,
        ge=0,
        description="Seconds a stopping local container has before it is sent SIGKILL.",
    )
    k8s_namespace: str = Field(
        default="kiln",
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="The Kubernetes target's namespace.",
    )
    k8s_context: str | None = Field(
        default=None,
        description="The kubeconfig context of the Kubernetes target; unset, the "
        "kubeconfig's current context (inside a cluster, the pod's service account).",
    )
    k8s_timeout: float = Field(
        default=600.0,
        gt=0,
        description="Seconds a Deployment (and the candidate) has to roll out.",
    )
    k8s_poll_interval: float = Field(
        default=2.0,
        gt=0,
        description="Seconds between two reads of a rolling-out Deployment.",
    )
    k8s_request_timeout: float = Field(
        default=30.0, gt=0, description="Seconds per Kubernetes API request."
    )
    k8s_create_namespace: bool = Field(
        default=False,
        description="Create the namespace (with the `restricted` Pod Security label) when "
        "it is missing; an existing namespace is never touched.",
    )

    serve_port: PortNumber = Field(
        default=8700,
        description="The port of `kiln serve`, apart from the local target's so the two "
        "never collide.",
    )

    team_dir: Path | None = Field(
        default=None,
        description="The team setup's state (`kiln up --team`); unset, `<state dir>/team`.",
    )
    team_postgres_port: PortNumber = Field(
        default=54320,
        description="The port of the team setup's PostgreSQL cluster.",
    )
    team_s3_port: int = Field(
        default=8333,
        ge=1,
        le=65535,
        description="The port of the team setup's S3 server (SeaweedFS).",
    )
    team_bucket: str = Field(
        default="kiln",
        pattern=TEAM_NAME,
        description="The team setup's bucket, for models and Prefect's results.",
    )
    team_pool: str = Field(
        default="kiln",
        pattern=TEAM_NAME,
        description="The team setup's process work pool.",
    )
    team_workers: int = Field(
        default=2,
        ge=0,
        le=16,
        description="How many process workers the team setup starts.",
    )
    team_crash_after: int = Field(
        default=90,
        ge=45,
        le=86400,
        description="Seconds without a heartbeat before the team setup's automation marks "
        "a flow run Crashed.",
    )

    debug: bool = Field(
        default=False,
        description="Full tracebacks for every error, and Prefect's own logs (also "
        "`kiln --debug`).",
    )

    @property
    def wheel_cache_dir(self) -> Path:
        return self.cache_dir or self.state_dir / "cache" / "wheels"

    @field_validator("gate_threshold")
    @classmethod
    def _threshold_fits_the_metric(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and value > 1 and info.data.get("gate_metric") not in ("rmse", "mae"):
            raise ValueError(
                "a score threshold is at most 1 (only the error metrics rmse and mae, set "
                "with KILN_GATE_METRIC, take larger limits)"
            )
        return value

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
