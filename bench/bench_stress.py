"""Stress kiln's server with hostile clients on 127.0.0.1 and print what stayed available.

    python bench/bench_stress.py [--workers 2] [--idle 1000] [--probes 300] [--hold 12]
                                 [--compare DIR]

Starts the real server (`python -m serving`: gunicorn, kiln's worker) and, one attack at
a time, holds it under:
- idle: IDLE connections opened and left silent;
- slowloris: 200 connections sending their request head one byte per second;
- slow bodies: 200 requests whose body stops short of its Content-Length;
- huge headers: 8 connections each streaming a 64 MiB header value (a new one as soon
  as the server cuts one off);
- flood: 5,000 connections opened as fast as possible and held (more than the workers'
  MAX_CONNECTIONS together when WORKERS is 2).
During each, a probe thread sends GET /health and POST /predict, each on a new
connection, and records latency and failures; the table shows /health p50/p99, the
share of normal requests answered, and how the attack fared (connections the server
dropped, bytes sent before it was cut off). Each attack lasts ``--hold`` seconds (12 by
default: longer than HEADER_TIMEOUT, so slow connections are seen dropped), probes that
take over 5 s count as failures and no attack's probing lasts over 60 s: a run takes
about 1.5 minutes and stays on loopback. ``--compare DIR`` runs the same attacks against the server
of another checkout (e.g. ``git worktree add DIR <commit>``) afterwards.

Without --model-dir it trains the tests' small iris model (needs the dev extra).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
ROW = b'{"data": [[5.1, 3.5, 1.4, 0.2]]}'
HEALTH = b"GET /health HTTP/1.1\r\nHost: kiln\r\nConnection: close\r\n\r\n"
PREDICT = (
    b"POST /predict HTTP/1.1\r\nHost: kiln\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(ROW), ROW)
)
PROBE_TIMEOUT = 5.0  # seconds: a probe that takes longer counts as a failure


# -- the server -------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen
    port: int


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(repo: Path, model_dir: Path, workers: int, log: Path) -> Server:
    port = _free_port()
    env = dict(os.environ, LOG_LEVEL="error", PYTHONPATH=str(repo))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    argv = [sys.executable, "-m", "serving", "--model-dir", str(model_dir)]
    argv += ["--port", str(port), "--workers", str(workers)]
    with log.open("w") as out:
        process = subprocess.Popen(argv, cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}: see {log}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                return Server(process, port)
        time.sleep(0.1)
    process.kill()
    raise SystemExit("server not ready in 120 s")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


# -- probes: normal clients ------------------------------------------------------------------


def ask(port: int, request: bytes) -> tuple[float, int | None]:
    """One request on a new connection: (seconds, status or None on failure)."""
    started = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT) as sock:
            sock.sendall(request)
            raw = b""
            while chunk := sock.recv(65536):
                raw += chunk
    except OSError:
        return time.perf_counter() - started, None
    status = int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else None
    return time.perf_counter() - started, status


@dataclass
class Probes:
    health_ms: list[float] = field(default_factory=list)
    health_ok: int = 0
    predict_ok: int = 0
    sent: int = 0

    def row(self) -> str:
        lat = sorted(self.health_ms)
        p50 = statistics.median(lat) if lat else float("nan")
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
        return (
            f"{p50:>7.2f} {p99:>7.2f} {self.health_ok:>5}/{self.sent:<5} "
            f"{self.predict_ok:>5}/{self.sent:<5}"
        )


def run_probes(port: int, count: int, hold: float = 0.0, limit: float = 60.0) -> Probes:
    """``count`` probe pairs, spread over at least ``hold`` seconds, at most ``limit``."""
    probes = Probes()
    started = time.monotonic()
    pause = max(0.005, hold / count)
    while probes.sent < count and time.monotonic() - started < limit:
        seconds, status = ask(port, HEALTH)
        probes.sent += 1
        if status == 200:
            probes.health_ok += 1
            probes.health_ms.append(seconds * 1000)
        if ask(port, PREDICT)[1] == 200:
            probes.predict_ok += 1
        time.sleep(pause)
    return probes


# -- attacks -----------------------------------------------------------------------------------


@dataclass
class Attack:
    """An attack's connections and what became of them."""

    opened: int = 0
    dropped: int = 0  # connections the server closed while the attack ran
    bytes_taken: int = 0
    watchers: list[asyncio.Future] = field(default_factory=list)


async def _watch_close(reader: asyncio.StreamReader, attack: Attack, stop: asyncio.Event) -> None:
    with contextlib.suppress(OSError):
        while await reader.read(65536):
            pass
    if not stop.is_set():
        attack.dropped += 1


async def _open_many(port: int, n: int, attack: Attack, stop) -> list[asyncio.StreamWriter]:
    async def one() -> asyncio.StreamWriter | None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return None
        attack.opened += 1
        attack.watchers.append(asyncio.ensure_future(_watch_close(reader, attack, stop)))
        return writer

    opened = []
    for start in range(0, n, 250):  # in batches, so the listen backlog is not the test
        batch = await asyncio.gather(*(one() for _ in range(min(250, n - start))))
        opened += [writer for writer in batch if writer is not None]
    return opened


async def _close_all(writers: list[asyncio.StreamWriter], attack: Attack) -> None:
    for writer in writers:
        writer.close()
    await asyncio.gather(*attack.watchers, return_exceptions=True)


async def idle(port: int, n: int, attack: Attack, stop: asyncio.Event) -> None:
    writers = await _open_many(port, n, attack, stop)
    await stop.wait()
    await _close_all(writers, attack)


async def _trickle(writer: asyncio.StreamWriter, head: bytes, unit: bytes, stop, attack) -> None:
    with contextlib.suppress(OSError):
        writer.write(head)
        while not stop.is_set() and not writer.is_closing():
            writer.write(unit)
            await writer.drain()
            attack.bytes_taken += len(unit)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    writer.close()


async def slowloris(port: int, n: int, attack: Attack, stop: asyncio.Event) -> None:
    writers = await _open_many(port, n, attack, stop)
    head = b"GET /health HTTP/1.1\r\nX-Slow: "
    await asyncio.gather(*(_trickle(w, head, b"a", stop, attack) for w in writers))
    await _close_all(writers, attack)


async def slow_bodies(port: int, n: int, attack: Attack, stop: asyncio.Event) -> None:
    writers = await _open_many(port, n, attack, stop)
    for writer in writers:
        writer.write(b"POST /predict HTTP/1.1\r\nContent-Length: 100000\r\n\r\n{")
    await stop.wait()
    await _close_all(writers, attack)


def _huge_header(port: int, attack: Attack, lock: threading.Lock, stop: threading.Event) -> None:
    """Stream a 64 MiB header value; when the server cuts the connection, start again."""
    chunk = b"a" * 65536
    while not stop.is_set():
        sent = 0
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT) as sock:
                sock.sendall(b"GET /health HTTP/1.1\r\nX-Huge: ")
                while sent < 64 * 1024 * 1024 and not stop.is_set():
                    sock.sendall(chunk)
                    sent += len(chunk)
        except OSError:
            with lock:
                attack.dropped += 1
        with lock:
            attack.opened += 1
            attack.bytes_taken += sent


async def huge_headers(port: int, n: int, attack: Attack, stop: asyncio.Event) -> None:
    lock, halt = threading.Lock(), threading.Event()
    threads = [
        threading.Thread(target=_huge_header, args=(port, attack, lock, halt)) for _ in range(n)
    ]
    for thread in threads:
        thread.start()
    await stop.wait()
    halt.set()
    for thread in threads:
        await asyncio.to_thread(thread.join)


async def flood(port: int, n: int, attack: Attack, stop: asyncio.Event) -> None:
    await idle(port, n, attack, stop)


ATTACKS: dict[str, tuple[Callable[..., Awaitable[None]], str]] = {
    "idle": (idle, "idle"),
    "slowloris": (slowloris, "200"),
    "slow bodies": (slow_bodies, "200"),
    "huge headers": (huge_headers, "8"),
    "flood": (flood, "5000"),
}


async def under_attack(port: int, name: str, count: int, args: argparse.Namespace):
    attack_fn, size = ATTACKS[name]
    n = args.idle if size == "idle" else int(size)
    attack, stop = Attack(), asyncio.Event()
    task = asyncio.ensure_future(attack_fn(port, n, attack, stop))
    await asyncio.sleep(1.0)  # let the attack take hold
    probes = await asyncio.to_thread(run_probes, port, count, args.hold)
    stop.set()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 30)
    return n, attack, probes


async def run_all(port: int, args: argparse.Namespace) -> list[str]:
    lines = []
    baseline = await asyncio.to_thread(run_probes, port, args.probes)
    lines.append(f"{'none':<13} {'':>6} {baseline.row()}   -")
    for name in ATTACKS:
        n, attack, probes = await under_attack(port, name, args.probes, args)
        fate = f"{attack.opened} opened, {attack.dropped} dropped by the server"
        if name == "slowloris":
            fate += f", {attack.bytes_taken:,} bytes sent"
        if name == "huge headers":
            fate += f", {attack.bytes_taken / attack.opened / 1024:,.0f} KiB sent per connection"
        lines.append(f"{name:<13} {n:>6} {probes.row()}   {fate}")
        await asyncio.sleep(1.0)
    return lines


def raise_file_limit() -> None:
    """The attacks hold thousands of sockets: lift this process's soft limit to the hard."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def report(title: str, lines: list[str]) -> None:
    print(f"\n{title}")
    header = f"{'attack':<13} {'conns':>6} {'p50 ms':>7} {'p99 ms':>7} {'/health ok':>11} "
    header += f"{'/predict ok':>11}   attack connections"
    print(header)
    print("-" * len(header))
    for line in lines:
        print(line)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--idle", type=int, default=1000, help="idle connections held")
    parser.add_argument("--probes", type=int, default=300, help="probe pairs per attack")
    parser.add_argument(
        "--hold", type=float, default=12.0, help="seconds each attack lasts (at least)"
    )
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--compare", type=Path, default=None, help="another checkout's server")
    args = parser.parse_args(argv)
    raise_file_limit()
    targets = {"kiln (this checkout)": REPO}
    if args.compare is not None:
        targets[f"kiln ({args.compare})"] = args.compare.resolve()
    with tempfile.TemporaryDirectory(prefix="kiln-stress-") as tmp_name:
        tmp = Path(tmp_name)
        model_dir = args.model_dir or prepare_model_dir(tmp)
        for title, repo in targets.items():
            server = start_server(repo, model_dir, args.workers, tmp / "server.log")
            try:
                lines = asyncio.run(run_all(server.port, args))
            finally:
                stop_server(server)
            report(
                f"{title}: {args.workers} worker(s), {args.probes} probes of GET /health and "
                "POST /predict per attack, each on a new connection",
                lines,
            )


def prepare_model_dir(tmp: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests" / "serving"))
    from model_dirs import write_model_dir

    return write_model_dir(tmp / "model")


if __name__ == "__main__":
    main()
