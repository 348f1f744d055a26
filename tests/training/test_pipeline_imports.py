"""What a resumed run's process loads: its training is cached, so it reads the trained
model back without scikit-learn, and the flow module itself needs neither scikit-learn nor
ONNX Runtime (each step imports what only it needs)."""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
from pathlib import Path

import cloudpickle
import numpy as np

from kiln.training.provenance import FINGERPRINTED_MODULES, module_source
from tests.support.factories import iris_trained

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("sklearn", "scipy", "onnxruntime", "skl2onnx", "onnx")


def run_python(code: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


LOADED = f"sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))"


def test_the_flow_module_loads_without_scikit_learn_or_onnx_runtime():
    found = run_python(f"import json, sys, flows.pipeline; print(json.dumps({LOADED}))")
    assert found == []


def test_the_command_line_loads_neither_prefect_nor_scikit_learn():
    """`kiln run` sets Prefect's API address before Prefect reads its settings; a command
    module importing Prefect first would send every run to a temporary server."""
    heavy = (*HEAVY, "prefect")
    loaded = f"sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r}))"
    assert run_python(f"import json, sys, kiln.cli.app; print(json.dumps({loaded}))") == []


def test_a_persisted_train_result_reads_back_without_scikit_learn(tmp_path):
    _, result, _ = iris_trained()
    path = tmp_path / "result.pickle"
    path.write_bytes(cloudpickle.dumps(result))  # as Prefect persists a cached result
    back = run_python(
        "import json, sys, cloudpickle\n"
        f"result = cloudpickle.loads(open({str(path)!r}, 'rb').read())\n"
        f"before = {LOADED}\n"
        "predicted = result.model.predict(result.X_holdout).tolist()\n"
        "print(json.dumps({'before': before, 'metrics': result.metrics,\n"
        "    'rows': result.X_holdout.to_numpy().tolist(), 'predicted': predicted}))"
    )
    assert back["before"] == []  # metrics and holdout rows: numpy only
    assert back["metrics"] == json.loads(json.dumps(result.metrics))
    assert np.array_equal(np.array(back["rows"]), result.X_holdout)
    # the model itself, when a step reads it, is the fitted one
    assert back["predicted"] == result.model.predict(result.X_holdout).tolist()


def test_a_train_result_survives_more_than_one_round_trip():
    _, result, _ = iris_trained()
    twice = cloudpickle.loads(cloudpickle.dumps(cloudpickle.loads(cloudpickle.dumps(result))))
    assert twice.metrics == result.metrics
    assert np.array_equal(
        twice.model.predict_proba(result.X_holdout), result.model.predict_proba(result.X_holdout)
    )


def test_the_code_fingerprint_reads_the_modules_source_as_inspect_does():
    for name in FINGERPRINTED_MODULES:
        assert module_source(name) == inspect.getsource(importlib.import_module(name))
