"""The real server: `python -m serving` (gunicorn + uvicorn workers) over HTTP on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from model_dirs import write_model_dir

REPO = Path(__file__).resolve().parents[2]
WAIT = 60  # seconds: an upper bound for a busy machine, not a performance assertion


class Server:
    """`python -m serving` on port 0; the port is read from gunicorn's log."""

    def __init__(self, model_dir: Path, tmp: Path, workers: int = 1, **env: str) -> None:
        environ = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        environ.update({"PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"), "PYTHONPATH": str(REPO)})
        environ.update(env)
        if not environ["PROMETHEUS_MULTIPROC_DIR"]:
            del environ["PROMETHEUS_MULTIPROC_DIR"]  # let gunicorn_conf make its own
        (tmp / "metrics").mkdir(exist_ok=True)
        argv = [sys.executable, "-m", "serving", "--model-dir", str(model_dir)]
        argv += ["--port", "0", "--workers", str(workers)]
        self.process = subprocess.Popen(
            argv,
            cwd=REPO,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: teardown can end the workers too
        )
        self.lines: list[str] = []
        self.port: int | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            found = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", line)
            if found:
                self.port = int(found.group(1))

    def wait_ready(self) -> str:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "\n".join(self.lines)
            if self.port is not None:
                url = f"http://127.0.0.1:{self.port}"
                try:
                    if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                        return url
                except httpx.TransportError:
                    pass
            time.sleep(0.1)
        raise AssertionError("server not ready:\n" + "\n".join(self.lines))

    def wait_exit(self) -> int:
        code = self.process.wait(timeout=WAIT)
        self._reader.join(timeout=5)
        if not self._reader.is_alive():
            self.process.stdout.close()
        return code

    def kill_group(self) -> None:
        """Teardown: SIGKILL the master and any worker it left behind."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.wait_exit()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait_exit()


@pytest.fixture
def server_factory(tmp_path):
    started: list[Server] = []

    def start(model_dir: Path, **kwargs) -> Server:
        started.append(Server(model_dir, tmp_path, **kwargs))
        return started[-1]

    yield start
    for server in started:
        server.kill_group()


def test_serves_over_http_with_two_workers(server_factory, model_dir):
    server = server_factory(model_dir, workers=2, LOG_FORMAT="json", METRICS_FLUSH_SECONDS="0.1")
    url = server.wait_ready()
    with httpx.Client(base_url=url) as http:
        response = http.post("/predict/label", json={"data": [[5.1, 3.5, 1.4, 0.2]]})
        assert response.json() == {"prediction": ["setosa"]}
        bad = http.post("/predict", json={"data": [[1, 2]]})
        assert (bad.status_code, bad.json()["code"]) == (422, "wrong_feature_count")
        assert http.get("/metadata").json()["version"] == "3f2a9c1b7d4e"
    # New connections, so both workers answer some; /metrics sums over workers.
    for _ in range(20):
        httpx.post(f"{url}/predict", json={"data": [[5.1, 3.5, 1.4, 0.2]] * 3})
    # Each worker flushes its counts every METRICS_FLUSH_SECONDS; wait for both.
    pattern = r'kiln_requests_total\{[^}]*route="/predict",status="200"\} (\S+)'
    deadline = time.monotonic() + WAIT
    while True:
        text = httpx.get(f"{url}/metrics").text
        line = re.search(pattern, text)
        if (line and float(line.group(1)) >= 20) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert line is not None, text
    assert float(line.group(1)) == 20
    assert re.search(r'kiln_rows_predicted_total\{route="/predict"\} 60\.0', text)
    assert re.search(r'kiln_model_info\{[^}]*version="3f2a9c1b7d4e"', text)

    assert server.stop() == 0
    records = [json.loads(line) for line in server.lines if line.startswith("{")]
    assert len(records) == len([line for line in server.lines if line.strip()])  # all JSON
    loaded = [r for r in records if r["message"].startswith("model ") and "loaded" in r["message"]]
    assert len({r["pid"] for r in loaded}) == 2  # each worker loads its own session
    assert not any("POST /predict" in r["message"] for r in records)  # no access log


def test_sha256_mismatch_stops_the_master_with_status_3(server_factory, model_dir):
    server = server_factory(model_dir, MODEL_SHA256="0" * 64)
    assert server.wait_exit() == 3
    errors = [line for line in server.lines if "ERROR" in line]
    assert len(errors) == 1, server.lines
    assert "model not loaded, not serving" in errors[0]
    assert "MODEL_SHA256" in errors[0]
    assert not any("Booting worker" in line for line in server.lines)


def test_missing_model_stops_the_master_with_status_3(server_factory, tmp_path):
    server = server_factory(tmp_path / "nowhere")
    assert server.wait_exit() == 3
    assert any("model.onnx does not exist" in line for line in server.lines)


def test_a_model_onnx_runtime_refuses_stops_the_master_with_status_3(server_factory, tmp_path):
    """The files agree (sha256 recorded for garbage): only ONNX Runtime can tell."""
    directory = write_model_dir(tmp_path / "garbage", model_bytes=b"not an onnx model")
    server = server_factory(directory, workers=2)
    assert server.wait_exit() == 3
    errors = [line for line in server.lines if "ERROR" in line]
    assert len(errors) == 1, server.lines
    assert "model not loaded, not serving" in errors[0]
    assert "is not a loadable ONNX model" in errors[0]
    assert not any("Booting worker" in line for line in server.lines)
    assert not any("Traceback" in line for line in server.lines)


def test_workers_stop_when_the_master_is_killed(server_factory, model_dir):
    server = server_factory(model_dir, TIMEOUT="1")
    server.wait_ready()
    master = server.process.pid
    workers = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    assert len(workers) == 1
    server.process.kill()  # SIGKILL: the master cannot tell its workers
    server.process.wait()
    worker = Path(f"/proc/{workers[0]}")
    deadline = time.monotonic() + WAIT
    while worker.exists() and "zombie" not in _state(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not worker.exists() or "zombie" in _state(worker)
    assert any("is gone; worker" in line for line in server.lines)


def _state(proc: Path) -> str:
    try:
        return (proc / "status").read_text().split("State:")[1].splitlines()[0]
    except (FileNotFoundError, IndexError):
        return "zombie"


@pytest.mark.parametrize("setting", [{"MAX_ROWS": "lots"}, {"LOG_FORMAT": "xml"}])
def test_a_bad_setting_stops_with_status_2(server_factory, model_dir, setting):
    server = server_factory(model_dir, **setting)
    assert server.wait_exit() == 2
    name = next(iter(setting))
    assert any(f"bad server setting, not serving: {name}=" in line for line in server.lines)


def test_access_log_when_asked(server_factory, model_dir):
    server = server_factory(model_dir, ACCESS_LOG="1")
    url = server.wait_ready()
    httpx.post(f"{url}/predict", json={"data": [[5.1, 3.5, 1.4, 0.2]]})
    assert server.stop() == 0
    assert any('"POST /predict HTTP/1.1" 200' in line for line in server.lines), server.lines


def test_a_metrics_dir_it_made_is_removed_at_exit(server_factory, model_dir, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    own = {"PROMETHEUS_MULTIPROC_DIR": "", "TMPDIR": str(scratch)}
    server = server_factory(model_dir, **own)
    server.wait_ready()
    assert len(list(scratch.glob("kiln-metrics-*"))) == 1
    assert server.stop() == 0
    failed = server_factory(model_dir, MODEL_SHA256="0" * 64, **own)
    assert failed.wait_exit() == 3
    assert list(scratch.glob("kiln-metrics-*")) == []
