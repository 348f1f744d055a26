"""`kiln serve`: run a stored version with the image's server, without a container."""

from __future__ import annotations

import os
import socket
from typing import Annotated

import typer

from kiln import wiring
from kiln.cli.options import NameOption, StoreOption
from kiln.cli.output import make_console
from kiln.config.errors import KilnError
from kiln.config.settings import get_settings

console = make_console(stderr=True)


def serve(
    version: Annotated[
        str, typer.Argument(help="A version id, a unique prefix, or latest.")
    ] = "latest",
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port to bind [KILN_SERVE_PORT].")
    ] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Worker processes [WORKERS].")] = None,
    name: NameOption = None,
    store: StoreOption = None,
) -> None:
    """Serve a stored version locally with gunicorn, as its image would."""
    from serving.runner import exec_server, private_model_dir, remove_private_dir

    settings = get_settings().with_overrides(model=name, store=store, serve_port=port)
    port = settings.serve_port
    check_port_free(host, port)
    the_store = wiring.open_store(settings)
    version = the_store.resolve(version)
    # This server's own verified copy (0700, files 0400), removed by gunicorn at exit.
    model_dir = private_model_dir(f"{version[:12]}-")
    try:
        the_store.export_version(version, model_dir)
        os.environ["MODEL_SHA256"] = the_store.metadata(version)["model_sha256"]
    except BaseException:
        remove_private_dir(model_dir)
        raise
    os.environ["MODEL_VERSION"] = version
    os.environ["MODEL_NAME"] = settings.model  # V2 paths, /metadata and metrics say it
    console.print(f"serving {version} on http://{host}:{port} (Ctrl-C stops)")
    exec_server(model_dir, host=host, port=port, workers=workers, owned=True)


def check_port_free(host: str, port: int) -> None:
    """Fail in one line before gunicorn starts when the port is taken (it retries for 5 s)."""
    try:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as err:
        raise KilnError(
            f"cannot listen on {host}:{port}: {err.strerror or err}; pick another port with "
            "--port or KILN_SERVE_PORT"
        ) from None
