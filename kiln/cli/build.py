"""`kiln build --runner`: build and push the runner image, print its digest reference."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from kiln import wiring
from kiln.cli.output import make_console, print_json, print_line
from kiln.cli.progress import progress
from kiln.config.settings import get_settings

err_console = make_console(stderr=True)

RunnerOption = Annotated[
    bool,
    typer.Option(
        "--runner",
        help="Build the runner image instead (kiln and the pipeline, for Kubernetes Jobs) "
        "into --repository [KILN_RUNNER_REPOSITORY]; takes no VERSION.",
    ),
]


def build_runner_image(
    version: str | None,
    runner: bool,
    registry: str | None,
    repository: str | None,
    *,
    force: bool,
    output: str,
) -> None:
    """`kiln build --runner`; `kiln build` with neither a version nor --runner is refused."""
    from kiln.images.runner_image import build_runner

    if not runner:
        raise typer.BadParameter("give a stored version (or --runner)", param_hint="VERSION")
    if version is not None:
        raise typer.BadParameter("--runner builds no stored version", param_hint="VERSION")
    settings = get_settings().with_overrides(registry=registry, runner_repository=repository)
    with (
        wiring.open_registry(settings) as client,
        progress(err_console, "building the runner image", level=logging.DEBUG),
    ):
        image = build_runner(
            lambda: wiring.engine_client(settings),
            client,
            settings.runner_repository,
            base_image=settings.base_image,
            cache_dir=settings.wheel_cache_dir,
            force=force,
        )
    if output == "json":
        print_json(image.__dict__)
        return
    print_line(image.reference)
    what = "built and pushed" if image.built else "already in the registry"
    print_line(f"runner {image.tag}: {what}, {image.seconds:.1f} s")
