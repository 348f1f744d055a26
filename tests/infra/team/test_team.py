"""The team setup's parts that run in seconds: its settings, process handling, the rollout
slot on this session's real Prefect server. tests/e2e/test_team.py runs it all."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

from kiln.cli.team import export_lines, parse_exports
from kiln.config.errors import RolloutError, SettingsError
from kiln.config.settings import get_settings
from kiln.infra.team.config import TeamConfig
from kiln.infra.team.limits import rollout_limit_name, rollout_slot
from kiln.infra.team.orchestration import ENGINE_COMMAND, ensure_rollout_limits, ensure_work_pool
from kiln.infra.team.postgres import Postgres, PostgresError, init_cluster


def team_settings(monkeypatch, tmp_path, env):
    """KilnSettings from this environment only (no KILN_* of the shell running the tests)."""
    for key in list(os.environ):
        if key.startswith("KILN_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("KILN_STATE_DIR", str(tmp_path))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        return get_settings()
    finally:
        get_settings.cache_clear()


def test_config_defaults_live_under_the_state_dir(monkeypatch, tmp_path):
    config = TeamConfig.from_settings(team_settings(monkeypatch, tmp_path, {}))
    assert config.home == tmp_path / "team"
    assert (config.prefect_port, config.postgres_port, config.s3_port) == (4200, 54320, 8333)
    assert (config.pool, config.bucket, config.workers) == ("kiln", "kiln", 2)
    assert config.worker(2).name == "kiln-worker-2"


def test_config_reads_kiln_team_variables(monkeypatch, tmp_path):
    env = {
        "KILN_PREFECT_PORT": "14200",
        "KILN_TEAM_DIR": str(tmp_path / "elsewhere"),
        "KILN_TEAM_POSTGRES_PORT": "15432",
        "KILN_TEAM_S3_PORT": "18333",
        "KILN_TEAM_POOL": "ml-pool",
        "KILN_TEAM_WORKERS": "3",
        "KILN_TEAM_CRASH_AFTER": "120",
    }
    config = TeamConfig.from_settings(team_settings(monkeypatch, tmp_path, env))
    assert config.home == tmp_path / "elsewhere"
    assert (config.prefect_port, config.postgres_port, config.s3_port) == (14200, 15432, 18333)
    assert (config.pool, config.workers, config.crash_after) == ("ml-pool", 3, 120)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KILN_TEAM_POSTGRES_PORT": "http"}, "KILN_TEAM_POSTGRES_PORT='http' is not valid"),
        ({"KILN_TEAM_S3_PORT": "70000"}, "KILN_TEAM_S3_PORT='70000' is not valid"),
        ({"KILN_TEAM_WORKERS": "-1"}, "KILN_TEAM_WORKERS='-1' is not valid"),
        ({"KILN_TEAM_POOL": "My Pool"}, "KILN_TEAM_POOL='My Pool' is not valid"),
        ({"KILN_TEAM_BUCKET": "a_b"}, "KILN_TEAM_BUCKET='a_b' is not valid"),
        ({"KILN_TEAM_CRASH_AFTER": "10"}, "KILN_TEAM_CRASH_AFTER='10' is not valid"),
        ({"KILN_TEAM_S3_PORT": "4200"}, "KILN_TEAM_S3_PORT must differ"),
    ],
)
def test_bad_config_is_one_clear_error(monkeypatch, tmp_path, env, message):
    with pytest.raises(SettingsError, match=message):
        TeamConfig.from_settings(team_settings(monkeypatch, tmp_path, env))


def test_kiln_up_team_refuses_a_bad_team_setting_before_starting_anything(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    env.update({"KILN_STATE_DIR": str(tmp_path), "KILN_TEAM_WORKERS": "many"})
    proc = subprocess.run(
        [sys.executable, "-m", "kiln.cli.app", "up", "--team"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: KILN_TEAM_WORKERS='many' is not valid"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == ""
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written


def test_exports_round_trip_through_the_shell():
    exports = {"KILN_STORE": "s3://kiln/models", "AWS_SECRET_ACCESS_KEY": "a b'c$d"}
    text = export_lines(exports)
    assert parse_exports(text + "not an export\n") == exports
    shell = subprocess.run(
        ["bash", "-c", f'{text}printf "%s" "$AWS_SECRET_ACCESS_KEY"'],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shell.stdout == "a b'c$d"


@pytest.mark.skipif(os.geteuid() != 0, reason="the postgres user is used only when root")
def test_postgres_refuses_a_folder_its_user_cannot_reach(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(PostgresError, match="postgres user cannot reach"):
        init_cluster(Postgres(private / "team" / "postgres", 15432))
    assert not (private / "team" / "postgres.password").exists()


@pytest.mark.usefixtures("prefect_server")
def test_kilns_process_pool_starts_each_run_in_one_interpreter():
    """The pool's command is Prefect's engine itself (no supervisor process importing
    Prefect first), started by the worker's own `python`, in a session of its own."""
    import shlex

    from prefect.client.orchestration import SyncPrefectClient

    name = f"pool-{uuid.uuid4().hex[:8]}"
    assert ensure_work_pool(os.environ["PREFECT_API_URL"], name) is True
    assert ensure_work_pool(os.environ["PREFECT_API_URL"], name) is False  # idempotent
    with SyncPrefectClient(os.environ["PREFECT_API_URL"]) as client:
        template = client.read_work_pool(name).base_job_template
    assert template["variables"]["properties"]["command"]["default"] == ENGINE_COMMAND
    argv = shlex.split(ENGINE_COMMAND)
    assert argv[:2] == ["python", "-c"] and "os.setsid()" in argv[2]
    assert 'run_module("prefect.engine", run_name="__main__"' in argv[2]


@pytest.mark.usefixtures("prefect_server")
def test_rollout_slot_without_a_limit_holds_nothing():
    with rollout_slot(f"nowhere-{uuid.uuid4().hex[:8]}"):
        pass


@pytest.mark.usefixtures("prefect_server")
def test_rollouts_to_one_target_never_overlap():
    target = f"t-{uuid.uuid4().hex[:8]}"
    assert ensure_rollout_limits(os.environ["PREFECT_API_URL"], [target]) == [
        rollout_limit_name(target)
    ]
    assert ensure_rollout_limits(os.environ["PREFECT_API_URL"], [target]) == []  # idempotent
    spans: list[tuple[float, float]] = []
    errors: list[BaseException] = []

    def roll_out() -> None:
        try:
            with rollout_slot(target):
                began = time.monotonic()
                time.sleep(1.0)
                spans.append((began, time.monotonic()))
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=roll_out) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    first, second = sorted(spans)
    assert second[0] >= first[1]  # the second began only after the first ended


@pytest.mark.usefixtures("prefect_server")
def test_a_rollout_that_cannot_get_the_slot_in_time_is_a_rollout_error():
    target = f"t-{uuid.uuid4().hex[:8]}"
    ensure_rollout_limits(os.environ["PREFECT_API_URL"], [target])
    message = f"waited 2 s for the slot kiln-rollout-{target}"
    with (
        rollout_slot(target),
        pytest.raises(RolloutError, match=message),
        rollout_slot(target, wait_seconds=2),
    ):
        pass


@pytest.mark.usefixtures("prefect_server")
def test_two_names_never_wait_for_each_other_and_one_names_rollouts_take_turns():
    target = f"t-{uuid.uuid4().hex[:8]}"
    ensure_rollout_limits(os.environ["PREFECT_API_URL"], [target])  # the team setup's
    with rollout_slot(target, "iris"):  # made on first use, beside the target's own
        with rollout_slot(target, "wine", wait_seconds=2):
            pass  # another name: at once
        with (
            pytest.raises(RolloutError, match=f"slot kiln-rollout-{target}-iris"),
            rollout_slot(target, "iris", wait_seconds=2),
        ):
            pass


SHIP_ONCE = """
from flows.pipeline import ship_flow
state = ship_flow(version="latest", return_state=True)
print(state.state_details.flow_run_id, state.type.value)
"""


@pytest.mark.e2e  # two processes that import the pipeline: minutes on a busy machine
@pytest.mark.usefixtures("prefect_server")
def test_a_failing_build_steps_retry_warnings_and_registry_error_reach_the_runs_log(tmp_path):
    """What a worker's flow run logs reaches the run's log in the UI (the API), not only
    stdout: each retry warning of build-image and its last failure, naming the unreachable
    registry. Run in its own process with the team workers' logging config."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    from kiln.infra.team.run_logging import write_logging_config

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]  # nothing listens here once the socket is closed
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    env.update(
        {
            "KILN_STORE": str(tmp_path / "store"),
            "KILN_STATE_DIR": str(tmp_path / "state"),
            "KILN_REGISTRY": f"127.0.0.1:{closed}",
            "KILN_RETRIES": "2",
            "KILN_RETRY_DELAY": "0.1",
            "PREFECT_LOGGING_EXTRA_LOGGERS": "kiln,flows",
            "PREFECT_LOGGING_SETTINGS_PATH": str(write_logging_config(tmp_path / "logging.yml")),
        }
    )
    trained = subprocess.run(
        [sys.executable, "-m", "kiln.cli.app", "train"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert trained.returncode == 0, trained.stderr
    shipped = subprocess.run(
        [sys.executable, "-c", SHIP_ONCE], env=env, capture_output=True, text=True, timeout=300
    )
    assert shipped.returncode == 0, shipped.stderr
    run_id, state = shipped.stdout.split()[-2:]
    assert state == "FAILED", shipped.stdout

    async def read() -> list[tuple[str, int, str]]:
        async with get_client() as client:
            logs = await client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[uuid.UUID(run_id)]))
            )
        return [(log.name, log.level, log.message) for log in logs]

    logs = asyncio.run(read())
    where = f"127.0.0.1:{closed}"
    # Prefect's own retry records ("... - Retry 1/2 will start ..."), one per retry
    retries = [m for _, _, m in logs if " - Retry " in m and " will start " in m]
    assert len(retries) == 2 and all(where in m for m in retries), logs  # KILN_RETRIES=2
    failed = [m for _, level, m in logs if "Retries are exhausted" in m]
    assert failed and where in failed[0], logs
    assert "registry unreachable" in failed[0], logs  # kiln's own message, not a traceback


def test_one_s3_client_per_server_and_key_pair(monkeypatch):
    """The steps of a flow run share the store's S3 client (each new one costs botocore's
    model load); a changed endpoint or key pair gets its own, never another server's."""
    from kiln.store.artifact_store import ArtifactStore

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "one")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-one")
    url = f"s3://b-{uuid.uuid4().hex[:8]}/models"
    first, again = ArtifactStore(url), ArtifactStore(url)
    assert again.fs is first.fs
    assert ArtifactStore(url, attempts=9).fs is not first.fs  # other retries: other client
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:2")
    moved = ArtifactStore(url)
    assert moved.fs is not first.fs and moved.fs.endpoint_url.endswith(":2")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "two")
    assert ArtifactStore(url).fs is not moved.fs


def test_each_model_name_has_its_own_rollout_slot_on_a_target():
    assert rollout_limit_name("local") == "kiln-rollout-local"  # the default name's, as before
    assert rollout_limit_name("local", "model") == "kiln-rollout-local"
    assert rollout_limit_name("kubernetes", "wine") == "kiln-rollout-kubernetes-wine"
