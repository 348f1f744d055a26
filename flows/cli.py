"""kiln's command line: each command parses its options, calls one library function, prints."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from flows.commands import image as image_commands
from flows.commands import models as model_commands
from flows.commands import rollout as rollout_commands
from flows.commands import run as run_commands
from flows.commands import serve as serve_commands
from flows.errors import KilnError

app = typer.Typer(
    name="kiln",
    help="Ship scikit-learn models as immutable serving images.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

app.command("run")(run_commands.run)
app.command("train")(model_commands.train)
app.add_typer(model_commands.models_app, name="models")
app.command("pin")(model_commands.pin)
app.command("unpin")(model_commands.unpin)
app.command("prune")(model_commands.prune)
app.command("deploy")(rollout_commands.deploy)
app.command("rollback")(rollout_commands.rollback)
app.command("status")(rollout_commands.status)
app.command("serve")(serve_commands.serve)
app.command("build")(image_commands.build)
app.command("up")(image_commands.up)
app.command("down")(image_commands.down)


def main() -> None:
    try:
        app()
    except KilnError as err:
        err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
