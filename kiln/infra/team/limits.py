"""Rollouts of one model name to one target, one at a time, across every worker: a Prefect
global concurrency limit of one slot per (name, target). `kiln up --team` creates the
target's own limit (the default name's); another name's is created beside it the first time
that name rolls out there, so two names never wait on each other.

Without the target's limit (one machine, a temporary Prefect server) nothing is held: a
single process rolls out one version at a time anyway.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from kiln.config.errors import RolloutError
from kiln.config.names import DEFAULT_NAME

log = logging.getLogger(__name__)

PREFIX = "kiln-rollout-"
# How long a rollout waits for another one to the same target to finish.
WAIT_SECONDS = 1800.0


def rollout_limit_name(target: str, name: str = DEFAULT_NAME) -> str:
    """The global concurrency limit that serializes one name's rollouts to one target."""
    return f"{PREFIX}{target}" if name == DEFAULT_NAME else f"{PREFIX}{target}-{name}"


def _create_limit(name: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists

    # another worker may make it first
    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))


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
def rollout_slot(
    target: str, model: str = DEFAULT_NAME, wait_seconds: float = WAIT_SECONDS
) -> Iterator[None]:
    """Hold the (name, target) slot for the duration of the block, when the team setup made
    the target's limit."""
    from prefect.concurrency.sync import concurrency

    if not _limit_exists(rollout_limit_name(target)):
        yield
        return
    name = rollout_limit_name(target, model)
    if model != DEFAULT_NAME and not _limit_exists(name):
        _create_limit(name)
    log.info("waiting for the rollout slot %s", name)
    with ExitStack() as stack:
        try:  # only the wait for the slot: a timeout inside the rollout is its own error
            stack.enter_context(
                concurrency(name, occupy=1, timeout_seconds=wait_seconds, strict=True)
            )
        except TimeoutError as err:
            raise RolloutError(
                f"rolling out {model} to {target}: waited {wait_seconds:.0f} s for the slot "
                f"{name} (another rollout of {model} to this target holds it)"
            ) from err
        log.info("holding the rollout slot %s", name)
        yield
