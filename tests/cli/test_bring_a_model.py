"""`kiln run` and `kiln train` with the user's model: every way to get it wrong is one
clear error before any data is read or any service is asked."""

from __future__ import annotations

from pathlib import Path

from tests.support import tables
from tests.support.factories import run_kiln

USER_MODELS = Path(__file__).resolve().parents[1] / "support" / "user_models.py"


def test_bad_model_input_is_one_line_before_any_work(tmp_path):
    data = tables.write(tables.wine_mixed(), tmp_path / "wine.csv")
    base = ("train", "--data", str(data), "--label-column", "cultivar")
    cases = [
        (("--model", "no_such_module:make"), "no module named 'no_such_module'"),
        (("--model", f"{USER_MODELS}:nothing"), "has no function 'nothing'"),
        (("--model", f"{USER_MODELS}:not_an_estimator"), "not a scikit-learn estimator"),
        (("--model", "random_forest", "--param", "trees=3"), "takes no argument 'trees'"),
        (("--model", "random_forest", "--param", "n_estimators=x"), "wants int"),
        (("--model", "random_forest", "--param", "oops"), "is not KEY=VALUE"),
    ]
    for extra, message in cases:
        done = run_kiln(*base, *extra, store=tmp_path / "store")
        assert done.returncode in (1, 2), done.stderr
        assert message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) <= 6
    assert not (tmp_path / "store").exists()


def test_a_parquet_table_trains_from_the_command_line(tmp_path):
    data = tables.write(tables.diabetes(), tmp_path / "diabetes.parquet")
    done = run_kiln(
        "train", "--data", str(data), "--label-column", "progression",
        "--model", "random_forest", "--param", "n_estimators=20", store=tmp_path / "store",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "regression with random_forest" in done.stdout and "r2 " in done.stdout
