"""`kiln build`, `kiln up`, `kiln down`."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from kiln import wiring
from kiln.cli.build import RunnerOption, build_runner_image
from kiln.cli.options import (
    BaseRepositoryOption,
    BuilderOption,
    NameOption,
    OutputOption,
    RegistryOption,
    RepositoryOption,
    StoreOption,
)
from kiln.cli.output import make_console, print_json, print_line
from kiln.cli.progress import progress
from kiln.cli.warm import runner as warm
from kiln.config.errors import KilnError
from kiln.config.settings import KilnSettings, get_settings
from kiln.images.build import build_image
from kiln.infra.engine import run_infra
from kiln.infra.prefect_server import start_prefect_server, stop_prefect_server

console = make_console()
err_console = make_console(stderr=True)


def build(
    version: Annotated[
        str | None, typer.Argument(help="Stored version id, a unique prefix, or latest.")
    ] = None,
    builder: BuilderOption = None,
    name: NameOption = None,
    store: StoreOption = None,
    registry: RegistryOption = None,
    repository: RepositoryOption = None,
    base_repository: BaseRepositoryOption = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="engine: rebuild every layer (a fresh builder).")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Build even when the registry holds the image.")
    ] = False,
    runner: RunnerOption = False,
    output: OutputOption = "text",
) -> None:
    """Build the serving image of a stored version and push it; print its digest reference."""
    if runner or version is None:  # the runner image (kiln/cli/build.py)
        build_runner_image(version, runner, registry, repository, force=force, output=output)
        return
    settings = get_settings().with_overrides(
        model=name,
        builder=builder,
        store=store,
        registry=registry,
        repository=repository,
        base_repository=base_repository,
    )
    options = wiring.build_options(settings, no_cache=no_cache, force=force)
    with (
        wiring.open_registry(settings) as client,
        progress(
            err_console,
            "building",
            level=logging.DEBUG,  # the engine's build lines stream
        ),
    ):
        result = build_image(
            wiring.open_store(settings),
            version,
            client,
            options,
            engine=lambda: wiring.engine_client(settings),
            cache_dir=settings.wheel_cache_dir,
        )
    if output == "json":
        print_json(result.__dict__)
        return
    print_line(result.image)
    print_line(
        f"builder {result.builder}, {result.seconds:.2f} s, {result.bytes_pushed:,} bytes pushed"
    )


def up(
    prefect: Annotated[
        bool, typer.Option(help="Also start a Prefect server for the UI and deployments.")
    ] = True,
    prefect_port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="The Prefect server's port [KILN_PREFECT_PORT]."),
    ] = None,
    warm_runner: Annotated[
        bool,
        typer.Option(
            "--warm/--no-warm",
            help="Also start the warm runner: `kiln run` without importing Prefect and "
            "scikit-learn each time.",
        ),
    ] = True,
    team: Annotated[
        bool,
        typer.Option(
            "--team",
            help="Everything a team runs: PostgreSQL, a Prefect server on it, SeaweedFS (S3), "
            "result storage, a work pool and workers (docs: Scale out with the team setup).",
        ),
    ] = False,
) -> None:
    """Start the local registry, the container engine and a Prefect server.

    Prints `export` lines for the shell: eval "$(kiln up)".
    """
    settings = get_settings().with_overrides(prefect_port=prefect_port)
    if team:
        from kiln.cli.team import up_team

        up_team(settings)
        return
    sys.stdout.write(run_infra("up").stdout)
    if prefect:
        url = start_prefect_server(settings.state_dir, port=settings.prefect_port)
        sys.stdout.write(f"export PREFECT_API_URL={url}\n")
        err_console.print(f"Prefect UI at {url.removesuffix('/api')}", highlight=False)
    if warm_runner:
        _start_warm_runner(settings)


def _start_warm_runner(settings: KilnSettings) -> None:
    """The warm runner only saves time: when it does not start, `kiln up` says so and the
    commands run in their own processes, as without it."""
    try:
        where = warm.start(settings.state_dir)
    except KilnError as err:
        first = str(err).splitlines()[0]
        warning = f"warning: {first}; kiln run imports everything itself"
        err_console.print(warning, highlight=False, markup=False, soft_wrap=True)
        return
    err_console.print(f"warm runner on {where} (kiln run, kiln train)", highlight=False)


def down() -> None:
    """Stop what `kiln up` started."""
    from kiln.cli.team import down_team

    down_team(get_settings())
    warm.stop(get_settings().state_dir)
    stop_prefect_server(get_settings().state_dir)
    run_infra("down")
