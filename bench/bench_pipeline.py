"""The pipeline's wall time per step, and what resuming after a failed build saves.

    scripts/infra.sh up && eval "$(scripts/infra.sh env)"
    python bench/bench_pipeline.py                  # iris, then synthetic:60000x20
    python bench/bench_pipeline.py --rows 20000     # a smaller synthetic set

1. `kiln run` on iris with a warm serving base: wall time of each step.
2. On a synthetic set sized for about 30 s of training: a full run, then a run whose
   build fails (the registry address points at a closed port), then the same run again
   with the fault cleared. The resumed run finds training and export `Cached` in
   Prefect's result store and the model in the artifact store, so it should cost about
   the build, the rollout and a few seconds.

Each run uses its own store, repository and local port; containers are removed at the end.
Without PREFECT_API_URL, Prefect starts a temporary server for the benchmark.
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time
import uuid
from typing import Any

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")

from prefect.client.orchestration import get_client  # noqa: E402
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId  # noqa: E402

from flows.pipeline import pipeline_flow  # noqa: E402
from kiln import wiring  # noqa: E402
from kiln.config.settings import get_settings  # noqa: E402
from kiln.rollout.local import LocalTarget  # noqa: E402
from kiln.training.params import TrainParams  # noqa: E402

STEPS = (
    "load-data",
    "train",
    "quality-gate",
    "export-onnx",
    "store-model",
    "build-image",
    "roll-out",
    "retain",
)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def step_times(flow_run_id: Any) -> dict[str, tuple[float, str]]:
    """Step name -> (seconds, final state) of its last task run in the flow run."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    out: dict[str, tuple[float, str]] = {}
    for run in sorted(runs, key=lambda r: r.expected_start_time):
        step = run.name.rsplit("-", 1)[0]
        seconds = run.total_run_time.total_seconds() if run.total_run_time else 0.0
        out[step] = (seconds, run.state.name if run.state else "?")
    return out


def configure(**env: str) -> None:
    os.environ.update(env)
    get_settings.cache_clear()


def timed_run(data: str, seed: int) -> tuple[float, Any]:
    start = time.perf_counter()
    state = pipeline_flow(training=TrainParams(data=data, seed=seed), return_state=True)
    return time.perf_counter() - start, state


def print_steps(title: str, seconds: float, steps: dict[str, tuple[float, str]]) -> None:
    print(f"\n{title}: {seconds:.2f} s wall")
    for step in STEPS:
        if step in steps:
            took, state = steps[step]
            print(f"  {step:<14}{took:>8.3f} s  {state}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60000, help="synthetic rows")
    args = parser.parse_args()
    run = uuid.uuid4().hex[:6]
    registry = get_settings().registry
    engines = []
    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as root:
        for name, data in (("iris", "iris"), ("synthetic", f"synthetic:{args.rows}x20")):
            port = closed_port()
            local_name = f"kiln-bench-{run}-{name}"
            engines.append(
                LocalTarget(wiring.engine_client(get_settings()), port=port, name_prefix=local_name)
            )
            configure(
                KILN_STORE=f"{root}/{name}",
                KILN_REPOSITORY=f"kiln-bench/{run}/{name}",
                KILN_LOCAL_PORT=str(port),
                KILN_LOCAL_NAME=local_name,
                KILN_REGISTRY=registry,
                KILN_GATE_THRESHOLD="0.8",
                KILN_RETRIES="0",
            )
            seed = int(time.time()) % 100000  # new cache keys: nothing cached from earlier
            full_s, full = timed_run(data, seed)
            print_steps(f"{data}: full run", full_s, step_times(full.state_details.flow_run_id))
            if name == "iris":
                continue
            configure(KILN_REGISTRY=f"127.0.0.1:{closed_port()}")  # the fault
            failed_s, failed = timed_run(data, seed + 1)
            assert failed.is_failed(), "the injected build failure did not fail the run"
            print_steps(
                f"{data}: run with the registry down",
                failed_s,
                step_times(failed.state_details.flow_run_id),
            )
            configure(KILN_REGISTRY=registry)  # the fault cleared
            resumed_s, resumed = timed_run(data, seed + 1)
            steps = step_times(resumed.state_details.flow_run_id)
            print_steps(f"{data}: the same run again, resumed", resumed_s, steps)
            ship = steps["build-image"][0] + steps["roll-out"][0]
            print(
                f"\nresumed / full = {resumed_s / full_s:.2f}; resumed run minus build and "
                f"rollout = {resumed_s - ship:.2f} s (target: at most 5 s)"
            )
    for engine in engines:
        engine.stop_all()


if __name__ == "__main__":
    main()
