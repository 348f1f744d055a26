"""Scale-out figures for the team setup: runs spread over two workers, and a resume on
another worker with the cached results on S3.

    scripts/infra.sh up && eval "$(scripts/infra.sh env)"
    python bench/bench_team.py                        # 4 runs on synthetic:20000x20
    python bench/bench_team.py --runs 4 --data synthetic:40000x20

It starts a team setup of its own (`kiln up --team`'s parts on free ports, in a temporary
state dir), deploys kiln-pipeline/retrain and measures, in one run:

1. N pipeline runs one after another, then N at once through the two workers (each takes
   one run at a time); wall-time ratio at once / one after another. Each run has a seed
   of its own, so every one trains.
2. A run that fails at build-image on worker A (its registry address is a closed port),
   A stopped, the run retried on worker B (through the API, as the UI's Retry does): the
   retried attempt's wall time (retry to Completed) as a share of a full run (the mean of
   step 1's), and where that time went, from the API's own timestamps.

Everything it started is stopped at the end, and its containers removed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from prefect.states import Scheduled  # noqa: E402

from kiln import wiring  # noqa: E402
from kiln.config.settings import get_settings  # noqa: E402
from kiln.infra.team.config import TeamConfig  # noqa: E402
from kiln.infra.team.up import team_down, team_up, worker_environment  # noqa: E402
from kiln.infra.team.workers import Worker, start_worker, stop_worker  # noqa: E402
from kiln.rollout.local import LocalTarget  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Bench:
    def __init__(self, api: str, data: str) -> None:
        from prefect.client.orchestration import SyncPrefectClient

        self.client = SyncPrefectClient(api)
        self.data = data
        self.deployment = None

    def start(self, seed: int):
        if self.deployment is None:
            self.deployment = self.client.read_deployment_by_name("kiln-pipeline/retrain")
        # force: every run ships, whatever the champion gate thinks of its score
        parameters = {"training": {"data": self.data, "seed": seed}, "force": True}
        return self.client.create_flow_run_from_deployment(
            self.deployment.id, parameters=parameters
        ).id

    def wait(self, run_id, after_final: bool = False, timeout: float = 1800) -> str:
        deadline = time.monotonic() + timeout
        seen_other = not after_final
        while time.monotonic() < deadline:
            state = self.client.read_flow_run(run_id).state
            if state is not None:
                if state.type.value not in FINAL:
                    seen_other = True
                elif seen_other:
                    return state.name
            time.sleep(0.5)
        raise SystemExit(f"flow run {run_id} did not finish within {timeout} s")

    def timed(self, seeds: list[int]) -> tuple[float, list[str]]:
        began = time.perf_counter()
        runs = [self.start(seed) for seed in seeds]
        states = [self.wait(run) for run in runs]
        return time.perf_counter() - began, states


def resume_breakdown(client, run_id, since: float) -> list[tuple[str, float]]:
    """Where the retried attempt spent its time, from the API's own timestamps: the run's
    states (retry, worker pick-up, flow engine running, completed), its task runs, and the
    time between them (the engine's own work: result records, state changes)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    states = sorted(
        (s for s in client.read_flow_run_states(run_id) if s.timestamp.timestamp() >= since),
        key=lambda s: s.timestamp,
    )
    tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    # A Cached task never runs: its span is from its creation to its final state.
    spans = []
    for task in tasks:
        start = (task.start_time or task.created).timestamp()
        end = (task.end_time or task.state.timestamp).timestamp()
        if start >= since:
            spans.append((start, end, task.name.rsplit("-", 1)[0], task.state_name))
    marks: list[tuple[str, float]] = [("retry requested", since)]
    for state in states:
        marks.append((f"state {state.name}", state.timestamp.timestamp()))
    rows = []
    for (_, start), (name, end) in zip(marks, marks[1:], strict=False):
        rows.append((f"until {name}", end - start))
    running = [t for name, t in marks if name == "state Running"]
    cursor = running[-1] if running else since
    between = 0.0
    for start, end, name, state in sorted(spans):
        gap = max(0.0, start - cursor)
        between += gap
        rows.append((f"  (before {name})", gap))
        rows.append((f"  task {name} ({state})", end - start))
        cursor = max(cursor, end)
    if len(marks) > 1:
        tail = max(0.0, marks[-1][1] - cursor)
        between += tail
        rows.append(("  (after the last task)", tail))
    rows.append(("  between tasks, in all", between))
    return rows


def attempt_logs(client, run_id, since: float) -> list[str]:
    """The retried attempt's log lines, each at its offset from the retry."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    lines = []
    for log in sorted(logs, key=lambda log: log.timestamp):
        offset = log.timestamp.timestamp() - since
        if offset >= 0:
            lines.append(f"  {offset:7.2f}  {log.name:<28} {log.message.splitlines()[0][:90]}")
    return lines


def import_seconds(env: dict[str, str]) -> tuple[float, float]:
    """A fresh process importing Prefect's flow engine, then the flow's module: what a flow
    run's process loads before it runs anything, measured at the bench's own load."""
    code = (
        "import time; t = time.perf_counter(); import prefect.engine; "
        "u = time.perf_counter(); import flows.pipeline; "
        "print(u - t, time.perf_counter() - u)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    engine, flow_module = (float(x) for x in done.stdout.split())
    return engine, flow_module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--data", default="synthetic:20000x20")
    parser.add_argument(
        "--skip-at-once",
        action="store_true",
        help="measure the resume only: no N-runs-at-once comparison (minutes of training "
        "saved on a large data set; the full run is still the mean of the N runs)",
    )
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="kiln-bench-team-"))
    root.chmod(0o755)  # the postgres user must reach its cluster folder
    config = TeamConfig(
        home=root / "team",
        prefect_port=free_port(),
        postgres_port=free_port(),
        s3_port=free_port(),
    )
    run_id = uuid.uuid4().hex[:8]
    local_port, local_name = free_port(), f"kiln-bench-team-{run_id}"
    extra_workers = [Worker(config.home, name, config.pool) for name in ("bench-a", "bench-b")]
    load_before = os.getloadavg()
    try:
        began = time.perf_counter()
        up = team_up(config, {}, REPO_ROOT)
        print(f"kiln up --team: {time.perf_counter() - began:.1f} s", file=sys.stderr)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(up.exports)
        env.update(
            {
                "PREFECT_HOME": str(root / "client-home"),
                "KILN_REPOSITORY": f"kiln-bench/{run_id}/team",
                "KILN_LOCAL_PORT": str(local_port),
                "KILN_LOCAL_NAME": local_name,
                "KILN_GATE_THRESHOLD": "0.5",
                "KILN_RETRIES": "1",
                "KILN_RETRY_DELAY": "0.1",
            }
        )
        os.environ.update({k: v for k, v in up.exports.items() if k.startswith("AWS_")})
        subprocess.run(
            [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "-n", "retrain"],
            cwd=REPO_ROOT,
            env=env,
            check=True,
            capture_output=True,
            timeout=900,
        )
        bench = Bench(up.exports["PREFECT_API_URL"], args.data)
        warm, states = bench.timed([1])  # serving base, imports, the first rollout
        print(f"warm-up run: {warm:.1f} s {states}", file=sys.stderr)

        seeds = list(range(101, 101 + args.runs))
        one_by_one = 0.0
        for seed in seeds:
            wall, states = bench.timed([seed])
            one_by_one += wall
            print(f"  seed {seed}: {wall:.1f} s {states}", file=sys.stderr)
        at_once = None
        if not args.skip_at_once:
            at_once, states = bench.timed([seed + 100 for seed in seeds])
            print(f"  {args.runs} at once: {at_once:.1f} s {states}", file=sys.stderr)
        full_run = one_by_one / args.runs

        for number in range(1, config.workers + 1):
            stop_worker(config.worker(number))
        worker_env = worker_environment(config, up.exports, {})
        worker_a, worker_b = extra_workers
        start_worker(
            worker_a, {**worker_env, "KILN_REGISTRY": f"127.0.0.1:{free_port()}"}, REPO_ROOT
        )
        failing = bench.start(301)
        failed_began = time.perf_counter()
        failed_state = bench.wait(failing)
        failed = time.perf_counter() - failed_began
        stop_worker(worker_a)
        start_worker(worker_b, worker_env, REPO_ROOT)
        resume_began, resume_wall = time.perf_counter(), time.time()
        # What the UI's Retry and `prefect flow-run retry` do, without the CLI's own start
        # (26 s of imports at load 17 in one run: not part of the resume).
        bench.client.set_flow_run_state(
            failing, Scheduled(message="retried by bench_team"), force=True
        )
        resumed_state = bench.wait(failing, after_final=True)
        resumed = time.perf_counter() - resume_began
        breakdown = resume_breakdown(bench.client, failing, resume_wall)
        logs = attempt_logs(bench.client, failing, resume_wall)
        engine_import, flow_import = import_seconds(env)

        print(f"\nteam setup, {args.data}, {args.runs} runs, 2 workers (one run at a time each)")
        loads = (
            "/".join(f"{x:.1f}" for x in load_before),
            "/".join(f"{x:.1f}" for x in os.getloadavg()),
        )
        print(f"load average (1/5/15 min): {loads[0]} at the start, {loads[1]} at the end")
        print("| measure | seconds |")
        print("| --- | ---: |")
        print(f"| {args.runs} runs one after another | {one_by_one:.1f} |")
        if at_once is not None:
            print(f"| {args.runs} runs at once, 2 workers | {at_once:.1f} |")
            ratio = at_once / one_by_one
            print(f"| ratio at once / one after another | {ratio:.2f} (goal <= 0.65) |")
        print(f"| full run (mean of the {args.runs}) | {full_run:.1f} |")
        print(f"| run failing at build on worker A | {failed:.1f} ({failed_state}) |")
        print(f"| retried on worker B | {resumed:.1f} ({resumed_state}) |")
        print(f"| resume as a share of a full run | {resumed / full_run:.0%} (goal <= 10%) |")
        print("\nthe retried attempt, from the API's timestamps (seconds):")
        for what, seconds in breakdown:
            print(f"  {what:<48} {seconds:7.2f}")
        print("\nthe retried attempt's log (seconds after the retry):")
        print("\n".join(logs))
        print(
            f"a fresh process importing prefect.engine: {engine_import:.2f} s, "
            f"then flows.pipeline: {flow_import:.2f} s"
        )
    finally:
        for worker in extra_workers:
            stop_worker(worker)
        team_down(config)
        LocalTarget(
            wiring.engine_client(get_settings()), port=local_port, name_prefix=local_name
        ).stop_all()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
