"""`kiln build`, `kiln up`, `kiln down`."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from flows.commands import make_console
from flows.commands.options import StoreOption
from flows.engine import run_infra, state_dir
from flows.image import DEFAULT_BASE_REPOSITORY, Builder, BuildOptions, build_image
from flows.prefect_server import start_prefect_server, stop_prefect_server
from flows.registry import Registry
from flows.settings import get_settings
from flows.store import ArtifactStore

console = make_console()
err_console = make_console(stderr=True)


def build(
    version: Annotated[str, typer.Argument(help="Stored version id, a unique prefix, or latest.")],
    builder: Annotated[
        str | None,
        typer.Option(
            "--builder",
            help="auto (layer when the serving base is in the registry), engine, or layer "
            "[KILN_BUILDER].",
        ),
    ] = None,
    store: StoreOption = None,
    registry: Annotated[
        str | None, typer.Option("--registry", help="Registry host:port [KILN_REGISTRY].")
    ] = None,
    repository: Annotated[
        str | None, typer.Option("--repository", help="Image repository [KILN_REPOSITORY].")
    ] = None,
    base_repository: Annotated[
        str, typer.Option("--base-repository", help="Where the serving base is kept.")
    ] = DEFAULT_BASE_REPOSITORY,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="engine: rebuild every layer (a fresh builder).")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Build even when the registry holds the image.")
    ] = False,
) -> None:
    """Build the serving image of a stored version and push it; print its digest reference."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    settings = get_settings()
    chosen = builder or settings.builder
    if chosen not in ("auto", "engine", "layer"):
        raise typer.BadParameter(f"--builder must be auto, engine or layer, not {chosen!r}")
    options = BuildOptions(
        registry=registry or settings.registry,
        repository=repository or settings.repository,
        base_repository=base_repository,
        base_image=settings.base_image,
        builder=_as_builder(chosen),
        no_cache=no_cache,
        force=force,
    )
    with Registry(options.registry) as client:
        result = build_image(ArtifactStore(store or settings.store), version, client, options)
    console.print(result.image, highlight=False, soft_wrap=True)
    console.print(
        f"builder {result.builder}, {result.seconds:.2f} s, {result.bytes_pushed:,} bytes pushed",
        highlight=False,
    )


def _as_builder(name: str) -> Builder:
    return name  # type: ignore[return-value]


def up(
    prefect: Annotated[
        bool, typer.Option(help="Also start a Prefect server for the UI and deployments.")
    ] = True,
    prefect_port: Annotated[int, typer.Option(help="The Prefect server's port.")] = 4200,
) -> None:
    """Start the local registry, the container engine and a Prefect server.

    Prints `export` lines for the shell: eval "$(kiln up)".
    """
    sys.stdout.write(run_infra("up").stdout)
    if prefect:
        url = start_prefect_server(state_dir(), port=prefect_port)
        sys.stdout.write(f"export PREFECT_API_URL={url}\n")
        err_console.print(f"Prefect UI at {url.removesuffix('/api')}", highlight=False)


def down() -> None:
    """Stop what `kiln up` started."""
    stop_prefect_server(state_dir())
    run_infra("down")
