"""Benchmark: what a model-only change costs with each builder, in one run.

    python bench/bench_build.py          (after scripts/infra.sh up)

Rows: engine rebuild with a warm build cache; engine rebuild with no local cache (what a
fresh CI runner pays; the host wheel cache is kept); layer append with nothing local but
the registry. Then the image size against the base and the time of `podman stop`.
Every run uses fresh repositories (bench/<run>/...), so the registry holds no leftovers
that would flatter a builder.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from kiln import wiring  # noqa: E402
from kiln.config.settings import get_settings  # noqa: E402
from kiln.images.build import BuildOptions, BuildResult, build_image  # noqa: E402
from kiln.images.registry import Registry  # noqa: E402
from kiln.infra.engine import containers_env  # noqa: E402
from kiln.store.artifact_store import ArtifactStore  # noqa: E402


def make_version(store: ArtifactStore, c: float) -> str:
    """A stored iris model; each C gives different weights, so a model-only change."""
    from kiln.training.params import TrainParams
    from kiln.training.promotion import GatePolicy
    from kiln.training.sequence import run_training

    return run_training(store, TrainParams(C=c), GatePolicy(threshold=0)).version


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args],
        capture_output=True,
        text=True,
        check=check,
        env=containers_env(get_settings().state_dir),
    )


def image_size(ref: str) -> int:
    out = podman("image", "inspect", ref, "--format", "{{.Size}}").stdout.strip()
    return int(out)


def time_stop(image: str, port: int) -> float:
    name = f"kiln-bench-{uuid.uuid4().hex[:8]}"
    podman("run", "-d", "--name", name, "-e", "WORKERS=1", "-p", f"127.0.0.1:{port}:8000", image)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/metadata", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        started = time.perf_counter()
        podman("stop", name)
        return time.perf_counter() - started
    finally:
        podman("rm", "-f", name, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", default=os.environ.get("KILN_REGISTRY", "127.0.0.1:5000"))
    parser.add_argument("--port", type=int, default=19990, help="127.0.0.1 port for stop timing")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    run = uuid.uuid4().hex[:8]
    base_image = "python:3.11-slim"
    opts = dict(
        registry=args.registry,
        base_repository=f"bench/{run}/base",
        base_image=base_image,
    )
    settings = get_settings().with_overrides(engine_timeout=600)
    engine = wiring.engine_client(settings)
    rows: list[tuple[str, BuildResult]] = []
    with tempfile.TemporaryDirectory() as tmp, Registry(args.registry) as registry:
        store = ArtifactStore(Path(tmp) / "store")
        v0, v1, v2, v3 = (make_version(store, c) for c in (1.0, 0.5, 2.0, 4.0))

        def build(version: str, **kw) -> BuildResult:
            options = BuildOptions(**{**opts, **kw})
            return build_image(
                store,
                version,
                registry,
                options,
                engine=lambda: engine,
                cache_dir=settings.wheel_cache_dir,
            )

        # Prime: the first engine build publishes the serving base and warms the cache.
        build(v0, builder="engine", repository=f"bench/{run}/engine")
        rows.append(
            ("engine, warm cache", build(v1, builder="engine", repository=f"bench/{run}/engine"))
        )
        rows.append(
            (
                "engine, no local cache",
                build(v2, builder="engine", no_cache=True, repository=f"bench/{run}/engine"),
            )
        )
        rows.append(
            (
                "layer append (registry only)",
                build(v3, builder="layer", repository=f"bench/{run}/layer"),
            )
        )
        model_bytes = len(store.get(v3).model_bytes)

        warm = rows[0][1]
        layer = rows[2][1]
        engine_image = warm.tag
        size = image_size(engine_image)
        base_size = image_size(f"docker.io/library/{base_image}")
        stop_seconds = time_stop(layer.image, args.port)

    print(
        f"model-only change, one run ({time.strftime('%Y-%m-%d')}, model.onnx "
        f"{model_bytes:,} bytes)\n"
    )
    print(f"| {'builder':<30} | {'seconds':>8} | {'bytes pushed':>14} |")
    print(f"| {'-' * 30} | {'-' * 8}: | {'-' * 14}: |")
    for name, result in rows:
        print(f"| {name:<30} | {result.seconds:>8.3f} | {result.bytes_pushed:>14,} |")
    print()
    print(
        f"layer vs warm engine: {warm.seconds / layer.seconds:.0f}x faster, "
        f"{layer.bytes_pushed:,} bytes pushed (model + {layer.bytes_pushed - model_bytes:,})"
    )
    print(
        f"image {size / 1e6:.0f} MB, base {base_size / 1e6:.0f} MB, "
        f"{(size - base_size) / 1e6:.0f} MB above the base"
    )
    print(f"podman stop: {stop_seconds:.2f} s")
    if args.json:
        print(
            json.dumps(
                {
                    "rows": {
                        name: {"seconds": r.seconds, "bytes_pushed": r.bytes_pushed}
                        for name, r in rows
                    },
                    "image_bytes": size,
                    "base_bytes": base_size,
                    "stop_seconds": stop_seconds,
                }
            )
        )


if __name__ == "__main__":
    main()
