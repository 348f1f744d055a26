"""Model factories as a user writes them: `--model tests/support/user_models.py:NAME`."""

from __future__ import annotations

import numpy as np
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler


def _prepare() -> ColumnTransformer:
    numbers = make_pipeline(SimpleImputer(strategy="mean"), StandardScaler())
    return ColumnTransformer(
        [
            ("numbers", numbers, make_column_selector(dtype_include="number")),
            (
                "text",
                OneHotEncoder(handle_unknown="ignore"),
                make_column_selector(dtype_include=object),
            ),
        ]
    )


def column_pipeline(C: float = 1.0, max_iter: int = 500) -> Pipeline:
    """A ColumnTransformer (numbers imputed and scaled, text one-hot) and a logistic regression."""
    return Pipeline(
        [("prepare", _prepare()), ("model", LogisticRegression(C=C, max_iter=max_iter))]
    )


def lightgbm_pipeline(n_estimators: int = 40, random_state: int = 0) -> Pipeline:
    from lightgbm import LGBMClassifier

    booster = LGBMClassifier(n_estimators=n_estimators, random_state=random_state, verbose=-1)
    return Pipeline([("prepare", _prepare()), ("model", booster)])


def xgboost_pipeline(n_estimators: int = 40, random_state: int = 0) -> Pipeline:
    from xgboost import XGBClassifier

    booster = XGBClassifier(n_estimators=n_estimators, random_state=random_state, max_depth=3)
    return Pipeline([("prepare", _prepare()), ("model", booster)])


def python_step() -> Pipeline:
    """A FunctionTransformer wrapping Python code: no ONNX converter can take it."""
    return make_pipeline(FunctionTransformer(np.log1p), LogisticRegression(max_iter=500))


def not_an_estimator() -> str:
    return "a string, not a model"


def a_regressor() -> Pipeline:
    from sklearn.linear_model import Ridge

    return make_pipeline(StandardScaler(), Ridge())
