"""Schemathesis against the real server: every operation its own GET /openapi.json declares,
every check (`schemathesis run --checks all`), bounded and seeded.

Driven through Schemathesis' engine, the runner behind `schemathesis run` (all its phases:
examples, coverage, fuzzing), rather than its pytest plugin, whose lazy fixture loader
(`schemathesis.pytest.from_fixture`, needed for a server a fixture starts) does not run
on pytest 9.2.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis.errors import HypothesisWarning
from schemathesis.engine import Status, events, from_schema
from schemathesis.generation import GenerationMode
from table_models import diabetes_model, wine_model, write_table_model_dir

CONFIG = """
seed = 20261208
# No max-time: with one, the engine repeats its fuzzing phase until the time is up. The
# examples bound the run instead (and pytest's timeout, the whole test).
request-timeout = 10

[generation]
max-examples = 30
deterministic = true
database = "none"

[checks]
enabled = true  # all of them, as `--checks all`

[cache]
enabled = false  # no replay of an earlier run's requests: each run is the same
"""


INFER = "/v2/models/{name}/infer"


def _values(data: list) -> list:
    out = []
    for item in data:
        out.extend(_values(item) if isinstance(item, list) else [item])
    return out


def map_case(context: schemathesis.HookContext, case: schemathesis.Case) -> schemathesis.Case:
    """JSON Schema cannot say that a V2 tensor's shape counts its values (N * F; every
    column the same N), so a schema-valid body may hold another count, which the server
    rightly refuses. A positive case gets the shape of its values (repeated to fill a
    row, or cut to the shortest column); negative ones are left alone. With that, every
    check, positive_data_acceptance included, holds on POST /v2/models/{name}/infer."""
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return case
    inputs = case.body["inputs"]
    shape = inputs[0]["shape"]
    if len(inputs) == 1 and len(shape) == 2 and shape[1] != 1:  # one FP32 [N, F] tensor
        values, width = _values(inputs[0]["data"]), shape[1]
        rows = -(-len(values) // width)
        inputs[0]["data"], inputs[0]["shape"] = (values * width)[: rows * width], [rows, width]
    else:  # one tensor per column, [N] or [N, 1]
        rows = min(len(tensor["data"]) for tensor in inputs)
        for tensor in inputs:
            tensor["data"], tensor["shape"] = tensor["data"][:rows], [rows, *tensor["shape"][1:]]
    return case


class Run:
    """One engine run: its failures and errors in words, what it tested, how it ended."""

    def __init__(self, url: str) -> None:
        config = schemathesis.Config.from_str(CONFIG)
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=config)
        schema.hook.apply_to(path=INFER)(map_case)
        self.problems: dict[tuple[str, ...], str] = {}  # a failure recurs: keep it once
        self.tested: set[str] = set()
        self.finished: events.EngineFinished | None = None
        with warnings.catch_warnings():
            # Hypothesis' own hints about its examples (a repr over 100 kB of a large
            # generated body) say nothing of the server; pytest would make them errors.
            warnings.simplefilter("ignore", HypothesisWarning)
            for event in from_schema(schema).execute():
                self.record(event)

    def record(self, event: events.EngineEvent) -> None:
        if isinstance(event, events.ScenarioFinished):
            if event.status == Status.SUCCESS and event.label:
                self.tested.add(event.label)
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.failure_info is not None:
                        failure = check.failure_info.failure
                        key = (event.label or "", check.name, failure.title)
                        text = f"{failure.message}\n{check.failure_info.code_sample}"
                        self.problems.setdefault(key, text)
        elif isinstance(event, events.NonFatalError):
            self.problems.setdefault((event.label, type(event.value).__name__), str(event.value))
        elif isinstance(event, events.FatalError):
            self.problems.setdefault(("engine",), repr(event.exception))
        elif isinstance(event, events.EngineFinished):
            self.finished = event

    def report(self) -> str:
        return "\n\n".join(f"{' '.join(key)}: {text}" for key, text in self.problems.items())


def _model_dir(name: str, iris: Path, tmp: Path) -> Path:
    if name == "iris":
        return iris
    table = wine_model() if name == "wine" else diabetes_model()
    return write_table_model_dir(tmp / name, table)


# iris: a classifier on one float tensor; wine: one input per column, with text, boolean,
# integer and nullable columns; diabetes: a regressor on a tensor with a nullable feature.
@pytest.mark.timeout(90)  # about 10 s a model on an idle machine; a busy one is slower
@pytest.mark.parametrize("name", ["iris", "wine", "diabetes"])
def test_schemathesis_finds_nothing(server_factory, model_dir, tmp_path, name):
    url = server_factory(_model_dir(name, model_dir, tmp_path), workers=2).wait_ready()
    document = httpx.get(f"{url}/openapi.json").json()
    run = Run(url)
    assert not run.problems, run.report()
    assert run.finished is not None and run.finished.stop_reason == "completed"
    # Every operation the document declares was exercised, none skipped.
    declared = {f"{m.upper()} {path}" for path, ops in document["paths"].items() for m in ops}
    assert run.tested == declared
