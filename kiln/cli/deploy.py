"""`kiln deploy`, `kiln undeploy`, `kiln rollback`, `kiln status`."""

from __future__ import annotations

import json
import re
import shlex
import sys
from functools import partial
from typing import Annotated, Any

import typer

from kiln import wiring
from kiln.cli.options import NameOption, OutputOption, PortOption, StoreOption, TargetOption
from kiln.cli.output import make_console, print_json, print_line
from kiln.cli.progress import progress
from kiln.config.names import DEFAULT_NAME
from kiln.config.settings import KilnSettings, get_settings
from kiln.rollout import LOCAL, TARGETS, RolloutResult, previous_of, roll_back, roll_out
from kiln.rollout import status as target_status
from kiln.rollout.orchestrator import image_repository
from kiln.store.artifact_store import ArtifactStore

err_console = make_console(stderr=True)


# The Service behind the API server's service proxy: the endpoint a Kubernetes rollout reports.
_SERVICE_PROXY = re.compile(
    r"^https?://[^/]+(?P<path>/api/v1/namespaces/[^/]+/services/[^/]+/proxy)$"
)
KUBECTL_PROXY_PORT = 8001  # `kubectl proxy`'s own default


def try_it_command(endpoint: str, sample_input: Any, context: str | None = None) -> str | None:
    """Shell lines that ask the endpoint for a prediction on the model's own sample rows.

    A local endpoint is plain HTTP: one curl line. A Kubernetes endpoint is the Service
    through the API server, which wants the caller's credentials: `kubectl proxy` (at
    kiln's context, if one is set) lends the kubeconfig's, and the curl goes through it.
    """
    if not endpoint.startswith("http") or sample_input is None:
        return None
    body = sample_input if isinstance(sample_input, dict) else {"data": sample_input}
    payload = json.dumps(body, separators=(",", ":")).replace("'", "'\\''")
    proxied = _SERVICE_PROXY.match(endpoint)
    url = endpoint
    lines = []
    if proxied is not None:
        at = f" --context {shlex.quote(context)}" if context else ""
        lines.append(f"kubectl{at} proxy --port {KUBECTL_PROXY_PORT} &")
        url = f"http://127.0.0.1:{KUBECTL_PROXY_PORT}{proxied['path']}"
    lines.append(
        f"curl -s -X POST {url}/predict -H 'Content-Type: application/json' -d '{payload}'"
    )
    return "\n".join(lines)


def latest_image(store: ArtifactStore, version: str, repository: str | None = None) -> str | None:
    """The digest-pinned image of the version's most recent build (in `repository`, a model
    name's own, when given), when the store says so."""
    newest = getattr(store, "latest_image_ref", None)
    if newest is None:
        return None
    if repository is None:
        return newest(version)
    return newest(version, lambda ref: image_repository(ref) == repository)


def own_repository(settings: KilnSettings) -> str | None:
    """Where the settings' model name's images are; None for the default name, whose
    images from before names (one repository, KILN_REPOSITORY whole) are its too."""
    from kiln.images.build import model_repository

    if settings.model == DEFAULT_NAME:
        return None
    return model_repository(settings.repository, settings.model)


def own_image(store: ArtifactStore, version: str, settings: KilnSettings) -> str | None:
    """The image of the version built for the settings' model name: a version two names
    share has one image per name, each saying its own name."""
    from kiln.images.build import model_repository

    found = latest_image(store, version, model_repository(settings.repository, settings.model))
    if found is None and settings.model == DEFAULT_NAME:
        found = latest_image(store, version)
    return found


def result_dict(result: RolloutResult, try_it: str | None) -> dict[str, Any]:
    return {**result.__dict__, "try_it": try_it}


def _print_result(
    result: RolloutResult, sample_input: Any, output: str, context: str | None = None
) -> None:
    try_it = try_it_command(result.endpoint, sample_input, context)
    if output == "json":
        print_json(result_dict(result, try_it))
        return
    verb = "rolled back to" if result.rolled_back else "deployed"
    print_line(f"{verb} {result.version} on {result.target}")
    print_line(f"  image     {result.image}")
    if result.previous_version:
        print_line(f"  previous  {result.previous_version} ({result.previous_image})")
    print_line(f"  endpoint  {result.endpoint}")
    if try_it:
        print_line("try it:")
        for line in try_it.splitlines():
            print_line(f"  {line}")


def deploy(
    version: Annotated[str, typer.Argument(help="A stored version (id, unique prefix, latest).")],
    target: TargetOption = None,
    image: Annotated[
        str | None,
        typer.Option(help="Ship this image (registry/repo@sha256:...), not the recorded one."),
    ] = None,
    output: OutputOption = "text",
    name: NameOption = None,
    port: PortOption = None,
    store: StoreOption = None,
    ship_rolled_back: Annotated[
        bool,
        typer.Option(
            "--ship-rolled-back",
            help="Ship it even if it failed its smoke test on this target and was rolled back.",
        ),
    ] = False,
) -> None:
    """Roll a stored version out: wait until ready, smoke-test, roll back by itself on failure."""
    settings = get_settings().with_overrides(model=name, port=port, store=store, target=target)
    the_store = wiring.open_store(settings)
    stored = the_store.get(the_store.resolve_own(version))  # a version of this name
    chosen = image or own_image(the_store, stored.version, settings)
    with progress(err_console, f"rolling {stored.version[:12]} out to {settings.target}"):
        result = roll_out(
            the_store,
            stored.version,
            wiring.make_target(settings, settings.target),
            image=chosen,
            ship_rolled_back=ship_rolled_back,
            repository=own_repository(settings),
        )
    _print_result(result, stored.metadata.get("sample_input"), output, settings.k8s_context)


def rollback(
    target: TargetOption = None,
    output: OutputOption = "text",
    name: NameOption = None,
    store: StoreOption = None,
) -> None:
    """Ship the version that ran before the current one (recorded in the store)."""
    settings = get_settings().with_overrides(model=name, store=store, target=target)
    the_store = wiring.open_store(settings)
    previous_of(the_store, settings.target)  # nothing to go back to: say so before connecting
    with progress(err_console, f"rolling {settings.target} back"):
        result = roll_back(the_store, wiring.make_target(settings, settings.target))
    sample = the_store.metadata(result.version).get("sample_input")
    _print_result(result, sample, output, settings.k8s_context)


def undeploy(
    target: TargetOption = None, name: NameOption = None, store: StoreOption = None
) -> None:
    """Stop what kiln runs on a target and forget its deployment record.

    Locally: kiln's containers. On Kubernetes: kiln's objects in the namespace (the
    Deployment, Service, autoscaler, disruption budget); the namespace itself stays.
    """
    settings = get_settings().with_overrides(model=name, store=store, target=target)
    the_store = wiring.open_store(settings)
    if settings.target == LOCAL:
        engine = wiring.local_engine(settings)
        removed = [c.name for c in engine.containers()]
        engine.stop_all()
    else:
        removed = _delete_kubernetes_objects(settings)
    the_store.restore_deployment(settings.target, None)
    if removed:
        print_line(f"undeployed {settings.target}: removed {', '.join(removed)}")
    else:
        print_line(f"nothing ran on {settings.target}; its record is cleared")


def _delete_kubernetes_objects(settings: KilnSettings) -> list[str]:
    """KILN_MODEL's objects only: another model's in the namespace keep running."""
    return wiring.kube_cluster(settings).undeploy()


def status(
    target: TargetOption = None,
    output: OutputOption = "text",
    name: NameOption = None,
    store: StoreOption = None,
) -> None:
    """What runs where, for every model name: recorded and live versions, image digests,
    since when, and the rollback target.

    Shows each (name, target) the store has a record for; --name and --target narrow it.
    """
    settings = get_settings().with_overrides(store=store)
    opened = wiring.open_store(settings)
    rows = []
    for model in [name] if name else opened.names():
        named = settings.with_overrides(model=model)
        recorded = {d.target for d in opened.named(model).deployments()}
        for where in [target] if target else [t for t in TARGETS if t in recorded]:
            make = partial(wiring.make_target, named, where)
            rows.append((model, target_status(opened.named(model), where, make)))
    if output == "json":
        print_json([_status_dict(model, state) for model, state in rows])
    elif not rows:
        print_line("nothing deployed (no target has a record); `kiln deploy VERSION` ships one")
    for model, state in rows if output == "text" else []:
        _print_status(model, state)
    for _, state in rows:
        for warning in drift(state):
            sys.stderr.write(f"warning: {warning}\n")


def _status_dict(model: str, state: Any) -> dict[str, Any]:
    return {
        "name": model,
        "target": state.target,
        "recorded": state.recorded.__dict__ if state.recorded else None,
        "live": state.live,
        "error": state.error,
        "warnings": drift(state),
    }


def _print_status(model: str, state: Any) -> None:
    print_line(f"{model} on {state.target}")
    record = state.recorded
    if record is None:
        print_line("  recorded  nothing deployed")
    else:
        print_line(f"  recorded  {record.current} {record.image} (since {record.updated})")
        if record.endpoint:
            print_line(f"  endpoint  {record.endpoint}")
        if record.previous:
            print_line(f"  previous  {record.previous} {record.previous_image}")
        for entry in record.rolled_back:  # refused by deploys unless --ship-rolled-back
            print_line(f"  rolled back  {entry['version']} ({entry['at']}): {entry['reason']}")
    if state.error:
        print_line(f"  live      unknown: {state.error}")
    elif not state.live:
        print_line("  live      nothing running")
    for line in state.live:
        print_line(f"  live      {line}")


def drift(state: Any) -> list[str]:
    """Where what runs differs from what the store recorded (only when the target answered)."""
    if state.error:
        return []
    record = state.recorded
    running = []
    for line in state.live:
        parts = line.split()
        if state.target == LOCAL and parts[2:4] != ["current", "running"]:
            continue  # a stopped container or a candidate is not what serves
        running.append((parts[0], parts[1]))
    if record is None:
        return [f"{state.target}: runs {v} with no record in the store" for v, _ in running]
    if not running:
        return [f"{state.target}: {record.current} is recorded but nothing runs"]
    if not any(v == record.current and i == record.image for v, i in running):
        seen = ", ".join(f"{v} {i}" for v, i in running)
        return [f"{state.target}: recorded {record.current} {record.image}, but runs {seen}"]
    return []
