"""The real server: `python -m serving` (gunicorn + uvicorn workers) over HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from model_dirs import write_model_dir
from servers import REPO, WAIT


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
    assert re.search(r'kiln_rows_predicted_total\{model="model",route="/predict"\} 60\.0', text)
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


def test_a_master_removes_the_temp_folders_of_a_killed_one_and_no_live_ones(
    server_factory, model_dir, tmp_path
):
    """Metrics, boot marks and `kiln serve`'s model copy of a master killed with SIGKILL
    (it could not clean up) go when the next server starts; a running master's stay."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that runs no more
    prefixes = ("kiln-metrics-", "kiln-boots-", "kiln-serve-")
    dead = [scratch / f"{prefix}{gone.pid}-x1" for prefix in prefixes]
    live = [scratch / f"{prefix}{os.getpid()}-x2" for prefix in prefixes]
    for folder in dead + live:
        folder.mkdir()
        (folder / "file").write_text("left over")
    server = server_factory(model_dir, TMPDIR=str(scratch), PROMETHEUS_MULTIPROC_DIR="")
    server.wait_ready()
    assert [folder.exists() for folder in dead] == [False] * 3, server.lines
    assert [folder.exists() for folder in live] == [True] * 3
    assert server.stop() == 0


def _children(server) -> list[str]:
    pid = server.process.pid
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


def _replaced(server, gone: str) -> list[str]:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        children = _children(server)
        if gone not in children and len(children) == 2:
            return children
        time.sleep(0.1)
    raise AssertionError("the killed worker was not replaced:\n" + "\n".join(server.lines))


def test_a_restarted_worker_serves_the_verified_model_whatever_the_files_became(
    server_factory, tmp_path
):
    """The master keeps the bytes it verified: a worker started later serves those."""
    directory = write_model_dir(tmp_path / "model")
    server = server_factory(directory, workers=2)
    url = server.wait_ready()
    sha = httpx.get(f"{url}/metadata").json()["sha256"]
    (directory / "model.onnx").write_bytes(b"not a model any more")
    (directory / "labels.json").unlink()
    victim = _children(server)[0]
    os.kill(int(victim), signal.SIGKILL)
    _replaced(server, victim)
    deadline = time.monotonic() + WAIT
    answers = []
    while len(answers) < 20 and time.monotonic() < deadline:  # new connections: both workers
        response = httpx.get(f"{url}/metadata", timeout=WAIT)
        if response.status_code == 200:
            answers.append(response.json()["sha256"])
    assert answers == [sha] * 20
    assert server.process.poll() is None
    assert not any("model not loaded" in line for line in server.lines), server.lines


def test_a_worker_that_cannot_load_never_takes_healthy_ones_down(server_factory, model_dir):
    tests_dir = str(Path(__file__).parent)
    server = server_factory(
        model_dir,
        workers=2,
        PYTHONPATH=f"{REPO}:{tests_dir}",
        GUNICORN_CMD_ARGS="--worker-class faulty_worker.FaultyWorker",
        MAX_FAILED_BOOTS="2",
    )
    url = server.wait_ready()
    victim = _children(server)[0]
    os.kill(int(victim), signal.SIGKILL)
    deadline = time.monotonic() + WAIT
    # more failed boots than MAX_FAILED_BOOTS: the healthy worker keeps the server up
    while sum("exited with code 5" in line for line in server.lines) < 3:
        assert time.monotonic() < deadline, "\n".join(server.lines)
        time.sleep(0.1)
    for _ in range(20):  # the healthy worker answers everything meanwhile
        answer = httpx.post(f"{url}/predict/label", json={"data": [[5.1, 3.5, 1.4, 0.2]]})
        assert answer.json() == {"prediction": ["setosa"]}
    assert server.process.poll() is None
    assert any("MODEL_VERSION is not-the-version-on-disk" in line for line in server.lines)
    assert any("did not start" in line for line in server.lines)
    assert server.stop() == 0


def test_a_server_where_no_worker_can_start_gives_up_with_status_3(server_factory, model_dir):
    tests_dir = str(Path(__file__).parent)
    server = server_factory(
        model_dir,
        workers=2,
        PYTHONPATH=f"{REPO}:{tests_dir}",
        GUNICORN_CMD_ARGS="--worker-class faulty_worker.BrokenWorker",
        MAX_FAILED_BOOTS="3",
    )
    assert server.wait_exit() == 3
    output = "\n".join(server.lines)
    assert "no worker could start: 3 boots failed in a row and none serves" in output
    failed = sum("did not start" in line for line in server.lines)
    assert 3 <= failed <= 4, output  # the third failure stops it; the other may be booting
    assert "Traceback" not in output


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _wait_until_ready(server, port: int) -> None:
    deadline = time.monotonic() + WAIT
    while not _ready(port):
        assert server.process.poll() is None and time.monotonic() < deadline, server.lines
        time.sleep(0.1)


def _logged(server, requests: int) -> bool:
    """Whether `server` logs `requests` GET /metadata lines within a few seconds."""
    deadline = time.monotonic() + 10
    while sum("GET /metadata" in line for line in server.lines) < requests:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return sum("GET /metadata" in line for line in server.lines) == requests


def test_on_a_shared_port_the_older_server_takes_every_new_connection(server_factory, model_dir):
    """The local target's switch: a new version binds the stable port beside the old one
    (--reuse-port) and a check port of its own; until the old one stops, no client on the
    stable port reaches the new one."""
    port = _free_port()
    check = _free_port()
    shared = f"--reuse-port --bind 127.0.0.1:{port}"
    # (with --reuse-port each worker binds its own socket: gunicorn logs no address)
    old = server_factory(model_dir, GUNICORN_CMD_ARGS=shared, ACCESS_LOG="1")
    _wait_until_ready(old, port)
    new = server_factory(
        model_dir, GUNICORN_CMD_ARGS=f"{shared} --bind 127.0.0.1:{check}", ACCESS_LOG="1"
    )
    _wait_until_ready(new, check)

    for _ in range(20):
        assert httpx.get(f"http://127.0.0.1:{port}/metadata", timeout=5).status_code == 200
    # all 20 logged by the old one (its log lines arrive a little later)
    assert _logged(old, 20), (old.lines, new.lines)
    assert not any("GET /metadata" in line for line in new.lines)

    assert old.stop() == 0  # the old version goes: the new one takes the port's clients
    for _ in range(5):
        assert httpx.get(f"http://127.0.0.1:{port}/metadata", timeout=5).status_code == 200
    assert _logged(new, 5), new.lines


def test_a_server_stopping_on_a_shared_port_hands_its_clients_over(server_factory, model_dir):
    """The switch's last step, under load: the old server stops while clients keep opening
    connections to the stable port; it hands the port over before it closes, so none of
    them is reset (a connection queued on a closing socket would be)."""
    port = _free_port()
    shared = f"--reuse-port --bind 127.0.0.1:{port}"
    old = server_factory(model_dir, GUNICORN_CMD_ARGS=shared)
    _wait_until_ready(old, port)
    check = _free_port()
    new = server_factory(model_dir, GUNICORN_CMD_ARGS=f"{shared} --bind 127.0.0.1:{check}")
    _wait_until_ready(new, check)

    outcomes: list[object] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
                outcomes.append(answer.status_code)
            except httpx.HTTPError as err:
                outcomes.append(repr(err))

    def polled(count: int) -> None:  # by count, not time: a loaded machine polls slowly
        deadline = time.monotonic() + WAIT
        while len(outcomes) < count and time.monotonic() < deadline:
            time.sleep(0.01)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    polled(10)
    assert old.stop() == 0
    polled(len(outcomes) + 10)  # and the new server answers alone
    stop.set()
    poller.join()
    assert len(outcomes) >= 20 and set(outcomes) == {200}, outcomes


SERIES = (
    "kiln_requests_total",
    "kiln_request_duration_seconds_bucket",
    "kiln_request_duration_seconds_count",
    "kiln_request_duration_seconds_sum",
    "kiln_rows_predicted_total",
    "kiln_refused_total",
    "kiln_model_info",
)


def _scrape_until(url: str, pattern: str, at_least: float) -> tuple[str, float]:
    """Scrape /metrics until the sample ``pattern`` reaches ``at_least`` (each worker
    flushes every METRICS_FLUSH_SECONDS), or WAIT passes; the text and the value."""
    deadline = time.monotonic() + WAIT
    while True:
        text = httpx.get(f"{url}/metrics", timeout=WAIT).text
        found = re.search(pattern, text)
        value = float(found.group(1)) if found else 0.0
        if value >= at_least or time.monotonic() > deadline:
            return text, value
        time.sleep(0.1)


@pytest.mark.parametrize("metrics_dir", ["its own", "given", "its own, worker class importing it"])
def test_metrics_count_across_two_workers_as_kiln_serve_runs_them(
    server_factory, model_dir, tmp_path, metrics_dir
):
    """`kiln serve` and `python -m serving` give gunicorn no PROMETHEUS_MULTIPROC_DIR: the
    master makes one, after it has imported the worker class."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {"TMPDIR": str(scratch), "METRICS_FLUSH_SECONDS": "0.1", "MODEL_NAME": "wine"}
    if metrics_dir.startswith("its own"):
        env["PROMETHEUS_MULTIPROC_DIR"] = ""
    if metrics_dir.endswith("importing it"):
        env["PYTHONPATH"] = f"{REPO}:{Path(__file__).parent}"
        env["GUNICORN_CMD_ARGS"] = "--worker-class early_import_worker.EarlyImportWorker"
    server = server_factory(model_dir, workers=2, **env)
    url = server.wait_ready()
    for _ in range(30):  # a new connection each: both workers answer some
        answer = httpx.post(f"{url}/predict", json={"data": [[5.1, 3.5, 1.4, 0.2]] * 2})
        assert answer.status_code == 200
    with socket.create_connection(("127.0.0.1", server.port)) as sock:  # one refusal
        sock.sendall(b"GARBAGE\r\n\r\n")
        sock.recv(1024)
    pattern = r'kiln_requests_total\{[^}]*route="/predict",status="200"\} (\S+)'
    text, count = _scrape_until(url, pattern, 30)
    assert count == 30, text
    for series in SERIES:  # each one, every sample: labelled with the served name
        samples = re.findall(rf"^{series}\{{.*$", text, re.M)
        assert samples and all('model="wine"' in line for line in samples), (series, text)
    assert re.search(r'kiln_rows_predicted_total\{model="wine",route="/predict"\} 60\.0', text)
    assert re.search(
        r'kiln_request_duration_seconds_count\{model="wine",route="/predict"\} 30\.0', text
    )
    bad_request = r'kiln_refused_total\{model="wine",reason="bad_request"\} (\S+)'
    _, refused = _scrape_until(url, bad_request, 1)
    assert refused == 1
    files = list(Path(_metrics_dir(server, scratch, tmp_path)).glob("counter_*.db"))
    assert len({f.stem.split("_")[1] for f in files}) == 2  # each worker keeps its values there
    assert server.stop() == 0


def _metrics_dir(server, scratch: Path, tmp_path: Path) -> Path:
    made = list(scratch.glob("kiln-metrics-*"))
    return made[0] if made else tmp_path / "metrics"


def test_the_worker_class_import_leaves_prometheus_client_unloaded():
    """The master imports the config and the worker class before on_starting sets
    PROMETHEUS_MULTIPROC_DIR: neither may load prometheus_client."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["PYTHONPATH"] = str(REPO)
    code = (
        "import sys, serving.gunicorn_conf, serving.worker\n"
        "print('prometheus_client' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_temp_folders_of_a_killed_master_are_removed_at_the_next_start(
    server_factory, model_dir, tmp_path
):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    own = {"PROMETHEUS_MULTIPROC_DIR": "", "TMPDIR": str(scratch), "TIMEOUT": "1"}
    killed = server_factory(model_dir, **own)
    killed.wait_ready()
    left = _kiln_dirs(scratch)
    assert sorted(name.split("-")[1] for name in left) == ["boots", "metrics"], left
    killed.process.kill()  # SIGKILL: no on_exit, nothing removed
    killed.wait_exit()
    assert _kiln_dirs(scratch) == left
    alive = scratch / f"kiln-metrics-{os.getpid()}-live"  # a running master's: kept
    alive.mkdir()
    unrelated = scratch / "kiln-metrics-notapid"
    unrelated.mkdir()

    again = server_factory(model_dir, **own)
    again.wait_ready()
    now = _kiln_dirs(scratch)
    assert not now & left, now
    assert {alive.name, unrelated.name} <= now
    mine = str(again.process.pid)
    assert sorted(n.split("-")[1] for n in now if n.split("-")[2] == mine) == ["boots", "metrics"]
    assert any("left by a server that was killed" in line for line in again.lines)
    assert again.stop() == 0
    assert _kiln_dirs(scratch) == {alive.name, unrelated.name}


def _kiln_dirs(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("kiln-*")}
