"""Options shared by several commands, declared once so their names, help and checks agree.

Each check runs while the command line is parsed, before any work: a bad value is a
usage error (status 2) that names the option and what it accepts.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import typer

from kiln.config.settings import BuilderName, Target

Kernel = Literal["rbf", "linear", "poly", "sigmoid"]
Output = Literal["text", "json"]


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
        help="iris, synthetic:ROWS or synthetic:ROWSxFEATURES, or a CSV path/URL.",
    ),
]
LabelColumnOption = Annotated[str, typer.Option(help="The CSV's label column.")]
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
    typer.Option(min=0.0, max=1.0, help="Quality gate threshold, 0 to 1 [KILN_GATE_THRESHOLD]."),
]
StoreOption = Annotated[
    str | None, typer.Option("--store", help="Artifact store path or fsspec URL [KILN_STORE].")
]
RegistryOption = Annotated[
    str | None, typer.Option("--registry", help="Registry host:port [KILN_REGISTRY].")
]
RepositoryOption = Annotated[
    str | None, typer.Option("--repository", help="Image repository [KILN_REPOSITORY].")
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
