"""Store a version and read it back (verified): S3 store on SeaweedFS vs local store.

    python bench/bench_store.py                  # an iris-sized model and a 10 MB one, 5 rounds
    python bench/bench_store.py --rounds 9

Starts its own SeaweedFS (kiln/infra/team/seaweedfs.py: loopback, own ports and state folder) and
stops it at the end. Each round stores a new model (a new version), reads it back through
`get` (every file checked against its sha256), lists the versions and records a deployment.
Figures are medians in seconds, and S3 / local as a ratio from the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kiln.infra.team.seaweedfs import start_seaweedfs, stop_seaweedfs
from kiln.store.artifact_store import ArtifactStore

LABELS = {0: "setosa", 1: "versicolor", 2: "virginica"}
SIZES = {"iris model (~1 KB)": 1_200, "10 MB model": 10_000_000}
STEPS = ("store", "read back", "list", "record deployment")


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def one_round(store: ArtifactStore, size: int) -> dict[str, float]:
    model = os.urandom(size)
    version = ""

    def put() -> None:
        nonlocal version
        version = store.put(model, LABELS, {"metrics": {"accuracy": 1.0}})

    times = {"store": timed(put)}
    times["read back"] = timed(lambda: store.get(version))
    times["list"] = timed(store.list_versions)
    times["record deployment"] = timed(lambda: store.record_deployment("bench", version, "img"))
    return times


def measure(store: ArtifactStore, size: int, rounds: int) -> dict[str, float]:
    one_round(store, size)  # warm-up: connections, imports
    results = [one_round(store, size) for _ in range(rounds)]
    return {step: statistics.median(r[step] for r in results) for step in STEPS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kiln-bench-store-") as tmp:
        state = Path(tmp) / "seaweedfs"
        server = start_seaweedfs(state)
        os.environ.update(server.env())
        try:
            for label, size in SIZES.items():
                local = measure(ArtifactStore(Path(tmp) / f"local-{size}"), size, args.rounds)
                s3_url = f"{server.url}/bench-{uuid.uuid4().hex[:8]}"
                s3 = measure(ArtifactStore(s3_url), size, args.rounds)
                print(f"\n{label}, median of {args.rounds} (seconds)")
                print(f"  {'step':<20}{'local':>10}{'S3':>10}{'S3/local':>10}")
                for step in STEPS:
                    ratio = s3[step] / local[step] if local[step] else float("inf")
                    print(f"  {step:<20}{local[step]:>10.4f}{s3[step]:>10.4f}{ratio:>10.1f}")
                total_local = local["store"] + local["read back"]
                total_s3 = s3["store"] + s3["read back"]
                print(
                    f"  store + read back: local {total_local:.3f} s, S3 {total_s3:.3f} s "
                    f"({total_s3 / total_local:.1f}x)"
                )
        finally:
            stop_seaweedfs(state)


if __name__ == "__main__":
    main()
