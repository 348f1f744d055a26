"""How long `kiln run` takes from iris to a live endpoint, with a Prefect server up and
without one (Prefect then starts a temporary server), in one run on this machine.

    eval "$(scripts/infra.sh env)"; python bench/bench_cli_run.py [--runs 3]

Each run trains a new version (a new seed), builds its image with the layer builder and
rolls it out to the local target, on this script's own store, repository, port and
container names. It starts its own Prefect server (own PREFECT_HOME and port) and stops it
at the end. Goal (issue 12): under 8 s with a server up.

With a server up, runs in their own process (`python -m kiln.cli.app run`) alternate with runs
handed to a warm runner (`python -m kiln.cli.launch run`, as the `kiln` command does once
`kiln up` has started one: kiln/cli/warm/), and the script prints the ratio of the medians;
then it times first deploys through the warm runner (its containers removed before each).
Each run also prints where its time went: `start` (from the command to
Prefect's "Beginning flow run": interpreter, imports, checks, creating the flow run),
each task (from the end of the one before to its own end, read from Prefect's log lines,
which `--debug` prints) and `finish` (the flow's end to the process's exit).

`--baseline DIR` also times the same runs from another checkout of kiln (a `git worktree`
of an earlier commit), alternated with this one's so both see the same machine load, and
prints the ratio of the medians. Each checkout gets its own store, repository, port and
container names; each round times a first deploy (nothing of that checkout serving: its
containers removed first) and then a redeploy (a new version replacing the running one).

`--compare-exit N` times N pairs of runs, alternating `kiln run` as installed (it ends
through kiln.cli.app.exit_now) with the same command ending through the interpreter's full
teardown (`main([...])`, as before that cut), and prints the ratio of the medians.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kiln.cli.warm import runner as warm  # noqa: E402
from kiln.config.settings import get_settings  # noqa: E402
from kiln.infra.prefect_server import start_prefect_server, stop_prefect_server  # noqa: E402
from kiln.wiring import engine_host  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Prefect's console lines: "HH:MM:SS.mmm | INFO    | Task run 'train-1a3' - Finished in ..."
PREFECT_LINE = re.compile(
    r"^(\d\d:\d\d:\d\d\.\d{3}) \| \w+ +\| (Flow|Task) run '([^']+)' - "
    r"(Beginning flow run|Finished in state)"
)


def phases(stderr: str, started: datetime.datetime, ended: datetime.datetime) -> list[tuple]:
    """(phase, seconds) from Prefect's timestamped lines; [] when they are not there."""
    marks: list[tuple[str, datetime.datetime]] = [("", started)]
    for line in stderr.splitlines():
        match = PREFECT_LINE.match(line)
        if not match:
            continue
        clock = datetime.datetime.strptime(match[1], "%H:%M:%S.%f").time()
        when = datetime.datetime.combine(started.date(), clock)
        if when < started - datetime.timedelta(hours=1):  # the run crossed midnight
            when += datetime.timedelta(days=1)
        if match[4] == "Beginning flow run":
            name = "start"
        elif match[2] == "Task":
            name = match[3].rsplit("-", 1)[0]
        else:
            name = "flow end"
        marks.append((name, when))
    if len(marks) < 3:
        return []
    marks.append(("finish", ended))
    return [
        (name, (when - before).total_seconds())
        for (_, before), (name, when) in zip(marks, marks[1:], strict=False)
    ]


# The same command line, ending through SystemExit and the interpreter's teardown.
TEARDOWN = [sys.executable, "-c", "import sys; from kiln.cli.app import main; main(sys.argv[1:])"]


# `kiln` as the console script runs it: handed to the warm runner when one answers.
LAUNCHER = [sys.executable, "-m", "kiln.cli.launch"]
IN_PROCESS = [sys.executable, "-m", "kiln.cli.app"]


def kiln_run(
    env: dict[str, str],
    seed: int,
    profile: list | None = None,
    teardown: bool = False,
    tree: Path = REPO,
    warm: bool = False,
) -> float:
    wall = datetime.datetime.now()
    started = time.perf_counter()
    debug = ["--debug"] if profile is not None else []
    kiln = TEARDOWN if teardown else LAUNCHER if warm else IN_PROCESS
    result = subprocess.run(
        [*kiln, *debug, "run", "--seed", str(seed)],
        env=env,
        cwd=tree,  # `python -m` imports kiln/ from here: the checkout being timed
        capture_output=True,
        text=True,
        timeout=900,
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"kiln run failed:\n{result.stdout}\n{result.stderr}")
    if profile is not None:
        ended = wall + datetime.timedelta(seconds=seconds)
        profile.append(phases(result.stderr, wall, ended))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per mode")
    parser.add_argument(
        "--prefect-port",
        type=int,
        help="use the Prefect server already answering on this port (with its PREFECT_HOME)",
    )
    parser.add_argument(
        "--skip-temporary", action="store_true", help="do not time runs on a temporary server"
    )
    parser.add_argument(
        "--compare-exit",
        type=int,
        default=0,
        metavar="N",
        help="also time N pairs: the quick exit against the interpreter's full teardown",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="also time this checkout of kiln (e.g. a git worktree of an earlier commit)",
    )
    args = parser.parse_args()
    if args.baseline is not None:
        compare_with_baseline(args)
        return

    work = Path(tempfile.mkdtemp(prefix="kiln-bench-cli-"))
    prefect_port = free_port()
    name = f"bench-cli-{os.getpid()}"
    base = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    base.update(
        PREFECT_HOME=os.environ.get("PREFECT_HOME", "")
        if args.prefect_port
        else str(work / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        KILN_STORE=str(work / "store"),
        KILN_REPOSITORY=f"bench-cli/iris-{os.getpid()}",
        KILN_LOCAL_PORT=str(free_port()),
        KILN_LOCAL_NAME=name,
        KILN_KEEP="50",
        KILN_GATE_TOLERANCE="1",  # every new version ships: each timed run is a rollout
        KILN_GATE_THRESHOLD="0.5",
        # the warm runner's socket lives in the state dir; the engine stays the one in use
        KILN_STATE_DIR=str(work / "state"),
        DOCKER_HOST=engine_host(get_settings()),
    )
    os.environ["PREFECT_HOME"] = base["PREFECT_HOME"]
    temporary: list[float] = []
    try:
        if args.prefect_port:
            prefect_port = args.prefect_port
        else:
            print(f"starting a Prefect server on 127.0.0.1:{prefect_port} ...", flush=True)
            start_prefect_server(work / "state", port=prefect_port, timeout=600)
        up = {**base, "KILN_PREFECT_PORT": str(prefect_port)}
        kiln_run(up, seed=1000)  # warm-up: the first build of this repository, caches
        profiles: list[list[tuple]] = []
        warm_profiles: list[list[tuple]] = []
        with_server, warmed = [], []
        print("starting a warm runner (as `kiln up` does) ...", flush=True)
        warm.start(work / "state")
        for i in range(args.runs):  # alternated: both see the same machine load
            with_server.append(kiln_run(up, seed=1001 + 2 * i, profile=profiles))
            warmed.append(kiln_run(up, 1002 + 2 * i, profile=warm_profiles, warm=True))
        warm_first = []
        for i in range(args.runs):  # nothing of this script's serving: a first deploy
            remove_containers(name)
            warm_first.append(kiln_run(up, 4001 + i, warm=True))
        warm.stop(work / "state")
        quick, teardown = [], []
        for i in range(args.compare_exit):  # alternated: both see the same machine load
            quick.append(kiln_run(up, seed=3001 + 2 * i))
            teardown.append(kiln_run(up, seed=3002 + 2 * i, teardown=True))
        stop_prefect_server(work / "state")
        down = {**base, "KILN_PREFECT_PORT": str(free_port())}  # nothing answers there
        if not args.skip_temporary:
            temporary = [kiln_run(down, seed=2001 + i) for i in range(args.runs)]
    finally:
        warm.stop(work / "state")
        stop_prefect_server(work / "state")
        remove_containers(name)
        shutil.rmtree(work, ignore_errors=True)

    def show(label: str, runs: list[float]) -> None:
        figures = ", ".join(f"{s:.1f}" for s in runs)
        print(f"{label:32} median {statistics.median(runs):6.1f} s  ({figures})")

    print("kiln run, iris to a live local endpoint (new version each run):")
    show("with a Prefect server up", with_server)
    for number, profile in enumerate(profiles, 1):
        steps = "  ".join(f"{name} {seconds:.1f}" for name, seconds in profile)
        print(f"  run {number} phases (s): {steps}")
    show("... and the warm runner", warmed)
    for number, profile in enumerate(warm_profiles, 1):
        steps = "  ".join(f"{name} {seconds:.1f}" for name, seconds in profile)
        print(f"  run {number} phases (s): {steps}")
    ratio = statistics.median(warmed) / statistics.median(with_server)
    print(f"warm runner / own process: {ratio:.2f}x")
    show("a first deploy, warm runner", warm_first)
    if quick:
        show("quick exit (exit_now)", quick)
        show("interpreter teardown", teardown)
        ratio = statistics.median(quick) / statistics.median(teardown)
        print(f"quick exit / teardown: {ratio:.2f}x")
    if temporary:
        show("temporary Prefect server", temporary)
        ratio = statistics.median(temporary) / statistics.median(with_server)
        print(f"temporary / with a server: {ratio:.2f}x")
    print("goal with a server: < 8 s")


def remove_containers(name: str) -> None:
    from kiln import wiring
    from kiln.config.settings import get_settings
    from kiln.rollout.local import LocalTarget

    LocalTarget(wiring.engine_client(get_settings()), name_prefix=name).stop_all()


def compare_with_baseline(args: argparse.Namespace) -> None:
    """First deploys and redeploys of this checkout and of `args.baseline`, alternated."""
    baseline = args.baseline.resolve()
    if not (baseline / "kiln" / "cli" / "app.py").is_file():
        raise SystemExit(f"--baseline {baseline}: not a kiln checkout (no kiln/cli/app.py)")
    work = Path(tempfile.mkdtemp(prefix="kiln-bench-cli-"))
    home = os.environ.get("PREFECT_HOME", "") if args.prefect_port else str(work / "prefect-home")
    os.environ["PREFECT_HOME"] = home
    common = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    # Every new version ships (neither gate holds one back): each timed run is a rollout.
    common.update(
        PREFECT_HOME=home,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        KILN_KEEP="50",
        KILN_GATE_TOLERANCE="1",
        KILN_GATE_THRESHOLD="0.5",
    )
    trees = {"this checkout": REPO, "baseline": baseline}
    envs, names = {}, {}
    for number, label in enumerate(trees):
        names[label] = f"bench-cli-{os.getpid()}-{number}"
        envs[label] = {
            **common,
            "KILN_STORE": str(work / f"store-{number}"),
            "KILN_REPOSITORY": f"bench-cli/iris-{os.getpid()}-{number}",
            "KILN_LOCAL_PORT": str(free_port()),
            "KILN_LOCAL_NAME": names[label],
        }
    first: dict[str, list[float]] = {label: [] for label in trees}
    again: dict[str, list[float]] = {label: [] for label in trees}
    profiles: dict[str, list[list[tuple]]] = {label: [] for label in trees}
    load_before = os.getloadavg()
    try:
        port = args.prefect_port or free_port()
        if not args.prefect_port:
            print(f"starting a Prefect server on 127.0.0.1:{port} ...", flush=True)
            start_prefect_server(work / "state", port=port, timeout=600)
        # Seeds new to this PREFECT_HOME and different between the checkouts: Prefect keeps
        # cached training results, which a later run would otherwise reuse.
        first_seed = int(time.time()) % 100_000 * 1000
        seeds = {label: first_seed + 100 * number for number, label in enumerate(trees)}
        for label, tree in trees.items():
            envs[label]["KILN_PREFECT_PORT"] = str(port)
            kiln_run(envs[label], seed=seeds[label], tree=tree)  # warm-up: base image, caches
        for i in range(args.runs):
            for label, tree in trees.items():  # alternated: both see the same load
                seed = seeds[label] + 1 + 2 * i
                remove_containers(names[label])
                first[label].append(kiln_run(envs[label], seed, profiles[label], tree=tree))
                again[label].append(kiln_run(envs[label], seed + 1, profiles[label], tree=tree))
    finally:
        stop_prefect_server(work / "state")
        for name in names.values():
            remove_containers(name)
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()

    def show(label: str, runs: list[float]) -> None:
        figures = ", ".join(f"{s:.1f}" for s in runs)
        print(f"  {label:30} median {statistics.median(runs):6.1f} s  ({figures})")

    print("kiln run, iris to a live local endpoint, with a Prefect server up (new version each):")
    print(f"  this checkout: {REPO}\n  baseline:      {baseline}")
    for kind, runs in (("first deploy", first), ("redeploy", again)):
        for label in trees:
            show(f"{kind}, {label}", runs[label])
        ratio = statistics.median(runs["this checkout"]) / statistics.median(runs["baseline"])
        print(f"  {kind}: this checkout / baseline = {ratio:.2f}x")
    for label in trees:
        print(f"  phases (s), {label}:")
        for number, profile in enumerate(profiles[label]):
            kind = "redeploy" if number % 2 else "first   "
            steps = "  ".join(f"{name} {seconds:.1f}" for name, seconds in profile)
            print(f"    {kind} {steps}")
    print(
        "  load average (1, 5, 15 min): before "
        + ", ".join(f"{x:.1f}" for x in load_before)
        + "; after "
        + ", ".join(f"{x:.1f}" for x in load_after)
    )
    print("goal with a server: < 8 s")


if __name__ == "__main__":
    main()
