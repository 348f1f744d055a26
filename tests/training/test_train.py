import numpy as np
import pytest

from kiln.config.errors import QualityGateError
from kiln.training.train import check_quality
from tests.support.factories import iris_trained


def test_training_reports_holdout_metrics():
    data, result, _ = iris_trained()
    metrics = result.metrics
    assert 0.9 <= metrics["accuracy"] <= 1.0
    assert 0.9 <= metrics["f1_macro"] <= 1.0
    assert set(metrics["per_class"]) == set(data.class_names)
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.shape == (3, 3)
    assert matrix.sum() == metrics["holdout_rows"] == len(result.y_holdout)
    # stratified: every class is in the holdout
    assert set(result.y_holdout.tolist()) == {0, 1, 2}


def test_training_is_reproducible_with_a_seed():
    _, first, _ = iris_trained(seed=7)
    _, second, _ = iris_trained(seed=8)
    again = iris_trained.__wrapped__(seed=7)[1]
    np.testing.assert_array_equal(first.X_holdout, again.X_holdout)
    assert not np.array_equal(first.X_holdout, second.X_holdout)


def test_quality_gate_names_metric_value_and_threshold():
    check_quality({"accuracy": 0.95}, "accuracy", 0.9)
    expected = r"accuracy = 0\.8000 is below the threshold 0\.9000"
    with pytest.raises(QualityGateError, match=expected):
        check_quality({"accuracy": 0.8}, "accuracy", 0.9)
