"""`kiln logs`: what the serving containers of a target write."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from kiln import wiring
from kiln.cli.options import NameOption, TargetOption
from kiln.config.errors import KilnError
from kiln.config.settings import KilnSettings, get_settings
from kiln.rollout import LOCAL


def logs(
    target: TargetOption = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    tail: Annotated[int, typer.Option(min=1, help="Lines from the end to start with.")] = 100,
    name: NameOption = None,
) -> None:
    """Print the server logs of what runs on a target.

    Locally: the current container. On Kubernetes: every pod of kiln's Deployment (each
    line prefixed with its pod's name when there are several), through the API server.
    """
    settings = get_settings().with_overrides(model=name, target=target)
    try:
        if settings.target == LOCAL:
            _local_logs(settings, follow, tail)
        else:
            _kubernetes_logs(settings, follow, tail)
    except KeyboardInterrupt:
        pass


def _local_logs(settings: KilnSettings, follow: bool, tail: int) -> None:
    """The current container's lines; following, across redeploys (the new version's
    container from its first line) and across a stream the engine ends early."""
    engine = wiring.local_engine(settings)
    current = engine.current()
    if current is None:
        raise KilnError(f"nothing runs on {LOCAL}; `kiln deploy VERSION` ships one")
    followed, lines = current.handle, tail
    while True:
        _print_container_logs(engine.docker.containers.get(followed), follow, lines)
        if not follow:
            return
        now = engine.current()
        if now is None:
            _say(f"{followed} stopped, and nothing serves on {LOCAL} now")
            return
        if now.handle == followed:  # the engine ended a quiet stream: new lines only
            lines = 0
            continue
        _say(f"{now.version} serves on {LOCAL} now: following {now.handle}")
        followed, lines = now.handle, -1  # the new container's lines from its start


def _print_container_logs(container: Any, follow: bool, tail: int) -> None:
    """`tail` lines (-1: all), then new ones while `follow`, until the stream ends.

    podman sometimes answers a `tail` request with a bare newline and then nothing, even
    following; so the whole log is asked for, and the lines before the last `tail` of it
    (counted just before) are skipped: nothing is lost or printed twice in between."""
    import requests
    import urllib3

    skip = 0
    if tail >= 0:
        before = container.logs(stream=True, follow=False, tail="all")
        skip = max(0, sum(chunk.count(b"\n") for chunk in before) - tail)
    pending = b""
    try:
        for chunk in container.logs(stream=True, follow=follow, tail="all"):
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                if skip:
                    skip -= 1
                    continue
                sys.stdout.write(line.decode(errors="replace") + "\n")
            sys.stdout.flush()
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError):
        if not follow:
            raise
        # the engine ended the stream while the container runs: the caller goes on
    if pending and not skip:
        sys.stdout.write(pending.decode(errors="replace") + "\n")
        sys.stdout.flush()


def _say(text: str) -> None:
    sys.stderr.write(f"kiln: {text}\n")
    sys.stderr.flush()


def _kubernetes_logs(settings: KilnSettings, follow: bool, tail: int) -> None:
    from kiln.rollout.kubernetes.pod_logs import LogRequest, stream_logs

    cluster = wiring.kube_cluster(settings)

    def write(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    request = LogRequest(follow=follow, tail=tail)
    stream_logs(cluster.api, settings.k8s_namespace, cluster.deployment, request, write)
