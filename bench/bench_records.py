"""One-row records on a mixed model: kiln's server against a bare ASGI + ONNX Runtime app
fed the same tensors, with wrk on 127.0.0.1, in interleaved rounds.

    python bench/bench_records.py [--workers 1] [--duration 10] [--connections 16]
                                  [--rounds 3] [--rows 1]

The model is the tests' wine classifier (tests/serving/table_models.py: 13 numbers, a text
column and a boolean, one ONNX input per column, ColumnTransformer + LogisticRegression;
needs the dev extra). Both servers get the same body, ``{"instances": [record]}`` with the
record's keys in reverse feature order. kiln checks every value against the schema,
reorders by name and converts; the ceiling (``records_ceiling_app``) only does
``np.array([[value]])`` per column, runs the same ONNX Runtime session and writes the
probabilities: no checks at all, the least any server must do. The servers take turns
``--rounds`` times (kiln, ceiling, kiln, ceiling, ...) so a change in the machine's load
touches both alike; each round prints both figures and their ratio, then the best round of
each and the median of the per-round ratios. Figures from one run only compare with each
other: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from bench_serve import (  # noqa: E402  (bench/ is not a package)
    LUA,
    Load,
    Started,
    _free_port,
    _wait_ready,
    start_kiln,
    stop,
    workers_cpu_seconds,
)


def records_ceiling_app():
    """Factory for gunicorn: ``bench_records:records_ceiling_app()``; reads CEILING_MODEL
    and CEILING_COLUMNS (a JSON list of [column, ONNX input, dtype])."""
    import numpy as np
    import onnxruntime as ort
    import orjson

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(os.environ["CEILING_MODEL"], sess_options=options)
    columns = [
        (name, onnx_input, np.float32 if dtype == "float32" else object)
        for name, onnx_input, dtype in json.loads(os.environ["CEILING_COLUMNS"])
    ]
    headers = [(b"content-type", b"application/json")]
    outputs = ["probabilities"]

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        records = orjson.loads(body)["instances"]
        feeds = {
            onnx_input: np.array([[r[name]] for r in records], dtype=dtype)
            for name, onnx_input, dtype in columns
        }
        (probabilities,) = session.run(outputs, feeds)
        out = orjson.dumps({"prediction": probabilities}, option=orjson.OPT_SERIALIZE_NUMPY)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": out})

    return app


def start_ceiling(model_dir: Path, workers: int, log: Path, body: bytes) -> Started:
    schema = json.loads((model_dir / "metadata.json").read_text())["schema"]
    columns = [[f["name"], f["input"], f["dtype"]] for f in schema["features"]]
    port = _free_port()
    env = dict(
        os.environ,
        CEILING_MODEL=str(model_dir / "model.onnx"),
        CEILING_COLUMNS=json.dumps(columns),
    )
    argv = [sys.executable, "-m", "gunicorn", "-k", "uvicorn_worker.UvicornWorker"]
    argv += ["-w", str(workers), "-b", f"127.0.0.1:{port}", "--log-level", "warning"]
    argv += ["--pythonpath", str(BENCH), "bench_records:records_ceiling_app()"]
    started = time.monotonic()
    with log.open("w") as out:
        process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    headers = {"content-type": "application/json"}

    def probe() -> bool:
        return httpx.post(f"{url}/predict", content=body, headers=headers).status_code == 200

    return Started(process, url, _wait_ready(process, probe, started))


def run_wrk(server: Started, body: bytes, args: argparse.Namespace, tmp: Path, seconds: int):
    script = tmp / "records.lua"
    script.write_text(LUA.format(body=body.decode()))
    argv = ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{seconds}s"]
    argv += ["-s", str(script), f"{server.url}/predict"]
    before = workers_cpu_seconds(server.process.pid)
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    found = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)", out)
    if found is None:
        raise SystemExit(f"wrk printed no result:\n{out}")
    requests, micros, p50, p99, status, sock = (int(v) for v in found.groups())
    load = Load(requests, micros / 1e6, p50 / 1000, p99 / 1000, status, sock)
    load.cpu_seconds = workers_cpu_seconds(server.process.pid) - before
    return load


def request_body(rows: int) -> bytes:
    sys.path.insert(0, str(REPO / "tests" / "serving"))
    from table_models import json_row, wine_model

    table = wine_model()
    features = table.schema["features"]
    records: list[dict] = []
    for i in range(1, len(table.frame)):
        row = json_row(table.frame, i, features)
        if None in row:  # the ceiling cannot impute: complete rows only
            continue
        # Keys reversed: kiln must reorder by name.
        record = {f["name"]: v for f, v in zip(features, row, strict=True)}
        records.append(dict(reversed(list(record.items()))))
        if len(records) == rows:
            break
    return json.dumps({"instances": records}).encode()


def prepare_model_dir(tmp: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests" / "serving"))
    from table_models import wine_model, write_table_model_dir

    return write_table_model_dir(tmp / "wine", wine_model())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs per server, in turns")
    parser.add_argument("--rows", type=int, default=1, help="records per request")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")

    with tempfile.TemporaryDirectory(prefix="kiln-bench-records-") as tmp_name:
        tmp = Path(tmp_name)
        model_dir = prepare_model_dir(tmp)
        body = request_body(args.rows)
        servers: dict[str, Started] = {}
        try:
            servers["kiln"] = start_kiln(model_dir, args.workers, tmp / "kiln.log")
            servers["ceiling"] = start_ceiling(model_dir, args.workers, tmp / "ceil.log", body)
            kiln_answer = httpx.post(f"{servers['kiln'].url}/predict", content=body).json()
            bare_answer = httpx.post(f"{servers['ceiling'].url}/predict", content=body).json()
            if kiln_answer != bare_answer:
                raise SystemExit(f"the answers differ: {kiln_answer} vs {bare_answer}")
            for server in servers.values():
                run_wrk(server, body, args, tmp, 1)  # warm-up
            rounds: list[dict[str, Load]] = []
            for _ in range(args.rounds):
                rounds.append(
                    {
                        name: run_wrk(s, body, args, tmp, args.duration)
                        for name, s in servers.items()
                    }
                )
        finally:
            for server in servers.values():
                stop(server)
    report(rounds, args)


def report(rounds: list[dict[str, Load]], args: argparse.Namespace) -> None:
    print(
        f"\nPOST /predict, {args.rows} record(s) per request on the mixed wine model "
        f"(15 columns, one ONNX input each), {args.workers} worker(s), {args.connections} "
        f"connections, wrk -t{args.threads}, {args.duration} s per run, {args.rounds} rounds\n"
    )
    header = f"{'round':>5} {'kiln req/s':>10} {'ceiling req/s':>13} {'ratio':>6} "
    header += f"{'kiln p99 ms':>11} {'ceil p99 ms':>11} {'kiln cpu us':>11} {'ceil cpu us':>11}"
    print(header)
    print("-" * len(header))
    ratios = []
    cpu_ratios = []
    for i, result in enumerate(rounds, 1):
        kiln, ceiling = result["kiln"], result["ceiling"]
        ratio = kiln.rps / ceiling.rps
        ratios.append(ratio)
        cpu_ratios.append(ceiling.cpu_us_per_request / max(kiln.cpu_us_per_request, 1e-9))
        errors = kiln.non_2xx + kiln.socket_errors + ceiling.non_2xx + ceiling.socket_errors
        print(
            f"{i:>5} {kiln.rps:>10,.0f} {ceiling.rps:>13,.0f} {ratio:>6.2f} "
            f"{kiln.p99_ms:>11.2f} {ceiling.p99_ms:>11.2f} "
            f"{kiln.cpu_us_per_request:>11.1f} {ceiling.cpu_us_per_request:>11.1f}"
            + (f"  ({errors} errors)" if errors else "")
        )
    best_kiln = max(r["kiln"].rps for r in rounds)
    best_ceiling = max(r["ceiling"].rps for r in rounds)
    print(
        f"\nbest round: kiln {best_kiln:,.0f} req/s, ceiling {best_ceiling:,.0f} req/s, "
        f"ratio {best_kiln / best_ceiling:.2f}; median of the per-round ratios "
        f"{statistics.median(ratios):.2f}; by worker CPU per request (steadier on a busy "
        f"machine), ceiling/kiln median {statistics.median(cpu_ratios):.2f}"
    )


if __name__ == "__main__":
    main()
