"""How far ONNX Runtime's answers are from scikit-learn's, per model family, on the tables
kiln's tests use (wine with a text column and missing cells, diabetes as a regression, an
imbalanced binary set), over several seeds: the figures behind the parity tolerance's
defaults (kiln.training.export.PARITY_TOLERANCE).

    python bench/bench_parity.py [--seeds 3]

Prints, per table and model, the largest difference seen on the holdout and probe rows
(probabilities for a classification, values relative to their size for a regression) and
how many rows' labels differed where scikit-learn's probabilities tie.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # kiln and tests/

from kiln.training.data import load_data  # noqa: E402
from kiln.training.export import check_parity, default_tolerance, export_onnx  # noqa: E402
from kiln.training.params import TrainParams  # noqa: E402
from kiln.training.train import train_model  # noqa: E402
from tests.support import tables  # noqa: E402

TABLES = {"wine_mixed": "cultivar", "diabetes": "progression", "imbalanced": "diagnosis"}
MODELS = (
    "svm",
    "logistic",
    "random_forest",
    "hist_gradient_boosting",
    "tests/support/user_models.py:lightgbm_pipeline",
    "tests/support/user_models.py:xgboost_pipeline",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="kiln-bench-parity-"))
    print(f"{'table':<12} {'model':<24} {'family':<7} {'max diff':>9} {'ties':>5} {'default':>8}")
    for name, label in TABLES.items():
        path = tables.write(getattr(tables, name)(), folder / f"{name}.csv")
        data = load_data(str(path), label)
        for model in MODELS:
            if (
                data.task == "regression"
                and model in ("logistic",)
                or (data.task == "regression" and "pipeline" in model)
            ):
                continue  # classifiers only
            worst, ties, family = 0.0, 0, ""
            for seed in range(args.seeds):
                params = TrainParams(data=str(path), label_column=label, model=model, seed=seed)
                result = train_model(data, params)
                onnx_bytes, schema = export_onnx(result.model, data.schema)
                report = check_parity(onnx_bytes, result.model, result.X_holdout, schema, 1.0)
                worst, ties = max(worst, report.max_abs_diff), ties + report.ties
                family = result.description["family"]
            shown = model.rsplit(":", 1)[-1]
            default = default_tolerance(result.model, data.task)
            print(f"{name:<12} {shown:<24} {family:<7} {worst:>9.2g} {ties:>5} {default:>8.0e}")


if __name__ == "__main__":
    main()
