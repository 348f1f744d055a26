"""Two model names in one store, end to end: `kiln run --name` (the real CLI, this session's
Prefect server, the local registry and podman) ships iris and wine side by side, each on
its own port and in its own image repository; retraining one leaves the other's champion,
endpoint and record as they were; `kiln prune --keep 1` keeps one of each plus what each
deploys."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import httpx
import pytest

from kiln.rollout.local import LocalTarget
from tests.conftest import engine_client, free_port
from tests.support import tables
from tests.support.factories import run_kiln

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_server")]

RUN = uuid.uuid4().hex[:8]


@pytest.fixture
def env(tmp_path) -> Iterator[dict[str, str]]:
    """This test's own store, repository prefix and container names (ports: below)."""
    local_name = f"kiln-names-{RUN}"
    settings = {
        "KILN_STORE": str(tmp_path / "store"),
        "KILN_REPOSITORY": f"kiln-test/{RUN}",
        "KILN_LOCAL_PORT": str(free_port()),  # the default name's: unused here
        "KILN_LOCAL_NAME": local_name,
        "KILN_RETRIES": "1",
        "KILN_RETRY_DELAY": "0.1",
    }
    yield settings
    for name in ("iris", "wine"):
        LocalTarget(engine_client(), name_prefix=f"{local_name}-{name}").stop_all()


def kiln(env: dict[str, str], *args: str) -> dict | list:
    done = run_kiln(*args, "-o", "json", env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def metadata(endpoint: str) -> dict:
    answer = httpx.get(f"{endpoint}/metadata", timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def train(env: dict[str, str], data: Path, seed: int) -> str:
    """`kiln train` a wine model (stored, not shipped); its version."""
    done = run_kiln(
        "train", "--name", "wine", "--data", str(data), "--label-column", "cultivar",
        "--model", "logistic", "--seed", str(seed), env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = re.search(r"version (\w{12})", done.stdout)
    assert found, done.stdout
    return found.group(1)


def prefect_run(flow_run_id: str) -> tuple[str, list[str], list[list[str]]]:
    """A flow run's name and tags in the Prefect server, and its task runs' tags."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(flow_run_id))
        one_run = FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
        tasks = client.read_task_runs(flow_run_filter=one_run)
    return run.name, list(run.tags), [list(task.tags) for task in tasks]


def records(env: dict[str, str]) -> dict[str, dict]:
    """`kiln status`'s recorded deployment of each name on the local target."""
    rows = kiln(env, "status", "--target", "local")
    assert isinstance(rows, list)
    return {row["name"]: row["recorded"] for row in rows}


def test_two_names_ship_side_by_side_and_keep_out_of_each_others_way(env, tmp_path):
    wine_csv = tables.write(tables.wine_mixed(), tmp_path / "wine.csv")
    wine_port = free_port()
    iris = kiln(env, "run", "--name", "iris")
    wine = kiln(
        env,
        "run",
        "--name", "wine",
        "--data", str(wine_csv),
        "--label-column", "cultivar",
        "--model", "logistic",
        "--port", str(wine_port),
    )  # fmt: skip
    assert isinstance(iris, dict) and isinstance(wine, dict)
    assert iris["shipped"] and wine["shipped"]
    assert wine["endpoint"] == f"http://127.0.0.1:{wine_port}"
    assert iris["endpoint"] != wine["endpoint"]  # a free port, chosen and recorded
    assert f"/kiln-test/{RUN}/iris@sha256:" in iris["image"]
    assert f"/kiln-test/{RUN}/wine@sha256:" in wine["image"]
    served = {
        name: metadata(summary["endpoint"]) for name, summary in (("iris", iris), ("wine", wine))
    }
    assert served["iris"]["version"] == iris["version"] and served["iris"]["name"] == "iris"
    assert served["wine"]["version"] == wine["version"] and served["wine"]["name"] == "wine"
    before = records(env)
    run_name, run_tags, task_tags = prefect_run(wine["flow_run_id"])
    assert run_name.startswith("retrain-wine-") and "model:wine" in run_tags
    assert task_tags and all("model:wine" in tags for tags in task_tags)

    again = kiln(env, "run", "--name", "iris", "--seed", "7", "--C", "4", "--force")
    assert isinstance(again, dict) and again["shipped"] and again["version"] != iris["version"]
    assert again["endpoint"] == iris["endpoint"]  # the name's port, from its record
    assert metadata(iris["endpoint"])["version"] == again["version"]
    assert metadata(wine["endpoint"])["version"] == wine["version"]
    after = records(env)
    assert after["wine"] == before["wine"]  # wine's champion and record: untouched
    assert after["iris"]["current"] == again["version"]
    assert after["iris"]["previous"] == iris["version"]

    # a wine model taking iris's columns is refused by wine's champion gate
    refused = kiln(env, "run", "--name", "wine", "--data", "iris")
    assert isinstance(refused, dict) and not refused["shipped"]
    assert "schema" in refused["decision"]["reason"], refused["decision"]
    assert metadata(wine["endpoint"])["version"] == wine["version"]

    extra = [train(env, wine_csv, seed) for seed in (3, 4)]
    assert len(set(extra)) == 2
    pruned = run_kiln("prune", "--keep", "1", env=env, timeout=300)
    assert pruned.returncode == 0, pruned.stderr
    listed = kiln(env, "models")
    assert isinstance(listed, list)
    left = {(row["name"], row["version"]) for row in listed}
    assert left >= {
        ("iris", again["version"]),  # iris's newest, and what it runs
        ("iris", iris["version"]),  # iris's rollback target
        ("wine", wine["version"]),  # what wine runs
        ("wine", extra[-1]),  # wine's newest
    }
    assert extra[0] not in {version for _, version in left}, pruned.stdout
