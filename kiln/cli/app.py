"""kiln's command line: each command parses its options, calls one library function, prints.

`main` is the console entry point. Every error a user can cause ends as one line on
stderr and a non-zero status (2 for a usage error, 1 for anything else), with no
traceback unless `--debug` or KILN_DEBUG=1 asks for one.
"""

from __future__ import annotations

import sys
import traceback
from typing import Annotated, NoReturn

import typer

try:  # typer vendors click since 0.2x; earlier versions use click itself
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover
    from click import exceptions as click_errors  # type: ignore[no-redef]

from kiln.cli import deploy as rollout_commands
from kiln.cli import infra as image_commands
from kiln.cli import logs as inspect_commands
from kiln.cli import models as model_commands
from kiln.cli import predict as predict_commands
from kiln.cli import run as run_commands
from kiln.cli import serve as serve_commands
from kiln.cli.output import debug_from_environment, set_debug
from kiln.config.errors import KilnError
from kiln.infra.redact import scrub, secrets_in

app = typer.Typer(
    name="kiln",
    help="Ship scikit-learn models as immutable serving images.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"kiln {kiln_version()}")
        raise typer.Exit()


def kiln_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kiln")
    except PackageNotFoundError:
        return "unknown (not installed)"


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print kiln's version."
        ),
    ] = False,
    debug: Annotated[
        bool,
        typer.Option("--debug", help="Show tracebacks and Prefect's own logs [KILN_DEBUG]."),
    ] = False,
) -> None:
    """Ship scikit-learn models as immutable serving images."""
    if debug:
        set_debug(True)


app.command("run")(run_commands.run)
app.command("train")(model_commands.train)
app.add_typer(model_commands.models_app, name="models")
app.command("pin")(model_commands.pin)
app.command("unpin")(model_commands.unpin)
app.command("prune")(model_commands.prune)
app.command("deploy")(rollout_commands.deploy)
app.command("undeploy")(rollout_commands.undeploy)
app.command("rollback")(rollout_commands.rollback)
app.command("status")(rollout_commands.status)
app.command("logs")(inspect_commands.logs)
app.command("predict")(predict_commands.predict)
app.command("serve")(serve_commands.serve)
app.command("build")(image_commands.build)
app.command("up")(image_commands.up)
app.command("down")(image_commands.down)


def main(argv: list[str] | None = None) -> None:
    """Run one command; exit 0, 1 (an error) or 2 (a usage error), as one line on stderr.

    As the console script (no `argv`), the process ends through `exit_now`; called with
    `argv` (tests, scripts) it raises SystemExit as usual.
    """
    status = run_command(sys.argv[1:] if argv is None else list(argv))
    if argv is None:
        exit_now(status)
    sys.exit(status)


def run_command(args: list[str]) -> int:
    """The exit status of one command line."""
    from kiln.config.settings import get_settings

    set_debug(debug_from_environment() or "--debug" in args)
    get_settings.cache_clear()  # read the environment of this call (main runs in tests too)
    # The error boundary: whatever a command fails with (a usage error quoting an option's
    # value, a client library quoting a URL's user info as a bucket name, a traceback) is
    # scrubbed of what the command line carried as credentials before it is printed.
    _secrets[:] = secrets_in(args)
    command = typer.main.get_command(app)
    try:
        code = command.main(args=args, prog_name="kiln", standalone_mode=False)
    except click_errors.NoArgsIsHelpError as err:
        typer.echo(err.ctx.get_help() if err.ctx else "")
        return 2
    except click_errors.UsageError as err:
        return _fail(usage_line(err), status=2)
    except (typer.Abort, KeyboardInterrupt):
        return _fail("interrupted", status=130)
    except KilnError as err:
        return _fail(str(err), status=1, with_traceback=True)
    except Exception as err:  # a bug or an environment kiln did not foresee: still one line
        reason = f"{type(err).__name__}: {err}"
        return _fail(f"{reason} (run again with --debug for the traceback)", 1, True)
    return code if isinstance(code, int) else 0


def exit_now(status: int) -> NoReturn:
    """End the process without the interpreter's teardown of every loaded module, which
    takes seconds after a `kiln run` has loaded Prefect, scikit-learn and ONNX (measured in
    docs/benchmarks.md). Every exit hook runs first: the threads' (Prefect sends its last
    logs and events there), then atexit's."""
    import atexit
    import contextlib
    import os
    import threading

    threading._shutdown()  # type: ignore[attr-defined]  # what interpreter exit calls first
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing to lose
            stream.flush()
    os._exit(status)


def usage_line(err: click_errors.UsageError) -> str:
    message = err.format_message().replace("Value error, ", "")
    where = err.ctx.command_path if err.ctx is not None else "kiln"
    return f"{one_line(message).rstrip('.')} (see `{where} --help`)"


def one_line(text: str) -> str:
    return " ".join(text.split())


_secrets: list[str] = []  # the current command line's credentials (run_command sets them)


def _fail(message: str, status: int, with_traceback: bool = False) -> int:
    from kiln.cli.output import debug_enabled

    if with_traceback and debug_enabled():
        sys.stderr.write(scrub(traceback.format_exc(), _secrets))
    label = "\x1b[1;31merror:\x1b[0m" if sys.stderr.isatty() else "error:"
    sys.stderr.write(f"{label} {scrub(one_line(message), _secrets)}\n")
    sys.stderr.flush()
    return status


if __name__ == "__main__":
    main()
