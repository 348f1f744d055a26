"""The warm runner: `kiln run` without paying for its imports every time.

A `kiln run` spends about 5 s of its 11 importing Prefect, scikit-learn, skl2onnx and ONNX
Runtime. `kiln up` starts this runner (a daemon, like the Prefect server): it imports them
once and waits on a unix socket in the state dir. The `kiln` command (kiln/cli/launch.py)
connects for `kiln run` and `kiln train`, and passes its standard input, output and error
(SCM_RIGHTS), its arguments, environment and working folder. The runner forks; the child
takes them all, forgets kiln's own modules (so a changed checkout runs as changed), and
runs the command as kiln/cli/app.py would in the caller's own process: same output on the
caller's terminal, same exit status, which the runner sends back.

Each command is its own process: nothing of one run leaks into the next. The runner
refuses a caller on another interpreter, and stops itself (the caller then runs the
command itself) when a library it imported has changed on disk since it started.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

COMMANDS = frozenset({"run", "train"})  # the commands worth handing over
MAX_REQUEST = 1 << 20  # bytes of arguments and environment
READ_TIMEOUT = 5.0  # seconds a caller has to send its request (callers are read in turn)


def socket_path(state_dir: Path) -> Path:
    return state_dir / "run" / "warm.sock"


def source_dir() -> str:
    """The kiln package this process runs: a runner serves callers of the same code only."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def command_of(args: Sequence[str]) -> str | None:
    """The command name in a `kiln` command line (after global options), if any."""
    for arg in args:
        if not arg.startswith("-"):
            return arg
        if arg in ("--help", "--version"):
            return None
    return None
