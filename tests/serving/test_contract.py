"""serving/contract.py: metadata.json's task and schema, parsed without numpy or ONNX."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.artifacts import ModelLoadError, parse_labels
from serving.contract import ContractError, parse_schema, parse_task, v2_datatypes


def _schema(layout="columns", **feature):
    entry = {"name": "region", "input": "region", "type": "text", "dtype": "string"}
    entry.update(feature)
    return {"schema": {"layout": layout, "features": [entry]}}


def test_a_version_1_directory_has_no_schema_and_classifies():
    assert parse_schema({"version": "x"}) is None
    assert parse_task({}) == "classification"


def test_a_columns_schema_parses():
    schema = parse_schema(_schema(nullable=True, categories=["east", "west"]))
    assert schema is not None
    (region,) = schema.features
    assert (region.name, region.input, region.type, region.dtype) == (
        "region",
        "region",
        "text",
        "string",
    )
    assert region.nullable and region.categories == ("east", "west")
    assert schema.as_dict()["features"][0]["categories"] == ["east", "west"]
    assert v2_datatypes(region) == ("BYTES",)


@pytest.mark.parametrize(
    ("metadata", "words"),
    [
        ({"schema": []}, "'schema' must be an object"),
        ({"schema": {"layout": "grid", "features": []}}, "schema.layout is 'grid'"),
        ({"schema": {"layout": "tensor", "features": []}}, "non-empty list"),
        (_schema(layout="tensor"), "layout 'tensor' takes float32 features only"),
        (_schema(type="text", dtype="float32"), "a text feature takes dtype string"),
        (_schema(input=None), "needs the ONNX 'input' name"),
        (_schema(name=""), "name must be a non-empty string"),
        (_schema(nullable="yes"), "nullable must be true or false"),
        (_schema(categories="east"), "categories must be a list"),
        (_schema(type="number", dtype="float32", min="low"), "min and max"),
        (_schema(type="boolean", dtype="float64"), "a boolean feature takes dtype float32 or"),
        (
            {"schema": {"layout": "tensor", "features": [{"name": "a", "type": "text"}]}},
            "layout 'tensor' takes float32 features only",
        ),
        (
            {"schema": {**_schema()["schema"], "target": {"classes": []}}},
            "classes must be a non-empty list",
        ),
    ],
)
def test_a_malformed_schema_is_named(metadata, words):
    with pytest.raises(ContractError) as raised:
        parse_schema(metadata)
    assert words in str(raised.value)


def test_two_features_may_not_share_an_input():
    metadata = _schema()
    metadata["schema"]["features"].append(
        {"name": "area", "input": "region", "type": "text", "dtype": "string"}
    )
    with pytest.raises(ContractError, match="two features have the input 'region'"):
        parse_schema(metadata)


def test_labels_by_task():
    path = Path("labels.json")
    assert parse_labels({}, path, "regression") == ()
    with pytest.raises(ModelLoadError, match="is empty"):
        parse_labels({}, path, "classification")
    with pytest.raises(ModelLoadError, match="names classes, but the model is a regressor"):
        parse_labels({"0": "a"}, path, "regression")
    with pytest.raises(ContractError, match="'task' is 'ranking'"):
        parse_task({"task": "ranking"})
