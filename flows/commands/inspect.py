"""`kiln logs`: what the serving containers of a target write."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from flows import wiring
from flows.commands.options import TargetOption
from flows.errors import KilnError
from flows.rollout import LOCAL
from flows.settings import KilnSettings, get_settings


def logs(
    target: TargetOption = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    tail: Annotated[int, typer.Option(min=1, help="Lines from the end to start with.")] = 100,
) -> None:
    """Print the server logs of what runs on a target.

    Locally: the current container. On Kubernetes: every pod of kiln's Deployment (each
    line prefixed with its pod's name when there are several), through the API server.
    """
    settings = get_settings().with_overrides(target=target)
    try:
        if settings.target == LOCAL:
            _local_logs(settings, follow, tail)
        else:
            _kubernetes_logs(settings, follow, tail)
    except KeyboardInterrupt:
        pass


def _local_logs(settings: KilnSettings, follow: bool, tail: int) -> None:
    engine = wiring.local_engine(settings)
    current = engine.current()
    if current is None:
        raise KilnError(f"nothing runs on {LOCAL}; `kiln deploy VERSION` ships one")
    container = engine.docker.containers.get(current.handle)  # the container name
    for chunk in container.logs(stream=True, follow=follow, tail=tail):
        sys.stdout.write(chunk.decode(errors="replace"))
        sys.stdout.flush()


def _kubernetes_logs(settings: KilnSettings, follow: bool, tail: int) -> None:
    from flows.rollout.pod_logs import LogRequest, stream_logs

    cluster = wiring.kube_cluster(settings)

    def write(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    request = LogRequest(follow=follow, tail=tail)
    stream_logs(cluster.api, settings.k8s_namespace, cluster.deployment, request, write)
