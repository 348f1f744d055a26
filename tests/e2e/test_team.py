"""The team setup for real: `kiln up --team` (PostgreSQL, a Prefect server on it, SeaweedFS,
result storage on S3, a process pool and two workers), the deployments of prefect.yaml,
and kiln-pipeline runs through the workers, with the local registry and podman."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from uuid import UUID

import httpx
import pytest

from kiln.cli.team import parse_exports
from kiln.infra.team.config import TeamConfig
from kiln.infra.team.up import team_down, worker_environment
from kiln.infra.team.workers import Worker, start_worker, stop_worker, worker_pid
from kiln.rollout.local import LocalTarget
from kiln.store.artifact_store import ArtifactStore
from tests.conftest import engine_client, free_port

# each test waits for whole pipeline runs: minutes when the machine is busy
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

REPO = Path(__file__).resolve().parents[2]
RUN = uuid.uuid4().hex[:8]
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@dataclass
class Team:
    config: TeamConfig
    exports: dict[str, str]
    env: dict[str, str]  # what a team member's shell has after eval "$(kiln up --team)"
    up_env: dict[str, str]  # what `kiln up --team` ran with
    local_port: int

    @property
    def api(self) -> str:
        return self.exports["PREFECT_API_URL"]

    def client(self):
        from prefect.client.orchestration import SyncPrefectClient

        return SyncPrefectClient(self.api)

    def prefect(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "prefect", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    def store(self) -> ArtifactStore:
        store = ArtifactStore(self.exports["KILN_STORE"])
        # s3fs caches listings per process: the workers wrote since this process last looked
        store.fs.invalidate_cache()
        return store


def kiln_up_team(env: dict[str, str], prefect_port: int) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "kiln.cli.app", "up", "--team", "--prefect-port", str(prefect_port)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def part_lines(stderr: str) -> dict[str, str]:
    """`kiln up --team`'s one line per part, as part -> what it says."""
    lines = (line.split(None, 1) for line in stderr.splitlines() if line.strip())
    return {words[0]: words[1] for words in lines if len(words) == 2}


@pytest.fixture(scope="module")
def team() -> Iterator[Team]:
    root = Path(tempfile.mkdtemp(prefix="kiln-team-e2e-"))
    root.chmod(0o755)  # the postgres user must reach its cluster folder
    prefect_port = free_port()
    up_env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    up_env.update(
        {
            "KILN_TEAM_DIR": str(root / "team"),
            "KILN_TEAM_POSTGRES_PORT": str(free_port()),
            "KILN_TEAM_S3_PORT": str(free_port()),
        }
    )
    config = TeamConfig(
        home=root / "team",
        prefect_port=prefect_port,
        postgres_port=int(up_env["KILN_TEAM_POSTGRES_PORT"]),
        s3_port=int(up_env["KILN_TEAM_S3_PORT"]),
    )
    saved = dict(os.environ)
    try:
        up = kiln_up_team(up_env, prefect_port)
        exports = parse_exports(up.stdout)
        said = part_lines(up.stderr)
        for part in ("postgres", "prefect", "seaweedfs", "kiln-worker-1", "kiln-worker-2"):
            assert said[part].startswith("started"), up.stderr
        local_port = free_port()
        env = {**up_env, **exports}
        env.update(
            {
                "PREFECT_HOME": str(root / "client-home"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "KILN_REPOSITORY": f"kiln-test/{RUN}/team",
                "KILN_LOCAL_PORT": str(local_port),
                "KILN_LOCAL_NAME": f"kiln-team-{RUN}",
                "KILN_RETRIES": "1",
                "KILN_RETRY_DELAY": "0.1",
                "KILN_GATE_THRESHOLD": "0.8",
            }
        )
        # this process reads the S3 store like a team member's shell does
        os.environ.update({k: v for k, v in exports.items() if k.startswith("AWS_")})
        found = Team(config, exports, env, up_env, local_port)
        found.prefect("--no-prompt", "deploy", "--all", timeout=600)
        yield found
    finally:
        team_down(config)
        for name in ("worker-a", "worker-b"):
            stop_worker(Worker(config.home, name, config.pool))
        os.environ.clear()
        os.environ.update(saved)
        LocalTarget(engine_client(), port=local_port, name_prefix=f"kiln-team-{RUN}").stop_all()
        shutil.rmtree(root, ignore_errors=True)


def start_run(team: Team, **training) -> UUID:
    """A kiln-pipeline/retrain run; `force`: the champion gate would otherwise keep a
    model that scores below the deployed one from shipping, and these tests ship each."""
    parameters = {"training": training, "force": True}
    with team.client() as client:
        deployment = client.read_deployment_by_name("kiln-pipeline/retrain")
        return client.create_flow_run_from_deployment(deployment.id, parameters=parameters).id


def wait_final(team: Team, run_id: UUID, timeout: float = 600, after: str | None = None) -> str:
    """The run's final state name (after a retry: a final state other than `after`)."""
    deadline = time.monotonic() + timeout
    seen_other = after is None
    with team.client() as client:
        while time.monotonic() < deadline:
            state = client.read_flow_run(run_id).state
            if state is not None:
                if state.type.value not in FINAL:
                    seen_other = True
                elif seen_other:
                    return state.name
            time.sleep(2)
    raise AssertionError(f"flow run {run_id} did not finish within {timeout} s")


def task_runs(team: Team, run_id: UUID) -> dict[str, list]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    with team.client() as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,
        )
    found: dict[str, list] = {}
    for run in runs:
        found.setdefault(run.name.rsplit("-", 1)[0], []).append(run)
    return found


def task_states(team: Team, run_id: UUID) -> dict[str, list[str]]:
    return {
        name: [run.state.name for run in runs] for name, runs in task_runs(team, run_id).items()
    }


def run_logs(team: Team, run_id: UUID) -> list[tuple[str, str]]:
    """(logger name, message) of every log record the run's page in the UI shows."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with team.client() as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    return [(log.name, log.message) for log in logs]


def rollout_span(team: Team, run_id: UUID) -> tuple[datetime, datetime]:
    """From taking the target's rollout slot to the rollout's last log record (the task
    itself starts earlier: it waits for the slot)."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with team.client() as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    [held] = [log.timestamp for log in logs if "holding the rollout slot" in log.message]
    rollout = [
        log.timestamp
        for log in logs
        if log.name.startswith(("kiln.", "flows."))
        and ("rollout" in log.name or "local_target" in log.name)
    ]
    assert rollout, [(log.name, log.message) for log in logs]
    return held, max(rollout)


def workers_of(team: Team, run_id: UUID) -> set[str]:
    names = set()
    for logger, message in run_logs(team, run_id):
        if logger == "prefect.flow_runs.worker" and "submitting flow run" in message:
            names.add(message.split("'")[1])
    return names


def served_version(team: Team) -> str:
    reply = httpx.get(f"http://127.0.0.1:{team.local_port}/metadata", timeout=10)
    return reply.json()["version"]


def test_two_runs_at_once_go_through_both_workers_and_roll_out_in_turn(team: Team) -> None:
    first, second = start_run(team, seed=11), start_run(team, seed=12)
    assert wait_final(team, first) == "Completed", task_states(team, first)
    assert wait_final(team, second) == "Completed", task_states(team, second)
    assert workers_of(team, first) | workers_of(team, second) == {
        "kiln-worker-1",
        "kiln-worker-2",
    }
    earlier, later = sorted([rollout_span(team, first), rollout_span(team, second)])
    assert later[0] >= earlier[1], f"two rollouts to one target overlapped: {earlier} {later}"

    store = team.store()
    versions = [info.version for info in store.list_versions()]
    assert len(versions) == 2  # both models, in the S3 store
    record = store.deployment("local")
    assert {record.current, record.previous} == set(versions)
    assert served_version(team) == record.current
    for version in versions:  # each read back whole (sha256 checked)
        assert store.metadata(version)["version"] == version


def test_a_run_failed_on_one_worker_resumes_cached_on_another(team: Team) -> None:
    for number in (1, 2):
        stop_worker(team.config.worker(number))
    base_env = worker_environment(team.config, team.exports, {})
    closed = free_port()  # nothing listens there: the registry is unreachable for worker A
    worker_a = Worker(team.config.home, "worker-a", team.config.pool)
    start_worker(worker_a, {**base_env, "KILN_REGISTRY": f"127.0.0.1:{closed}"}, REPO)
    run_id = start_run(team, seed=13)
    assert wait_final(team, run_id) == "Failed"
    states = task_states(team, run_id)
    assert states["train"] == ["Completed"] and states["store-model"] == ["Completed"], states
    assert states["build-image"] == ["Failed"] and "roll-out" not in states, states
    assert workers_of(team, run_id) == {"worker-a"}
    # kiln's own log records (kiln.*, flows.*) reach the run's log in the UI, not only stdout
    logs = run_logs(team, run_id)
    kiln_logs = [m for logger, m in logs if logger.startswith(("kiln.", "flows."))]
    assert any(message.startswith("stored version") for message in kiln_logs), kiln_logs
    # ... and the build step's retry warning (KILN_RETRIES=1), naming the registry it missed
    retried = [m for _, m in logs if " - Retry 1/1 will start" in m and f"127.0.0.1:{closed}" in m]
    assert retried, logs
    stop_worker(worker_a)

    worker_b = Worker(team.config.home, "worker-b", team.config.pool)
    start_worker(worker_b, base_env, REPO)
    team.prefect("flow-run", "retry", str(run_id))
    assert wait_final(team, run_id, after="Failed") == "Completed", task_states(team, run_id)
    states = task_states(team, run_id)
    assert states["train"] == ["Completed", "Cached"], states  # trained once, on worker A
    assert states["export-onnx"] == ["Completed", "Cached"], states
    assert states["roll-out"] == ["Completed"], states
    assert workers_of(team, run_id) == {"worker-a", "worker-b"}
    assert len(team.store().list_versions()) == 3
    assert served_version(team) == team.store().deployment("local").current


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def test_a_worker_killed_mid_training_leaves_a_crashed_run_and_the_next_completes(
    team: Team,
) -> None:
    worker_b = Worker(team.config.home, "worker-b", team.config.pool)
    run_id = start_run(team, data="synthetic:30000x20", seed=14)
    deadline = time.monotonic() + 300
    while task_states(team, run_id).get("train") != ["Running"]:
        assert time.monotonic() < deadline, task_states(team, run_id)
        time.sleep(0.5)
    # the machine goes away: the worker and the flow run it started (its own session)
    pid = worker_pid(worker_b)
    assert pid is not None
    for child in _children(pid):
        os.killpg(child, signal.SIGKILL)
    os.killpg(pid, signal.SIGKILL)
    assert wait_final(team, run_id, timeout=team.config.crash_after + 180) == "Crashed"

    again = kiln_up_team(team.up_env, team.config.prefect_port)  # idempotent: only workers start
    assert parse_exports(again.stdout) == team.exports
    said = part_lines(again.stderr)
    for part in ("postgres", "prefect", "seaweedfs"):
        assert said[part].startswith("already running"), again.stderr
    for part in ("kiln-worker-1", "kiln-worker-2"):
        assert said[part].startswith("started"), again.stderr
    next_run = start_run(team, seed=11)  # cached on S3 from the first test
    assert wait_final(team, next_run) == "Completed", task_states(team, next_run)
    assert task_states(team, next_run)["train"] == ["Cached"]
