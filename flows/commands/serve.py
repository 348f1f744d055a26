"""`kiln serve`: run a stored version with the image's server, without a container."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from flows.commands import make_console
from flows.commands.models import open_store
from flows.commands.options import StoreOption

console = make_console(stderr=True)


def serve(
    version: Annotated[
        str, typer.Argument(help="A version id, a unique prefix, or latest.")
    ] = "latest",
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    workers: Annotated[int | None, typer.Option(help="Worker processes [WORKERS].")] = None,
    store: StoreOption = None,
) -> None:
    """Serve a stored version locally with gunicorn, as its image would."""
    from serving.runner import exec_server

    the_store = open_store(store)
    version = the_store.resolve(version)
    # A fresh, verified copy each time: the server checks it against the recorded sha256.
    model_dir = Path(tempfile.gettempdir()) / f"kiln-serve-{os.getuid()}" / version
    the_store.export_version(version, model_dir)
    os.environ["MODEL_VERSION"] = version
    os.environ["MODEL_SHA256"] = the_store.metadata(version)["model_sha256"]
    console.print(f"serving {version} on http://{host}:{port} (Ctrl-C stops)")
    exec_server(model_dir, host=host, port=port, workers=workers)
