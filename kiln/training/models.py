"""The model: a preset by name, or the user's own factory (`MODULE:FUNCTION` or
`path/to/file.py:FUNCTION`) returning an unfitted scikit-learn estimator or Pipeline that
takes a pandas DataFrame of the feature columns, named as in the data.

Everything here that can fail on the user's input fails before any data is read: the
factory is found and its arguments checked against its signature (`resolve`), and what it
returns is checked to be an estimator (`build`). The user's module source is fingerprinted,
so a changed factory retrains and an unchanged one resumes from the store.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.config.errors import ParameterError
from kiln.training.params import PRESETS, TrainParams
from kiln.training.schema import TableSchema, Task

# Estimators that need their inputs scaled (distances, gradients); trees do not.
SCALED_PRESETS = {"svm", "logistic"}
TREE_FAMILIES = ("Forest", "Tree", "Boosting", "LGBM", "XGB")


@dataclass(frozen=True)
class Factory:
    """A model factory, found and checked: call `build` once the table is known."""

    spec: str
    function: Callable[..., Any]
    args: dict[str, Any]
    fingerprint: str  # sha256 of the user's module source; "" for presets (kiln's own code)

    @property
    def preset(self) -> bool:
        return self.spec in PRESETS


def resolve(params: TrainParams) -> Factory:
    """The factory `params.model` names, with `params`' arguments typed from its signature;
    ParameterError naming the problem (unknown module or function, a bad argument)."""
    if params.model in PRESETS:
        function = PRESET_FACTORIES[params.model]
        fingerprint = ""
    else:
        function, fingerprint = _load_user_function(params.model)
    args = typed_args(function, params.factory_args(), params.model)
    return Factory(params.model, function, args, fingerprint)


def _load_user_function(spec: str) -> tuple[Callable[..., Any], str]:
    where, _, name = spec.rpartition(":")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise ParameterError(f"--model {spec}: no such file {where}")
        module_spec = importlib.util.spec_from_file_location(f"kiln_user_model_{path.stem}", path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        loader = module_spec.loader
        _run_user_code(spec, lambda: loader.exec_module(module))
        source = path.read_bytes()
    else:
        module = _run_user_code(spec, lambda: importlib.import_module(where))
        origin = getattr(module, "__file__", None)
        source = Path(origin).read_bytes() if origin else where.encode()
    function = getattr(module, name, None)
    if not callable(function):
        raise ParameterError(f"--model {spec}: {where} has no function {name!r}")
    return function, hashlib.sha256(source).hexdigest()


def _run_user_code(spec: str, load: Callable[[], Any]) -> Any:
    try:
        return load()
    except ModuleNotFoundError as err:
        raise ParameterError(f"--model {spec}: no module named {err.name!r}") from None
    except Exception as err:  # the user's module failed at import: say where, in one line
        raise ParameterError(
            f"--model {spec}: importing it failed: {type(err).__name__}: {err}"
        ) from None


def typed_args(function: Callable[..., Any], raw: dict[str, Any], spec: str) -> dict[str, Any]:
    """`raw` (strings from --param, or JSON values) converted to the types the function's
    signature declares, or its defaults' types; an unknown key is a ParameterError."""
    signature = inspect.signature(function)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    typed = {}
    for key, value in raw.items():
        if key in HIDDEN_ARGS:
            raise ParameterError(
                f"--param {key}: kiln passes {key!r} itself (from the data, --seed)"
            )
        parameter = signature.parameters.get(key)
        if parameter is None or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            if not takes_any:
                known = [n for n, p in signature.parameters.items() if n not in HIDDEN_ARGS]
                raise ParameterError(
                    f"--param {key}: {spec} takes no argument {key!r}; it takes "
                    f"{', '.join(known) or 'none'}"
                )
            typed[key] = _loose(value)
            continue
        typed[key] = _convert(key, value, parameter, spec)
    return typed


HIDDEN_ARGS = {"schema", "task", "random_state"}  # what kiln passes itself, when asked for


def _convert(key: str, value: Any, parameter: inspect.Parameter, spec: str) -> Any:
    if not isinstance(value, str):
        return value  # a JSON value from a flow parameter: already typed
    kind = parameter.annotation
    if isinstance(kind, str):  # `from __future__ import annotations`: the name as written
        kind = {"int": int, "float": float, "bool": bool, "str": str}.get(
            kind.split("|")[0].strip()
        )
    if kind in (inspect.Parameter.empty, None) and parameter.default not in (
        inspect.Parameter.empty,
        None,
    ):
        kind = type(parameter.default)
    try:
        if kind is bool:
            return _boolean(value)
        if kind in (int, float, str):
            return kind(value)
    except ValueError:
        raise ParameterError(
            f"--param {key}={value}: {spec} wants {kind.__name__} for {key!r}"
        ) from None
    return _loose(value)


def _boolean(value: str) -> bool:
    words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    if value.strip().lower() not in words:
        raise ValueError(value)
    return words[value.strip().lower()]


def _loose(value: Any) -> Any:
    """A value with no declared type: JSON when it parses (numbers, lists, null), else text."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def build(factory: Factory, schema: TableSchema, seed: int) -> Any:
    """Call the factory; check that it returned an unfitted estimator for the task."""
    from sklearn.base import clone, is_classifier, is_regressor

    args = dict(factory.args)
    accepted = inspect.signature(factory.function).parameters
    for name, value in (("schema", schema), ("task", schema.task), ("random_state", seed)):
        if name in accepted and name not in args:
            args[name] = value
    try:
        estimator = factory.function(**args)
    except ParameterError:
        raise
    except Exception as err:
        raise ParameterError(
            f"--model {factory.spec}: calling it failed: {type(err).__name__}: {err}"
        ) from None
    if not (hasattr(estimator, "fit") and hasattr(estimator, "get_params")):
        raise ParameterError(
            f"--model {factory.spec} returned {type(estimator).__name__}, not a scikit-learn "
            "estimator or Pipeline (an object with fit and get_params)"
        )
    wants = is_classifier if schema.task == "classification" else is_regressor
    if not wants(estimator):
        raise ParameterError(
            f"--model {factory.spec} returned {type(estimator).__name__}, which is not a "
            f"{'classifier' if schema.task == 'classification' else 'regressor'}; the "
            f"label column makes this a {schema.task} (--task to say otherwise)"
        )
    return clone(estimator)  # a fresh copy: a factory that hands back a fitted one is fine too


# -- describing a model -------------------------------------------------------------------------


def final_estimator(model: Any) -> Any:
    """The estimator at the end of a Pipeline (or the model itself)."""
    steps = getattr(model, "steps", None)
    return final_estimator(steps[-1][1]) if steps else model


def family(model: Any) -> str:
    """`tree` for tree ensembles (which drift more in float32), else `linear`."""
    name = type(final_estimator(model)).__name__
    inner = getattr(final_estimator(model), "estimator", None)  # CalibratedClassifierCV
    names = (name, type(inner).__name__ if inner is not None else "")
    return "tree" if any(part in n for n in names for part in TREE_FAMILIES) else "linear"


def describe(model: Any, factory: Factory, task: Task) -> dict[str, Any]:
    """What the store records about the model: class, parameters, task and where it came from."""
    final = final_estimator(model)
    return {
        "spec": factory.spec,
        "preset": factory.preset,
        "estimator": _class_path(model),
        "final_estimator": _class_path(final),
        "family": family(model),
        "task": task,
        "args": json_safe(factory.args),
        "params": json_safe(model.get_params(deep=True)),
        "source_sha256": factory.fingerprint or None,
    }


def _class_path(obj: Any) -> str:
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


def json_safe(value: Any, depth: int = 0) -> Any:
    """Parameters as JSON: estimators and other objects by their class, bounded in size."""
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    if depth > 4:
        return repr(value)[:200]
    if isinstance(value, dict):
        return {str(k): json_safe(v, depth + 1) for k, v in list(value.items())[:200]}
    if isinstance(value, list | tuple):
        return [json_safe(v, depth + 1) for v in list(value)[:200]]
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    if hasattr(value, "get_params"):
        return _class_path(value)
    if hasattr(value, "tolist"):
        return json_safe(value.tolist(), depth + 1)
    return repr(value)[:200]


# -- presets ------------------------------------------------------------------------------------


def _preprocess(schema: TableSchema, scale: bool) -> Any:
    """Preprocessing inferred from the table: numbers imputed (when cells were missing) and
    scaled (when the estimator needs it); text one-hot encoded, unknown categories ignored
    (missing text is "", a category of its own)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [f for f in schema.features if f.type != "text"]
    text = [f.name for f in schema.features if f.type == "text"]
    steps: list[tuple[str, Any]] = []
    if any(f.nullable for f in numeric):
        steps.append(("impute", SimpleImputer(strategy="median")))
    if scale:
        steps.append(("scale", StandardScaler()))
    if not text:
        return steps
    numbers: Any = Pipeline(steps) if steps else "passthrough"
    encode = OneHotEncoder(handle_unknown="ignore")
    parts = [("text", encode, text)]
    if numeric:
        parts.insert(0, ("numbers", numbers, [f.name for f in numeric]))
    return [("prepare", ColumnTransformer(parts))]


def _assemble(schema: TableSchema, scale: bool, estimator: Any) -> Any:
    from sklearn.pipeline import Pipeline

    return Pipeline([*_preprocess(schema, scale), ("model", estimator)])


def svm(
    schema: TableSchema,
    C: float = 1.0,
    kernel: str = "rbf",
    gamma: str | float = "scale",
    random_state: int = 0,
) -> Any:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import SVC, SVR

    if schema.task == "regression":
        return _assemble(schema, True, SVR(C=C, kernel=kernel, gamma=gamma))
    # SVC(probability=True) is deprecated in scikit-learn 1.9; calibrating the SVC's decision
    # function is the replacement it names, and skl2onnx converts it.
    svc = SVC(C=C, kernel=kernel, gamma=gamma, random_state=random_state)
    return _assemble(schema, True, CalibratedClassifierCV(svc, ensemble=False))


def logistic(schema: TableSchema, C: float = 1.0, max_iter: int = 1000) -> Any:
    from sklearn.linear_model import LogisticRegression

    if schema.task == "regression":
        raise ParameterError(
            "--model logistic is a classifier; for a regression use svm, random_forest or "
            "hist_gradient_boosting"
        )
    return _assemble(schema, True, LogisticRegression(C=C, max_iter=max_iter))


def random_forest(
    schema: TableSchema,
    n_estimators: int = 100,
    max_depth: int | None = None,
    random_state: int = 0,
) -> Any:
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    kind = RandomForestClassifier if schema.task == "classification" else RandomForestRegressor
    forest = kind(
        n_estimators=n_estimators, max_depth=max_depth, random_state=random_state, n_jobs=1
    )
    return _assemble(schema, False, forest)


def hist_gradient_boosting(
    schema: TableSchema, max_iter: int = 100, learning_rate: float = 0.1, random_state: int = 0
) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    kind = (
        HistGradientBoostingClassifier
        if schema.task == "classification"
        else HistGradientBoostingRegressor
    )
    booster = kind(max_iter=max_iter, learning_rate=learning_rate, random_state=random_state)
    return _assemble(schema, False, booster)


PRESET_FACTORIES: dict[str, Callable[..., Any]] = {
    "svm": svm,
    "logistic": logistic,
    "random_forest": random_forest,
    "hist_gradient_boosting": hist_gradient_boosting,
}


def estimator_parts(model: Any) -> list[Any]:
    """The model and every estimator inside it: pipeline steps, wrapped estimators, a
    ColumnTransformer's transformers (fitted or not)."""
    found, stack = [], [model]
    while stack:
        current = stack.pop()
        found.append(current)
        if hasattr(current, "get_params"):
            inner = current.get_params(deep=False).values()
            stack.extend(value for value in inner if hasattr(value, "fit"))
            stack.extend(step for _, step in getattr(current, "steps", None) or [])
            parts = getattr(current, "transformers", None) or []
            stack.extend(part for _, part, _ in parts if hasattr(part, "fit"))
    return found


def uses_columns_by_name(model: Any) -> bool:
    """Whether the model picks columns by name anywhere (it then needs one input per column)."""
    from sklearn.compose import ColumnTransformer

    return any(isinstance(part, ColumnTransformer) for part in estimator_parts(model))
