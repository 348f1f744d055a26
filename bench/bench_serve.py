"""Benchmark kiln's server against a bare ASGI ceiling, with wrk on 127.0.0.1.

    python bench/bench_serve.py [--workers 1] [--duration 10] [--connections 16]
                                [--rounds 1] [--rows 1,100] [--before]
                                [--compare OTHER_CHECKOUT ...]

Starts (a) kiln's server (`python -m serving`: gunicorn, kiln's uvicorn worker, the
real app) and (b) a bare ASGI callable that reads the body, parses it with orjson, runs
the same ONNX Runtime session and writes JSON, served by gunicorn with uvicorn_worker's
stock worker class and the same worker count. Each gets wrk POSTing one row per request,
then 100 rows per request; with ``--rounds N`` the servers take turns N times and the
best round counts. Prints req/s, rows/s, p50/p99 latency, the kiln/ceiling ratio, the
workers' CPU time per request (the steadiest figure on a busy machine), RSS per worker
and the time from start to ready. Figures from one run only compare with each other: the
machine is shared. ``--compare DIR`` (repeatable) also runs kiln's server from another
checkout (``git worktree add DIR main``), in the same run, as a row named after DIR: a
before/after comparison of the server code. ``--before`` does that for the code just
before the bounded HTTP protocol (the parent of the commit that added
serving/protocol.py), from a temporary worktree. Every round is printed: req/s of each
server and its ratio to the ceiling in that same round.

Without --model-dir it trains the tests' small iris model (needs the dev extra).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
ROW = [5.1, 3.5, 1.4, 0.2]


# -- the ceiling: a bare ASGI app around the same ONNX Runtime session ------------------


def ceiling_app():
    """Factory for gunicorn: ``bench_serve:ceiling_app()``; reads CEILING_MODEL."""
    import numpy as np
    import onnxruntime as ort
    import orjson

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(os.environ["CEILING_MODEL"], sess_options=options)
    input_name = session.get_inputs()[0].name
    headers = [(b"content-type", b"application/json")]

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        rows = np.asarray(orjson.loads(body)["data"], dtype=np.float32)
        _, probabilities = session.run(None, {input_name: rows})
        out = orjson.dumps({"prediction": probabilities}, option=orjson.OPT_SERIALIZE_NUMPY)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": out})

    return app


# -- running servers and wrk ------------------------------------------------------------


@dataclass
class Started:
    process: subprocess.Popen
    url: str
    ready_seconds: float


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(process: subprocess.Popen, probe, started: float, timeout: float = 60) -> float:
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            if probe():
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    raise SystemExit("server not ready in time")


def start_kiln(model_dir: Path, workers: int, log: Path, repo: Path = REPO) -> Started:
    port = _free_port()
    env = dict(os.environ, LOG_LEVEL="warning", PYTHONPATH=str(repo))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    argv = [sys.executable, "-m", "serving", "--model-dir", str(model_dir)]
    argv += ["--port", str(port), "--workers", str(workers)]
    started = time.monotonic()
    with log.open("w") as out:
        process = subprocess.Popen(argv, cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    ready = _wait_ready(process, lambda: httpx.get(f"{url}/ready").status_code == 200, started)
    return Started(process, url, ready)


def start_ceiling(model_dir: Path, workers: int, log: Path) -> Started:
    port = _free_port()
    env = dict(os.environ, CEILING_MODEL=str(model_dir / "model.onnx"))
    argv = [sys.executable, "-m", "gunicorn", "-k", "uvicorn_worker.UvicornWorker"]
    argv += ["-w", str(workers), "-b", f"127.0.0.1:{port}", "--log-level", "warning"]
    argv += ["--pythonpath", str(Path(__file__).parent), "bench_serve:ceiling_app()"]
    started = time.monotonic()
    with log.open("w") as out:
        process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    body = {"data": [ROW]}
    ready = _wait_ready(
        process, lambda: httpx.post(f"{url}/predict", json=body).status_code == 200, started
    )
    return Started(process, url, ready)


def worker_rss_mib(master_pid: int) -> list[float]:
    """RSS of each child of the gunicorn master, in MiB."""
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    sizes = []
    for pid in children:
        status = Path(f"/proc/{pid}/status").read_text()
        kib = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))
        sizes.append(kib / 1024)
    return sizes


def stop(started: Started) -> None:
    started.process.send_signal(signal.SIGTERM)
    try:
        started.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        started.process.kill()
        started.process.wait()


LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[{body}]==]
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.status,
    e.connect + e.read + e.write + e.timeout))
end
"""


@dataclass
class Load:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    cpu_seconds: float = 0.0  # the server's workers' CPU time during the run

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_us_per_request(self) -> float:
        """Worker CPU per request: unlike req/s, barely moved by other load on the machine."""
        return self.cpu_seconds / max(1, self.requests) * 1e6


def workers_cpu_seconds(master_pid: int) -> float:
    """User + system CPU seconds of the gunicorn master's children (its workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def run_measured(server: Started, rows: int, args: argparse.Namespace, tmp: Path) -> Load:
    """One wrk run, with the CPU time the server's workers spent on it."""
    before = workers_cpu_seconds(server.process.pid)
    load = run_wrk(server.url, rows, args.duration, args.connections, args.threads, tmp)
    load.cpu_seconds = workers_cpu_seconds(server.process.pid) - before
    return load


def run_wrk(url: str, rows: int, seconds: int, connections: int, threads: int, tmp: Path) -> Load:
    import orjson

    script = tmp / f"post_{rows}.lua"
    script.write_text(LUA.format(body=orjson.dumps({"data": [ROW] * rows}).decode()))
    argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s"]
    argv += ["-s", str(script), f"{url}/predict"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    found = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)", out)
    if found is None:
        raise SystemExit(f"wrk printed no result:\n{out}")
    requests, micros, p50, p99, status, sock = (int(v) for v in found.groups())
    return Load(requests, micros / 1e6, p50 / 1000, p99 / 1000, status, sock)


# -- the benchmark ------------------------------------------------------------------------


def prepare_model_dir(tmp: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests" / "serving"))
    from model_dirs import write_model_dir

    return write_model_dir(tmp / "model")


def measure(starters: dict, model_dir: Path, args, tmp: Path) -> dict[str, dict]:
    """Start every server, then take turns: each wrk run goes to the servers in rotation,
    ``--rounds`` times, so a change in the machine's load touches them all alike. The
    best round per server counts; every round is kept (``rounds``) and printed."""
    started: dict[str, Started] = {}
    try:
        for name, start in starters.items():
            started[name] = start(model_dir, args.workers, tmp / f"{name}.log")
        results: dict[str, dict] = {
            name: {"ready_s": s.ready_seconds, "rounds": {}} for name, s in started.items()
        }
        for rows in args.rows:
            for server in started.values():
                run_wrk(server.url, rows, 1, args.connections, args.threads, tmp)  # warm-up
            names = list(started)
            for turn in range(args.rounds):
                # Each round starts with the next server: none is always first (or last).
                for name in names[turn % len(names) :] + names[: turn % len(names)]:
                    load = run_measured(started[name], rows, args, tmp)
                    results[name]["rounds"].setdefault(rows, []).append(load)
                    best = results[name].get(rows)
                    if best is None or load.rps > best.rps:
                        results[name][rows] = load
                print_round(results, rows, turn)
        for name, server in started.items():
            results[name]["rss"] = worker_rss_mib(server.process.pid)
    finally:
        for server in started.values():
            stop(server)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--rounds", type=int, default=1, help="wrk runs per server, taking turns")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument(
        "--compare",
        type=Path,
        action="append",
        default=[],
        help="another checkout's server, same run (repeatable)",
    )
    parser.add_argument(
        "--before", action="store_true", help="also the code before the bounded protocol"
    )
    parser.add_argument(
        "--rows", default="1,100", help="rows per request, comma-separated (default 1,100)"
    )
    args = parser.parse_args(argv)
    args.rows = [int(r) for r in args.rows.split(",")]
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")

    starters = {"kiln": start_kiln}
    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as tmp_name:
        tmp = Path(tmp_name)
        checkouts = [(path.resolve().name, path.resolve()) for path in args.compare]
        if args.before:
            checkouts.append(("before", before_protocol_checkout(tmp / "before")))
        for name, checkout in checkouts:
            starters[name] = _starter(checkout)
        starters["ceiling"] = start_ceiling
        model_dir = args.model_dir or prepare_model_dir(tmp)
        try:
            servers = measure(starters, model_dir, args, tmp)
        finally:
            if args.before:
                subprocess.run(
                    ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tmp / "before")],
                    check=False,
                    capture_output=True,
                )
    report(servers, args)


def _starter(checkout: Path):
    def start(model_dir: Path, workers: int, log: Path) -> Started:
        return start_kiln(model_dir, workers, log, repo=checkout)

    return start


def before_protocol_checkout(path: Path) -> Path:
    """A worktree at the parent of the commit that added serving/protocol.py."""
    git = ["git", "-C", str(REPO)]
    added = subprocess.run(
        [*git, "log", "--diff-filter=A", "--format=%H", "--", "serving/protocol.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not added:
        raise SystemExit("no commit adds serving/protocol.py in this checkout's history")
    subprocess.run(
        [*git, "worktree", "add", "--detach", str(path), f"{added[-1]}~1"],
        capture_output=True,
        check=True,
    )
    return path


def print_round(results: dict[str, dict], rows: int, turn: int) -> None:
    """One line per round: each server's req/s and its ratio to the ceiling's, same round."""
    ceiling = results["ceiling"]["rounds"][rows][turn].rps
    cells = []
    for name, result in results.items():
        rps = result["rounds"][rows][turn].rps
        ratio = "" if name == "ceiling" else f" ({rps / ceiling:.0%})"
        cells.append(f"{name} {rps:,.0f}{ratio}")
    print(f"round {turn + 1}, {rows} row(s)/req: " + ", ".join(cells), flush=True)


def report(servers: dict[str, dict], args: argparse.Namespace) -> None:
    ceiling = servers["ceiling"]
    print(
        f"\nPOST /predict, {args.workers} worker(s), {args.connections} connections, "
        f"wrk -t{args.threads}, {args.duration} s per run, best of {args.rounds}\n"
    )
    header = f"{'server':<8} {'rows/req':>8} {'req/s':>9} {'rows/s':>10} {'p50 ms':>7} "
    header += f"{'p99 ms':>7} {'errors':>6} {'vs ceiling':>10} {'cpu us/req':>10}"
    print(header)
    print("-" * len(header))
    for rows in args.rows:
        for name, result in servers.items():
            load: Load = result[rows]
            ratio = load.rps / ceiling[rows].rps
            errors = load.non_2xx + load.socket_errors
            print(
                f"{name:<8} {rows:>8} {load.rps:>9,.0f} {load.rps * rows:>10,.0f} "
                f"{load.p50_ms:>7.2f} {load.p99_ms:>7.2f} {errors:>6} {ratio:>9.0%} "
                f"{load.cpu_us_per_request:>10.1f}"
            )
    print()
    for rows in args.rows:
        for name, result in servers.items():
            if name == "ceiling":
                continue
            ratios = [
                load.rps / top.rps
                for load, top in zip(result["rounds"][rows], ceiling["rounds"][rows], strict=True)
            ]
            print(
                f"{name:<8} {rows:>3} row(s): vs ceiling per round "
                + " ".join(f"{r:.2f}" for r in ratios)
                + f"; median {statistics.median(ratios):.2f}"
            )
    print()
    for name, result in servers.items():
        rss = ", ".join(f"{mib:.0f}" for mib in result["rss"])
        print(f"{name:<8} start to ready {result['ready_s']:.2f} s; RSS per worker {rss} MiB")


if __name__ == "__main__":
    main()
