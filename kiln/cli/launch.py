"""The `kiln` command. `kiln run` and `kiln train` go to the warm runner when `kiln up`
started one (kiln/cli/warm/); every other command, and those two when no runner answers,
runs here, in kiln/cli/app.py.

Standard library only until it knows which: a command handed over costs an interpreter
start and a few milliseconds, not the seconds of importing Prefect and scikit-learn.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from kiln.cli import warm
from kiln.cli.warm import caller
from kiln.config.defaults import DEFAULT_STATE_DIR


def main() -> None:
    args = sys.argv[1:]
    if warm.command_of(args) in warm.COMMANDS:
        state_dir = Path(os.environ.get("KILN_STATE_DIR") or DEFAULT_STATE_DIR)
        status = caller.run_there(args, warm.socket_path(state_dir))
        if status is not None:
            os._exit(status)  # the child wrote and flushed everything itself
    from kiln.cli.app import main as run_here

    run_here()


if __name__ == "__main__":
    main()
