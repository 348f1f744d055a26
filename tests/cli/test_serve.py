"""`kiln serve` runs a stored version with the real gunicorn server over real HTTP."""

import os
import signal
import subprocess
import sys
import time

import httpx

from kiln.store.artifact_store import ArtifactStore
from kiln.training.params import TrainParams
from kiln.training.sequence import run_training
from tests.conftest import free_port


def test_serve_answers_with_the_stored_version(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    version = run_training(store, TrainParams()).version
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 (the server's lifetime)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kiln.cli.app",
            "serve",
            version[:8],
            "--port",
            str(port),
            "--workers",
            "1",
            "--store",
            str(tmp_path / "store"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "kiln serve never became ready"
            time.sleep(0.2)
        metadata = httpx.get(f"{base}/metadata").json()
        assert metadata["version"] == version
        labels = httpx.post(f"{base}/predict/label", json={"data": [[5.1, 3.5, 1.4, 0.2]]})
        assert labels.json() == {"prediction": ["setosa"]}
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
        log.close()
