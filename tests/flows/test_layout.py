"""flows/ holds the Prefect flows and their tasks, nothing else (the library is kiln/)."""

from __future__ import annotations

import importlib
from pathlib import Path

from prefect import Flow, Task

FLOWS = Path(__file__).resolve().parents[2] / "flows"


def test_every_module_in_flows_defines_prefect_flows_or_tasks() -> None:
    modules = sorted(p.stem for p in FLOWS.glob("*.py") if p.stem != "__init__")
    assert modules == ["pipeline", "tasks"]
    for name in modules:
        module = importlib.import_module(f"flows.{name}")
        own = [
            value
            for value in vars(module).values()
            if isinstance(value, Flow | Task)
            and getattr(value.fn, "__module__", "") == module.__name__
        ]
        assert own, f"flows/{name}.py defines no Prefect flow or task"
