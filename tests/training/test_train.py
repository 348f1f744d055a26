import numpy as np
import pytest

from kiln.config.errors import QualityGateError
from kiln.training.train import QualityBar, check_quality
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
    check_quality({"accuracy": 0.95}, QualityBar("accuracy", 0.9))
    expected = r"accuracy = 0\.8000 is below the threshold 0\.9000"
    with pytest.raises(QualityGateError, match=expected):
        check_quality({"accuracy": 0.8}, QualityBar("accuracy", 0.9))


def test_an_error_metric_must_stay_under_its_limit():
    check_quality({"rmse": 40.0}, QualityBar("rmse", 50.0))
    with pytest.raises(QualityGateError, match=r"rmse = 60\.0000 is above the limit 50\.0000"):
        check_quality({"rmse": 60.0}, QualityBar("rmse", 50.0))


def test_a_class_recall_floor_refuses_a_model_that_misses_its_rare_class():
    metrics = {
        "accuracy": 0.98,
        "per_class": {"benign": {"recall": 1.0}, "malignant": {"recall": 0.33}},
    }
    check_quality(metrics, QualityBar("accuracy", 0.9))  # accuracy alone lets it through
    with pytest.raises(QualityGateError, match=r"class 'malignant' has recall 0\.3300, below"):
        check_quality(metrics, QualityBar("accuracy", 0.9, min_class_recall=0.5))
