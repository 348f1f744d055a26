"""The fast test suite's wall time: this checkout against an earlier commit, in one run.

    python bench/bench_suite.py --base 9df696b [--rounds 2] [--workers 2] [-- extra pytest args]

The earlier commit is checked out into a temporary git worktree and its suite runs from
there (PYTHONPATH points at it, so subprocesses import its code, not this checkout's).
`--workers N` runs this checkout's suite as scripts/test.sh does, on N pytest-xdist
processes; the base runs as its own test command did (one process, unless the extra
pytest arguments say otherwise). `--same-tests` runs, in both trees, only the tests both
have (the same node ids): the same tests against the earlier code and tests, and now.
Rounds alternate base and head so a change in machine load hits both; the figure is the
ratio of the medians. Both suites use the infrastructure of `scripts/infra.sh env`.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(r"(\d+) passed")


def run_suite(tree: Path, extra: list[str]) -> tuple[float, int, str]:
    """Seconds, tests passed and the summary line of one fast-suite run in tree."""
    argv = [sys.executable, "-m", "pytest", "-m", "not e2e", "-q", "-p", "no:cacheprovider"]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    started = time.monotonic()
    done = subprocess.run(
        [*argv, *extra], cwd=tree, env=env, capture_output=True, text=True, check=False
    )
    seconds = time.monotonic() - started
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:]
    found = SUMMARY.search(last)
    return seconds, int(found.group(1)) if found else 0, last


def collect(tree: Path) -> set[str]:
    """The node ids of the fast suite in tree."""
    argv = [sys.executable, "-m", "pytest", "-m", "not e2e", "-q", "--collect-only"]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [*argv, "-p", "no:cacheprovider"], cwd=tree, env=env, capture_output=True, text=True
    )
    return {line for line in done.stdout.splitlines() if "::" in line}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the earlier commit to compare against")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--workers", type=int, default=0, help="xdist processes for head")
    parser.add_argument("--same-tests", action="store_true", help="only the tests both have")
    parser.add_argument("extra", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()
    times: dict[str, list[float]] = {"base": [], "head": []}
    with tempfile.TemporaryDirectory(prefix="kiln-bench-suite-") as work:
        base_tree = Path(work) / "base"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(base_tree), args.base],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        try:
            selected: list[str] = []
            if args.same_tests:
                base_ids, head_ids = collect(base_tree), collect(REPO)
                selected = sorted(base_ids & head_ids)
                print(
                    f"same tests: {len(selected)} of the base's {len(base_ids)} "
                    f"(head has {len(head_ids)})"
                )
            for round_number in range(1, args.rounds + 1):
                head_extra = ["-n", str(args.workers)] if args.workers else []
                for name, tree, extra in (
                    ("base", base_tree, [*args.extra, *selected]),
                    ("head", REPO, [*head_extra, *args.extra, *selected]),
                ):
                    seconds, passed, last = run_suite(tree, extra)
                    times[name].append(seconds)
                    print(f"round {round_number} {name}: {seconds:.1f} s, {passed} passed ({last})")
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(base_tree)], cwd=REPO, check=False
            )
    base, head = statistics.median(times["base"]), statistics.median(times["head"])
    print(f"median: base {base:.1f} s, head {head:.1f} s; head/base = {head / base:.2f}")
    print(f"load average now: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
