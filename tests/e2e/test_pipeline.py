"""The whole pipeline for real: this session's Prefect server, the local registry and
podman (scripts/infra.sh up), images built and run, predictions over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flows.pipeline import pipeline_flow, prune_flow, ship_flow
from kiln.config.settings import get_settings
from kiln.rollout.local import LocalTarget
from kiln.store.artifact_store import ArtifactStore
from kiln.training.params import TrainParams
from kiln.training.promotion import GatePolicy
from kiln.training.sequence import run_training
from tests.conftest import engine_client, free_port
from tests.flows.test_pipeline import task_states
from tests.rollout.test_local import kill_unseen

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_server")]

REPO = Path(__file__).resolve().parents[2]
RUN = uuid.uuid4().hex[:8]


@pytest.fixture
def kiln_env(tmp_path, monkeypatch) -> Iterator[dict[str, str]]:
    """Settings of this test's own: store, repository, local port and container names."""
    name = f"kiln-e2e-{uuid.uuid4().hex[:6]}"
    env = {
        "KILN_STORE": str(tmp_path / "store"),
        "KILN_REPOSITORY": f"kiln-test/{RUN}/{name}",
        "KILN_LOCAL_PORT": str(free_port()),
        "KILN_LOCAL_NAME": name,
        "KILN_RETRIES": "1",
        "KILN_RETRY_DELAY": "0.1",
        "KILN_GATE_THRESHOLD": "0.8",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()
    LocalTarget(engine_client(), port=int(env["KILN_LOCAL_PORT"]), name_prefix=name).stop_all()


def predict(endpoint: str) -> list[list[float]]:
    reply = httpx.post(f"{endpoint}/predict", json={"data": [[5.1, 3.5, 1.4, 0.2]]}, timeout=10)
    assert reply.status_code == 200, reply.text
    return reply.json()["prediction"]


def test_whole_pipeline_ends_with_a_live_endpoint(kiln_env):
    summary = pipeline_flow()
    assert summary.target == "local"
    assert summary.endpoint == f"http://127.0.0.1:{kiln_env['KILN_LOCAL_PORT']}"
    probabilities = predict(summary.endpoint)[0]
    assert len(probabilities) == 3 and probabilities[0] > 0.5  # setosa
    store = ArtifactStore(kiln_env["KILN_STORE"])
    assert store.deployment("local").current == summary.version
    assert store.image_refs(summary.version) == [summary.image]


def _stop_registry() -> None:
    pid_file = get_settings().state_dir / "run" / "registry.pid"
    assert pid_file.exists(), "the registry was not started by scripts/infra.sh"
    pid = int(pid_file.read_text())
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError("registry did not stop")


def test_failed_build_is_retried_from_the_stored_model(kiln_env):
    try:
        _stop_registry()
        # a seed no other test trains with, so nothing is cached before this run
        failed = pipeline_flow(training=TrainParams(seed=1101), return_state=True)
    finally:
        subprocess.run(
            ["bash", "scripts/infra.sh", "up"], cwd=REPO, check=True, capture_output=True
        )
    assert failed.is_failed()
    run_id = failed.state_details.flow_run_id
    before = task_states(run_id)
    assert before["store-model"] == ["Completed"]
    assert before["build-image"] == ["Failed"]
    assert "roll-out" not in before
    store = ArtifactStore(kiln_env["KILN_STORE"])
    [stored] = store.list_versions()

    # the fault is cleared: retry the same flow run, as `prefect flow-run retry` does
    retried = subprocess.run(
        [
            sys.executable,
            "-m",
            "prefect",
            "flow-run",
            "retry",
            str(run_id),
            "--entrypoint",
            "flows/pipeline.py:pipeline_flow",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ.copy(),
    )
    assert retried.returncode == 0, retried.stdout + retried.stderr
    after = task_states(run_id)
    assert after["train"] == ["Completed", "Cached"]  # trained exactly once
    assert after["export-onnx"] == ["Completed", "Cached"]
    assert after["build-image"][-1] == "Completed"
    assert after["roll-out"] == ["Completed"]
    assert [v.version for v in store.list_versions()] == [stored.version]
    assert store.metadata(stored.version)["created"] == stored.created

    endpoint = f"http://127.0.0.1:{kiln_env['KILN_LOCAL_PORT']}"
    served = httpx.get(f"{endpoint}/metadata", timeout=10).json()
    assert served["version"] == stored.version
    assert served["sha256"] == store.metadata(stored.version)["model_sha256"]
    predict(endpoint)


def test_deployment_runs_through_a_process_worker(kiln_env, tmp_path):
    env = os.environ.copy()
    prefect = [sys.executable, "-m", "prefect"]

    def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*prefect, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
        )

    created = cli("work-pool", "create", "kiln", "--type", "process", "--overwrite")
    assert created.returncode == 0, created.stdout + created.stderr
    deployed = cli("--no-prompt", "deploy", "--all")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 (the worker's lifetime)
    worker = subprocess.Popen(
        [*prefect, "worker", "start", "--pool", "kiln"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    store = ArtifactStore(kiln_env["KILN_STORE"])

    def run_deployment(name: str, *params: str) -> None:
        args = [arg for param in params for arg in ("--param", param)]
        ran = cli("deployment", "run", name, *args, "--watch", timeout=600)
        output = ran.stdout + ran.stderr + (tmp_path / "worker.log").read_text()
        assert ran.returncode == 0 and "Completed" in ran.stdout, output

    try:
        run_deployment("kiln-pipeline/retrain")
        [first] = store.list_versions()
        assert store.deployment("local").current == first.version
        # ship another stored version through its deployment, then plan a prune
        second = run_training(store, TrainParams(seed=7), GatePolicy(threshold=0.8))
        run_deployment("kiln-ship/ship", f"version={second.version}")
        run_deployment("kiln-prune/prune", "keep=1", "dry_run=true")
    finally:
        worker.send_signal(signal.SIGINT)  # a worker stops on SIGINT
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        log.close()
    deployed = store.deployment("local")
    assert (deployed.current, deployed.previous) == (second.version, first.version)
    assert len(store.list_versions()) == 2  # the dry run removed nothing
    endpoint = f"http://127.0.0.1:{kiln_env['KILN_LOCAL_PORT']}"
    assert httpx.get(f"{endpoint}/metadata", timeout=10).json()["version"] == second.version
    predict(endpoint)


def test_kiln_run_ends_with_a_curl_line_that_answers(kiln_env):
    ran = subprocess.run(
        [sys.executable, "-m", "kiln.cli.app", "run"],
        cwd=REPO,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert f"serving   local at http://127.0.0.1:{kiln_env['KILN_LOCAL_PORT']}" in ran.stdout
    curl = next(
        line.strip() for line in ran.stdout.splitlines() if line.strip().startswith("curl ")
    )
    answer = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=30)
    assert answer.returncode == 0, answer.stderr
    [probabilities] = json.loads(answer.stdout)["prediction"]
    assert len(probabilities) == 3 and abs(sum(probabilities) - 1) < 1e-3


def _serving(endpoint: str) -> str:
    return httpx.get(f"{endpoint}/metadata", timeout=10).json()["version"]


def _container_name(env: dict[str, str]) -> str:
    """The name of the container serving on the test's port."""
    target = LocalTarget(
        engine_client(), port=int(env["KILN_LOCAL_PORT"]), name_prefix=env["KILN_LOCAL_NAME"]
    )
    [running] = [c for c in target.containers() if c.role == "current" and c.status == "running"]
    return running.name


def _container(env: dict[str, str]) -> tuple[str, str]:
    """The id and start time of the container serving on the test's port."""
    attrs = engine_client().containers.get(_container_name(env)).attrs
    return attrs["Id"], attrs["State"]["StartedAt"]


def _version_table(flow_run_id) -> list[dict]:
    """The kiln-versions table artifact the flow run published."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    [table] = [a for a in found if a.key == "kiln-versions"]
    data = table.data
    return json.loads(data) if isinstance(data, str) else data


def test_a_scheduled_retrain_never_replaces_a_better_model(kiln_env):
    """The issue's scenario: a tuned model ships, the default retrain is refused and stored."""
    store = ArtifactStore(kiln_env["KILN_STORE"])
    endpoint = f"http://127.0.0.1:{kiln_env['KILN_LOCAL_PORT']}"
    tuned = pipeline_flow(training=TrainParams(C=4.0), return_state=True)
    assert tuned.is_completed(), tuned.message
    better = tuned.result().version
    assert tuned.result().decision["basis"] == "the absolute gate alone (no champion)"
    assert _serving(endpoint) == better
    serving = _container(kiln_env)

    retrain = pipeline_flow(return_state=True)  # the weekly cron: data iris, defaults
    assert retrain.is_completed()
    refused = retrain.result().version
    assert retrain.result().shipped is False
    for text in (refused, better, "accuracy 0.9474", "accuracy 0.9737", "refused"):
        assert text in retrain.message
    states = task_states(retrain.state_details.flow_run_id)
    assert states["champion-gate"] == ["Completed"] and states["store-model"] == ["Completed"]
    assert "build-image" not in states and "roll-out" not in states
    assert store.exists(refused) and store.image_refs(refused) == []
    assert _serving(endpoint) == better and _container(kiln_env) == serving
    assert store.deployment("local").current == better

    again = pipeline_flow(training=TrainParams(C=4.0), return_state=True)  # nothing changed
    assert again.is_completed() and "runs already" in again.message
    states = task_states(again.state_details.flow_run_id)
    assert not {"store-model", "build-image", "roll-out", "retain"} & set(states)
    assert states["check-serving"] == ["Completed"]
    assert _container(kiln_env) == serving  # no rebuild, no restart

    # the engine lists the container running, but its process died unseen: ship it again
    kill_unseen(engine_client(), _container_name(kiln_env))
    healed = pipeline_flow(training=TrainParams(C=4.0), return_state=True)
    assert healed.is_completed() and "shipped again" in healed.message, healed.message
    assert "does not answer" in healed.result().shipped_again
    assert healed.result().version == better and _serving(endpoint) == better
    assert store.deployment("local").current == better
    serving = _container(kiln_env)

    listed = subprocess.run(
        [sys.executable, "-m", "kiln.cli.app", "models", "--json"],
        cwd=REPO,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    decisions = {row["version"]: row["decision"]["outcome"] for row in json.loads(listed.stdout)}
    assert decisions == {better: "promote", refused: "refuse"}

    forced = pipeline_flow(force=True, return_state=True)
    assert forced.is_completed() and forced.result().shipped is True
    assert "forced" in forced.message and _serving(endpoint) == refused
    assert [d["outcome"] for d in store.decisions(refused)] == ["refuse", "force"]

    # shipping (kiln-ship) and pruning (kiln-prune) refresh the version table too
    shipped = ship_flow(version=better, return_state=True)
    rows = {row["version"]: row for row in _version_table(shipped.state_details.flow_run_id)}
    assert rows[better]["deployed"] == "local" and rows[refused]["decision"] == "force on local"
    pruned = prune_flow(dry_run=True, return_state=True)
    assert len(_version_table(pruned.state_details.flow_run_id)) == 2
