"""Options shared by several commands, declared once so their names, help and checks agree.

Each check runs while the command line is parsed, before any work: a bad value is a
usage error (status 2) that names the option and what it accepts.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import typer

from kiln.config.settings import BuilderName, Target

Kernel = Literal["rbf", "linear", "poly", "sigmoid"]
Output = Literal["text", "json"]
TaskName = Literal["classification", "regression"]


def _positive_c(value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        raise typer.BadParameter(
            f"{value:g} is not a positive number; C is the SVM's regularisation strength "
            "(try 0.1 to 100)"
        )
    return value


def _gamma(value: str) -> str:
    if value in ("scale", "auto"):
        return value
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise typer.BadParameter(f"{value!r} is not 'scale', 'auto' or a positive number")
    return value


def _data_spec(value: str) -> str:
    from kiln.cli.validate import check_data_spec

    try:
        check_data_spec(value)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    return value


DataOption = Annotated[
    str,
    typer.Option(
        callback=_data_spec,
        help="iris, synthetic:ROWS or synthetic:ROWSxFEATURES, or a CSV or Parquet path/URL.",
    ),
]
LabelColumnOption = Annotated[str, typer.Option(help="The table's label column.")]
ModelOption = Annotated[
    str,
    typer.Option(
        "--model",
        help="A preset (svm, logistic, random_forest, hist_gradient_boosting) or "
        "MODULE:FUNCTION or path/to/file.py:FUNCTION returning an unfitted scikit-learn "
        "estimator or Pipeline.",
    ),
]
ParamOption = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        help="KEY=VALUE for the model's factory, typed from its signature (repeatable).",
    ),
]
TaskOption = Annotated[
    TaskName | None,
    typer.Option("--task", help="classification or regression (default: inferred from the label)."),
]
FeaturesOption = Annotated[
    str | None,
    typer.Option(help="Comma-separated feature columns (default: every column but the label)."),
]
DropOption = Annotated[
    str | None, typer.Option(help="Comma-separated columns to leave out (ids, leaks).")
]
DelimiterOption = Annotated[
    str | None, typer.Option(help="The CSV's delimiter (default: sniffed from the file).")
]
ReplaceSchemaOption = Annotated[
    bool,
    typer.Option(
        "--replace-schema",
        help="Ship a model that takes other columns than the one the target runs "
        "(its clients must change too).",
    ),
]
COption = Annotated[
    float, typer.Option("--C", callback=_positive_c, help="SVM regularisation strength (> 0).")
]
KernelOption = Annotated[Kernel, typer.Option(help="SVM kernel.")]
GammaOption = Annotated[
    str, typer.Option(callback=_gamma, help="SVM gamma: scale, auto, or a positive number.")
]
SeedOption = Annotated[
    int, typer.Option(min=0, max=2**32 - 1, help="Seed for the split and the model.")
]
MinScoreOption = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        max=1.0,
        help="Quality gate threshold, 0 to 1 [KILN_GATE_THRESHOLD, which also takes the "
        "largest error for rmse and mae].",
    ),
]


def _model_name(value: str | None) -> str | None:
    from kiln.config.errors import SettingsError
    from kiln.config.names import check_name

    if value is None:
        return None
    try:
        return check_name(value)
    except SettingsError as err:
        raise typer.BadParameter(str(err)) from None


NameOption = Annotated[
    str | None,
    typer.Option(
        "--name",
        callback=_model_name,
        help="The model name: its own versions, champion, image repository and endpoint "
        "[KILN_MODEL; default: model].",
    ),
]
PortOption = Annotated[
    int | None,
    typer.Option(
        "--port",
        min=1,
        max=65535,
        help="The name's stable local port [KILN_PORT; default: KILN_LOCAL_PORT for the "
        "default name, the recorded or a free one for others].",
    ),
]
StoreOption = Annotated[
    str | None, typer.Option("--store", help="Artifact store path or fsspec URL [KILN_STORE].")
]
RegistryOption = Annotated[
    str | None, typer.Option("--registry", help="Registry host:port [KILN_REGISTRY].")
]
RepositoryOption = Annotated[
    str | None,
    typer.Option(
        "--repository",
        help="Where model images go: a prefix, `<prefix>/<name>` [KILN_REPOSITORY]; with "
        "--runner, the runner's repository [KILN_RUNNER_REPOSITORY].",
    ),
]
BaseRepositoryOption = Annotated[
    str | None,
    typer.Option(
        "--base-repository", help="Where the serving base is kept [KILN_BASE_REPOSITORY]."
    ),
]
BuilderOption = Annotated[
    BuilderName | None,
    typer.Option(
        "--builder",
        help="auto (layer when the serving base is in the registry), engine, or layer "
        "[KILN_BUILDER].",
    ),
]
TargetOption = Annotated[
    Target | None,
    typer.Option("--target", help="Where it runs: local or kubernetes [KILN_TARGET]."),
]
OutputOption = Annotated[
    Output, typer.Option("--output", "-o", help="text for people, json for scripts.")
]
ForceOption = Annotated[
    bool,
    typer.Option(
        "--force", help="Ship even when the model scores worse than the one the target runs."
    ),
]


# The flags `kiln train` and `kiln run` share, as their functions name them.
TRAINING_FLAGS = (
    "data",
    "label_column",
    "model",
    "param",
    "task",
    "features",
    "drop",
    "delimiter",
    "c",
    "kernel",
    "gamma",
    "seed",
)


def training_from_flags(flags: dict[str, Any]) -> Any:
    """The TrainParams of a command's flags, read by name from its `locals()`."""
    values = {name: flags[name] for name in TRAINING_FLAGS}
    values["model_args"] = parse_params(values.pop("param"))
    values["C"] = values.pop("c")
    return training_params(**values)


def training_params(**values: Any) -> Any:
    """The TrainParams of a `kiln train` or `kiln run` command line, checked, with its model
    factory found and its arguments typed: a bad one is one line before any work."""
    from kiln.training.models import resolve
    from kiln.training.params import TrainParams

    params = TrainParams.checked(**{k: v for k, v in values.items() if v is not None})
    resolve(params)
    return params


def parse_params(values: list[str] | None) -> dict[str, str]:
    """`--param KEY=VALUE` pairs; the values are typed later, from the factory's signature."""
    parsed: dict[str, str] = {}
    for value in values or []:
        key, sep, text = value.partition("=")
        if not sep or not key.strip().isidentifier():
            raise typer.BadParameter(
                f"{value!r} is not KEY=VALUE with KEY a Python name", param_hint="--param"
            )
        parsed[key.strip()] = text
    return parsed
