"""Rollout logic without a target (smoke test, picking images, rollout status), and the
deploy/rollback/status commands through the real `kiln` entry point against the EMULATED
Kubernetes API server (tests/support/k8s_emulator.py: test code standing in for a cluster)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kiln.config.errors import RolloutError
from kiln.rollout import is_transient, pick_image, retry_if_transient
from kiln.rollout.kubernetes.api import ApiUnreachable
from kiln.rollout.kubernetes.target import RolloutStuck, rollout_status
from kiln.rollout.smoke import Reply, SmokeTestFailed, smoke_test
from kiln.store.artifact_store import ArtifactStore
from tests.support.k8s_emulator import ENFORCE_LABEL, EmulatedApiServer

SAMPLE = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def server(
    version: str = "v1", metadata_status: int = 200, predict: Any = None, predict_status: int = 200
):
    calls: list[tuple[str, str, Any]] = []

    def call(method: str, path: str, body: Any) -> Reply:
        calls.append((method, path, body))
        if path == "/metadata":
            return Reply(metadata_status, json.dumps({"version": version}).encode())
        answer = predict if predict is not None else {"prediction": [[1, 0]] * len(body["data"])}
        return Reply(predict_status, json.dumps(answer).encode())

    return call, calls


def test_smoke_test_checks_the_version_then_predicts_the_sample() -> None:
    call, calls = server("v1")
    smoke_test(call, "v1", SAMPLE)
    assert calls == [("GET", "/metadata", None), ("POST", "/predict", {"data": SAMPLE})]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"version": "v0"}, "reports version 'v0', expected 'v1'"),
        ({"metadata_status": 503}, "GET /metadata answered 503"),
        ({"predict_status": 500}, "POST /predict answered 500"),
        ({"predict": {"prediction": [[1, 0]]}}, "for 2 sample rows"),
        ({"predict": {"something": "else"}}, "for 2 sample rows"),
    ],
)
def test_smoke_test_failures_name_what_was_wrong(kwargs: dict, message: str) -> None:
    call, _ = server(**kwargs)
    with pytest.raises(SmokeTestFailed, match=message):
        smoke_test(call, "v1", SAMPLE)


def test_a_server_that_does_not_answer_fails_the_smoke_test() -> None:
    def call(method: str, path: str, body: Any) -> Reply:
        raise ConnectionRefusedError("connection refused")

    with pytest.raises(SmokeTestFailed, match="GET /metadata: connection refused"):
        smoke_test(call, "v1", SAMPLE)


def test_pick_image_wants_a_digest() -> None:
    refs = ["127.0.0.1:5000/kiln/iris:v1", "127.0.0.1:5000/kiln/iris@sha256:" + "a" * 64]
    assert pick_image(refs, "v1") == refs[1]
    with pytest.raises(RolloutError, match="no image pinned by digest"):
        pick_image(refs[:1], "v1")


def test_pick_image_takes_only_the_names_own_repository() -> None:
    """A version stored under two names has one image per name: each carries its name."""
    wine = "127.0.0.1:5000/kiln/wine@sha256:" + "b" * 64
    iris = "127.0.0.1:5000/kiln/iris@sha256:" + "a" * 64
    nested = "127.0.0.1:5000/kiln/wine/x@sha256:" + "c" * 64  # a deeper repository
    refs = [iris, nested, wine]
    assert pick_image(refs, "v1", "kiln/wine") == wine
    assert pick_image(refs, "v1", "kiln/iris") == iris
    assert pick_image(refs, "v1") == iris  # no name given: as before, the first pinned
    with pytest.raises(RolloutError, match="pinned by digest is recorded for it in kiln/model"):
        pick_image(refs, "v1", "kiln/model")
    tagged = ["127.0.0.1:5000/kiln/model:v1"]
    with pytest.raises(RolloutError, match="in kiln/model"):
        pick_image(tagged, "v1", "kiln/model")


def test_roll_out_ships_the_image_of_the_names_repository(tmp_path: Path) -> None:
    from kiln.rollout import roll_out
    from tests.rollout.test_refusal import FakeTarget

    store = ArtifactStore(tmp_path / "store")
    version = store.put(b"model", {0: "a", 1: "b"}, {"sample_input": SAMPLE[:1]})
    wine = f"127.0.0.1:5000/kiln/wine@sha256:{'b' * 64}"
    for ref in (f"127.0.0.1:5000/kiln/iris@sha256:{'a' * 64}", wine):
        store.record_image(version, ref)
    target = FakeTarget()
    assert roll_out(store, version, target, repository="kiln/wine").image == wine
    with pytest.raises(RolloutError, match="in kiln/model"):
        roll_out(store, version, target, repository="kiln/model")


def deployment(generation: int = 2, observed: int = 2, want: int = 3, **status: Any) -> dict:
    return {
        "metadata": {"name": "kiln", "generation": generation},
        "spec": {"replicas": want},
        "status": {"observedGeneration": observed, **status},
    }


@pytest.mark.parametrize(
    ("obj", "done", "message"),
    [
        (deployment(observed=1), False, "kiln: waiting for the controller to see generation 2"),
        (
            deployment(updatedReplicas=1, replicas=4, availableReplicas=3),
            False,
            "kiln: 1 of 3 new replicas updated",
        ),
        (
            deployment(updatedReplicas=3, replicas=4, availableReplicas=3),
            False,
            "kiln: 1 old replicas pending termination",
        ),
        (
            deployment(updatedReplicas=3, replicas=3, availableReplicas=2),
            False,
            "kiln: 2 of 3 updated replicas available",
        ),
        (
            deployment(updatedReplicas=3, replicas=3, availableReplicas=3),
            True,
            "kiln: rolled out, 3 replicas available",
        ),
        # The API server leaves zero counts out, and a new Deployment has no status yet.
        (deployment(), False, "kiln: 0 of 3 new replicas updated"),
        (deployment(want=1, updatedReplicas=1), False, "kiln: 0 of 1 updated replicas available"),
        (deployment(want=0), True, "kiln: rolled out, 0 replicas available"),  # scaled to zero
        (
            {"metadata": {"name": "kiln", "generation": 1}, "spec": {"replicas": 3}},
            False,
            "kiln: waiting for the controller to see generation 1",
        ),
    ],
)
def test_rollout_status_follows_the_deployment_controller(
    obj: dict, done: bool, message: str
) -> None:
    assert rollout_status(obj) == (done, message)


def stuck_message(obj: dict) -> str:
    with pytest.raises(RolloutStuck) as caught:
        rollout_status(obj)
    return str(caught.value)


def test_rollout_status_reports_a_replica_failure_and_a_pause() -> None:
    failure = {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate"}
    quota = 'pods "kiln-1" is forbidden: exceeded quota'
    assert stuck_message(deployment(conditions=[{**failure, "message": quota}])) == (
        f"replica failure (FailedCreate): {quota}"
    )
    assert stuck_message(deployment(conditions=[failure])) == "replica failure (FailedCreate): "
    cleared = deployment(conditions=[{**failure, "status": "False"}], updatedReplicas=3)
    assert rollout_status(cleared) == (False, "kiln: 0 of 3 updated replicas available")
    paused = deployment(updatedReplicas=0)
    paused["spec"]["paused"] = True
    assert stuck_message(paused) == "kiln is paused: resume it to let the rollout finish"


def test_rollout_status_reports_the_progress_deadline() -> None:
    available = {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}
    deadline = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
    timed_out = 'ReplicaSet "kiln-abc" has timed out progressing.'
    obj = deployment(updatedReplicas=1, conditions=[available, {**deadline, "message": timed_out}])
    assert stuck_message(obj) == f"progress deadline exceeded: {timed_out}"
    obj = deployment(updatedReplicas=1, conditions=[deadline])
    assert stuck_message(obj) == "progress deadline exceeded: no progress"
    progressing = {**deadline, "status": "True", "reason": "ReplicaSetUpdated"}
    obj = deployment(updatedReplicas=1, conditions=[progressing])
    assert rollout_status(obj) == (False, "kiln: 1 of 3 new replicas updated")


# -- the CLI against the emulated API server, through a real kubeconfig ----------------------


@pytest.fixture
def emulator() -> Iterator[EmulatedApiServer]:
    with EmulatedApiServer() as server:
        server.cluster.add_namespace("kiln-cli", {ENFORCE_LABEL: "restricted"})
        yield server


@pytest.fixture
def kiln_env(tmp_path: Path, emulator: EmulatedApiServer) -> dict[str, str]:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "other",
                "clusters": [
                    {"name": "emulated", "cluster": {"server": emulator.url}},
                    {"name": "nowhere", "cluster": {"server": "http://127.0.0.1:9"}},
                ],
                "users": [{"name": "tester", "user": {"token": "t0ken"}}],
                "contexts": [
                    {"name": "emulated", "context": {"cluster": "emulated", "user": "tester"}},
                    {"name": "other", "context": {"cluster": "nowhere", "user": "tester"}},
                ],
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    env.update(
        KUBECONFIG=str(kubeconfig),
        KILN_STORE=str(tmp_path / "store"),
        KILN_TARGET="kubernetes",
        KILN_K8S_CONTEXT="emulated",
        KILN_K8S_NAMESPACE="kiln-cli",
        KILN_K8S_POLL_INTERVAL="0.05",  # the emulator moves on per request, not per second
    )
    return env


def kiln(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kiln.cli.app", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def add_version(store: ArtifactStore, emulator: EmulatedApiServer, name: str) -> tuple[str, str]:
    version = store.put(f"model {name}".encode(), {0: "a", 1: "b"}, {"sample_input": SAMPLE})
    image = f"127.0.0.1:5000/kiln/iris@sha256:{version.ljust(64, '0')}"
    store.record_image(version, image)
    emulator.cluster.push(image, version)
    return version, image


@pytest.mark.slow
def test_deploy_status_rollback_through_the_cli(
    kiln_env: dict[str, str], emulator: EmulatedApiServer
) -> None:
    store = ArtifactStore(kiln_env["KILN_STORE"])
    old, old_image = add_version(store, emulator, "a")
    new, new_image = add_version(store, emulator, "b")

    first = kiln(kiln_env, "deploy", old[:6])
    assert first.returncode == 0, first.stderr
    assert f"deployed {old} on kubernetes" in first.stdout
    second = kiln(kiln_env, "deploy", new)
    assert second.returncode == 0, second.stderr
    assert f"previous  {old} ({old_image})" in second.stdout
    # KILN_K8S_CONTEXT picked the emulated cluster (the kubeconfig's current context points
    # nowhere) and its user's token reached the API server
    assert emulator.cluster.template_image("kiln-cli", "kiln") == new_image
    assert emulator.cluster.authorizations == {"Bearer t0ken"}

    status = kiln(kiln_env, "status")
    assert status.returncode == 0, status.stderr
    assert f"recorded  {new} {new_image}" in status.stdout
    assert f"previous  {old} {old_image}" in status.stdout
    assert f"live      {new} {new_image} Deployment kiln-cli/kiln" in status.stdout

    back = kiln(kiln_env, "rollback")
    assert back.returncode == 0, back.stderr
    assert f"rolled back to {old} on kubernetes" in back.stdout
    assert emulator.cluster.serving_image("kiln-cli", "kiln") == old_image


@pytest.mark.slow
def test_a_failed_deploy_exits_non_zero_with_one_line(
    kiln_env: dict[str, str], emulator: EmulatedApiServer
) -> None:
    store = ArtifactStore(kiln_env["KILN_STORE"])
    old, old_image = add_version(store, emulator, "a")
    new, new_image = add_version(store, emulator, "b")
    assert kiln(kiln_env, "deploy", old).returncode == 0
    emulator.cluster.fault(new_image, metadata_version="stale")

    failed = kiln(kiln_env, "deploy", new)

    assert failed.returncode == 1
    assert f"{old} keeps serving" in failed.stderr and "Traceback" not in failed.stderr
    assert emulator.cluster.serving_image("kiln-cli", "kiln") == old_image


@pytest.mark.slow
def test_rollback_with_nothing_before_is_an_error(kiln_env: dict[str, str]) -> None:
    failed = kiln(kiln_env, "rollback")
    assert failed.returncode == 1
    assert "nothing was ever deployed" in failed.stderr


# -- retries: transient failures only ---------------------------------------------------------


def smoke_failed() -> RolloutError:
    try:
        raise SmokeTestFailed("GET /metadata reports version 'x', expected 'y'")
    except SmokeTestFailed as err:
        try:
            raise RolloutError("rolling out y to kubernetes: ...; rolled back to x") from err
        except RolloutError as wrapped:
            return wrapped


def unreachable() -> RolloutError:
    try:
        raise ApiUnreachable("GET /apis/apps/v1/...: connection refused")
    except ApiUnreachable as err:
        try:
            raise RolloutError("rolling out y to kubernetes: ...") from err
        except RolloutError as wrapped:
            return wrapped


def test_only_transient_failures_are_retried() -> None:
    from prefect.states import Failed

    assert is_transient(unreachable())
    assert not is_transient(smoke_failed())
    assert retry_if_transient(None, None, Failed(data=unreachable()))
    assert not retry_if_transient(None, None, Failed(data=smoke_failed()))
    assert not retry_if_transient(None, None, Failed(data=ValueError("not ours")))


@pytest.mark.slow
def test_the_pipeline_never_retries_a_rolled_back_version(prefect_server: str) -> None:
    """The roll-out task's options as ship_steps sets them: a smoke failure runs once."""
    from prefect import flow, task

    from flows.pipeline import retried
    from kiln.config.settings import KilnSettings

    calls: list[str] = []

    @task
    def ship(kind: str) -> None:
        calls.append(kind)
        raise unreachable() if kind == "transient" else smoke_failed()

    settings = KilnSettings(retries=2, retry_delay=0)
    step = retried(ship, settings).with_options(retry_condition_fn=retry_if_transient)

    @flow
    def run(kind: str) -> None:
        step(kind)

    for kind in ("transient", "smoke"):
        with pytest.raises(RolloutError):
            run(kind)
    assert calls.count("transient") == 3 and calls.count("smoke") == 1
