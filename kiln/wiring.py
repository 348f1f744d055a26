"""Settings in, collaborators out: the one place that builds what library code takes.

Library functions take a store, a registry client, an engine client, a Kubernetes API
client or a rollout target as parameters and never read settings; commands and flows
call the factories here. Connection problems become one KilnError that says what to do
(`kiln up`, DOCKER_HOST, the kubeconfig), instead of a client library's traceback.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from kiln.config.errors import ClusterUnavailable
from kiln.config.names import DEFAULT_NAME
from kiln.config.settings import KilnSettings

if TYPE_CHECKING:
    import docker
    from kubernetes import client as k8s_client

    from kiln.images.build import BuildOptions
    from kiln.images.registry import Registry
    from kiln.rollout.kubernetes.target import KubernetesTarget
    from kiln.rollout.local import LocalTarget
    from kiln.rollout.target import Target
    from kiln.store.artifact_store import ArtifactStore
    from kiln.training.data import DataLimits
    from kiln.training.promotion import GatePolicy


def gate_policy(
    settings: KilnSettings, target: str | None, force: bool = False, replace_schema: bool = False
) -> GatePolicy:
    """The gate from settings; `target` names whose champion to beat (None: no comparison)."""
    from kiln.training.promotion import GatePolicy

    return GatePolicy(
        metric=settings.gate_metric,
        threshold=settings.gate_threshold,
        tolerance=settings.gate_tolerance,
        target=target,
        force=force,
        min_class_recall=settings.gate_min_class_recall,
        replace_schema=replace_schema,
    )


def data_limits(settings: KilnSettings) -> DataLimits:
    """How much data one load may read."""
    from kiln.training.data import DataLimits

    return DataLimits(settings.max_data_rows, settings.max_data_bytes)


def open_store(settings: KilnSettings) -> ArtifactStore:
    """The artifact store; each S3 call is tried KILN_RETRIES + 1 times, as other calls are."""
    from kiln.store.artifact_store import ArtifactStore

    return ArtifactStore(settings.store, attempts=settings.retries + 1, name=settings.model)


def open_registry(settings: KilnSettings, *, retried_outside: bool = False) -> Registry:
    """The registry client, retrying per KILN_RETRIES; `retried_outside`: a Prefect task
    retries the whole step, so the client tries each call once (kiln/infra/retry.py)."""
    from kiln.images.registry import Registry
    from kiln.infra.retry import RetryPolicy

    policy = RetryPolicy.from_settings(settings)
    retry = policy.once() if retried_outside else policy
    return Registry(settings.registry, timeout=settings.registry_timeout, retry=retry)


def check_registry(settings: KilnSettings) -> None:
    """Before any training: the registry answers and wants no credentials (RegistryError)."""
    from kiln.images.registry import Registry

    with Registry(settings.registry, timeout=settings.registry_timeout) as registry:
        registry.check_access()


def build_options(
    settings: KilnSettings,
    *,
    name: str | None = None,
    no_cache: bool = False,
    force: bool = False,
) -> BuildOptions:
    """How to build the images of model `name` (default KILN_MODEL): they go to the name's
    own repository, `<KILN_REPOSITORY>/<name>`."""
    from kiln.config.errors import SettingsError
    from kiln.config.names import check_name
    from kiln.images.build import BuildOptions, model_repository

    name = check_name(settings.model if name is None else name)
    repository = model_repository(settings.repository, name)
    # A name such as `serve-base` must not land among the serving bases or runner images.
    if repository in (settings.base_repository, settings.runner_repository):
        raise SettingsError(
            f"model {name!r}'s images would go to {repository}, which holds kiln's own "
            "images (KILN_BASE_REPOSITORY, KILN_RUNNER_REPOSITORY): use another name or "
            "another KILN_REPOSITORY",
            setting="KILN_MODEL",
        )
    return BuildOptions(
        registry=settings.registry,
        repository=repository,
        name=name,
        base_repository=settings.base_repository,
        base_image=settings.base_image,
        builder=settings.builder,
        no_cache=no_cache,
        force=force,
    )


def engine_host(settings: KilnSettings) -> str:
    """DOCKER_HOST when set, else the podman socket `kiln up` starts in the state dir."""
    return os.environ.get("DOCKER_HOST") or f"unix://{settings.state_dir / 'podman.sock'}"


def engine_client(settings: KilnSettings) -> docker.DockerClient:
    """A docker SDK client that has answered once (EngineUnavailable says `kiln up` if not)."""
    from kiln.infra.engine import docker_client

    return docker_client(engine_host(settings), timeout=settings.engine_timeout)


def kube_api_client(settings: KilnSettings) -> k8s_client.ApiClient:
    """In a pod: its service account. Elsewhere: the kubeconfig, at KILN_K8S_CONTEXT if set."""
    from kubernetes import client, config

    context = settings.k8s_context
    if os.environ.get("KUBERNETES_SERVICE_HOST") and context is None:
        config.load_incluster_config()
        return client.ApiClient()
    # Read KUBECONFIG now: the kubernetes package reads it once, when it is imported.
    kubeconfig = os.environ.get("KUBECONFIG") or None
    where = kubeconfig or "~/.kube/config"
    try:
        return config.new_client_from_config(config_file=kubeconfig, context=context)
    except (config.ConfigException, OSError) as err:
        raise ClusterUnavailable(
            f"no usable Kubernetes configuration (kubeconfig {where}, "
            f"context {context or 'current'}): {err}; set KUBECONFIG or KILN_K8S_CONTEXT, "
            "or use --target local"
        ) from err


def kube_cluster(settings: KilnSettings) -> KubernetesTarget:
    """KILN_MODEL's objects in KILN_K8S_NAMESPACE."""
    from kiln.rollout.kubernetes.target import KubernetesTarget

    return KubernetesTarget(
        kube_api_client(settings),
        settings.k8s_namespace,
        timeout=settings.k8s_timeout,
        poll_interval=settings.k8s_poll_interval,
        request_timeout=settings.k8s_request_timeout,
        create_namespace=settings.k8s_create_namespace,
        model=settings.model,
    )


def local_engine(settings: KilnSettings) -> LocalTarget:
    """The local target of the settings' model name: its own containers and stable port."""
    from kiln.rollout.local import LocalTarget

    default = settings.model == DEFAULT_NAME
    return LocalTarget(
        engine_client(settings),
        port=local_port(settings),
        name_prefix=settings.local_name if default else f"{settings.local_name}-{settings.model}",
        timeout=settings.local_timeout,
        poll_interval=settings.local_poll_interval,
        stop_timeout=settings.local_stop_timeout,
    )


def local_port(settings: KilnSettings) -> int:
    """The name's stable port: asked for, KILN_LOCAL_PORT for the default name, else the one
    its deployment record names, else a free one (recorded by the deploy that takes it)."""
    from kiln.rollout.local_containers import free_port
    from kiln.rollout.target import LOCAL

    if settings.port is not None:
        return settings.port
    if settings.model == DEFAULT_NAME:
        return settings.local_port
    record = open_store(settings).deployment(LOCAL)
    recorded = urlsplit(record.endpoint).port if record and record.endpoint else None
    return recorded or free_port()


def make_target(settings: KilnSettings, name: str) -> Target:
    """The rollout target called `name` (local or kubernetes), with its collaborators."""
    from kiln.config.errors import RolloutError
    from kiln.rollout.target import KUBERNETES, LOCAL, TARGETS

    if name == KUBERNETES:
        return kube_cluster(settings)
    if name == LOCAL:
        return local_engine(settings)
    raise RolloutError(f"unknown target {name!r}: use one of {', '.join(TARGETS)}")
