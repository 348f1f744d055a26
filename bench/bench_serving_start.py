"""How long a serving container takes from `start` to its first /ready 200, for two images
started alternately (so both see the same machine load), and the ratio of the medians.

    eval "$(scripts/infra.sh env)"; python bench/bench_serving_start.py BEFORE AFTER [--runs 5]

BEFORE and AFTER are image references the engine has (e.g. two `kiln run`s' images, one
built by an earlier checkout's serving code). Each start runs the way the local target
runs a candidate: one worker, read-only root, tmpfs /tmp, no capabilities, a published
127.0.0.1 port; /ready is asked every 20 ms.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kiln import wiring  # noqa: E402
from kiln.config.settings import get_settings  # noqa: E402
from kiln.rollout.local import free_port  # noqa: E402


def ready(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/ready")
        reply = connection.getresponse()
        reply.read()
        return reply.status == 200
    except OSError:
        return False
    finally:
        connection.close()


def cold_start(client, image: str, timeout: float = 300.0) -> float:
    port = free_port()
    container = client.containers.create(
        image=image,
        name=f"kiln-bench-start-{uuid.uuid4().hex[:8]}",
        environment={"WORKERS": "1"},
        ports={"8000/tcp": ("127.0.0.1", port)},
        read_only=True,
        tmpfs={"/tmp": "rw,size=16m"},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
    )
    try:
        started = time.perf_counter()
        container.start()
        while not ready(port):
            if time.perf_counter() - started > timeout:
                raise SystemExit(f"{image} was not ready after {timeout:g}s")
            time.sleep(0.02)
        return time.perf_counter() - started
    finally:
        container.remove(force=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="image reference")
    parser.add_argument("after", help="image reference")
    parser.add_argument("--runs", type=int, default=5, help="cold starts of each image")
    args = parser.parse_args()
    client = wiring.engine_client(get_settings())
    images = {"before": args.before, "after": args.after}
    seconds: dict[str, list[float]] = {label: [] for label in images}
    load_before = os.getloadavg()
    for _ in range(args.runs):
        for label, image in images.items():
            seconds[label].append(cold_start(client, image))
    load_after = os.getloadavg()
    print("serving container, start to the first /ready 200:")
    for label, runs in seconds.items():
        figures = ", ".join(f"{s:.2f}" for s in runs)
        print(f"  {label:6} median {statistics.median(runs):5.2f} s  ({figures})")
    ratio = statistics.median(seconds["after"]) / statistics.median(seconds["before"])
    print(f"  after / before: {ratio:.2f}x")
    print(f"  load average (1 min): {load_before[0]:.1f} before, {load_after[0]:.1f} after")


if __name__ == "__main__":
    main()
