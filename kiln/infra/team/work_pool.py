"""kiln's Kubernetes work pool: the base job template it ships, and the Job it renders.

`k8s/runner/base-job-template.json` is what `prefect work-pool create NAME --type
kubernetes --base-job-template ...` takes. Unlike Prefect's stock template it keeps Job
fields on the Job (completions and parallelism in the pod spec fail strict validation),
runs the pod as non-root with a read-only root and the runner's service account
(k8s/runner/), and sets the pod's PREFECT_API_URL and PREFECT_HOME itself, so the
worker's own (a loopback API URL, a host folder) never reach the pod.

`render_flow_run_job` renders the Job a prefect-kubernetes worker would submit for a flow
run, offline, with the worker's own code: the template is tested, not a copy of it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

from kiln.infra.resources import resource_path

TEMPLATE_PATH = "k8s/runner/base-job-template.json"


def base_job_template_path() -> Path:
    return resource_path(TEMPLATE_PATH)


def base_job_template() -> dict[str, Any]:
    return json.loads(base_job_template_path().read_text())


def render_flow_run_job(
    values: dict[str, Any],
    *,
    template: dict[str, Any] | None = None,
    flow_name: str = "kiln-pipeline",
    deployment_name: str = "retrain",
    pool_name: str = "kiln-k8s",
    worker_name: str = "kiln-worker",
) -> dict[str, Any]:
    """The Job manifest a Kubernetes worker submits for a run of `flow_name` with `values`
    (the deployment's job variables)."""
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import Flow, FlowRun, WorkPool
    from prefect.client.schemas.responses import DeploymentResponse
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    # A client that is never connected: the template names no blocks or variables to
    # resolve, so rendering makes no request (and starts no temporary server).
    offline = PrefectClient(api="http://prefect.invalid/api")
    config = asyncio.run(
        KubernetesWorkerJobConfiguration.from_template_and_values(
            template or base_job_template(), values, client=offline
        )
    )
    flow = Flow(id=uuid.uuid4(), name=flow_name, labels={})
    deployment = DeploymentResponse(
        id=uuid.uuid4(), name=deployment_name, flow_id=flow.id, labels={}
    )
    run = FlowRun(id=uuid.uuid4(), name="kiln-run", flow_id=flow.id, deployment_id=deployment.id)
    pool = WorkPool(
        id=uuid.uuid4(), name=pool_name, type="kubernetes", default_queue_id=uuid.uuid4()
    )
    config.prepare_for_flow_run(
        run, deployment=deployment, flow=flow, work_pool=pool, worker_name=worker_name
    )
    return config.job_manifest
