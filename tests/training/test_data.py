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
        (["a", "kind"], [[1, "x"], ["oops", "y"]], "line 3, column 'a': 'oops' is not a number"),
        (["a", "kind"], [[1, "x"], ["nan", "y"]], "is not a finite number"),
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
