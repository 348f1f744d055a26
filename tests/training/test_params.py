"""The training parameter object: checked before any work, errors in kiln's words."""

import pytest
from pydantic import ValidationError

from kiln.config.errors import ParameterError
from kiln.training.params import TrainParams


def test_defaults_and_what_the_model_depends_on():
    params = TrainParams()
    assert (params.data, params.label_column) == ("iris", "label")
    assert params.model_params() == {
        "model": "svm",
        "model_args": {},
        "task": None,
        "C": 1.0,
        "kernel": "rbf",
        "gamma": "scale",
        "seed": 42,
        "test_size": 0.25,
    }
    # The svm preset's own three belong to it alone.
    forest = TrainParams(model="random_forest", model_args={"n_estimators": 50})
    assert forest.model_params() == {
        "model": "random_forest",
        "model_args": {"n_estimators": 50},
        "task": None,
        "seed": 42,
        "test_size": 0.25,
    }


def test_loose_values_from_a_command_line_are_converted():
    params = TrainParams.checked(C="4", gamma="0.5", data=" synthetic:300x6 ")
    assert (params.C, params.gamma, params.data) == (4.0, 0.5, "synthetic:300x6")
    assert TrainParams.checked(gamma="auto").gamma == "auto"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"C": 0}, "C must be a positive number, got 0"),
        ({"C": "lots"}, "C must be a positive number, got 'lots'"),
        ({"C": float("nan")}, "C must be a positive number"),
        ({"kernel": "cubic"}, "kernel must be one of rbf, linear, poly, sigmoid, got 'cubic'"),
        ({"gamma": "lots"}, "gamma must be 'scale', 'auto' or a number > 0, got 'lots'"),
        ({"gamma": -1}, "gamma must be 'scale', 'auto' or a number > 0, got -1"),
        ({"seed": -1}, "seed must be a whole number from 0 to 4294967295, got -1"),
        ({"seed": 1.5}, "seed must be a whole number"),
        ({"data": " "}, "data must be iris, synthetic:ROWS[xFEATURES], or a CSV path or URL"),
        ({"data": "synthetic:many"}, "bad synthetic spec 'synthetic:many'"),
        ({"data": "synthetic:0x3"}, "bad synthetic spec 'synthetic:0x3': rows and features must"),
        ({"label_column": ""}, "label column must be a non-empty column name"),
        ({"test_size": 1}, "test_size must be a fraction between 0 and 1, got 1"),
        ({"epochs": 3}, "unknown training parameter 'epochs'"),
        ({"model": "gbm"}, "model must be a preset (svm, logistic, random_forest,"),
        ({"model": "random_forest", "C": 2}, "C belong to the svm preset"),
        ({"delimiter": ";;"}, "delimiter must be one character"),
        ({"task": "ranking"}, "task: input should be 'classification' or 'regression'"),
    ],
)
def test_a_bad_value_is_one_parameter_error(values, message):
    with pytest.raises(ParameterError) as caught:
        TrainParams.checked(**values)
    assert str(caught.value).startswith(message)
    assert "pydantic" not in str(caught.value) and "\n" not in str(caught.value)


def test_every_bad_value_is_named_at_once():
    with pytest.raises(ParameterError, match=r"^C must .*; kernel must .*; seed must "):
        TrainParams.checked(C=-1, kernel="x", seed=-2)


def test_the_object_is_frozen_and_validates_when_built_directly():
    params = TrainParams()
    with pytest.raises(ValidationError):
        params.C = 2.0  # type: ignore[misc]
    with pytest.raises(ValidationError, match="C must be a positive number"):
        TrainParams(C=-1)
