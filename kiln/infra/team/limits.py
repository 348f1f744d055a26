"""Rollouts to one target, one at a time, across every worker: a Prefect global
concurrency limit of one slot per target (`kiln up --team` creates them).

Without such a limit (one machine, a temporary Prefect server) nothing is held: a single
process rolls out one version at a time anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from kiln.config.errors import RolloutError

log = logging.getLogger(__name__)

PREFIX = "kiln-rollout-"
# How long a rollout waits for another one to the same target to finish.
WAIT_SECONDS = 1800.0


def rollout_limit_name(target: str) -> str:
    """The global concurrency limit that serializes rollouts to one target."""
    return f"{PREFIX}{target}"


def _limit_exists(name: str) -> bool:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            return False
    return bool(limit.active)


@contextmanager
def rollout_slot(target: str, wait_seconds: float = WAIT_SECONDS) -> Iterator[None]:
    """Hold the target's slot for the duration of the block, when the limit exists."""
    from prefect.concurrency.sync import concurrency

    name = rollout_limit_name(target)
    if not _limit_exists(name):
        yield
        return
    log.info("waiting for the rollout slot %s", name)
    with ExitStack() as stack:
        try:  # only the wait for the slot: a timeout inside the rollout is its own error
            stack.enter_context(
                concurrency(name, occupy=1, timeout_seconds=wait_seconds, strict=True)
            )
        except TimeoutError as err:
            raise RolloutError(
                f"rolling out to {target}: waited {wait_seconds:.0f} s for the slot {name} "
                "(another rollout to this target holds it)"
            ) from err
        log.info("holding the rollout slot %s", name)
        yield
