"""The Prefect flows against this session's real Prefect server."""

from __future__ import annotations

import time

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.sorting import TaskRunSort

from flows.pipeline import pipeline_flow
from kiln.config.errors import QualityGateError
from kiln.store.artifact_store import ArtifactStore
from kiln.training.params import TrainParams
from tests.support.factories import write_csv

pytestmark = pytest.mark.usefixtures("prefect_server")


def task_states(flow_run_id, settle: float = 1.0, timeout: float = 60.0) -> dict[str, list[str]]:
    """Task name -> the state names of its runs within one finished flow run.

    Prefect 3 reports task runs to the server as events, which it records a little later:
    read until every run has a final state and a second read, `settle` seconds on, agrees.
    """
    deadline = time.monotonic() + timeout
    last: dict[str, list[str]] | None = None
    while True:
        states, final = _read_task_states(flow_run_id)
        if (final and states == last) or time.monotonic() > deadline:
            return states
        last = states if final else None
        time.sleep(settle)


def _read_task_states(flow_run_id) -> tuple[dict[str, list[str]], bool]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,
        )
    states: dict[str, list[str]] = {}
    for run in runs:
        name = run.state.name if run.state else "(none yet)"
        states.setdefault(run.name.rsplit("-", 1)[0], []).append(name)
    return states, all(run.state is not None and run.state.is_final() for run in runs)


def run(store: str, **training):
    """The deployed flow, stopped after the store (nothing to build or roll out here)."""
    state = pipeline_flow(
        training=TrainParams(**training),
        store=store,
        gate_threshold=0.8,
        ship=False,
        return_state=True,
    )
    return state, task_states(state.state_details.flow_run_id)


def iris_csv(path, scale: float = 1.0):
    from kiln.training.data import load_iris_dataset

    data = load_iris_dataset()
    rows = [
        [*(v * scale for v in x), data.class_names[y]] for x, y in zip(data.X, data.y, strict=True)
    ]
    return write_csv(path, [*data.feature_names, "species"], rows)


def test_second_run_with_same_inputs_is_cached(tmp_path):
    store = str(tmp_path / "store")
    csv = iris_csv(tmp_path / "iris.csv")
    first_state, first = run(data=str(csv), label_column="species", store=store, seed=3)
    assert first_state.is_completed()
    assert first["train"] == ["Completed"] and first["export-onnx"] == ["Completed"]
    second_state, second = run(data=str(csv), label_column="species", store=store, seed=3)
    assert second["train"] == ["Cached"] and second["export-onnx"] == ["Cached"]
    assert first_state.result().version == second_state.result().version
    assert len(ArtifactStore(store).list_versions()) == 1


def test_changed_data_or_parameter_retrains(tmp_path):
    store = str(tmp_path / "store")
    csv = iris_csv(tmp_path / "iris.csv")
    _, base = run(data=str(csv), label_column="species", store=store, seed=5)
    _, param_changed = run(data=str(csv), label_column="species", store=store, seed=5, C=2.0)
    iris_csv(csv, scale=1.01)  # same path, new content
    _, data_changed = run(data=str(csv), label_column="species", store=store, seed=5)
    assert base["train"] == ["Completed"]
    assert param_changed["train"] == ["Completed"]
    assert data_changed["train"] == ["Completed"]
    assert len(ArtifactStore(store).list_versions()) == 3


def test_quality_gate_fails_the_run_before_anything_is_stored(tmp_path):
    store = str(tmp_path / "store")
    state = pipeline_flow(store=store, gate_threshold=0.999, ship=False, return_state=True)
    assert state.is_failed()
    with pytest.raises(QualityGateError, match="accuracy = .* is below the threshold 0.9990"):
        state.result()
    states = task_states(state.state_details.flow_run_id)
    assert states["quality-gate"] == ["Failed"]
    assert "export-onnx" not in states and "store-model" not in states
    assert ArtifactStore(store).list_versions() == []


def persisted_results(flow_run_id) -> dict[str, bool]:
    """Task name -> whether its result was written to result storage (its state names a
    storage key) or only handed on in memory."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    found = {}
    for task_run in runs:
        data = task_run.state.data if task_run.state else None
        found[task_run.name.rsplit("-", 1)[0]] = getattr(data, "storage_key", None) is not None
    return found


def test_only_what_a_retry_resumes_from_is_persisted(tmp_path):
    from prefect.settings import PREFECT_RESULTS_PERSIST_BY_DEFAULT, temporary_settings

    store = str(tmp_path / "store")
    # as in a team setup, whose default result storage (S3) makes every run persist
    with temporary_settings({PREFECT_RESULTS_PERSIST_BY_DEFAULT: True}):
        state, states = run(store=store, seed=7)
    assert state.is_completed(), states
    persisted = persisted_results(state.state_details.flow_run_id)
    assert persisted["train"] and persisted["export-onnx"]  # what a retry resumes from
    assert persisted["load-data"]  # Prefect's default: a retry of this run reuses it
    for step in ("quality-gate", "champion-gate", "store-model"):  # read by no later run
        assert persisted[step] is False, persisted
    # and the next run with the same inputs still finds training and export Cached
    again, again_states = run(store=store, seed=7)
    assert again_states["train"] == ["Cached"] and again_states["export-onnx"] == ["Cached"]
    assert again.result().version == state.result().version
