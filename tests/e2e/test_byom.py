"""Bringing your own model, end to end: `kiln run` (the real CLI, this session's Prefect
server, the local registry and podman) on tables made from scikit-learn's bundled data,
and the deployed image answering every request form over HTTP."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kiln.rollout.local import LocalTarget
from tests.conftest import engine_client, free_port
from tests.flows.test_pipeline import task_states
from tests.support import tables
from tests.support.factories import run_kiln

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_server")]

RUN = uuid.uuid4().hex[:8]
USER_MODELS = Path(__file__).resolve().parents[1] / "support" / "user_models.py"


@pytest.fixture
def env(tmp_path) -> Iterator[dict[str, str]]:
    """This test's own store, repository, port and container names."""
    name = f"kiln-byom-{uuid.uuid4().hex[:6]}"
    settings = {
        "KILN_STORE": str(tmp_path / "store"),
        "KILN_REPOSITORY": f"kiln-test/{RUN}/{name}",
        "KILN_LOCAL_PORT": str(free_port()),
        "KILN_LOCAL_NAME": name,
        "KILN_RETRIES": "1",
        "KILN_RETRY_DELAY": "0.1",
    }
    yield settings
    port = int(settings["KILN_LOCAL_PORT"])
    LocalTarget(engine_client(), port=port, name_prefix=name).stop_all()


def kiln_run(env: dict[str, str], *args: str) -> dict:
    done = run_kiln("run", *args, "-o", "json", env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def post(url: str, body: dict) -> httpx.Response:
    return httpx.post(url, json=body, timeout=10)


def test_a_mixed_table_ships_and_the_image_answers_every_request_form(env, tmp_path):
    frame = tables.wine_mixed()
    data = tables.write(frame, tmp_path / "wine.csv")
    summary = kiln_run(
        env, "--data", str(data), "--label-column", "cultivar", "--model", "logistic"
    )
    assert summary["shipped"] and summary["task"] == "classification"
    endpoint = summary["endpoint"]
    [record] = summary["sample_input"]["instances"]  # records: a table of columns
    assert "region" in record and summary["try_it"].count("instances") == 1

    metadata = httpx.get(f"{endpoint}/metadata", timeout=10).json()
    names = metadata["feature_names"]  # the model's order, which positional rows follow
    positional = post(f"{endpoint}/predict", {"data": [[record[n] for n in names]]})
    assert positional.status_code == 200, positional.text
    expected = positional.json()["prediction"]
    assert len(expected[0]) == 3
    reversed_record = {n: record[n] for n in reversed(names)}
    for body in (
        {"instances": [reversed_record]},
        {"dataframe_split": {"columns": names[::-1], "data": [list(reversed_record.values())]}},
    ):
        answer = post(f"{endpoint}/predict", body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["prediction"][0] == pytest.approx(expected[0])
    both = post(f"{endpoint}/predict?labels=true", {"instances": [record]}).json()
    assert both["labels"][0] in ("barbera", "barolo", "grignolino")

    # V2: one tensor per column, BYTES for text
    inputs = [
        {"name": n, "shape": [1, 1], "datatype": "BYTES" if isinstance(v, str) else "FP32",
         "data": [v]}
        for n, v in record.items()
        if v is not None
    ]  # fmt: skip
    missing = [n for n, v in record.items() if v is None]
    assert not missing, "the sample row has a missing cell; V2 would need it as null"
    v2 = post(f"{endpoint}/v2/models/{metadata['name']}/infer", {"inputs": inputs})
    assert v2.status_code == 200, v2.text
    outputs = {o["name"]: o for o in v2.json()["outputs"]}
    assert outputs["probabilities"]["data"] == pytest.approx(expected[0])

    # a missing column is a 422 that names it, and a wrong type too
    del reversed_record["region"]
    refused = post(f"{endpoint}/predict", {"instances": [reversed_record]})
    assert refused.status_code == 422 and "region" in refused.text
    wrong = post(f"{endpoint}/predict", {"instances": [{**record, "alcohol": "strong"}]})
    assert wrong.status_code == 422 and "alcohol" in wrong.text


def test_a_regression_ships_and_answers_values(env, tmp_path):
    data = tables.write(tables.diabetes(), tmp_path / "diabetes.csv")
    summary = kiln_run(
        env, "--data", str(data), "--label-column", "progression", "--model", "random_forest"
    )
    assert summary["task"] == "regression" and summary["metrics"]["r2"] > 0.3
    row = summary["sample_input"]["data"]  # the one-tensor layout: positional rows
    answer = post(f"{summary['endpoint']}/predict", {"data": row})
    assert answer.status_code == 200, answer.text
    [value] = answer.json()["prediction"]
    assert 25 <= float(value if not isinstance(value, list) else value[0]) <= 346


def test_a_users_lightgbm_pipeline_ships_and_only_a_changed_factory_retrains(env, tmp_path):
    data = tables.write(tables.wine_mixed(), tmp_path / "wine.csv")
    module = tmp_path / "my_models.py"
    module.write_text(USER_MODELS.read_text())
    model = f"{module}:lightgbm_pipeline"
    args = ("--data", str(data), "--label-column", "cultivar", "--model", model)
    first = kiln_run(env, *args, "--param", "n_estimators=30")
    assert first["shipped"] and first["model"] == model
    again = kiln_run(env, *args, "--param", "n_estimators=30")
    assert task_states(again["flow_run_id"])["train"] == ["Cached"]
    module.write_text(module.read_text() + "\n# a change to the user's module\n")
    changed = kiln_run(env, *args, "--param", "n_estimators=30")
    assert task_states(changed["flow_run_id"])["train"] == ["Completed"]


def test_an_imbalanced_set_is_refused_by_the_class_recall_floor(env, tmp_path):
    data = tables.write(tables.imbalanced(), tmp_path / "cancer.csv")
    floor = {**env, "KILN_GATE_MIN_CLASS_RECALL": "0.9"}
    done = run_kiln("run", "--data", str(data), "--label-column", "diagnosis", env=floor)
    assert done.returncode == 1
    assert "class 'malignant' has recall" in done.stderr and "Traceback" not in done.stderr
    assert not (Path(env["KILN_STORE"]) / "versions").exists() or not list(
        (Path(env["KILN_STORE"]) / "versions").iterdir()
    )
