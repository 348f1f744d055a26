"""`kiln logs --target kubernetes [-f]` against the emulated API server
(tests/support/k8s_emulator.py: test code standing in for a cluster, speaking the API
server's wire format over real HTTP)."""

from __future__ import annotations

import http.client
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kiln.store.artifact_store import ArtifactStore
from tests.cli.test_undeploy import NS, SAMPLE, cluster_env, kiln  # noqa: F401 (fixture)
from tests.support.k8s_emulator import EmulatedApiServer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def deployed(cluster_env: EmulatedApiServer, tmp_path: Path, capsys) -> EmulatedApiServer:  # noqa: F811
    """A version deployed through `kiln deploy`: its pods have started and served the smoke test."""
    store = ArtifactStore(tmp_path / "store")
    version = store.put(b"model a", {0: "setosa", 1: "virginica"}, {"sample_input": SAMPLE})
    image = f"127.0.0.1:5000/kiln/iris@sha256:{version[:16].ljust(64, '0')}"
    store.record_image(version, image)
    cluster_env.cluster.push(image, version)
    code, _, err = kiln(capsys, "deploy", version)
    assert code == 0, err
    return cluster_env


def test_logs_print_what_the_pods_wrote(deployed: EmulatedApiServer, capsys) -> None:
    [pod] = [p for p in deployed.cluster.pods(NS, "kiln") if not p.terminating]

    code, out, err = kiln(capsys, "logs")

    assert code == 0, err
    lines = out.splitlines()
    assert lines[:2] == [
        f"[INFO] Starting gunicorn (pod {pod.name})",
        "[INFO] Listening at: http://0.0.0.0:8000",
    ]
    assert f'{pod.ip} "POST /predict HTTP/1.1" 200' in lines  # the smoke test's request
    assert (
        "GET",
        f"/api/v1/namespaces/{NS}/pods/{pod.name}/log?container=server&tailLines=100",
    ) in deployed.cluster.requests

    code, out, _ = kiln(capsys, "logs", "--tail", "1")
    assert code == 0 and out.splitlines() == lines[-1:]


def test_several_pods_are_prefixed_with_their_names(deployed: EmulatedApiServer, capsys) -> None:
    deployed.cluster.scale(NS, "kiln", 2)
    for _ in range(5):  # the controller starts the second pod over a few steps
        kiln(capsys, "status", "--target", "kubernetes")
    pods = sorted(p.name for p in deployed.cluster.pods(NS, "kiln") if not p.terminating)
    assert len(pods) == 2

    code, out, err = kiln(capsys, "logs", "--tail", "1")

    assert code == 0, err
    assert [line.split("] ")[0] for line in out.splitlines()] == [f"[{p}" for p in pods]


def test_follow_prints_new_lines_and_ends_with_the_pod(deployed: EmulatedApiServer) -> None:
    [pod] = [p for p in deployed.cluster.pods(NS, "kiln") if not p.terminating]
    lines: queue.Queue[str] = queue.Queue()
    with subprocess.Popen(
        [sys.executable, "-m", "kiln.cli.app", "logs", "-f", "--tail", "1"],
        cwd=REPO,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as follower:
        reader = threading.Thread(target=lambda: [lines.put(x) for x in follower.stdout or []])
        reader.start()
        try:
            first = lines.get(timeout=60)  # the last line already written
            assert first.startswith(pod.ip)
            with deployed.cluster.lock:
                pod.write_log("a line written while kiln follows")
            assert lines.get(timeout=30) == "a line written while kiln follows\n"
            with deployed.cluster.lock:  # a rollout replaces the pod: its stream ends
                pod.terminating = True
            assert follower.wait(timeout=30) == 0
        finally:
            if follower.poll() is None:
                follower.kill()
            reader.join(30)
        assert (follower.stderr.read() if follower.stderr else "") == ""


def test_nothing_deployed_is_one_line(cluster_env: EmulatedApiServer, capsys) -> None:  # noqa: F811
    cluster_env.cluster.add_namespace(NS)
    code, out, err = kiln(capsys, "logs")
    assert code == 1 and out == ""
    assert err.splitlines() == [
        f"error: nothing runs on kubernetes: no Deployment {NS}/kiln; "
        "`kiln deploy VERSION` ships one"
    ]


def test_no_pods_is_one_line(deployed: EmulatedApiServer, capsys) -> None:
    deployed.cluster.scale(NS, "kiln", 0)
    for _ in range(3):
        kiln(capsys, "status", "--target", "kubernetes")

    code, _, err = kiln(capsys, "logs")

    assert code == 1
    assert err.splitlines() == [
        f"error: Deployment {NS}/kiln has no pods (scaled to zero, or none could start)"
    ]


def test_a_forbidden_log_read_is_one_line(deployed: EmulatedApiServer, capsys) -> None:
    deployed.cluster.allow(
        {
            "rules": [
                {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
            ]
        }
    )

    code, out, err = kiln(capsys, "logs")

    assert code == 1 and out == ""
    [line] = err.splitlines()
    assert line.startswith("error: the API server refused kiln (403): pods ")
    assert 'cannot get resource "pods/log"' in line and "get on pods/log" in line
    assert "get core/pods/log" in " ".join(deployed.cluster.forbidden)


def test_an_unreachable_api_server_is_one_line(cluster_env: EmulatedApiServer, capsys) -> None:  # noqa: F811
    url = cluster_env.url
    cluster_env.__exit__(None, None, None)  # nothing listens there any more
    started = time.monotonic()

    code, _, err = kiln(capsys, "logs")

    assert code == 1 and "Traceback" not in err
    assert err.splitlines() == [
        f"error: cannot reach the Kubernetes API server at {url} (connection refused); "
        "check KUBECONFIG or KILN_K8S_CONTEXT"
    ]
    assert time.monotonic() - started < 30


def test_the_emulated_log_endpoint_speaks_the_wire_format(deployed: EmulatedApiServer) -> None:
    """What the real API server does with the log endpoint's parameters, which the CLI's
    tests above rely on: text/plain, chunked, tailLines, limitBytes, timestamps, 400s."""
    [pod] = [p for p in deployed.cluster.pods(NS, "kiln") if not p.terminating]
    host, port = deployed.url.removeprefix("http://").split(":")
    path = f"/api/v1/namespaces/{NS}/pods/{pod.name}/log"

    def get(query: str) -> tuple[int, str, str, str]:
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            connection.request("GET", f"{path}?{query}")
            response = connection.getresponse()
            kind = response.getheader("Content-Type") or ""
            chunked = response.getheader("Transfer-Encoding") or ""
            return response.status, kind, chunked, response.read().decode()
        finally:
            connection.close()

    status, kind, chunked, body = get("container=server")
    assert (status, kind, chunked) == (200, "text/plain", "chunked")
    assert body.startswith("[INFO] Starting gunicorn") and body.endswith("\n")
    assert get("tailLines=1")[3] == body.splitlines(keepends=True)[-1]
    assert get("limitBytes=7")[3] == body[:7]
    stamped = get("timestamps=true&tailLines=1")[3]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z ", stamped)
    status, kind, _, body = get("container=sidecar")
    assert (status, kind) == (400, "application/json")
    assert json.loads(body)["message"] == f"container sidecar is not valid for pod {pod.name}"
