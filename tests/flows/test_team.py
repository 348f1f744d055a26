"""The team setup's parts that run in seconds: its settings, process handling, the rollout
slot on this session's real Prefect server. tests/flows/test_team_e2e.py runs it all."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid

import pytest

from flows.errors import KilnError, RolloutError
from flows.team.command import export_lines, parse_exports
from flows.team.config import TeamConfig
from flows.team.limits import rollout_limit_name, rollout_slot
from flows.team.orchestration import ensure_rollout_limits
from flows.team.postgres import Postgres, PostgresError, init_cluster


def test_config_defaults_live_under_the_state_dir(tmp_path):
    config = TeamConfig.from_env(tmp_path, {})
    assert config.home == tmp_path / "team"
    assert (config.prefect_port, config.postgres_port, config.s3_port) == (4200, 54320, 8333)
    assert (config.pool, config.bucket, config.workers) == ("kiln", "kiln", 2)
    assert config.worker(2).name == "kiln-worker-2"


def test_config_reads_kiln_team_variables(tmp_path):
    env = {
        "KILN_TEAM_DIR": str(tmp_path / "elsewhere"),
        "KILN_TEAM_POSTGRES_PORT": "15432",
        "KILN_TEAM_S3_PORT": "18333",
        "KILN_TEAM_POOL": "ml-pool",
        "KILN_TEAM_WORKERS": "3",
    }
    config = TeamConfig.from_env(tmp_path, env, prefect_port=14200)
    assert config.home == tmp_path / "elsewhere"
    assert (config.prefect_port, config.postgres_port, config.s3_port) == (14200, 15432, 18333)
    assert (config.pool, config.workers) == ("ml-pool", 3)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KILN_TEAM_POSTGRES_PORT": "http"}, "KILN_TEAM_POSTGRES_PORT must be a whole number"),
        ({"KILN_TEAM_S3_PORT": "70000"}, "KILN_TEAM_S3_PORT must be a whole number"),
        ({"KILN_TEAM_WORKERS": "-1"}, "KILN_TEAM_WORKERS must be a whole number from 0 to 16"),
        ({"KILN_TEAM_POOL": "My Pool"}, "KILN_TEAM_POOL must be 1-63 lowercase"),
        ({"KILN_TEAM_S3_PORT": "4200"}, "ports must differ"),
        ({"KILN_TEAM_CRASH_AFTER": "10"}, "KILN_TEAM_CRASH_AFTER must be a whole number"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path, env, message):
    with pytest.raises(KilnError, match=message):
        TeamConfig.from_env(tmp_path, env)


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
