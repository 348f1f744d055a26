"""What the team's Prefect server holds for kiln: the work pool, the default result
storage (a block on the object store) and one global concurrency limit per rollout target.

Each `ensure_*` is idempotent and talks to the API at the URL it is given.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from kiln.config.errors import KilnError
from kiln.infra.team.limits import rollout_limit_name

log = logging.getLogger(__name__)

RESULTS_BLOCK = "kiln-results"


def _client(api_url: str):
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(api_url)


# The pool's command for a flow run: Prefect's engine, started directly, in a session of its
# own. Left to its default, Prefect 3.9's process worker starts a supervisor process that
# prepares the run's folder and then replaces itself with a second interpreter running the
# engine, so every run imported Prefect twice before its first task (docs/benchmarks.md,
# "Team setup", has what that cost). Started directly, the engine runs the
# deployment's pull steps itself (`prefect deploy` gives kiln's a set_working_directory to
# the repository). The new session is what the supervisor gave the run too: stopping a
# worker (its process group) leaves a running flow alone, and a run's processes can be
# signalled as one group. `python` is the worker's own interpreter: `start_worker` puts
# its folder first on the PATH.
ENGINE_COMMAND = (
    "python -c 'import os, runpy; os.setsid(); "
    'runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)\''
)


def process_job_template() -> dict[str, Any]:
    """Prefect's base job template for process pools, with kiln's engine command."""
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    template["variables"]["properties"]["command"]["default"] = ENGINE_COMMAND
    return template


def ensure_work_pool(api_url: str, name: str) -> bool:
    """A process work pool called name; True when created now."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with _client(api_url) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            pass
        else:
            if pool.type != "process":
                raise KilnError(
                    f"work pool {name!r} exists with type {pool.type!r}, not 'process': "
                    "choose another pool name"
                )
            return False
        template = process_job_template()
        try:
            client.create_work_pool(
                WorkPoolCreate(name=name, type="process", base_job_template=template)
            )
        except ObjectAlreadyExists:
            return False
    return True


def ensure_rollout_limits(api_url: str, targets: Iterable[str]) -> list[str]:
    """One global concurrency limit of one slot per target; the names created now."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    created = []
    with _client(api_url) as client:
        for target in targets:
            name = rollout_limit_name(target)
            try:
                client.read_global_concurrency_limit_by_name(name)
                continue
            except ObjectNotFound:
                pass
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )
                created.append(name)
            except ObjectAlreadyExists:
                pass
    return created


def ensure_result_storage(api_url: str, basepath: str, name: str = RESULTS_BLOCK) -> str:
    """A remote-file-system block at basepath (e.g. s3://kiln/prefect-results); returns the
    slug for PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK.

    The block holds no credentials: each process reads them from its environment (the
    AWS_* variables `kiln up --team` exports), so none are stored in the Prefect database.
    """
    from prefect.filesystems import RemoteFileSystem
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        RemoteFileSystem(basepath=basepath).save(name, overwrite=True)
    return f"remote-file-system/{name}"


CRASH_AUTOMATION = "kiln-crashed-runs"
TERMINAL_EVENTS = (
    "prefect.flow-run.Completed",
    "prefect.flow-run.Failed",
    "prefect.flow-run.Crashed",
    "prefect.flow-run.Cancelled",
)


def ensure_crash_detection(api_url: str, within_seconds: int) -> bool:
    """An automation that marks a flow run Crashed when its heartbeats stop (its worker's
    machine died with it) and no final state arrived; True when created now.

    A worker's flow runs are processes of their own: a run whose worker alone dies keeps
    running. Workers send a heartbeat per run every PREFECT_FLOWS_HEARTBEAT_FREQUENCY
    seconds; `within_seconds` should cover at least two of them.
    """
    from datetime import timedelta

    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    with _client(api_url) as client:
        existing = client.read_automations_by_name(CRASH_AUTOMATION)
        if existing:
            return False
        automation = AutomationCore(
            name=CRASH_AUTOMATION,
            description="kiln: a flow run whose heartbeats stopped before it finished crashed.",
            trigger=EventTrigger(
                match={"prefect.resource.id": "prefect.flow-run.*"},
                after={"prefect.flow-run.heartbeat"},
                expect={"prefect.flow-run.heartbeat", *TERMINAL_EVENTS},
                for_each={"prefect.resource.id"},
                posture=Posture.Proactive,
                threshold=1,
                within=timedelta(seconds=within_seconds),
            ),
            actions=[
                ChangeFlowRunState(
                    name="Crashed",
                    force=False,
                    state=StateType.CRASHED,
                    message=f"no heartbeat for {within_seconds} s: the run's process is gone",
                )
            ],
        )
        client.create_automation(automation=automation)
    return True
