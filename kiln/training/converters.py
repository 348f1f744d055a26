"""What skl2onnx needs besides itself: converters for LightGBM and XGBoost estimators
(onnxmltools), registered so that they convert inside a scikit-learn Pipeline (both are
optional, training-side libraries), and one repair of how it builds nodes."""

from __future__ import annotations

from functools import cache
from typing import Any

from kiln.config.errors import ParameterError

CLASSIFIER_OPTIONS = {"nocl": [True, False], "zipmap": [True, False, "columns"]}


@cache
def repair_integer_attributes() -> None:
    """skl2onnx's tree converters put Python bools into integer list attributes
    (`nodes_missing_value_tracks_true`); protobuf 6 warns about that and 7.34 refuses it, so
    HistGradientBoosting would not export. The node builder gets those lists as ints."""
    from skl2onnx.common._container import ModelComponentContainer

    add_node = ModelComponentContainer.add_node

    def add_node_with_ints(self: Any, *args: Any, **attrs: Any) -> Any:
        for key, value in attrs.items():
            if isinstance(value, list) and any(isinstance(v, bool) for v in value):
                attrs[key] = [int(v) if isinstance(v, bool) else v for v in value]
        return add_node(self, *args, **attrs)

    ModelComponentContainer.add_node = add_node_with_ints  # type: ignore[method-assign]


@cache
def register_lightgbm() -> None:
    from lightgbm import LGBMClassifier, LGBMRegressor
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    update_registered_converter(
        LGBMClassifier,
        "LightGbmLGBMClassifier",
        calculate_linear_classifier_output_shapes,
        convert_lightgbm,
        options=CLASSIFIER_OPTIONS,
    )
    update_registered_converter(
        LGBMRegressor,
        "LightGbmLGBMRegressor",
        calculate_linear_regressor_output_shapes,
        convert_lightgbm,
    )


@cache
def register_xgboost() -> None:
    try:
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    except ImportError as err:  # pragma: no cover - onnxmltools comes with the extra
        raise ParameterError(f"converting XGBoost needs onnxmltools: {err}") from None
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )
    from xgboost import XGBClassifier, XGBRegressor

    update_registered_converter(
        XGBClassifier,
        "XGBoostXGBClassifier",
        calculate_linear_classifier_output_shapes,
        convert_xgboost,
        options=CLASSIFIER_OPTIONS,
    )
    update_registered_converter(
        XGBRegressor,
        "XGBoostXGBRegressor",
        calculate_linear_regressor_output_shapes,
        convert_xgboost,
    )
