"""The try-it lines `kiln deploy --target kubernetes` prints, run as printed: `kubectl proxy`
(the real kubectl, with a kubeconfig naming the emulated API server of
tests/support/k8s_emulator.py) and curl through it to the Service, to a pod's server."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from kiln.store.artifact_store import ArtifactStore
from tests.cli.test_undeploy import SAMPLE, cluster_env, kiln  # noqa: F401 (fixture)
from tests.conftest import free_port
from tests.support.k8s_emulator import EmulatedApiServer

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="no kubectl here")


def test_the_printed_try_it_lines_answer_with_a_prediction(
    cluster_env: EmulatedApiServer,  # noqa: F811
    tmp_path: Path,
    capsys,
) -> None:
    store = ArtifactStore(tmp_path / "store")
    version = store.put(b"model a", {0: "setosa", 1: "virginica"}, {"sample_input": SAMPLE})
    image = f"127.0.0.1:5000/kiln/iris@sha256:{version[:16].ljust(64, '0')}"
    store.record_image(version, image)
    cluster_env.cluster.push(image, version)
    code, out, err = kiln(capsys, "deploy", version)
    assert code == 0, err
    lines = out.split("try it:\n", 1)[1].splitlines()
    assert len(lines) == 2, out
    # 8001 (kubectl proxy's default) may be taken on a shared machine: the same lines on a
    # free port
    port = str(free_port())
    proxy_line, curl_line = (line.strip().replace("8001", port) for line in lines)
    assert proxy_line.endswith(" &")
    proxy = subprocess.Popen(
        shlex.split(proxy_line[:-1]), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert proxy.stdout is not None
        assert "Starting to serve" in proxy.stdout.readline()
        answer = subprocess.run(
            ["bash", "-c", curl_line], capture_output=True, text=True, timeout=30, check=True
        )
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
        if proxy.stdout is not None:
            proxy.stdout.close()
    assert json.loads(answer.stdout) == {"prediction": [[1.0, 0.0]] * len(SAMPLE)}
