"""`kiln serve` serves its own private, read-only copy of the model, removed at exit."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx

from kiln.store.artifact_store import ArtifactStore
from tests.conftest import free_port
from tests.serving.model_dirs import IRIS_FEATURES, IRIS_LABELS, SAMPLE_INPUT, iris_onnx_bytes

WAIT = 60  # seconds: an upper bound for a busy machine


def _serve(store: Path, version: str, port: int, tmp: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "kiln.cli.app", "serve", version, "--port", str(port)]
    argv += ["--workers", "1", "--store", str(store)]
    env = {**os.environ, "TMPDIR": str(tmp / "tmp")}
    with (tmp / f"serve-{port}.log").open("wb") as log:  # the child keeps its own copy
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)


def _wait_ready(server: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + WAIT
    while True:
        assert server.poll() is None, "kiln serve exited"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "kiln serve never became ready"
        time.sleep(0.2)


def test_each_server_has_its_own_private_copy_removed_at_exit(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    labels = {int(k): v for k, v in IRIS_LABELS.items()}
    meta = {"sample_input": SAMPLE_INPUT, "feature_names": IRIS_FEATURES}
    version = store.put(iris_onnx_bytes(), labels, meta)
    (tmp_path / "tmp").mkdir()
    ports = [free_port(), free_port()]
    servers = [_serve(tmp_path / "store", version, port, tmp_path) for port in ports]
    try:
        for server, port in zip(servers, ports, strict=True):
            _wait_ready(server, port)
        copies = sorted((tmp_path / "tmp").glob("kiln-serve-*"))
        assert len(copies) == 2  # one per server, never a shared folder
        for copy in copies:
            assert stat.S_IMODE(copy.stat().st_mode) == 0o700
            files = sorted(p.name for p in copy.iterdir())
            assert files == ["labels.json", "metadata.json", "model.onnx"]
            for path in copy.iterdir():
                assert stat.S_IMODE(path.stat().st_mode) == 0o400
        answer = httpx.get(f"http://127.0.0.1:{ports[0]}/metadata").json()
        assert answer["version"] == version
    finally:
        for server in servers:
            server.send_signal(signal.SIGTERM)
        codes = [server.wait(WAIT) for server in servers]
    assert codes == [0, 0]
    assert list((tmp_path / "tmp").glob("kiln-serve-*")) == []


def test_a_refused_model_leaves_no_copy_behind(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    labels = {0: "setosa", 1: "versicolor", 2: "virginica"}
    version = store.put(b"not an onnx model", labels, {"sample_input": SAMPLE_INPUT})
    (tmp_path / "tmp").mkdir()
    server = _serve(tmp_path / "store", version, free_port(), tmp_path)
    assert server.wait(WAIT) == 3  # the master refuses the model before forking
    assert list((tmp_path / "tmp").glob("kiln-serve-*")) == []
