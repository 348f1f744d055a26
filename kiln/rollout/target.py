"""What a rollout target is: the small protocol the orchestrator drives, and its results."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from kiln.config.errors import RolloutError
from kiln.config.settings import TARGETS
from kiln.rollout.smoke import SmokeTest

LOCAL, KUBERNETES = TARGETS


class TransientError(RolloutError):
    """A failure worth retrying: the API unreachable, a 409 on a stale precondition, a 5xx."""


def is_transient(err: BaseException) -> bool:
    """True when `err`, or an error it was raised from, is transient: retry the rollout.

    A rollout whose new version failed its smoke test (and was rolled back) is never
    transient, so a retry does not ship it again.
    """
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, TransientError):
            return True
        seen = seen.__cause__
    return False


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """A Prefect `retry_condition_fn`: retry a failed rollout only for a transient error."""
    err = getattr(state, "data", None)  # Prefect hands the task's exception in `data`
    return isinstance(err, BaseException) and is_transient(err)


@dataclass(frozen=True)
class Deployed:
    """What runs on a target: a version, its image, and the target's own handle on it."""

    version: str | None
    image: str | None
    handle: Any = None  # the local container's name, the Deployment's pod template...


class Target(Protocol):
    """A place a version can run. The orchestrator ships, checks, records or restores."""

    @property
    def name(self) -> str:
        """`local` or `kubernetes`: the key the store records deployments under."""
        ...

    @property
    def where(self) -> str:
        """How messages say where it went: `locally`, `to kubernetes`."""
        ...

    @property
    def endpoint(self) -> str: ...

    def current(self) -> Deployed | None:
        """What serves now, or None."""
        ...

    def ship(self, version: str, image: str, smoke: SmokeTest) -> str:
        """Run `image` as `version`, wait until ready, run `smoke` against it; the endpoint.

        Raises on any failure, after cleaning up what it started itself.
        """
        ...

    def check(self, smoke: SmokeTest) -> None:
        """Run `smoke` once against what serves now, without waiting; raise if it fails.

        An engine's or a cluster's record of what runs is not proof that it answers."""
        ...

    def restore(self, before: Deployed) -> str:
        """Make `before` serve again after a failed ship; says what happened (one phrase)."""
        ...

    def live(self) -> list[str]:
        """One line per thing running, as the target itself reports it."""
        ...


@dataclass(frozen=True)
class RolloutResult:
    target: str
    version: str
    image: str
    endpoint: str
    previous_version: str | None
    previous_image: str | None
    rolled_back: bool = False  # True when this rollout shipped the previous version again


@dataclass(frozen=True)
class TargetStatus:
    """What the store recorded for a target and what the target itself says runs there."""

    target: str
    recorded: Any  # kiln.store.artifact_store.Deployment | None
    live: list[str]  # one line per thing running: version, image, where
    error: str | None = None
