"""`kiln logs`: what the serving container of a target writes."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from flows import wiring
from flows.commands.options import TargetOption
from flows.errors import KilnError, RolloutError
from flows.rollout import LOCAL
from flows.settings import get_settings


def logs(
    target: TargetOption = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    tail: Annotated[int, typer.Option(min=1, help="Lines from the end to start with.")] = 100,
) -> None:
    """Print the server logs of what runs on a target (the current container locally)."""
    settings = get_settings().with_overrides(target=target)
    if settings.target != LOCAL:
        raise RolloutError(
            f"logs from {settings.target} are not built yet; use `kubectl logs -n "
            f"{settings.k8s_namespace} deployment/kiln{' -f' if follow else ''}`"
        )
    engine = wiring.local_engine(settings)
    current = engine.current()
    if current is None:
        raise KilnError(f"nothing runs on {LOCAL}; `kiln deploy VERSION` ships one")
    container = engine.docker.containers.get(current.handle)  # the container name
    stream = container.logs(stream=True, follow=follow, tail=tail)
    try:
        for chunk in stream:
            sys.stdout.write(chunk.decode(errors="replace"))
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
