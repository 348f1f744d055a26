import numpy as np
import pytest

from kiln.config.errors import DataError
from kiln.training.data import load_csv, load_data, load_iris_dataset, make_synthetic
from tests.support.factories import write_csv


def test_iris_has_four_features_three_classes_and_a_stable_hash():
    first, second = load_iris_dataset(), load_iris_dataset()
    assert first.X.shape == (150, 4)
    assert first.class_names == ("setosa", "versicolor", "virginica")
    assert first.content_hash == second.content_hash
    assert len(first.content_hash) == 64


def test_csv_loads_features_and_labels(tmp_path):
    path = write_csv(
        tmp_path / "d.csv",
        ["a", "b", "kind"],
        [[1, 2, "x"], [1.5, 2.5, "x"], [8, 9, "y"], [8.5, 9.5, "y"]],
    )
    data = load_csv(str(path), "kind")
    assert data.feature_names == ("a", "b")
    assert data.class_names == ("x", "y")
    assert data.y.tolist() == [0, 0, 1, 1]
    np.testing.assert_array_equal(data.X[2], [8, 9])


def test_hash_follows_content_not_path(tmp_path):
    rows = [[1, 2, "x"], [1.5, 2.5, "x"], [8, 9, "y"], [8.5, 9.5, "y"]]
    one = load_csv(str(write_csv(tmp_path / "one.csv", ["a", "b", "k"], rows)), "k")
    two = load_csv(str(write_csv(tmp_path / "two.csv", ["a", "b", "k"], rows)), "k")
    rows[0][0] = 1.25
    changed = load_csv(str(write_csv(tmp_path / "one.csv", ["a", "b", "k"], rows)), "k")
    assert one.content_hash == two.content_hash
    assert changed.content_hash != one.content_hash


@pytest.mark.parametrize(
    ("header", "rows", "message"),
    [
        (["a", "b"], [[1, 2], [3, 4]], "no label column 'kind'"),
        (["a", "kind"], [[1, "x"], ["inf", "y"]], "data row 2, column 'a': inf is not a finite"),
        (["a", "kind"], [[1, "x"], [2, ""], [3, "x"]], "1 rows have no value in the label column"),
        (["a", "kind"], [[1, "x"], [2, "x"], [3, "x"]], "needs at least two classes"),
        (["a", "kind"], [], "has a header but no data rows"),
        (["a", "kind"], [[1, "x", 3], [2, "y"]], "line 2 has 3 fields"),
        (["a", "kind"], [[1, "x"], [2, "x"], [3, "y"]], "class 'y' has a single row"),
    ],
)
def test_bad_csv_gives_a_clear_error(tmp_path, header, rows, message):
    path = write_csv(tmp_path / "bad.csv", header, rows)
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        load_csv(str(path), "kind")


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="the file is empty"):
        load_csv(str(tmp_path / "empty.csv"), "kind")
    with pytest.raises(DataError, match="no such file"):
        load_csv(str(tmp_path / "absent.csv"), "kind")


def test_synthetic_spec_sets_size_and_is_deterministic():
    data = load_data("synthetic:300x6")
    assert data.X.shape == (300, 6)
    assert data.content_hash == make_synthetic(300, 6).content_hash
    with pytest.raises(DataError, match="bad synthetic spec"):
        load_data("synthetic:lots")


def test_a_table_of_numbers_booleans_and_text_with_missing_cells_is_typed(tmp_path):
    """Text stays text, True/False is a boolean, empty cells are missing; kiln says so."""
    path = write_csv(
        tmp_path / "d.csv",
        ["n", "region", "flag", "count", "kind"],
        [[1.5, "east", "True", 3, "x"], ["", "west", "False", 4, "x"], [2.5, "", "True", 5, "y"],
         [3.5, "east", "", 6, "y"]],
    )  # fmt: skip
    data = load_csv(str(path), "kind")
    kinds = {f.name: (f.type, f.nullable) for f in data.schema.features}
    assert kinds == {
        "n": ("number", True),
        "region": ("text", True),
        "flag": ("boolean", True),
        "count": ("integer", False),
    }
    assert data.frame["region"].tolist() == ["east", "west", "", "east"]
    assert data.frame["flag"].tolist()[:2] == [1.0, 0.0]
    assert np.isnan(data.frame["n"][1]) and np.isnan(data.frame["flag"][3])
    assert data.schema.features[1].categories == ("east", "west")


def test_the_task_is_inferred_from_the_label_and_checked_when_given(tmp_path):
    whole = [[i, i % 3] for i in range(30)]
    continuous = [[i, i * 1.37] for i in range(30)]
    path = write_csv(tmp_path / "w.csv", ["a", "y"], whole)
    assert load_data(str(path), "y").task == "classification"
    assert load_data(str(path), "y", task="regression").task == "regression"
    path = write_csv(tmp_path / "c.csv", ["a", "y"], continuous)
    assert load_data(str(path), "y").task == "regression"
    with pytest.raises(DataError, match="holds continuous numbers .*use --task regression"):
        load_data(str(path), "y", task="classification")
    text = write_csv(tmp_path / "t.csv", ["a", "y"], [[1, "p"], [2, "q"], [3, "p"], [4, "q"]])
    with pytest.raises(DataError, match="--task regression needs numbers"):
        load_data(str(text), "y", task="regression")


def test_features_and_drop_choose_the_columns(tmp_path):
    rows = [[i, i * 2, f"id{i}", i % 2] for i in range(10)]
    path = write_csv(tmp_path / "d.csv", ["a", "b", "id", "y"], rows)
    assert load_data(str(path), "y", drop=("id",)).feature_names == ("a", "b")
    assert load_data(str(path), "y", features=("b",)).feature_names == ("b",)
    with pytest.raises(DataError, match="no column 'nope'"):
        load_data(str(path), "y", drop=("nope",))


def test_a_semicolon_csv_is_sniffed_and_parquet_reads_the_same(tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "t": ["p", "q", "p", None], "y": [0, 1, 0, 1]})
    semicolons = tmp_path / "d.csv"
    frame.to_csv(semicolons, sep=";", index=False)
    frame.to_parquet(tmp_path / "d.parquet", index=False)
    from_csv = load_data(str(semicolons), "y")
    from_parquet = load_data(str(tmp_path / "d.parquet"), "y")
    assert from_csv.feature_names == from_parquet.feature_names == ("a", "t")
    assert from_csv.content_hash == from_parquet.content_hash
