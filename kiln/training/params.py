"""The one training parameter object: what to train on and how.

A pydantic model, so Prefect takes it as a flow parameter (a form in the UI, JSON on the
command line) and checks it before the run starts; `kiln train` and the benchmarks build
the same object through `TrainParams.checked`, which turns pydantic's report into one
KilnError in kiln's words. Nothing here loads data or imports scikit-learn.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kiln.config.errors import ParameterError

KERNELS = ("rbf", "linear", "poly", "sigmoid")
MAX_SEED = 2**32 - 1  # numpy's random_state range
PRESETS = ("svm", "logistic", "random_forest", "hist_gradient_boosting")
# MODULE:FUNCTION (a dotted module on the path) or path/to/file.py:FUNCTION.
MODEL_SPEC = re.compile(r"^(?:[A-Za-z_][\w.]*|[^:]+\.py):[A-Za-z_]\w*$")
SVM_DEFAULTS = {"C": 1.0, "kernel": "rbf", "gamma": "scale"}


class TrainParams(BaseModel):
    """What to train on and what to train: the data and its columns, the model (a preset or
    the user's factory) and its arguments; validated when built."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    data: str = "iris"
    label_column: str = "label"
    features: tuple[str, ...] | None = None  # the feature columns; None: every other column
    drop: tuple[str, ...] = ()  # columns left out (ids, leaks)
    delimiter: str | None = None  # a CSV's; None: sniffed
    task: Literal["classification", "regression"] | None = None  # None: inferred
    model: str = Field(
        default="svm",
        description="A preset (svm, logistic, random_forest, hist_gradient_boosting) or "
        "MODULE:FUNCTION / path/to/file.py:FUNCTION returning an unfitted estimator",
    )
    model_args: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments for the model's factory"
    )
    # The svm preset's parameters (today's model), kept as fields for existing deployments.
    C: float = 1.0
    kernel: str = "rbf"
    gamma: str | float = "scale"
    seed: int = 42
    test_size: float = 0.25

    @classmethod
    def checked(cls, **values: Any) -> TrainParams:
        """Build from loose values (CLI flags), raising ParameterError on any bad one."""
        try:
            return cls(**values)
        except ValidationError as err:
            raise ParameterError(describe(err)) from None

    def model_params(self) -> dict[str, Any]:
        """What the model depends on besides the data and the factory's source (recorded
        with it, part of cache keys). The svm preset's own three appear for it alone."""
        keys = {"model", "model_args", "task", "seed", "test_size"}
        if self.model == "svm":
            keys |= {"C", "kernel", "gamma"}
        return self.model_dump(include=keys)

    def factory_args(self) -> dict[str, Any]:
        """The keyword arguments the model's factory gets (the svm preset: C, kernel, gamma)."""
        if self.model == "svm":
            return {"C": self.C, "kernel": self.kernel, "gamma": self.gamma, **self.model_args}
        return dict(self.model_args)

    def columns(self) -> dict[str, Any]:
        """How to read the table (data.load_data's choices)."""
        return {
            "features": self.features,
            "drop": self.drop,
            "task": self.task,
            "delimiter": self.delimiter,
        }

    @model_validator(mode="after")
    def _svm_fields_for_svm(self) -> TrainParams:
        changed = [k for k, v in SVM_DEFAULTS.items() if getattr(self, k) != v]
        if changed and self.model != "svm":
            raise ValueError(
                f"{', '.join(changed)} belong to the svm preset; pass the model's own "
                "arguments with --param KEY=VALUE (model_args)"
            )
        return self

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        value = value.strip()
        if value not in PRESETS and not MODEL_SPEC.match(value):
            raise ValueError(
                f"model must be a preset ({', '.join(PRESETS)}) or MODULE:FUNCTION or "
                f"path/to/file.py:FUNCTION, got {value!r}"
            )
        return value

    @field_validator("features", "drop", mode="before")
    @classmethod
    def _column_list(cls, value: Any) -> Any:
        if isinstance(value, str):  # a comma-separated list, as the CLI and the UI give it
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple) and any(not str(v).strip() for v in value):
            raise ValueError("column names must be non-empty")
        return value

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, value: str | None) -> str | None:
        if value is not None and len(value) != 1:
            raise ValueError(f"delimiter must be one character, got {value!r}")
        return value

    @field_validator("data")
    @classmethod
    def _data(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("data must be iris, synthetic:ROWS[xFEATURES], or a CSV path or URL")
        if value.startswith("synthetic:"):
            parse_synthetic(value)
        return value

    @field_validator("label_column")
    @classmethod
    def _label_column(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("label column must be a non-empty column name")
        return value.strip()

    @field_validator("C", mode="before")
    @classmethod
    def _c(cls, value: Any) -> float:
        number = _number(value)
        if number is None or number <= 0:
            raise ValueError(f"C must be a positive number, got {value!r}")
        return number

    @field_validator("kernel")
    @classmethod
    def _kernel(cls, value: str) -> str:
        if value not in KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {value!r}")
        return value

    @field_validator("gamma", mode="before")
    @classmethod
    def _gamma(cls, value: Any) -> str | float:
        if value in ("scale", "auto"):
            return str(value)
        number = _number(value)
        if number is None or number <= 0:
            raise ValueError(f"gamma must be 'scale', 'auto' or a number > 0, got {value!r}")
        return number

    @field_validator("seed", mode="before")
    @classmethod
    def _seed(cls, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
            raise ValueError(f"seed must be a whole number from 0 to {MAX_SEED}, got {value!r}")
        return value

    @field_validator("test_size", mode="before")
    @classmethod
    def _test_size(cls, value: Any) -> float:
        number = _number(value)
        if number is None or not 0 < number < 1:
            raise ValueError(f"test_size must be a fraction between 0 and 1, got {value!r}")
        return number


def _number(value: Any) -> float | None:
    """A finite float from a number or a numeric string; None for anything else."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def parse_synthetic(spec: str) -> tuple[int, int]:
    """`synthetic:ROWS[xFEATURES]` -> (rows, features); features default to 20."""
    rows, _, features = spec.removeprefix("synthetic:").partition("x")
    try:
        parsed = int(rows), int(features) if features else 20
    except ValueError:
        raise ValueError(
            f"bad synthetic spec {spec!r}: use synthetic:ROWS or ROWSxFEATURES"
        ) from None
    if parsed[0] < 1 or parsed[1] < 1:
        raise ValueError(f"bad synthetic spec {spec!r}: rows and features must be positive")
    return parsed


def describe(err: ValidationError) -> str:
    """pydantic's errors as one line: our own messages, or the field and what is wrong."""
    parts = []
    for error in err.errors():
        field = ".".join(str(loc) for loc in error["loc"]) or "parameters"
        if error["type"] == "value_error":
            parts.append(str(error["ctx"]["error"]))
        elif error["type"] == "extra_forbidden":
            parts.append(f"unknown training parameter {field!r}")
        else:
            parts.append(f"{field}: {error['msg'].lower()}")
    return "; ".join(parts)
