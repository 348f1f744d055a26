"""Options shared by several commands, declared once so their names and help agree."""

from typing import Annotated

import typer

DataOption = Annotated[
    str, typer.Option(help="iris, synthetic:ROWS or synthetic:ROWSxFEATURES, or a CSV path/URL.")
]
LabelColumnOption = Annotated[str, typer.Option(help="The CSV's label column.")]
COption = Annotated[float, typer.Option("--C", help="SVM regularisation strength.")]
KernelOption = Annotated[str, typer.Option(help="SVM kernel: rbf, linear, poly, sigmoid.")]
GammaOption = Annotated[str, typer.Option(help="SVM gamma: scale, auto, or a number.")]
SeedOption = Annotated[int, typer.Option(help="Seed for the split and the model.")]
MinScoreOption = Annotated[
    float | None,
    typer.Option(min=0.0, max=1.0, help="Quality gate threshold, 0 to 1 [KILN_GATE_THRESHOLD]."),
]
StoreOption = Annotated[
    str | None, typer.Option("--store", help="Artifact store path or fsspec URL [KILN_STORE].")
]
