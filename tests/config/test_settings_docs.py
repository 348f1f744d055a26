"""The configuration reference is generated from the settings classes: every setting must
carry its own description, and the defaults it shows must be the ones the code applies."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import typing
from pathlib import Path
from types import ModuleType

import pytest

from kiln.config.settings import ENV_PREFIX, KilnSettings
from serving.config import ServingConfig
from serving.server_settings import ConnectionLimits, ServerSettings, server_settings

ROOT = Path(__file__).resolve().parents[2]

# KILN_* names read outside KilnSettings, each with where the reference names it.
NOT_SETTINGS = {
    "KILN_BOOT_DIR": "the server's master and workers (plumbing)",
    "KILN_OWNED_MODEL_DIR": "the server's master and workers (plumbing)",
    "KILN_OWN_METRICS_DIR": "the server's master and workers (plumbing)",
    "KILN_LOGGERS": "a constant's name, not a variable (kiln/infra/team/run_logging.py)",
}


@pytest.mark.parametrize("name", list(KilnSettings.model_fields))
def test_every_kiln_setting_has_a_description(name: str) -> None:
    description = KilnSettings.model_fields[name].description or ""
    assert len(description.split()) >= 3, f"{ENV_PREFIX}{name.upper()} needs a description"
    assert description.rstrip().endswith((".", ")")), f"{name}: end the description cleanly"


def server_fields() -> list[tuple[type, dataclasses.Field]]:
    found = []
    for cls in (ServingConfig, ServerSettings, ConnectionLimits):
        hints = typing.get_type_hints(cls)
        found += [(cls, f) for f in dataclasses.fields(cls) if not is_group(hints[f.name])]
    return found


def is_group(annotation: object) -> bool:
    return dataclasses.is_dataclass(annotation)


@pytest.mark.parametrize(
    ("cls", "field"), server_fields(), ids=lambda item: getattr(item, "name", "")
)
def test_every_server_setting_names_its_variable_and_has_a_description(
    cls: type, field: dataclasses.Field
) -> None:
    assert re.fullmatch(r"[A-Z][A-Z0-9_]*", field.metadata.get("env", "")), field.name
    assert len(field.metadata.get("doc", "").split()) >= 3, f"{cls.__name__}.{field.name}"


def test_the_server_settings_defaults_are_the_ones_the_reference_shows() -> None:
    read = server_settings({}, cpus=1)
    assert dataclasses.replace(read, workers=1) == ServerSettings()
    config = ServingConfig.from_env({"MODEL_FILEPATH": "/m/model.onnx"})
    for field in dataclasses.fields(ServingConfig):
        if field.default is not dataclasses.MISSING:
            assert getattr(config, field.name) == field.default, field.name


def test_every_kiln_variable_in_the_code_is_a_setting_or_named_apart() -> None:
    settings = {f"{ENV_PREFIX}{name.upper()}" for name in KilnSettings.model_fields}
    found: set[str] = set()
    for package in ("kiln", "flows", "serving"):
        for path in (ROOT / package).rglob("*.py"):
            found |= set(re.findall(r"\bKILN_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    unknown = sorted(found - settings - set(NOT_SETTINGS))
    assert not unknown, f"KILN_* names that are neither settings nor listed apart: {unknown}"


def reference_hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "docs_reference", ROOT / "docs/hooks/reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_reference_lists_every_variable() -> None:
    pytest.importorskip("mkdocs")
    hook = reference_hook()
    kiln_table = hook.table(hook.settings_rows())
    for name in KilnSettings.model_fields:
        assert f"`{ENV_PREFIX}{name.upper()}`" in kiln_table
    serving_table = hook.table(hook.serving_rows())
    for _, field in server_fields():
        assert f"`{field.metadata['env']}`" in serving_table


def test_the_reference_page_asks_for_both_tables() -> None:
    page = (ROOT / "docs/reference/settings.md").read_text()
    assert "<!-- kiln:settings -->" in page
    assert "<!-- kiln:serving-settings -->" in page
